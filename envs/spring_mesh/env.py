"""The MuJoCo spring-mesh environment `MetaSymSpringMesh-v1`: a controllable Otness et al. mesh."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, cast

import gymnasium as gym
import mujoco
import numpy as np

from metasym_control.envs.rendering import OffscreenRenderer
from metasym_control.envs.spring_mesh.mjcf import Integrator, build_mjcf, strain_rgba
from metasym_control.envs.spring_mesh.params import (
    ENV_ID,
    ENV_ID_V0,
    TEST_INIT_RADIUS,
    TRAIN_INIT_RADIUS,
    SpringMeshParams,
    sample_spring_mesh_params,
)
from metasym_control.envs.spring_mesh.physics import (
    BENCHMARK_TIMESTEP,
    action_dim,
    default_substeps,
    particle_masses,
    spring_stiffnesses,
    total_energy,
)
from metasym_control.envs.spring_mesh.tasks import SpringMeshTask, make_task
from metasym_control.params import Split
from metasym_control.system_env import SystemEnv


class SpringMeshEnv(SystemEnv):
    """A controllable 2-D spring mesh in MuJoCo (Otness et al., 2021), `MetaSymSpringMesh-v1`.

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

    Out-of-range actions are clipped to [-1, 1] and `info["action_clipped"]` is True; a non-finite
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

    **Start**: every free particle displaced from rest by a random vector drawn uniformly over
    the area of the disc or ring `init_radius` · spacing (radius `√(U·(r₁² − r₀²) + r₀²)`, as
    Otness et al.; default: [0, 0.35] for split "train", [0.35, 0.45] out of distribution for
    "test"; the benchmark's rings), uniform angle, at rest (p = 0). `radius_draw="radius"`
    (what `-v0` registers) draws the radius itself uniformly instead: smaller starts.
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
    | `radius_draw` | "area" | "area": uniform over the ring's area; "radius": v0's draw |
    | `max_displacement` | 5.0 | termination distance from rest, in spacings |
    | `render_mode` | None | "rgb_array": springs and particles coloured by strain |
    | `width`, `height` | 480, 480 | rendered image size, pixels |

    Rendering: blue compressed, grey at rest length, red stretched (saturating at ±15%
    strain); pinned particles are dark boxes; the top camera frames the whole mesh.

    **info**: the shared keys (`SystemEnv.common_info`: "action_clipped", "t" in s,
    "params"; "clipped" and "time" are their old names, kept for one version),
    "tracking_error" (RMS position error to the target, m), "energy" (Hamiltonian, J).

    **Version history**: v1 — start displacements uniform over the ring's area, as the
    benchmark (`radius_draw="area"`); v0 — first version, radius uniform (`radius_draw="radius"`).
    """

    env_id = ENV_ID
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
        radius_draw: Literal["area", "radius"] = "area",
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
        if radius_draw not in ("area", "radius"):
            raise ValueError(f"SpringMeshEnv: radius_draw is 'area' or 'radius': {radius_draw!r}")
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
        self.radius_draw = radius_draw
        self.env_id = ENV_ID if radius_draw == "area" else ENV_ID_V0
        self.max_displacement = float(max_displacement)
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        self.metadata = {**type(self).metadata, "render_fps": max(1, round(1.0 / self.dt))}
        self._renderer = OffscreenRenderer(self.env_id, self.width, self.height)
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
            self._renderer.close()  # drawn for the old model
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
        options, params = self.reset_options(
            options, ("params", "state", "init_radius"), SpringMeshParams, self._draw_params
        )
        p = cast(SpringMeshParams, params)
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
            u = self.np_random.uniform(0.0, 1.0, nf)
            # area-uniform: the radius's CDF on [r0, r1] is (r² − r0²) / (r1² − r0²)
            if self.radius_draw == "area":
                r = np.sqrt(u * (hi**2 - lo**2) + lo**2) * p.spacing
            else:
                r = (lo + u * (hi - lo)) * p.spacing
            th = self.np_random.uniform(0.0, 2.0 * math.pi, nf)
            disp = np.stack([r * np.cos(th), r * np.sin(th)], axis=-1).reshape(-1)
            self.set_state(np.concatenate([self._rest_q + disp, np.zeros(2 * nf)]))
        x = self.get_state()
        return self._obs(x), self._info(x, False)

    def _info(self, x: np.ndarray, clipped: bool) -> dict[str, Any]:
        err = self.task.tracking_error(x[None], self.task.x_target[None])[0]
        return {
            **self.common_info(float(self.data.time), clipped),
            "tracking_error": float(err),
            "energy": float(total_energy(self.params, x)),
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
        lay = self.params.layout
        strain = (self.data.ten_length - lay.rest_length) / lay.rest_length  # (S,)
        self.model.tendon_rgba[:] = strain_rgba(strain)
        inc = np.abs(lay.incidence)  # (S, n_free)
        per = (inc.T @ strain) / np.maximum(inc.sum(0), 1.0)  # (n_free,) mean strain of springs
        self.model.geom_rgba[self._geom_ids] = strain_rgba(per)
        return self._renderer.frame(self.model, self.data, "top")

    def close(self) -> None:
        """Release the renderer."""
        self._renderer.close()
        super().close()
