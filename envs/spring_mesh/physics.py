"""Spring-mesh physics in numpy: forces, energies, static equilibria and oscillation modes."""

from __future__ import annotations

import math

import numpy as np

from metasym_control.envs.spring_mesh.params import SpringMeshParams

GRAVITY = 9.81
"""Gravitational acceleration (m/s²) along -y when `SpringMeshParams.gravity` is on."""

BENCHMARK_TIMESTEP = 2.0 * math.pi / 805.0
"""Otness et al.'s step, dt = 2π / 805 ≈ 0.0078053 s; the default physics timestep here."""

DEFAULT_SUBSTEPS = 52
"""Physics steps per control step: dt = 52 · 2π/805 ≈ 0.4059 s (see `SpringMeshEnv`)."""

LENGTH_EPS = 1e-24
"""m², added under the square root of every spring length, so coincident particles stay finite
(lengths >= 1e-12 m; a relative 1e-24 / L² change, below round-off at the mesh's lengths)."""


def spring_stiffnesses(p: SpringMeshParams) -> np.ndarray:
    """(S,) spring constants, N/m."""
    return p.stiffness * p.layout.spring_scale


def particle_masses(p: SpringMeshParams) -> np.ndarray:
    """(n_free,) masses of the free particles, kg."""
    return p.mass * p.layout.mass_scale


def state_dim(p: SpringMeshParams) -> int:
    """nx = 4 · n_free: positions then momenta of the free particles."""
    return 4 * p.layout.n_free


def action_dim(p: SpringMeshParams) -> int:
    """nu = 2 · n_act: (x, y) force of each actuated particle."""
    return 2 * len(p.actuated_indices)


def rest_state(p: SpringMeshParams) -> np.ndarray:
    """(nx,) the mesh at rest: rest positions, zero momenta."""
    lay = p.layout
    return np.concatenate([lay.rest[lay.free].reshape(-1), np.zeros(2 * lay.n_free)])


def all_positions(p: SpringMeshParams, q: np.ndarray) -> np.ndarray:
    """Positions of every particle in the "all" order (free then pinned).

    Args:
        p: parameters.
        q: (..., 2·n_free) free-particle positions, m.

    Returns:
        (..., N, 2) positions, m.
    """
    lay = p.layout
    qf = np.asarray(q, dtype=np.float64).reshape(*np.shape(q)[:-1], lay.n_free, 2)
    pins = np.broadcast_to(lay.rest[lay.pinned], (*qf.shape[:-2], len(lay.pinned), 2))
    return np.concatenate([qf, pins], axis=-2)


def spring_lengths(p: SpringMeshParams, q: np.ndarray) -> np.ndarray:
    """(..., S) current spring lengths, m, for free positions q (..., 2·n_free)."""
    pos = all_positions(p, q)
    ps = p.layout.pair_slots
    d = pos[..., ps[:, 1], :] - pos[..., ps[:, 0], :]
    return np.sqrt((d * d).sum(-1) + LENGTH_EPS)


def spring_forces(p: SpringMeshParams, q: np.ndarray) -> np.ndarray:
    """Net spring force (plus gravity if on) on each free particle.

    Args:
        p: parameters.
        q: (..., 2·n_free) free-particle positions, m.

    Returns:
        (..., 2·n_free) forces, N.
    """
    lay = p.layout
    pos = all_positions(p, q)
    ps = lay.pair_slots
    d = pos[..., ps[:, 1], :] - pos[..., ps[:, 0], :]  # (..., S, 2) first → second end
    length = np.sqrt((d * d).sum(-1) + LENGTH_EPS)  # (..., S)
    coef = spring_stiffnesses(p) * (length - lay.rest_length) / length  # (..., S) N/m
    f = coef[..., None] * d  # (..., S, 2) force on each spring's first end
    out = np.einsum("sn,...sd->...nd", lay.incidence, f)  # (..., n_free, 2)
    if p.gravity:
        out[..., 1] -= particle_masses(p) * GRAVITY
    return out.reshape(*out.shape[:-2], -1)


def potential_energy(p: SpringMeshParams, q: np.ndarray) -> np.ndarray:
    """(...) spring (plus gravity, if on) potential energy, J, for q (..., 2·n_free)."""
    length = spring_lengths(p, q)
    e = 0.5 * (spring_stiffnesses(p) * (length - p.layout.rest_length) ** 2).sum(-1)
    if p.gravity:
        qf = np.asarray(q).reshape(*np.shape(q)[:-1], -1, 2)
        e = e + (particle_masses(p) * GRAVITY * qf[..., 1]).sum(-1)
    return e


def total_energy(p: SpringMeshParams, x: np.ndarray) -> np.ndarray:
    """(...) Hamiltonian H = Σ |p_n|² / (2 m_n) + potential, J, for states x (..., nx)."""
    x = np.asarray(x, dtype=np.float64)
    n2 = 2 * p.layout.n_free
    mom = x[..., n2:].reshape(*x.shape[:-1], -1, 2)
    kin = 0.5 * ((mom * mom).sum(-1) / particle_masses(p)).sum(-1)
    return kin + potential_energy(p, x[..., :n2])


