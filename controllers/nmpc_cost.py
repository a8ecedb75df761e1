"""The task's CasADi costs over the NMPC horizon and their convexified QP blocks."""

from __future__ import annotations

import casadi as ca
import numpy as np

from metasym_control.controllers.casadi_buffers import BufferedFunction
from metasym_control.task import Task


class HorizonCost:
    """Stage and terminal costs of a task as CasADi functions, with their derivatives.

    The symbolic functions build the ipopt NLP; for the RTI QP the Hessians and gradients
    are mapped over the horizon, evaluated on preallocated buffers (`BufferedFunction`, dense
    outputs, so a call converts nothing) and projected to be positive definite.

    Args:
        task: the task (its `running_cost_casadi` and `terminal_cost_casadi`).
        horizon: N.
        hess_min_eig: smallest eigenvalue the projected Hessians keep.

    Attributes:
        stage: CasADi l(x, u, x_ref, u_ref). terminal: CasADi V(x, x_ref).
    """

    def __init__(self, task: Task, horizon: int, hess_min_eig: float) -> None:
        nx, nu = task.state_dim, task.action_dim
        self.horizon, self.nx, self.nu = horizon, nx, nu
        self.hess_min_eig = hess_min_eig
        x, u = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
        xr, ur = ca.SX.sym("xr", nx), ca.SX.sym("ur", nu)
        z = ca.vertcat(x, u)
        ell = task.running_cost_casadi(x, u, xr, ur)
        h_st, g_st = ca.hessian(ell, z)
        self.stage = ca.Function("l", [x, u, xr, ur], [ell])
        self._stage_hess_sp = h_st.sparsity()
        stage = ca.Function("dl", [x, u, xr, ur], [ca.densify(h_st), ca.densify(g_st)])
        self._stage_buf = BufferedFunction(stage.map(horizon))  # (nz, nz·N), (nz, N)
        vf = task.terminal_cost_casadi(x, xr)
        h_tf, g_tf = ca.hessian(vf, x)
        self.terminal = ca.Function("V", [x, xr], [vf])
        term = ca.Function("dV", [x, xr], [ca.densify(h_tf), ca.densify(g_tf)])
        self._term_buf = BufferedFunction(term)  # (nx, nx), (nx, 1)
        self._project_terminal = PSDProjection(sparsity_pattern(h_tf.sparsity(), nx))
        self.set_extra_curvature(None)

    def set_extra_curvature(self, sparsity: ca.Sparsity | None) -> None:
        """Declare the pattern of Hessians added to the stage Hessians (the dynamics'
        curvature of the Lagrangian), or None.

        The eigenvalue projection of a block-diagonal matrix is the projection of each block,
        so only blocks that couple variables need an eigendecomposition (the quadrotor's
        attitude cost couples the four quaternion components; everything else is diagonal).
        """
        nz = self.nx + self.nu
        pattern = sparsity_pattern(self._stage_hess_sp, nz)
        if sparsity is not None:
            pattern |= sparsity_pattern(sparsity, nz)
        self._project_stage = PSDProjection(pattern)

    def qp_blocks(
        self,
        xs: np.ndarray,
        us: np.ndarray,
        x_ref: np.ndarray,
        u_ref: np.ndarray,
        extra_hessians: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Convexified QP Hessians and cost gradients along a trajectory.

        Args:
            xs: (N+1, nx) states; us: (N, nu) actions; x_ref: (N+1, nx); u_ref: (N+1, nu).
            extra_hessians: (N, nz, nz) added to the stage Hessians before the projection
                (the dynamics' curvature of the Lagrangian), or None.

        Returns:
            Stage Hessians (N, nz, nz), stage gradients (N, nz), terminal Hessian (nx, nx)
            and terminal gradient (nx,).
        """
        n, nx, nz = self.horizon, self.nx, self.nx + self.nu
        sb = self._stage_buf
        sb.args[0][:] = xs[:-1].ravel()  # (N, nx) C-order = (nx, N) column-major
        sb.args[1][:] = us.ravel()
        sb.args[2][:] = x_ref[:-1].ravel()
        sb.args[3][:] = u_ref[:-1].ravel()
        sb()
        h = sb.res[0].reshape(n, nz, nz)  # h[k] = H_kᵀ (column-major blocks; symmetric)
        if extra_hessians is not None:
            h = h + extra_hessians
        tb = self._term_buf
        tb.args[0][:] = xs[-1]
        tb.args[1][:] = x_ref[-1]
        tb()
        eig = self.hess_min_eig
        h_st = self._project_stage(h, eig)
        h_t = self._project_terminal(tb.res[0].reshape(1, nx, nx), eig)[0]
        return h_st, sb.res[1].reshape(n, nz).copy(), h_t, tb.res[1].copy()


class PSDProjection:
    """Symmetrise (B, m, m) matrices and clip their eigenvalues below, block by block.

    Args:
        pattern: (m, m) bool structural nonzeros of the matrices; its connected components
            are the blocks (entries outside them are exact zeros).

    Attributes:
        diag: indices of the uncoupled variables (1×1 blocks).
        blocks: index arrays of the coupled blocks.
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


def sparsity_pattern(sp: ca.Sparsity, m: int) -> np.ndarray:
    """(m, m) bool matrix of a CasADi sparsity's structural nonzeros."""
    rows, cols = sp.get_triplet()
    out = np.zeros((m, m), dtype=bool)
    out[np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)] = True
    return out
