"""Gymnasium's Pendulum-v1 as a user's own system: one entry, then generate → train → adapt → MPPI.

Everything here is what a user writes to bring a system of their own into the project; the
framework is not edited. `register_pendulum()` registers the Gymnasium id
`MetaSymPendulum-v0` and the system "pendulum" (`metasym_control.systems.register_system`),
after which `generate_data("pendulum", ...)`, `TrainArgs(env="pendulum")`, `model.adapt`,
MPPI and `run_closed_loop` work on it like on the project's own systems.

The pieces:

- `PendulumParams`: mass m (kg) and length l (m) of the rod, with disjoint train and held-out
  test ranges, each of which can still be swung up inside 5 s with |u| <= 2 N·m (checked by
  MPPI on the true model at the ranges' corners). Gravity stays Pendulum-v1's g = 10 m/s².
- `PendulumAdapterEnv`: a thin adapter that owns a `gymnasium.make("Pendulum-v1")` and sets
  its `unwrapped.m`, `unwrapped.l` on every reset. It is a `SystemEnv` holding the pendulum
  rather than a `gymnasium.Wrapper` around it, because the project reads `dt`, `task`,
  `params` and `get_state` from `env.unwrapped`, which for a wrapper would be the bare
  `PendulumEnv`. Stepping is Pendulum-v1's own code:
  `θ̇' = clip(θ̇ + (3g/(2l) sin θ + 3/(m l²) τ) dt, ±8)`, `θ' = θ + θ̇' dt`, dt = 0.05 s.
- `PendulumSwingUpTask`: the cost and reference MPPI plans with; `PendulumModel`: the same
  equations in torch (the nominal and oracle model, and a least-squares `adapt`).

Design choices:

- **State and angle wrapping.** x = (θ rad, θ̇ rad/s), θ = 0 upright, θ = π hanging (Pendulum-v1's
  convention). θ is *not* wrapped: it is Pendulum-v1's internal, continuous angle, so every
  recorded transition is smooth and a learned model never sees a 2π jump (a wrap to
  (-π, π] would put the hanging start exactly on the discontinuity). Resets place θ in a
  window around hanging, `π ± π`, which reaches both upright points 0 and 2π the swing-up
  can go to; the periodicity is left to the cost (`1 - cos θ`) and to the success test
  (`|atan2(sin θ, cos θ)|`), never to the state. The price of a continuous angle: a learned
  model sees sin θ only over the turns its data covered, so the exploration policy
  (`PendulumExplorationPolicy`) brakes a rod that would spin away and the data stays within
  about a turn of hanging (a first version with plain random forcing spread θ over ±30 rad,
  and the MLP and MetaSym trained on it were no better than holding the state).
- **Velocity clip.** Pendulum-v1 clips θ̇ to ±8 rad/s after each step. The clip is part of
  the true dynamics: the analytic model applies the same clip, and the learned model learns
  it from the data (exploration reaches the clip only when the rod falls from the top, so it
  is seen but rare; a swing-up passes the bottom near 7.7 rad/s, just below it).
  `info["speed_clipped"]` reports a step the clip acted on, and the analytic model's
  least-squares `adapt` skips those transitions (they carry no information about m, l).
- **Action scale.** Actions are normalised: u ∈ [-1, 1] is a torque of 2 u N·m (clipped to
  [-1, 1] first; `info["action_clipped"]` says so), as every system of the project is driven.
- **Task cost.** Per stage `w_θ (1 - cos(θ - θ_ref)) + w_ω (θ̇ - θ̇_ref)² + w_u (u - u_ref)²`
  with θ_ref = θ̇_ref = u_ref = 0, and `terminal · (state terms)` at the horizon's end:
  periodic in θ, so either upright (0 or 2π) is the target, and with a small velocity weight
  the planner may pump energy in.
- **Starts.** `start="hanging"` (the task; the class default): θ = π, θ̇ = 0 plus uniform
  noise of ±0.05 rad and ±0.05 rad/s. `start="random"` (the registry entry's default, so
  generated data explores): θ uniform in π ± π, θ̇ uniform in ±2 rad/s.

Success of a swing-up (`swing_up_metrics`): within 0.2 rad of upright from 5 s on, i.e.
reached inside 5 s and held for the last 2 s of a 7 s (140-step) episode from hanging.
`pendulum_swing_up` runs that protocol on held-out pendulums; `main()`
(`python -m metasym_control.examples.pendulum`) trains a MetaSym checkpoint and measures it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import gymnasium as gym
import numpy as np
import torch

from metasym_control.closed_loop import ClosedLoopResult
from metasym_control.dynamics import AdaptBudget, DynamicsModel, Memory, rollout_by_steps
from metasym_control.models.coordinates import CoordinateMap, generic_coordinates
from metasym_control.params import Split, SplitRange, SystemParams, require_positive
from metasym_control.system_env import SystemEnv
from metasym_control.systems import MPCDefaults, SystemEntry, register_system
from metasym_control.task import Task
from metasym_control.trajectory import Trajectory

ENV_ID = "MetaSymPendulum-v0"
SYSTEM_NAME = "pendulum"
DT = 0.05
"""Pendulum-v1's control period, s."""
MAX_TORQUE = 2.0
"""Torque of the normalised action u = 1, N·m (Pendulum-v1's torque limit)."""
MAX_SPEED = 8.0
"""Pendulum-v1's clip of θ̇, rad/s."""
GRAVITY = 10.0
"""Pendulum-v1's default gravity, m/s²."""
STATE_NAMES = ["theta", "theta_dot"]
STATE_UNITS = ["rad", "rad/s"]
ACTION_NAMES = ["torque"]

