"""What both MPC controllers share: the history as a memory, plan checks and the fallback policy."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import torch

from metasym_control.controller import Controller, History
from metasym_control.dynamics import DynamicsModel, Memory
from metasym_control.task import Task

logger = logging.getLogger(__name__)

FallbackKind = Literal["none", "shifted_plan", "controller", "safe_action"]
FaultKind = Literal[
    "none", "non_finite", "untrusted", "solver_failed", "infeasible", "unrecoverable"
]


def model_device_dtype(
    model: DynamicsModel, device: str | torch.device | None, dtype: torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """Where a controller computes: the given device and dtype, else the model's own.

    A model that is a torch module with floating tensors lends its device and dtype (a
    float32 checkpoint is planned in float32); any other model computes on the CPU in
    float64.

    Args:
        model: the dynamics model.
        device: torch device asked for, or None for the model's.
        dtype: floating dtype asked for, or None for the model's.
    """
    tensors: list[torch.Tensor] = []
    if isinstance(model, torch.nn.Module):
        tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    own_device = tensors[0].device if tensors else torch.device("cpu")
    own_dtype = tensors[0].dtype if tensors else torch.float64
    return (
        torch.device(device) if device is not None else own_device,
        dtype if dtype is not None else own_dtype,
    )


def history_window(model: DynamicsModel, history: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's history window from the controller's history, padded at the old end.

    Args:
        model: the dynamics model; reads its last `model.history_len` transitions.
        history: a `metasym_control.controller.History` (states (L', nx), actions (L', nu), valid
            (L',)) or None; a shorter or missing window is padded with invalid slots.

    Returns:
        states (L, nx), actions (L, nu) and validity (L,) as 1.0 / 0.0, float64.
    """
    n = int(model.history_len)
    nx, nu = model.state_dim, model.action_dim
    states = np.zeros((n, nx))
    actions = np.zeros((n, nu))
    valid = np.zeros(n)
    if history is not None and n > 0 and getattr(history, "length", 0) > 0:
        m = min(n, int(history.length))
        states[n - m :] = np.asarray(history.states)[-m:]
        actions[n - m :] = np.asarray(history.actions)[-m:]
        valid[n - m :] = np.asarray(history.valid)[-m:]
    return states, actions, valid


def history_memory(
    model: DynamicsModel, history: Any, device: torch.device, dtype: torch.dtype
) -> Memory:
    """Encode the controller's history window with the model, once per control step.

    Args:
        model: the dynamics model; reads its last `model.history_len` transitions.
        history: a `metasym_control.controller.History` or None (see `history_window`).
        device, dtype: where the memory lives.

    Returns:
        The model's memory for a single history (no batch dimension).
    """
    states, actions, valid = history_window(model, history)
    return model.init_memory(
        torch.as_tensor(states, device=device, dtype=dtype),
        torch.as_tensor(actions, device=device, dtype=dtype),
        torch.as_tensor(valid > 0.5, device=device),
    )


def trusted_bounds(model: DynamicsModel) -> tuple[np.ndarray, np.ndarray] | None:
    """The model's declared trusted state region `(lower (nx,), upper (nx,))`, or None.

    A missing corner (None) is unbounded on that side; None where both are missing.
    """
    lo, hi = model.trusted_lower, model.trusted_upper
    if lo is None and hi is None:
        return None
    nx = int(model.state_dim)
    lo_a = np.full(nx, -np.inf) if lo is None else np.asarray(lo, dtype=np.float64).reshape(nx)
    hi_a = np.full(nx, np.inf) if hi is None else np.asarray(hi, dtype=np.float64).reshape(nx)
    return lo_a, hi_a


