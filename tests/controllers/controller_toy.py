"""A tiny linear double integrator (torch + CasADi) and a quadratic task, for controller tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metasym_control.dynamics import AdaptBudget, Memory, rollout_by_steps
from metasym_control.task import Task
from metasym_control.trajectory import Trajectory

A_MAX = 2.0  # m/s² per unit of normalised action


class DoubleIntegrator:
    """Planar double integrator, state [px, py, vx, vy], action in [-1, 1]² → ±A_MAX m/s².

    Exact zero-order-hold discretisation, so torch and CasADi agree to round-off; `drag` > 0
    adds a quadratic drag `-drag·v|v|` (explicit Euler over the step), a nonlinearity. With
    `history_len > 0` the model also adds the mean one-step residual seen in its history
    window (a disturbance observer), so its memory matters.
    """

    state_dim = 4
    action_dim = 2
    # valid everywhere (subclasses in the fault tests declare a trusted region)
    trusted_lower: np.ndarray | None = None
    trusted_upper: np.ndarray | None = None

    def __init__(
        self,
        dt: float = 0.1,
        history_len: int = 0,
        bias: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
        drag: float = 0.0,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> None:
        self.dt = dt
        self.drag = drag
        self.history_len = history_len
        self.dtype = dtype
        h = dt
        self.a = np.array(
            [[1, 0, h, 0], [0, 1, 0, h], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64
        )
        self.b = A_MAX * np.array(
            [[h * h / 2, 0], [0, h * h / 2], [h, 0], [0, h]], dtype=np.float64
        )
        self.bias = np.asarray(bias, dtype=np.float64)
        # on the model's device once: a CUDA graph may not copy host tensors while capturing
        self._a_t = torch.as_tensor(self.a.T.copy(), dtype=dtype, device=device)
        self._b_t = torch.as_tensor(self.b.T.copy(), dtype=dtype, device=device)
        self._bias = torch.as_tensor(self.bias, dtype=dtype, device=device)

    def _next_state(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The exact step without the memory's disturbance: x (..., 4), u (..., 2) -> (..., 4)."""
        out = x @ self._a_t + u @ self._b_t + self._bias
        if self.drag:
            v = x[..., 2:]
            dv = -self.drag * self.dt * v * v.abs()
            out = out + torch.cat([0.5 * self.dt * dv, dv], dim=-1)
        return out

    def numpy_step(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The same map in numpy (the plant of closed-loop tests)."""
        out = self.a @ x + self.b @ u + self.bias
        if self.drag:
            dv = -self.drag * self.dt * x[2:] * np.abs(x[2:])
            out = out + np.concatenate([0.5 * self.dt * dv, dv])
        return out

    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """Mean residual of the window as a (…, nx) disturbance estimate."""
        if self.history_len == 0:
            return {}
        nxt = torch.cat([states[..., 1:, :], states[..., -1:, :]], dim=-2)
        res = nxt - self._next_state(states, actions)
        mask = torch.ones(states.shape[:-1], dtype=states.dtype, device=states.device)
        mask[..., -1] = 0.0  # the last transition's successor is not in the window
        if valid is not None:
            mask = mask * valid.to(states.dtype)
        d = (res * mask[..., None]).sum(-2) / mask.sum(-1, keepdim=True).clamp_min(1.0)
        return {"d": d}

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """x (..., 4), u (..., 2) -> x_next (..., 4)."""
        xn = self._next_state(x, u)
        if "d" in memory:
            xn = xn + memory["d"]
        return xn, memory

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor, memory: Memory) -> torch.Tensor:
        """x0 (..., 4), actions (..., T, 2) -> (..., T, 4)."""
        return rollout_by_steps(self, x0, actions, memory)

    def casadi_step(self, x: Any, u: Any) -> Any:
        """The same map in CasADi (no disturbance memory)."""
        import casadi as ca  # lazily: the MPPI tests run where CasADi is absent (GPU hosts)

        out = ca.DM(self.a) @ x + ca.DM(self.b) @ u + ca.DM(self.bias)
        if self.drag:
            dv = -self.drag * self.dt * x[2:] * ca.fabs(x[2:])
            out = out + ca.vertcat(0.5 * self.dt * dv, dv)
        return out

    def adapt(self, support: Trajectory, budget: AdaptBudget) -> DoubleIntegrator:
        """No identification: the toy model is exact."""
        return self


class TorchOnly:
    """Wraps a model and hides `casadi_step` (a learned model as far as a controller sees)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.state_dim = inner.state_dim
        self.action_dim = inner.action_dim
        self.dt = inner.dt
        self.history_len = inner.history_len
        self.trusted_lower = inner.trusted_lower
        self.trusted_upper = inner.trusted_upper

    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        return self.inner.init_memory(states, actions, valid)

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        return self.inner.step(x, u, memory)

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor, memory: Memory) -> torch.Tensor:
        return rollout_by_steps(self, x0, actions, memory)

    def adapt(self, support: Trajectory, budget: AdaptBudget) -> TorchOnly:
        return self