def _stiffness_matrix(p: SpringMeshParams, q: np.ndarray) -> np.ndarray:
    """(2·n_free, 2·n_free) Hessian of the spring potential at q (2·n_free,) (N/m)."""
    lay = p.layout
    nf = lay.n_free
    pos = all_positions(p, q)
    ps = lay.pair_slots
    d = pos[ps[:, 1]] - pos[ps[:, 0]]
    length = np.sqrt((d * d).sum(-1) + LENGTH_EPS)
    nvec = d / length[:, None]
    k = spring_stiffnesses(p)
    ratio = (length - lay.rest_length) / length
    eye = np.eye(2)
    h = np.zeros((2 * nf, 2 * nf))
    for s in range(lay.n_springs):
        nn = np.outer(nvec[s], nvec[s])
        ks = k[s] * (nn + ratio[s] * (eye - nn))
        a, b = ps[s]
        for u, v, sign in ((a, a, 1.0), (b, b, 1.0), (a, b, -1.0), (b, a, -1.0)):
            if u < nf and v < nf:
                h[2 * u : 2 * u + 2, 2 * v : 2 * v + 2] += sign * ks
    return h


def static_equilibrium(
    p: SpringMeshParams,
    fixed: dict[int, np.ndarray] | None = None,
    q0: np.ndarray | None = None,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> np.ndarray:
    """Positions where every free, unfixed particle feels no net force (springs + gravity).

    Newton's method on the potential energy with a backtracking line search.

    Args:
        p: parameters.
        fixed: {particle index: (2,) position, m} held in place (e.g. a displaced edge).
        q0: (2·n_free,) initial guess; default the rest positions with `fixed` applied.
        tol: stop when the largest residual force is below this, N.
        max_iter: Newton iterations.

    Returns:
        (2·n_free,) equilibrium free-particle positions, m.

    Raises:
        ValueError: a fixed index that is not a free particle, or no convergence.
    """
    lay = p.layout
    nf = lay.n_free
    q = rest_state(p)[: 2 * nf].copy() if q0 is None else np.array(q0, dtype=np.float64)
    fixed = fixed or {}
    mask = np.ones(2 * nf, dtype=bool)
    for i, pos in fixed.items():
        s = int(lay.slot[i])
        if s >= nf:
            raise ValueError(f"static_equilibrium: particle {i} is pinned, cannot be fixed")
        q[2 * s : 2 * s + 2] = np.asarray(pos, dtype=np.float64)
        mask[2 * s : 2 * s + 2] = False
    if not mask.any():
        return q
    for _ in range(max_iter):
        r = spring_forces(p, q)[mask]
        if np.max(np.abs(r)) < tol:
            return q
        h = _stiffness_matrix(p, q)[np.ix_(mask, mask)]
        step = np.linalg.lstsq(h, r, rcond=None)[0]
        e0 = potential_energy(p, q)
        alpha = 1.0
        while alpha > 1e-6:
            trial = q.copy()
            trial[mask] += alpha * step
            if float(potential_energy(p, trial)) <= float(e0) + 1e-14 * max(1.0, abs(float(e0))):
                break
            alpha *= 0.5
        q = trial
    r = spring_forces(p, q)[mask]
    if np.max(np.abs(r)) < 1e3 * tol:
        return q
    raise ValueError(f"static_equilibrium did not converge (residual {np.max(np.abs(r)):.3g} N)")


def mode_frequencies(p: SpringMeshParams) -> np.ndarray:
    """Angular frequencies (rad/s) of the undamped mesh's small oscillations about rest.

    Eigenvalues of `M^{-1/2} K M^{-1/2}` with K the stiffness matrix at the rest positions;
    zero modes (a mesh with nothing pinned) are dropped.

    Returns:
        (n_modes,) ascending ω, rad/s.
    """
    lay = p.layout
    k = _stiffness_matrix(p, lay.rest[lay.free].reshape(-1))
    minv = 1.0 / np.sqrt(np.repeat(particle_masses(p), 2))
    lam = np.linalg.eigvalsh(minv[:, None] * k * minv[None, :])
    lam = lam[lam > 1e-9 * max(lam.max(), 1e-300)]
    return np.sqrt(lam)


def slowest_mode_period(p: SpringMeshParams) -> float:
    """Period 2π/ω_min of the slowest oscillation mode about rest, s."""
    return float(2.0 * math.pi / mode_frequencies(p).min())


def default_substeps(
    p: SpringMeshParams, timestep: float = BENCHMARK_TIMESTEP, horizon: int = 20
) -> int:
    """Physics steps per control step so that `horizon` control steps span a quarter of the
    slowest mode's period: `ceil(T_slow / (4 · horizon · timestep))` (52 for the 5×5 default)."""
    return max(1, math.ceil(slowest_mode_period(p) / (4 * horizon * timestep) - 1e-9))