# the swing-up protocol
EPISODE_STEPS = 140  # 7 s at 0.05 s
REACH_BY = 5.0  # s: inside 0.2 rad of upright by then ...
HOLD_TOLERANCE = 0.2  # rad
HANGING_NOISE = 0.05  # rad and rad/s: the "small noise" of the hanging start
RANDOM_ANGLE_SPAN = math.pi  # random starts: θ in π ± this (hanging to either upright)
RANDOM_SPEED = 2.0  # random starts: |θ̇| below this, rad/s


# --- parameters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PendulumParams(SystemParams):
    """One Pendulum-v1 rod: θ̈ = 3g/(2l) sin θ + 3/(m l²) τ (a uniform rod about its end).

    Attributes:
        mass: m, kg.
        length: l, m.
        gravity: g, m/s² (not varied: Pendulum-v1's 10).
    """

    mass: float = 1.0
    length: float = 1.0
    gravity: float = GRAVITY

    # Held-out ranges lie on both sides of the train range. The hardest corners (heavy and
    # long: the most pumping, short: the velocity clip bites at the bottom) still swing up
    # inside 5 s with |τ| <= 2 N·m under MPPI on the true model.
    RANGES: ClassVar[dict[str, SplitRange]] = {
        "mass": SplitRange(train=(0.8, 1.2), test=((0.7, 0.8), (1.2, 1.3))),
        "length": SplitRange(train=(0.85, 1.15), test=((0.8, 0.85), (1.15, 1.2))),
    }

    def validate(self) -> None:
        """Mass, length and gravity finite and > 0."""
        require_positive("PendulumParams", "mass", self.mass)
        require_positive("PendulumParams", "length", self.length)
        require_positive("PendulumParams", "gravity", self.gravity)

    @property
    def gravity_gain(self) -> float:
        """3g/(2l): θ̈ per unit sin θ, rad/s²."""
        return 3.0 * self.gravity / (2.0 * self.length)

    @property
    def action_gain(self) -> float:
        """3 · 2 N·m / (m l²): θ̈ per unit normalised action, rad/s²."""
        return 3.0 * MAX_TORQUE / (self.mass * self.length**2)

    @property
    def inertia(self) -> float:
        """m l²/3: moment of inertia about the pivot, kg·m²."""
        return self.mass * self.length**2 / 3.0


def sample_pendulum_params(rng: np.random.Generator, split: Split) -> PendulumParams:
    """One pendulum of the `split` range (train and held-out test ranges are disjoint)."""
    return PendulumParams(**{n: r.sample(rng, split) for n, r in PendulumParams.RANGES.items()})


