"""Gradient-based MPC on CasADi: multiple-shooting ipopt and real-time iteration (RTI)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

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
QPSolver = Literal["hpipm", "osqp", "qrqp", "daqp", "proxqp"]
_QP_SOLVERS = ("hpipm", "osqp", "qrqp", "daqp", "proxqp")


@dataclass(frozen=True)
class NMPCConfig:
    """Gradient-based MPC settings.

    Attributes:
        horizon: N, shooting intervals of `model.dt` each.
        mode: "ipopt" solves the full multiple-shooting NLP every step (needs a model with
            `casadi_step`); "rti" takes `sqp_iters` Gauss-Newton-type SQP steps a control period
            (one: the real-time iteration), each a convex QP.
        qp_solver: CasADi conic plugin of the RTI QP: "qrqp" (default; sparse active-set),
            "hpipm" (a Riccati-based interior-point method for the stage-wise structure of the
            QP), "osqp", "daqp" or "proxqp" (see docs/controllers.md).
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
        qp_eps: osqp and proxqp absolute (osqp: and relative) tolerance.
        qp_max_iter: iteration limit of the QP solver (hpipm: at most 200, an interior-point
            method needs tens).
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
            raise ValueError(
                f"NMPCConfig.qp_solver/qp_backup must be one of {_QP_SOLVERS}: "
                f"{self.qp_solver!r}, {self.qp_backup!r}"
            )
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
      CasADi conic solver. Every CasADi function of this path runs on preallocated numpy
      buffers (`Function.buffer()`), so a step converts no arrays.

    Faults (never raised): a failed or infeasible solve, a non-finite prediction, or a plan
    leaving the model's trusted region fall back to the previous plan shifted by one stage
    (if its own prediction passes), then to the task's reference action at `t` (hover for
    the quadrotor). `last_info` reports `fallback`, `fault` and `fallback_count`, and the
    wall time in seconds of the solve (`solve_seconds`) and, in "rti" mode, of its parts:
    `linearize_seconds` (dynamics), `cost_seconds` (cost derivatives, convexification, QP
    data) and `qp_seconds` (QP solves and their checks).

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
        self._trust = trusted_bounds(model)  # declared once per model
        self._f_sym: ca.Function | None = None
        self._lin_buf: _Buffered | None = None
        self._dyn_hess_buf: _Buffered | None = None
        if has_sym and (c.mode == "ipopt" or lin == "casadi"):
            x = ca.SX.sym("x", self.nx)
            u = ca.SX.sym("u", self.nu)
            fx = model.casadi_step(x, u)  # type: ignore[attr-defined]
            self._f_sym = ca.Function("f", [x, u], [fx])
            n = c.horizon
            z = ca.vertcat(x, u)
            # one expression graph for the value and the stage Jacobian [A_k B_k] (nx, nz)
            jac = ca.Function("lin", [x, u], [fx, ca.densify(ca.jacobian(fx, z))])
            self._lin_buf = _Buffered(jac.map(n))  # (nx, N), (nx, nz·N)
            lam = ca.SX.sym("lam", self.nx)
            h_dyn = ca.hessian(ca.dot(lam, fx), z)[0]
            self._dyn_hess_sp = h_dyn.sparsity()
            hf = ca.Function("hf", [x, u, lam], [ca.densify(h_dyn)])
            self._dyn_hess_buf = _Buffered(hf.map(n))  # (nz, nz·N)
        self._build_psd_plan()
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
        with torch.no_grad():  # the memory is data here, never differentiated
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
            fault = check_plan(xs[1:], self._trust)
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
            if check_plan(xs, self._trust) == "none":
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
        trust = self._trust if self.config.trusted_constraints else None
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
        """CasADi stage/terminal cost values, gradients and Hessians, mapped over the horizon.

        The derivative functions have dense outputs and run on preallocated numpy buffers
        (`_Buffered`), so a call converts nothing.
        """
        nx, nu, n = self.nx, self.nu, self.config.horizon
        x, u = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
        xr, ur = ca.SX.sym("xr", nx), ca.SX.sym("ur", nu)
        z = ca.vertcat(x, u)
        ell = self.task.running_cost_casadi(x, u, xr, ur)
        h_st, g_st = ca.hessian(ell, z)
        self._stage_cost = ca.Function("l", [x, u, xr, ur], [ell])
        self._stage_hess_sp = h_st.sparsity()
        stage = ca.Function("dl", [x, u, xr, ur], [ca.densify(h_st), ca.densify(g_st)])
        self._stage_buf = _Buffered(stage.map(n))  # (nz, nz·N), (nz, N)
        vf = self.task.terminal_cost_casadi(x, xr)
        h_tf, g_tf = ca.hessian(vf, x)
        self._term_cost = ca.Function("V", [x, xr], [vf])
        self._term_hess_sp = h_tf.sparsity()
        term = ca.Function("dV", [x, xr], [ca.densify(h_tf), ca.densify(g_tf)])
        self._term_buf = _Buffered(term)  # (nx, nx), (nx, 1)

    def _build_psd_plan(self) -> None:
        """Split the stage and terminal Hessians into their structurally decoupled blocks.

        The eigenvalue projection of a block-diagonal matrix is the projection of each block,
        so only blocks that couple variables need an eigendecomposition (the quadrotor's
        attitude cost couples the four quaternion components; everything else is diagonal).
        With the Lagrangian Hessian the dynamics' curvature pattern joins the cost's.
        """
        nz = self.nx + self.nu
        pattern = _pattern(self._stage_hess_sp, nz)
        if self._use_lagrangian():
            pattern |= _pattern(self._dyn_hess_sp, nz)
        self._psd_stage = _PSDPlan(pattern)
        self._psd_term = _PSDPlan(_pattern(self._term_hess_sp, self.nx))

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
        """The sparse QP of one SQP step: per solver, one CasADi function that assembles the
        QP from stage blocks and calls the conic solver, run on preallocated buffers.

        Variables dw, stage-ordered like w. Equalities, one row block per stage in hpipm's
        form `A_k dx_k + B_k du_k - dx_{k+1} = -d_k`, with the defect
        `d_k = f(x̄_k, ū_k) - x̄_{k+1}`. Simple bounds carry the actuator and state bounds and
        pin `dx_0 = x_init - x̄_0`. Function inputs (dense, column-major nonzeros):
        J (nx, nz·N) the stage Jacobians [A_k B_k] side by side, H (nz, nz·N) the stage
        Hessians, HN (nx, nx), g (nw,), rhs (N·nx,) = -d, lbx and ubx (nw,); outputs dw (nw,)
        and the multipliers of the dynamics rows lam_a (N·nx,). All solvers share the input
        arrays (`self._qp_in`), so a backup solve copies nothing.
        """
        c = self.config
        n, nx, nu = c.horizon, self.nx, self.nu
        nz = nx + nu
        nw = n * nz + nx
        j_in = ca.MX.sym("J", nx, nz * n)
        h_in = ca.MX.sym("H", nz, nz * n)
        ht_in = ca.MX.sym("HN", nx, nx)
        g_in = ca.MX.sym("g", nw)
        r_in = ca.MX.sym("rhs", n * nx)
        lbx_in = ca.MX.sym("lbx", nw)
        ubx_in = ca.MX.sym("ubx", nw)
        blocks = [h_in[:, k * nz : (k + 1) * nz] for k in range(n)] + [ht_in]
        h_qp = ca.diagcat(*blocks)
        neg_eye = -ca.MX.eye(nx)  # hpipm wants a structurally diagonal -I
        rows = []
        for k in range(n):
            left = ca.MX(nx, k * nz)
            right = ca.MX(nx, (n - k - 1) * nz)
            rows.append(ca.horzcat(left, j_in[:, k * nz : (k + 1) * nz], neg_eye, right))
        a_qp = ca.vertcat(*rows)
        names = [c.qp_solver] + ([c.qp_backup] if c.qp_backup not in (None, c.qp_solver) else [])
        inputs = [j_in, h_in, ht_in, g_in, r_in, lbx_in, ubx_in]
        self._qps: list[tuple[str, _Buffered]] = []
        for name in names:
            conic = self._make_conic(name, h_qp.sparsity(), a_qp.sparsity())
            sol = conic(h=h_qp, g=g_in, a=a_qp, lba=r_in, uba=r_in, lbx=lbx_in, ubx=ubx_in)
            fn = ca.Function(f"rti_qp_{name}", inputs, [sol["x"], sol["lam_a"]])
            buf = _Buffered(fn)
            if self._qps:
                buf.share_args(self._qps[0][1])
            self._qps.append((name, buf))
        self._qp_in = self._qps[0][1].args  # J, H, HN, g, rhs, lbx, ubx

    def _make_conic(self, name: str, h_sp: ca.Sparsity, a_sp: ca.Sparsity) -> ca.Function:
        """A CasADi conic solver for the fixed QP sparsity."""
        c = self.config
        n, nx, nu = c.horizon, self.nx, self.nu
        if name == "hpipm":
            opts: dict[str, Any] = {
                "N": n,
                "nx": [nx] * (n + 1),
                "nu": [nu] * n + [0],
                "ng": [0] * (n + 1),
                "error_on_fail": False,
                "hpipm": {"mode": "speed", "iter_max": min(c.qp_max_iter, 200)},
            }
        elif name == "osqp":
            opts = {
                "osqp": {
                    "verbose": False,
                    "eps_abs": c.qp_eps,
                    "eps_rel": c.qp_eps,
                    "max_iter": c.qp_max_iter,
                    "polish": True,
                },
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
        return ca.conic(f"rti_conic_{name}", name, {"h": h_sp, "a": a_sp}, opts)

    def _linearize(
        self, xs: np.ndarray, us: np.ndarray, memory: Memory
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dynamics along the trajectory: xs (N, nx), us (N, nu) -> f (N, nx), A (N, nx, nx),
        B (N, nx, nu) (copies; the RTI step itself uses `_linearize_stages`)."""
        f, jt = self._linearize_stages(xs, us, memory)
        jac = np.swapaxes(jt, 1, 2)  # (N, nx, nz)
        return f.copy(), jac[..., : self.nx].copy(), jac[..., self.nx :].copy()

    def _linearize_stages(
        self, xs: np.ndarray, us: np.ndarray, memory: Memory
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values and transposed stage Jacobians along the trajectory.

        Args:
            xs: (N, nx) states x̄_0..x̄_{N-1}; us: (N, nu) actions.
            memory: the model's memory (torch models), held fixed along the horizon.

        Returns:
            f (N, nx) = f(x̄_k, ū_k) and jt (N, nz, nx) with jt[k] = [A_k B_k]ᵀ — the memory
            layout of the QP's column-major J input. CasADi results are views of the
            linearisation buffer, valid until the next call.
        """
        n, nx, nz = self.config.horizon, self.nx, self.nx + self.nu
        if self.linearization == "casadi":
            buf = self._lin_buf
            assert buf is not None
            buf.args[0][:] = xs.ravel()  # (N, nx) C-order = (nx, N) column-major
            buf.args[1][:] = us.ravel()
            buf()
            return buf.res[0].reshape(n, nx), buf.res[1].reshape(n, nz, nx)
        return self._linearize_torch(xs, us, memory)

    def _linearize_torch(
        self, xs: np.ndarray, us: np.ndarray, memory: Memory
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched torch Jacobians of `model.step` with the memory held fixed along the horizon:
        f (N, nx), jt (N, nz, nx) as in `_linearize_stages`."""
        assert self.model is not None
        model = self.model
        n, nx, nu = self.config.horizon, self.nx, self.nu
        x = torch.as_tensor(xs, device=self.device, dtype=self.dtype)  # (N, nx)
        u = torch.as_tensor(us, device=self.device, dtype=self.dtype)  # (N, nu)
        if self.linearization == "fd":
            # inference mode: no autograd bookkeeping at all (measured 7% off MetaSym's pass)
            with torch.inference_mode():
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
                jt = (fz[:, 1:] - f0[:, None]) / hstep[..., None]  # (N, nz, nx)
            return f0.cpu().double().numpy(), jt.cpu().double().numpy()

        def f_single(xi: torch.Tensor, ui: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = model.step(xi, ui, memory)[0]
            return out, out

        jac_fn = torch.func.jacrev if self.linearization == "jacrev" else torch.func.jacfwd
        (jac_x, jac_u), f0 = torch.func.vmap(jac_fn(f_single, argnums=(0, 1), has_aux=True))(x, u)
        jt = torch.cat([jac_x, jac_u], dim=-1).transpose(1, 2)  # (N, nz, nx)
        return f0.detach().cpu().double().numpy(), jt.detach().cpu().double().numpy()

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
        curvature: CasADi's QP Lagrangian is `f + lam_aᵀ(A dw)` and our rows
        `A_k dx_k + B_k du_k - dx_{k+1}` linearise `f(z_k) - x_{k+1} = 0`, so `lam_a` is
        that constraint's NLP multiplier.
        """
        n, nx, nz = self.config.horizon, self.nx, self.nx + self.nu
        sb = self._stage_buf
        sb.args[0][:] = xs[:-1].ravel()  # (N, nx) C-order = (nx, N) column-major
        sb.args[1][:] = us.ravel()
        sb.args[2][:] = x_ref[:-1].ravel()
        sb.args[3][:] = u_ref[:-1].ravel()
        sb()
        h = sb.res[0].reshape(n, nz, nz)  # h[k] = H_kᵀ (column-major blocks; symmetric)
        if lam is not None:
            db = self._dyn_hess_buf
            assert db is not None
            db.args[0][:] = sb.args[0]
            db.args[1][:] = sb.args[1]
            db.args[2][:] = lam.ravel()
            db()
            h = h + db.res[0].reshape(n, nz, nz)
        tb = self._term_buf
        tb.args[0][:] = xs[-1]
        tb.args[1][:] = x_ref[-1]
        tb()
        eig = self.config.hess_min_eig
        h_st = self._psd_stage(h, eig)
        h_t = self._psd_term(tb.res[0].reshape(1, nx, nx), eig)[0]
        return h_st, sb.res[1].reshape(n, nz).copy(), h_t, tb.res[1].copy()

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
        nz = nx + nu
        w = w_init.copy()
        lbw, ubw = self._rti_bounds(x0)
        j_in, h_in, ht_in, g_in, r_in, lbx_in, ubx_in = self._qp_in
        t_lin = t_cost = t_qp = 0.0
        for _ in range(c.sqp_iters):
            xs, us = self._split(w)
            t0 = time.perf_counter()
            f, jt = self._linearize_stages(xs[:-1], us, memory)
            t1 = time.perf_counter()
            t_lin += t1 - t0
            if not (np.all(np.isfinite(f)) and np.all(np.isfinite(jt))):
                return None, "non_finite"
            lam = self._lam_dyn if self._use_lagrangian() else None
            h_st, g_st, h_t, g_t = self._cost_blocks(xs, us, x_ref, u_ref, lam)
            # the QP's data, written straight into the solvers' input buffers
            j_in.reshape(n, nz, nx)[:] = jt
            h_in.reshape(n, nz, nz)[:] = h_st  # symmetric: column-major = row-major
            ht_in.reshape(nx, nx)[:] = h_t
            g_in[: n * nz] = g_st.ravel()
            g_in[n * nz :] = g_t
            defect = f - xs[1:]  # (N, nx)
            r_in.reshape(n, nx)[:] = -defect
            np.subtract(lbw, w, out=lbx_in)
            np.subtract(ubw, w, out=ubx_in)
            lbx_in[self._x0_index] = ubx_in[self._x0_index] = x0 - xs[0]
            t2 = time.perf_counter()
            t_cost += t2 - t1
            dw, fault = self._solve_qp(jt, defect, info)
            t_qp += time.perf_counter() - t2
            if dw is None:
                return None, fault
            w = w + dw
            # one SQP step lands on the linearisation; clip tiny bound violations of the QP
            w = np.minimum(np.maximum(w, lbw), ubw)
            w[self._x0_index] = x0
        info["linearize_seconds"] = t_lin
        info["cost_seconds"] = t_cost
        info["qp_seconds"] = t_qp
        info["linearization"] = self.linearization
        return w, "none"

    def _solve_qp(
        self, jt: np.ndarray, defect: np.ndarray, info: dict[str, Any]
    ) -> tuple[np.ndarray | None, FaultKind]:
        """Solve the QP in `self._qp_in` with the primary solver, then the backup; validate
        each answer against the bounds and the dynamics rows.

        Args:
            jt: (N, nz, nx) transposed stage Jacobians; defect: (N, nx) d_k (to check rows).
            info: receives the solver status, attempts and violation.

        Returns:
            The step dw (nw,) or None, and the fault of the last try.
        """
        n, nx, nz = self.config.horizon, self.nx, self.nx + self.nu
        lbx, ubx = self._qp_in[5], self._qp_in[6]
        fault: FaultKind = "solver_failed"
        for name, qp in self._qps:
            self._qp_solve(qp)
            stats = qp.stats()
            status = str(stats.get("return_status", ""))
            unified = str(stats.get("unified_return_status", ""))
            if status.isdigit():  # hpipm reports a bare code
                status = f"{unified} (code {status})"
            info["qp_solver"], info["solver_status"] = name, status
            info.setdefault("qp_attempts", []).append(f"{name}: {status}")
            dw = qp.res[0]
            if not stats.get("success", False) or not np.all(np.isfinite(dw)):
                infeasible = "infeas" in status.lower() or "INFEASIBLE" in unified
                fault = "infeasible" if infeasible else "solver_failed"
                continue
            # trust no status alone: qrqp was seen reporting success on a point that broke
            # its bounds (docs/controllers.md)
            dz = dw[: n * nz].reshape(n, nz)
            rows = np.einsum("kji,kj->ki", jt, dz) - dw[self._xk_index].reshape(n, nx) + defect
            viol = max(
                float(np.max(lbx - dw, initial=0.0)),
                float(np.max(dw - ubx, initial=0.0)),
                float(np.max(np.abs(rows), initial=0.0)),
            )
            info["qp_violation"] = viol
            info["qp_attempts"][-1] += f" (violation {viol:.1e})"
            if viol > self.config.qp_feas_tol:
                info["solver_status"] = f"{status} (violation {viol:.2e})"
                fault = "solver_failed"
                continue
            if self._use_lagrangian():
                lam_a = qp.res[1].reshape(n, nx)
                # shifted by one stage for the next control step's linearisation point
                self._lam_dyn = np.concatenate([lam_a[1:], lam_a[-1:]], axis=0)
            return dw.copy(), "none"
        return None, fault

    def _qp_solve(self, qp: _Buffered) -> None:
        """Run one buffered QP solve (a seam tests use to inject a failing solve)."""
        qp()


# Evaluate CasADi functions through Function.buffer() (False: plain calls, e.g. for a CasADi
# whose Python API lacks it; same numbers, slower; a test compares the two).
_USE_BUFFERS = True


class _Buffered:
    """A CasADi function evaluated in place on preallocated float64 numpy arrays.

    CasADi's `FunctionBuffer` reads the inputs' nonzeros from, and writes the outputs'
    nonzeros to, the bound arrays (column-major order of each sparsity). A plain call instead
    converts every numpy argument to a DM entry by entry: about 35 ns an entry here, 0.2 ms for
    one 17×340 block, which made the conversions of an RTI step cost as much as its QP solve.
    Where `Function.buffer()` is missing (CasADi builds without it) the same arrays go
    through plain calls.

    Attributes:
        fn: the function.
        args: one (nnz_in(i),) array per input; write into them, never rebind them.
        res: one (nnz_out(i),) array per output, overwritten by each call.
    """

    def __init__(self, fn: ca.Function) -> None:
        self.fn = fn
        self.args = [np.zeros(fn.nnz_in(i)) for i in range(fn.n_in())]
        self.res = [np.zeros(fn.nnz_out(i)) for i in range(fn.n_out())]
        # typed Any: the bindings take (index, memoryview) although CasADi's stubs ask for a size
        self._buf: Any = None
        self._eval: Any = None
        if _USE_BUFFERS and hasattr(fn, "buffer"):
            try:
                self._buf, self._eval = fn.buffer()
                for i, a in enumerate(self.args):
                    self._buf.set_arg(i, memoryview(cast(Any, a)))
                for i, r in enumerate(self.res):
                    self._buf.set_res(i, memoryview(cast(Any, r)))
            except (NotImplementedError, TypeError, RuntimeError) as exc:
                logger.info("CasADi Function.buffer unusable (%s): plain calls", exc)
                self._buf = None

    def share_args(self, other: _Buffered) -> None:
        """Read the inputs from `other`'s arrays (same input sparsities)."""
        for i, a in enumerate(other.args):
            if a.shape != self.args[i].shape:
                raise ValueError(f"{self.fn.name()}: input {i} differs from {other.fn.name()}")
            if self._buf is not None:
                self._buf.set_arg(i, memoryview(cast(Any, a)))
        self.args = other.args

    def __call__(self) -> None:
        """Evaluate; raises RuntimeError if CasADi reports a failed evaluation."""
        if self._buf is None:
            fn = self.fn
            outs = fn.call([ca.DM(fn.sparsity_in(i), a) for i, a in enumerate(self.args)])
            for r, out in zip(self.res, outs):
                r[:] = np.asarray(out.nonzeros(), dtype=np.float64)
            return
        self._eval()
        ret = self._buf.ret()
        if ret != 0:
            raise RuntimeError(f"CasADi function {self.fn.name()} failed (return code {ret})")

    def stats(self) -> dict[str, Any]:
        """Statistics of the last evaluation (for a QP function: its conic solver's)."""
        return dict(self._buf.stats() if self._buf is not None else self.fn.stats())


class _PSDPlan:
    """Symmetrise (B, m, m) matrices and clip their eigenvalues below, block by block.

    Args:
        pattern: (m, m) bool structural nonzeros of the matrices; its connected components
            are the blocks (entries outside them are exact zeros).
    """

    def __init__(self, pattern: np.ndarray) -> None:
        m = pattern.shape[0]
        adj = pattern | pattern.T
        label = -np.ones(m, dtype=np.int64)
        comps: list[list[int]] = []
        for start in range(m):
            if label[start] >= 0:
                continue
            label[start] = len(comps)
            comp, stack = [], [start]
            while stack:
                i = stack.pop()
                comp.append(i)
                for j in np.flatnonzero(adj[i]):
                    if label[j] < 0:
                        label[j] = len(comps)
                        stack.append(int(j))
            comps.append(sorted(comp))
        self.diag = np.array([cc[0] for cc in comps if len(cc) == 1], dtype=np.int64)
        self.blocks = [np.array(cc, dtype=np.int64) for cc in comps if len(cc) > 1]

    def __call__(self, h: np.ndarray, min_eig: float) -> np.ndarray:
        """(B, m, m) -> (B, m, m) symmetric with every eigenvalue >= `min_eig`."""
        out = 0.5 * (h + np.swapaxes(h, -1, -2))
        d = self.diag
        if d.size:
            out[:, d, d] = np.maximum(out[:, d, d], min_eig)
        for idx in self.blocks:
            sub = out[:, idx[:, None], idx[None, :]]  # (B, b, b)
            lam, vec = np.linalg.eigh(sub)
            lam = np.maximum(lam, min_eig)
            out[:, idx[:, None], idx[None, :]] = np.einsum("bij,bj,bkj->bik", vec, lam, vec)
        return out


def _pattern(sp: ca.Sparsity, m: int) -> np.ndarray:
    """(m, m) bool matrix of a CasADi sparsity's structural nonzeros."""
    rows, cols = sp.get_triplet()
    out = np.zeros((m, m), dtype=bool)
    out[np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)] = True
    return out