class QuadraticTask(Task):
    """Track a reference of the double integrator with a quadratic cost.

    Reference: `x_ref(t) = [amp sin(ωt), 0, amp ω cos(ωt), 0]` (amp 0 = regulate to the origin),
    u_ref = the feed-forward that realises it.
    """

    state_dim = 4
    action_dim = 2

    def __init__(
        self,
        amp: float = 0.0,
        omega: float = 1.0,
        q: tuple[float, ...] = (10.0, 10.0, 1.0, 1.0),
        r: float = 0.1,
        qf: float = 10.0,
        v_max: float | None = None,
    ) -> None:
        self.amp, self.omega = amp, omega
        self.q = np.asarray(q, dtype=np.float64)
        self.r = r
        self.qf = qf
        self.v_max = v_max
        self._q_cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    @property
    def state_lower(self) -> np.ndarray:
        if self.v_max is None:
            return np.full(4, -np.inf)
        return np.array([-np.inf, -np.inf, -self.v_max, -self.v_max])

    @property
    def state_upper(self) -> np.ndarray:
        return -self.state_lower

    def reference(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, dtype=np.float64)
        a, w = self.amp, self.omega
        x = np.zeros((len(t), 4))
        x[:, 0] = a * np.sin(w * t)
        x[:, 2] = a * w * np.cos(w * t)
        u = np.zeros((len(t), 2))
        u[:, 0] = -a * w * w * np.sin(w * t) / A_MAX
        return x, u

    def _q_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """The weights as a tensor on x's device, made once (no host copy in a CUDA graph)."""
        key = (x.dtype, x.device)
        if key not in self._q_cache:
            self._q_cache[key] = torch.as_tensor(self.q, dtype=x.dtype, device=x.device)
        return self._q_cache[key]

    def running_cost(
        self, x: torch.Tensor, u: torch.Tensor, x_ref: torch.Tensor, u_ref: torch.Tensor
    ) -> torch.Tensor:
        q = self._q_tensor(x)
        return ((x - x_ref) ** 2 * q).sum(-1) + self.r * ((u - u_ref) ** 2).sum(-1)

    def terminal_cost(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        q = self._q_tensor(x)
        return self.qf * ((x - x_ref) ** 2 * q).sum(-1)

    def running_cost_casadi(self, x: Any, u: Any, x_ref: Any, u_ref: Any) -> Any:
        import casadi as ca

        e = x - x_ref
        du = u - u_ref
        return ca.sum1(ca.DM(self.q) * e**2) + self.r * ca.sum1(du**2)

    def terminal_cost_casadi(self, x: Any, x_ref: Any) -> Any:
        import casadi as ca

        e = x - x_ref
        return self.qf * ca.sum1(ca.DM(self.q) * e**2)


def simulate(
    controller: Any,
    x0: np.ndarray,
    steps: int,
    dt: float = 0.1,
    plant: DoubleIntegrator | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Close the loop on the exact plant: states (steps+1, 4), actions (steps, 2), infos."""
    from metasym_control.controller import History

    plant = plant or DoubleIntegrator(dt)
    hist = History(max(1, getattr(controller.model, "history_len", 0)), 4, 2)
    x = np.asarray(x0, dtype=np.float64)
    xs, us, infos = [x], [], []
    for k in range(steps):
        u = controller.act(x, k * dt, hist)
        infos.append(dict(controller.last_info))
        xn = plant.numpy_step(x, u)
        hist.push(x, u)
        x = xn
        xs.append(x)
        us.append(u)
    return np.asarray(xs), np.asarray(us), infos
