"""A continuously monitored open quantum system (qubit or oscillator) as a Gymnasium env."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from metasym_control.envbase import MetaSymEnv
from metasym_control.params import (
    Split,
    SplitRange,
    SystemParams,
    require_in_range,
    require_nonnegative,
    require_positive,
)
from metasym_control.task import Task

logger = logging.getLogger(__name__)

ENV_ID = "MetaSymOpenQuantum-v0"
SystemKind = Literal["qubit", "oscillator"]
SYSTEMS: tuple[str, ...] = ("qubit", "oscillator")
DEFAULT_OSCILLATOR_LEVELS = 10


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenQuantumParams(SystemParams):
    """Physical parameters of the monitored system (time unit: μs).

    The defaults are the qubit's; `OpenQuantumParams.for_system("oscillator")` gives the
    oscillator's defaults. See `OpenQuantumEnv` for the master equation they enter.

    Attributes:
        system: "qubit" (a driven two-level system, σz measured dispersively) or
            "oscillator" (a driven, damped mode truncated at `n_levels`, homodyne detection
            of the x quadrature of its output field).
        n_levels: Hilbert-space dimension N of the oscillator (None: 10); the qubit needs
            None or 2.
        detuning: Δ, drive-frame detuning, rad/μs (qubit H ⊃ Δσz/2, oscillator H ⊃ Δ a†a).
        max_rabi: Ω_max, the Rabi frequency (rad/μs) of a full-scale action.
        damping: γ1, unmonitored energy decay rate, 1/μs (qubit σ-, oscillator internal loss a).
        dephasing: γφ, unmonitored pure dephasing rate, 1/μs (qubit: coherence decay rate;
            oscillator: rate of the channel √γφ a†a).
        measurement_rate: Γm, rate of the monitored channel, 1/μs (qubit √(Γm/2) σz, so Γm is
            the measurement-induced dephasing rate; oscillator √Γm a, the output port).
        efficiency: η in [0, 1], the detection efficiency of the monitored channel.
        dt: control period (one env step), μs.
        substeps: SME integration steps per control period (step h = dt / substeps).
    """

    system: str = "qubit"
    n_levels: int | None = None
    detuning: float = 0.0
    max_rabi: float = 10.0
    damping: float = 0.2
    dephasing: float = 0.2
    measurement_rate: float = 1.0
    efficiency: float = 0.8
    dt: float = 0.02
    substeps: int = 4

    def validate(self) -> None:
        """Raise `ValueError` naming the field if the parameters are not physical."""
        owner = "OpenQuantumParams"
        if self.system not in SYSTEMS:
            raise ValueError(f"{owner}.system must be one of {SYSTEMS}, got {self.system!r}")
        if self.n_levels is not None:
            if isinstance(self.n_levels, bool) or not isinstance(self.n_levels, (int, np.integer)):
                raise ValueError(f"{owner}.n_levels must be an int, got {self.n_levels!r}")
            if self.n_levels < 2:
                raise ValueError(f"{owner}.n_levels must be >= 2, got {self.n_levels}")
            if self.system == "qubit" and self.n_levels != 2:
                raise ValueError(f"{owner}.n_levels must be 2 (or None) for a qubit")
        if not math.isfinite(self.detuning):
            raise ValueError(f"{owner}.detuning must be finite, got {self.detuning!r}")
        require_nonnegative(owner, "max_rabi", self.max_rabi)
        require_nonnegative(owner, "damping", self.damping)
        require_nonnegative(owner, "dephasing", self.dephasing)
        require_nonnegative(owner, "measurement_rate", self.measurement_rate)
        require_in_range(owner, "efficiency", self.efficiency, 0.0, 1.0)
        require_positive(owner, "dt", self.dt)
        if isinstance(self.substeps, bool) or not isinstance(self.substeps, (int, np.integer)):
            raise ValueError(f"{owner}.substeps must be an int, got {self.substeps!r}")
        if self.substeps < 1:
            raise ValueError(f"{owner}.substeps must be >= 1, got {self.substeps}")

    @property
    def dim(self) -> int:
        """N, the Hilbert-space dimension."""
        if self.system == "qubit":
            return 2
        return int(self.n_levels) if self.n_levels is not None else DEFAULT_OSCILLATOR_LEVELS

    @property
    def h(self) -> float:
        """The SME integration step dt / substeps, μs."""
        return self.dt / self.substeps

    @classmethod
    def for_system(cls, system: str = "qubit", **overrides: Any) -> OpenQuantumParams:
        """The documented defaults of `system`, with `overrides` applied."""
        if system == "qubit":
            base: dict[str, Any] = {}
        elif system == "oscillator":
            base = dict(_OSCILLATOR_DEFAULTS)
        else:
            raise ValueError(f"OpenQuantumParams.system must be one of {SYSTEMS}, got {system!r}")
        base.update(overrides)
        return cls(system=system, **base)


# The oscillator's defaults: a slower, weaker drive so that the reachable coherent states
# (|α| <= Ω_max / κ with κ = γ1 + Γm) stay well inside the N = 10 truncation.
_OSCILLATOR_DEFAULTS: dict[str, Any] = {
    "n_levels": DEFAULT_OSCILLATOR_LEVELS,
    "detuning": 0.0,
    "max_rabi": 2.0,
    "damping": 0.2,
    "dephasing": 0.05,
    "measurement_rate": 0.8,
    "efficiency": 0.8,
    "dt": 0.05,
    "substeps": 10,
}

# Train and (disjoint) test ranges per system; fields not listed keep their defaults.
OPEN_QUANTUM_RANGES: dict[str, dict[str, SplitRange]] = {
    "qubit": {
        "detuning": SplitRange((-1.0, 1.0), ((-2.0, -1.2), (1.2, 2.0))),
        "max_rabi": SplitRange((8.0, 12.0), ((6.0, 7.5), (12.5, 14.0))),
        "damping": SplitRange((0.1, 0.4), ((0.05, 0.09), (0.45, 0.6)), log=True),
        "dephasing": SplitRange((0.1, 0.4), ((0.05, 0.09), (0.45, 0.6)), log=True),
        "measurement_rate": SplitRange((0.5, 1.5), ((0.3, 0.45), (1.7, 2.2)), log=True),
        "efficiency": SplitRange((0.6, 0.9), ((0.45, 0.55), (0.92, 1.0))),
    },
    "oscillator": {
        "detuning": SplitRange((-0.5, 0.5), ((-1.0, -0.6), (0.6, 1.0))),
        "max_rabi": SplitRange((1.5, 2.5), ((1.0, 1.4), (2.6, 3.0))),
        "damping": SplitRange((0.1, 0.3), ((0.05, 0.09), (0.35, 0.5)), log=True),
        "dephasing": SplitRange((0.02, 0.08), ((0.01, 0.018), (0.09, 0.12)), log=True),
        "measurement_rate": SplitRange((0.6, 1.2), ((0.4, 0.55), (1.3, 1.6)), log=True),
        "efficiency": SplitRange((0.6, 0.9), ((0.45, 0.55), (0.92, 1.0))),
    },
}


def sample_open_quantum_params(
    rng: np.random.Generator,
    split: Split = "train",
    system: str = "qubit",
    n_levels: int | None = None,
) -> OpenQuantumParams:
    """Draw one system from the `split` range of `OPEN_QUANTUM_RANGES[system]`.

    Args:
        rng: the random generator (e.g. an env's `np_random`).
        split: "train" or "test" (disjoint ranges, so test systems are unseen).
        system: "qubit" or "oscillator".
        n_levels: oscillator dimension (None: the default 10).

    Returns:
        A validated `OpenQuantumParams`.
    """
    if system not in OPEN_QUANTUM_RANGES:
        raise ValueError(f"system must be one of {SYSTEMS}, got {system!r}")
    values = {name: r.sample(rng, split) for name, r in OPEN_QUANTUM_RANGES[system].items()}
    if system == "oscillator" and n_levels is not None:
        values["n_levels"] = n_levels
    return OpenQuantumParams.for_system(system, **values)


# --------------------------------------------------------------------------------------
# Operators and the state layout
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# The SME integrator
# --------------------------------------------------------------------------------------


class SMEBatch:
    """A batch of B conditional density matrices under homodyne detection (numpy, complex128).

    Every trajectory has its own parameters (same system kind, N, dt and substeps). One
    integration step of length h from ρ with drive held over the control period:

        K   = iH + ½ Σ_all rates·L†L                      (H includes the drive)
        dY  = √η <c + c†>_ρ h + ΔW,        ΔW ~ N(0, h),  c = √Γm·C (monitored)
        M   = I − hK + ½h²K² + √η·(c − ½h(Kc + cK))·dY + ½η·c²·(dY² − h)
        ρ̃   = MρM† + h Σ_j B_j ρ B_j† + ½h² Σ_jk (J_j J_k) ρ (J_j J_k)†
        ρ'  = ρ̃ / Tr ρ̃,  then Hermitised

    with J_j the unmonitored channels (√γ1 L, √γφ Z and √(1−η) c) and their midpoint
    ("sandwich") corrections B_j = J_j − ½h(K J_j + J_j K). Every term is of Kraus form
    AρA†, so ρ' is Hermitian, positive semi-definite and of unit trace at every step. With
    the measurement off (Γm = 0 or η = 0) the map is the Le Bris–Rouchon second-order CPTP
    scheme for the Lindblad equation (global error O(h²)); with the measurement on, the
    stochastic part is the Rouchon–Ralph (2015) scheme, whose ½ηc²(dY² − h) term gives
    strong order 1 (measured in tests/envs/test_open_quantum.py and docs/open_quantum.md).

    Args:
        params: B parameter sets of one system kind and dimension, with equal `dt`,
            `substeps`.
        evaluation: "operator" (products of N × N matrices), "superoperator" (the same map
            as a polynomial in dY of (N², N²) matrices, see `superoperators`) or "auto"
            (superoperator for N <= 4). Both give the same states to round-off.
    """

    def __init__(self, params: Sequence[OpenQuantumParams], evaluation: str = "auto") -> None:
        if evaluation not in ("auto", "operator", "superoperator"):
            raise ValueError(
                f"SMEBatch.evaluation must be auto/operator/superoperator: {evaluation}"
            )
        if not params:
            raise ValueError("SMEBatch needs at least one parameter set")
        p0 = params[0]
        for p in params:
            if (p.system, p.dim, p.dt, p.substeps) != (p0.system, p0.dim, p0.dt, p0.substeps):
                raise ValueError("SMEBatch: all parameter sets must share system, N, dt, substeps")
        self.params = list(params)
        self.system = p0.system
        self.n = p0.dim
        self.dt = p0.dt
        self.substeps = p0.substeps
        self.h = p0.h
        ops = system_operators(p0.system, self.n)
        b = len(params)

        def col(name: str) -> np.ndarray:
            return np.array([getattr(p, name) for p in params], dtype=np.float64)[:, None, None]

        det, rabi = col("detuning"), col("max_rabi")
        g1, gphi, gm, eta = (
            col("damping"),
            col("dephasing"),
            col("measurement_rate"),
            col("efficiency"),
        )
        self.H0 = det * ops.detuning_op  # (B, N, N)
        self.HX = rabi * ops.drive_x  # (B, N, N), per unit u_x
        self.HY = rabi * ops.drive_y  # (B, N, N), per unit u_y

        def dag(a: np.ndarray) -> np.ndarray:
            return a.conj().T

        self.Kd = 0.5 * (
            g1 * (dag(ops.damping_op) @ ops.damping_op)
            + gphi * (dag(ops.dephasing_op) @ ops.dephasing_op)
            + gm * (dag(ops.measured_op) @ ops.measured_op)
        )  # (B, N, N)
        # the monitored operator with its detection factor: s = √η c = √(ηΓm) C
        self.S = np.sqrt(eta * gm) * ops.measured_op  # (B, N, N)
        self.S2 = self.S @ self.S
        self.measured = bool(np.any(eta * gm > 0))
        # unmonitored channels, merged where they share an operator
        jumps: list[np.ndarray] = []
        if self.system == "qubit":
            jumps.append(np.sqrt(g1) * ops.damping_op)
            # √γφ σz/√2 and √((1-η)Γm) σz/√2 add in quadrature
            jumps.append(np.sqrt(gphi + (1.0 - eta) * gm) * ops.dephasing_op)
        else:
            jumps.append(np.sqrt(g1 + (1.0 - eta) * gm) * ops.damping_op)
            jumps.append(np.sqrt(gphi) * ops.dephasing_op)
        # (B, N, N) each; kept as separate contiguous arrays: numpy's broadcast batched
        # matmul over an extra channel axis is an order of magnitude slower
        self.J = [np.ascontiguousarray(j) for j in jumps]
        self.JH = [np.ascontiguousarray(np.conj(np.swapaxes(j, -1, -2))) for j in jumps]
        self.eye = np.eye(self.n, dtype=np.complex128)
        self.batch = b
        # the superoperator form (5 (N², N²) matrices per trajectory, built once per control
        # period) needs fewer numpy calls per substep: faster for small N only (measured:
        # qubit about 2× faster, N = 10 several times slower)
        if evaluation == "auto":
            small = self.n <= 4 and b * 5 * self.n**4 <= 2_000_000
            evaluation = "superoperator" if small else "operator"
        self.evaluation = evaluation
        n2 = self.n * self.n
        # w: Tr(s ρ) = vec(ρ) · vec(sᵀ), so √η<c + c†> = 2 Re(vec(ρ) · w)
        self._w = np.ascontiguousarray(np.swapaxes(self.S, -1, -2).reshape(b, n2))
        self._diag = np.arange(self.n) * (self.n + 1)

    def prepare(self, u: np.ndarray) -> dict[str, np.ndarray]:
        """The drive-dependent operators held over one control period.

        Args:
            u: (B, 2) normalised drive quadratures (already validated and clipped).

        Returns:
            A dict of (B, N, N) complex arrays used by `substep`.
        """
        h = self.h
        H = self.H0 + u[:, 0, None, None] * self.HX + u[:, 1, None, None] * self.HY
        K = 1j * H + self.Kd  # (B, N, N)
        M0 = self.eye - h * K + 0.5 * h * h * (K @ K)
        C = self.S - 0.5 * h * (K @ self.S + self.S @ K)
        jb = [j - 0.5 * h * (K @ j + j @ K) for j in self.J]
        out = {"M0": M0, "C": C}
        for i, b in enumerate(jb):
            out[f"JB{i}"] = b
            out[f"JBH{i}"] = np.conj(np.swapaxes(b, -1, -2))
        return out

    def substep(
        self, rho: np.ndarray, pre: dict[str, np.ndarray], dw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One integration step of length h.

        Args:
            rho: (B, N, N) density matrices.
            pre: output of `prepare` for the current drive.
            dw: (B,) Wiener increments ΔW ~ N(0, h), in √μs.

        Returns:
            The new (B, N, N) density matrices and the (B,) record increments dY (√μs).
        """
        h = self.h
        S = self.S
        # <c + c†> √η = Tr[(s + s†) ρ]
        mean = 2.0 * np.einsum("bij,bji->b", S, rho).real
        dy = mean * h + dw
        dyb = dy[:, None, None]
        M = pre["M0"] + pre["C"] * dyb + 0.5 * self.S2 * (dyb * dyb - h)
        new = M @ rho @ np.conj(np.swapaxes(M, -1, -2))
        # midpoint-corrected jumps, then the pair terms Σ_jk (J_j J_k) ρ (J_j J_k)†
        # computed as E(E(ρ)) with E(ρ) = Σ_j J_j ρ J_j†
        once = np.zeros_like(rho)
        for i, (j, jh) in enumerate(zip(self.J, self.JH)):
            new = new + h * (pre[f"JB{i}"] @ rho @ pre[f"JBH{i}"])
            once = once + j @ rho @ jh
        for j, jh in zip(self.J, self.JH):
            new = new + 0.5 * h * h * (j @ once @ jh)
        tr = np.einsum("bii->b", new).real
        new = new / tr[:, None, None]
        new = 0.5 * (new + np.conj(np.swapaxes(new, -1, -2)))
        return new, dy

    def step(self, rho: np.ndarray, u: np.ndarray, dw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One control period: `substeps` integration steps with the drive held.

        Args:
            rho: (B, N, N) density matrices.
            u: (B, 2) normalised drive quadratures in [-1, 1].
            dw: (B, substeps) Wiener increments, each ~ N(0, h).

        Returns:
            (B, N, N) density matrices after dt and the (B, substeps) record increments dY.
        """
        dys = np.empty((self.batch, self.substeps))
        if self.evaluation == "superoperator":
            return self._step_superoperator(rho, u, dw)
        pre = self.prepare(u)
        for i in range(self.substeps):
            rho, dys[:, i] = self.substep(rho, pre, dw[:, i])
        return rho, dys

    def superoperators(self, u: np.ndarray) -> np.ndarray:
        """The same Kraus map as a polynomial in dY on row-major vec ρ (superoperator form).

        With M = A + dY·C + dY²·D (A = M0 − ½h s², D = ½ s²) and vec(XρZ†) = (X ⊗ Z̄) vec ρ,
        vec ρ̃ = Σ_p dY^p S_p vec ρ with S_0 = A⊗Ā + jumps + pairs, S_1 = C⊗Ā + A⊗C̄,
        S_2 = D⊗Ā + C⊗C̄ + A⊗D̄, S_3 = D⊗C̄ + C⊗D̄, S_4 = D⊗D̄.

        Args:
            u: (B, 2) normalised drive.

        Returns:
            (B, 5, N², N²) complex S_0..S_4.
        """
        b, n, h = self.batch, self.n, self.h
        pre = self.prepare(u)

        def kron(x: np.ndarray, z: np.ndarray) -> np.ndarray:
            # (B, N, N) ⊗ conj (B, N, N) -> (B, N², N²), row-major
            return (x[:, :, None, :, None] * z.conj()[:, None, :, None, :]).reshape(b, n * n, n * n)

        d = 0.5 * self.S2
        a = pre["M0"] - h * d
        c = pre["C"]
        once = np.sum([kron(j, j) for j in self.J], axis=0)  # (B, N², N²)
        s0 = kron(a, a) + 0.5 * h * h * (once @ once)
        for i in range(len(self.J)):
            s0 = s0 + h * kron(pre[f"JB{i}"], pre[f"JB{i}"])
        s1 = kron(c, a) + kron(a, c)
        s2 = kron(d, a) + kron(c, c) + kron(a, d)
        s3 = kron(d, c) + kron(c, d)
        s4 = kron(d, d)
        return np.stack([s0, s1, s2, s3, s4], axis=1)

    def _step_superoperator(
        self, rho: np.ndarray, u: np.ndarray, dw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        b, n = self.batch, self.n
        n2 = n * n
        # (B, 5N², N²): one plain batched product per substep (no broadcasting: numpy's
        # broadcast matmul falls off its BLAS path)
        sup = np.ascontiguousarray(self.superoperators(u).reshape(b, 5 * n2, n2))
        v = rho.reshape(b, n2, 1)
        dys = np.empty((b, self.substeps))
        for i in range(self.substeps):
            mean = 2.0 * np.einsum("bk,bk->b", v[:, :, 0], self._w).real
            dy = mean * self.h + dw[:, i]
            dys[:, i] = dy
            pows = dy[:, None] ** np.arange(5)  # (B, 5)
            y = (sup @ v).reshape(b, 5, n2)
            v = np.einsum("bp,bpk->bk", pows.astype(np.complex128), y)[..., None]
            v = v / v[:, self._diag, 0].sum(axis=1).real[:, None, None]
        new = v.reshape(b, n, n)
        return 0.5 * (new + np.conj(np.swapaxes(new, -1, -2))), dys


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


# --------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------


class StateTargetTask(Task):
    """Prepare and hold a pure target state |ψ>.

    With the state x = [Re vec ρ, Im vec ρ] and the target's x* of |ψ><ψ|, the fidelity is
    F = <ψ|ρ|ψ> = Tr(ρ |ψ><ψ|) = x · x* (a Hilbert–Schmidt inner product, linear in x).
    Running cost (1 − x·x_ref) + w_u |u − u_ref|², terminal cost w_T (1 − x·x_ref); the
    env's reward is 1 − running cost = F − w_u |u|².

    Args:
        target: (N,) target ket (normalised here).
        effort_weight: w_u, weight of the squared normalised drive.
        terminal_weight: w_T.
    """

    def __init__(
        self, target: np.ndarray, effort_weight: float = 0.01, terminal_weight: float = 1.0
    ) -> None:
        psi = np.asarray(target, dtype=np.complex128).ravel()
        if psi.size < 2 or not np.all(np.isfinite(psi)) or np.linalg.norm(psi) == 0:
            raise ValueError("StateTargetTask: target must be a finite non-zero ket of size >= 2")
        require_nonnegative("StateTargetTask", "effort_weight", effort_weight)
        require_nonnegative("StateTargetTask", "terminal_weight", terminal_weight)
        self.target_ket = psi / np.linalg.norm(psi)
        self.n = psi.size
        self.state_dim = 2 * self.n * self.n
        self.action_dim = 2
        self.effort_weight = float(effort_weight)
        self.terminal_weight = float(terminal_weight)
        self.target_state = ket_to_state(self.target_ket)

    @property
    def state_lower(self) -> np.ndarray:
        """(nx,) -1: every entry of a density matrix has modulus <= 1."""
        return -np.ones(self.state_dim)

    @property
    def state_upper(self) -> np.ndarray:
        """(nx,) +1."""
        return np.ones(self.state_dim)

    def reference(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The constant target state (T, nx) and zero drive (T, 2) at times `t` (μs)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        x = np.broadcast_to(self.target_state, (t.size, self.state_dim)).copy()
        return x, np.zeros((t.size, self.action_dim))

    def fidelity(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        """F = x · x_ref: (..., nx), (..., nx) -> (...), dimensionless in [0, 1] for states."""
        return (x * x_ref).sum(-1)

    def running_cost(
        self, x: torch.Tensor, u: torch.Tensor, x_ref: torch.Tensor, u_ref: torch.Tensor
    ) -> torch.Tensor:
        """(1 − F) + w_u |u − u_ref|²: x (..., nx), u (..., 2) -> (...)."""
        return 1.0 - self.fidelity(x, x_ref) + self.effort_weight * ((u - u_ref) ** 2).sum(-1)

    def terminal_cost(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        """w_T (1 − F): x (..., nx) -> (...)."""
        return self.terminal_weight * (1.0 - self.fidelity(x, x_ref))

    def running_cost_casadi(self, x: Any, u: Any, x_ref: Any, u_ref: Any) -> Any:
        """The same stage cost on CasADi column vectors."""
        import casadi as ca

        du = u - u_ref
        return 1.0 - ca.dot(x, x_ref) + self.effort_weight * ca.dot(du, du)

    def terminal_cost_casadi(self, x: Any, x_ref: Any) -> Any:
        """The same terminal cost on CasADi column vectors."""
        import casadi as ca

        return self.terminal_weight * (1.0 - ca.dot(x, x_ref))

    def tracking_error(self, x: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
        """Infidelity 1 − x·x_ref per stage: (T, nx), (T, nx) -> (T,)."""
        return 1.0 - np.sum(np.asarray(x) * np.asarray(x_ref), axis=-1)


class QubitPlusXTask(StateTargetTask):
    """Prepare and stabilise the +x eigenstate (|e> + |g>)/√2 of the qubit (Bloch (1, 0, 0))."""

    def __init__(self, effort_weight: float = 0.01, terminal_weight: float = 1.0) -> None:
        super().__init__(np.array([1.0, 1.0]) / math.sqrt(2.0), effort_weight, terminal_weight)


class CoherentStateTask(StateTargetTask):
    """Prepare and stabilise the coherent state |α> of the oscillator (truncated at N)."""

    def __init__(
        self,
        n_levels: int,
        alpha: complex = 1.0,
        effort_weight: float = 0.01,
        terminal_weight: float = 1.0,
    ) -> None:
        self.alpha = complex(alpha)
        super().__init__(coherent_ket(n_levels, alpha), effort_weight, terminal_weight)


class FockStateTask(StateTargetTask):
    """Prepare and stabilise the Fock state |k> of the oscillator (truncated at N)."""

    def __init__(
        self, n_levels: int, k: int = 1, effort_weight: float = 0.01, terminal_weight: float = 1.0
    ) -> None:
        if not 0 <= k < n_levels:
            raise ValueError(f"FockStateTask: k must lie in [0, {n_levels - 1}], got {k}")
        self.k = k
        psi = np.zeros(n_levels, dtype=np.complex128)
        psi[k] = 1.0
        super().__init__(psi, effort_weight, terminal_weight)


def make_task(
    system: str,
    n: int,
    target: str = "default",
    alpha: complex = 1.0,
    fock: int = 1,
    effort_weight: float = 0.01,
) -> StateTargetTask:
    """The task of `system`: "default" is +x for the qubit and |α> for the oscillator.

    Args:
        system: "qubit" or "oscillator".
        n: N, the dimension.
        target: "default", "plus_x" (qubit), "coherent" or "fock" (oscillator).
        alpha: coherent amplitude of the "coherent" target.
        fock: photon number of the "fock" target.
        effort_weight: w_u of the task.
    """
    if system == "qubit":
        if target not in ("default", "plus_x"):
            raise ValueError(f"qubit target must be 'default' or 'plus_x', got {target!r}")
        return QubitPlusXTask(effort_weight)
    if target in ("default", "coherent"):
        return CoherentStateTask(n, alpha, effort_weight)
    if target == "fock":
        return FockStateTask(n, fock, effort_weight)
    raise ValueError(f"oscillator target must be 'default', 'coherent' or 'fock', got {target!r}")


def ground_density(system: str, n: int) -> np.ndarray:
    """(N, N) the start state: the qubit's ground state |g> or the oscillator's vacuum |0>."""
    rho = np.zeros((n, n), dtype=np.complex128)
    if system == "qubit":
        rho[1, 1] = 1.0
    else:
        rho[0, 0] = 1.0
    return rho


# --------------------------------------------------------------------------------------
# The environments
# --------------------------------------------------------------------------------------


def _resolve_params(
    system: str, n_levels: int | None, params: OpenQuantumParams | None
) -> OpenQuantumParams:
    if params is not None:
        if not isinstance(params, OpenQuantumParams):
            raise ValueError(f"{ENV_ID}: params must be OpenQuantumParams, got {type(params)}")
        return params
    if system == "oscillator":
        return OpenQuantumParams.for_system(
            "oscillator", n_levels=n_levels or DEFAULT_OSCILLATOR_LEVELS
        )
    return OpenQuantumParams.for_system(system)


class OpenQuantumEnv(MetaSymEnv):
    r"""A continuously monitored open quantum system under feedback control.

    ## Description
    A driven qubit (default) or a driven, damped oscillator truncated at N levels, whose
    conditional state ρ follows the stochastic master equation (SME) of homodyne detection
    (Itô form, ħ = 1, time in μs, rates in 1/μs, frequencies in rad/μs):

        dρ = −i[H, ρ] dt + Σ_k D[L_k]ρ dt + √η H[c]ρ dW,
        dY = √η <c + c†> dt + dW,

    with D[L]ρ = LρL† − ½{L†L, ρ}, H[c]ρ = cρ + ρc† − <c + c†>ρ, dW a Wiener increment and
    dY the measurement record (units √μs). This is QuTiP's `smesolve` convention with
    `sc_ops=[√η c]`, `c_ops=[√(1−η) c, other channels]`: QuTiP's stored measurement is
    dY/dt. Hamiltonian and channels (`OpenQuantumParams` fields in brackets):

    | | qubit (basis |e>, |g>) | oscillator (basis |0>..|N−1>) |
    |---|---|---|
    | H | Δσz/2 + (Ω/2)(u_x σx + u_y σy) | Δ a†a + (Ω/2)(u_x (a + a†) + u_y i(a − a†)) |
    | damping [γ1] | √γ1 σ− | √γ1 a (internal loss, unmonitored) |
    | dephasing [γφ] | √(γφ/2) σz | √γφ a†a |
    | monitored c [Γm, η] | √(Γm/2) σz (dispersive readout) | √Γm a (output port; x quadrature) |

    Ω = `max_rabi`; Δ = `detuning`. Integration: `SMEBatch` (a Kraus-map step, physical
    at every step, strong order 1, `substeps` steps per control period).

    ## State (`get_state`, 2N² float64)
    [Re vec ρ, Im vec ρ] with row-major vec (entry j·N + k is ρ_jk): the model's canonical
    coordinates. `set_state` checks that the vector is a density matrix (1e-8).

    ## Observation (float64)
    | system | components | bounds |
    |---|---|---|
    | qubit (4) | Bloch vector (<σx>, <σy>, <σz>), then the latest dY | [−1, 1]³, dY unbounded |
    | oscillator (N² + 1) | ρ_jj (N); Re ρ_jk, j<k row-major; Im ρ_jk; dY | [0,1], [−½,½], dY unb. |

    dY is the record increment summed over the last control period (0 after reset).

    ## Action (float32, shape (2,), [−1, 1])
    The drive's two quadratures (u_x, u_y), each scaled by Ω_max (rad/μs) as in the table,
    held constant over the control period. A non-finite or wrongly shaped action raises
    `ValueError`; out-of-range entries are clipped, and `info["action_clipped"]` says so.

    ## Reward
    F − w_u |u|², with the fidelity F = <ψ|ρ|ψ> to the task's target (default: qubit +x
    eigenstate (|e> + |g>)/√2, oscillator coherent state |α=1>), w_u = `effort_weight`.

    ## Start state and episode end
    Qubit ground state |g> (Bloch (0, 0, −1), F = ½ to +x) or oscillator vacuum, unless
    `reset(options={"state": x})` gives another (2N²,) state. Never terminates; the
    registered `TimeLimit` truncates after 400 steps.

    ## Info
    `measurement` (dY of the last period, √μs), `fidelity`, `purity`, `action_clipped`.
    `measurement_record()` returns the whole record of the episode.

    ## Arguments
    system ("qubit" | "oscillator"), n_levels (oscillator N, default 10), params (fixed
    `OpenQuantumParams`; None draws from the `split` range at every reset unless
    `reset(options={"params": p})`), split ("train" | "test"), target ("default", "plus_x",
    "coherent", "fock"), alpha, fock, effort_weight.

    The default qubit (Ω = 10 rad/μs, γ1 = γφ = 0.2/μs, Γm = 1/μs, η = 0.8, dt = 0.02 μs)
    decoheres from +x at 1.3/μs with zero drive, while a π/2 rotation takes 8 steps: a
    feedback drive can hold the conditional state near +x (F ≈ 0.88), zero drive leaves F = ½.

    ## Version history
    v0: first release.
    """

    metadata: dict[str, Any] = {"render_modes": [], "render_fps": 50}  # noqa: RUF012
    env_id = ENV_ID
    task: StateTargetTask
    params: OpenQuantumParams

    def __init__(
        self,
        system: str = "qubit",
        n_levels: int | None = None,
        params: OpenQuantumParams | None = None,
        split: Split = "train",
        target: str = "default",
        alpha: complex = 1.0,
        fock: int = 1,
        effort_weight: float = 0.01,
        render_mode: str | None = None,
    ) -> None:
        if system not in SYSTEMS:
            raise ValueError(f"{ENV_ID}: system must be one of {SYSTEMS}, got {system!r}")
        if split not in ("train", "test"):
            raise ValueError(f"{ENV_ID}: split must be 'train' or 'test', got {split!r}")
        if render_mode is not None:
            raise ValueError(f"{ENV_ID}: no render modes, got {render_mode!r}")
        self.render_mode = None
        base = _resolve_params(system, n_levels, params)
        if base.system != system and params is not None:
            system = base.system
        self.system = system
        self.n = base.dim
        self.split = split
        self._fixed_params = params
        self.params = base
        self.dt = base.dt
        self.task = make_task(system, self.n, target, alpha, fock, effort_weight)
        nx = 2 * self.n * self.n
        self.state_names = [f"re_rho_{j}{k}" for j in range(self.n) for k in range(self.n)] + [
            f"im_rho_{j}{k}" for j in range(self.n) for k in range(self.n)
        ]
        self.state_units = ["1"] * nx
        self.action_names = ["u_x", "u_y"]
        low, high = observation_bounds(system, self.n)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._sim = SMEBatch([base])
        self._rho = ground_density(system, self.n)[None]
        self._record: list[np.ndarray] = []
        self._last_dy = 0.0

    # ----- state access
    def get_state(self) -> np.ndarray:
        """(2N²,) float64 state [Re vec ρ, Im vec ρ] (row-major vec)."""
        return density_to_state(self._rho[0])

    def set_state(self, state: np.ndarray) -> None:
        """Set ρ from a (2N²,) state; `ValueError` unless it is a density matrix (tol 1e-8)."""
        x = np.asarray(state, dtype=np.float64)
        nx = 2 * self.n * self.n
        if x.shape != (nx,):
            raise ValueError(f"{ENV_ID}: state of shape {x.shape}, expected ({nx},)")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{ENV_ID}: non-finite state")
        rho = state_to_density(x, self.n)
        try:
            check_physical(rho, atol=1e-8)
        except ValueError as e:
            raise ValueError(f"{ENV_ID}: state is not a density matrix: {e}") from e
        self._rho = (0.5 * (rho + rho.conj().T))[None]

    @property
    def density_matrix(self) -> np.ndarray:
        """(N, N) complex128 copy of the conditional density matrix."""
        return self._rho[0].copy()

    def measurement_record(self, per_substep: bool = False) -> np.ndarray:
        """The episode's measurement record dY (√μs).

        Args:
            per_substep: False: (T,) increments per control period; True: (T, substeps)
                increments per integration step (what `OpenQuantumModel.conditional_step`
                takes).
        """
        if not self._record:
            return np.zeros((0, self._sim.substeps) if per_substep else (0,))
        rec = np.stack(self._record)
        return rec if per_substep else rec.sum(axis=1)

    # ----- Gymnasium API
    def _obs(self) -> np.ndarray:
        comp = compact_observation(self._rho[0], self.system)
        return np.concatenate([comp, [self._last_dy]]).astype(np.float64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start from the ground state (or `options["state"]`, a (2N²,) density-matrix state);
        `options["params"]` fixes the system of this episode."""
        super().reset(seed=seed)
        options = options or {}
        p = options.get("params")
        if p is None:
            p = self._fixed_params
        if p is None:
            p = sample_open_quantum_params(self.np_random, self.split, self.system, self.n)
        if not isinstance(p, OpenQuantumParams):
            raise ValueError(f"{ENV_ID}: options['params'] must be OpenQuantumParams")
        if p.system != self.system or p.dim != self.n:
            raise ValueError(
                f"{ENV_ID}: params for {p.system} N={p.dim} given to a {self.system} N={self.n} env"
            )
        self.params = p
        self.dt = p.dt
        self._sim = SMEBatch([p])
        self._rho = ground_density(self.system, self.n)[None]
        if options.get("state") is not None:
            self.set_state(options["state"])
        self._record = []
        self._last_dy = 0.0
        return self._obs(), {"fidelity": self._fidelity(), "purity": self._purity()}

    def _fidelity(self) -> float:
        return float(np.dot(self.get_state(), self.task.target_state))

    def _purity(self) -> float:
        r = self._rho[0]
        return float(np.einsum("ij,ji->", r, r).real)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the drive for one control period dt; see the class docstring."""
        a, clipped = self.check_action(action)
        dw = self.np_random.normal(0.0, math.sqrt(self._sim.h), size=(1, self._sim.substeps))
        self._rho, dys = self._sim.step(self._rho, a[None], dw)
        self._record.append(dys[0])
        self._last_dy = float(dys[0].sum())
        f = self._fidelity()
        reward = f - self.task.effort_weight * float(np.dot(a, a))
        info = {
            "measurement": self._last_dy,
            "fidelity": f,
            "purity": self._purity(),
            "action_clipped": clipped,
        }
        return self._obs(), reward, False, False, info


class OpenQuantumVectorEnv(VectorEnv):
    """`num_envs` independent copies of `OpenQuantumEnv`, integrated as one numpy batch.

    Served by `gymnasium.make_vec("MetaSymOpenQuantum-v0", num_envs=B)`. Each copy has its
    own parameters (drawn from `split` at each of its resets unless fixed by `params` or
    `reset(options={"params": p or [p_1..p_B]})`), its own noise and its own record.
    Next-step autoreset: after a copy is truncated (`max_episode_steps`), its next `step`
    ignores the action and returns its reset observation with reward 0. Info holds (B,)
    arrays `measurement`, `fidelity`, `purity`, `action_clipped`.

    Args:
        num_envs: B.
        max_episode_steps: truncation length of each copy.
        Other arguments as `OpenQuantumEnv`.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012
        "render_modes": [],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int = 400,
        system: str = "qubit",
        n_levels: int | None = None,
        params: OpenQuantumParams | None = None,
        split: Split = "train",
        target: str = "default",
        alpha: complex = 1.0,
        fock: int = 1,
        effort_weight: float = 0.01,
        render_mode: str | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"{ENV_ID}: num_envs must be >= 1, got {num_envs}")
        self._proto = OpenQuantumEnv(
            system, n_levels, params, split, target, alpha, fock, effort_weight, render_mode
        )
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(max_episode_steps)
        self.system = self._proto.system
        self.n = self._proto.n
        self.split = split
        self.task = self._proto.task
        self._fixed_params = params
        self.single_observation_space = self._proto.observation_space
        self.single_action_space = self._proto.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = None
        self.params_list = [self._proto.params] * self.num_envs
        self.dt = self._proto.dt
        self._sim = SMEBatch(self.params_list)
        self._rho = np.repeat(ground_density(self.system, self.n)[None], self.num_envs, 0)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._last_dy = np.zeros(self.num_envs)
        self._records: list[list[np.ndarray]] = [[] for _ in range(self.num_envs)]

    def _draw(self, i: int, given: Any) -> OpenQuantumParams:
        p = given[i] if isinstance(given, (list, tuple)) else given
        if p is None:
            p = self._fixed_params
        if p is None:
            p = sample_open_quantum_params(self.np_random, self.split, self.system, self.n)
        if not isinstance(p, OpenQuantumParams) or p.system != self.system or p.dim != self.n:
            raise ValueError(
                f"{ENV_ID}: params must be {self.system} OpenQuantumParams, N={self.n}"
            )
        return p

    def _reset_indices(self, idx: np.ndarray, given: Any = None) -> None:
        for i in idx:
            self.params_list[i] = self._draw(int(i), given)
            self._rho[i] = ground_density(self.system, self.n)
            self._steps[i] = 0
            self._last_dy[i] = 0.0
            self._records[i] = []
        self._sim = SMEBatch(self.params_list)

    def _obs(self) -> np.ndarray:
        comp = compact_observation(self._rho, self.system)
        return np.concatenate([comp, self._last_dy[:, None]], axis=1).astype(np.float64)

    def _fidelity(self) -> np.ndarray:
        return density_to_state(self._rho) @ self.task.target_state

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every copy; `seed` seeds the batch's one generator."""
        if seed is not None:
            if isinstance(seed, (list, tuple)):
                seed = int(seed[0])
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        given = (options or {}).get("params")
        if isinstance(given, (list, tuple)) and len(given) != self.num_envs:
            raise ValueError(f"{ENV_ID}: {len(given)} params for {self.num_envs} envs")
        self._reset_indices(np.arange(self.num_envs), given)
        self._autoreset[:] = False
        return self._obs(), {"fidelity": self._fidelity()}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every copy; actions (B, 2) in [-1, 1] (clipped, noted in info)."""
        try:
            a = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{ENV_ID}: actions {actions!r} are not numeric") from e
        if a.shape != (self.num_envs, 2):
            raise ValueError(f"{ENV_ID}: actions of shape {a.shape}, expected ({self.num_envs}, 2)")
        if not np.all(np.isfinite(a)):
            bad = np.where(~np.all(np.isfinite(a), axis=1))[0].tolist()
            raise ValueError(f"{ENV_ID}: non-finite actions in envs {bad}")
        u = np.clip(a, -1.0, 1.0)
        clipped = np.any(u != a, axis=1)
        # step every copy (the autoreset ones are overwritten below)
        h, s = self._sim.h, self._sim.substeps
        dw = self.np_random.normal(0.0, math.sqrt(h), size=(self.num_envs, s))
        self._rho, dys = self._sim.step(self._rho, u, dw)
        self._last_dy = dys.sum(axis=1)
        for i in range(self.num_envs):
            self._records[i].append(dys[i])
        self._steps += 1
        rewards = self._fidelity() - self.task.effort_weight * np.sum(u * u, axis=1)
        done = self._autoreset.copy()
        if np.any(done):
            self._reset_indices(np.where(done)[0])
            rewards[done] = 0.0
            clipped[done] = False
        truncated = (self._steps >= self.max_episode_steps) & ~done
        terminated = np.zeros(self.num_envs, dtype=bool)
        self._autoreset = truncated.copy()
        fid = self._fidelity()
        purity = np.einsum("bij,bji->b", self._rho, self._rho).real
        info = {
            "measurement": self._last_dy.copy(),
            "fidelity": fid,
            "purity": purity,
            "action_clipped": clipped,
        }
        return self._obs(), rewards, terminated, truncated, info

    def get_state(self) -> np.ndarray:
        """(B, 2N²) float64 states of every copy."""
        return density_to_state(self._rho)

    def measurement_record(self) -> list[np.ndarray]:
        """Per copy, the (T_i,) record increments dY of its current episode (√μs)."""
        return [np.asarray([d.sum() for d in r]) for r in self._records]
