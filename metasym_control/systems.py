"""The registry of systems: one entry per system says everything the learned path needs.

An entry (`SystemEntry`) names a system (`quadrotor`, `spring_mesh`, `quantum`, ...) and
gives its environment id and default arguments, how its parameters are drawn, the policy that
explores it for data, its analytic (nominal and oracle) model, its canonical coordinates, its
tasks, its MPC defaults and the physical range of each state component. Commands take
`--env NAME` from `SYSTEMS`; a user's system joins with `register_system` (docs/systems.md).
Environment ids live here, in the wiring, so that models stay free of them.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metasym_control.envs.open_quantum.params import ENV_ID as QUANTUM_ENV_ID
from metasym_control.envs.quadrotor.params import ENV_ID as QUADROTOR_ENV_ID
from metasym_control.envs.spring_mesh.params import ENV_ID as SPRING_MESH_ENV_ID
from metasym_control.envs.toy_oscillator.params import TOY_DT, TOY_ENV_ID
from metasym_control.models.coordinates import (
    CoordinateMap,
    generic_coordinates,
    quadrotor_coordinates,
    quantum_coordinates,
    spring_mesh_coordinates,
)
from metasym_control.models.learned import LearnedModel
from metasym_control.models.metasym import MetaSymConfig
from metasym_control.models.registry import ModelKind, make_model
from metasym_control.params import Split, SystemParams
from metasym_control.trajectory import Trajectory

if TYPE_CHECKING:
    from metasym_control.closed_loop import ClosedLoopResult
    from metasym_control.controller import Controller
    from metasym_control.data import BatchPolicy
    from metasym_control.dynamics import DynamicsModel

logger = logging.getLogger(__name__)

PLUGIN_GROUP = "metasym_control.systems"
"""Entry-point group of users' systems: each entry names a callable that registers one
(`register_system`); they load the first time a name is not found (docs/systems.md)."""


@dataclass(frozen=True)
class MPCDefaults:
    """MPC settings that suit a system (its time scales and action authority).

    Attributes:
        horizon: prediction horizon, control steps.
        samples: MPPI samples K.
        noise_sigma: MPPI exploration std of the normalised action.
        temperature: MPPI temperature λ (in units of the task's cost).
    """

    horizon: int = 20
    samples: int = 256
    noise_sigma: float = 0.15
    temperature: float = 0.1


@dataclass(frozen=True)
class SystemEntry:
    """What the learned path needs to know about one system.

    Attributes:
        name: the `--env` name.
        description: one line for `--help` and the docs.
        env_id: Gymnasium id with version; its constructor takes `params=` and `split=`.
        env_kwargs: default constructor arguments (e.g. the task).
        sample_params: `(rng, split) -> params` of one system of the train or test range.
        nominal_params: `() -> params` the nominal model assumes (what a user knows a priori).
        exploration: `(chunk_params, seed, dt) -> BatchPolicy` acting for one chunk of
            sub-environments while data is collected.
        analytic_model: `(params, dt) -> DynamicsModel` from physics; with the nominal
            parameters it is the nominal model, with the true ones the oracle.
        coordinates: `state_dim -> CoordinateMap`, the canonical (q, p) of the state.
        attitude_coordinates: optional `state_dim -> CoordinateMap` that also pairs a local
            chart of the rotation with the angular momentum (MetaSym's
            `canonical_attitude`); None: the system has no rotation.
        state_range: `params -> (low, high)`, (nx,) each: the physical range of every state
            component (data outside it is refused as mis-scaled).
        tasks: the env's task names, the default first.
        task_kwarg: the constructor argument that selects a task.
        mpc: MPC defaults.
        episode_steps: default transitions per generated episode.
        state_dims: the state lengths this entry describes (None: any); tells systems that
            share an env id apart (the qubit and the oscillator).
        generate: optional replacement of the Gymnasium collector, `(n_tasks, episodes,
            steps, split, seed) -> Trajectory` drawing its own systems (the toy oscillators'
            exact linear solution).
        trial_steps: control steps of a closed-loop trial (`metasym_control.experiment`).
        trial_kwargs: constructor arguments of the closed-loop trial's env on top of
            `env_kwargs` (e.g. the pendulum's hanging start; data keeps `env_kwargs`).
        metrics: optional `(ClosedLoopResult, env) -> {name: value}` scores of a closed-loop
            run beyond the task cost (e.g. the qubit's mean fidelity), `env` unwrapped.
        fallback: optional `(task, dt) -> Controller` that stabilises any system of the range
            without a model, flown when no MPC plan can be trusted (the quadrotor's cascaded
            PD); None: the task's reference action.
    """

    name: str
    description: str
    env_id: str
    sample_params: Callable[[np.random.Generator, Split], SystemParams]
    nominal_params: Callable[[], SystemParams]
    exploration: Callable[[Sequence[SystemParams], int, float], BatchPolicy]
    coordinates: Callable[[int], CoordinateMap]
    state_range: Callable[[SystemParams], tuple[np.ndarray, np.ndarray]]
    analytic_model: Callable[[SystemParams, float], DynamicsModel] | None = None
    attitude_coordinates: Callable[[int], CoordinateMap] | None = None
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = ()
    task_kwarg: str = "task"
    mpc: MPCDefaults = field(default_factory=MPCDefaults)
    episode_steps: int = 150
    state_dims: tuple[int, ...] | None = None
    generate: Callable[[int, int, int, Split, int], Trajectory] | None = None
    trial_steps: int = 200
    trial_kwargs: Mapping[str, Any] = field(default_factory=dict)
    metrics: Callable[[ClosedLoopResult, Any], dict[str, float]] | None = None
    fallback: Callable[[Any, float], Controller] | None = None

    def make_env(self, **overrides: Any) -> Any:
        """`gymnasium.make(env_id, **env_kwargs, **overrides)` (the env checker off)."""
        import gymnasium as gym

        from metasym_control.registration import register_envs

        register_envs()
        kwargs = {**self.env_kwargs, **overrides}
        kwargs.setdefault("disable_env_checker", True)
        return gym.make(self.env_id, **kwargs)


# --- the project's systems -------------------------------------------------------------------


def _quadrotor_entry() -> SystemEntry:
    from metasym_control.envs.quadrotor.params import QuadrotorParams, sample_quadrotor_params
    from metasym_control.envs.quadrotor.tasks import FLIGHT_LOWER, FLIGHT_UPPER

    def explore(chunk: Sequence[SystemParams], seed: int, dt: float) -> BatchPolicy:
        from metasym_control.exploration import quadrotor_exploration

        return quadrotor_exploration()(chunk, seed, dt)

    def analytic(params: SystemParams, dt: float) -> DynamicsModel:
        from metasym_control.models.quadrotor_analytic import QuadrotorModel

        return QuadrotorModel(params, dt=dt)  # type: ignore[arg-type]

    def state_range(params: SystemParams) -> tuple[np.ndarray, np.ndarray]:
        assert isinstance(params, QuadrotorParams)
        nx = 17 if params.motor_tau > 0 else 13
        hi = np.empty(nx)
        # a margin beyond the flight box: what a real log of this vehicle can hold
        hi[0:3] = 2.0 * np.maximum(np.abs(FLIGHT_LOWER), np.abs(FLIGHT_UPPER))
        hi[3:7] = 1.0
        hi[7:10] = 20.0  # m/s
        hi[10:13] = 40.0  # rad/s
        lo = -hi
        if nx == 17:
            lo[13:17], hi[13:17] = params.min_thrust, params.max_thrust
        return lo, hi

    def fallback(task: Any, dt: float) -> Controller:
        from metasym_control.controllers.cascaded_pd import CascadedPD

        # the nominal physics: the PD stabilises every held-out vehicle tried
        return CascadedPD(QuadrotorParams(), task, dt=dt)

    return SystemEntry(
        name="quadrotor",
        description="MuJoCo X-quadrotor (mass, inertia, drag, wind vary)",
        env_id=QUADROTOR_ENV_ID,
        env_kwargs={"task": "hover"},
        sample_params=lambda rng, split: sample_quadrotor_params(rng, split),
        nominal_params=QuadrotorParams,
        exploration=explore,
        analytic_model=analytic,
        coordinates=quadrotor_coordinates,
        attitude_coordinates=lambda n: quadrotor_coordinates(n, attitude=True),
        state_range=state_range,
        tasks=("hover", "figure8", "waypoints"),
        mpc=MPCDefaults(horizon=20, samples=256, noise_sigma=0.15, temperature=0.1),
        episode_steps=150,
        state_dims=(13, 17),
        fallback=fallback,
    )


def _spring_mesh_entry() -> SystemEntry:
    from metasym_control.envs.spring_mesh.params import (
        SpringMeshParams,
        sample_spring_mesh_params,
    )
    from metasym_control.envs.spring_mesh.physics import DEFAULT_SUBSTEPS

    def explore(chunk: Sequence[SystemParams], seed: int, dt: float) -> BatchPolicy:
        from metasym_control.envs.spring_mesh.physics import action_dim
        from metasym_control.exploration import SmoothForcingPolicy

        return SmoothForcingPolicy(len(chunk), action_dim(chunk[0]), dt, seed=seed)  # type: ignore[arg-type]

    def analytic(params: SystemParams, dt: float) -> DynamicsModel:
        from metasym_control.models.spring_mesh_analytic import SpringMeshModel

        return SpringMeshModel(params, dt=dt)  # type: ignore[arg-type]

    def state_range(params: SystemParams) -> tuple[np.ndarray, np.ndarray]:
        assert isinstance(params, SpringMeshParams)
        lay = params.layout
        n2 = 2 * lay.n_free
        rest = lay.rest[lay.free].reshape(-1)
        reach = 5.0 * params.spacing  # the env terminates beyond 5 spacings from rest
        m = params.mass * (max(params.mass_scales) if params.mass_scales else 1.0)
        # momentum bound: all of a generous energy budget in one particle
        p_max = m * 10.0 * params.spacing * math.sqrt(params.stiffness / m)
        lo = np.concatenate([rest - reach, np.full(n2, -p_max)])
        hi = np.concatenate([rest + reach, np.full(n2, p_max)])
        return lo, hi

    nominal = SpringMeshParams()
    return SystemEntry(
        name="spring_mesh",
        description="MuJoCo 5x5 spring mesh, top row pinned, bottom row actuated",
        env_id=SPRING_MESH_ENV_ID,
        # one control period for every system (the env would derive it from each one's modes)
        env_kwargs={"task": "settle", "n_substeps": DEFAULT_SUBSTEPS},
        sample_params=lambda rng, split: sample_spring_mesh_params(rng, split),
        nominal_params=lambda: nominal,
        exploration=explore,
        analytic_model=analytic,
        coordinates=spring_mesh_coordinates,
        state_range=state_range,
        tasks=("settle", "hold_edge"),
        mpc=MPCDefaults(horizon=20, samples=256, noise_sigma=0.3, temperature=0.1),
        episode_steps=100,
        trial_steps=60,  # 24 s: several periods of the slowest mode
    )


def _quantum_entry(system: str) -> SystemEntry:
    from metasym_control.envs.open_quantum.params import (
        DEFAULT_OSCILLATOR_LEVELS,
        OpenQuantumParams,
        sample_open_quantum_params,
    )

    def explore(chunk: Sequence[SystemParams], seed: int, dt: float) -> BatchPolicy:
        from metasym_control.exploration import PiecewiseDrivePolicy

        return PiecewiseDrivePolicy(len(chunk), 2, seed=seed)

    def analytic(params: SystemParams, dt: float) -> DynamicsModel:
        from metasym_control.models.open_quantum_analytic import OpenQuantumModel

        return OpenQuantumModel(params, dt=dt)  # type: ignore[arg-type]

    def state_range(params: SystemParams) -> tuple[np.ndarray, np.ndarray]:
        assert isinstance(params, OpenQuantumParams)
        nx = 2 * params.dim * params.dim
        return -np.ones(nx), np.ones(nx)  # entries of a density matrix have modulus <= 1

    def metrics(result: ClosedLoopResult, env: Any) -> dict[str, float]:
        fid = result.states @ env.task.target_state  # F = x · x* for a pure target
        return {"fidelity_2nd_half": float(np.mean(fid[len(fid) // 2 :]))}

    n = 2 if system == "qubit" else DEFAULT_OSCILLATOR_LEVELS
    kwargs: dict[str, Any] = {"system": system, "init_state": "random"}
    return SystemEntry(
        name="quantum" if system == "qubit" else "quantum_oscillator",
        description=f"monitored open quantum system ({system}, SME under homodyne readout)",
        env_id=QUANTUM_ENV_ID,
        env_kwargs=kwargs,
        sample_params=lambda rng, split: sample_open_quantum_params(rng, split, system),
        nominal_params=lambda: OpenQuantumParams.for_system(system),
        exploration=explore,
        analytic_model=analytic,
        coordinates=quantum_coordinates,
        state_range=state_range,
        tasks=("default", "plus_x", "coherent", "fock"),
        task_kwarg="target",
        mpc=MPCDefaults(horizon=15, samples=256, noise_sigma=0.5, temperature=0.1),
        episode_steps=100,
        state_dims=(2 * n * n,),
        trial_steps=200,
        metrics=metrics,
    )


def _toy_coordinates(state_dim: int) -> CoordinateMap:
    half = state_dim // 2
    return generic_coordinates(state_dim, range(half), range(half, state_dim))


def _toy_entry() -> SystemEntry:
    from metasym_control.envs.toy_oscillator import oscillator_family
    from metasym_control.envs.toy_oscillator.params import (
        OscillatorParams,
        sample_oscillator_params,
    )

    def explore(chunk: Sequence[SystemParams], seed: int, dt: float) -> BatchPolicy:
        from metasym_control.exploration import SmoothForcingPolicy

        return SmoothForcingPolicy(len(chunk), 1, dt, seed=seed)

    def generate(n_tasks: int, episodes: int, steps: int, split: Split, seed: int) -> Trajectory:
        return Trajectory.concatenate(
            oscillator_family(n_tasks, episodes, steps, split, seed, TOY_DT)
        )

    return SystemEntry(
        name="toy",
        description="1-D damped, forced linear oscillators (exact solution; for quick trials)",
        env_id=TOY_ENV_ID,
        sample_params=sample_oscillator_params,
        nominal_params=OscillatorParams,
        exploration=explore,
        coordinates=_toy_coordinates,
        state_range=lambda params: (np.full(2, -100.0), np.full(2, 100.0)),
        tasks=("settle",),
        episode_steps=100,
        state_dims=(2,),
        generate=generate,
    )


SYSTEMS: dict[str, SystemEntry] = {}
"""Every registered system by name (the project's, then users' via `register_system`)."""


def register_system(entry: SystemEntry, replace: bool = False) -> None:
    """Add a system to `SYSTEMS` (its `--env` name becomes valid everywhere).

    Raises:
        ValueError: the name is taken (unless `replace`) or not a plain identifier.
    """
    if not entry.name.replace("_", "").isalnum():
        raise ValueError(f"register_system: name {entry.name!r} must be letters, digits and _")
    if entry.name in SYSTEMS and not replace:
        raise ValueError(f"register_system: a system named {entry.name!r} is registered")
    SYSTEMS[entry.name] = entry


for _entry in (
    _quadrotor_entry(),
    _spring_mesh_entry(),
    _quantum_entry("qubit"),
    _quantum_entry("oscillator"),
    _toy_entry(),
):
    register_system(_entry)


_plugins_loaded = False


def load_plugins() -> None:
    """Register the systems of installed packages' `metasym_control.systems` entry points
    (once; a plugin that fails to load is logged and skipped)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()()
        except Exception as exc:  # a broken plugin must not break the project's own systems
            logger.warning("system plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)


def known_systems() -> list[str]:
    """Every system name, plugins included, sorted."""
    load_plugins()
    return sorted(SYSTEMS)


def get_system(name: str) -> SystemEntry:
    """The entry called `name` (plugins loaded on a miss); `ValueError` listing the known
    names otherwise."""
    if name not in SYSTEMS:
        load_plugins()
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; known: {', '.join(sorted(SYSTEMS))}")
    return SYSTEMS[name]


def system_of(env_id: str, state_dim: int) -> SystemEntry | None:
    """The registered entry for data of `env_id` with `state_dim` states (None if none)."""
    base = env_id.split("-v")[0]
    for attempt in range(2):
        for entry in SYSTEMS.values():
            if entry.env_id.split("-v")[0] != base:
                continue
            if entry.state_dims is None or state_dim in entry.state_dims:
                return entry
        if attempt == 0:
            load_plugins()
    return None


def coordinates_for_env(env_id: str, state_dim: int) -> CoordinateMap:
    """The documented canonical coordinates of a registered environment.

    Args:
        env_id: Gymnasium id with version, e.g. "MetaSymQuadrotor-v0".
        state_dim: nx of the data.

    Raises:
        ValueError: an environment without an entry (register one, or use
            `generic_coordinates`).
    """
    entry = system_of(env_id, state_dim)
    if entry is None:
        raise ValueError(
            f"no system registered for {env_id!r} with {state_dim} states (known: "
            f"{sorted(SYSTEMS)}); register one (docs/systems.md) or use "
            "metasym_control.models.coordinates.generic_coordinates"
        )
    return entry.coordinates(state_dim)


def model_for_data(
    kind: ModelKind,
    data: Trajectory,
    metasym: MetaSymConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LearnedModel:
    """A fresh model of `kind` shaped for `data` (its env id, nx, nu, dt and coordinates).

    Args:
        kind: a model kind of `metasym_control.models.registry.make_model`.
        data: a trajectory set of a registered system.
        metasym: MetaSym's config (MetaSym kinds only; default if None); its
            `canonical_attitude` picks the system's attitude map.
        device, dtype: of the parameters.

    Raises:
        ValueError: `canonical_attitude` for a system without a rotation.
    """
    coords = coordinates_for_env(data.env_id, data.state_dim)
    if metasym is not None and metasym.canonical_attitude:
        entry = system_of(data.env_id, data.state_dim)
        if entry is None or entry.attitude_coordinates is None:
            raise ValueError(
                f"MetaSymConfig.canonical_attitude: {data.env_id!r} has no attitude "
                "coordinates (only systems with a rotation, the quadrotor, do)"
            )
        coords = entry.attitude_coordinates(data.state_dim)
    return make_model(
        kind, data.env_id, data.state_dim, data.action_dim, data.dt, coords, metasym, device, dtype
    )
