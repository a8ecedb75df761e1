"""Toy oscillator task: regulate the oscillator to a target position at rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metasym_control.task import Task


@dataclass(frozen=True)
class OscillatorCostWeights:
    """Weights of the quadratic regulation cost.

    Attributes:
        position: weight of (q - q_ref)², 1/m².
        momentum: weight of (p - p_ref)², 1/(kg m/s)².
        action: weight of (u - u_ref)² (normalised action).
        terminal: multiplier of the state terms at the horizon's end.
    """

    position: float = 10.0
    momentum: float = 1.0
    action: float = 0.1
    terminal: float = 10.0


class OscillatorTask(Task):
    """Hold the oscillator at `q = target` at rest, with the action that holds it there.

    Cost per stage (dimensionless): `w_q (q - q_ref)² + w_p p² + w_u (u - u_ref)²`;
    terminal cost `terminal · (w_q (q - q_ref)² + w_p p²)`.

    Attributes:
        x_target: (2,) target state `[q_ref m, 0 kg m/s]`.
        u_target: (1,) normalised action holding the target against the spring.
        weights: cost weights.
    """

    state_dim = 2
    action_dim = 1

    def __init__(
        self,
        target: float,
        stiffness: float,
        gain: float,
        weights: OscillatorCostWeights | None = None,
    ) -> None:
        hold = stiffness * target / gain
        if not abs(hold) <= 1.0:
            raise ValueError(
                f"OscillatorTask: target {target} m needs the holding action {hold:.3f}, "
                "outside [-1, 1]"
            )
        self.x_target = np.array([float(target), 0.0])
        self.u_target = np.array([hold])
        self.weights = weights or OscillatorCostWeights()

    def reference(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Constant reference: x_ref (T, 2), u_ref (T, 1) for times t (T,) s."""
        n = np.asarray(t).reshape(-1).shape[0]
        return np.tile(self.x_target, (n, 1)), np.tile(self.u_target, (n, 1))

    def _state_cost(self, dq: Any, dp: Any) -> Any:
        w = self.weights
        return w.position * dq**2 + w.momentum * dp**2

    def running_cost(
        self, x: torch.Tensor, u: torch.Tensor, x_ref: torch.Tensor, u_ref: torch.Tensor
    ) -> torch.Tensor:
        """Stage cost: x (..., 2), u (..., 1), x_ref, u_ref broadcastable -> (...)."""
        d = x - x_ref
        return self._state_cost(d[..., 0], d[..., 1]) + self.weights.action * (
            (u - u_ref) ** 2
        ).sum(-1)

    def terminal_cost(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        """Terminal cost: x (..., 2), x_ref (..., 2) -> (...)."""
        d = x - x_ref
        return self.weights.terminal * self._state_cost(d[..., 0], d[..., 1])

    def running_cost_casadi(self, x: Any, u: Any, x_ref: Any, u_ref: Any) -> Any:
        """The stage cost on CasADi column vectors (2,1), (1,1), (2,1), (1,1)."""
        d = x - x_ref
        return self._state_cost(d[0], d[1]) + self.weights.action * (u[0] - u_ref[0]) ** 2

    def terminal_cost_casadi(self, x: Any, x_ref: Any) -> Any:
        """The terminal cost on CasADi column vectors (2,1), (2,1)."""
        d = x - x_ref
        return self.weights.terminal * self._state_cost(d[0], d[1])

    def cost_numpy(self, x: np.ndarray, u: np.ndarray) -> float:
        """Stage cost of one state (2,) and action (1,) against the target, for rewards."""
        return float(
            self._state_cost(x[0] - self.x_target[0], x[1])
            + self.weights.action * float(np.sum((u - self.u_target) ** 2))
        )

    def tracking_error(self, x: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
        """|q - q_ref| per stage, m: x (T, 2), x_ref (T, 2) -> (T,)."""
        return np.abs(np.asarray(x)[..., 0] - np.asarray(x_ref)[..., 0])
