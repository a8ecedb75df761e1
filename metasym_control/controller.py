"""The controller protocol and the history window a controller reads (interfaces only)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from metasym_control.dynamics import DynamicsModel


class History:
    """The L most recent transitions seen by a controller, oldest first.

    `states[i]`, `actions[i]` lead to `states[i+1]`; the last one leads to the current state.
    Slots before the first transition of an episode are marked invalid.
    """

    def __init__(self, length: int, state_dim: int, action_dim: int) -> None:
        self.length = length
        self.states = np.zeros((length, state_dim))
        self.actions = np.zeros((length, action_dim))
        self.valid = np.zeros(length, dtype=bool)

    def reset(self) -> None:
        """Forget everything (a new episode)."""
        self.states[:] = 0.0
        self.actions[:] = 0.0
        self.valid[:] = False

    def push(self, state: np.ndarray, action: np.ndarray) -> None:
        """Append the transition that started at `state` (nx,) with `action` (nu,)."""
        if self.length == 0:
            return
        self.states = np.roll(self.states, -1, axis=0)
        self.actions = np.roll(self.actions, -1, axis=0)
        self.valid = np.roll(self.valid, -1)
        self.states[-1] = state
        self.actions[-1] = action
        self.valid[-1] = True


@runtime_checkable
class Controller(Protocol):
    """A feedback policy built from a model, a task and its own config dataclass.

    Attributes:
        model: the dynamics model it predicts with; `set_model` swaps it (online adaptation).
        last_plan: (T, nx) states predicted by the latest `act`, or None.
        last_info: solver statistics and fallback reports of the latest `act`.
    """

    model: DynamicsModel | None
    last_plan: np.ndarray | None
    last_info: dict[str, Any]

    def reset(self) -> None:
        """Forget warm starts and counters (a new episode)."""
        ...

    def act(self, state: np.ndarray, t: float, history: History) -> np.ndarray:
        """Action (nu,) in [-1, 1] for `state` (nx,) at time `t` (s) given the recent history."""
        ...

    def set_model(self, model: DynamicsModel) -> None:
        """Use `model` from the next `act` on."""
        ...
