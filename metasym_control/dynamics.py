"""The dynamics-model protocol shared by analytic models, MetaSym and every baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from metasym_control.trajectory import Trajectory

# A model's memory: tensors that share the caller's leading batch dimensions (the raw
# history window, its validity mask, any cache derived from it). A plain dict, so a
# controller can expand it to K samples and torch.func can differentiate through it.
Memory = dict[str, torch.Tensor]


@dataclass(frozen=True)
class AdaptBudget:
    """The adaptation budget, identical for every model compared.

    Attributes:
        inner_steps: gradient steps on the fast weights (analytic models: ignored, they solve
            a least-squares problem in closed form).
        lr: learning rate of the inner optimiser.
        optimizer: "sgd" (the MAML inner loop) or "adam".
        batch_windows: windows of length `history_len + horizon` drawn from the support data per
            step; 0 uses every window.
        horizon: rollout length of the adaptation loss, in control steps.
        seed: seed of the window draws, so adaptation is reproducible.
        free_offset: learned models: fit a constant per-step offset d (nx,) together with
            the fast weights (`x_{k+1} = f(x_k, u_k) + d` in the loss, d started at the
            support's mean one-step error) and drop it afterwards, so the fast weights learn
            only what a constant disturbance cannot explain. For offset-free MPC, whose
            observer supplies the constant (`controllers/offset.py`); without an observer the
            adapted model would miss it.
    """

    inner_steps: int = 10
    lr: float = 1e-2
    optimizer: Literal["sgd", "adam"] = "adam"
    batch_windows: int = 0
    horizon: int = 1
    seed: int = 0
    free_offset: bool = False

    def __post_init__(self) -> None:
        if self.inner_steps < 0:
            raise ValueError(f"AdaptBudget.inner_steps must be >= 0, got {self.inner_steps}")
        if not self.lr > 0:
            raise ValueError(f"AdaptBudget.lr must be > 0, got {self.lr}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"AdaptBudget.optimizer must be 'sgd' or 'adam': {self.optimizer!r}")
        if self.horizon < 1:
            raise ValueError(f"AdaptBudget.horizon must be >= 1, got {self.horizon}")


@runtime_checkable
class DynamicsModel(Protocol):
    """A discrete-time model `x_{k+1} = f(x_k, u_k; memory)` over torch tensors.

    Every method takes any leading batch dimensions `...`. Actions are the environment's
    normalised actions in [-1, 1]. Prediction never mutates the model.

    Attributes:
        state_dim: nx.
        action_dim: nu.
        dt: control period in seconds.
        history_len: L, the number of past transitions the model reads (0 for Markov models).
        trusted_lower, trusted_upper: (nx,) corners of the state box in which the model's
            predictions are trusted (a learned model: its training data's range, widened),
            or None where the model is valid everywhere. Controllers treat predictions
            outside the box as faults.
    """

    state_dim: int
    action_dim: int
    dt: float
    history_len: int

    @property
    def trusted_lower(self) -> np.ndarray | None:
        """(nx,) lower corner of the trusted state box, or None (valid everywhere)."""
        ...

    @property
    def trusted_upper(self) -> np.ndarray | None:
        """(nx,) upper corner of the trusted state box, or None (valid everywhere)."""
        ...

    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """Encode the recent history once per control step.

        The window holds the L transitions before the current state: `states[..., i, :]` and
        `actions[..., i, :]` lead to `states[..., i+1, :]`, and the last one leads to the
        current state that `step` then receives.

        Args:
            states: (..., L, nx) past states, oldest first.
            actions: (..., L, nu) past actions.
            valid: (..., L) bool, False for padding at the start of an episode; None = all valid.

        Returns:
            Memory whose tensors share the leading dimensions `...`.
        """
        ...

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """One control step: x (..., nx), u (..., nu) -> x_next (..., nx) and the new memory."""
        ...

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Predict T steps: x0 (..., nx), actions (..., T, nu) -> (..., T, nx), x0 excluded."""
        ...

    def adapt(self, support: Trajectory, budget: AdaptBudget) -> DynamicsModel:
        """A model adapted to the system that produced `support`; `self` is left untouched."""
        ...


@runtime_checkable
class SymbolicModel(Protocol):
    """A model that can also be written in CasADi (the analytic models).

    `casadi_step` must implement exactly the same discrete map as the torch `step` (same
    integrator, same substeps), so a CasADi MPC and a torch MPPI see the same model.
    """

    def casadi_step(self, x: Any, u: Any) -> Any:
        """Symbolic step: CasADi (nx, 1) state and (nu, 1) action -> (nx, 1) next state."""
        ...


def expand_memory(memory: Memory, batch_shape: tuple[int, ...]) -> Memory:
    """Broadcast a memory with no batch dimension (or leading dims of size 1) to `batch_shape`.

    Args:
        memory: tensors of shape (*rest) — the memory of a single history.
        batch_shape: new leading dimensions, e.g. (K,) for K planner samples.

    Returns:
        Tensors of shape (*batch_shape, *rest), as views (no copies).
    """
    return {k: v.expand(*batch_shape, *v.shape) for k, v in memory.items()}


def rollout_by_steps(
    model: DynamicsModel, x0: torch.Tensor, actions: torch.Tensor, memory: Memory
) -> torch.Tensor:
    """Reference rollout by repeated `step`: x0 (..., nx), actions (..., T, nu) -> (..., T, nx)."""
    xs = []
    x = x0
    for k in range(actions.shape[-2]):
        x, memory = model.step(x, actions[..., k, :], memory)
        xs.append(x)
    return torch.stack(xs, dim=-2)
