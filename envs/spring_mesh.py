"""The MuJoCo spring-mesh environment `MetaSymSpringMesh-v0`: a controllable Otness et al. mesh."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import casadi as ca
import gymnasium as gym
import mujoco
import numpy as np
import torch

from metasym_control.envbase import MetaSymEnv
from metasym_control.params import (
    Split,
    SplitRange,
    SystemParams,
    require_nonnegative,
    require_positive,
)
from metasym_control.task import Task

logger = logging.getLogger(__name__)

GRAVITY = 9.81
"""Gravitational acceleration (m/s²) along -y when `SpringMeshParams.gravity` is on."""

BENCHMARK_TIMESTEP = 2.0 * math.pi / 805.0
"""Otness et al.'s step, dt = 2π / 805 ≈ 0.0078053 s; the default physics timestep here."""

DEFAULT_SUBSTEPS = 52
"""Physics steps per control step: dt = 52 · 2π/805 ≈ 0.4059 s (see `SpringMeshEnv`)."""

LENGTH_EPS = 1e-24
"""m², added under the square root of every spring length, so coincident particles stay finite
(lengths >= 1e-12 m; a relative 1e-24 / L² change, below round-off at the mesh's lengths)."""

TRAIN_INIT_RADIUS = (0.0, 0.35)
TEST_INIT_RADIUS = (0.35, 0.45)
"""Initial-perturbation radii of the benchmark (in units of `spacing`): in and out of
distribution."""


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpringMeshParams(SystemParams):
    """Physical parameters of one spring mesh (one system, i.e. one meta-learning task).

    Particles are numbered row-major, `i = r · cols + c`, row 0 at the top. Particle i rests at
    `(c · spacing, -r · spacing)` in the mesh plane (x right, y up).

    Attributes:
        rows: particle rows (>= 1); the benchmark uses 5 and 10.
        cols: particle columns (>= 1).
        spacing: rest distance between horizontal / vertical neighbours, m.
        stiffness: spring-constant scale k, N/m; spring s has `stiffness · spring_scales[s]`.
        spring_scales: per-spring multipliers (> 0) in the order of `layout.pairs`; empty means
            every spring has exactly `stiffness` (the benchmark).
        damping: velocity-decay rate γ, 1/s: `dv/dt = ... - γ v`, i.e. the benchmark's
            `v ← v · decay^dt` with `γ = -ln(decay)` (0 = undamped; ln 10 ≈ 2.30 = the
            benchmark's damped runs). Default light so that control matters.
        mass: particle-mass scale, kg; free particle n has `mass · mass_scales[n]`.
        mass_scales: per-free-particle multipliers (> 0) in free-particle order; empty = all 1.
        gravity: gravity of 9.81 m/s² along -y on or off (off in the benchmark).
        pinned: indices of the fixed particles; None = the top row.
        actuated: indices of the particles that receive the 2-D control force; None = the
            bottom row. They must be free.
        max_force: force bound per axis and actuated particle, N; action 1 ↦ `max_force`.
    """

    rows: int = 5
    cols: int = 5
    spacing: float = 1.0
    stiffness: float = 1.0
    spring_scales: tuple[float, ...] = ()
    damping: float = 0.05
    mass: float = 1.0
    mass_scales: tuple[float, ...] = ()
    gravity: bool = False
    pinned: tuple[int, ...] | None = None
    actuated: tuple[int, ...] | None = None
    max_force: float = 1.0

    def validate(self) -> None:
        """Raise `ValueError` naming the field if the parameters are not physical."""
        name = type(self).__name__
        for f in ("rows", "cols"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}.{f} must be an integer >= 1, got {v!r}")
        require_positive(name, "spacing", self.spacing)
        require_positive(name, "stiffness", self.stiffness)
        require_nonnegative(name, "damping", self.damping)
        require_positive(name, "mass", self.mass)
        require_positive(name, "max_force", self.max_force)
        n = self.rows * self.cols
        for f in ("pinned", "actuated"):
            idx = getattr(self, f)
            if idx is None:
                continue
            if len(set(idx)) != len(idx) or any(not 0 <= int(i) < n for i in idx):
                raise ValueError(
                    f"{name}.{f} must hold distinct particle indices in [0, {n}), got {idx!r}"
                )
        pinned = set(self.pinned_indices)
        if len(pinned) == n:
            raise ValueError(
                f"{name}.pinned: a {self.rows}x{self.cols} grid with every particle pinned has "
                "no free particle (use rows >= 2 with the default top-row pin)"
            )
        bad = [i for i in self.actuated_indices if i in pinned]
        if bad:
            raise ValueError(f"{name}.actuated: particles {bad} are pinned, not free")
        if not self.actuated_indices:
            raise ValueError(f"{name}.actuated must name at least one free particle")
        if self.spring_scales:
            s = np.asarray(self.spring_scales, dtype=float)
            n_springs = len(_spring_pairs(self.rows, self.cols, pinned))
            if s.shape != (n_springs,):
                raise ValueError(
                    f"{name}.spring_scales must have one entry per spring ({n_springs}), "
                    f"got {s.shape[0]}"
                )
            if not np.all(np.isfinite(s) & (s > 0)):
                raise ValueError(
                    f"{name}.spring_scales must be finite and > 0 (non-positive stiffness)"
                )
        if self.mass_scales:
            s = np.asarray(self.mass_scales, dtype=float)
            if s.shape != (n - len(pinned),):
                raise ValueError(
                    f"{name}.mass_scales must have one entry per free particle "
                    f"({n - len(pinned)}), got {s.shape[0]}"
                )
            if not np.all(np.isfinite(s) & (s > 0)):
                raise ValueError(f"{name}.mass_scales must be finite and > 0 (non-positive mass)")

    @property
    def pinned_indices(self) -> tuple[int, ...]:
        """Sorted indices of the pinned particles (top row when `pinned` is None)."""
        if self.pinned is None:
            return tuple(range(self.cols))
        return tuple(sorted(int(i) for i in self.pinned))

    @property
    def actuated_indices(self) -> tuple[int, ...]:
        """Indices of the actuated particles, in action order (bottom row when None)."""
        if self.actuated is None:
            r = self.rows - 1
            pinned = set(self.pinned_indices)
            return tuple(
                r * self.cols + c for c in range(self.cols) if r * self.cols + c not in pinned
            )
        return tuple(int(i) for i in self.actuated)

    @cached_property
    def layout(self) -> MeshLayout:
        """Index tables and rest geometry derived from these parameters (cached)."""
        return MeshLayout.build(self)

    @property
    def structure_key(self) -> tuple[Any, ...]:
        """What fixes the MuJoCo model's topology (params sharing it differ only in values)."""
        return (
            self.rows,
            self.cols,
            self.spacing,
            self.gravity,
            self.pinned_indices,
            self.actuated_indices,
        )


