"""Training windows and the shared functional inner loop that adapts every learned model."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.func import functional_call

from metasym_control.dynamics import AdaptBudget
from metasym_control.trajectory import Trajectory

if TYPE_CHECKING:
    from metasym_control.models.learned import LearnedModel

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
Params = dict[str, torch.Tensor]

# Adam constants of the inner loop; eps sits inside the square root so the update stays
# differentiable (second-order meta-gradients) where a gradient is exactly zero.
_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8


def make_windows(traj: Trajectory, history_len: int, horizon: int) -> dict[str, np.ndarray]:
    """Every (history, future) window of a trajectory set, as numpy arrays.

    A window is anchored at a current state index c with c + horizon <= length: its history
    holds the `history_len` transitions before c (slots before the episode start are padded
    with the first state and marked invalid), its future the next `horizon` actions and states.

    Args:
        traj: N trajectories.
        history_len: L.
        horizon: H, rollout length of the loss.

    Returns:
        Dict with hs (B, L, nx), ha (B, L, nu), hv (B, L) bool, x0 (B, nx), ua (B, H, nu),
        y (B, H, nx); B may be 0 if every trajectory is shorter than `horizon`.
    """
    ii: list[np.ndarray] = []
    cc: list[np.ndarray] = []
    for k in range(traj.num):
        n = int(traj.lengths[k]) - horizon + 1
        if n > 0:
            ii.append(np.full(n, k))
            cc.append(np.arange(n))
    nx, nu, L = traj.state_dim, traj.action_dim, history_len
    if not ii:
        return {
            "hs": np.zeros((0, L, nx)),
            "ha": np.zeros((0, L, nu)),
            "hv": np.zeros((0, L), dtype=bool),
            "x0": np.zeros((0, nx)),
            "ua": np.zeros((0, horizon, nu)),
            "y": np.zeros((0, horizon, nx)),
        }
    i: np.ndarray = np.concatenate(ii)
    c: np.ndarray = np.concatenate(cc)
    hidx = c[:, None] - L + np.arange(L)[None, :]  # (B, L)
    hv = hidx >= 0
    hclip = np.maximum(hidx, 0)
    fidx = c[:, None] + np.arange(horizon)[None, :]  # (B, H)
    return {
        "hs": traj.states[i[:, None], hclip],
        "ha": np.where(hv[..., None], traj.actions[i[:, None], hclip], 0.0),
        "hv": hv,
        "x0": traj.states[i, c],
        "ua": traj.actions[i[:, None], fidx],
        "y": traj.states[i[:, None], fidx + 1],
    }


def to_batch(
    windows: dict[str, np.ndarray],
    index: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Batch:
    """Numpy windows (optionally the rows `index`) as torch tensors on `device` / `dtype`."""
    out = {}
    for k, v in windows.items():
        a = v if index is None else v[index]
        t = torch.as_tensor(np.ascontiguousarray(a), device=device)
        out[k] = t if k == "hv" else t.to(dtype)
    return out


def num_windows(windows: dict[str, np.ndarray]) -> int:
    """B, the number of windows."""
    return int(windows["x0"].shape[0])


def window_sampler(
    windows: dict[str, np.ndarray],
    batch_windows: int,
    seed: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Callable[[int], Batch]:
    """A function step -> batch: every window (batch_windows = 0) or a seeded random draw.

    The draw for step s depends only on (seed, s), so adaptation and distributed
    meta-training reproduce exactly.
    """
    n = num_windows(windows)
    if batch_windows <= 0 or batch_windows >= n:
        full = to_batch(windows, None, device, dtype)
        return lambda _s: full

    def draw(s: int) -> Batch:
        rng = np.random.default_rng([seed, s])
        return to_batch(windows, rng.choice(n, batch_windows, replace=False), device, dtype)

    return draw


def inner_loop(
    model: LearnedModel,
    params: Params,
    fast_names: list[str],
    batch_fn: Callable[[int], Batch],
    steps: int,
    lr: float,
    optimizer: str = "sgd",
    create_graph: bool = False,
) -> Params:
    """Functional gradient steps on the fast weights.

    Args:
        model: the architecture (its own parameter values are not used).
        params: every parameter and buffer by name; `params[n]` for n in `fast_names` are the
            starting fast weights. If they require grad, the result stays differentiable with
            respect to them (exactly, with `create_graph`; first-order otherwise, because the
            gradients are then detached and the update has an identity Jacobian).
        fast_names: names of the fast weights.
        batch_fn: step index -> batch of windows.
        steps: inner gradient steps.
        lr: step size.
        optimizer: "sgd" or "adam" (functional Adam, bias-corrected).
        create_graph: keep the graph of the gradients (second-order meta-gradients).

    Returns:
        The adapted fast weights by name.
    """
    fast = {n: params[n] for n in fast_names}
    if steps == 0:
        return fast
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"inner optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    m = {n: torch.zeros_like(w) for n, w in fast.items()}
    v = {n: torch.zeros_like(w) for n, w in fast.items()}
    for s in range(steps):
        # the loss with the current fast weights bound in
        with torch.enable_grad():
            ws = {n: w if w.requires_grad else w.detach().requires_grad_() for n, w in fast.items()}
            loss = functional_call(model, {**params, **ws}, (batch_fn(s),))
            raw = torch.autograd.grad(
                loss, list(ws.values()), create_graph=create_graph, allow_unused=True
            )
            grads = [torch.zeros_like(w) if g is None else g for w, g in zip(ws.values(), raw)]
        # the update (gradients detached unless second order)
        new = {}
        for (n, w), g in zip(ws.items(), grads):
            if not create_graph:
                g = g.detach()
            if optimizer == "sgd":
                new[n] = w - lr * g
            else:
                m[n] = _ADAM_B1 * m[n] + (1 - _ADAM_B1) * g
                v[n] = _ADAM_B2 * v[n] + (1 - _ADAM_B2) * g * g
                mhat = m[n] / (1 - _ADAM_B1 ** (s + 1))
                vhat = v[n] / (1 - _ADAM_B2 ** (s + 1))
                new[n] = w - lr * mhat / torch.sqrt(vhat + _ADAM_EPS**2)
        fast = new
    return fast


def model_params(model: LearnedModel, detach: bool = True) -> Params:
    """Every parameter and buffer of `model` by name (detached copies of nothing: views)."""
    out = {n: (p.detach() if detach else p) for n, p in model.named_parameters()}
    out.update(dict(model.named_buffers()))
    return out


def adapt_model(model: LearnedModel, support: Trajectory, budget: AdaptBudget) -> LearnedModel:
    """Fit a copy of `model`'s fast weights to `support`; `model` is left untouched.

    The same inner loop for every learned model (the budget is the same for all models
    compared): `budget.inner_steps` steps of `budget.optimizer` at `budget.lr` on the
    `budget.horizon`-step rollout loss of the support windows (`budget.batch_windows` per step,
    0 = all, drawn with `budget.seed`).

    Args:
        model: a learned model.
        support: the adaptation data (trajectories of one system).
        budget: the adaptation budget.

    Returns:
        A deep copy with the adapted fast weights.

    Raises:
        ValueError: the support data is of another shape or has no window of `horizon` steps.
    """
    if support.state_dim != model.state_dim or support.action_dim != model.action_dim:
        raise ValueError(
            f"support data has nx={support.state_dim}, nu={support.action_dim}; model "
            f"expects nx={model.state_dim}, nu={model.action_dim}"
        )
    if not math.isclose(support.dt, model.dt, rel_tol=1e-9):
        logger.warning("support data dt=%g differs from the model's dt=%g", support.dt, model.dt)
    windows = make_windows(support, model.history_len, budget.horizon)
    if num_windows(windows) == 0:
        raise ValueError(f"support data has no window of {budget.horizon} transitions")
    ref = next(iter(model.parameters()))
    batch_fn = window_sampler(windows, budget.batch_windows, budget.seed, ref.device, ref.dtype)
    params = model_params(model)
    fast = inner_loop(
        model,
        params,
        model.fast_weight_names(),
        batch_fn,
        budget.inner_steps,
        budget.lr,
        budget.optimizer,
    )
    adapted = copy.deepcopy(model)
    with torch.no_grad():
        own = dict(adapted.named_parameters())
        for n, w in fast.items():
            own[n].copy_(w.detach())
    return adapted