def wrap_angle(theta: np.ndarray) -> np.ndarray:
    """Angle to upright in (-π, π], rad: `atan2(sin θ, cos θ)` of any shape."""
    return np.arctan2(np.sin(theta), np.cos(theta))


# --- task ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendulumCostWeights:
    """Weights of the swing-up cost (dimensionless per stage).

    Attributes:
        angle: weight of 1 - cos(θ - θ_ref) (0 upright, 2 hanging).
        velocity: weight of (θ̇ - θ̇_ref)², s²/rad²: small, so pumping energy in is cheap.
        action: weight of (u - u_ref)² (normalised action).
        terminal: multiplier of the state terms at the horizon's end.
    """

    angle: float = 1.0
    velocity: float = 0.01
    action: float = 0.01
    terminal: float = 5.0


class PendulumSwingUpTask(Task):
    """Swing the pendulum up and hold it upright (θ = 0 mod 2π, θ̇ = 0, u = 0).

    Cost per stage: `w_θ (1 - cos(θ - θ_ref)) + w_ω (θ̇ - θ̇_ref)² + w_u (u - u_ref)²`;
    terminal cost `terminal · (w_θ (1 - cos(θ - θ_ref)) + w_ω (θ̇ - θ̇_ref)²)`. Periodic in θ,
    so the unwrapped state needs no wrapping.

    Attributes:
        weights: the cost weights.
    """

    state_dim = 2
    action_dim = 1

    def __init__(self, weights: PendulumCostWeights | None = None) -> None:
        self.weights = weights or PendulumCostWeights()
        self.x_target = np.zeros(2)
        self.u_target = np.zeros(1)

    def reference(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Constant upright reference: x_ref (T, 2) zeros, u_ref (T, 1) zeros, t (T,) s."""
        n = np.asarray(t).reshape(-1).shape[0]
        return np.zeros((n, 2)), np.zeros((n, 1))

    def _state_cost(self, one_minus_cos: Any, dv: Any) -> Any:
        w = self.weights
        return w.angle * one_minus_cos + w.velocity * dv**2

    def running_cost(
        self, x: torch.Tensor, u: torch.Tensor, x_ref: torch.Tensor, u_ref: torch.Tensor
    ) -> torch.Tensor:
        """Stage cost: x (..., 2), u (..., 1), x_ref, u_ref broadcastable -> (...)."""
        d = x - x_ref
        return self._state_cost(1.0 - torch.cos(d[..., 0]), d[..., 1]) + self.weights.action * (
            (u - u_ref) ** 2
        ).sum(-1)

    def terminal_cost(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        """Terminal cost: x (..., 2), x_ref (..., 2) -> (...)."""
        d = x - x_ref
        return self.weights.terminal * self._state_cost(1.0 - torch.cos(d[..., 0]), d[..., 1])

    def running_cost_casadi(self, x: Any, u: Any, x_ref: Any, u_ref: Any) -> Any:
        """The stage cost on CasADi column vectors (2,1), (1,1), (2,1), (1,1)."""
        import casadi as ca

        d = x - x_ref
        return (
            self._state_cost(1.0 - ca.cos(d[0]), d[1])
            + self.weights.action * (u[0] - u_ref[0]) ** 2
        )

    def terminal_cost_casadi(self, x: Any, x_ref: Any) -> Any:
        """The terminal cost on CasADi column vectors (2,1), (2,1)."""
        import casadi as ca

        d = x - x_ref
        return self.weights.terminal * self._state_cost(1.0 - ca.cos(d[0]), d[1])

    def cost_numpy(self, x: np.ndarray, u: np.ndarray) -> float:
        """Stage cost of one state (2,) and action (1,) against upright, for rewards."""
        return float(
            self._state_cost(1.0 - math.cos(float(x[0])), float(x[1]))
            + self.weights.action * float(np.sum(np.asarray(u) ** 2))
        )

    def tracking_error(self, x: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
        """Angle to the reference, wrapped, rad: x (T, 2), x_ref (T, 2) -> (T,) in [0, π]."""
        return np.abs(wrap_angle(np.asarray(x)[..., 0] - np.asarray(x_ref)[..., 0]))


TASKS = ("swing_up",)


# --- the adapter environment -----------------------------------------------------------------


class PendulumAdapterEnv(SystemEnv):
    """Pendulum-v1 with the project's parameter and state protocol (MetaSymPendulum-v0).

    Owns `gymnasium.make("Pendulum-v1")` and steps its unwrapped `PendulumEnv` (its own
    200-step limit does not apply; `gymnasium.make(ENV_ID)` adds ours), setting
    `unwrapped.m`, `unwrapped.l`, `unwrapped.g` on every reset.

    State (`get_state`): `[θ rad (continuous, 0 upright), θ̇ rad/s]`, Pendulum-v1's internal
    state. Observation: Pendulum-v1's own `[cos θ, sin θ, θ̇]` (float32).
    Action: u in [-1, 1], a torque of 2 u N·m (clipped; `info["action_clipped"]`).
    Reward: minus the task's stage cost. Termination: a non-finite state only.
    `info["speed_clipped"]`: the step ended on Pendulum-v1's ±8 rad/s clip.

    `reset(options=...)` keys: `params` (a `PendulumParams`, else `fixed_params`, else one
    drawn from the `split` range), `state` ((2,) initial state, else by `start`).

    Args:
        params: a fixed pendulum for every episode (None: draw one per reset).
        split: "train" or "test" range to draw pendulums from.
        task: the task name (only "swing_up").
        start: "hanging" (θ = π, θ̇ = 0 with ±0.05 noise) or "random" (θ in π ± π,
            |θ̇| < 2 rad/s), see the module doc.
        render_mode: passed to Pendulum-v1 ("rgb_array" needs pygame).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}  # noqa: RUF012
    env_id = ENV_ID
    task: PendulumSwingUpTask

    def __init__(
        self,
        params: PendulumParams | None = None,
        split: Split = "train",
        task: str = "swing_up",
        start: str = "hanging",
        render_mode: str | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"{ENV_ID}: split must be 'train' or 'test', got {split!r}")
        if task not in TASKS:
            raise ValueError(f"{ENV_ID}: unknown task {task!r}; known: {TASKS}")
        if start not in ("hanging", "random"):
            raise ValueError(f"{ENV_ID}: start must be 'hanging' or 'random', got {start!r}")
        if params is not None and not isinstance(params, PendulumParams):
            raise ValueError(f"{ENV_ID}: params must be a PendulumParams")
        self.fixed_params = params
        self.split: Split = split
        self.start = start
        self.render_mode = render_mode
        self.inner = gym.make("Pendulum-v1", render_mode=render_mode, disable_env_checker=True)
        # the PendulumEnv whose step we call (untyped: its m, l, g, dt, state are plain attributes)
        self.pendulum: Any = cast(Any, self.inner.unwrapped)
        self.dt = float(self.pendulum.dt)
        self.task = PendulumSwingUpTask()
        self.state_names, self.state_units = list(STATE_NAMES), list(STATE_UNITS)
        self.action_names = list(ACTION_NAMES)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.observation_space = self.pendulum.observation_space
        self._apply_params(params or PendulumParams())
        self.pendulum.state = np.array([math.pi, 0.0])
        self._t = 0.0

    def _apply_params(self, p: PendulumParams) -> None:
        self.params = p
        self.pendulum.m, self.pendulum.l, self.pendulum.g = p.mass, p.length, p.gravity

    def get_state(self) -> np.ndarray:
        """(2,) float64 state `[θ rad, θ̇ rad/s]` (θ continuous, not wrapped)."""
        return np.asarray(self.pendulum.state, dtype=np.float64).copy()

    def set_state(self, state: np.ndarray) -> None:
        """Set the state from a (2,) vector `[θ rad, θ̇ rad/s]`."""
        x = np.asarray(state, dtype=np.float64)
        if x.shape != (2,):
            raise ValueError(f"{ENV_ID}: state of shape {x.shape}, expected (2,)")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{ENV_ID}: non-finite state")
        self.pendulum.state = x.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode (see the class doc for `options`)."""
        super().reset(seed=seed)

        def draw() -> PendulumParams:
            return self.fixed_params or sample_pendulum_params(self.np_random, self.split)

        options, params = self.reset_options(options, ("params", "state"), PendulumParams, draw)
        p = cast(PendulumParams, params)
        # Pendulum-v1's reset clears its render state; its random start is replaced below
        self.pendulum.reset(seed=int(self.np_random.integers(0, 2**31 - 1)))
        self._apply_params(p)
        self._t = 0.0
        if options.get("state") is not None:
            self.set_state(options["state"])
        elif self.start == "hanging":
            noise = self.np_random.uniform(-HANGING_NOISE, HANGING_NOISE, 2)
            self.set_state(np.array([math.pi, 0.0]) + noise)
        else:
            theta = math.pi + self.np_random.uniform(-RANDOM_ANGLE_SPAN, RANDOM_ANGLE_SPAN)
            self.set_state(np.array([theta, self.np_random.uniform(-RANDOM_SPEED, RANDOM_SPEED)]))
        return self.pendulum._get_obs(), self._info(False, False)

    def _info(self, clipped: bool, speed_clipped: bool) -> dict[str, Any]:
        x = self.get_state()
        err = self.task.tracking_error(x[None], self.task.x_target[None])[0]
        return {
            **self.common_info(self._t, clipped),
            "speed_clipped": speed_clipped,
            "tracking_error": float(err),
        }

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance 0.05 s under the normalised `action` (1,) (torque 2 u N·m)."""
        a, clipped = self.check_action(action)
        obs, _, _, _, _ = self.pendulum.step(MAX_TORQUE * a)
        self._t += self.dt
        x = self.get_state()
        info = self._info(clipped, bool(abs(x[1]) >= MAX_SPEED))
        reward = -self.task.cost_numpy(x, a)
        terminated = False
        if not np.all(np.isfinite(x)):
            terminated, info["reason"], reward = True, "non-finite state", -1e6
        return obs, float(reward), terminated, False, info

    def render(self) -> Any:
        """Pendulum-v1's rendering (an RGB array with render_mode="rgb_array")."""
        return self.pendulum.render()

    def close(self) -> None:
        """Close the inner Pendulum-v1."""
        self.inner.close()


