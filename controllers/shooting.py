"""The multiple-shooting variables w = (x0, u0, x1, u1, ..., xN) of NMPC and their bounds."""

from __future__ import annotations

import numpy as np

from metasym_control.task import Task


class ShootingLayout:
    """Where states and actions sit in the stage-ordered vector w (nw,) = (x0, u0, ..., xN).

    Args:
        horizon: N, shooting intervals.
        nx, nu: state and action dimensions.

    Attributes:
        nz: nx + nu, the variables of one stage (x_k, u_k).
        nw: N·nz + nx, the length of w.
        x0_index: (nx,) indices of x_0 (pinned to the measured state).
        xk_index: (N·nx,) indices of x_1..x_N (x_N is the tail).
    """

    def __init__(self, horizon: int, nx: int, nu: int) -> None:
        self.horizon, self.nx, self.nu = horizon, nx, nu
        self.nz = nx + nu
        self.nw = horizon * self.nz + nx
        self.x0_index = np.arange(nx)
        self.xk_index = np.concatenate(
            [k * self.nz + np.arange(nx) for k in range(1, horizon)]
            + [horizon * self.nz + np.arange(nx)]
        )

    def split(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage-ordered w (nw,) -> states (N+1, nx), actions (N, nu) (a copy)."""
        n, nx, nz = self.horizon, self.nx, self.nz
        body = w[: n * nz].reshape(n, nz)
        xs = np.concatenate([body[:, :nx], w[n * nz :].reshape(1, nx)], axis=0)
        return xs, body[:, nx:].copy()

    def join(self, xs: np.ndarray, us: np.ndarray) -> np.ndarray:
        """States (N+1, nx), actions (N, nu) -> stage-ordered w (nw,)."""
        return np.concatenate([np.concatenate([xs[:-1], us], axis=1).ravel(), xs[-1]])


def task_bounds(
    layout: ShootingLayout, task: Task, use_state_bounds: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Simple bounds on w (nw,), (nw,): actions from the task, states from the task if asked."""
    n, nx = layout.horizon, layout.nx
    u_lo = np.asarray(task.action_lower, dtype=np.float64)
    u_hi = np.asarray(task.action_upper, dtype=np.float64)
    if use_state_bounds:
        x_lo = np.asarray(task.state_lower, dtype=np.float64)
        x_hi = np.asarray(task.state_upper, dtype=np.float64)
    else:
        x_lo, x_hi = np.full(nx, -np.inf), np.full(nx, np.inf)
    lbw = np.concatenate([np.tile(np.concatenate([x_lo, u_lo]), n), x_lo])
    ubw = np.concatenate([np.tile(np.concatenate([x_hi, u_hi]), n), x_hi])
    return lbw, ubw


def with_trusted_region(
    layout: ShootingLayout,
    lbw: np.ndarray,
    ubw: np.ndarray,
    trust: tuple[np.ndarray, np.ndarray] | None,
    x0: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on w (nw,), (nw,) narrowed to the model's trusted region on x_1..x_N.

    The region is widened per component to contain the measured state x0 (nx,) (a state
    already outside the region would otherwise make the QP infeasible; the plan check still
    reports such a plan as untrusted). Where the region and the given bounds do not overlap,
    the given bounds are kept.

    Args:
        layout: the shooting layout.
        lbw, ubw: (nw,) bounds to narrow (not modified).
        trust: the trusted region (lower (nx,), upper (nx,)), or None (copies of the bounds).
        x0: (nx,) measured state.
    """
    lb, ub = lbw.copy(), ubw.copy()
    if trust is None:
        return lb, ub
    n = layout.horizon
    lo = np.tile(np.minimum(trust[0], x0), n)
    hi = np.tile(np.maximum(trust[1], x0), n)
    idx = layout.xk_index
    new_lo = np.maximum(lb[idx], lo)
    new_hi = np.minimum(ub[idx], hi)
    ok = new_lo <= new_hi
    lb[idx] = np.where(ok, new_lo, lb[idx])
    ub[idx] = np.where(ok, new_hi, ub[idx])
    return lb, ub
