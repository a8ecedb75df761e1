"""MuJoCo quadrotor environment `MetaSymQuadrotor-v0`: parameters, sampler, tasks, the env."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np
import torch

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

ENV_ID = "MetaSymQuadrotor-v0"
GRAVITY = 9.81  # m/s², world z up

# Rotor layout shared by the env, the analytic model and the mixer (Skydio X2 order):
# rotor i sits at (sx_i * arm_x, sy_i * arm_y, 0) in the body frame and its drag moment about
# body z is yaw_sign_i * yaw_coeff * T_i.
ROTOR_SIGNS_X = (-1.0, -1.0, 1.0, 1.0)
ROTOR_SIGNS_Y = (-1.0, 1.0, 1.0, -1.0)
ROTOR_YAW_SIGNS = (-1.0, 1.0, -1.0, 1.0)

STATE_NAMES = ["px", "py", "pz", "qw", "qx", "qy", "qz", "vx", "vy", "vz", "wx", "wy", "wz"]
STATE_UNITS = ["m", "m", "m", "1", "1", "1", "1", "m/s", "m/s", "m/s", "rad/s", "rad/s", "rad/s"]
THRUST_NAMES = ["T1", "T2", "T3", "T4"]
ACTION_NAMES = ["a1", "a2", "a3", "a4"]


def _x2_inertia() -> tuple[float, float, float]:
    """Diagonal inertia of the X2 from its geometry (kg·m²).

    A 0.325 kg solid box body of 0.20 × 0.10 × 0.08 m plus four 0.25 kg rotors as point
    masses at (±0.14, ±0.18, 0) m.
    """
    mb, (a, b, c) = 0.325, (0.20, 0.10, 0.08)
    mr, x, y = 0.25, 0.14, 0.18
    ixx = mb / 12 * (b * b + c * c) + 4 * mr * y * y
    iyy = mb / 12 * (a * a + c * c) + 4 * mr * x * x
    izz = mb / 12 * (a * a + b * b) + 4 * mr * (x * x + y * y)
    return (ixx, iyy, izz)


@dataclass(frozen=True)
class QuadrotorParams(SystemParams):
    """Physical parameters of one quadrotor (one meta-learning task).

    Defaults are the Skydio X2 (public MuJoCo model facts) with wind, drag, motor lag and
    sensor noise off. Rotor i sits at `(sx_i·arm_x, sy_i·arm_y, 0)` in the body frame with
    `sx = (-1, -1, 1, 1)`, `sy = (-1, 1, 1, -1)` and yaw-moment signs `(-1, 1, -1, 1)`.

    Attributes:
        mass: total mass, kg (X2: 0.325 body + 4 × 0.25 rotors).
        inertia: diagonal inertia (Ixx, Iyy, Izz) about the centre of mass in the body
            frame, kg·m² (X2: computed from the geometry, see `_x2_inertia`).
        arm_x: rotor offset along body x, m.
        arm_y: rotor offset along body y, m.
        min_thrust: thrust of a rotor at action -1, N.
        max_thrust: thrust of a rotor at action +1, N.
        yaw_coeff: rotor drag moment per unit thrust, m (moment = yaw_coeff · T, N·m).
        motor_tau: first-order motor lag time constant, s; 0 = no lag (state has 13 entries,
            17 with lag).
        drag: linear drag coefficients along the body axes, N·s/m (force
            -R diag(drag) Rᵀ v).
        wind: constant wind force in the world frame, N.
        gust_std: stationary standard deviation of the gust force (per world axis), N.
        gust_tau: correlation time of the gust (Ornstein–Uhlenbeck) process, s.
        sensor_noise: standard deviation of the Gaussian noise added to the observation only
            (m, rad, m/s, rad/s, N per component; the state stays exact).
        gravity: gravitational acceleration, m/s² (acts along world -z).
    """

    mass: float = 1.325
    inertia: tuple[float, float, float] = field(default_factory=_x2_inertia)
    arm_x: float = 0.14
    arm_y: float = 0.18
    min_thrust: float = 0.0
    max_thrust: float = 13.0
    yaw_coeff: float = 0.0201
    motor_tau: float = 0.0
    drag: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wind: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gust_std: float = 0.0
    gust_tau: float = 1.0
    sensor_noise: float = 0.0
    gravity: float = GRAVITY

    def validate(self) -> None:
        """Raise `ValueError` naming the field if the parameters are not physical."""
        own = "QuadrotorParams"
        require_positive(own, "mass", self.mass)
        if len(self.inertia) != 3:
            raise ValueError(f"{own}.inertia must be (Ixx, Iyy, Izz), got {self.inertia!r}")
        ixx, iyy, izz = (float(v) for v in self.inertia)
        if not all(math.isfinite(v) and v > 0 for v in (ixx, iyy, izz)):
            raise ValueError(f"{own}.inertia must be positive-definite (all > 0): {self.inertia}")
        if ixx + iyy < izz or iyy + izz < ixx or izz + ixx < iyy:
            raise ValueError(
                f"{own}.inertia violates the triangle inequality of a rigid body: {self.inertia}"
            )
        require_positive(own, "arm_x", self.arm_x)
        require_positive(own, "arm_y", self.arm_y)
        require_nonnegative(own, "min_thrust", self.min_thrust)
        require_positive(own, "max_thrust", self.max_thrust)
        if not self.min_thrust < self.max_thrust:
            raise ValueError(
                f"{own}.max_thrust ({self.max_thrust}) must exceed min_thrust "
                f"({self.min_thrust}): rotor limits reversed"
            )
        require_nonnegative(own, "yaw_coeff", self.yaw_coeff)
        require_nonnegative(own, "motor_tau", self.motor_tau)
        if len(self.drag) != 3:
            raise ValueError(f"{own}.drag must have 3 entries, got {self.drag!r}")
        for i, c in enumerate(self.drag):
            require_nonnegative(own, f"drag[{i}]", float(c))
        if len(self.wind) != 3 or not all(math.isfinite(float(w)) for w in self.wind):
            raise ValueError(f"{own}.wind must be 3 finite forces (N), got {self.wind!r}")
        require_nonnegative(own, "gust_std", self.gust_std)
        require_positive(own, "gust_tau", self.gust_tau)
        require_nonnegative(own, "sensor_noise", self.sensor_noise)
        require_in_range(own, "gravity", self.gravity, 0.0, 100.0)

    @classmethod
    def crazyflie(cls, **changes: Any) -> QuadrotorParams:
        """Crazyflie 2 preset: 0.027 kg, inertia (2.3951e-5, 2.3951e-5, 3.2347e-5) kg·m².

        Rotors at (±0.0325, ±0.0325) m (0.046 m motor-to-centre), 0–0.16 N each (thrust to
        weight ≈ 2.4), yaw coefficient 0.006 m.
        """
        base = cls(
            mass=0.027,
            inertia=(2.3951e-5, 2.3951e-5, 3.2347e-5),
            arm_x=0.0325,
            arm_y=0.0325,
            min_thrust=0.0,
            max_thrust=0.16,
            yaw_coeff=0.006,
        )
        return base.replace(**changes) if changes else base

    @property
    def has_lag(self) -> bool:
        """Whether the motor lag (and so the 4 thrust states) is on."""
        return self.motor_tau > 0.0

    @property
    def state_dim(self) -> int:
        """nx: 13, or 17 with the motor lag."""
        return 17 if self.has_lag else 13

    def thrust(self, action: np.ndarray) -> np.ndarray:
        """Rotor thrusts (N) of normalised actions (..., 4) in [-1, 1] (affine map)."""
        half = 0.5 * (self.max_thrust - self.min_thrust)
        return self.min_thrust + (np.asarray(action, dtype=np.float64) + 1.0) * half

    def action_of_thrust(self, thrust: np.ndarray) -> np.ndarray:
        """Normalised actions of rotor thrusts (..., 4) in N (inverse of `thrust`)."""
        half = 0.5 * (self.max_thrust - self.min_thrust)
        return (np.asarray(thrust, dtype=np.float64) - self.min_thrust) / half - 1.0

    def hover_thrust(self) -> float:
        """Per-rotor thrust that balances gravity, N (m g / 4)."""
        return self.mass * self.gravity / 4.0

    def hover_action(self) -> float:
        """The documented hover command: the action of every rotor that balances gravity.

        X2 defaults: 2 · (1.325 · 9.81 / 4) / 13 - 1 ≈ -0.50007.
        """
        return float(self.action_of_thrust(np.array(self.hover_thrust())))

    def rotor_positions(self) -> np.ndarray:
        """(4, 3) rotor positions in the body frame, m."""
        return np.array(
            [
                [sx * self.arm_x, sy * self.arm_y, 0.0]
                for sx, sy in zip(ROTOR_SIGNS_X, ROTOR_SIGNS_Y)
            ]
        )

    def mixer_matrix(self) -> np.ndarray:
        """(4, 4) map from rotor thrusts (N) to [collective thrust N, τx, τy, τz N·m].

        Body-frame moments: τx = Σ y_i T_i, τy = -Σ x_i T_i, τz = yaw_coeff · Σ s_i T_i.
        """
        r = self.rotor_positions()
        return np.stack(
            [
                np.ones(4),
                r[:, 1],
                -r[:, 0],
                self.yaw_coeff * np.asarray(ROTOR_YAW_SIGNS),
            ]
        )


# Sampling ranges. Test masses, inertias and winds lie outside the training range.
MASS_RANGE = SplitRange(train=(1.0, 1.6), test=((0.75, 0.9), (1.75, 2.0)))
INERTIA_SCALE_RANGE = SplitRange(train=(0.8, 1.25), test=((0.55, 0.7), (1.45, 1.8)))
INERTIA_Z_RATIO = (0.9, 0.99)  # Izz / (Ixx + Iyy): planar-ish frame, triangle inequality kept
WIND_RANGE = SplitRange(train=(0.0, 1.0), test=((1.5, 2.5),))  # horizontal force magnitude, N
WIND_Z_RANGE = (-0.2, 0.2)  # vertical wind force, N (both splits)
DRAG_RANGE = SplitRange(train=(0.0, 0.4), test=())  # N·s/m per body axis, same in both
GUST_RANGE = SplitRange(train=(0.0, 0.3), test=())  # N
MOTOR_TAU_RANGE = SplitRange(train=(0.02, 0.05), test=())  # s, only with the lag on


def sample_quadrotor_params(
    rng: np.random.Generator,
    split: Split = "train",
    *,
    base: QuadrotorParams | None = None,
    motor_lag: bool = False,
    sensor_noise: float = 0.0,
) -> QuadrotorParams:
    """Draw one quadrotor (a meta-learning task) from the `split` range.

    Mass, the Ixx / Iyy scales (of the base inertia) and the horizontal wind magnitude come
    from disjoint train / test ranges (`MASS_RANGE`, `INERTIA_SCALE_RANGE`, `WIND_RANGE`);
    Izz is a fraction `INERTIA_Z_RATIO` of Ixx + Iyy; drag, gusts and the motor lag share
    one range. Geometry and thrust limits are those of `base` (default X2).

    Args:
        rng: numpy generator (the only source of randomness).
        split: "train" or "test".
        base: parameters to perturb (default `QuadrotorParams()`); mass and wind ranges are
            scaled by base.mass / 1.325 so a Crazyflie base gets proportionate ranges.
        motor_lag: draw a motor time constant (state of 17) instead of none (13).
        sensor_noise: observation noise standard deviation to set (not sampled).

    Returns:
        A validated `QuadrotorParams`.
    """
    base = base or QuadrotorParams()
    scale = base.mass / 1.325
    mass = MASS_RANGE.sample(rng, split) * scale
    sx = INERTIA_SCALE_RANGE.sample(rng, split)
    sy = INERTIA_SCALE_RANGE.sample(rng, split)
    ixx, iyy = base.inertia[0] * sx, base.inertia[1] * sy
    izz = float(rng.uniform(*INERTIA_Z_RATIO)) * (ixx + iyy)
    wind_mag = WIND_RANGE.sample(rng, split) * scale
    heading = float(rng.uniform(-math.pi, math.pi))
    wind = (
        wind_mag * math.cos(heading),
        wind_mag * math.sin(heading),
        float(rng.uniform(*WIND_Z_RANGE)) * scale,
    )
    drag = tuple(DRAG_RANGE.sample(rng, split) * scale for _ in range(3))
    gust = GUST_RANGE.sample(rng, split) * scale
    tau = MOTOR_TAU_RANGE.sample(rng, split) if motor_lag else 0.0
    return base.replace(
        mass=mass,
        inertia=(ixx, iyy, izz),
        wind=wind,
        drag=drag,  # type: ignore[arg-type]
        gust_std=gust,
        motor_tau=tau,
        sensor_noise=sensor_noise,
    )


# ----------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuadrotorCostWeights:
    """Weights of the quadrotor tracking cost (dimensionless after the units below).

    Attributes:
        position: per m² of position error.
        velocity: per (m/s)² of velocity error.
        attitude: per unit of the rotation error 1 - (q·q_ref)² (q and -q alike).
        rate: per (rad/s)² of angular-velocity error.
        action: per unit² of normalised action deviation from the reference (hover) action.
        terminal: factor on the state terms in the terminal cost.
    """

    position: float = 1.0
    velocity: float = 0.1
    attitude: float = 0.5
    rate: float = 0.01
    action: float = 0.05
    terminal: float = 10.0


# Flight volume (m): leaving it terminates the episode.
FLIGHT_LOWER = np.array([-4.0, -4.0, 0.05])
FLIGHT_UPPER = np.array([4.0, 4.0, 5.0])
_Z_CRASH, _XY_MAX, _Z_MAX = float(FLIGHT_LOWER[2]), float(FLIGHT_UPPER[0]), float(FLIGHT_UPPER[2])


class QuadrotorTask(Task):
    """Base of the quadrotor tasks: a position/velocity reference, level attitude, hover action.

    The cost on state x = [p, q, v, ω, (T)] and normalised action u (see `QuadrotorEnv`) is

        w_p |p - p_r|² + w_v |v - v_r|² + w_q (1 - (q·q_r)²) + w_ω |ω - ω_r|² + w_u |u - u_r|²

    (the terminal cost drops the action term and multiplies by `weights.terminal`). The
    rotor-thrust states of the lag, when present, are not penalised.

    Args:
        state_dim: 13, or 17 with the motor lag.
        hover_action: the reference action of every rotor (the nominal hover command).
        hover_thrust: reference rotor thrust, N (for the lag states of `reference`).
        weights: cost weights.
        thrust_bounds: (min, max) rotor thrust, N, for the lag states' constraints.
    """

    action_dim = 4

    def __init__(
        self,
        state_dim: int = 13,
        hover_action: float = QuadrotorParams().hover_action(),
        hover_thrust: float = QuadrotorParams().hover_thrust(),
        weights: QuadrotorCostWeights | None = None,
        thrust_bounds: tuple[float, float] = (0.0, 13.0),
    ) -> None:
        if state_dim not in (13, 17):
            raise ValueError(f"QuadrotorTask.state_dim must be 13 or 17, got {state_dim}")
        self.state_dim = state_dim
        self.hover_action = float(hover_action)
        self.hover_thrust = float(hover_thrust)
        self.weights = weights or QuadrotorCostWeights()
        self.thrust_bounds = thrust_bounds
        # per-component weights of the squared state error (quaternion and thrusts: 0)
        w = self.weights
        self._state_weights = np.zeros(state_dim)
        self._state_weights[0:3] = w.position
        self._state_weights[7:10] = w.velocity
        self._state_weights[10:13] = w.rate

    # -- reference ---------------------------------------------------------------------
    def position_velocity(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference position (T, 3) m and velocity (T, 3) m/s at times `t` (T,) s."""
        raise NotImplementedError

    def position_velocity_at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Reference position (3,) m and velocity (3,) m/s at one time `t` s (read only)."""
        p, v = self.position_velocity(np.array([t]))
        return p[0], v[0]

    def reference(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference states (T, nx) and actions (T, 4): level attitude, zero rate, hover."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        p, v = self.position_velocity(t)
        x = np.zeros((t.shape[0], self.state_dim))
        x[:, 0:3] = p
        x[:, 3] = 1.0
        x[:, 7:10] = v
        if self.state_dim == 17:
            x[:, 13:17] = self.hover_thrust
        u = np.full((t.shape[0], 4), self.hover_action)
        return x, u

    @property
    def state_lower(self) -> np.ndarray:
        """(nx,) lower bounds: the flight volume, unit-quaternion box, thrust limits."""
        lo = np.full(self.state_dim, -np.inf)
        lo[0:3] = FLIGHT_LOWER
        lo[3:7] = -1.0
        if self.state_dim == 17:
            lo[13:17] = self.thrust_bounds[0]
        return lo

    @property
    def state_upper(self) -> np.ndarray:
        """(nx,) upper bounds: the flight volume, unit-quaternion box, thrust limits."""
        hi = np.full(self.state_dim, np.inf)
        hi[0:3] = FLIGHT_UPPER
        hi[3:7] = 1.0
        if self.state_dim == 17:
            hi[13:17] = self.thrust_bounds[1]
        return hi

    # -- costs -------------------------------------------------------------------------
    def running_cost(
        self, x: torch.Tensor, u: torch.Tensor, x_ref: torch.Tensor, u_ref: torch.Tensor
    ) -> torch.Tensor:
        """Stage cost, batched: x (..., nx), u (..., 4), x_ref, u_ref broadcastable -> (...)."""
        w = self.weights
        return self._state_cost(x, x_ref) + w.action * ((u - u_ref) ** 2).sum(-1)

    def terminal_cost(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        """Terminal cost: x (..., nx), x_ref (..., nx) -> (...)."""
        return self.weights.terminal * self._state_cost(x, x_ref)

    def _state_cost(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        w = self.weights
        dot = (x[..., 3:7] * x_ref[..., 3:7]).sum(-1)
        return (
            w.position * ((x[..., 0:3] - x_ref[..., 0:3]) ** 2).sum(-1)
            + w.velocity * ((x[..., 7:10] - x_ref[..., 7:10]) ** 2).sum(-1)
            + w.attitude * (1.0 - dot * dot)
            + w.rate * ((x[..., 10:13] - x_ref[..., 10:13]) ** 2).sum(-1)
        )

    def running_cost_casadi(self, x: Any, u: Any, x_ref: Any, u_ref: Any) -> Any:
        """The stage cost on CasADi column vectors (nx,1), (4,1), (nx,1), (4,1) -> scalar."""
        import casadi as ca

        du = u - u_ref
        return self._state_cost_casadi(x, x_ref) + self.weights.action * ca.dot(du, du)

    def terminal_cost_casadi(self, x: Any, x_ref: Any) -> Any:
        """The terminal cost on CasADi column vectors (nx,1), (nx,1) -> scalar."""
        return self.weights.terminal * self._state_cost_casadi(x, x_ref)

    def _state_cost_casadi(self, x: Any, x_ref: Any) -> Any:
        import casadi as ca

        w = self.weights
        dp = x[0:3] - x_ref[0:3]
        dv = x[7:10] - x_ref[7:10]
        dw = x[10:13] - x_ref[10:13]
        dot = ca.dot(x[3:7], x_ref[3:7])
        return (
            w.position * ca.dot(dp, dp)
            + w.velocity * ca.dot(dv, dv)
            + w.attitude * (1.0 - dot * dot)
            + w.rate * ca.dot(dw, dw)
        )

    def running_cost_numpy(
        self, x: np.ndarray, u: np.ndarray, x_ref: np.ndarray, u_ref: np.ndarray
    ) -> float:
        """The stage cost of one state (nx,) and action (4,) in numpy (the env's reward)."""
        d = x - x_ref
        dot = float(x[3:7] @ x_ref[3:7])
        du = u - u_ref
        return float(
            (d * d) @ self._state_weights
            + self.weights.attitude * (1.0 - dot * dot)
            + self.weights.action * (du @ du)
        )


class HoverTask(QuadrotorTask):
    """Hold a fixed point with level attitude.

    Args:
        target: (3,) hover point in the world frame, m.
        **kwargs: see `QuadrotorTask`.
    """

    name = "hover"

    def __init__(self, target: tuple[float, float, float] = (0.0, 0.0, 1.5), **kwargs: Any):
        super().__init__(**kwargs)
        self.target = np.asarray(target, dtype=np.float64)
        self._zero_velocity = np.zeros(3)

    def position_velocity(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Constant target, zero velocity: (T, 3), (T, 3)."""
        n = np.shape(t)[0]
        return np.broadcast_to(self.target, (n, 3)).copy(), np.zeros((n, 3))

    def position_velocity_at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The target (3,) and zero velocity (3,) (shared arrays: read only)."""
        return self.target, self._zero_velocity


class WaypointTask(QuadrotorTask):
    """Visit a sequence of waypoints, holding each for `dwell` seconds (then the last).

    The reference jumps from one waypoint to the next (velocity reference zero), a step
    response per leg.

    Args:
        waypoints: (W, 3) points in the world frame, m.
        dwell: seconds per waypoint.
        **kwargs: see `QuadrotorTask`.
    """

    name = "waypoints"

    def __init__(
        self,
        waypoints: tuple[tuple[float, float, float], ...] = (
            (0.0, 0.0, 1.5),
            (1.0, 0.0, 1.5),
            (1.0, 1.0, 2.0),
            (0.0, 1.0, 1.5),
            (0.0, 0.0, 1.5),
        ),
        dwell: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.waypoints = np.asarray(waypoints, dtype=np.float64).reshape(-1, 3)
        if not dwell > 0:
            raise ValueError(f"WaypointTask.dwell must be > 0, got {dwell}")
        self.dwell = float(dwell)

    def position_velocity(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Piecewise-constant waypoint reference: (T, 3), zero velocity (T, 3)."""
        idx = np.clip((np.asarray(t) / self.dwell).astype(np.int64), 0, len(self.waypoints) - 1)
        return self.waypoints[idx], np.zeros((idx.shape[0], 3))


class Figure8Task(QuadrotorTask):
    """Figure-8 in the x–z plane: x = cx + 1.25 sin ωt, y = cy, z = cz + 0.75 sin 2ωt.

    Args:
        center: (3,) hover point the figure is centred on, m.
        omega: angular rate ω, rad/s (period 2π/ω s).
        amplitude_x: 1.25 m by default.
        amplitude_z: 0.75 m by default.
        **kwargs: see `QuadrotorTask`.
    """

    name = "figure8"

    def __init__(
        self,
        center: tuple[float, float, float] = (0.0, 0.0, 1.5),
        omega: float = 1.0,
        amplitude_x: float = 1.25,
        amplitude_z: float = 0.75,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.center = np.asarray(center, dtype=np.float64)
        if not (math.isfinite(omega) and omega > 0):
            raise ValueError(f"Figure8Task.omega must be > 0, got {omega}")
        self.omega = float(omega)
        self.amplitude_x = float(amplitude_x)
        self.amplitude_z = float(amplitude_z)

    def position_velocity(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Figure-8 position (T, 3) m and its exact time derivative (T, 3) m/s."""
        t = np.asarray(t, dtype=np.float64)
        w, ax, az = self.omega, self.amplitude_x, self.amplitude_z
        p = np.empty((t.shape[0], 3))
        v = np.zeros((t.shape[0], 3))
        p[:, 0] = self.center[0] + ax * np.sin(w * t)
        p[:, 1] = self.center[1]
        p[:, 2] = self.center[2] + az * np.sin(2 * w * t)
        v[:, 0] = ax * w * np.cos(w * t)
        v[:, 2] = 2 * az * w * np.cos(2 * w * t)
        return p, v

    def position_velocity_at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Scalar-time fast path of `position_velocity`: (3,), (3,)."""
        w, ax, az, c = self.omega, self.amplitude_x, self.amplitude_z, self.center
        wt = w * t
        p = np.array([c[0] + ax * math.sin(wt), c[1], c[2] + az * math.sin(2 * wt)])
        v = np.array([ax * w * math.cos(wt), 0.0, 2 * az * w * math.cos(2 * wt)])
        return p, v


TASKS: dict[str, type[QuadrotorTask]] = {
    "hover": HoverTask,
    "waypoints": WaypointTask,
    "figure8": Figure8Task,
}


# ----------------------------------------------------------------------------------------
# MJCF
# ----------------------------------------------------------------------------------------


def _mujoco() -> ModuleType:
    """MuJoCo, imported when an environment is built (parameters, tasks and the analytic
    model stay importable on hosts without MuJoCo or CasADi, e.g. a bare GPU box)."""
    import mujoco

    return mujoco


def quadrotor_mjcf(params: QuadrotorParams, timestep: float = 0.005) -> str:
    """MJCF text of the quadrotor with `params` (one free body, four rotor site actuators).

    Physics: RK4 integrator at `timestep`, contacts disabled (crashes are detected
    geometrically by the environment), gravity -z. The body's inertial frame is its origin,
    aligned with the body axes. Actuator i has `ctrl` = normalised action a_i, force
    `T_i = gain · act_or_ctrl + bias` along the site's z axis and moment `±yaw_coeff · T_i`
    about it; with the motor lag on, `dyntype="filter"` integrates the first-order lag
    (act = lagged normalised command).
    """
    p = params
    ixx, iyy, izz = p.inertia
    half = 0.5 * (p.max_thrust - p.min_thrust)
    bias = p.min_thrust + half
    # visual sizes follow the geometry
    ax, ay = p.arm_x, p.arm_y
    arm = math.hypot(ax, ay)
    rotor_r = 0.45 * min(ax, ay) + 0.2 * arm * 0.5
    body = (0.45 * ax, 0.35 * ay, 0.15 * arm)
    dyn = f'dyntype="filter" dynprm="{p.motor_tau:.10g}"' if p.has_lag else ""
    sites, arms, rotors, acts = [], [], [], []
    for i, (sx, sy, ys) in enumerate(zip(ROTOR_SIGNS_X, ROTOR_SIGNS_Y, ROTOR_YAW_SIGNS), 1):
        x, y = sx * ax, sy * ay
        sites.append(f'<site name="rotor{i}" pos="{x:.10g} {y:.10g} 0" size="{0.1 * arm:.4g}"/>')
        arms.append(
            f'<geom class="visual" type="capsule" size="{0.06 * arm:.4g}" '
            f'fromto="0 0 0 {x:.10g} {y:.10g} 0" rgba=".25 .25 .28 1"/>'
        )
        color = ".85 .35 .2 .8" if i in (3, 4) else ".2 .45 .85 .8"  # front rotors orange
        rotors.append(
            f'<geom class="visual" type="cylinder" size="{rotor_r:.4g} {0.03 * arm:.4g}" '
            f'pos="{x:.10g} {y:.10g} {0.12 * arm:.4g}" rgba="{color}"/>'
        )
        acts.append(
            f'<general name="thrust{i}" site="rotor{i}" gear="0 0 1 0 0 '
            f'{ys * p.yaw_coeff:.10g}" ctrllimited="true" ctrlrange="-1 1" '
            f'gainprm="{half:.10g}" biastype="affine" biasprm="{bias:.10g}" {dyn}/>'
        )
    nl = "\n      "
    return f"""<mujoco model="metasym_quadrotor">
  <compiler angle="radian"/>
  <option timestep="{timestep:.10g}" integrator="RK4" gravity="0 0 {-p.gravity:.10g}">
    <flag contact="disable"/>
  </option>
  <visual>
    <global offwidth="1280" offheight="960"/>
    <headlight ambient=".4 .4 .4" diffuse=".6 .6 .6"/>
  </visual>
  <default>
    <default class="visual">
      <geom contype="0" conaffinity="0" mass="0" group="1"/>
    </default>
  </default>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1=".5 .7 .9" rgb2=".1 .15 .3"
      width="256" height="256"/>
    <texture name="grid" type="2d" builtin="checker" rgb1=".3 .35 .4" rgb2=".45 .5 .55"
      width="256" height="256" mark="edge" markrgb=".7 .7 .7"/>
    <material name="grid" texture="grid" texrepeat="8 8" reflectance=".1"/>
  </asset>
  <worldbody>
    <light pos="0 0 6" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="6 6 .05" material="grid" contype="0" conaffinity="0"/>
    <body name="target" mocap="true" pos="0 0 1.5">
      <geom class="visual" type="sphere" size="{0.2 * arm:.4g}" rgba="1 .2 .2 .5"/>
    </body>
    <body name="quad" pos="0 0 1.5">
      <freejoint name="root"/>
      <inertial pos="0 0 0" mass="{p.mass:.12g}" diaginertia="{ixx:.12g} {iyy:.12g} {izz:.12g}"/>
      <camera name="track" mode="trackcom" pos="{-8 * arm:.4g} {-4 * arm:.4g} {3 * arm:.4g}"
        xyaxes="0.447 -0.894 0 0.25 0.125 1"/>
      <geom class="visual" type="box" size="{body[0]:.4g} {body[1]:.4g} {body[2]:.4g}"
        rgba=".15 .15 .18 1"/>
      {nl.join(arms)}
      {nl.join(rotors)}
      {nl.join(sites)}
    </body>
  </worldbody>
  <actuator>
    {(nl[:-2]).join(acts)}
  </actuator>
</mujoco>
"""


# ----------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------


class QuadrotorEnv(MetaSymEnv):
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

        self._mj = mujoco = _mujoco()
        self.model = mujoco.MjModel.from_xml_string(quadrotor_mjcf(nominal, physics_dt))
        self.data = mujoco.MjData(self.model)
        self._body = self.model.body("quad").id
        self._target_mocap = int(self.model.body("target").mocapid[0])
        self._xfrc = self.data.xfrc_applied[self._body]
        self._mat = np.zeros(9)
        self._gust = np.zeros(3)
        self._k = 0
        self._renderer: Any = None
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
        """Validate and clip an action (same contract as `MetaSymEnv.check_action`, faster).

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
        x[3:7] = _quat_mul(x[3:7], np.array([1.0, *half]))
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
            q = _quat_mul(q, np.array([1.0, *(0.5 * noise * rng.standard_normal(3))]))
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
            "params": self.params,
            "t": self._k * self.dt,
            "action_clipped": clipped,
            "position_error": math.sqrt(float(e @ e)),
        }

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """RGB image (height, width, 3) uint8 from the tracking camera, or None."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = self._mj.Renderer(self.model, self.height, self.width)
        p_ref, _ = self._reference_pv(self._k * self.dt)
        self.data.mocap_pos[self._target_mocap] = p_ref
        self._mj.mj_forward(self.model, self.data)
        self._renderer.update_scene(self.data, camera="track")
        return np.asarray(self._renderer.render())

    def close(self) -> None:
        """Release the renderer."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of quaternions (w, x, y, z): (4,), (4,) -> (4,)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )
