"""The toy oscillator as a Gymnasium environment (exact linear step, no MuJoCo)."""

from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
import numpy as np

from metasym_control.envs.toy_oscillator.data import ACTION_NAMES, STATE_NAMES, STATE_UNITS
from metasym_control.envs.toy_oscillator.params import (
    TOY_DT,
    TOY_ENV_ID,
    OscillatorParams,
    sample_oscillator_params,
)
from metasym_control.envs.toy_oscillator.tasks import OscillatorTask
from metasym_control.params import Split
from metasym_control.system_env import SystemEnv


class ToyOscillatorEnv(SystemEnv):
    """A damped, driven oscillator `m q'' = -k q - c q' + gain · u` (ToyOscillator-v0).

    The smallest system of the project: the few-shot default (`--env toy`) and the test bed
    of the learning code. The step is the exact zero-order-hold discretisation of the linear
    ODE (`OscillatorParams.discrete`), so a learned model's error is its own.

    State (`get_state`, also the observation): `[q m, p = m q' kg m/s]`.
    Action: `u` in [-1, 1], a force of `gain · u` N (clipped; `info["action_clipped"]` says so).
    Reward: minus the task's stage cost (`OscillatorTask`), regulation to `q = target`.
    Termination: `|q| > max_position` m or a non-finite state.

    `reset(options=...)` keys: `params` (an `OscillatorParams`, else one is drawn from the
    `split` range), `state` ((2,) initial state, else `q, q'` uniform in [-1, 1]).

    Args:
        params: a fixed system for every episode (None: draw one per reset).
        split: "train" or "test" range to draw systems from.
        target: target position, m.
        dt: control period, s.
        max_position: |q| beyond which the episode terminates, m.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012
    env_id = TOY_ENV_ID
    task: OscillatorTask

    def __init__(
        self,
        params: OscillatorParams | None = None,
        split: Split = "train",
        target: float = 0.0,
        dt: float = TOY_DT,
        max_position: float = 10.0,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"{TOY_ENV_ID}: split must be 'train' or 'test', got {split!r}")
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"{TOY_ENV_ID}: dt must be > 0, got {dt}")
        if params is not None and not isinstance(params, OscillatorParams):
            raise ValueError(f"{TOY_ENV_ID}: params must be an OscillatorParams")
        self.fixed_params = params
        self.split = split
        self.target = float(target)
        self.dt = float(dt)
        self.max_position = float(max_position)
        self.state_names, self.state_units = list(STATE_NAMES), list(STATE_UNITS)
        self.action_names = list(ACTION_NAMES)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self._apply_params(params or OscillatorParams())
        self._x = np.zeros(2)
        self._t = 0.0

    def _apply_params(self, p: OscillatorParams) -> None:
        self.params = p
        self._a, self._b = p.discrete(self.dt)
        self.task = OscillatorTask(self.target, p.stiffness, p.gain)

    def get_state(self) -> np.ndarray:
        """(2,) float64 state `[q m, p kg m/s]`."""
        return self._x.copy()

    def set_state(self, state: np.ndarray) -> None:
        """Set the state from a (2,) vector `[q m, p kg m/s]`."""
        x = np.asarray(state, dtype=np.float64)
        if x.shape != (2,):
            raise ValueError(f"{TOY_ENV_ID}: state of shape {x.shape}, expected (2,)")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{TOY_ENV_ID}: non-finite state")
        self._x = x.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode (see the class doc for `options`)."""
        super().reset(seed=seed)

        def draw() -> OscillatorParams:
            return self.fixed_params or sample_oscillator_params(self.np_random, self.split)

        options, params = self.reset_options(options, ("params", "state"), OscillatorParams, draw)
        p = cast(OscillatorParams, params)
        self._apply_params(p)
        self._t = 0.0
        if options.get("state") is not None:
            self.set_state(options["state"])
        else:
            q, v = self.np_random.uniform(-1.0, 1.0, 2)
            self.set_state(np.array([q, p.mass * v]))
        return self.get_state(), self._info(False)

    def _info(self, clipped: bool) -> dict[str, Any]:
        err = self.task.tracking_error(self._x[None], self.task.x_target[None])[0]
        return {**self.common_info(self._t, clipped), "tracking_error": float(err)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one control period under `action` (1,)."""
        a, clipped = self.check_action(action)
        self._x = self._a @ self._x + self._b @ a
        self._t += self.dt
        info = self._info(clipped)
        reward = -self.task.cost_numpy(self._x, a)
        terminated = False
        if not np.all(np.isfinite(self._x)):
            terminated, info["reason"], reward = True, "non-finite state", -1e6
        elif abs(self._x[0]) > self.max_position:
            terminated, info["reason"] = True, "|q| beyond max_position"
        return self.get_state(), float(reward), terminated, False, info
