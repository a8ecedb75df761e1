"""The MuJoCo quadrotor environment `MetaSymQuadrotor-v0`."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from metasym_control.envs.quadrotor.mjcf import import_mujoco, quadrotor_mjcf
from metasym_control.envs.quadrotor.params import (
    ENV_ID,
    QuadrotorParams,
    sample_quadrotor_params,
)
from metasym_control.envs.quadrotor.physics import ROTOR_YAW_SIGNS, quat_mul
from metasym_control.envs.quadrotor.tasks import (
    FLIGHT_LOWER,
    FLIGHT_UPPER,
    TASKS,
    Figure8Task,
    HoverTask,
    QuadrotorTask,
    WaypointTask,
)
from metasym_control.envs.rendering import OffscreenRenderer
from metasym_control.params import Split
from metasym_control.system_env import SystemEnv

STATE_NAMES = ["px", "py", "pz", "qw", "qx", "qy", "qz", "vx", "vy", "vz", "wx", "wy", "wz"]
STATE_UNITS = ["m", "m", "m", "1", "1", "1", "1", "m/s", "m/s", "m/s", "rad/s", "rad/s", "rad/s"]
THRUST_NAMES = ["T1", "T2", "T3", "T4"]
ACTION_NAMES = ["a1", "a2", "a3", "a4"]
_Z_CRASH, _XY_MAX, _Z_MAX = float(FLIGHT_LOWER[2]), float(FLIGHT_UPPER[0]), float(FLIGHT_UPPER[2])


class QuadrotorEnv(SystemEnv):
    """MuJoCo quadrotor (`MetaSymQuadrotor-v0`): fly a reference with four rotor commands.

    One free-floating rigid body with four rotors on sites at (±arm_x, ±arm_y, 0) in the body
    frame; each gives a thrust along the body z axis and a yaw moment. Physical parameters
    come from `QuadrotorParams` (default: Skydio X2; `QuadrotorParams.crazyflie()` preset).
    World frame: z up, gravity -9.81 m/s². Body frame: x forward (rotors 3, 4), y left
    (rotors 2, 3), z up through the rotor discs. See `docs/quadrotor.md`.

    ## State (`get_state` / `set_state`, float64)

    | idx   | name       | unit  | frame | meaning                                          |
    |-------|------------|-------|-------|--------------------------------------------------|
    | 0-2   | px, py, pz | m     | world | position of the centre of mass                   |
    | 3-6   | qw..qz     | 1     | b→w   | unit quaternion (w, x, y, z), sign so that w ≥ 0 |
    | 7-9   | vx, vy, vz | m/s   | world | linear velocity                                  |
    | 10-12 | wx, wy, wz | rad/s | body  | angular velocity                                 |
    | 13-16 | T1..T4     | N     | —     | rotor thrusts (only with the motor lag on)       |

    ## Observation (float64; 24 entries, 28 with the lag)

    | idx   | content                                   | bounds          |
    |-------|-------------------------------------------|-----------------|
    | 0-2   | position, m (world)                       | unbounded       |
    | 3-11  | rotation matrix body→world, row-major     | [-1, 1]         |
    | 12-14 | linear velocity, m/s (world)              | unbounded       |
    | 15-17 | angular velocity, rad/s (body)            | unbounded       |
    | (18-21) | rotor thrusts, N (lag only)             | [min, max] thrust |
    | next 3 | position error p - p_ref, m              | unbounded       |
    | last 3 | velocity error v - v_ref, m/s            | unbounded       |

    The rotation matrix has no Euler-angle discontinuity. Gaussian sensor noise
    (`params.sensor_noise`) is added to the observation only: to p, v, ω, T additively, to the
    attitude as a small random rotation.

    ## Action (float32, shape (4,), in [-1, 1])

    Rotor i's commanded thrust is `T_i = min_thrust + (a_i + 1)/2 · (max_thrust - min_thrust)`
    (X2: 0-13 N). Rotors: 1 (-x, -y), 2 (-x, +y), 3 (+x, +y), 4 (+x, -y); yaw moment signs
    (-, +, -, +) · yaw_coeff · T_i. More thrust on rotors 2, 3 (+y side) than on 1, 4 gives a
    positive roll moment τx = arm_y (T2 + T3 - T1 - T4): the +y side rises and the body
    rotates positively about its x axis. The documented hover command is
    `params.hover_action()` on every rotor (X2: ≈ -0.50007). Out-of-range actions are clipped
    to [-1, 1] and `info["action_clipped"]` is True; non-finite or wrongly shaped actions raise
    `ValueError`.

    ## Dynamics

    MuJoCo RK4 at `physics_dt` (default 5 ms, 4 substeps per 20 ms control step), contacts off.
    Action, drag and wind forces are held over a control step (zero-order hold): the drag
    `-R diag(drag) Rᵀ v` is evaluated at the start of the step; the wind is the constant
    `params.wind` plus an Ornstein–Uhlenbeck gust (std `gust_std`, correlation `gust_tau`)
    advanced once per control step; both enter as `xfrc_applied` on the body. With
    `motor_tau > 0` the rotors follow a first-order lag (MuJoCo filter actuator dynamics).

    ## Reward

    `-task.running_cost(x_{k+1}, a_k, x_ref(t_{k+1}), u_ref)`: negative squared position and
    velocity tracking error, rotation error 1 - (q·q_ref)² (invariant to q ↔ -q), angular
    rate and control effort (deviation from the hover command), weights in
    `QuadrotorCostWeights`.

    ## Start

    At the task reference point at t = 0 (level, at rest) plus uniform noise scaled by
    `init_noise`: ±0.1 m position, ±0.1 rad tilt (roll/pitch/yaw), ±0.1 m/s, ±0.1 rad/s.
    With the lag, the rotor thrusts start at the hover thrust. `reset(options={"state": x})`
    starts at `x` instead. Parameters: `options["params"]`, else
    the constructor's `params`, else a draw from `split` by `sample_quadrotor_params`.

    ## Episode end

    Terminated on a crash (z < 0.05 m), a flip (body z axis pointing below the horizon),
    leaving the flight volume (|x|, |y| > 4 m, z > 5 m) or a non-finite state; truncated by
    `TimeLimit` (500 steps = 10 s when made through Gymnasium).

    ## Arguments

    | argument     | default    | meaning                                                 |
    |--------------|------------|---------------------------------------------------------|
    | task         | "figure8"  | "hover", "waypoints", "figure8" or a `QuadrotorTask`    |
    | split        | "train"    | parameter range drawn from when `params` is None        |
    | params       | None       | fixed parameters for every reset                        |
    | motor_lag    | False      | sampled parameters carry a motor lag (17 states)        |
    | omega        | 1.0        | figure-8 rate, rad/s                                    |
    | center       | (0,0,1.5)  | hover point / figure centre, m                          |
    | physics_dt   | 0.005      | MuJoCo timestep, s (divides 0.02)                       |
    | init_noise   | 1.0        | scale of the start perturbation (0: exactly on the reference) |
    | render_mode  | None       | "rgb_array" (tracking camera, headless with EGL)        |
    | width/height | 320 / 240  | rendered image size, pixels                             |

    Attribute `fixed_params` holds the constructor's `params` (None: draw per reset); assigning
    it changes the parameters of later resets (the data generator reuses environments so).

    `info`: `params` (the frozen `QuadrotorParams` in force), `t` (s), `action_clipped`,
    `position_error` (m), and on termination `termination` ("crash", "flip",
    "out_of_bounds", "non_finite").

    ## Version history

    - v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}  # noqa: RUF012
    env_id = ENV_ID
    task: QuadrotorTask
    params: QuadrotorParams

    def __init__(
        self,
        task: str | QuadrotorTask = "figure8",
        split: Split = "train",
        params: QuadrotorParams | None = None,
        motor_lag: bool = False,
        omega: float = 1.0,
        center: tuple[float, float, float] = (0.0, 0.0, 1.5),
        physics_dt: float = 0.005,
        init_noise: float = 1.0,
        render_mode: str | None = None,
        width: int = 320,
        height: int = 240,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"{ENV_ID}: split must be 'train' or 'test', got {split!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"{ENV_ID}: render_mode must be None or 'rgb_array'")
        if params is not None:
            if not isinstance(params, QuadrotorParams):
                raise ValueError(f"{ENV_ID}: params must be QuadrotorParams, got {type(params)}")
            motor_lag = params.has_lag
        self.dt = 0.02
        substeps = self.dt / physics_dt
        if not (physics_dt > 0 and abs(substeps - round(substeps)) < 1e-9 and physics_dt <= 0.005):
            raise ValueError(f"{ENV_ID}: physics_dt must divide 0.02 and be <= 0.005 s")
        self.physics_dt = float(physics_dt)
        self.substeps = round(substeps)
        self.split = split
        self.motor_lag = bool(motor_lag)
        self.init_noise = float(init_noise)
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        # parameters of every reset without options; assignable (data generators reuse envs)
        self.fixed_params: QuadrotorParams | None = params
        nominal = params or QuadrotorParams(motor_tau=0.03 if motor_lag else 0.0)
        self.params = nominal
        nx = nominal.state_dim
        self.state_names = STATE_NAMES + (THRUST_NAMES if motor_lag else [])
        self.state_units = STATE_UNITS + (["N"] * 4 if motor_lag else [])
        self.action_names = list(ACTION_NAMES)
        if isinstance(task, QuadrotorTask):
            if task.state_dim != nx:
                raise ValueError(f"{ENV_ID}: task.state_dim {task.state_dim} != state {nx}")
            self.task = task
        elif task in TASKS:
            common: dict[str, Any] = {
                "state_dim": nx,
                "hover_action": nominal.hover_action(),
                "hover_thrust": nominal.hover_thrust(),
                "thrust_bounds": (nominal.min_thrust, nominal.max_thrust),
            }
            if task == "figure8":
                self.task = Figure8Task(center=center, omega=omega, **common)
            elif task == "hover":
                self.task = HoverTask(target=center, **common)
            else:
                self.task = WaypointTask(**common)
        else:
            raise ValueError(f"{ENV_ID}: unknown task {task!r}; choose from {sorted(TASKS)}")

        self._mj = mujoco = import_mujoco()
        self.model = mujoco.MjModel.from_xml_string(quadrotor_mjcf(nominal, physics_dt))
        self.data = mujoco.MjData(self.model)
        self._body = self.model.body("quad").id
        self._target_mocap = int(self.model.body("target").mocapid[0])
        self._xfrc = self.data.xfrc_applied[self._body]
        self._mat = np.zeros(9)
        self._gust = np.zeros(3)
        self._k = 0
        self._renderer = OffscreenRenderer(ENV_ID, self.width, self.height)
        self._apply_params(nominal)

        # spaces: the rotation matrix and thrusts are bounded; the rest is not
        n_obs = 18 + (4 if motor_lag else 0) + 6  # p3 R9 v3 w3 (T4) e_p3 e_v3
        lo = np.full(n_obs, -np.inf)
        hi = np.full(n_obs, np.inf)
        lo[3:12], hi[3:12] = -1.0, 1.0
        if motor_lag:
            lo[18:22], hi[18:22] = nominal.min_thrust, nominal.max_thrust
        self.observation_space = gym.spaces.Box(lo, hi, dtype=np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self._obs_lo, self._obs_hi = lo, hi
        # reference buffers of the reward: the task's fixed parts, p and v filled per step
        x_ref0, u_ref0 = self.task.reference(np.zeros(1))
        self._x_ref, self._u_ref = x_ref0[0].copy(), u_ref0[0].copy()

    # -- parameters ----------------------------------------------------------------------
    def _apply_params(self, p: QuadrotorParams) -> None:
        """Write `p` into the compiled model in place (no recompilation)."""
        if p.has_lag != self.motor_lag:
            raise ValueError(
                f"{ENV_ID}: params with motor_tau={p.motor_tau} on an environment built with "
                f"motor_lag={self.motor_lag} (the state size would change); make a new env"
            )
        obs_lo = getattr(self, "_obs_lo", None)
        if (
            p.has_lag
            and obs_lo is not None
            and (p.min_thrust < obs_lo[18] or p.max_thrust > self._obs_hi[18])
        ):
            raise ValueError(
                f"{ENV_ID}: thrust range [{p.min_thrust}, {p.max_thrust}] N outside the "
                f"observation bounds [{obs_lo[18]}, {self._obs_hi[18]}] N of this env"
            )
        m = self.model
        m.body_mass[self._body] = p.mass
        m.body_inertia[self._body] = p.inertia
        m.opt.gravity[:] = (0.0, 0.0, -p.gravity)
        half = 0.5 * (p.max_thrust - p.min_thrust)
        m.actuator_gainprm[:, 0] = half
        m.actuator_biasprm[:, 0] = p.min_thrust + half
        m.actuator_gear[:, 5] = np.asarray(ROTOR_YAW_SIGNS) * p.yaw_coeff
        m.site_pos[:, :] = p.rotor_positions()
        if p.has_lag:
            m.actuator_dynprm[:, 0] = p.motor_tau
        self._mj.mj_setConst(m, self.data)  # derived constants (subtree mass, dof_M0, ...)
        self.params = p
        self._half, self._bias = half, p.min_thrust + half
        self._drag = np.asarray(p.drag, dtype=np.float64)
        self._wind = np.asarray(p.wind, dtype=np.float64)
        self._ext_force = bool(np.any(self._drag) or np.any(self._wind) or p.gust_std > 0)
        self._gust_decay = math.exp(-self.dt / p.gust_tau)
        self._gust_kick = p.gust_std * math.sqrt(1.0 - self._gust_decay**2)

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        """(nx,) float64 state [p, q (w ≥ 0), v, ω, (T)], see the class docstring."""
        d = self.data
        x = np.empty(17 if self.motor_lag else 13)
        x[0:7] = d.qpos
        if x[3] < 0.0:
            x[3:7] *= -1.0
        x[7:13] = d.qvel
        if self.motor_lag:
            x[13:17] = d.act * self._half + self._bias
        return x

    def set_state(self, state: np.ndarray) -> None:
        """Set [p, q, v, ω, (T)] (the quaternion is normalised; thrusts in N)."""
        x = np.asarray(state, dtype=np.float64)
        nx = 17 if self.motor_lag else 13
        if x.shape != (nx,) or not np.all(np.isfinite(x)):
            raise ValueError(f"{ENV_ID}: state must be finite of shape ({nx},), got {x.shape}")
        q = x[3:7]
        nq = float(np.linalg.norm(q))
        if nq < 1e-9:
            raise ValueError(f"{ENV_ID}: state quaternion has zero norm")
        d = self.data
        d.qpos[0:3] = x[0:3]
        d.qpos[3:7] = q / nq
        d.qvel[:] = x[7:13]
        if self.motor_lag:
            d.act[:] = (x[13:17] - self._bias) / self._half
        self._mj.mj_forward(self.model, d)

    def check_action(self, action: Any) -> tuple[np.ndarray, bool]:
        """Validate and clip an action (same contract as `SystemEnv.check_action`, faster).

        Returns:
            The float64 action clipped to [-1, 1] and whether clipping changed it.

        Raises:
            ValueError: wrong shape or a non-finite entry, naming the environment.
        """
        try:
            a = np.array(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{ENV_ID}: action {action!r} is not numeric") from e
        if a.shape != (4,):
            raise ValueError(f"{ENV_ID}: action of shape {a.shape}, expected (4,)")
        lo, hi = a.min(), a.max()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{ENV_ID}: non-finite action {a.tolist()}")
        if lo < -1.0 or hi > 1.0:
            return np.clip(a, -1.0, 1.0), True
        return a, False

    # -- gym API -------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; `options` may hold `params` (QuadrotorParams) and `state` (nx,)."""
        super().reset(seed=seed)
        options = options or {}
        p = options.get("params")
        if p is None:
            p = self.fixed_params
        if p is None:
            p = sample_quadrotor_params(self.np_random, self.split, motor_lag=self.motor_lag)
        if not isinstance(p, QuadrotorParams):
            raise ValueError(f"{ENV_ID}: options['params'] must be QuadrotorParams, got {type(p)}")
        if p is not self.params:
            self._apply_params(p)
        self._mj.mj_resetData(self.model, self.data)
        self._k = 0
        self._gust[:] = 0.0
        if p.gust_std > 0:
            self._gust[:] = self.np_random.normal(0.0, p.gust_std, 3)
        if options.get("state") is not None:
            self.set_state(np.asarray(options["state"], dtype=np.float64))
        else:
            self.set_state(self._initial_state())
        x = self.get_state()
        ref = self._reference_pv(0.0)
        return self._observe(x, ref), self._info(x, ref[0], False)

    def _initial_state(self) -> np.ndarray:
        rng, s = self.np_random, self.init_noise
        x_ref, _ = self.task.reference(np.zeros(1))
        x = x_ref[0].copy()
        x[7:10] = 0.0  # start at rest even where the reference moves
        x[0:3] += s * rng.uniform(-0.1, 0.1, 3)
        half = 0.5 * s * rng.uniform(-0.1, 0.1, 3)  # half-angles of a small rotation
        x[3:7] = quat_mul(x[3:7], np.array([1.0, *half]))
        x[3:7] /= np.linalg.norm(x[3:7])
        x[7:10] += s * rng.uniform(-0.1, 0.1, 3)
        x[10:13] += s * rng.uniform(-0.1, 0.1, 3)
        if self.motor_lag:
            x[13:17] = self.params.hover_thrust()
        return x

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply normalised rotor commands for one 20 ms control step."""
        a, clipped = self.check_action(action)
        d = self.data
        d.ctrl[:] = a
        if self._ext_force:
            self._external_force()
        self._mj.mj_step(self.model, d, self.substeps)
        self._k += 1
        x = self.get_state()
        t = self._k * self.dt
        p_ref, v_ref = self._reference_pv(t)
        obs = self._observe(x, (p_ref, v_ref))
        # the task's cost with the reference state built in place
        x_ref = self._x_ref
        x_ref[0:3] = p_ref
        x_ref[7:10] = v_ref
        reward = -self.task.running_cost_numpy(x, a, x_ref, self._u_ref)
        term = self._termination(x)
        info = self._info(x, p_ref, clipped)
        if term:
            info["termination"] = term
        if self.render_mode == "rgb_array":
            self.data.mocap_pos[self._target_mocap] = p_ref
        return obs, reward, bool(term), False, info

    def _reference_pv(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        return self.task.position_velocity_at(t)

    def _external_force(self) -> None:
        """Drag at the step's start, constant wind and the OU gust, held over the step."""
        d = self.data
        q = d.qpos[3:7]
        self._mj.mju_quat2Mat(self._mat, q)
        r = self._mat.reshape(3, 3)
        v = d.qvel[0:3]
        f = self._wind - r @ (self._drag * (r.T @ v))
        p = self.params
        if p.gust_std > 0:
            self._gust *= self._gust_decay
            self._gust += self._gust_kick * self.np_random.standard_normal(3)
            f = f + self._gust
        self._xfrc[0:3] = f

    def _observe(self, x: np.ndarray, ref: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        lag = self.motor_lag
        obs = np.empty(self._obs_lo.shape[0])
        noise = self.params.sensor_noise
        q = x[3:7]
        if noise > 0:
            rng = self.np_random
            x = x.copy()
            x[0:3] += noise * rng.standard_normal(3)
            x[7:13] += noise * rng.standard_normal(6)
            q = quat_mul(q, np.array([1.0, *(0.5 * noise * rng.standard_normal(3))]))
            q /= np.linalg.norm(q)
            if lag:
                x[13:17] = np.clip(
                    x[13:17] + noise * rng.standard_normal(4),
                    self.params.min_thrust,
                    self.params.max_thrust,
                )
        self._mj.mju_quat2Mat(self._mat, q)
        obs[0:3] = x[0:3]
        # round-off can put an entry of a unit quaternion's matrix a few ulp past ±1
        obs[3:12] = np.clip(self._mat, -1.0, 1.0)
        obs[12:18] = x[7:13]
        i = 18
        if lag:
            obs[18:22] = x[13:17]
            i = 22
        obs[i : i + 3] = x[0:3] - ref[0]
        obs[i + 3 : i + 6] = x[7:10] - ref[1]
        return obs

    def _termination(self, x: np.ndarray) -> str:
        """Why the episode ends ("" if it goes on); the sum is NaN/inf iff an entry is."""
        if not math.isfinite(float(x.sum())):
            return "non_finite"
        px, py, pz, _, qx, qy = x[0:6].tolist()
        if pz < _Z_CRASH:
            return "crash"
        if abs(px) > _XY_MAX or abs(py) > _XY_MAX or pz > _Z_MAX:
            return "out_of_bounds"
        # body z axis in world z: R[2, 2] = 1 - 2 (qx² + qy²)
        if 1.0 - 2.0 * (qx * qx + qy * qy) < 0.0:
            return "flip"
        return ""

    def _info(self, x: np.ndarray, p_ref: np.ndarray, clipped: bool) -> dict[str, Any]:
        e = x[0:3] - p_ref
        return {
            **self.common_info(self._k * self.dt, clipped),
            "position_error": math.sqrt(float(e @ e)),
        }

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """RGB image (height, width, 3) uint8 from the tracking camera, or None."""
        if self.render_mode != "rgb_array":
            return None
        p_ref, _ = self._reference_pv(self._k * self.dt)
        self.data.mocap_pos[self._target_mocap] = p_ref
        self._mj.mj_forward(self.model, self.data)
        return self._renderer.frame(self.model, self.data, "track")

    def close(self) -> None:
        """Release the renderer."""
        self._renderer.close()
