"""The base class of the project's environments: state access, task, action checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from metasym_control.params import Split, SystemParams
from metasym_control.task import Task


class SystemEnv(gym.Env[np.ndarray, np.ndarray]):
    """A Gymnasium environment of one physical system with a task and parameters.

    A subclass sets, in its constructor, `dt` (control period, s), `task`, `params`,
    `state_names`, `state_units` and `action_names`, and implements `get_state`,
    `set_state`; `reset(options={"params": p})` must use `p`, otherwise draw from the
    `split` range given to the constructor.
    """

    env_id: str = ""
    dt: float
    task: Task
    params: SystemParams
    split: Split = "train"
    state_names: list[str]
    state_units: list[str]
    action_names: list[str]

    def reset_options(
        self,
        options: dict[str, Any] | None,
        allowed: tuple[str, ...],
        params_type: type[SystemParams],
        draw: Callable[[], SystemParams],
    ) -> tuple[dict[str, Any], SystemParams]:
        """Check a reset's `options` and pick the episode's parameters.

        Args:
            options: the reset's options (None: none).
            allowed: the option keys this environment reads (e.g. "params", "state").
            params_type: the parameter class `options["params"]` must be.
            draw: the parameters when none are given (fixed, or drawn from the split).

        Returns:
            (a copy of the options, the parameters).

        Raises:
            ValueError: an unknown key, or `params` of another type (naming the env).
        """
        opts = dict(options or {})
        unknown = set(opts) - set(allowed)
        if unknown:
            raise ValueError(f"{self.env_id}: unknown reset options {sorted(unknown)}")
        p = opts.get("params")
        if p is None:
            return opts, draw()
        if not isinstance(p, params_type):
            raise ValueError(f"{self.env_id}: options['params'] must be a {params_type.__name__}")
        return opts, p

    def common_info(self, t: float, clipped: bool) -> dict[str, Any]:
        """The `info` keys every environment shares: `action_clipped` (bool: the action was
        clipped to [-1, 1]), `t` (s since the reset) and `params` (the frozen parameters in
        force); plus `clipped` and `time`, the old names of the first two in some envs, kept
        as aliases for one version (to be removed in 0.3)."""
        return {
            "action_clipped": bool(clipped),
            "t": float(t),
            "params": self.params,
            "clipped": bool(clipped),
            "time": float(t),
        }

    def get_state(self) -> np.ndarray:
        """(nx,) float64 Markov physical state, as documented by the environment."""
        raise NotImplementedError

    def set_state(self, state: np.ndarray) -> None:
        """Set the physical state from an (nx,) vector (inverse of `get_state`)."""
        raise NotImplementedError

    def check_action(self, action: Any) -> tuple[np.ndarray, bool]:
        """Validate and clip an action.

        Args:
            action: array-like of the action space's shape, normalised to [-1, 1].

        Returns:
            The float64 action clipped to the space, and whether clipping changed it.

        Raises:
            ValueError: wrong shape or a non-finite entry, naming the environment.
        """
        space = self.action_space
        assert isinstance(space, gym.spaces.Box)
        name = self.env_id or type(self).__name__
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: action {action!r} is not numeric") from e
        if a.shape != space.shape:
            raise ValueError(f"{name}: action of shape {a.shape}, expected {space.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: non-finite action {a.tolist()}")
        clipped = np.clip(a, space.low.astype(np.float64), space.high.astype(np.float64))
        return clipped, bool(np.any(clipped != a))
