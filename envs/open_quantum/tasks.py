"""Open-quantum-system tasks: prepare and hold a pure target state (fidelity cost)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from metasym_control.envs.open_quantum.physics import coherent_ket, ket_to_state
from metasym_control.params import require_nonnegative
from metasym_control.task import Task


class StateTargetTask(Task):
    """Prepare and hold a pure target state |ψ>.

    With the state x = [Re vec ρ, Im vec ρ] and the target's x* of |ψ><ψ|, the fidelity is
    F = <ψ|ρ|ψ> = Tr(ρ |ψ><ψ|) = x · x* (a Hilbert–Schmidt inner product, linear in x).
    Running cost (1 − x·x_ref) + w_u |u − u_ref|², terminal cost w_T (1 − x·x_ref); the
    env's reward is 1 − running cost = F − w_u |u|².

    Args:
        target: (N,) target ket (normalised here).
        effort_weight: w_u, weight of the squared normalised drive.
        terminal_weight: w_T.
    """

    def __init__(
        self, target: np.ndarray, effort_weight: float = 0.01, terminal_weight: float = 1.0
    ) -> None:
        psi = np.asarray(target, dtype=np.complex128).ravel()
        if psi.size < 2 or not np.all(np.isfinite(psi)) or np.linalg.norm(psi) == 0:
            raise ValueError("StateTargetTask: target must be a finite non-zero ket of size >= 2")
        require_nonnegative("StateTargetTask", "effort_weight", effort_weight)
        require_nonnegative("StateTargetTask", "terminal_weight", terminal_weight)
        self.target_ket = psi / np.linalg.norm(psi)
        self.n = psi.size
        self.state_dim = 2 * self.n * self.n
        self.action_dim = 2
        self.effort_weight = float(effort_weight)
        self.terminal_weight = float(terminal_weight)
        self.target_state = ket_to_state(self.target_ket)

    @property
    def state_lower(self) -> np.ndarray:
        """(nx,) -1: every entry of a density matrix has modulus <= 1."""
        return -np.ones(self.state_dim)

    @property
    def state_upper(self) -> np.ndarray:
        """(nx,) +1."""
        return np.ones(self.state_dim)

    def reference(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The constant target state (T, nx) and zero drive (T, 2) at times `t` (μs)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        x = np.broadcast_to(self.target_state, (t.size, self.state_dim)).copy()
        return x, np.zeros((t.size, self.action_dim))

    def fidelity(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        """F = x · x_ref: (..., nx), (..., nx) -> (...), dimensionless in [0, 1] for states."""
        return (x * x_ref).sum(-1)

    def running_cost(
        self, x: torch.Tensor, u: torch.Tensor, x_ref: torch.Tensor, u_ref: torch.Tensor
    ) -> torch.Tensor:
        """(1 − F) + w_u |u − u_ref|²: x (..., nx), u (..., 2) -> (...)."""
        return 1.0 - self.fidelity(x, x_ref) + self.effort_weight * ((u - u_ref) ** 2).sum(-1)

    def terminal_cost(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        """w_T (1 − F): x (..., nx) -> (...)."""
        return self.terminal_weight * (1.0 - self.fidelity(x, x_ref))

    def running_cost_casadi(self, x: Any, u: Any, x_ref: Any, u_ref: Any) -> Any:
        """The same stage cost on CasADi column vectors."""
        import casadi as ca

        du = u - u_ref
        return 1.0 - ca.dot(x, x_ref) + self.effort_weight * ca.dot(du, du)

    def terminal_cost_casadi(self, x: Any, x_ref: Any) -> Any:
        """The same terminal cost on CasADi column vectors."""
        import casadi as ca

        return self.terminal_weight * (1.0 - ca.dot(x, x_ref))

    def tracking_error(self, x: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
        """Infidelity 1 − x·x_ref per stage: (T, nx), (T, nx) -> (T,)."""
        return 1.0 - np.sum(np.asarray(x) * np.asarray(x_ref), axis=-1)


class QubitPlusXTask(StateTargetTask):
    """Prepare and stabilise the +x eigenstate (|e> + |g>)/√2 of the qubit (Bloch (1, 0, 0))."""

    def __init__(self, effort_weight: float = 0.01, terminal_weight: float = 1.0) -> None:
        super().__init__(np.array([1.0, 1.0]) / math.sqrt(2.0), effort_weight, terminal_weight)


class CoherentStateTask(StateTargetTask):
    """Prepare and stabilise the coherent state |α> of the oscillator (truncated at N)."""

    def __init__(
        self,
        n_levels: int,
        alpha: complex = 1.0,
        effort_weight: float = 0.01,
        terminal_weight: float = 1.0,
    ) -> None:
        self.alpha = complex(alpha)
        super().__init__(coherent_ket(n_levels, alpha), effort_weight, terminal_weight)


class FockStateTask(StateTargetTask):
    """Prepare and stabilise the Fock state |k> of the oscillator (truncated at N)."""

    def __init__(
        self, n_levels: int, k: int = 1, effort_weight: float = 0.01, terminal_weight: float = 1.0
    ) -> None:
        if not 0 <= k < n_levels:
            raise ValueError(f"FockStateTask: k must lie in [0, {n_levels - 1}], got {k}")
        self.k = k
        psi = np.zeros(n_levels, dtype=np.complex128)
        psi[k] = 1.0
        super().__init__(psi, effort_weight, terminal_weight)


def make_task(
    system: str,
    n: int,
    target: str = "default",
    alpha: complex = 1.0,
    fock: int = 1,
    effort_weight: float = 0.01,
) -> StateTargetTask:
    """The task of `system`: "default" is +x for the qubit and |α> for the oscillator.

    Args:
        system: "qubit" or "oscillator".
        n: N, the dimension.
        target: "default", "plus_x" (qubit), "coherent" or "fock" (oscillator).
        alpha: coherent amplitude of the "coherent" target.
        fock: photon number of the "fock" target.
        effort_weight: w_u of the task.
    """
    if system == "qubit":
        if target not in ("default", "plus_x"):
            raise ValueError(f"qubit target must be 'default' or 'plus_x', got {target!r}")
        return QubitPlusXTask(effort_weight)
    if target in ("default", "coherent"):
        return CoherentStateTask(n, alpha, effort_weight)
    if target == "fock":
        return FockStateTask(n, fock, effort_weight)
    raise ValueError(f"oscillator target must be 'default', 'coherent' or 'fock', got {target!r}")