def _spring_pairs(rows: int, cols: int, pinned: set[int]) -> list[tuple[int, int]]:
    """8-neighbour springs (right, down, down-right, down-left), none between two pins."""
    pairs = []
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
                rr, cc = r + dr, c + dc
                if 0 <= rr < rows and 0 <= cc < cols:
                    j = rr * cols + cc
                    if i in pinned and j in pinned:
                        continue
                    pairs.append((i, j))
    return pairs


@dataclass(frozen=True, eq=False)
class MeshLayout:
    """Derived index tables of a mesh (numpy, read-only by convention).

    Attributes:
        n_particles: N = rows · cols.
        free: (n_free,) particle index of each free particle, ascending (state order).
        pinned: (n_pin,) particle index of each pinned particle.
        slot: (N,) position of each particle in `[free..., pinned...]` (the "all" order).
        actuated_slot: (n_act,) free-particle slot of each actuated particle, action order.
        rest: (N, 2) rest positions, m.
        pairs: (S, 2) particle indices (i, j) of each spring.
        pair_slots: (S, 2) the same in the "all" order.
        rest_length: (S,) rest lengths, m (= the initial distances).
        spring_scale: (S,) per-spring stiffness multipliers.
        mass_scale: (n_free,) per-particle mass multipliers.
        incidence: (S, n_free) +1 where the spring's first end is that free particle, -1 for
            its second end: the force on the free particles is `incidence.T @ f` for spring
            forces `f` (S, 2) acting on each spring's first end.
    """

    n_particles: int
    free: np.ndarray
    pinned: np.ndarray
    slot: np.ndarray
    actuated_slot: np.ndarray
    rest: np.ndarray
    pairs: np.ndarray
    pair_slots: np.ndarray
    rest_length: np.ndarray
    spring_scale: np.ndarray
    mass_scale: np.ndarray
    incidence: np.ndarray

    @property
    def n_free(self) -> int:
        """Number of free particles."""
        return int(self.free.shape[0])

    @property
    def n_springs(self) -> int:
        """Number of springs S."""
        return int(self.pairs.shape[0])

    @staticmethod
    def build(p: SpringMeshParams) -> MeshLayout:
        """Tables for params `p`."""
        n = p.rows * p.cols
        pinned = np.asarray(p.pinned_indices, dtype=np.int64)
        pin_set = set(pinned.tolist())
        free = np.asarray([i for i in range(n) if i not in pin_set], dtype=np.int64)
        order = np.concatenate([free, pinned])
        slot = np.empty(n, dtype=np.int64)
        slot[order] = np.arange(n)
        rest = np.asarray(
            [[c * p.spacing, -r * p.spacing] for r in range(p.rows) for c in range(p.cols)],
            dtype=np.float64,
        )
        pairs = np.asarray(_spring_pairs(p.rows, p.cols, pin_set), dtype=np.int64).reshape(-1, 2)
        pair_slots = slot[pairs]
        rest_length = np.linalg.norm(rest[pairs[:, 1]] - rest[pairs[:, 0]], axis=-1)
        s = len(pairs)
        n_free = len(free)
        spring_scale = np.asarray(p.spring_scales, dtype=float) if p.spring_scales else np.ones(s)
        mass_scale = np.asarray(p.mass_scales, dtype=float) if p.mass_scales else np.ones(n_free)
        incidence = np.zeros((s, n_free))
        for k, (a, b) in enumerate(pair_slots):
            if a < n_free:
                incidence[k, a] += 1.0
            if b < n_free:
                incidence[k, b] -= 1.0
        act = np.asarray([slot[i] for i in p.actuated_indices], dtype=np.int64)
        for arr in (
            free,
            pinned,
            slot,
            act,
            rest,
            pairs,
            pair_slots,
            rest_length,
            incidence,
            spring_scale,
            mass_scale,
        ):
            arr.setflags(write=False)
        return MeshLayout(
            n_particles=n,
            free=free,
            pinned=pinned,
            slot=slot,
            actuated_slot=act,
            rest=rest,
            pairs=pairs,
            pair_slots=pair_slots,
            rest_length=rest_length,
            spring_scale=spring_scale,
            mass_scale=mass_scale,
            incidence=incidence,
        )


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


# --------------------------------------------------------------------------------------------
# Sampler and presets
# --------------------------------------------------------------------------------------------

