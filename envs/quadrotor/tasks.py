"""Quadrotor tasks: hover, waypoints and figure-8 references with their tracking costs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metasym_control.envs.quadrotor.params import QuadrotorParams
from metasym_control.task import Task


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
# `QuadrotorTask.recoverable`: a vehicle with thrust-to-weight >= 1.5 (the experiment's
# stress set) brakes a descent at >= 0.5 g; half of it leaves room for the fallback's
# reaction and a tilted thrust axis
RECOVERY_DECELERATION = 0.25 * 9.81  # m/s²
RECOVERY_MARGIN = 0.1  # m


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

    def recoverable(self, state: np.ndarray) -> bool:
        """Whether the vehicle at `state` (nx,) can stop inside the flight volume.

        Along each axis, the distance to the wall it moves towards must exceed
        `RECOVERY_MARGIN` plus its stopping distance v² / (2 a) at a = `RECOVERY_DECELERATION`.
        A learned or nominal model that misjudges the vehicle's weight plans a descent it
        cannot brake (MPPI on the nominal physics flew 13 heavy vehicles of the stress set
        into the floor, docs/controllers.md); the MPC hands such a step to its fallback.
        """
        x = np.asarray(state, dtype=np.float64)
        p, v = x[0:3], x[7:10]
        stop = RECOVERY_MARGIN + v * v / (2.0 * RECOVERY_DECELERATION)
        room = np.where(v < 0.0, p - FLIGHT_LOWER, FLIGHT_UPPER - p)
        return bool(np.all(room > stop))

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
