"""The functional inner loop that adapts the fast weights of every learned model.

The same loop serves adaptation (`adapt_model`) and meta-training's inner loop, so a model
is adapted at use under the rules it was meta-trained with. It works on any `torch.nn.Module`
whose forward maps a batch of windows to a scalar loss (`LearnedModel.forward`).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn
from torch.func import functional_call

from metasym_control.dynamics import AdaptBudget
from metasym_control.trajectory import Trajectory
from metasym_control.windows import Batch, make_windows, num_windows, to_batch, window_sampler

logger = logging.getLogger(__name__)

Params = dict[str, torch.Tensor]

# Adam constants of the inner loop; eps sits inside the square root so the update stays
# differentiable (second-order meta-gradients) where a gradient is exactly zero.
_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8


@runtime_checkable
class FastWeightModel(Protocol):
    """What `adapt_model` needs of a module besides `torch.nn.Module` itself.

    Attributes:
        state_dim: nx; action_dim: nu; dt: control period (s); history_len: L.
    """

    state_dim: int
    action_dim: int
    dt: float
    history_len: int

    def fast_weight_names(self) -> list[str]:
        """Names (as in `named_parameters`) of the weights adapted per system."""
        ...


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def inner_loop(
    model: nn.Module,
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
        model: the architecture, whose forward maps a batch to a scalar loss (its own
            parameter values are not used).
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
    if steps == 0 or not fast:  # no fast weights (MetaSym's fast_set "none"): nothing adapts
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


def model_params(model: nn.Module, detach: bool = True) -> Params:
    """Every parameter and buffer of `model` by name, as views (parameters detached, unless
    not `detach`)."""
    out = {n: (p.detach() if detach else p) for n, p in model.named_parameters()}
    out.update(dict(model.named_buffers()))
    return out


def adapt_model(model: ModuleT, support: Trajectory, budget: AdaptBudget) -> ModuleT:
    """Fit a copy of `model`'s fast weights to `support`; `model` is left untouched.

    The same inner loop for every learned model (the budget is the same for all models
    compared): `budget.inner_steps` steps of `budget.optimizer` at `budget.lr` on the
    `budget.horizon`-step rollout loss of the support windows (`budget.batch_windows` per step,
    0 = all, drawn with `budget.seed`).

    Args:
        model: a module with the `FastWeightModel` attributes (a learned model).
        support: the adaptation data (trajectories of one system).
        budget: the adaptation budget.

    Returns:
        A deep copy with the adapted fast weights.

    Raises:
        TypeError: the module lacks the `FastWeightModel` attributes.
        ValueError: the support data is of another shape or has no window of `horizon` steps.
    """
    if not isinstance(model, FastWeightModel):
        raise TypeError(f"adapt_model needs a FastWeightModel, got {type(model).__name__}")
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
    names = model.fast_weight_names()
    fitted: nn.Module = model
    if budget.free_offset:
        fitted = FreeOffset(model, mean_step_error(model, support))
        names = [f"model.{n}" for n in names] + ["offset"]
    fast = inner_loop(
        fitted,
        model_params(fitted),
        names,
        batch_fn,
        budget.inner_steps,
        budget.lr,
        budget.optimizer,
    )
    adapted = copy.deepcopy(model)
    with torch.no_grad():
        own = dict(adapted.named_parameters())
        for n, w in fast.items():
            if n != "offset":  # the free offset is dropped
                own[n.removeprefix("model.") if budget.free_offset else n].copy_(w.detach())
    return adapted


class FreeOffset(nn.Module):
    """The rollout loss of `model` plus a constant per-step offset: the fitted module of
    `AdaptBudget.free_offset`.

    Predicts `x_{k+1} = f(x_k, u_k) + d` step by step and scores it as the model's own
    forward does (squared error in one-step-change stds, mean). The offset is a parameter in
    those std units, so the inner optimiser moves every component alike.

    Args:
        model: a learned model (its `delta_std` buffer and `step`, `init_memory`).
        offset: (nx,) the starting offset, state units.
    """

    def __init__(self, model: nn.Module, offset: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        std: Any = model.delta_std
        self.offset = nn.Parameter(offset / std)

    def forward(self, batch: Batch) -> torch.Tensor:
        """The scalar loss of a batch of windows."""
        m: Any = self.model
        d = self.offset * m.delta_std
        memory = m.init_memory(batch["hs"], batch["ha"], batch["hv"])
        x, preds = batch["x0"], []
        for k in range(batch["ua"].shape[-2]):
            x, memory = m.step(x, batch["ua"][..., k, :], memory)
            x = x + d
            preds.append(x)
        err = (torch.stack(preds, dim=-2) - batch["y"]) / m.delta_std
        return err.pow(2).mean()


def mean_step_error(model: nn.Module, data: Trajectory) -> torch.Tensor:
    """(nx,) mean one-step prediction error (measured minus predicted, state units) of
    `model` over `data`'s valid transitions."""
    m: Any = model
    ref = next(iter(model.parameters()))
    windows = make_windows(data, m.history_len, 1)
    b = to_batch(windows, None, ref.device, ref.dtype)
    with torch.no_grad():
        memory = m.init_memory(b["hs"], b["ha"], b["hv"])
        y, _ = m.step(b["x0"], b["ua"][..., 0, :], memory)
        return (b["y"][..., 0, :] - y).mean(dim=0)
