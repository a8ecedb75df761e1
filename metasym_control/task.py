"""The task interface: a reference in time, running and terminal costs in torch and CasADi."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch


class Task(ABC):
    """What a controller is asked to do on one environment.

    Costs are written twice, once in torch (batched, for MPPI and learning) and once in
    CasADi (symbolic, for gradient-based MPC); a test per environment checks that they agree
    at random points. Both take the reference state and action of the stage, so a solver can
    pass the reference along the horizon as parameters.

    Actions are always the environment's normalised actions in [-1, 1]; states are the
    environment's documented state vector (see its `get_state`).

    Attributes:
        state_dim: nx, the length of the state vector.
        action_dim: nu, the length of the action vector.
        state_lower: (nx,) lower state bounds (-inf where none), used as MPC constraints.
        state_upper: (nx,) upper state bounds (+inf where none).
    """

    state_dim: int
    action_dim: int

    @property
    def action_lower(self) -> np.ndarray:
        """(nu,) lower action bound; -1 in the normalised action space."""
        return -np.ones(self.action_dim)

    @property
    def action_upper(self) -> np.ndarray:
        """(nu,) upper action bound; +1 in the normalised action space."""
        return np.ones(self.action_dim)

    @property
    def state_lower(self) -> np.ndarray:
        """(nx,) lower state bounds; -inf (unconstrained) unless a task says otherwise."""
        return np.full(self.state_dim, -np.inf)

    @property
    def state_upper(self) -> np.ndarray:
        """(nx,) upper state bounds; +inf (unconstrained) unless a task says otherwise."""
        return np.full(self.state_dim, np.inf)

    @abstractmethod
    def reference(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference state and action at times `t`.

        Args:
            t: (T,) times in seconds from the start of the episode.

        Returns:
            x_ref (T, nx) and u_ref (T, nu), float64.
        """

    @abstractmethod
    def running_cost(
        self, x: torch.Tensor, u: torch.Tensor, x_ref: torch.Tensor, u_ref: torch.Tensor
    ) -> torch.Tensor:
        """Stage cost, batched in torch.

        Args:
            x: (..., nx) states.
            u: (..., nu) normalised actions.
            x_ref: (..., nx) reference states (broadcastable to `x`).
            u_ref: (..., nu) reference actions (broadcastable to `u`).

        Returns:
            (...) cost per stage, dimensionless, >= 0.
        """

    @abstractmethod
    def terminal_cost(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        """Terminal cost, batched in torch: x (..., nx), x_ref (..., nx) -> (...)."""

    @abstractmethod
    def running_cost_casadi(self, x: Any, u: Any, x_ref: Any, u_ref: Any) -> Any:
        """The same stage cost on CasADi column vectors (nx,1), (nu,1), (nx,1), (nu,1)."""

    @abstractmethod
    def terminal_cost_casadi(self, x: Any, x_ref: Any) -> Any:
        """The same terminal cost on CasADi column vectors (nx,1), (nx,1)."""

    def recoverable(self, state: np.ndarray) -> bool:
        """Whether a controller can still stop the system from `state` (nx,) before it leaves
        the task's safe set; the MPCs hand a step whose state is not recoverable to their
        fallback controller (`MPPIConfig.supervise`, `NMPCConfig.supervise`). True unless a
        task declares a safe set."""
        return True

    def tracking_error(self, x: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
        """Task-specific tracking error per stage, for RMSE tables.

        Args:
            x: (T, nx) states; x_ref: (T, nx) references.

        Returns:
            (T,) error, in the task's natural unit (m for positions by default: the norm of
            the difference of the first three components).
        """
        return np.linalg.norm(np.asarray(x)[..., :3] - np.asarray(x_ref)[..., :3], axis=-1)
