"""The cost of action sequences under a model and a task: (K, T, nu) -> (K,).

Sampling planners (MPPI here; a cross-entropy method could share it) see only this
objective: it rolls the model out from the current state, adds the task's running and
terminal costs along the reference, and gives non-finite and untrusted samples infinite cost.
"""

from __future__ import annotations

import math

import torch

from metasym_control.dynamics import DynamicsModel, Memory, expand_memory
from metasym_control.task import Task


class SequenceObjective:
    """Costs of K action sequences from one state (a pure function of its inputs, so it
    compiles and runs inside a CUDA graph).

    Args:
        model: the dynamics model.
        task: the task giving the torch running and terminal costs.
        trusted: the model's trusted region (lower (nx,), upper (nx,)) as tensors on the
            rollout device: samples whose predicted states leave it cost +inf, unless no
            sample stays inside (then all keep their costs, so a plan check can fall back);
            None: no such check.
    """

    def __init__(
        self,
        model: DynamicsModel,
        task: Task,
        trusted: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.task = task
        self.trusted = trusted

    def __call__(
        self,
        x0: torch.Tensor,
        actions: torch.Tensor,
        memory: Memory,
        x_ref: torch.Tensor,
        u_ref: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score action sequences.

        Args:
            x0: (nx,) current state.
            actions: (K, T, nu) action sequences (already within the action bounds).
            memory: the model's memory of one history (no batch dimension).
            x_ref: (T+1, nx) reference states; u_ref: (T+1, nu) reference actions.

        Returns:
            Costs (K,) (+inf for non-finite or untrusted predictions) and the predicted
            states (K, T, nx), x0 excluded.
        """
        k = actions.shape[0]
        xs = self.model.rollout(x0.expand(k, -1), actions, expand_memory(memory, (k,)))
        return self.score(x0, actions, xs, x_ref, u_ref), xs

    def score(
        self,
        x0: torch.Tensor,
        actions: torch.Tensor,
        xs: torch.Tensor,
        x_ref: torch.Tensor,
        u_ref: torch.Tensor,
    ) -> torch.Tensor:
        """Costs of predicted trajectories (the part of `__call__` after the rollout).

        Args:
            x0: (nx,) current state; actions: (K, T, nu); xs: (K, T, nx) predicted states,
            x0 excluded; x_ref: (T+1, nx); u_ref: (T+1, nu).

        Returns:
            (K,) costs, +inf for non-finite or untrusted predictions.
        """
        k = actions.shape[0]
        x_all = torch.cat([x0.expand(k, 1, -1), xs], dim=1)  # (K, T+1, nx)
        stage = self.task.running_cost(x_all[:, :-1], actions, x_ref[:-1], u_ref[:-1])  # (K, T)
        costs = stage.sum(-1) + self.task.terminal_cost(x_all[:, -1], x_ref[-1])  # (K,)
        costs = torch.where(torch.isfinite(costs), costs, torch.full_like(costs, math.inf))
        if self.trusted is not None:  # untrusted samples cost +inf: a softmin weighs them 0
            # widened to contain the measured state, as the plan check is (`check_plan`)
            lo, hi = torch.minimum(self.trusted[0], x0), torch.maximum(self.trusted[1], x0)
            out = ((xs < lo) | (xs > hi)).flatten(1).any(dim=1)  # (K,)
            drop = out & ~out.all()  # none trusted: weigh all, the plan check falls back
            costs = torch.where(drop, torch.full_like(costs, math.inf), costs)
        return costs
