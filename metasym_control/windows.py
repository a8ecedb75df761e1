"""Training windows: every (history, future) slice of a trajectory set, as tensors.

A window feeds the rollout loss that meta-training and adaptation minimise (see
`metasym_control.models.inner_loop`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from metasym_control.trajectory import Trajectory

# A batch of training windows (see `make_windows`):
#   hs (B, L, nx) history states, ha (B, L, nu) history actions, hv (B, L) bool validity,
#   x0 (B, nx) current state, ua (B, H, nu) future actions, y (B, H, nx) future states.
Batch = dict[str, torch.Tensor]


def make_windows(
    traj: Trajectory, history_len: int, horizon: int, gap: int = 0, seed: int = 0
) -> dict[str, np.ndarray]:
    """Every (history, future) window of a trajectory set, as numpy arrays.

    A window is anchored at a current state index c with c + horizon <= length: its history
    holds the `history_len` transitions before c (slots before the episode start are padded
    with the first state and marked invalid), its future the next `horizon` actions and states.
    With `gap` > 0 each window's history ends g steps before c instead, g drawn uniformly
    from 0..gap (at most c - L, so a full history stays full): a stale context, as a long
    rollout or an MPC plan sees it g steps after its window.

    Args:
        traj: N trajectories.
        history_len: L.
        horizon: H, rollout length of the loss.
        gap: largest staleness of the history, steps (0: the history ends at c).
        seed: seed of the staleness draws.

    Returns:
        Dict with hs (B, L, nx), ha (B, L, nu), hv (B, L) bool, x0 (B, nx), ua (B, H, nu),
        y (B, H, nx); B may be 0 if every trajectory is shorter than `horizon`.
    """
    ii: list[np.ndarray] = []
    cc: list[np.ndarray] = []
    for k in range(traj.num):
        n = int(traj.lengths[k]) - horizon + 1
        if n > 0:
            ii.append(np.full(n, k))
            cc.append(np.arange(n))
    nx, nu, L = traj.state_dim, traj.action_dim, history_len
    if not ii:
        return {
            "hs": np.zeros((0, L, nx)),
            "ha": np.zeros((0, L, nu)),
            "hv": np.zeros((0, L), dtype=bool),
            "x0": np.zeros((0, nx)),
            "ua": np.zeros((0, horizon, nu)),
            "y": np.zeros((0, horizon, nx)),
        }
    i: np.ndarray = np.concatenate(ii)
    c: np.ndarray = np.concatenate(cc)
    end = c
    if gap > 0:
        stale = np.random.default_rng(seed).integers(0, gap + 1, size=c.shape)
        end = c - np.minimum(stale, np.maximum(c - L, 0))
    hidx = end[:, None] - L + np.arange(L)[None, :]  # (B, L)
    hv = hidx >= 0
    hclip = np.maximum(hidx, 0)
    fidx = c[:, None] + np.arange(horizon)[None, :]  # (B, H)
    return {
        "hs": traj.states[i[:, None], hclip],
        "ha": np.where(hv[..., None], traj.actions[i[:, None], hclip], 0.0),
        "hv": hv,
        "x0": traj.states[i, c],
        "ua": traj.actions[i[:, None], fidx],
        "y": traj.states[i[:, None], fidx + 1],
    }


def to_batch(
    windows: dict[str, np.ndarray],
    index: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Batch:
    """Numpy windows (optionally the rows `index`) as torch tensors on `device` / `dtype`."""
    out = {}
    for k, v in windows.items():
        a = v if index is None else v[index]
        t = torch.as_tensor(np.ascontiguousarray(a), device=device)
        out[k] = t if k == "hv" else t.to(dtype)
    return out


def num_windows(windows: dict[str, np.ndarray]) -> int:
    """B, the number of windows."""
    return int(windows["x0"].shape[0])


def window_sampler(
    windows: dict[str, np.ndarray],
    batch_windows: int,
    seed: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Callable[[int], Batch]:
    """A function step -> batch: every window (batch_windows = 0) or a seeded random draw.

    The draw for step s depends only on (seed, s), so adaptation and distributed
    meta-training reproduce exactly.
    """
    n = num_windows(windows)
    if batch_windows <= 0 or batch_windows >= n:
        full = to_batch(windows, None, device, dtype)
        return lambda _s: full

    def draw(s: int) -> Batch:
        rng = np.random.default_rng([seed, s])
        return to_batch(windows, rng.choice(n, batch_windows, replace=False), device, dtype)

    return draw
