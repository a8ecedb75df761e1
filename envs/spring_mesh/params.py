"""Spring-mesh parameters, their index tables (`MeshLayout`), sampler and presets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from metasym_control.params import (
    Split,
    SplitRange,
    SystemParams,
    require_nonnegative,
    require_positive,
)

ENV_ID = "MetaSymSpringMesh-v1"
ENV_ID_V0 = "MetaSymSpringMesh-v0"
"""v1 draws start displacements uniform over the disc/ring area (Otness et al.); v0 drew the
radius itself uniformly (smaller starts), kept so v0 data and results stay reproducible."""

TRAIN_INIT_RADIUS = (0.0, 0.35)
TEST_INIT_RADIUS = (0.35, 0.45)
"""Initial-perturbation radii of the benchmark (in units of `spacing`): in and out of
distribution."""


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
        for field in ("spring_scales", "mass_scales"):
            value = getattr(self, field)
            if not isinstance(value, (tuple, list)):
                raise ValueError(
                    f"{name}.{field} must be a sequence of per-element multipliers (or empty), "
                    f"got {value!r}"
                )
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