STIFFNESS_RANGE = SplitRange(train=(0.5, 2.0), test=((0.3, 0.5), (2.0, 3.0)), log=True)
"""Spring-constant scale k, N/m (nominal 1: the benchmark)."""
DAMPING_RANGE = SplitRange(train=(0.02, 0.2), test=((0.005, 0.02), (0.2, 0.5)), log=True)
"""Velocity-decay rate γ, 1/s (light; the benchmark's damped runs, ln 10, are a preset)."""
MASS_RANGE = SplitRange(train=(0.7, 1.4), test=((0.5, 0.7), (1.4, 2.0)), log=True)
"""Particle-mass scale, kg (nominal 1: the benchmark)."""


def sample_spring_mesh_params(
    rng: np.random.Generator,
    split: Split = "train",
    base: SpringMeshParams | None = None,
    stiffness_spread: float = 0.0,
    mass_spread: float = 0.0,
) -> SpringMeshParams:
    """Draw one mesh from the `split` range of stiffness, damping and mass.

    The train and test ranges (`STIFFNESS_RANGE`, `DAMPING_RANGE`, `MASS_RANGE`) are
    disjoint, so held-out systems are unseen. Geometry, pins, actuators, gravity and force
    bound come from `base`.

    Args:
        rng: numpy generator (e.g. the env's `np_random`).
        split: "train" or "test".
        base: the structure to vary; default `SpringMeshParams()` (5×5).
        stiffness_spread: per-spring multipliers drawn uniformly in [1 - s, 1 + s] (0: none).
        mass_spread: per-particle mass multipliers drawn in [1 - s, 1 + s] (0: none).

    Returns:
        A validated `SpringMeshParams`.
    """
    base = base or SpringMeshParams()
    for name, v in (("stiffness_spread", stiffness_spread), ("mass_spread", mass_spread)):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"sample_spring_mesh_params: {name} must lie in [0, 1), got {v}")
    k = STIFFNESS_RANGE.sample(rng, split)
    gamma = DAMPING_RANGE.sample(rng, split)
    m = MASS_RANGE.sample(rng, split)
    lay = base.layout
    spring_scales: tuple[float, ...] = ()
    mass_scales: tuple[float, ...] = ()
    if stiffness_spread > 0:
        spring_scales = tuple(
            float(v) for v in rng.uniform(1 - stiffness_spread, 1 + stiffness_spread, lay.n_springs)
        )
    if mass_spread > 0:
        mass_scales = tuple(
            float(v) for v in rng.uniform(1 - mass_spread, 1 + mass_spread, lay.n_free)
        )
    return base.replace(
        stiffness=k, damping=gamma, mass=m, spring_scales=spring_scales, mass_scales=mass_scales
    )


PRESETS: dict[str, SpringMeshParams] = {
    "default": SpringMeshParams(),
    "benchmark": SpringMeshParams(damping=0.0),
    "benchmark_damped": SpringMeshParams(damping=math.log(10.0)),
    "mesh10": SpringMeshParams(rows=10, cols=10),
    "mesh10_damped": SpringMeshParams(rows=10, cols=10, damping=math.log(10.0)),
    "hanging": SpringMeshParams(gravity=True, stiffness=100.0, damping=0.5, max_force=20.0),
}
"""Named parameter sets: "benchmark" (undamped, Otness et al.), "benchmark_damped" (their
decay 0.1 per unit time, γ = ln 10 ≈ 2.30 1/s, settling in about a second uncontrolled),
"mesh10" variants (10×10), "hanging" (gravity on, stiff springs so the sag stays small)."""


