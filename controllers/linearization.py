"""Dynamics linearised along a horizon for the RTI QP: CasADi Jacobians or batched torch ones.

Both paths return the values f (N, nx) = f(x̄_k, ū_k) and the transposed stage Jacobians
jt (N, nz, nx) with jt[k] = [A_k B_k]ᵀ — the memory layout of the QP's column-major J input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, Protocol

import casadi as ca
import numpy as np
import torch

from metasym_control.controllers.casadi_buffers import BufferedFunction
from metasym_control.dynamics import DynamicsModel, Memory, expand_memory

TorchMethod = Literal["fd", "jacrev", "jacfwd"]


class Linearizer(Protocol):
    """Values and transposed stage Jacobians of the dynamics along a trajectory."""

    def __call__(
        self, xs: np.ndarray, us: np.ndarray, memory: Memory
    ) -> tuple[np.ndarray, np.ndarray]:
        """xs (N, nx) states x̄_0..x̄_{N-1}, us (N, nu), the model's memory (held fixed along
        the horizon) -> f (N, nx), jt (N, nz, nx)."""
        ...


class SymbolicDynamics:
    """A model's `casadi_step` as CasADi functions, the derivatives mapped over the horizon.

    Args:
        casadi_step: CasADi (nx, 1) state and (nu, 1) action -> (nx, 1) next state.
        nx, nu: state and action dimensions.
        horizon: N, the stages linearised at once.

    Attributes:
        step: the CasADi function f(x, u) (the NLP's dynamics).
        hessian_sparsity: structural nonzeros of ∇²_z (λᵀf) (nz, nz), z = (x, u).
    """

    def __init__(self, casadi_step: Callable[[Any, Any], Any], nx: int, nu: int, horizon: int):
        self.nx, self.nu, self.horizon = nx, nu, horizon
        x = ca.SX.sym("x", nx)
        u = ca.SX.sym("u", nu)
        fx = casadi_step(x, u)
        self.step = ca.Function("f", [x, u], [fx])
        z = ca.vertcat(x, u)
        # one expression graph for the value and the stage Jacobian [A_k B_k] (nx, nz)
        jac = ca.Function("lin", [x, u], [fx, ca.densify(ca.jacobian(fx, z))])
        self._jacobians = BufferedFunction(jac.map(horizon))  # (nx, N), (nx, nz·N)
        lam = ca.SX.sym("lam", nx)
        h_dyn = ca.hessian(ca.dot(lam, fx), z)[0]
        self.hessian_sparsity = h_dyn.sparsity()
        hess = ca.Function("hf", [x, u, lam], [ca.densify(h_dyn)])
        self._hessians = BufferedFunction(hess.map(horizon))  # (nz, nz·N)

    def __call__(
        self, xs: np.ndarray, us: np.ndarray, memory: Memory | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """xs (N, nx), us (N, nu) -> f (N, nx), jt (N, nz, nx) (`memory` is not used).

        The results are views of the function's buffers, valid until the next call.
        """
        n, nx, nz = self.horizon, self.nx, self.nx + self.nu
        buf = self._jacobians
        buf.args[0][:] = xs.ravel()  # (N, nx) C-order = (nx, N) column-major
        buf.args[1][:] = us.ravel()
        buf()
        return buf.res[0].reshape(n, nx), buf.res[1].reshape(n, nz, nx)

    def lagrangian_hessians(self, xs: np.ndarray, us: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """Stage Hessians ∇²_z (λ_kᵀ f(x̄_k, ū_k)): xs (N, nx), us (N, nu), lam (N, nx) ->
        (N, nz, nz) (symmetric; a view of the function's buffer, valid until the next call)."""
        n, nz = self.horizon, self.nx + self.nu
        buf = self._hessians
        buf.args[0][:] = xs.ravel()
        buf.args[1][:] = us.ravel()
        buf.args[2][:] = lam.ravel()
        buf()
        return buf.res[0].reshape(n, nz, nz)


class TorchLinearizer:
    """Batched torch Jacobians of `model.step`, the memory held fixed along the horizon.

    Args:
        model: the torch model.
        method: "fd" (one batched forward pass of forward differences), "jacrev" / "jacfwd"
            (`torch.func.vmap` over the horizon).
        fd_step: relative finite-difference step; None picks sqrt(machine epsilon) of `dtype`.
        device, dtype: where the model computes.
    """

    def __init__(
        self,
        model: DynamicsModel,
        method: TorchMethod,
        fd_step: float | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if method not in ("fd", "jacrev", "jacfwd"):
            raise ValueError(f"TorchLinearizer.method unknown: {method!r}")
        self.model = model
        self.method = method
        self.device = torch.device(device)
        self.dtype = dtype
        self.fd_scale = fd_step or math.sqrt(torch.finfo(dtype).eps)

    def __call__(
        self, xs: np.ndarray, us: np.ndarray, memory: Memory
    ) -> tuple[np.ndarray, np.ndarray]:
        """xs (N, nx), us (N, nu), memory -> f (N, nx), jt (N, nz, nx) (float64 copies)."""
        x = torch.as_tensor(xs, device=self.device, dtype=self.dtype)  # (N, nx)
        u = torch.as_tensor(us, device=self.device, dtype=self.dtype)  # (N, nu)
        if self.method == "fd":
            return self._forward_differences(x, u, memory)
        return self._autodiff(x, u, memory)

    def _forward_differences(
        self, x: torch.Tensor, u: torch.Tensor, memory: Memory
    ) -> tuple[np.ndarray, np.ndarray]:
        n, nx = x.shape
        nz = nx + u.shape[-1]
        # inference mode: no autograd bookkeeping at all (measured 7% off MetaSym's pass)
        with torch.inference_mode():
            z = torch.cat([x, u], dim=-1)  # (N, nz)
            hstep = self.fd_scale * torch.clamp(z.abs(), min=1.0)  # (N, nz)
            pert = z[:, None, :].repeat(1, nz + 1, 1)  # (N, nz+1, nz)
            idx = torch.arange(nz, device=self.device)
            pert[:, idx + 1, idx] += hstep
            mem = expand_memory(memory, (n, nz + 1))
            fz, _ = self.model.step(pert[..., :nx], pert[..., nx:], mem)  # (N, nz+1, nx)
            f0 = fz[:, 0]  # (N, nx)
            jt = (fz[:, 1:] - f0[:, None]) / hstep[..., None]  # (N, nz, nx)
        return f0.cpu().double().numpy(), jt.cpu().double().numpy()

    def _autodiff(
        self, x: torch.Tensor, u: torch.Tensor, memory: Memory
    ) -> tuple[np.ndarray, np.ndarray]:
        model = self.model

        def step_with_value(
            xi: torch.Tensor, ui: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            out = model.step(xi, ui, memory)[0]
            return out, out

        jac_fn = torch.func.jacrev if self.method == "jacrev" else torch.func.jacfwd
        jac = jac_fn(step_with_value, argnums=(0, 1), has_aux=True)
        (jac_x, jac_u), f0 = torch.func.vmap(jac)(x, u)
        jt = torch.cat([jac_x, jac_u], dim=-1).transpose(1, 2)  # (N, nz, nx)
        return f0.detach().cpu().double().numpy(), jt.detach().cpu().double().numpy()
