"""Spring-mesh tasks: settle to rest or hold the bottom edge displaced, with their costs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import casadi as ca
import numpy as np
import torch

from metasym_control.envs.spring_mesh.params import SpringMeshParams
from metasym_control.envs.spring_mesh.physics import (
    action_dim,
    rest_state,
    spring_forces,
    state_dim,
    static_equilibrium,
)
from metasym_control.task import Task


@dataclass(frozen=True)
class SpringMeshCostWeights:
    """Weights of the quadratic mesh cost (per stage; each term is a mean over its entries).

    Attributes:
        position: weight of the mean squared position error, 1/m².
        momentum: weight of the mean squared momentum error, 1/(kg·m/s)².
        action: weight of the mean squared normalised action deviation from `u_ref`.
        terminal: multiplier of the position and momentum terms at the horizon's end.
    """

    position: float = 10.0
    momentum: float = 1.0
    action: float = 0.1
    terminal: float = 10.0


class SpringMeshTask(Task):
    """A constant target configuration `(q_ref, p_ref = 0)` with holding action `u_ref`.

    Cost per stage (dimensionless):
    `w_q · mean((q - q_ref)²) + w_p · mean((p - p_ref)²) + w_u · mean((u - u_ref)²)`,
    terminal cost `terminal · (w_q · mean((q - q_ref)²) + w_p · mean((p - p_ref)²))`.

    Attributes:
        params: the system the target was computed for.
        x_target: (nx,) target state.
        u_target: (nu,) normalised action that holds the target (0 when none is needed).
        weights: cost weights.
    """

    name: str = "target"

    def __init__(
        self,
        params: SpringMeshParams,
        x_target: np.ndarray,
        u_target: np.ndarray,
        weights: SpringMeshCostWeights | None = None,
    ) -> None:
        self.params = params
        self.state_dim = state_dim(params)
        self.action_dim = action_dim(params)
        self.x_target = np.asarray(x_target, dtype=np.float64).copy()
        self.u_target = np.asarray(u_target, dtype=np.float64).copy()
        if self.x_target.shape != (self.state_dim,) or self.u_target.shape != (self.action_dim,):
            raise ValueError(
                f"{type(self).__name__}: target shapes {self.x_target.shape}, "
                f"{self.u_target.shape}; expected ({self.state_dim},), ({self.action_dim},)"
            )
        self.weights = weights or SpringMeshCostWeights()
        self._n2 = 2 * params.layout.n_free

    def reference(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Constant reference: x_ref (T, nx), u_ref (T, nu) for times t (T,) s."""
        n = np.asarray(t).reshape(-1).shape[0]
        return np.tile(self.x_target, (n, 1)), np.tile(self.u_target, (n, 1))

    def _state_terms(self, x: Any, x_ref: Any) -> Any:
        w, n2 = self.weights, self._n2
        dq = x[..., :n2] - x_ref[..., :n2]
        dp = x[..., n2:] - x_ref[..., n2:]
        return w.position * (dq * dq).sum(-1) / n2 + w.momentum * (dp * dp).sum(-1) / n2

    def running_cost(
        self, x: torch.Tensor, u: torch.Tensor, x_ref: torch.Tensor, u_ref: torch.Tensor
    ) -> torch.Tensor:
        """Stage cost: x (..., nx), u (..., nu), x_ref, u_ref broadcastable -> (...)."""
        du = u - u_ref
        return (
            self._state_terms(x, x_ref) + self.weights.action * (du * du).sum(-1) / self.action_dim
        )

    def terminal_cost(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        """Terminal cost: x (..., nx), x_ref (..., nx) -> (...)."""
        return self.weights.terminal * self._state_terms(x, x_ref)

    def cost_numpy(self, x: np.ndarray, u: np.ndarray) -> float:
        """The running cost against the target, in numpy (the environment's reward is minus it).

        Args:
            x: (nx,) state; u: (nu,) normalised action.
        """
        du = u - self.u_target
        return float(
            self._state_terms(x, self.x_target)
            + self.weights.action * (du * du).sum(-1) / self.action_dim
        )

    def _state_terms_casadi(self, x: Any, x_ref: Any) -> Any:
        w, n2 = self.weights, self._n2
        dq = x[:n2] - x_ref[:n2]
        dp = x[n2:] - x_ref[n2:]
        return w.position * ca.sumsqr(dq) / n2 + w.momentum * ca.sumsqr(dp) / n2

    def running_cost_casadi(self, x: Any, u: Any, x_ref: Any, u_ref: Any) -> Any:
        """The same stage cost on CasADi column vectors (nx,1), (nu,1), (nx,1), (nu,1)."""
        return (
            self._state_terms_casadi(x, x_ref)
            + self.weights.action * ca.sumsqr(u - u_ref) / self.action_dim
        )

    def terminal_cost_casadi(self, x: Any, x_ref: Any) -> Any:
        """The same terminal cost on CasADi column vectors (nx,1), (nx,1)."""
        return self.weights.terminal * self._state_terms_casadi(x, x_ref)

    def tracking_error(self, x: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
        """RMS particle-position distance to the target, m.

        Args:
            x: (T, nx) states; x_ref: (T, nx) references.

        Returns:
            (T,) `sqrt(mean_n |q_n - q_ref,n|²)` over the free particles, m.
        """
        n2 = self._n2
        d = np.asarray(x)[..., :n2] - np.asarray(x_ref)[..., :n2]
        return np.sqrt((d * d).sum(-1) / (n2 // 2))

    def target_error(self, x: np.ndarray) -> np.ndarray:
        """(2·n_free,) position error q - q_ref of state x (nx,), m (the observation's tail)."""
        return np.asarray(x[: self._n2]) - self.x_target[: self._n2]


class SettleTask(SpringMeshTask):
    """Settle the mesh to rest: target = the static equilibrium (rest positions without
    gravity), zero momenta, zero action."""

    name = "settle"

    def __init__(
        self, params: SpringMeshParams, weights: SpringMeshCostWeights | None = None
    ) -> None:
        q = rest_state(params)[: 2 * params.layout.n_free]
        if params.gravity:
            q = static_equilibrium(params)
        x = np.concatenate([q, np.zeros_like(q)])
        super().__init__(params, x, np.zeros(action_dim(params)), weights)


class HoldEdgeTask(SpringMeshTask):
    """Move the bottom edge by `displacement` (m) and hold it there.

    The target configuration is the static equilibrium with the bottom row's particles at
    their rest positions plus `displacement`; `u_target` is the normalised force that holds
    them there (the negative of the net spring and gravity force on each, over `max_force`).
    Every bottom-row particle must be free and actuated.

    Raises:
        ValueError: bottom row not all actuated, or a holding force beyond `max_force`.
    """

    name = "hold_edge"

    def __init__(
        self,
        params: SpringMeshParams,
        displacement: Sequence[float] = (0.3, 0.0),
        weights: SpringMeshCostWeights | None = None,
    ) -> None:
        disp = np.asarray(displacement, dtype=np.float64)
        if disp.shape != (2,) or not np.all(np.isfinite(disp)):
            raise ValueError(f"HoldEdgeTask: displacement must be 2 finite numbers, got {disp}")
        lay = params.layout
        r = params.rows - 1
        edge = [r * params.cols + c for c in range(params.cols)]
        act = list(params.actuated_indices)
        missing = [i for i in edge if i not in act]
        if missing:
            raise ValueError(f"HoldEdgeTask: bottom-row particles {missing} are not actuated")
        fixed = {i: lay.rest[i] + disp for i in edge}
        q = static_equilibrium(params, fixed)
        f = spring_forces(params, q).reshape(-1, 2)  # (n_free, 2)
        u = np.zeros((len(act), 2))
        for a, i in enumerate(act):
            if i in fixed:
                u[a] = -f[lay.slot[i]] / params.max_force
        if np.max(np.abs(u)) > 1.0:
            raise ValueError(
                f"HoldEdgeTask: holding displacement {disp.tolist()} needs "
                f"{np.max(np.abs(u)) * params.max_force:.3g} N > max_force {params.max_force} N"
            )
        self.displacement = disp
        x = np.concatenate([q, np.zeros_like(q)])
        super().__init__(params, x, u.reshape(-1), weights)


def make_task(
    name: str,
    params: SpringMeshParams,
    displacement: Sequence[float] = (0.3, 0.0),
    weights: SpringMeshCostWeights | None = None,
) -> SpringMeshTask:
    """Build the task `name` ("settle" or "hold_edge") for `params`."""
    if name == "settle":
        return SettleTask(params, weights)
    if name == "hold_edge":
        return HoldEdgeTask(params, displacement, weights)
    raise ValueError(f"unknown spring-mesh task {name!r}; choose 'settle' or 'hold_edge'")