def spring_mesh_preset(name: str) -> SpringMeshParams:
    """The preset called `name` (see `PRESETS`); unknown names raise `ValueError`."""
    if name not in PRESETS:
        raise ValueError(f"unknown spring-mesh preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpringMeshCostWeights:
    """Weights of the quadratic mesh cost (per stage; each term is a mean over its entries).

    Attributes:
        position: weight of the mean squared position error, 1/m².
        momentum: weight of the mean squared momentum error, 1/(kg·m/s)².
        action: weight of the mean squared normalised action deviation from `u_ref`.
        terminal: multiplier of the position and momentum terms at the horizon's end.
    """

    position: float = 10.0
    momentum: float = 1.0
    action: float = 0.1
    terminal: float = 10.0


class SpringMeshTask(Task):
    """A constant target configuration `(q_ref, p_ref = 0)` with holding action `u_ref`.

    Cost per stage (dimensionless):
    `w_q · mean((q - q_ref)²) + w_p · mean((p - p_ref)²) + w_u · mean((u - u_ref)²)`,
    terminal cost `terminal · (w_q · mean((q - q_ref)²) + w_p · mean((p - p_ref)²))`.

    Attributes:
        params: the system the target was computed for.
        x_target: (nx,) target state.
        u_target: (nu,) normalised action that holds the target (0 when none is needed).
        weights: cost weights.
    """

    name: str = "target"

    def __init__(
        self,
        params: SpringMeshParams,
        x_target: np.ndarray,
        u_target: np.ndarray,
        weights: SpringMeshCostWeights | None = None,
    ) -> None:
        self.params = params
        self.state_dim = state_dim(params)
        self.action_dim = action_dim(params)
        self.x_target = np.asarray(x_target, dtype=np.float64).copy()
        self.u_target = np.asarray(u_target, dtype=np.float64).copy()
        if self.x_target.shape != (self.state_dim,) or self.u_target.shape != (self.action_dim,):
            raise ValueError(
                f"{type(self).__name__}: target shapes {self.x_target.shape}, "
                f"{self.u_target.shape}; expected ({self.state_dim},), ({self.action_dim},)"
            )
        self.weights = weights or SpringMeshCostWeights()
        self._n2 = 2 * params.layout.n_free

    def reference(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Constant reference: x_ref (T, nx), u_ref (T, nu) for times t (T,) s."""
        n = np.asarray(t).reshape(-1).shape[0]
        return np.tile(self.x_target, (n, 1)), np.tile(self.u_target, (n, 1))

    def _state_terms(self, x: Any, x_ref: Any) -> Any:
        w, n2 = self.weights, self._n2
        dq = x[..., :n2] - x_ref[..., :n2]
        dp = x[..., n2:] - x_ref[..., n2:]
        return w.position * (dq * dq).sum(-1) / n2 + w.momentum * (dp * dp).sum(-1) / n2

    def running_cost(
        self, x: torch.Tensor, u: torch.Tensor, x_ref: torch.Tensor, u_ref: torch.Tensor
    ) -> torch.Tensor:
        """Stage cost: x (..., nx), u (..., nu), x_ref, u_ref broadcastable -> (...)."""
        du = u - u_ref
        return (
            self._state_terms(x, x_ref) + self.weights.action * (du * du).sum(-1) / self.action_dim
        )

    def terminal_cost(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        """Terminal cost: x (..., nx), x_ref (..., nx) -> (...)."""
        return self.weights.terminal * self._state_terms(x, x_ref)

    def cost_numpy(self, x: np.ndarray, u: np.ndarray) -> float:
        """The running cost against the target, in numpy (the environment's reward is minus it).

        Args:
            x: (nx,) state; u: (nu,) normalised action.
        """
        du = u - self.u_target
        return float(
            self._state_terms(x, self.x_target)
            + self.weights.action * (du * du).sum(-1) / self.action_dim
        )

    def _state_terms_casadi(self, x: Any, x_ref: Any) -> Any:
        w, n2 = self.weights, self._n2
        dq = x[:n2] - x_ref[:n2]
        dp = x[n2:] - x_ref[n2:]
        return w.position * ca.sumsqr(dq) / n2 + w.momentum * ca.sumsqr(dp) / n2

    def running_cost_casadi(self, x: Any, u: Any, x_ref: Any, u_ref: Any) -> Any:
        """The same stage cost on CasADi column vectors (nx,1), (nu,1), (nx,1), (nu,1)."""
        return (
            self._state_terms_casadi(x, x_ref)
            + self.weights.action * ca.sumsqr(u - u_ref) / self.action_dim
        )

    def terminal_cost_casadi(self, x: Any, x_ref: Any) -> Any:
        """The same terminal cost on CasADi column vectors (nx,1), (nx,1)."""
        return self.weights.terminal * self._state_terms_casadi(x, x_ref)

    def tracking_error(self, x: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
        """RMS particle-position distance to the target, m.

        Args:
            x: (T, nx) states; x_ref: (T, nx) references.

        Returns:
            (T,) `sqrt(mean_n |q_n - q_ref,n|²)` over the free particles, m.
        """
        n2 = self._n2
        d = np.asarray(x)[..., :n2] - np.asarray(x_ref)[..., :n2]
        return np.sqrt((d * d).sum(-1) / (n2 // 2))

    def target_error(self, x: np.ndarray) -> np.ndarray:
        """(2·n_free,) position error q - q_ref of state x (nx,), m (the observation's tail)."""
        return np.asarray(x[: self._n2]) - self.x_target[: self._n2]


class SettleTask(SpringMeshTask):
    """Settle the mesh to rest: target = the static equilibrium (rest positions without
    gravity), zero momenta, zero action."""

    name = "settle"

    def __init__(
        self, params: SpringMeshParams, weights: SpringMeshCostWeights | None = None
    ) -> None:
        q = rest_state(params)[: 2 * params.layout.n_free]
        if params.gravity:
            q = static_equilibrium(params)
        x = np.concatenate([q, np.zeros_like(q)])
        super().__init__(params, x, np.zeros(action_dim(params)), weights)


class HoldEdgeTask(SpringMeshTask):
    """Move the bottom edge by `displacement` (m) and hold it there.

    The target configuration is the static equilibrium with the bottom row's particles at
    their rest positions plus `displacement`; `u_target` is the normalised force that holds
    them there (the negative of the net spring and gravity force on each, over `max_force`).
    Every bottom-row particle must be free and actuated.

    Raises:
        ValueError: bottom row not all actuated, or a holding force beyond `max_force`.
    """

    name = "hold_edge"

    def __init__(
        self,
        params: SpringMeshParams,
        displacement: Sequence[float] = (0.3, 0.0),
        weights: SpringMeshCostWeights | None = None,
    ) -> None:
        disp = np.asarray(displacement, dtype=np.float64)
        if disp.shape != (2,) or not np.all(np.isfinite(disp)):
            raise ValueError(f"HoldEdgeTask: displacement must be 2 finite numbers, got {disp}")
        lay = params.layout
        r = params.rows - 1
        edge = [r * params.cols + c for c in range(params.cols)]
        act = list(params.actuated_indices)
        missing = [i for i in edge if i not in act]
        if missing:
            raise ValueError(f"HoldEdgeTask: bottom-row particles {missing} are not actuated")
        fixed = {i: lay.rest[i] + disp for i in edge}
        q = static_equilibrium(params, fixed)
        f = spring_forces(params, q).reshape(-1, 2)  # (n_free, 2)
        u = np.zeros((len(act), 2))
        for a, i in enumerate(act):
            if i in fixed:
                u[a] = -f[lay.slot[i]] / params.max_force
        if np.max(np.abs(u)) > 1.0:
            raise ValueError(
                f"HoldEdgeTask: holding displacement {disp.tolist()} needs "
                f"{np.max(np.abs(u)) * params.max_force:.3g} N > max_force {params.max_force} N"
            )
        self.displacement = disp
        x = np.concatenate([q, np.zeros_like(q)])
        super().__init__(params, x, u.reshape(-1), weights)


def make_task(
    name: str,
    params: SpringMeshParams,
    displacement: Sequence[float] = (0.3, 0.0),
    weights: SpringMeshCostWeights | None = None,
) -> SpringMeshTask:
    """Build the task `name` ("settle" or "hold_edge") for `params`."""
    if name == "settle":
        return SettleTask(params, weights)
    if name == "hold_edge":
        return HoldEdgeTask(params, displacement, weights)
    raise ValueError(f"unknown spring-mesh task {name!r}; choose 'settle' or 'hold_edge'")


# --------------------------------------------------------------------------------------------
# MuJoCo model
# --------------------------------------------------------------------------------------------

Integrator = Literal["RK4", "Euler"]


def _f(v: float) -> str:
    """A float as exact MJCF text."""
    return repr(float(v))


def build_mjcf(
    p: SpringMeshParams, timestep: float = BENCHMARK_TIMESTEP, integrator: Integrator = "RK4"
) -> str:
    """MJCF text of the mesh `p`.

    Each free particle is a body at its rest position with two slide joints (x then y, so
    `qpos` is the displacement from rest) and damping `m · γ` (velocity decay at rate γ);
    pinned particles are sites of the world body; each spring is a spatial tendon between two
    sites with stiffness `k_s` and spring length (rest length) the initial distance; each
    actuated particle has two motors with gear `max_force` and control range [-1, 1].
    Contacts are off; the mesh lies in the world x-y plane, seen from +z.

    Args:
        p: parameters.
        timestep: physics step, s.
        integrator: MuJoCo integrator ("RK4" is the documented default, see `SpringMeshEnv`).

    Returns:
        The model's XML text.
    """
    lay = p.layout
    s = p.spacing
    k = spring_stiffnesses(p)
    m = particle_masses(p)
    radius = 0.08 * s
    width = 0.025 * s
    cx = 0.5 * (p.cols - 1) * s
    cy = -0.5 * (p.rows - 1) * s
    half = 0.5 * max(p.cols - 1, p.rows - 1, 1) * s + 0.8 * s
    fovy = 45.0
    cam_z = half / math.tan(math.radians(fovy / 2))
    g = -GRAVITY if p.gravity else 0.0
    lines = [
        f'<mujoco model="spring_mesh_{p.rows}x{p.cols}">',
        '  <compiler angle="radian" autolimits="true"/>',
        f'  <option timestep="{_f(timestep)}" integrator="{integrator}" gravity="0 {_f(g)} 0">',
        '    <flag contact="disable"/>',
        "  </option>",
        '  <visual><global offwidth="1280" offheight="1280"/>'
        '<headlight ambient="0.5 0.5 0.5" diffuse="0.5 0.5 0.5"/></visual>',
        '  <default><geom contype="0" conaffinity="0"/></default>',
        "  <worldbody>",
        f'    <camera name="top" pos="{_f(cx)} {_f(cy)} {_f(cam_z)}" xyaxes="1 0 0 0 1 0" '
        f'fovy="{fovy}"/>',
        f'    <geom name="floor" type="plane" pos="{_f(cx)} {_f(cy)} {_f(-radius * 2)}" '
        f'size="{_f(half * 2)} {_f(half * 2)} 0.1" rgba="0.95 0.95 0.95 1"/>',
    ]
    for i in lay.pinned:
        x, y = lay.rest[i]
        lines.append(f'    <site name="s{i}" pos="{_f(x)} {_f(y)} 0" size="{_f(radius)}"/>')
        lines.append(
            f'    <geom name="g{i}" type="box" pos="{_f(x)} {_f(y)} 0" '
            f'size="{_f(radius)} {_f(radius)} {_f(radius)}" rgba="0.3 0.3 0.3 1"/>'
        )
    for n, i in enumerate(lay.free):
        x, y = lay.rest[i]
        d = m[n] * p.damping
        lines += [
            f'    <body name="b{i}" pos="{_f(x)} {_f(y)} 0">',
            f'      <joint name="j{i}x" type="slide" axis="1 0 0" damping="{_f(d)}"/>',
            f'      <joint name="j{i}y" type="slide" axis="0 1 0" damping="{_f(d)}"/>',
            f'      <inertial pos="0 0 0" mass="{_f(m[n])}" diaginertia="1e-4 1e-4 1e-4"/>',
            f'      <geom name="g{i}" type="sphere" size="{_f(radius)}" rgba="0.5 0.5 0.5 1"/>',
            f'      <site name="s{i}" size="{_f(radius / 2)}"/>',
            "    </body>",
        ]
    lines.append("  </worldbody>")
    lines.append("  <tendon>")
    for t, (i, j) in enumerate(lay.pairs):
        lines.append(
            f'    <spatial name="k{t}" stiffness="{_f(k[t])}" '
            f'springlength="{_f(lay.rest_length[t])}" '
            f'width="{_f(width)}" rgba="0.5 0.5 0.5 1"><site site="s{i}"/><site site="s{j}"/>'
            "</spatial>"
        )
    lines.append("  </tendon>")
    lines.append("  <actuator>")
    for i in p.actuated_indices:
        for ax in "xy":
            lines.append(
                f'    <motor name="u{i}{ax}" joint="j{i}{ax}" gear="{_f(p.max_force)}" '
                'ctrlrange="-1 1"/>'
            )
    lines.append("  </actuator>")
    lines.append("</mujoco>")
    return "\n".join(lines) + "\n"


def _strain_rgba(strain: np.ndarray, saturate: float = 0.15) -> np.ndarray:
    """(..., 4) colours: blue for compression, grey at rest length, red for extension."""
    t = np.clip(np.asarray(strain) / saturate, -1.0, 1.0)[..., None]
    grey = np.array([0.55, 0.55, 0.55, 1.0])
    red = np.array([0.85, 0.1, 0.1, 1.0])
    blue = np.array([0.1, 0.25, 0.9, 1.0])
    return np.where(t >= 0, grey + t * (red - grey), grey - t * (blue - grey))


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


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


class SpringMeshEnv(MetaSymEnv):
    """A controllable 2-D spring mesh in MuJoCo (Otness et al., 2021), `MetaSymSpringMesh-v0`.

    A `rows × cols` grid of particles (default 5×5) in the plane, the top row pinned, springs
    between 8-neighbours (diagonals included) with rest length the initial distance; bounded
    2-D forces act on the bottom row. The undamped, unforced mesh is Hamiltonian in the
    canonical coordinates of the state.

    **State** (`get_state`, float64, nx = 4·n_free; n_free = 20 for 5×5 with the top row
    pinned, so nx = 80). Free particles in ascending particle index (row-major, row 0 at the
    top; `params.layout.free`):

    | index | meaning | unit |
    | --- | --- | --- |
    | `2n`, `2n+1` | position (x, y) of free particle n (absolute, mesh plane) | m |
    | `2·n_free + 2n`, `+1` | momentum (p_x, p_y) = m_n · velocity of free particle n | kg·m/s |

    Particle `i = r·cols + c` rests at `(c·spacing, -r·spacing)`: x right, y up.

    **Observation** (float64, 6·n_free): the state followed by the task's target error
    `q - q_ref` (2·n_free, m). Bounds are infinite (positions and momenta are not bounded).

    **Action** (float32, nu = 2·n_act, 10 for the default bottom row of 5): `[a_x, a_y]` per
    actuated particle in `params.actuated_indices` order, each in [-1, 1]:

    | index | meaning | map to physics |
    | --- | --- | --- |
    | `2a`, `2a+1` | force (x, y) on actuated particle a | `F = a · max_force` N (1 N default) |

    Out-of-range actions are clipped to [-1, 1] and `info["clipped"]` is True; a non-finite
    action or one of the wrong shape raises `ValueError`.

    **Dynamics.** `m_n dv_n/dt = Σ_s k_s (L_s - L0_s) e_s - m_n γ v_n + F_n (- m_n g ŷ)`,
    with spring s of length L_s, rest length L0_s and unit vector e_s towards its other end.
    Integrator: MuJoCo's RK4 at `timestep` = 2π/805 ≈ 0.0078053 s (the benchmark's step).
    Why: with no damping and no control RK4 conserves energy to about 4e-7 over 805 steps of
    the 5×5 mesh, semi-implicit Euler only to about 0.8% (see `docs/spring_mesh.md`); and RK4
    treats damping explicitly, so the analytic model reproduces the step exactly.
    `integrator="Euler"` is available for comparison only (the analytic model is RK4).

    **Control period.** `dt = n_substeps · timestep`. The default `n_substeps=None` chooses
    `ceil(T_slow / (4 · 20 · timestep))` from the constructor's (nominal) parameters, so a
    20-step MPC horizon spans at least a quarter of the slowest mode's period T_slow. For the
    default 5×5 mesh (k = 1 N/m, m = 1 kg): modes from ω = 0.195 to 2.63 rad/s, T_slow =
    32.18 s, T_slow/4 = 8.05 s → 52 substeps, dt = 0.4059 s; horizons of 20 / 25 / 30 steps
    span 8.12 / 10.1 / 12.2 s (0.25 / 0.32 / 0.38 T_slow); the fastest mode's period (2.39 s)
    is 5.9 control steps. 10×10: T_slow = 66.8 s → 107 substeps, dt = 0.835 s.

    **Reward**: minus the task's running cost (a weighted mean squared position error to the
    target configuration, momentum and control effort; see `SpringMeshTask`).

    **Tasks** (`task=`): "settle" — bring the mesh to rest (target: rest positions, or the
    sagged equilibrium with gravity on); "hold_edge" — move the bottom edge by
    `edge_displacement` (m) and hold it (target: the static equilibrium with the edge there,
    `u_ref` the holding force). `env.task` is rebuilt at every reset (it depends on params).

    **Start**: every free particle displaced from rest by a random vector of length
    uniform in `init_radius` · spacing (default: [0, 0.35] for split "train", [0.35, 0.45]
    out of distribution for "test"; the benchmark's rings), uniform angle, at rest (p = 0).
    `reset(options=...)` keys: "params" (a `SpringMeshParams` of the same structure, for this
    episode), "state" ((nx,) initial state), "init_radius" ((low, high)).

    **Parameters** (fields, units, validation: `SpringMeshParams`; ranges and presets:
    `docs/spring_mesh.md`) per reset: the constructor's `params` if given, else a draw from the
    `split` range of stiffness, damping and mass (`sample_spring_mesh_params`), around
    `SpringMeshParams(rows=rows, cols=cols)`. Attribute `fixed_params` holds the constructor's
    `params` (None: draw per reset); assigning params of the same structure changes later
    resets (the data generator reuses environments so).

    **Episode end**: truncation after 400 control steps (`gymnasium.make`'s TimeLimit);
    termination if the state becomes non-finite or a particle strays more than
    `max_displacement` · spacing from rest (`info["reason"]`).

    **Arguments**:

    | argument | default | meaning |
    | --- | --- | --- |
    | `params` | None | fixed `SpringMeshParams` for every reset (None: draw per reset) |
    | `rows`, `cols` | 5, 5 | grid size when `params` is None |
    | `split` | "train" | parameter range and start ring ("test": held out / OOD) |
    | `task` | "settle" | "settle" or "hold_edge" |
    | `edge_displacement` | (0.3, 0.0) | hold_edge target displacement of the bottom row, m |
    | `n_substeps` | None | physics steps per control step (None: slowest-mode rule) |
    | `timestep` | 2π/805 | physics step, s |
    | `integrator` | "RK4" | MuJoCo integrator ("Euler" for comparison only) |
    | `init_radius` | None | start-ring radii (low, high) in spacings (None: from split) |
    | `max_displacement` | 5.0 | termination distance from rest, in spacings |
    | `render_mode` | None | "rgb_array": springs and particles coloured by strain |
    | `width`, `height` | 480, 480 | rendered image size, pixels |

    Rendering: blue compressed, grey at rest length, red stretched (saturating at ±15%
    strain); pinned particles are dark boxes; the top camera frames the whole mesh.

    **info**: "clipped" (bool), "tracking_error" (RMS position error to the target, m),
    "energy" (Hamiltonian, J), "time" (s).

    **Version history**: v0 — first version.
    """

    env_id = "MetaSymSpringMesh-v0"
    params: SpringMeshParams
    task: SpringMeshTask
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012

    def __init__(
        self,
        params: SpringMeshParams | None = None,
        rows: int | None = None,
        cols: int | None = None,
        split: Split = "train",
        task: Literal["settle", "hold_edge"] = "settle",
        edge_displacement: Sequence[float] = (0.3, 0.0),
        n_substeps: int | None = None,
        timestep: float = BENCHMARK_TIMESTEP,
        integrator: Integrator = "RK4",
        init_radius: tuple[float, float] | None = None,
        max_displacement: float = 5.0,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"SpringMeshEnv: split must be 'train' or 'test', got {split!r}")
        if task not in ("settle", "hold_edge"):
            raise ValueError(f"SpringMeshEnv: task must be 'settle' or 'hold_edge', got {task!r}")
        if integrator not in ("RK4", "Euler"):
            raise ValueError(f"SpringMeshEnv: integrator must be 'RK4' or 'Euler': {integrator!r}")
        if not (math.isfinite(timestep) and timestep > 0):
            raise ValueError(f"SpringMeshEnv: timestep must be > 0, got {timestep}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError("SpringMeshEnv: render_mode must be None or 'rgb_array'")
        if params is not None:
            if (rows is not None and rows != params.rows) or (
                cols is not None and cols != params.cols
            ):
                raise ValueError("SpringMeshEnv: rows/cols disagree with params")
            base = params
        else:
            base = SpringMeshParams(rows=rows or 5, cols=cols or 5)
        if n_substeps is None:
            n_substeps = default_substeps(base, timestep)
        if isinstance(n_substeps, bool) or int(n_substeps) != n_substeps or n_substeps < 1:
            raise ValueError(f"SpringMeshEnv: n_substeps must be an integer >= 1, got {n_substeps}")
        self.fixed_params: SpringMeshParams | None = params
        self._base = base
        self.split = split
        self.task_name = task
        self.edge_displacement = tuple(float(v) for v in edge_displacement)
        self.n_substeps = int(n_substeps)
        self.timestep = float(timestep)
        self.integrator = integrator
        self.dt = self.n_substeps * self.timestep
        self.init_radius = init_radius
        self.max_displacement = float(max_displacement)
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        self.metadata = {**type(self).metadata, "render_fps": max(1, round(1.0 / self.dt))}
        self._renderer: Any = None
        self._structure: tuple[Any, ...] | None = None
        self.model: Any = None
        self.data: Any = None
        self._apply_params(base)
        self.task = make_task(task, base, self.edge_displacement)  # rebuilt at every reset

        nf = base.layout.n_free
        nu = action_dim(base)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(nu,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(6 * nf,), dtype=np.float64)
        free = base.layout.free
        self.state_names = [f"q{i}{a}" for i in free for a in "xy"] + [
            f"p{i}{a}" for i in free for a in "xy"
        ]
        self.state_units = ["m"] * (2 * nf) + ["kg*m/s"] * (2 * nf)
        self.action_names = [f"F{i}{a}" for i in base.actuated_indices for a in "xy"]

    # --- parameters and model --------------------------------------------------------------

    def _apply_params(self, p: SpringMeshParams) -> None:
        """Make `p` the system in force: compile the MJCF or update values in place."""
        key = (p.structure_key, self.timestep, self.integrator)
        if key != self._structure:
            if self._structure is not None and p.structure_key != self._base.structure_key:
                raise ValueError(
                    "SpringMeshEnv: params of another structure (grid, spacing, pins, actuators "
                    "or gravity) than the environment's; make a new environment instead"
                )
            self.model = mujoco.MjModel.from_xml_string(
                build_mjcf(p, self.timestep, self.integrator)
            )
            self.data = mujoco.MjData(self.model)
            self._structure = key
            lay = p.layout
            self._body_ids = np.asarray(
                [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, f"b{i}") for i in lay.free]
            )
            self._geom_ids = np.asarray(
                [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, f"g{i}") for i in lay.free]
            )
            if self._renderer is not None:
                self._renderer.close()
                self._renderer = None
        m = particle_masses(p)
        self.model.tendon_stiffness[:] = spring_stiffnesses(p)
        self.model.body_mass[self._body_ids] = m
        self.model.dof_damping[:] = np.repeat(m * p.damping, 2)
        # MuJoCo caches mass-derived constants at compile time (the dynamics otherwise keep
        # the old masses): recompute them after writing new masses.
        mujoco.mj_setConst(self.model, self.data)
        self.params = p
        self._mass2 = np.repeat(m, 2)
        self._rest_q = p.layout.rest[p.layout.free].reshape(-1).copy()
        self._n2 = 2 * p.layout.n_free

    def _draw_params(self) -> SpringMeshParams:
        if self.fixed_params is not None:
            return self.fixed_params
        return sample_spring_mesh_params(self.np_random, self.split, self._base)

    # --- state -----------------------------------------------------------------------------

    def get_state(self) -> np.ndarray:
        """(nx,) float64 state `[q (2·n_free) m, p (2·n_free) kg·m/s]` (see the class doc)."""
        q = self._rest_q + self.data.qpos
        p = self._mass2 * self.data.qvel
        return np.concatenate([q, p])

    def set_state(self, state: np.ndarray) -> None:
        """Set positions and momenta from an (nx,) state (inverse of `get_state`)."""
        x = np.asarray(state, dtype=np.float64)
        if x.shape != (2 * self._n2,):
            raise ValueError(f"{self.env_id}: state of shape {x.shape}, expected ({2 * self._n2},)")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{self.env_id}: non-finite state")
        self.data.qpos[:] = x[: self._n2] - self._rest_q
        self.data.qvel[:] = x[self._n2 :] / self._mass2
        mujoco.mj_forward(self.model, self.data)

    def _obs(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, self.task.target_error(x)])

    def energy(self) -> float:
        """Current Hamiltonian (kinetic + spring + gravity potential), J."""
        return float(total_energy(self.params, self.get_state()))

    # --- Gymnasium -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode (see the class doc for `options`)."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"params", "state", "init_radius"}
        if unknown:
            raise ValueError(f"{self.env_id}: unknown reset options {sorted(unknown)}")
        p = options.get("params")
        if p is None:
            p = self._draw_params()
        elif not isinstance(p, SpringMeshParams):
            raise ValueError(f"{self.env_id}: options['params'] must be a SpringMeshParams")
        self._apply_params(p)
        self.task = make_task(self.task_name, p, self.edge_displacement)
        mujoco.mj_resetData(self.model, self.data)
        if options.get("state") is not None:
            self.set_state(np.asarray(options["state"], dtype=np.float64))
        else:
            lo, hi = (
                options.get("init_radius")
                or self.init_radius
                or (TRAIN_INIT_RADIUS if self.split == "train" else TEST_INIT_RADIUS)
            )
            if not 0 <= lo <= hi:
                raise ValueError(f"{self.env_id}: init_radius must satisfy 0 <= low <= high")
            nf = p.layout.n_free
            r = self.np_random.uniform(lo, hi, nf) * p.spacing
            th = self.np_random.uniform(0.0, 2.0 * math.pi, nf)
            disp = np.stack([r * np.cos(th), r * np.sin(th)], axis=-1).reshape(-1)
            self.set_state(np.concatenate([self._rest_q + disp, np.zeros(2 * nf)]))
        x = self.get_state()
        return self._obs(x), self._info(x, False)

    def _info(self, x: np.ndarray, clipped: bool) -> dict[str, Any]:
        err = self.task.tracking_error(x[None], self.task.x_target[None])[0]
        return {
            "clipped": clipped,
            "tracking_error": float(err),
            "energy": float(total_energy(self.params, x)),
            "time": float(self.data.time),
        }

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one control period (n_substeps physics steps) under `action` (nu,)."""
        a, clipped = self.check_action(action)
        self.data.ctrl[:] = a
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        x = self.get_state()
        reward = -self.task.cost_numpy(x, a)
        info = self._info(x, clipped)
        terminated = False
        if not np.all(np.isfinite(x)):
            terminated, info["reason"] = True, "non-finite state"
            reward = -1e6
        else:
            disp = np.abs(x[: self._n2] - self._rest_q).max()
            if disp > self.max_displacement * self.params.spacing:
                terminated, info["reason"] = True, "particle beyond max_displacement"
        return self._obs(x), float(reward), terminated, False, info

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """(height, width, 3) uint8 frame from the top camera, springs coloured by strain."""
        if self.render_mode is None:
            gym.logger.warn("SpringMeshEnv.render called without render_mode='rgb_array'")
            return None
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.model, self.height, self.width)
            except Exception as e:  # mujoco.FatalError and friends: no GL context
                raise RuntimeError(
                    f"{self.env_id}: cannot create an OpenGL context for rendering ({e}); "
                    "headless machines need MUJOCO_GL=egl set before mujoco is first imported"
                ) from e
        lay = self.params.layout
        strain = (self.data.ten_length - lay.rest_length) / lay.rest_length  # (S,)
        self.model.tendon_rgba[:] = _strain_rgba(strain)
        inc = np.abs(lay.incidence)  # (S, n_free)
        per = (inc.T @ strain) / np.maximum(inc.sum(0), 1.0)  # (n_free,) mean strain of springs
        self.model.geom_rgba[self._geom_ids] = _strain_rgba(per)
        self._renderer.update_scene(self.data, camera="top")
        return np.asarray(self._renderer.render())

    def close(self) -> None:
        """Release the renderer."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()