# --- the analytic model --------------------------------------------------------------------


class PendulumModel:
    """Pendulum-v1's equations as a batched torch `DynamicsModel` (nominal / oracle model).

    The env's exact discrete map, velocity clip included:
    `θ̇' = clip(θ̇ + (a sin θ + b u) dt, ±8)`, `θ' = θ + θ̇' dt`, with a = 3g/(2l) and
    b = 3 · 2 N·m / (m l²), u ∈ [-1, 1] clipped first. Markov (history_len 0, memory `{}`),
    valid everywhere (no trusted box). Implements `SymbolicModel.casadi_step` too.

    Args:
        params: the pendulum.
        dt: control period, s.
        device, dtype: of the computation (float64 by default).
    """

    history_len = 0
    state_dim = 2
    action_dim = 1
    trusted_lower: np.ndarray | None = None
    trusted_upper: np.ndarray | None = None

    def __init__(
        self,
        params: PendulumParams,
        dt: float = DT,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"PendulumModel: dt must be > 0, got {dt}")
        self.params = params
        self.dt = float(dt)
        self.device = torch.device(device)
        self.dtype = dtype

    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """Markov model: the memory is empty `{}`."""
        return {}

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """One step: x (..., 2) [rad, rad/s], u (..., 1) in [-1, 1] -> (x' (..., 2), {})."""
        p = self.params
        theta, omega = x[..., 0], x[..., 1]
        u0 = u[..., 0].clamp(-1.0, 1.0)
        omega = omega + (p.gravity_gain * torch.sin(theta) + p.action_gain * u0) * self.dt
        omega = omega.clamp(-MAX_SPEED, MAX_SPEED)
        return torch.stack([theta + omega * self.dt, omega], dim=-1), memory

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Predict T steps: x0 (..., 2), actions (..., T, 1) -> (..., T, 2), x0 excluded."""
        return rollout_by_steps(self, x0, actions, memory)

    def casadi_step(self, x: Any, u: Any) -> Any:
        """Symbolic step: CasADi (2, 1) state and (1, 1) action -> (2, 1) next state."""
        import casadi as ca

        p = self.params
        u0 = ca.fmin(ca.fmax(u[0], -1.0), 1.0)
        omega = x[1] + (p.gravity_gain * ca.sin(x[0]) + p.action_gain * u0) * self.dt
        omega = ca.fmin(ca.fmax(omega, -MAX_SPEED), MAX_SPEED)
        return ca.vertcat(x[0] + omega * self.dt, omega)

    def adapt(self, support: Trajectory, budget: AdaptBudget) -> DynamicsModel:
        """Least-squares m and l from `support` (budget ignored: closed form).

        Fits `(θ̇' - θ̇)/dt = a sin θ + b u` over the valid transitions the velocity clip did
        not act on, then l = 3g/(2a), m = 6/(b l²). Returns a copy (self untouched); with
        too little excitation (fewer than 4 such transitions, or a, b <= 0) a copy of self.
        """
        x0 = support.states[:, :-1]
        x1 = support.states[:, 1:]
        mask = support.valid_mask() & (np.abs(x1[..., 1]) < MAX_SPEED - 1e-9)
        rows = np.stack([np.sin(x0[..., 0][mask]), support.actions[..., 0][mask]], axis=1)
        target = (x1[..., 1][mask] - x0[..., 1][mask]) / self.dt
        if rows.shape[0] < 4:
            return PendulumModel(self.params, self.dt, self.device, self.dtype)
        (a, b), *_ = np.linalg.lstsq(rows, target, rcond=None)
        if not (a > 0 and b > 0):
            return PendulumModel(self.params, self.dt, self.device, self.dtype)
        length = 3.0 * self.params.gravity / (2.0 * a)
        mass = 3.0 * MAX_TORQUE / (b * length**2)
        fitted = self.params.replace(mass=float(mass), length=float(length))
        return PendulumModel(fitted, self.dt, self.device, self.dtype)


# --- the registry entry --------------------------------------------------------------------


def pendulum_coordinates(state_dim: int) -> CoordinateMap:
    """q = θ (rad), p = I_nom θ̇ (kg·m²/s, the nominal rod's angular momentum).

    With one canonical pair the standardisation removes the scale, so the nominal inertia
    only gives p its physical meaning.
    """
    if state_dim != 2:
        raise ValueError(f"pendulum state_dim must be 2, got {state_dim}")
    return generic_coordinates(2, [0], [1], p_scale=PendulumParams().inertia)


def swing_up_metrics(
    states: np.ndarray,
    dt: float = DT,
    tolerance: float = HOLD_TOLERANCE,
    reach_by: float = REACH_BY,
) -> dict[str, float]:
    """Scores of one swing-up run.

    Args:
        states: (T+1, 2) states of the run, θ unwrapped (T = 140 for the 7 s protocol).
        dt: control period, s.
        tolerance: |angle to upright| counted as up, rad.
        reach_by: time by which it must be up and stay up to the end, s.

    Returns:
        "swing_up" (1.0 if |wrap(θ)| <= tolerance at every t >= reach_by, the run lasting
        beyond reach_by, else 0.0), "settle_time" (s from which it stays up to the end; inf
        if it is not up at the end), "final_error" (rad), "max_error_hold" (rad, the largest
        angle to upright at t >= reach_by).
    """
    err = np.abs(wrap_angle(np.asarray(states)[:, 0]))
    times = np.arange(len(err)) * dt
    up = err <= tolerance
    hold = times >= reach_by - 1e-9
    settle = math.inf
    if up[-1]:
        below = np.nonzero(~up)[0]
        settle = float(times[below[-1] + 1]) if below.size else 0.0
    ok = bool(hold.any() and np.all(up[hold]))
    return {
        "swing_up": float(ok),
        "settle_time": settle,
        "final_error": float(err[-1]),
        "max_error_hold": float(err[hold].max()) if hold.any() else math.inf,
    }


class PendulumExplorationPolicy:
    """Smooth random torque that never lets a pendulum spin away: the data stays within
    about a turn of hanging, where the swing-up happens.

    Pendulum-v1 has no friction, so random forcing pumps energy in until the rod spins, and
    its continuous angle then runs over many turns (|θ| of 30 rad in 4 s): a learned model
    would have to learn sin θ over all of them. Above `max_energy` times the energy of the
    upright rest (E = ½ I θ̇² + m g l/2 · cos θ), the policy brakes with full torque against
    θ̇ instead: forced swings turn back short of the top (random starts still put the rod
    near upright, and it falls from there at most once over the top).

    Args:
        params: the pendulum of each slot (a data generator may know its system).
        dt: control period, s.
        seed: seed of the forcing.
        sigma: largest std of the normalised torque (each episode draws its amplitude).
        tau: correlation time of the forcing, s.
        max_energy: energy bound as a multiple of the upright rest's, m g l/2.
    """

    def __init__(
        self,
        params: Sequence[PendulumParams],
        dt: float,
        seed: int = 0,
        sigma: float = 1.0,
        tau: float = 0.3,
        max_energy: float = 0.95,
    ) -> None:
        from metasym_control.exploration import SmoothForcingConfig, SmoothForcingPolicy

        self.forcing = SmoothForcingPolicy(
            len(params), 1, dt, SmoothForcingConfig(sigma=sigma, tau=tau), seed
        )
        self.inertia = np.array([p.inertia for p in params])
        self.top = np.array([p.mass * p.gravity * p.length / 2.0 for p in params])
        self.max_energy = max_energy

    def reset(self, index: int, state: np.ndarray, physics: object | None = None) -> None:
        """New episode in slot `index` (a fresh forcing amplitude)."""
        self.forcing.reset(index, state, physics)

    def act_batch(self, states: np.ndarray) -> np.ndarray:
        """Normalised torques (N, 1) for states (N, 2) [θ rad, θ̇ rad/s]."""
        u = self.forcing.act_batch(states)
        theta, omega = states[:, 0], states[:, 1]
        energy = 0.5 * self.inertia * omega**2 + self.top * np.cos(theta)
        brake = energy > self.max_energy * self.top
        u[brake, 0] = -np.sign(omega[brake])
        return u


def _explore(chunk: Sequence[SystemParams], seed: int, dt: float) -> Any:
    return PendulumExplorationPolicy([p for p in chunk if isinstance(p, PendulumParams)], dt, seed)


def _analytic(params: SystemParams, dt: float) -> DynamicsModel:
    assert isinstance(params, PendulumParams)
    return PendulumModel(params, dt)


def _state_range(params: SystemParams) -> tuple[np.ndarray, np.ndarray]:
    # θ is continuous, so a record may hold a few turns; θ̇ is clipped
    return np.array([-40.0, -MAX_SPEED]), np.array([40.0, MAX_SPEED])


def _metrics(result: ClosedLoopResult, env: Any) -> dict[str, float]:
    return swing_up_metrics(result.states, float(env.dt))


PENDULUM_MPC = MPCDefaults(horizon=30, samples=256, noise_sigma=0.6, temperature=0.1)
"""MPPI defaults: a 1.5 s horizon sees most of a swing (the small-angle period is ~1.6 s)."""


def pendulum_entry() -> SystemEntry:
    """The registry entry of the pendulum (what `register_pendulum` registers)."""
    return SystemEntry(
        name=SYSTEM_NAME,
        description="Gymnasium Pendulum-v1 through a thin adapter (mass and length vary)",
        env_id=ENV_ID,
        # generated data explores from varied states; swing-up runs pass start="hanging"
        env_kwargs={"task": "swing_up", "start": "random"},
        sample_params=sample_pendulum_params,
        nominal_params=PendulumParams,
        exploration=_explore,
        analytic_model=_analytic,
        coordinates=pendulum_coordinates,
        state_range=_state_range,
        tasks=TASKS,
        mpc=PENDULUM_MPC,
        episode_steps=80,
        state_dims=(2,),
        trial_steps=EPISODE_STEPS,
        trial_kwargs={"start": "hanging"},
        metrics=_metrics,
    )


def register_pendulum() -> SystemEntry:
    """Register the Gymnasium id `MetaSymPendulum-v0` and the system "pendulum" (idempotent).

    Returns:
        The registered `SystemEntry`.
    """
    from gymnasium.envs.registration import register, registry

    if ENV_ID not in registry:
        register(
            id=ENV_ID,
            entry_point="metasym_control.examples.pendulum:PendulumAdapterEnv",
            max_episode_steps=200,
        )
    entry = pendulum_entry()
    register_system(entry, replace=True)
    return entry


# --- the whole path: generate -> train -> adapt -> MPPI ------------------------------------


@dataclass(frozen=True)
class PendulumPathArgs:
    """Train MetaSym on pendulums of the train range, then swing up held-out ones with MPPI.

    Attributes:
        out: folder of the checkpoint, its log and the swing-up table.
        checkpoint: an existing pendulum checkpoint stem instead of training one.
        n_tasks: training pendulums (train range).
        episodes: exploration episodes per training pendulum.
        meta_steps: outer meta-training steps.
        systems: held-out pendulums swung up (test range).
        seed: seed of the held-out draw and of the trials (training data: seed 0).
        steps: control steps of each swing-up (None: the protocol's 140; fewer for a trial).
        samples: MPPI samples (None: the entry's default).
        progress: progress bars.
        benchmarks: BENCHMARKS.md whose pendulum section to update (None: none).
    """

    out: Path = Path("outputs/pendulum")
    checkpoint: Path | None = None
    n_tasks: int = 48
    episodes: int = 5
    meta_steps: int = 1500  # about 6 minutes on 2 CPU cores
    systems: int = 5
    seed: int = 100
    steps: int | None = None
    samples: int | None = None
    progress: bool = True
    benchmarks: Path | None = None


def train_pendulum_metasym(args: PendulumPathArgs) -> DynamicsModel:
    """Meta-train MetaSym on generated pendulum data (`metasym-control train --env pendulum`
    does the same); writes `args.out/checkpoint.*`."""
    from metasym_control.meta_training import MetaTrainConfig
    from metasym_control.training import TrainArgs, run_training

    register_pendulum()
    targs = TrainArgs(
        env=SYSTEM_NAME,
        out=args.out,
        n_tasks=args.n_tasks,
        episodes=args.episodes,
        seed=0,
        progress=args.progress,
        train=MetaTrainConfig(steps=args.meta_steps, seed=0),
    )
    model = run_training(targs)
    return model


def pendulum_swing_up(args: PendulumPathArgs) -> dict[str, Any]:
    """The user-system path end to end: train (or load) MetaSym, then on `args.systems`
    held-out pendulums adapt it on 3 exploration episodes and swing up from hanging with
    MPPI (beside zero torque and MPPI on the nominal and the true model).

    Returns:
        The experiment summary (`metasym_control.experiment.run_experiment`): per role the
        swing-up success, settle time and errors of every pendulum, and the goal (swing-up
        with the adapted MetaSym on at least 4 of 5).
    """
    from metasym_control.checkpoint import load_checkpoint
    from metasym_control.experiment import TrialConfig, run_experiment

    register_pendulum()
    if args.checkpoint is not None:
        stem = args.checkpoint
    else:
        train_pendulum_metasym(args)
        stem = args.out / "checkpoint"

    def loader() -> DynamicsModel:
        return load_checkpoint(stem, dtype=torch.float64)[0]

    cfg = TrialConfig(steps=args.steps, samples=args.samples)
    return run_experiment(SYSTEM_NAME, args.systems, args.seed, loader, cfg, args.progress)


def main() -> None:
    """`python -m metasym_control.examples.pendulum`: the path, then its table (also
    written to `--out` and, with `--benchmarks`, to BENCHMARKS.md)."""
    import sys
    import time

    import tyro

    from metasym_control.experiment import report_experiment

    args = tyro.cli(PendulumPathArgs)
    t0 = time.perf_counter()
    summary = pendulum_swing_up(args)
    command = "python -m metasym_control.examples.pendulum " + " ".join(sys.argv[1:])
    how = (
        f"MetaSym (trained here: {args.n_tasks} train-range pendulums x {args.episodes} "
        f"episodes, {args.meta_steps} meta-steps, seed 0)"
        if args.checkpoint is None
        else f"the MetaSym checkpoint {args.checkpoint}"
    )
    report_experiment(
        summary, command.strip(), time.perf_counter() - t0, args.out, args.benchmarks, how
    )


if __name__ == "__main__":
    # run from the imported module, not __main__: the env's registered entry point imports it,
    # and two copies of PendulumParams would not recognise each other
    from metasym_control.examples import pendulum

    pendulum.main()
