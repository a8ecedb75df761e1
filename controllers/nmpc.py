"""Gradient-based MPC on CasADi: multiple-shooting ipopt and real-time iteration (RTI)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import casadi as ca
import numpy as np
import torch

from metasym_control.controllers.common import (
    FallbackCounter,
    FallbackKind,
    FaultKind,
    check_plan,
    history_memory,
    safe_action,
    trusted_bounds,
)
from metasym_control.dynamics import DynamicsModel, Memory, expand_memory
from metasym_control.task import Task

logger = logging.getLogger(__name__)

Mode = Literal["ipopt", "rti"]
Linearization = Literal["auto", "casadi", "fd", "jacrev", "jacfwd"]
QPSolver = Literal["osqp", "qrqp", "daqp", "proxqp"]
_QP_SOLVERS = ("osqp", "qrqp", "daqp", "proxqp")


@dataclass(frozen=True)
class NMPCConfig:
    """Gradient-based MPC settings.

    Attributes:
        horizon: N, shooting intervals of `model.dt` each.
        mode: "ipopt" solves the full multiple-shooting NLP every step (needs a model with
            `casadi_step`); "rti" takes `sqp_iters` Gauss-Newton-type SQP steps a control period
            (one: the real-time iteration), each a convex QP.
        qp_solver: CasADi conic plugin of the RTI QP ("qrqp", "osqp", "daqp" or "proxqp";
            see docs/controllers.md).
        qp_backup: a second QP solver tried when the first fails or returns a point that
            breaks the constraints (None: straight to the fallback plan). Default "proxqp":
            with a learned model's Jacobians and active trusted-region bounds qrqp (and daqp)
            returned "successful" points breaking the constraints by 1e-4..2e-2 and osqp hit
            its iteration limit on the same QPs; proxqp solved all of them.
        sqp_iters: SQP iterations per control step in "rti" mode (1 = real-time iteration).
        linearization: how "rti" gets the dynamics Jacobians: "casadi" (symbolic, needs
            `casadi_step`), "fd" (one batched torch forward pass of forward differences),
            "jacrev" / "jacfwd" (`torch.func.vmap` over the horizon); "auto" = "casadi" when the
            model has `casadi_step`, else "fd".
        fd_step: relative finite-difference step; None picks sqrt(machine epsilon) of the
            model's dtype.
        hessian: the QP's Hessian in "rti" mode: "cost" — the exact Hessian of the task's
            cost only (Gauss-Newton-like, the dynamics' curvature dropped); "lagrangian" — plus
            the dynamics' second derivatives weighted by the previous QP's multipliers
            (exact-Hessian SQP; needs `casadi_step`, otherwise "cost" is used). Matters
            where the cost is linear and the dynamics bilinear (the qubit).
        hess_min_eig: the stage cost Hessians are projected onto matrices with eigenvalues
            >= this value (the cost may be non-convex, e.g. a quaternion error), so every QP
            is convex.
        use_state_bounds: impose the task's finite state bounds as constraints.
        trusted_constraints: "rti" mode: impose the model's trusted state region (its
            `trusted_lower` / `trusted_upper`, widened per component to contain the measured
            state) as bounds on the predicted states x_1..x_N of every QP. Without it a plan
            that grazes the region's edge (the quadrotor's figure-8 needs pitch rates within
            1% of the learned model's bound) is only rejected after the solve and the
            controller drops to the safe action; with it the QP itself stays inside.
        ipopt_max_iter: ipopt iteration limit per control step.
        ipopt_tol: ipopt convergence tolerance.
        ipopt_mu_init: ipopt's initial barrier parameter (small suits a warm start).
        qp_eps: osqp absolute and relative tolerance.
        qp_max_iter: iteration limit of the QP solver.
        qp_feas_tol: largest bound or equality violation accepted from a QP solution (a
            "successful" solution that breaks it counts as a failed solve).
    """

    horizon: int = 20
    mode: Mode = "rti"
    qp_solver: QPSolver = "qrqp"
    qp_backup: QPSolver | None = "proxqp"
    sqp_iters: int = 1
    linearization: Linearization = "auto"
    fd_step: float | None = None
    hessian: Literal["cost", "lagrangian"] = "cost"
    hess_min_eig: float = 1e-6
    use_state_bounds: bool = True
    trusted_constraints: bool = True
    ipopt_max_iter: int = 100
    ipopt_tol: float = 1e-6
    ipopt_mu_init: float = 1e-3
    qp_eps: float = 1e-6
    qp_max_iter: int = 4000
    qp_feas_tol: float = 1e-4

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.sqp_iters < 1:
            raise ValueError("NMPCConfig: horizon >= 1 and sqp_iters >= 1 required")
        if self.mode not in ("ipopt", "rti"):
            raise ValueError(f"NMPCConfig.mode must be 'ipopt' or 'rti', got {self.mode!r}")
        if self.qp_solver not in _QP_SOLVERS or self.qp_backup not in (*_QP_SOLVERS, None):
            raise ValueError(f"NMPCConfig.qp_solver must be osqp or qrqp: {self.qp_solver!r}")
        if self.linearization not in ("auto", "casadi", "fd", "jacrev", "jacfwd"):
            raise ValueError(f"NMPCConfig.linearization unknown: {self.linearization!r}")
        if self.ipopt_max_iter < 0 or self.qp_max_iter < 0:
            raise ValueError("NMPCConfig: iteration limits must be >= 0")


class NMPC:
    """Constrained MPC over a horizon of N steps, solved with CasADi.

    The optimisation variables are ordered stage by stage, w = (x0, u0, x1, u1, ..., xN), with
    actuator bounds from the task, the task's finite state bounds, the task's CasADi stage
    and terminal costs along the reference `task.reference(t + k·dt)`, and x0 pinned to the
    measured state.

    - mode "ipopt" (models with `casadi_step`): the multiple-shooting NLP, warm-started from
      the previous solution shifted by one stage (primal and dual).
    - mode "rti": per SQP iteration, linearise the dynamics along the warm-start trajectory
      (CasADi Jacobian functions built once, or batched torch Jacobians for torch models with
      the model's memory held fixed along the horizon), take the cost's exact Hessian from
      CasADi projected to be positive definite, and solve one sparse convex QP with a
      CasADi conic solver.

    Faults (never raised): a failed or infeasible solve, a non-finite prediction, or a plan
    leaving the model's trusted region fall back to the previous plan shifted by one stage
    (if its own prediction passes), then to the task's reference action at `t` (hover for
    the quadrotor). `last_info` reports `fallback`, `fault` and `fallback_count`.

    Args:
        model: any `DynamicsModel`; mode "ipopt" and linearization "casadi" need a
            `SymbolicModel` (with `casadi_step`).
        task: the task (reference, CasADi costs, bounds).
        config: settings.
        device: torch device of the torch model (linearisation, fallback checks).
        dtype: torch dtype of the torch model.
    """

    def __init__(
        self,
        model: DynamicsModel,
        task: Task,
        config: NMPCConfig | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.config = config or NMPCConfig()
        self.task = task
        self.device = torch.device(device)
        self.dtype = dtype
        self.nx, self.nu = task.state_dim, task.action_dim
        self.model: DynamicsModel | None = None
        self.last_plan: np.ndarray | None = None
        self.last_actions: np.ndarray | None = None
        self.last_info: dict[str, Any] = {}
        self._counter = FallbackCounter()
        self._build_bounds()
        self._build_cost_functions()
        self._build_qp()
        self.set_model(model)
        self.reset()

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget the warm start (primal and dual) and the fallback counters."""
        self._w: np.ndarray | None = None  # (nw,) previous solution, stage-ordered
        self._lam_x: np.ndarray | None = None
        self._lam_g: np.ndarray | None = None
        self._lam_dyn: np.ndarray | None = None  # (N, nx) multipliers of the RTI dynamics
        self._counter.reset()
        self.last_plan = None
        self.last_actions = None
        self.last_info = {}

    def set_model(self, model: DynamicsModel) -> None:
        """Predict with `model` from the next `act` on (rebuilds the symbolic parts if needed).

        For torch-linearised RTI nothing is rebuilt: a new (e.g. adapted) model only changes
        the numbers that enter the QP.
        """
        c = self.config
        has_sym = callable(getattr(model, "casadi_step", None))
        lin = c.linearization
        if lin == "auto":
            lin = "casadi" if has_sym else "fd"
        if (c.mode == "ipopt" or lin == "casadi") and not has_sym:
            raise ValueError(
                f"NMPC mode={c.mode!r} linearization={lin!r} needs a model with casadi_step; "
                "use mode='rti' with linearization 'fd', 'jacrev' or 'jacfwd' for torch models"
            )
        self.model = model
        self.linearization: str = lin
        self._f_sym: ca.Function | None = None
        if has_sym and (c.mode == "ipopt" or lin == "casadi"):
            x = ca.SX.sym("x", self.nx)
            u = ca.SX.sym("u", self.nu)
            self._f_sym = ca.Function("f", [x, u], [model.casadi_step(x, u)])  # type: ignore[attr-defined]
            n = c.horizon
            jac = ca.Function(
                "lin",
                [x, u],
                [
                    self._f_sym(x, u),
                    ca.jacobian(self._f_sym(x, u), x),
                    ca.jacobian(self._f_sym(x, u), u),
                ],
            )
            self._lin_sym = jac.map(n)  # (nx, N), (nx, nx·N), (nx, nu·N)
            lam = ca.SX.sym("lam", self.nx)
            z = ca.vertcat(x, u)
            h_dyn = ca.hessian(ca.dot(lam, self._f_sym(x, u)), z)[0]
            self._dyn_hess = ca.Function("hf", [x, u, lam], [h_dyn]).map(n)  # (nz, nz·N)
        if c.mode == "ipopt":
            self._build_nlp()

    def act(self, state: np.ndarray, t: float, history: Any = None) -> np.ndarray:
        """One MPC step.

        Args:
            state: (nx,) measured state.
            t: time in seconds (indexes the reference).
            history: the runner's `History`; its last `model.history_len` transitions give
                the model's memory (torch models).

        Returns:
            (nu,) float64 action within the task's action bounds.
        """
        assert self.model is not None
        c = self.config
        n, nx = c.horizon, self.nx
        times = t + self.model.dt * np.arange(n + 1)
        x_ref, u_ref = self.task.reference(times)  # (N+1, nx), (N+1, nu)
        x0 = np.asarray(state, dtype=np.float64).reshape(nx)
        memory = history_memory(self.model, history, self.device, self.dtype)
        info: dict[str, Any] = {"mode": c.mode}
        prev_shift = self._shifted_warm(u_ref) if self._w is not None else None
        w_init = prev_shift if prev_shift is not None else self._initial_guess(x0, u_ref, memory)
        fault: FaultKind = "none"
        w_sol: np.ndarray | None = None
        t0 = time.perf_counter()
        try:
            if c.mode == "ipopt":
                w_sol, fault = self._solve_ipopt(w_init, x0, x_ref, u_ref, info)
            else:
                w_sol, fault = self._solve_rti(w_init, x0, x_ref, u_ref, memory, info)
        except Exception as exc:  # a solver that raises is a failed solve, never a crash
            logger.warning("NMPC solve raised %s: %s", type(exc).__name__, exc)
            info["solver_error"] = f"{type(exc).__name__}: {exc}"
            fault, w_sol = "solver_failed", None
        info["solve_seconds"] = time.perf_counter() - t0
        fallback: FallbackKind = "none"
        if fault == "none" and w_sol is not None:
            xs, us = self._split(w_sol)
            fault = check_plan(xs[1:], trusted_bounds(self.model))
        if fault != "none" or w_sol is None:
            w_sol, fallback = self._fallback(x0, t, memory, prev_shift)
        xs, us = self._split(w_sol)
        if fallback == "safe_action":
            self._w = None
            self._lam_x = self._lam_g = None
            self._lam_dyn = None
        else:
            self._w = w_sol
        self.last_plan = xs[1:]
        self.last_actions = us
        self.last_info = info
        self._counter.record(info, fallback, fault)
        return np.clip(us[0], self.task.action_lower, self.task.action_upper)

    # ------------------------------------------------------------------ layout helpers
    def _split(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage-ordered w (nw,) -> states (N+1, nx), actions (N, nu)."""
        n, nx, nu = self.config.horizon, self.nx, self.nu
        body = w[: n * (nx + nu)].reshape(n, nx + nu)
        xs = np.concatenate([body[:, :nx], w[n * (nx + nu) :].reshape(1, nx)], axis=0)
        return xs, body[:, nx:].copy()

    def _join(self, xs: np.ndarray, us: np.ndarray) -> np.ndarray:
        """States (N+1, nx), actions (N, nu) -> stage-ordered w (nw,)."""
        return np.concatenate([np.concatenate([xs[:-1], us], axis=1).ravel(), xs[-1]])

    def _shifted_warm(self, u_ref: np.ndarray) -> np.ndarray:
        """The previous solution shifted by one stage; the new last action is the reference."""
        assert self._w is not None
        xs, us = self._split(self._w)
        u_tail = np.clip(u_ref[-2], self.task.action_lower, self.task.action_upper)
        us_new = np.concatenate([us[1:], u_tail[None]], axis=0)
        xs_new = np.concatenate([xs[1:], xs[-1:]], axis=0)
        return self._join(xs_new, us_new)

    def _rollout(self, x0: np.ndarray, us: np.ndarray, memory: Memory) -> np.ndarray:
        """Torch prediction of a plan: x0 (nx,), us (N, nu) -> (N, nx)."""
        assert self.model is not None
        with torch.no_grad():
            x = torch.as_tensor(x0, device=self.device, dtype=self.dtype)[None]
            u = torch.as_tensor(us, device=self.device, dtype=self.dtype)[None]
            return self.model.rollout(x, u, expand_memory(memory, (1,)))[0].cpu().double().numpy()

    def _initial_guess(self, x0: np.ndarray, u_ref: np.ndarray, memory: Memory) -> np.ndarray:
        """Reference actions rolled out from x0 (or held at x0 if the rollout is not finite)."""
        us = np.clip(u_ref[:-1], self.task.action_lower, self.task.action_upper)
        xs = self._rollout(x0, us, memory)
        if not np.all(np.isfinite(xs)):
            xs = np.repeat(x0[None], self.config.horizon, axis=0)
        return self._join(np.concatenate([x0[None], xs], axis=0), us)

    def _fallback(
        self, x0: np.ndarray, t: float, memory: Memory, prev_shift: np.ndarray | None
    ) -> tuple[np.ndarray, FallbackKind]:
        """Shifted previous plan if its prediction passes the checks, else the safe action."""
        n = self.config.horizon
        if prev_shift is not None:
            _, us = self._split(prev_shift)
            xs = self._rollout(x0, us, memory)
            if check_plan(xs, trusted_bounds(self.model)) == "none":
                return self._join(np.concatenate([x0[None], xs], axis=0), us), "shifted_plan"
        u_safe = safe_action(self.task, t)
        us = np.repeat(u_safe[None], n, axis=0)
        xs = np.full((n + 1, self.nx), np.nan)
        xs[0] = x0
        return self._join(xs, us), "safe_action"

    # ------------------------------------------------------------------ bounds and costs
    def _build_bounds(self) -> None:
        """Simple bounds on w: actions from the task, states from the task if asked."""
        n, nx = self.config.horizon, self.nx
        u_lo = np.asarray(self.task.action_lower, dtype=np.float64)
        u_hi = np.asarray(self.task.action_upper, dtype=np.float64)
        if self.config.use_state_bounds:
            x_lo = np.asarray(self.task.state_lower, dtype=np.float64)
            x_hi = np.asarray(self.task.state_upper, dtype=np.float64)
        else:
            x_lo, x_hi = np.full(nx, -np.inf), np.full(nx, np.inf)
        self._lbw = np.concatenate([np.tile(np.concatenate([x_lo, u_lo]), n), x_lo])
        self._ubw = np.concatenate([np.tile(np.concatenate([x_hi, u_hi]), n), x_hi])
        self._x0_index = np.arange(nx)  # x0 is pinned to the measured state
        stride = nx + self.nu
        # indices of x_1..x_N in w (x_N is the tail)
        self._xk_index = np.concatenate(
            [k * stride + np.arange(nx) for k in range(1, n)] + [n * stride + np.arange(nx)]
        )

    def _rti_bounds(self, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Simple bounds on w for one RTI step: (nw,), (nw,).

        The task's bounds, and with `trusted_constraints` the model's trusted region on
        x_1..x_N, widened per component to contain the measured state x0 (nx,) (a state
        already outside the region would otherwise make the QP infeasible; the plan check
        still reports such a plan as untrusted). Where the region and the task's bounds do
        not overlap, the task's bounds are kept.
        """
        lb, ub = self._lbw.copy(), self._ubw.copy()
        trust = trusted_bounds(self.model) if self.config.trusted_constraints else None
        if trust is None:
            return lb, ub
        n = self.config.horizon
        lo = np.tile(np.minimum(trust[0], x0), n)
        hi = np.tile(np.maximum(trust[1], x0), n)
        idx = self._xk_index
        new_lo = np.maximum(lb[idx], lo)
        new_hi = np.minimum(ub[idx], hi)
        ok = new_lo <= new_hi
        lb[idx] = np.where(ok, new_lo, lb[idx])
        ub[idx] = np.where(ok, new_hi, ub[idx])
        return lb, ub

    def _build_cost_functions(self) -> None:
        """CasADi stage/terminal cost values, gradients and Hessians, mapped over the horizon."""
        nx, nu, n = self.nx, self.nu, self.config.horizon
        x, u = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
        xr, ur = ca.SX.sym("xr", nx), ca.SX.sym("ur", nu)
        z = ca.vertcat(x, u)
        ell = self.task.running_cost_casadi(x, u, xr, ur)
        h_st, g_st = ca.hessian(ell, z)
        self._stage_cost = ca.Function("l", [x, u, xr, ur], [ell])
        self._stage_derivs = ca.Function("dl", [x, u, xr, ur], [h_st, g_st]).map(n)
        vf = self.task.terminal_cost_casadi(x, xr)
        h_tf, g_tf = ca.hessian(vf, x)
        self._term_cost = ca.Function("V", [x, xr], [vf])
        self._term_derivs = ca.Function("dV", [x, xr], [h_tf, g_tf])

    # ------------------------------------------------------------------ ipopt
    def _build_nlp(self) -> None:
        """The multiple-shooting NLP with parameters (x_init, x_ref, u_ref)."""
        assert self._f_sym is not None
        c = self.config
        n, nx, nu = c.horizon, self.nx, self.nu
        nw = n * (nx + nu) + nx
        w = ca.SX.sym("w", nw)
        p_x0 = ca.SX.sym("x_init", nx)
        p_xr = ca.SX.sym("x_ref", nx, n + 1)
        p_ur = ca.SX.sym("u_ref", nu, n + 1)
        stride = nx + nu
        xk = [w[k * stride : k * stride + nx] for k in range(n)] + [w[n * stride :]]
        uk = [w[k * stride + nx : (k + 1) * stride] for k in range(n)]
        obj: Any = ca.SX(0)
        g = [xk[0] - p_x0]
        for k in range(n):
            obj += self._stage_cost(xk[k], uk[k], p_xr[:, k], p_ur[:, k])
            g.append(self._f_sym(xk[k], uk[k]) - xk[k + 1])
        obj += self._term_cost(xk[n], p_xr[:, n])
        p = ca.vertcat(p_x0, ca.vec(p_xr), ca.vec(p_ur))
        nlp: dict[str, Any] = {"x": w, "p": p, "f": obj, "g": ca.vertcat(*g)}
        opts: dict[str, Any] = {
            "print_time": False,
            "error_on_fail": False,
            "ipopt": {
                "print_level": 0,
                "sb": "yes",
                "max_iter": c.ipopt_max_iter,
                "tol": c.ipopt_tol,
                "mu_init": c.ipopt_mu_init,
                "warm_start_init_point": "yes",
                "warm_start_bound_push": 1e-6,
                "warm_start_mult_bound_push": 1e-6,
            },
        }
        self._nlp = ca.nlpsol("nmpc", "ipopt", nlp, opts)
        self._ng = (n + 1) * nx

    def _solve_ipopt(
        self,
        w_init: np.ndarray,
        x0: np.ndarray,
        x_ref: np.ndarray,
        u_ref: np.ndarray,
        info: dict[str, Any],
    ) -> tuple[np.ndarray | None, FaultKind]:
        p = np.concatenate([x0, x_ref.T.ravel(order="F"), u_ref.T.ravel(order="F")])
        args: dict[str, Any] = {
            "x0": w_init,
            "p": p,
            "lbx": self._lbw,
            "ubx": self._ubw,
            "lbg": np.zeros(self._ng),
            "ubg": np.zeros(self._ng),
        }
        if self._lam_x is not None and self._lam_g is not None:
            args["lam_x0"], args["lam_g0"] = self._lam_x, self._lam_g
        sol = self._nlp(**args)
        stats = self._nlp.stats()
        info["solver_status"] = stats.get("return_status", "")
        info["iterations"] = int(stats.get("iter_count", -1))
        w = np.asarray(sol["x"]).ravel()
        if not stats.get("success", False):
            status = str(stats.get("return_status", ""))
            return None, "infeasible" if "Infeasible" in status else "solver_failed"
        if not np.all(np.isfinite(w)):
            return None, "non_finite"
        self._lam_x = np.asarray(sol["lam_x"]).ravel()
        self._lam_g = np.asarray(sol["lam_g"]).ravel()
        return w, "none"

    # ------------------------------------------------------------------ RTI
    def _build_qp(self) -> None:
        """The sparse QP of one SQP step, assembled by a CasADi function from stage blocks.

        Variables dw, stage-ordered like w. Equalities: dx_{k+1} - A_k dx_k - B_k du_k = d_k
        with the defect d_k = f(x̄_k, ū_k) - x̄_{k+1}. Simple bounds carry the actuator and
        state bounds and pin dx_0 = x_init - x̄_0.
        """
        c = self.config
        n, nx, nu = c.horizon, self.nx, self.nu
        nz = nx + nu
        a_in = ca.MX.sym("A", nx, nx * n)
        b_in = ca.MX.sym("B", nx, nu * n)
        h_in = ca.MX.sym("H", nz, nz * n)
        ht_in = ca.MX.sym("HN", nx, nx)
        blocks = [h_in[:, k * nz : (k + 1) * nz] for k in range(n)] + [ht_in]
        h_qp = ca.diagcat(*blocks)
        rows = []
        eye = ca.MX.eye(nx)
        for k in range(n):
            ab = ca.horzcat(-a_in[:, k * nx : (k + 1) * nx], -b_in[:, k * nu : (k + 1) * nu], eye)
            left = ca.MX(nx, k * nz)
            right = ca.MX(nx, (n - k - 1) * nz)
            rows.append(ca.horzcat(left, ab, right))
        a_qp = ca.vertcat(*rows)
        self._assemble = ca.Function("assemble", [a_in, b_in, h_in, ht_in], [h_qp, a_qp])
        h_sp = self._assemble.sparsity_out(0)
        a_sp = self._assemble.sparsity_out(1)
        names = [c.qp_solver] + ([c.qp_backup] if c.qp_backup not in (None, c.qp_solver) else [])
        self._qps = [(name, self._make_conic(name, h_sp, a_sp)) for name in names]

    def _make_conic(self, name: str, h_sp: ca.Sparsity, a_sp: ca.Sparsity) -> ca.Function:
        """A CasADi conic solver for the fixed QP sparsity."""
        c = self.config
        if name == "osqp":
            opts: dict[str, Any] = {
                "osqp": {
                    "verbose": False,
                    "eps_abs": c.qp_eps,
                    "eps_rel": c.qp_eps,
                    "max_iter": c.qp_max_iter,
                    "polish": True,
                },
                "warm_start_primal": True,
                "error_on_fail": False,
            }
        elif name == "daqp":
            opts = {"error_on_fail": False}
        elif name == "proxqp":
            opts = {
                "proxqp": {"eps_abs": c.qp_eps, "max_iter": c.qp_max_iter, "verbose": False},
                "error_on_fail": False,
            }
        else:
            opts = {
                "print_iter": False,
                "print_header": False,
                "print_info": False,
                "max_iter": c.qp_max_iter,
                "error_on_fail": False,
            }
        return ca.conic(f"rti_qp_{name}", name, {"h": h_sp, "a": a_sp}, opts)

    def _linearize(
        self, xs: np.ndarray, us: np.ndarray, memory: Memory
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dynamics along the trajectory: xs (N, nx), us (N, nu) -> f (N, nx), A (N, nx, nx),
        B (N, nx, nu)."""
        n, nx, nu = self.config.horizon, self.nx, self.nu
        if self.linearization == "casadi":
            f, a, b = self._lin_sym(xs.T, us.T)
            f_np = np.asarray(f).T
            a_np = np.asarray(a).reshape(nx, n, nx).transpose(1, 0, 2)
            b_np = np.asarray(b).reshape(nx, n, nu).transpose(1, 0, 2)
            return f_np, a_np, b_np
        return self._linearize_torch(xs, us, memory)

    def _linearize_torch(
        self, xs: np.ndarray, us: np.ndarray, memory: Memory
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched torch Jacobians of `model.step` with the memory held fixed along the horizon."""
        assert self.model is not None
        model = self.model
        n, nx, nu = self.config.horizon, self.nx, self.nu
        x = torch.as_tensor(xs, device=self.device, dtype=self.dtype)  # (N, nx)
        u = torch.as_tensor(us, device=self.device, dtype=self.dtype)  # (N, nu)
        if self.linearization == "fd":
            with torch.no_grad():
                nz = nx + nu
                z = torch.cat([x, u], dim=-1)  # (N, nz)
                scale = self.config.fd_step or math.sqrt(torch.finfo(self.dtype).eps)
                hstep = scale * torch.clamp(z.abs(), min=1.0)  # (N, nz)
                pert = z[:, None, :].repeat(1, nz + 1, 1)  # (N, nz+1, nz)
                idx = torch.arange(nz, device=self.device)
                pert[:, idx + 1, idx] += hstep
                mem = expand_memory(memory, (n, nz + 1))
                fz, _ = model.step(pert[..., :nx], pert[..., nx:], mem)  # (N, nz+1, nx)
                f0 = fz[:, 0]  # (N, nx)
                jac = (fz[:, 1:] - f0[:, None]) / hstep[..., None]  # (N, nz, nx)
                jac = jac.transpose(1, 2)  # (N, nx, nz)
            return (
                f0.cpu().double().numpy(),
                jac[..., :nx].cpu().double().numpy(),
                jac[..., nx:].cpu().double().numpy(),
            )

        def f_single(xi: torch.Tensor, ui: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = model.step(xi, ui, memory)[0]
            return out, out

        jac_fn = torch.func.jacrev if self.linearization == "jacrev" else torch.func.jacfwd
        (jac_x, jac_u), f0 = torch.func.vmap(jac_fn(f_single, argnums=(0, 1), has_aux=True))(x, u)
        return (
            f0.detach().cpu().double().numpy(),
            jac_x.detach().cpu().double().numpy(),
            jac_u.detach().cpu().double().numpy(),
        )

    def _use_lagrangian(self) -> bool:
        return self.config.hessian == "lagrangian" and self._f_sym is not None

    def _cost_blocks(
        self,
        xs: np.ndarray,
        us: np.ndarray,
        x_ref: np.ndarray,
        u_ref: np.ndarray,
        lam: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Convexified QP Hessians and cost gradients: (N, nz, nz), (N, nz), (nx, nx), (nx,).

        `lam` (N, nx), the multipliers of the QP's dynamics rows, adds the dynamics'
        curvature: CasADi's QP Lagrangian is `f + lam_aᵀ(A dw)` and our rows are
        `dx_{k+1} - f_z dz_k`, so the NLP multiplier of `f(z_k) - x_{k+1} = 0` is `-lam_a`.
        """
        n, nz = self.config.horizon, self.nx + self.nu
        h, g = self._stage_derivs(xs[:-1].T, us.T, x_ref[:-1].T, u_ref[:-1].T)
        h_np = np.asarray(h).reshape(nz, n, nz).transpose(1, 0, 2)
        if lam is not None:
            hd = self._dyn_hess(xs[:-1].T, us.T, -lam.T)
            h_np = h_np + np.asarray(hd).reshape(nz, n, nz).transpose(1, 0, 2)
        g_np = np.asarray(g).T
        ht, gt = self._term_derivs(xs[-1], x_ref[-1])
        h_all = _project_psd(
            np.concatenate([h_np.reshape(n, nz, nz), _pad_block(np.asarray(ht), nz)[None]], axis=0),
            self.config.hess_min_eig,
        )
        nx = self.nx
        return h_all[:n], g_np, h_all[n, :nx, :nx], np.asarray(gt).ravel()

    def _solve_rti(
        self,
        w_init: np.ndarray,
        x0: np.ndarray,
        x_ref: np.ndarray,
        u_ref: np.ndarray,
        memory: Memory,
        info: dict[str, Any],
    ) -> tuple[np.ndarray | None, FaultKind]:
        c = self.config
        n, nx, nu = c.horizon, self.nx, self.nu
        w = w_init.copy()
        lbw, ubw = self._rti_bounds(x0)
        t_lin = t_qp = 0.0
        for _ in range(c.sqp_iters):
            xs, us = self._split(w)
            t0 = time.perf_counter()
            f, a, b = self._linearize(xs[:-1], us, memory)
            t_lin += time.perf_counter() - t0
            if not (np.all(np.isfinite(f)) and np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
                return None, "non_finite"
            t0 = time.perf_counter()
            lam = self._lam_dyn if self._use_lagrangian() else None
            h_st, g_st, h_t, g_t = self._cost_blocks(xs, us, x_ref, u_ref, lam)
            h_qp, a_qp = self._assemble(
                a.transpose(1, 0, 2).reshape(nx, n * nx),
                b.transpose(1, 0, 2).reshape(nx, n * nu),
                h_st.transpose(1, 0, 2).reshape(nx + nu, n * (nx + nu)),
                h_t,
            )
            g_qp = np.concatenate([g_st.ravel(), g_t])
            defect = (f - xs[1:]).ravel()
            lbx = lbw - w
            ubx = ubw - w
            lbx[self._x0_index] = ubx[self._x0_index] = x0 - xs[0]
            qp_args = {"h": h_qp, "g": g_qp, "a": a_qp, "lba": defect, "uba": defect}
            dw, fault = self._solve_qp(qp_args, lbx, ubx, info)
            t_qp += time.perf_counter() - t0
            if dw is None:
                return None, fault
            w = w + dw
            # one SQP step lands on the linearisation; clip tiny bound violations of the QP
            w = np.minimum(np.maximum(w, lbw), ubw)
            w[self._x0_index] = x0
        info["linearize_seconds"] = t_lin
        info["qp_seconds"] = t_qp
        info["linearization"] = self.linearization
        return w, "none"

    def _solve_qp(
        self, qp: dict[str, Any], lbx: np.ndarray, ubx: np.ndarray, info: dict[str, Any]
    ) -> tuple[np.ndarray | None, FaultKind]:
        """Solve the QP with the primary solver, then the backup; validate each answer.

        Returns:
            The step dw (nw,) or None, and the fault of the last try.
        """
        fault: FaultKind = "solver_failed"
        for name, solver in self._qps:
            sol = self._qp_solve(solver, lbx=lbx, ubx=ubx, **qp)
            stats = solver.stats()
            status = str(stats.get("return_status", ""))
            info["qp_solver"], info["solver_status"] = name, status
            info.setdefault("qp_attempts", []).append(f"{name}: {status}")
            dw = np.asarray(sol["x"]).ravel()
            if not stats.get("success", False) or not np.all(np.isfinite(dw)):
                fault = "infeasible" if "infeas" in status.lower() else "solver_failed"
                continue
            # trust no status alone: qrqp was seen reporting success on a point that broke
            # its bounds (docs/controllers.md)
            viol = max(
                float(np.max(lbx - dw, initial=0.0)),
                float(np.max(dw - ubx, initial=0.0)),
                float(np.max(np.abs(np.asarray(qp["a"] @ dw).ravel() - qp["lba"]), initial=0.0)),
            )
            info["qp_violation"] = viol
            info["qp_attempts"][-1] += f" (violation {viol:.1e})"
            if viol > self.config.qp_feas_tol:
                info["solver_status"] = f"{status} (violation {viol:.2e})"
                fault = "solver_failed"
                continue
            if self._use_lagrangian():
                lam_a = np.asarray(sol["lam_a"]).ravel().reshape(self.config.horizon, self.nx)
                # shifted by one stage for the next control step's linearisation point
                self._lam_dyn = np.concatenate([lam_a[1:], lam_a[-1:]], axis=0)
            return dw, "none"
        return None, fault

    def _qp_solve(self, solver: ca.Function, **kwargs: Any) -> dict[str, Any]:
        """Call a CasADi conic solver (a seam tests use to inject a failing solve)."""
        return solver(**kwargs)


def _pad_block(m: np.ndarray, size: int) -> np.ndarray:
    """An (r, r) block in the top-left corner of a (size, size) zero matrix."""
    out = np.zeros((size, size))
    out[: m.shape[0], : m.shape[1]] = m
    return out


def _project_psd(h: np.ndarray, min_eig: float) -> np.ndarray:
    """Symmetrise (B, m, m) matrices and clip their eigenvalues below at `min_eig`."""
    h = 0.5 * (h + np.swapaxes(h, -1, -2))
    lam, vec = np.linalg.eigh(h)
    lam = np.maximum(lam, min_eig)
    return np.einsum("bij,bj,bkj->bik", vec, lam, vec)
