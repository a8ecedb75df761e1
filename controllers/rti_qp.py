"""The sparse convex QP of one SQP step of NMPC's real-time iteration, built once, solved
with a CasADi conic solver (and a backup) on preallocated buffers."""

from __future__ import annotations

from typing import Any, Literal

import casadi as ca
import numpy as np

from metasym_control.controllers.casadi_buffers import BufferedFunction
from metasym_control.controllers.common import FaultKind
from metasym_control.controllers.shooting import ShootingLayout

QPSolver = Literal["hpipm", "osqp", "qrqp", "daqp", "proxqp"]
QP_SOLVERS: tuple[QPSolver, ...] = ("hpipm", "osqp", "qrqp", "daqp", "proxqp")


class RTIQP:
    """The QP in the step dw, stage-ordered like w, with one buffered function per solver.

    Equalities, one row block per stage in hpipm's form `A_k dx_k + B_k du_k - dx_{k+1} =
    -d_k`, with the defect `d_k = f(x̄_k, ū_k) - x̄_{k+1}`. Simple bounds carry the actuator
    and state bounds and pin `dx_0 = x_init - x̄_0`. Each solver's function assembles the QP
    from stage blocks and calls the conic solver; its inputs (dense, column-major nonzeros)
    are J (nx, nz·N) the stage Jacobians [A_k B_k] side by side, H (nz, nz·N) the stage
    Hessians, HN (nx, nx), g (nw,), rhs (N·nx,) = -d, lbx and ubx (nw,); its outputs dw (nw,)
    and the multipliers of the dynamics rows lam_a (N·nx,). All solvers share the input
    arrays (`inputs`), so a backup solve copies nothing.

    With `soft`, the trusted region on x_1..x_N is soft: slack variables s >= 0 (N·nx, in
    units of the region's span per component) enter rows lbt <= dx_k ± span·s_k <= ubt and
    the cost as penalty·Σs + ridge·|s|²/2, an exact penalty: where the region can be kept,
    the slack is zero for a large enough penalty; where the dynamics carry the plan out of it
    whatever the actions (a position integrating an outward velocity), the QP stays feasible
    and leaves it by the least it must. Extra inputs: lbt, ubt (N·nx,) the region relative to
    the linearisation point, span (N·nx,). The general solvers only (hpipm takes its
    stage-wise structure without these rows).

    Args:
        layout: the shooting layout.
        solver: the primary conic plugin; backup: a second one tried after a failure, or None.
        eps: osqp and proxqp tolerance; max_iter: the solvers' iteration limit (hpipm: at
            most 200); feas_tol: largest bound or row violation accepted from a solution.
        soft: soft trusted region (see above); penalty, ridge: its weights.

    Attributes:
        solvers: (name, function) per solver, the primary first.
        inputs: the shared input arrays J, H, HN, g, rhs, lbx, ubx (write into them).
    """

    def __init__(
        self,
        layout: ShootingLayout,
        solver: QPSolver,
        backup: QPSolver | None,
        *,
        eps: float,
        max_iter: int,
        feas_tol: float,
        soft: bool = False,
        penalty: float = 1e3,
        ridge: float = 1.0,
    ) -> None:
        if soft and "hpipm" in (solver, backup):
            raise ValueError("RTIQP: a soft trusted region needs general QP solvers, not hpipm")
        self.layout = layout
        self.soft = soft
        self.eps, self.max_iter, self.feas_tol = eps, max_iter, feas_tol
        n, nx, nz, nw = layout.horizon, layout.nx, layout.nz, layout.nw
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
        names = [solver] + ([backup] if backup not in (None, solver) else [])
        inputs = [j_in, h_in, ht_in, g_in, r_in, lbx_in, ubx_in]
        qp = {"h": h_qp, "g": g_in, "a": a_qp, "lba": r_in, "uba": r_in}
        qp.update(lbx=lbx_in, ubx=ubx_in)
        if soft:
            qp, extra = self._soft_qp(qp, penalty, ridge)
            inputs += extra
        self.solvers: list[tuple[str, BufferedFunction]] = []
        for name in names:
            conic = self._make_conic(name, qp["h"].sparsity(), qp["a"].sparsity())
            sol = conic(**qp)
            outputs = [sol["x"][:nw], sol["lam_a"][: n * nx]]
            fn = ca.Function(f"rti_qp_{name}", inputs, outputs)
            buf = BufferedFunction(fn)
            if self.solvers:
                buf.share_args(self.solvers[0][1])
            self.solvers.append((name, buf))
        self.inputs = self.solvers[0][1].args  # J, H, HN, g, rhs, lbx, ubx[, lbt, ubt, span]

    def _soft_qp(
        self, qp: dict[str, ca.MX], penalty: float, ridge: float
    ) -> tuple[dict[str, ca.MX], list[ca.MX]]:
        """The QP with the slack variables and rows of the soft trusted region appended.

        One row per bounded component, lbt <= dx_k + span·(s⁻_k - s⁺_k) <= ubt, with s⁺, s⁻
        >= 0 (two rows per component, one per side, stalled qrqp on their degeneracy).
        """
        layout = self.layout
        n, nx, nw = layout.horizon, layout.nx, layout.nw
        m = n * nx
        lbt, ubt, span = ca.MX.sym("lbt", m), ca.MX.sym("ubt", m), ca.MX.sym("span", m)
        # E selects x_1..x_N out of dw
        pick = ca.MX(
            ca.DM(ca.Sparsity.triplet(m, nw, list(range(m)), layout.xk_index.tolist()), 1.0)
        )
        scale = ca.diag(span)
        soft = {
            "h": ca.diagcat(qp["h"], ridge * ca.MX.eye(2 * m)),
            "g": ca.vertcat(qp["g"], penalty * ca.DM.ones(2 * m)),
            "a": ca.vertcat(
                ca.horzcat(qp["a"], ca.MX(qp["a"].size1(), 2 * m)),
                ca.horzcat(pick, -scale, scale),
            ),
            "lba": ca.vertcat(qp["lba"], lbt),
            "uba": ca.vertcat(qp["uba"], ubt),
            "lbx": ca.vertcat(qp["lbx"], ca.DM.zeros(2 * m)),
            "ubx": ca.vertcat(qp["ubx"], ca.DM.inf(2 * m)),
        }
        return soft, [lbt, ubt, span]

    def _make_conic(self, name: str, h_sp: ca.Sparsity, a_sp: ca.Sparsity) -> ca.Function:
        """A CasADi conic solver for the fixed QP sparsity."""
        n, nx, nu = self.layout.horizon, self.layout.nx, self.layout.nu
        if name == "hpipm":
            opts: dict[str, Any] = {
                "N": n,
                "nx": [nx] * (n + 1),
                "nu": [nu] * n + [0],
                "ng": [0] * (n + 1),
                "error_on_fail": False,
                "hpipm": {"mode": "speed", "iter_max": min(self.max_iter, 200)},
            }
        elif name == "osqp":
            opts = {
                "osqp": {
                    "verbose": False,
                    "eps_abs": self.eps,
                    "eps_rel": self.eps,
                    "max_iter": self.max_iter,
                    "polish": True,
                },
                "error_on_fail": False,
            }
        elif name == "daqp":
            opts = {"error_on_fail": False}
        elif name == "proxqp":
            opts = {
                "proxqp": {"eps_abs": self.eps, "max_iter": self.max_iter, "verbose": False},
                "error_on_fail": False,
            }
        else:
            opts = {
                "print_iter": False,
                "print_header": False,
                "print_info": False,
                "max_iter": self.max_iter,
                "error_on_fail": False,
            }
        return ca.conic(f"rti_conic_{name}", name, {"h": h_sp, "a": a_sp}, opts)

    def load(
        self,
        jt: np.ndarray,
        hessians: tuple[np.ndarray, np.ndarray],
        gradients: tuple[np.ndarray, np.ndarray],
        defect: np.ndarray,
        bounds: tuple[np.ndarray, np.ndarray],
        w: np.ndarray,
        x0: np.ndarray,
        trust: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Write the QP's data straight into the solvers' input buffers.

        Args:
            jt: (N, nz, nx) transposed stage Jacobians [A_k B_k]ᵀ.
            hessians: stage (N, nz, nz) and terminal (nx, nx) Hessians (symmetric).
            gradients: stage (N, nz) and terminal (nx,) cost gradients.
            defect: (N, nx) d_k = f(x̄_k, ū_k) - x̄_{k+1}.
            bounds: (nw,) lower and upper bounds on w.
            w: (nw,) the linearisation point; x0: (nx,) measured state (pins dx_0).
            trust: with `soft`: the trusted region (lower (nx,), upper (nx,)) on x_1..x_N,
                or None (none).
        """
        n, nx, nz = self.layout.horizon, self.layout.nx, self.layout.nz
        j_in, h_in, ht_in, g_in, r_in, lbx_in, ubx_in = self.inputs[:7]
        j_in.reshape(n, nz, nx)[:] = jt
        h_in.reshape(n, nz, nz)[:] = hessians[0]  # symmetric: column-major = row-major
        ht_in.reshape(nx, nx)[:] = hessians[1]
        g_in[: n * nz] = gradients[0].ravel()
        g_in[n * nz :] = gradients[1]
        r_in.reshape(n, nx)[:] = -defect
        np.subtract(bounds[0], w, out=lbx_in)
        np.subtract(bounds[1], w, out=ubx_in)
        x0_index = self.layout.x0_index
        lbx_in[x0_index] = ubx_in[x0_index] = x0 - w[x0_index]
        if self.soft:
            lbt_in, ubt_in, span_in = self.inputs[7:]
            if trust is None:
                lo, hi = np.full(nx, -np.inf), np.full(nx, np.inf)
            else:
                lo, hi = trust
            width = hi - lo
            span_in.reshape(n, nx)[:] = np.where(np.isfinite(width) & (width > 0), width, 1.0)
            xk = w[self.layout.xk_index].reshape(n, nx)
            np.subtract(lo, xk, out=lbt_in.reshape(n, nx))
            np.subtract(hi, xk, out=ubt_in.reshape(n, nx))

    def solve(
        self, jt: np.ndarray, defect: np.ndarray, info: dict[str, Any]
    ) -> tuple[np.ndarray | None, np.ndarray | None, FaultKind]:
        """Solve the loaded QP with the primary solver, then the backup; validate each answer
        against the bounds and the dynamics rows.

        Args:
            jt: (N, nz, nx) transposed stage Jacobians; defect: (N, nx) d_k (to check rows).
            info: receives the solver status, attempts and violation.

        Returns:
            The step dw (nw,) and the multipliers of the dynamics rows (N, nx), or None and
            None, and the fault of the last try.
        """
        n, nx, nz = self.layout.horizon, self.layout.nx, self.layout.nz
        lbx, ubx = self.inputs[5], self.inputs[6]  # hard bounds; the soft rows are not checked
        fault: FaultKind = "solver_failed"
        for name, qp in self.solvers:
            self.evaluate(qp)
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
            xk = dw[self.layout.xk_index].reshape(n, nx)
            rows = np.einsum("kji,kj->ki", jt, dz) - xk + defect
            viol = max(
                float(np.max(lbx - dw, initial=0.0)),
                float(np.max(dw - ubx, initial=0.0)),
                float(np.max(np.abs(rows), initial=0.0)),
            )
            info["qp_violation"] = viol
            info["qp_attempts"][-1] += f" (violation {viol:.1e})"
            if viol > self.feas_tol:
                info["solver_status"] = f"{status} (violation {viol:.2e})"
                fault = "solver_failed"
                continue
            return dw.copy(), qp.res[1].reshape(n, nx).copy(), "none"
        return None, None, fault

    def evaluate(self, qp: BufferedFunction) -> None:
        """Run one buffered QP solve (a seam tests use to inject a failing solve)."""
        qp()
