"""Offset-free MPC: a constant additive disturbance on the model's step, estimated online.

A model that is wrong by a steady force (a heavier vehicle's missing weight, a wind it does
not know) leaves an MPC with a steady tracking offset, however the model is learned or
adapted. The classic remedy (offset-free MPC: Muske and Badgwell 2002, Pannocchia and
Rawlings 2003) predicts with `x_{k+1} = f(x_k, u_k) + d` and estimates the disturbance d
from the model's one-step prediction errors. Both MPCs take it as an option
(`MPPIConfig.disturbance_gain`, `NMPCConfig.disturbance_gain`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from metasym_control.controllers.common import history_memory
from metasym_control.dynamics import AdaptBudget, DynamicsModel, Memory, rollout_by_steps
from metasym_control.trajectory import Trajectory

logger = logging.getLogger(__name__)


def check_disturbance_options(owner: str, gain: float, index: Sequence[int] | None) -> None:
    """Validate a config's disturbance gain (in [0, 1]) and component indices (>= 0, unique).

    Raises:
        ValueError naming `owner` (the config class) and the bad value.
    """
    if not 0.0 <= gain <= 1.0:
        raise ValueError(f"{owner}.disturbance_gain must lie in [0, 1], got {gain}")
    if index is not None and (len(index) == 0 or min(index) < 0 or len(set(index)) != len(index)):
        raise ValueError(
            f"{owner}.disturbance_index must be unique indices >= 0 (or None), got {index}"
        )


class DisturbanceObserver:
    """The disturbance d (nx,) of `x_{k+1} = f(x_k, u_k) + d`, from one-step prediction errors.

    Every control step `correct(x, t)` moves d by `gain` times the error of the previous
    step's corrected prediction (an integrator on the innovation: a constant model error is
    taken out completely, at a rate set by `gain`), and `expect(model, x, u, memory, t)`
    records the prediction for the next step. A step that does not follow the recorded one
    by one control period leaves d as it is. A controller that flies only now and then (a
    fallback) keeps its estimate current through `observe`, fed with the steps another
    controller chose. Components outside `index` stay 0.

    Args:
        gain: in (0, 1]; the share of each innovation taken into d.
        nx: state dimension.
        dt: control period (s).
        index: the state components that carry a disturbance (None: all).
        device, dtype: of `bias`.

    Attributes:
        bias: (nx,) the current estimate, a tensor updated in place (a model wrapped in
            `OffsetModel`, a compiled function or a captured CUDA graph see every update).
    """

    def __init__(
        self,
        gain: float,
        nx: int,
        dt: float,
        index: Sequence[int] | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        if index is not None and max(index) >= nx:
            raise ValueError(f"disturbance_index {tuple(index)} out of range for {nx} states")
        self.gain = gain
        self.dt = dt
        mask = np.ones(nx) if index is None else np.isin(np.arange(nx), index).astype(float)
        self._mask = mask
        self.bias = torch.zeros(nx, device=device, dtype=dtype)
        self._expected: np.ndarray | None = None  # (nx,) prediction of the next state
        self._t_next: float | None = None  # when that prediction applies (s)

    def reset(self) -> None:
        """Forget the estimate (a new episode)."""
        self.bias.zero_()
        self._expected = None
        self._t_next = None

    def correct(self, x: np.ndarray, t: float) -> None:
        """Take the measured state x (nx,) at time t (s) into the estimate (once per step:
        the prediction is used up)."""
        expected, t_next = self._expected, self._t_next
        self._expected = None
        if expected is None or t_next is None or abs(t - t_next) > 0.5 * self.dt:
            return  # nothing predicted for this step
        innovation = self.gain * self._mask * (np.asarray(x, dtype=np.float64) - expected)
        if np.all(np.isfinite(innovation)):
            self.bias += torch.as_tensor(innovation, device=self.bias.device, dtype=self.bias.dtype)

    def expect(
        self, model: DynamicsModel, x: np.ndarray, u: np.ndarray, memory: Memory, t: float
    ) -> None:
        """Record the corrected prediction f(x, u) + d of the state at t + dt.

        Args:
            model: the controller's model (without the disturbance).
            x: (nx,) state at t; u: (nu,) the action applied; memory: the model's memory of
            this step's history (one history, no batch dimension); t: time (s).
        """
        dev, dt = self.bias.device, self.bias.dtype
        try:
            with torch.no_grad():
                xt = torch.as_tensor(np.asarray(x, dtype=np.float64), device=dev, dtype=dt)[None]
                ut = torch.as_tensor(np.asarray(u, dtype=np.float64), device=dev, dtype=dt)[None]
                y, _ = model.step(xt, ut, memory)
            pred = (y[0] + self.bias).cpu().double().numpy()
        except Exception as exc:  # a controller's act never raises: no update this step
            logger.warning("disturbance observer: the step raised %s: %s", type(exc).__name__, exc)
            self._expected = None
            return
        self.expect_state(pred, t)

    def expect_state(self, prediction: np.ndarray, t: float) -> None:
        """Record an already corrected prediction f(x, u) + d (nx,) of the state at t + dt
        (e.g. the first state of a plan rolled out with d); a non-finite one is ignored."""
        finite = np.all(np.isfinite(prediction))
        self._expected = np.asarray(prediction, dtype=np.float64).copy() if finite else None
        self._t_next = t + self.dt

    def observe(
        self, model: DynamicsModel, x: np.ndarray, u: np.ndarray, t: float, history: Any
    ) -> None:
        """One step flown, whoever chose u: `correct(x, t)`, then `expect` from the model's
        memory of `history` (the `History` before x, or None).

        A controller used as a fallback flies only the refused steps; fed every step through
        this (its `observe`), it flies those with a current estimate.
        """
        self.correct(x, t)
        with torch.no_grad():
            memory = history_memory(model, history, self.bias.device, self.bias.dtype)
        self.expect(model, x, u, memory, t)


def observe_fallback(
    fallback: object, state: np.ndarray, action: np.ndarray, t: float, history: object
) -> None:
    """Show a fallback controller the step just flown, if it keeps a disturbance estimate
    (its `observe`); it then flies with a current estimate when it is called.

    Args:
        fallback: any controller or None; state: (nx,); action: (nu,) applied at t (s);
        history: the `History` the fallback is given (a Markov fallback: an empty one).
    """
    observe = getattr(fallback, "observe", None)
    if callable(observe):
        try:
            observe(state, action, t, history)
        except Exception as exc:  # the controller's act must not raise for its fallback
            logger.warning("fallback's observe raised %s: %s", type(exc).__name__, exc)


class OffsetModel:
    """`model` with a disturbance added to every step: `x_{k+1} = f(x_k, u_k) + bias`.

    A `DynamicsModel` for the controllers' torch rollouts; everything else (dimensions,
    history, trusted region, memory) is the wrapped model's.

    Args:
        model: the wrapped model.
        bias: (nx,) tensor on the model's device, read at every step (updated in place by a
            `DisturbanceObserver`).
    """

    def __init__(self, model: DynamicsModel, bias: torch.Tensor) -> None:
        self.model = model
        self.bias = bias
        self.state_dim = model.state_dim
        self.action_dim = model.action_dim
        self.dt = model.dt
        self.history_len = model.history_len

    @property
    def trusted_lower(self) -> np.ndarray | None:
        """(nx,) the wrapped model's trusted lower corner, or None."""
        return self.model.trusted_lower

    @property
    def trusted_upper(self) -> np.ndarray | None:
        """(nx,) the wrapped model's trusted upper corner, or None."""
        return self.model.trusted_upper

    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """The wrapped model's memory of the window: states (..., L, nx), actions (..., L, nu)."""
        return self.model.init_memory(states, actions, valid)

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """x (..., nx), u (..., nu) -> f(x, u) + bias (..., nx) and the new memory."""
        y, memory = self.model.step(x, u, memory)
        return y + self.bias, memory

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor, memory: Memory) -> torch.Tensor:
        """T corrected steps: x0 (..., nx), actions (..., T, nu) -> (..., T, nx), x0 excluded."""
        return rollout_by_steps(self, x0, actions, memory)

    def adapt(self, support: Trajectory, budget: AdaptBudget) -> DynamicsModel:
        """The wrapped model adapted to `support` (the disturbance is the controller's)."""
        return self.model.adapt(support, budget)
