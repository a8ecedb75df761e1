"""NMPC's ipopt path: the multiple-shooting NLP, solved warm-started every control step."""

from __future__ import annotations

from typing import Any

import casadi as ca
import numpy as np

from metasym_control.controllers.common import FaultKind
from metasym_control.controllers.nmpc_cost import HorizonCost
from metasym_control.controllers.shooting import ShootingLayout

# a solution's multipliers lam_x (nw,), lam_g ((N+1)·nx,): the next solve's dual warm start
Multipliers = tuple[np.ndarray, np.ndarray]


class IpoptNLP:
    """The multiple-shooting NLP over w with parameters (x_init, x_ref, u_ref).

    Args:
        layout: the shooting layout of w.
        step: CasADi dynamics f(x, u).
        cost: the task's horizon costs (`stage`, `terminal`).
        lbw, ubw: (nw,) simple bounds on w.
        max_iter, tol, mu_init: ipopt's iteration limit, tolerance and initial barrier
            parameter.
    """

    def __init__(
        self,
        layout: ShootingLayout,
        step: ca.Function,
        cost: HorizonCost,
        lbw: np.ndarray,
        ubw: np.ndarray,
        *,
        max_iter: int,
        tol: float,
        mu_init: float,
    ) -> None:
        n, nx, nu, nz = layout.horizon, layout.nx, layout.nu, layout.nz
        w = ca.SX.sym("w", layout.nw)
        p_x0 = ca.SX.sym("x_init", nx)
        p_xr = ca.SX.sym("x_ref", nx, n + 1)
        p_ur = ca.SX.sym("u_ref", nu, n + 1)
        xk = [w[k * nz : k * nz + nx] for k in range(n)] + [w[n * nz :]]
        uk = [w[k * nz + nx : (k + 1) * nz] for k in range(n)]
        obj: Any = ca.SX(0)
        g = [xk[0] - p_x0]
        for k in range(n):
            obj += cost.stage(xk[k], uk[k], p_xr[:, k], p_ur[:, k])
            g.append(step(xk[k], uk[k]) - xk[k + 1])
        obj += cost.terminal(xk[n], p_xr[:, n])
        p = ca.vertcat(p_x0, ca.vec(p_xr), ca.vec(p_ur))
        nlp: dict[str, Any] = {"x": w, "p": p, "f": obj, "g": ca.vertcat(*g)}
        opts: dict[str, Any] = {
            "print_time": False,
            "error_on_fail": False,
            "ipopt": {
                "print_level": 0,
                "sb": "yes",
                "max_iter": max_iter,
                "tol": tol,
                "mu_init": mu_init,
                "warm_start_init_point": "yes",
                "warm_start_bound_push": 1e-6,
                "warm_start_mult_bound_push": 1e-6,
            },
        }
        self._solver = ca.nlpsol("nmpc", "ipopt", nlp, opts)
        self._lbw, self._ubw = lbw, ubw
        self._zeros_g = np.zeros((n + 1) * nx)

    def solve(
        self,
        w_init: np.ndarray,
        x0: np.ndarray,
        x_ref: np.ndarray,
        u_ref: np.ndarray,
        multipliers: Multipliers | None,
        info: dict[str, Any],
    ) -> tuple[np.ndarray | None, Multipliers | None, FaultKind]:
        """Solve from the primal guess `w_init` and, if given, the dual one `multipliers`.

        Args:
            w_init: (nw,) initial guess; x0: (nx,) measured state; x_ref: (N+1, nx);
            u_ref: (N+1, nu).
            multipliers: the previous solution's multipliers, or None.
            info: receives the solver status and the iteration count.

        Returns:
            The solution w (nw,) and its multipliers, or None and None, and the fault.
        """
        p = np.concatenate([x0, x_ref.T.ravel(order="F"), u_ref.T.ravel(order="F")])
        args: dict[str, Any] = {
            "x0": w_init,
            "p": p,
            "lbx": self._lbw,
            "ubx": self._ubw,
            "lbg": self._zeros_g,
            "ubg": self._zeros_g,
        }
        if multipliers is not None:
            args["lam_x0"], args["lam_g0"] = multipliers
        sol = self._solver(**args)
        stats = self._solver.stats()
        info["solver_status"] = stats.get("return_status", "")
        info["iterations"] = int(stats.get("iter_count", -1))
        w = np.asarray(sol["x"]).ravel()
        if not stats.get("success", False):
            status = str(stats.get("return_status", ""))
            return None, None, "infeasible" if "Infeasible" in status else "solver_failed"
        if not np.all(np.isfinite(w)):
            return None, None, "non_finite"
        duals = (np.asarray(sol["lam_x"]).ravel(), np.asarray(sol["lam_g"]).ravel())
        return w, duals, "none"
