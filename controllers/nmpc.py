"""Gradient-based MPC on CasADi: multiple-shooting ipopt and real-time iteration (RTI).

The parts live in their own modules: the shooting layout and bounds (`shooting`), the costs
and their convexified QP blocks (`nmpc_cost`), the dynamics' linearisation (`linearization`),
the RTI QP (`rti_qp`), the ipopt NLP (`nmpc_ipopt`) and the CasADi buffers
(`casadi_buffers`); this module holds the config and the controller that joins them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch

from metasym_control.controller import Controller, History
from metasym_control.controllers.common import (
    FallbackCounter,
    FallbackKind,
    FaultKind,
    check_plan,
    history_memory,
    last_resort,
    model_device_dtype,
    region_tolerance,
    trusted_bounds,
    unrecoverable,
)
from metasym_control.controllers.linearization import (
    Linearizer,
    SymbolicDynamics,
    TorchLinearizer,
    TorchMethod,
)
from metasym_control.controllers.nmpc_cost import HorizonCost
from metasym_control.controllers.nmpc_ipopt import IpoptNLP, Multipliers
from metasym_control.controllers.objective import SequenceObjective
from metasym_control.controllers.offset import (
    DisturbanceObserver,
    OffsetModel,
    check_disturbance_options,
    observe_fallback,
)
from metasym_control.controllers.rti_qp import QP_SOLVERS, RTIQP, QPSolver
from metasym_control.controllers.shooting import ShootingLayout, task_bounds, with_trusted_region
from metasym_control.dynamics import DynamicsModel, Memory, expand_memory
from metasym_control.task import Task

logger = logging.getLogger(__name__)

Mode = Literal["ipopt", "rti"]
LinearizationMethod = Literal["auto", "casadi", "fd", "jacrev", "jacfwd"]


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
        step_fractions: "rti" mode: a line search on the model itself. The SQP step's
            change of the actions (from the warm start's) is scaled by each fraction, every
            candidate is rolled out through the model in one batch and scored by the task
            cost (`SequenceObjective`, untrusted rollouts cost +inf), and the best is flown;
            its rollout, not the QP's linearised states, is the plan that is checked and
            warm-starts the next step. Empty (default): the full step and the linearised
            plan (the classic RTI). A learned model's linearisation can be far off one
            control period later (the figure-8's MetaSym plans were off by a median of
            0.05–3 state stds: docs/controllers.md).
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
        soft_trust: "rti" mode with `trusted_constraints`: the region enters the QP as soft
            bounds (an exact L1 penalty on slack variables, `RTIQP`), so the QP stays feasible
            where the dynamics carry the plan out of it whatever the actions (the quadrotor's
            height integrating an outward vertical velocity made the hard-bounded QP
            infeasible, and qrqp and proxqp then ran to their iteration limits: seconds a
            step), and a plan is accepted when it leaves the region by at most
            `trust_tolerance` of the region's span per component. Ignored (hard bounds) when
            hpipm is the QP solver or its backup.
        trust_repair: "rti" mode without `trusted_constraints`: a plan refused as
            untrusted is solved once more from the same warm start with the region (widened
            to contain the measured state) as hard bounds in the QP, and that plan is flown
            if it passes the same check; only then does the fallback chain take over (the
            free QP keeps the model's whole reach on the steps that do not need the bounds).
            Off by default: on the figure-8 the bounded plans were nearly always refused
            and, re-linearised until they passed, tracked worse (docs/controllers.md). Reported
            per step in `info["trust_repair"]` ("flown" / "refused"), counted by outcome in
            `info["trust_repairs"]` since `reset()`.
        trust_penalty: the soft region's L1 weight per span of violation (large: the slack is
            zero wherever the region can be kept).
        trust_tolerance: how far (a fraction of the region's span per component) a plan of
            the soft region may leave it and still be flown.
        ipopt_max_iter: ipopt iteration limit per control step.
        ipopt_tol: ipopt convergence tolerance.
        ipopt_mu_init: ipopt's initial barrier parameter (small suits a warm start).
        qp_eps: osqp and proxqp absolute (osqp: and relative) tolerance.
        qp_max_iter: iteration limit of the QP solver (hpipm: at most 200, an interior-point
            method needs tens).
        qp_feas_tol: largest bound or equality violation accepted from a QP solution (a
            "successful" solution that breaks it counts as a failed solve).
        disturbance_gain: "rti" mode: offset-free MPC (`controllers/offset.py`): the
            dynamics are `x_{k+1} = f(x_k, u_k) + d` in the QP, the line search and the plan
            checks, d estimated from the model's one-step errors with this gain per step
            (0, default: off).
        disturbance_index: the state components that carry d (None: all).
        supervise: a step whose measured state the task calls not recoverable
            (`Task.recoverable`) is flown by the fallback controller (fault "unrecoverable"),
            whatever the plan; no effect without a fallback controller (as `MPPIConfig`).
    """

    horizon: int = 20
    mode: Mode = "rti"
    qp_solver: QPSolver = "qrqp"
    qp_backup: QPSolver | None = "proxqp"
    sqp_iters: int = 1
    step_fractions: tuple[float, ...] = ()
    linearization: LinearizationMethod = "auto"
    fd_step: float | None = None
    hessian: Literal["cost", "lagrangian"] = "cost"
    hess_min_eig: float = 1e-6
    use_state_bounds: bool = True
    trusted_constraints: bool = True
    soft_trust: bool = False  # measured worse with the adapted MetaSym (docs/controllers.md)
    trust_repair: bool = False  # measured worse on the figure-8 (docs/controllers.md)
    trust_penalty: float = 1e3  # far above the task cost's gradients: exact where feasible
    trust_tolerance: float = 0.05  # what the dynamics force out in a few steps, not more
    ipopt_max_iter: int = 100
    ipopt_tol: float = 1e-6
    ipopt_mu_init: float = 1e-3
    qp_eps: float = 1e-6
    qp_max_iter: int = 4000
    qp_feas_tol: float = 1e-4
    disturbance_gain: float = 0.0
    disturbance_index: tuple[int, ...] | None = None
    supervise: bool = True

    def __post_init__(self) -> None:
        check_disturbance_options("NMPCConfig", self.disturbance_gain, self.disturbance_index)
        if self.disturbance_gain > 0 and self.mode != "rti":
            # the ipopt NLP is built once from casadi_step; d would be one more parameter
            raise ValueError("NMPCConfig.disturbance_gain needs mode='rti'")
        if self.horizon < 1 or self.sqp_iters < 1:
            raise ValueError("NMPCConfig: horizon >= 1 and sqp_iters >= 1 required")
        if self.mode not in ("ipopt", "rti"):
            raise ValueError(f"NMPCConfig.mode must be 'ipopt' or 'rti', got {self.mode!r}")
        if self.qp_solver not in QP_SOLVERS or self.qp_backup not in (*QP_SOLVERS, None):
            raise ValueError(
                f"NMPCConfig.qp_solver/qp_backup must be one of {QP_SOLVERS}: "
                f"{self.qp_solver!r}, {self.qp_backup!r}"
            )
        if self.linearization not in ("auto", "casadi", "fd", "jacrev", "jacfwd"):
            raise ValueError(f"NMPCConfig.linearization unknown: {self.linearization!r}")
        if self.ipopt_max_iter < 0 or self.qp_max_iter < 0:
            raise ValueError("NMPCConfig: iteration limits must be >= 0")
        if any(not 0.0 < f <= 1.0 for f in self.step_fractions):
            raise ValueError(f"NMPCConfig.step_fractions must lie in (0, 1]: {self.step_fractions}")


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
    (if its own prediction passes), then to the fallback controller, then to the task's
    reference action at `t` (hover for the quadrotor). Warm starts hold for one control
    step: an `act` at a time other than the previous one plus `dt` (a fallback MPC called
    only on refused steps) starts cold and reports `cold_start`. `last_info` reports
    `fallback`, `fault` and `fallback_count`, and the
    wall time in seconds of the solve (`solve_seconds`) and, in "rti" mode, of its parts:
    `linearize_seconds` (dynamics), `cost_seconds` (cost derivatives, convexification, QP
    data) and `qp_seconds` (QP solves and their checks).

    Args:
        model: any `DynamicsModel`; mode "ipopt" and linearization "casadi" need a
            `SymbolicModel` (with `casadi_step`).
        task: the task (reference, CasADi costs, bounds).
        config: settings.
        device: torch device of the torch model (linearisation, fallback checks); None:
            the model's own (CPU for a model without tensors).
        dtype: torch dtype of the torch model; None: the model's (float64 without tensors).

    Attributes:
        linearization: the resolved linearisation method ("casadi", "fd", "jacrev", "jacfwd").
        linearizer: the function the RTI step linearises the dynamics with (per model).
        qp: the RTI QP, built once (`set_model` keeps it).
    """

    def __init__(
        self,
        model: DynamicsModel,
        task: Task,
        config: NMPCConfig | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        fallback: Controller | None = None,
    ) -> None:
        self.config = c = config or NMPCConfig()
        self.task = task
        self.fallback = fallback
        self.device, self.dtype = model_device_dtype(model, device, dtype)
        dtype = self.dtype
        self.nx, self.nu = task.state_dim, task.action_dim
        self.model: DynamicsModel | None = None
        self.last_plan: np.ndarray | None = None
        self.last_actions: np.ndarray | None = None
        self.last_info: dict[str, Any] = {}
        self._counter = FallbackCounter()
        self._layout = ShootingLayout(c.horizon, self.nx, self.nu)
        self._lbw, self._ubw = task_bounds(self._layout, task, c.use_state_bounds)
        self._cost = HorizonCost(task, c.horizon, c.hess_min_eig)
        # the soft trusted region needs the general QP solvers (hpipm: hard bounds)
        self._soft = (
            c.mode == "rti"
            and c.trusted_constraints
            and c.soft_trust
            and "hpipm" not in (c.qp_solver, c.qp_backup)
        )
        self.qp = RTIQP(
            self._layout,
            c.qp_solver,
            c.qp_backup,
            eps=c.qp_eps,
            max_iter=c.qp_max_iter,
            feas_tol=c.qp_feas_tol,
            soft=self._soft,
            penalty=c.trust_penalty,
        )
        self._observer: DisturbanceObserver | None = None
        if c.disturbance_gain > 0:
            self._observer = DisturbanceObserver(
                c.disturbance_gain, self.nx, model.dt, c.disturbance_index, self.device, dtype
            )
        self.set_model(model)
        self.reset()

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget the warm start (primal and dual) and the fallback counters."""
        self._solution: np.ndarray | None = None  # (nw,) previous solution, stage-ordered
        self._ipopt_duals: Multipliers | None = None
        self._lam_dyn: np.ndarray | None = None  # (N, nx) multipliers of the RTI dynamics
        self._t_last: float | None = None  # time of the last act (warm starts hold one step)
        self._counter.reset()
        self._repairs = {"flown": 0, "refused": 0}
        if self._observer is not None:
            self._observer.reset()
        if self.fallback is not None:
            self.fallback.reset()
        self.last_plan = None
        self.last_actions = None
        self.last_info = {}

    def observe(self, state: np.ndarray, action: np.ndarray, t: float, history: Any = None) -> None:
        """Take a step another controller flew, state (nx,) and action (nu,) at t (s) after
        `history`, into the disturbance estimate (`DisturbanceObserver.observe`); a no-op
        without `disturbance_gain`."""
        if self._observer is not None and self.model is not None:
            self._observer.observe(self.model, np.asarray(state, np.float64), action, t, history)

    def set_model(self, model: DynamicsModel) -> None:
        """Predict with `model` from the next `act` on (rebuilds the symbolic parts if needed).

        For torch-linearised RTI nothing is rebuilt: a new (e.g. adapted) model only changes
        the numbers that enter the QP.
        """
        c = self.config
        casadi_step = getattr(model, "casadi_step", None)  # SymbolicModel is optional
        lin = c.linearization
        if lin == "auto":
            lin = "casadi" if callable(casadi_step) else "fd"
        if (c.mode == "ipopt" or lin == "casadi") and not callable(casadi_step):
            raise ValueError(
                f"NMPC mode={c.mode!r} linearization={lin!r} needs a model with casadi_step; "
                "use mode='rti' with linearization 'fd', 'jacrev' or 'jacfwd' for torch models"
            )
        self.model = model
        self.linearization: str = lin
        self._trust = trusted_bounds(model)  # declared once per model
        trusted = None
        if self._trust is not None:
            lo, hi = (torch.as_tensor(b, device=self.device, dtype=self.dtype) for b in self._trust)
            trusted = (lo, hi)
        # the line search's objective and the plan checks' rollouts: the model plus the
        # estimated disturbance where there is one
        self._predictor: DynamicsModel = model
        if self._observer is not None:
            self._predictor = OffsetModel(model, self._observer.bias)
        self._objective = SequenceObjective(self._predictor, self.task, trusted)
        self._symbolic: SymbolicDynamics | None = None
        if callable(casadi_step) and (c.mode == "ipopt" or lin == "casadi"):
            self._symbolic = SymbolicDynamics(casadi_step, self.nx, self.nu, c.horizon)
        self.linearizer: Linearizer
        if lin == "casadi":
            assert self._symbolic is not None
            self.linearizer = self._symbolic
        else:
            method = cast(TorchMethod, lin)
            self.linearizer = TorchLinearizer(
                model, method, c.fd_step, device=self.device, dtype=self.dtype
            )
        # the exact-Hessian SQP adds the dynamics' second derivatives: CasADi models only
        self._lagrangian = self._symbolic if c.hessian == "lagrangian" else None
        lagrangian = self._lagrangian
        self._cost.set_extra_curvature(None if lagrangian is None else lagrangian.hessian_sparsity)
        self._ipopt: IpoptNLP | None = None
        if c.mode == "ipopt":
            assert self._symbolic is not None
            self._ipopt = IpoptNLP(
                self._layout,
                self._symbolic.step,
                self._cost,
                self._lbw,
                self._ubw,
                max_iter=c.ipopt_max_iter,
                tol=c.ipopt_tol,
                mu_init=c.ipopt_mu_init,
            )

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
        if self._observer is not None:
            self._observer.correct(x0, t)
        info: dict[str, Any] = {"mode": c.mode}
        if self._t_last is not None and abs(t - self._t_last - self.model.dt) > 0.5 * self.model.dt:
            # not called on the previous step (e.g. used as another controller's fallback):
            # the shifted plan belongs to another state, start cold
            self._solution = self._ipopt_duals = self._lam_dyn = None
            info["cold_start"] = True
        self._t_last = t
        prev_shift = self._shifted_warm(u_ref) if self._solution is not None else None
        w_init = prev_shift if prev_shift is not None else self._initial_guess(x0, u_ref, memory)
        fault: FaultKind = "none"
        w_sol: np.ndarray | None = None
        t0 = time.perf_counter()
        try:
            if self._ipopt is not None:
                w_sol, duals, fault = self._ipopt.solve(
                    w_init, x0, x_ref, u_ref, self._ipopt_duals, info
                )
                if duals is not None:
                    self._ipopt_duals = duals
            else:
                w_sol, fault = self._plan_rti(w_init, x0, x_ref, u_ref, memory, info)
        except Exception as exc:  # a solver that raises is a failed solve, never a crash
            logger.warning("NMPC solve raised %s: %s", type(exc).__name__, exc)
            info["solver_error"] = f"{type(exc).__name__}: {exc}"
            fault, w_sol = "solver_failed", None
        info["solve_seconds"] = time.perf_counter() - t0
        fallback: FallbackKind = "none"
        if fault == "none" and w_sol is not None:
            xs, us = self._layout.split(w_sol)
            fault = check_plan(xs[1:], self._trust, x0, self._tolerance())
        if fault == "untrusted" and self._repairable():
            w_sol, fault = self._repair(w_init, x0, x_ref, u_ref, memory, info)
        if unrecoverable(self.task, x0, self.fallback, c.supervise):
            # the model planned this state as it planned the steps that led here
            fault = "unrecoverable"
            w_sol, fallback = self._fallback(x0, t, memory, None)
        elif fault != "none" or w_sol is None:
            w_sol, fallback = self._fallback(x0, t, memory, prev_shift)
        xs, us = self._layout.split(w_sol)
        if fallback in ("safe_action", "controller"):
            self._solution = None
            self._ipopt_duals = None
            self._lam_dyn = None
        else:
            self._solution = w_sol
        self.last_plan = xs[1:]
        self.last_actions = us
        self.last_info = info
        self._counter.record(info, fallback, fault)
        info["trust_repairs"] = dict(self._repairs)
        action = np.clip(us[0], self.task.action_lower, self.task.action_upper)
        if self._observer is not None:
            self._observer.expect(self.model, x0, action, memory, t)
            info["disturbance"] = self._observer.bias.cpu().double().numpy()
        observe_fallback(self.fallback, x0, action, t, History(0, self.nx, self.nu))
        return action

    def _repairable(self) -> bool:
        """Whether an untrusted plan gets the bounded second solve (`trust_repair`)."""
        c = self.config
        return (
            c.trust_repair
            and c.mode == "rti"
            and not c.trusted_constraints
            and self._ipopt is None
            and self._trust is not None
        )

    def _repair(
        self,
        w_init: np.ndarray,
        x0: np.ndarray,
        x_ref: np.ndarray,
        u_ref: np.ndarray,
        memory: Memory,
        info: dict[str, Any],
    ) -> tuple[np.ndarray | None, FaultKind]:
        """The step's QP again from `w_init` (nw,) with the trusted region as hard bounds, its
        line search and the plan check; x0 (nx,), x_ref (N+1, nx), u_ref (N+1, nu).

        Returns:
            The repaired w (nw,) and "none", or (None, the fault) when the bounded QP fails,
            is infeasible or its plan still leaves the region. A raising solve is a fault.
        """
        w: np.ndarray | None = None
        try:
            w, fault = self._plan_rti(w_init, x0, x_ref, u_ref, memory, {}, bounded=True)
        except Exception as exc:  # as in `act`: never raise
            logger.warning("NMPC bounded re-solve raised %s: %s", type(exc).__name__, exc)
            fault, w = "solver_failed", None
        if fault == "none" and w is not None:
            xs, _ = self._layout.split(w)
            fault = check_plan(xs[1:], self._trust, x0, self._tolerance())
        outcome = "flown" if fault == "none" else "refused"
        info["trust_repair"] = outcome
        self._repairs[outcome] += 1
        return (w if fault == "none" else None), fault

    def _tolerance(self) -> np.ndarray | None:
        """How far (nx,) a plan may leave the trusted region: `trust_tolerance` of its span
        with the soft region, else None (not at all)."""
        return region_tolerance(self._trust, self.config.trust_tolerance) if self._soft else None

    # ------------------------------------------------------------------ warm starts, fallback
    def _shifted_warm(self, u_ref: np.ndarray) -> np.ndarray:
        """The previous solution shifted by one stage; the new last action is the reference."""
        assert self._solution is not None
        xs, us = self._layout.split(self._solution)
        u_tail = np.clip(u_ref[-2], self.task.action_lower, self.task.action_upper)
        us_new = np.concatenate([us[1:], u_tail[None]], axis=0)
        xs_new = np.concatenate([xs[1:], xs[-1:]], axis=0)
        return self._layout.join(xs_new, us_new)

    def _rollout(self, x0: np.ndarray, us: np.ndarray, memory: Memory) -> np.ndarray:
        """Torch prediction of a plan: x0 (nx,), us (N, nu) -> (N, nx)."""
        assert self.model is not None
        with torch.no_grad():
            x = torch.as_tensor(x0, device=self.device, dtype=self.dtype)[None]
            u = torch.as_tensor(us, device=self.device, dtype=self.dtype)[None]
            xs = self._predictor.rollout(x, u, expand_memory(memory, (1,)))
            return xs[0].cpu().double().numpy()

    def _initial_guess(self, x0: np.ndarray, u_ref: np.ndarray, memory: Memory) -> np.ndarray:
        """Reference actions rolled out from x0 (or held at x0 if the rollout is not finite)."""
        us = np.clip(u_ref[:-1], self.task.action_lower, self.task.action_upper)
        xs = self._rollout(x0, us, memory)
        if not np.all(np.isfinite(xs)):
            xs = np.repeat(x0[None], self.config.horizon, axis=0)
        return self._layout.join(np.concatenate([x0[None], xs], axis=0), us)

    def _fallback(
        self, x0: np.ndarray, t: float, memory: Memory, prev_shift: np.ndarray | None
    ) -> tuple[np.ndarray, FallbackKind]:
        """Shifted previous plan if its prediction passes the checks, else the fallback
        controller's action, else the safe action (`last_resort`)."""
        n = self.config.horizon
        if prev_shift is not None:
            _, us = self._layout.split(prev_shift)
            xs = self._rollout(x0, us, memory)
            if check_plan(xs, self._trust, x0, self._tolerance()) == "none":
                plan = self._layout.join(np.concatenate([x0[None], xs], axis=0), us)
                return plan, "shifted_plan"
        u_last, kind = last_resort(self.fallback, self.task, x0, t)
        us = np.repeat(u_last[None], n, axis=0)
        xs = np.full((n + 1, self.nx), np.nan)
        xs[0] = x0
        return self._layout.join(xs, us), kind

    # ------------------------------------------------------------------ RTI
    def _plan_rti(
        self,
        w_init: np.ndarray,
        x0: np.ndarray,
        x_ref: np.ndarray,
        u_ref: np.ndarray,
        memory: Memory,
        info: dict[str, Any],
        bounded: bool = False,
    ) -> tuple[np.ndarray | None, FaultKind]:
        """`_solve_rti` (arguments as there), then the line search when `step_fractions` are
        set: the step's plan w (nw,) or None, and the fault."""
        w, fault = self._solve_rti(w_init, x0, x_ref, u_ref, memory, info, bounded)
        if fault == "none" and w is not None and self.config.step_fractions:
            w = self._line_search(w_init, w, x0, x_ref, u_ref, memory, info)
        return w, fault

    def _line_search(
        self,
        w_init: np.ndarray,
        w_sol: np.ndarray,
        x0: np.ndarray,
        x_ref: np.ndarray,
        u_ref: np.ndarray,
        memory: Memory,
        info: dict[str, Any],
    ) -> np.ndarray:
        """The SQP step scaled by the best of `step_fractions` under the model's own rollout.

        Args:
            w_init: (nw,) the warm start; w_sol: (nw,) after the SQP steps; x0: (nx,);
            x_ref: (N+1, nx); u_ref: (N+1, nu); memory: the model's memory.
            info: receives `step_fraction` (the one flown) and `line_search_seconds`.

        Returns:
            (nw,) the chosen actions with their rollout as states (x0 first); the plan check
            that follows judges that rollout.
        """
        t0 = time.perf_counter()
        _, u0 = self._layout.split(w_init)
        _, u1 = self._layout.split(w_sol)
        fr = np.asarray(self.config.step_fractions, dtype=np.float64)
        cand = u0[None] + fr[:, None, None] * (u1 - u0)[None]  # (F, N, nu)
        cand = np.clip(cand, self.task.action_lower, self.task.action_upper)

        def tt(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, device=self.device, dtype=self.dtype)

        with torch.no_grad():
            costs, xs = self._objective(tt(x0), tt(cand), memory, tt(x_ref), tt(u_ref))
        costs_np = costs.cpu().double().numpy()
        best = int(np.argmin(costs_np)) if np.any(np.isfinite(costs_np)) else 0
        xs_best = xs[best].cpu().double().numpy()
        info["step_fraction"] = float(fr[best])
        info["line_search_seconds"] = time.perf_counter() - t0
        return self._layout.join(np.concatenate([x0[None], xs_best], axis=0), cand[best])

    def _solve_rti(
        self,
        w_init: np.ndarray,
        x0: np.ndarray,
        x_ref: np.ndarray,
        u_ref: np.ndarray,
        memory: Memory,
        info: dict[str, Any],
        bounded: bool = False,
    ) -> tuple[np.ndarray | None, FaultKind]:
        """`sqp_iters` SQP steps from `w_init` (nw,): linearise, build the QP, solve, step.

        Args:
            w_init: (nw,) warm start; x0: (nx,) measured state; x_ref: (N+1, nx);
            u_ref: (N+1, nu); memory: the model's memory, held fixed along the horizon.
            info: receives the QP reports and the time of each part.
            bounded: impose the trusted region as hard bounds whatever
                `trusted_constraints` says (the `trust_repair` solve).

        Returns:
            The new w (nw,) or None, and the fault.
        """
        c = self.config
        w = w_init.copy()
        trust = self._trust if (c.trusted_constraints or bounded) else None
        soft_region = None
        if self._soft and trust is not None and not bounded:
            # soft: the region (widened to contain x0) goes into the QP's penalised rows
            lbw, ubw = self._lbw, self._ubw
            soft_region = (np.minimum(trust[0], x0), np.maximum(trust[1], x0))
        else:
            lbw, ubw = with_trusted_region(self._layout, self._lbw, self._ubw, trust, x0)
        x0_index = self._layout.x0_index
        t_lin = t_cost = t_qp = 0.0
        for _ in range(c.sqp_iters):
            xs, us = self._layout.split(w)
            t0 = time.perf_counter()
            # dynamics along the linearisation point
            f, jt = self.linearizer(xs[:-1], us, memory)
            if self._observer is not None:  # a constant d shifts f, not its Jacobians
                f = f + self._observer.bias.cpu().double().numpy()
            t1 = time.perf_counter()
            t_lin += t1 - t0
            if not (np.all(np.isfinite(f)) and np.all(np.isfinite(jt))):
                return None, "non_finite"
            # convexified cost, plus the dynamics' curvature for the exact-Hessian SQP
            curvature = None
            if self._lagrangian is not None and self._lam_dyn is not None:
                curvature = self._lagrangian.lagrangian_hessians(xs[:-1], us, self._lam_dyn)
            h_st, g_st, h_t, g_t = self._cost.qp_blocks(xs, us, x_ref, u_ref, curvature)
            defect = f - xs[1:]  # (N, nx)
            self.qp.load(jt, (h_st, h_t), (g_st, g_t), defect, (lbw, ubw), w, x0, soft_region)
            t2 = time.perf_counter()
            t_cost += t2 - t1
            # solve, validate, fall through to the backup solver
            dw, lam_dyn, fault = self.qp.solve(jt, defect, info)
            t_qp += time.perf_counter() - t2
            if dw is None:
                return None, fault
            if self._lagrangian is not None and lam_dyn is not None:
                # shifted by one stage for the next control step's linearisation point
                self._lam_dyn = np.concatenate([lam_dyn[1:], lam_dyn[-1:]], axis=0)
            w = w + dw
            # one SQP step lands on the linearisation; clip tiny bound violations of the QP
            w = np.minimum(np.maximum(w, lbw), ubw)
            w[x0_index] = x0
        info["linearize_seconds"] = t_lin
        info["cost_seconds"] = t_cost
        info["qp_seconds"] = t_qp
        info["linearization"] = self.linearization
        return w, "none"
