"""Operators of the monitored systems and the real layout of density matrices (numpy)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from metasym_control.envs.open_quantum.params import SYSTEMS


@dataclass(frozen=True)
class SystemOperators:
    """The unit-rate operators of a system, (N, N) complex128 each.

    The Hamiltonian is H = Δ·`detuning_op` + Ω_max·(u_x·`drive_x` + u_y·`drive_y`); the
    channels are √γ1·`damping_op`, √γφ·`dephasing_op` and the monitored √Γm·`measured_op`.
    """

    detuning_op: np.ndarray
    drive_x: np.ndarray
    drive_y: np.ndarray
    damping_op: np.ndarray
    dephasing_op: np.ndarray
    measured_op: np.ndarray


def lowering_operator(n: int) -> np.ndarray:
    """(n, n) annihilation operator a of a mode truncated at n levels, basis |0>..|n-1>."""
    return np.diag(np.sqrt(np.arange(1, n, dtype=np.float64)), k=1).astype(np.complex128)


def system_operators(system: str, n: int) -> SystemOperators:
    """The unit-rate operators of `system` with dimension `n` (see `SystemOperators`).

    Qubit basis: index 0 = excited |e> (σz = +1), index 1 = ground |g> (σz = -1), so
    σ- = |g><e| and the Bloch vector is (<σx>, <σy>, <σz>).
    """
    if system == "qubit":
        sx = np.array([[0, 1], [1, 0]], dtype=np.complex128)
        sy = np.array([[0, -1j], [1j, 0]], dtype=np.complex128)
        sz = np.array([[1, 0], [0, -1]], dtype=np.complex128)
        sm = np.array([[0, 0], [1, 0]], dtype=np.complex128)
        return SystemOperators(
            detuning_op=0.5 * sz,
            drive_x=0.5 * sx,
            drive_y=0.5 * sy,
            damping_op=sm,
            dephasing_op=sz / math.sqrt(2.0),
            measured_op=sz / math.sqrt(2.0),
        )
    if system == "oscillator":
        a = lowering_operator(n)
        ad = a.conj().T
        return SystemOperators(
            detuning_op=ad @ a,
            drive_x=0.5 * (a + ad),
            drive_y=0.5j * (a - ad),
            damping_op=a,
            dephasing_op=ad @ a,
            measured_op=a,
        )
    raise ValueError(f"system must be one of {SYSTEMS}, got {system!r}")


def density_to_state(rho: np.ndarray) -> np.ndarray:
    """(..., N, N) complex density matrices -> (..., 2N²) real states [Re vec ρ, Im vec ρ].

    vec is row-major: component j·N + k is ρ[j, k].
    """
    v = rho.reshape(*rho.shape[:-2], -1)
    return np.concatenate([v.real, v.imag], axis=-1).astype(np.float64)


def state_to_density(x: np.ndarray, n: int) -> np.ndarray:
    """(..., 2N²) real states -> (..., N, N) complex128 density matrices (inverse layout)."""
    x = np.asarray(x, dtype=np.float64)
    n2 = n * n
    v = x[..., :n2] + 1j * x[..., n2:]
    return v.reshape(*x.shape[:-1], n, n)


def ket_to_state(psi: np.ndarray) -> np.ndarray:
    """(N,) ket -> (2N²,) real state of the pure density matrix |ψ><ψ| (normalised first)."""
    psi = np.asarray(psi, dtype=np.complex128)
    psi = psi / np.linalg.norm(psi)
    return density_to_state(np.outer(psi, psi.conj()))


def coherent_ket(n: int, alpha: complex) -> np.ndarray:
    """(n,) coherent state |α> truncated at n levels and renormalised."""
    k = np.arange(n)
    logfact = np.array([math.lgamma(i + 1.0) for i in k])
    amp = np.exp(-0.5 * abs(alpha) ** 2 - 0.5 * logfact) * np.power(complex(alpha), k)
    return amp / np.linalg.norm(amp)


def compact_observation(rho: np.ndarray, system: str) -> np.ndarray:
    """(..., N, N) density matrices -> compact real parametrisation (float64).

    Qubit: the Bloch vector (<σx>, <σy>, <σz>) (3,). Oscillator: (N²,) =
    [ρ_00..ρ_{N-1,N-1} (populations, N), Re ρ_jk for j<k (row-major, N(N-1)/2),
    Im ρ_jk for j<k (same order)].
    """
    if system == "qubit":
        bx = 2.0 * rho[..., 0, 1].real
        by = -2.0 * rho[..., 0, 1].imag
        bz = (rho[..., 0, 0] - rho[..., 1, 1]).real
        return np.stack([bx, by, bz], axis=-1)
    n = rho.shape[-1]
    iu = np.triu_indices(n, k=1)
    diag = np.diagonal(rho, axis1=-2, axis2=-1).real
    off = rho[..., iu[0], iu[1]]
    return np.concatenate([diag, off.real, off.imag], axis=-1)


def observation_bounds(system: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the compact parametrisation plus the unbounded measurement increment."""
    if system == "qubit":
        low = np.array([-1.0, -1.0, -1.0, -np.inf])
        high = np.array([1.0, 1.0, 1.0, np.inf])
        return low, high
    m = n * (n - 1) // 2
    # |ρ_jk| <= sqrt(ρ_jj ρ_kk) <= 1/2 for j != k
    low = np.concatenate([np.zeros(n), -0.5 * np.ones(2 * m), [-np.inf]])
    high = np.concatenate([np.ones(n), 0.5 * np.ones(2 * m), [np.inf]])
    return low, high


def check_physical(rho: np.ndarray, atol: float = 1e-9) -> None:
    """Raise `ValueError` unless every (..., N, N) matrix is Hermitian, unit-trace and PSD."""
    herm = np.max(np.abs(rho - np.conj(np.swapaxes(rho, -1, -2))))
    if herm > atol:
        raise ValueError(f"density matrix is not Hermitian (deviation {herm:.3g})")
    tr = np.einsum("...ii->...", rho)
    if np.max(np.abs(tr - 1.0)) > atol:
        raise ValueError(f"density matrix trace deviates from 1 by {np.max(np.abs(tr - 1)):.3g}")
    lmin = float(np.min(np.linalg.eigvalsh(rho)))
    if lmin < -atol:
        raise ValueError(f"density matrix is not positive semi-definite (eigenvalue {lmin:.3g})")


def ground_density(system: str, n: int) -> np.ndarray:
    """(N, N) the start state: the qubit's ground state |g> or the oscillator's vacuum |0>."""
    rho = np.zeros((n, n), dtype=np.complex128)
    if system == "qubit":
        rho[1, 1] = 1.0
    else:
        rho[0, 0] = 1.0
    return rho


def random_density(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random (N, N) density matrix: a Haar-random pure state mixed with the maximally
    mixed state, purity spread over [1/N, 1] (the mixing weight is uniform in [0, 1])."""
    psi = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    psi /= np.linalg.norm(psi)
    w = rng.uniform(0.0, 1.0)
    return w * np.outer(psi, psi.conj()) + (1.0 - w) * np.eye(n) / n