def check_plan(
    states: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    x0: np.ndarray | None = None,
    tolerance: np.ndarray | None = None,
) -> FaultKind:
    """Classify a predicted plan.

    Args:
        states: (T, nx) predicted states of the plan (the current state excluded).
        bounds: the model's trusted region or None.
        x0: (nx,) the measured state, or None. The region is widened per component to
            contain it: the vehicle is really there, so a plan is judged by whether it goes
            further out than the state already is (a state outside the region would
            otherwise make every plan untrusted and hand the loop to the fallback for as
            long as it stays out; the RTI QP's bounds are widened the same way).
        tolerance: (nx,) how far beyond the region a plan may go (None: not at all; the RTI
            MPC's soft region, `NMPCConfig.soft_trust`).

    Returns:
        "non_finite" if any prediction is NaN/inf, "untrusted" if a state leaves the
        (widened) trusted region, else "none".
    """
    if not np.all(np.isfinite(states)):
        return "non_finite"
    if bounds is not None:
        lo, hi = bounds
        if x0 is not None:
            lo, hi = np.minimum(lo, x0), np.maximum(hi, x0)
        if tolerance is not None:
            lo, hi = lo - tolerance, hi + tolerance
        if np.any(states < lo) or np.any(states > hi):
            return "untrusted"
    return "none"


def region_tolerance(
    bounds: tuple[np.ndarray, np.ndarray] | None, fraction: float
) -> np.ndarray | None:
    """How far (nx,) a plan may leave the trusted region `bounds` and still be flown:
    `fraction` of the region's span per component (0 where a side is unbounded); None (not
    at all) without a region or with `fraction` <= 0."""
    if bounds is None or fraction <= 0:
        return None
    span = bounds[1] - bounds[0]
    return fraction * np.where(np.isfinite(span), span, 0.0)


def unrecoverable(
    task: Task, state: np.ndarray, fallback: Controller | None, supervise: bool
) -> bool:
    """Whether a supervised MPC hands this step to its fallback controller: `state` (nx,)
    is one the task calls not recoverable (`Task.recoverable`) and there is a fallback
    controller to fly it (the safe action, a fixed command, would not brake)."""
    return supervise and fallback is not None and not task.recoverable(state)


def safe_action(task: Task, t: float) -> np.ndarray:
    """The documented safe action: the task's reference action at time `t` (hover, quadrotor).

    Args:
        task: the task; t: time in seconds.

    Returns:
        (nu,) action clipped to the task's action bounds.
    """
    _, u_ref = task.reference(np.array([t], dtype=np.float64))
    return np.clip(np.asarray(u_ref[0], dtype=np.float64), task.action_lower, task.action_upper)


class FallbackCounter:
    """Counts fallbacks over an episode and writes them into a controller's info dict."""

    def __init__(self) -> None:
        self.total = 0
        self.by_fault: dict[str, int] = {}

    def reset(self) -> None:
        """Forget the counts (a new episode)."""
        self.total = 0
        self.by_fault = {}

    def record(self, info: dict[str, Any], fallback: FallbackKind, fault: FaultKind) -> None:
        """Write `fallback` (what was used) and `fault` (why) into `info` and count them."""
        if fallback != "none":
            self.total += 1
            self.by_fault[fault] = self.by_fault.get(fault, 0) + 1
            logger.debug("MPC fallback %s after fault %s", fallback, fault)
        info["fallback"] = fallback
        info["fault"] = fault
        info["fallback_count"] = self.total
        info["fallback_counts"] = dict(self.by_fault)


def last_resort(
    fallback: Controller | None, task: Task, state: np.ndarray, t: float
) -> tuple[np.ndarray, FallbackKind]:
    """The action when no plan can be trusted: the fallback controller's, else the safe action.

    A fallback controller that stabilises the real system (the quadrotor's cascaded PD) keeps
    it flying; the safe action (the task's reference action, the nominal hover) does not
    answer a heavier vehicle or wind. A controller that raises or returns a non-finite action
    drops to the safe action (logged).

    Args:
        fallback: a `Controller` or None.
        task: the task (action bounds, reference action).
        state: (nx,) current state; t: time, s.

    Returns:
        (nu,) action within the bounds, and "controller" or "safe_action".
    """
    if fallback is not None:
        try:
            empty = History(0, task.state_dim, task.action_dim)  # a Markov fallback needs none
            u = np.asarray(fallback.act(state, t, empty), dtype=np.float64).reshape(-1)
            if u.shape == (task.action_dim,) and np.all(np.isfinite(u)):
                return np.clip(u, task.action_lower, task.action_upper), "controller"
            logger.warning("fallback controller returned %s; using the safe action", u)
        except Exception as exc:  # the last resort must not raise
            logger.warning("fallback controller raised %s: %s", type(exc).__name__, exc)
    return safe_action(task, t), "safe_action"
