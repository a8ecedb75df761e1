"""Open-loop error of a learned model on trajectories, in its own normalisation's units (the
fit report of a user's log and the learning tests; `evaluation` scores models in one fixed
unit instead)."""

from __future__ import annotations

from typing import Any

import torch

from metasym_control.trajectory import Trajectory
from metasym_control.windows import make_windows, to_batch


def rollout_error(model: Any, data: Trajectory, horizon: int) -> float:
    """RMS over every window of `data` of the `horizon`-step open-loop error, in units of the
    state std of the model's own normalisation (the fit report of a user's log)."""
    ref = next(iter(model.parameters()))
    w = to_batch(make_windows(data, model.history_len, horizon), None, ref.device, ref.dtype)
    with torch.no_grad():
        pred = model.predict_windows(w)
    err = (pred - w["y"]) / model.state_std
    return float(err.pow(2).mean().sqrt())


def constant_error(model: Any, data: Trajectory, horizon: int) -> float:
    """The same score for the "next state = state" predictor."""
    ref = next(iter(model.parameters()))
    w = to_batch(make_windows(data, model.history_len, horizon), None, ref.device, ref.dtype)
    err = (w["x0"].unsqueeze(-2) - w["y"]) / model.state_std
    return float(err.pow(2).mean().sqrt())
