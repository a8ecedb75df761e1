"""Common base of the learned dynamics models: normalisation, window loss, fast weights, spec."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from metasym_control.dynamics import AdaptBudget, DynamicsModel, Memory, rollout_by_steps
from metasym_control.models.coordinates import CoordinateMap
from metasym_control.models.inner_loop import adapt_model
from metasym_control.trajectory import Trajectory
from metasym_control.windows import Batch


class LearnedModel(nn.Module):
    """Base of MetaSym and the learned baselines, implementing `DynamicsModel`.

    Subclasses implement `init_memory`, `step`, `fast_weight_names` and may override
    `rollout` (default: repeated `step`) and `auxiliary_loss`. The base holds the
    normalisation statistics as buffers (so they travel in checkpoints), the window loss that
    meta-training and adaptation minimise, and `adapt`.

    Attributes:
        state_dim: nx; action_dim: nu; dt: control period (s); history_len: L.
        config: the subclass's frozen config dataclass.
        coords: canonical-coordinate map (None for models that do not use one).
        env_id: id (with version) of the environment the model is meant for.
    """

    config_class: ClassVar[type]
    config: Any
    state_mean: torch.Tensor
    state_std: torch.Tensor
    action_mean: torch.Tensor
    action_std: torch.Tensor
    delta_std: torch.Tensor
    trusted_lo: torch.Tensor
    trusted_hi: torch.Tensor
    # the standardised canonical coordinates (models with a coordinate map; see
    # `_on_normalization`): z = x[canonical_index] * canonical_gain - canonical_offset
    canonical_index: torch.Tensor  # (2d,) int64, the state's q then p components
    canonical_gain: torch.Tensor  # (2d,) p_scale / canonical_scale (1 / scale for q)
    canonical_offset: torch.Tensor  # (2d,) canonical_mean / canonical_scale
    canonical_mean: torch.Tensor  # (2d,) mean of (q, p) in physical canonical units
    canonical_scale: torch.Tensor  # (2d,) standardising scale of (q, p), pairs balanced
    canonical_delta_std: torch.Tensor  # (2d,) one-step change's std in standardised units
    canonical_to_state: torch.Tensor  # (2d, nx): a change of z as a change of the state

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        dt: float,
        history_len: int,
        coords: CoordinateMap | None = None,
        env_id: str = "",
    ) -> None:
        super().__init__()
        if coords is not None and coords.state_dim != state_dim:
            raise ValueError(f"coordinate map is for nx={coords.state_dim}, model nx={state_dim}")
        self.state_dim = int(state_dim)
        self.action_dim = int(action_dim)
        self.dt = float(dt)
        self.history_len = int(history_len)
        self.coords = coords
        self.env_id = env_id
        self.register_buffer("state_mean", torch.zeros(state_dim, dtype=torch.float64))
        self.register_buffer("state_std", torch.ones(state_dim, dtype=torch.float64))
        self.register_buffer("action_mean", torch.zeros(action_dim, dtype=torch.float64))
        self.register_buffer("action_std", torch.ones(action_dim, dtype=torch.float64))
        self.register_buffer("delta_std", torch.ones(state_dim, dtype=torch.float64))
        self.register_buffer(
            "trusted_lo", torch.full((state_dim,), -torch.inf, dtype=torch.float64)
        )
        self.register_buffer("trusted_hi", torch.full((state_dim,), torch.inf, dtype=torch.float64))
        if coords is not None:
            # the standardised canonical coordinates (set in _on_normalization)
            d, f64 = coords.dim_q, torch.float64
            self.register_buffer("canonical_mean", torch.zeros(2 * d, dtype=f64))
            self.register_buffer("canonical_scale", torch.ones(2 * d, dtype=f64))
            self.register_buffer("canonical_delta_std", torch.ones(2 * d, dtype=f64))
            index = torch.as_tensor(coords.canonical_index(), dtype=torch.int64)
            self.register_buffer("canonical_index", index)
            self.register_buffer("canonical_gain", torch.ones(2 * d, dtype=f64))
            self.register_buffer("canonical_offset", torch.zeros(2 * d, dtype=f64))
            self.register_buffer("canonical_to_state", torch.zeros(2 * d, state_dim, dtype=f64))
            self._on_normalization()

    # ---------------------------------------------------------------- normalisation
    def fit_normalization(
        self, data: Trajectory | Sequence[Trajectory], margin: float = 0.1
    ) -> None:
        """Set the normalisation statistics and the trusted region from training data.

        Args:
            data: trajectories of the training systems.
            margin: the trusted box is the data's state range widened by this fraction of it.
        """
        parts = [data] if isinstance(data, Trajectory) else list(data)
        self.set_normalization(data_statistics(parts), margin)

    def set_normalization(self, stats: dict[str, np.ndarray], margin: float = 0.1) -> None:
        """Set the buffers from pooled sums (see `data_statistics`; ranks may add theirs up)."""
        n = float(stats["count"][0])
        if n < 2:
            raise ValueError("normalisation needs at least two valid transitions")

        def mean_std(key: str) -> tuple[np.ndarray, np.ndarray]:
            mean = stats[key + "_sum"] / n
            var = np.maximum(stats[key + "_sq"] / n - mean**2, 0.0)
            std = np.sqrt(var)
            return mean, np.where(std > 1e-9, std, 1.0)

        xm, xs = mean_std("x")
        um, us = mean_std("u")
        _, ds = mean_std("dx")
        lo, hi = stats["x_min"], stats["x_max"]
        span = hi - lo
        dev, dt = self.state_mean.device, self.state_mean.dtype

        def as_buffer(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, device=dev, dtype=dt)

        with torch.no_grad():
            self.state_mean.copy_(as_buffer(xm))
            self.state_std.copy_(as_buffer(xs))
            self.action_mean.copy_(as_buffer(um))
            self.action_std.copy_(as_buffer(us))
            self.delta_std.copy_(as_buffer(ds))
            self.trusted_lo.copy_(as_buffer(lo - margin * span))
            self.trusted_hi.copy_(as_buffer(hi + margin * span))
        self._on_normalization()

    def _on_normalization(self) -> None:
        """Canonical statistics (models with a coordinate map).

        Each (q_i, p_i) pair is scaled so that s_q,i * s_p,i is one common constant: the
        standardisation then multiplies the symplectic form by a constant, so a symplectic map
        of the standardised coordinates is symplectic in the physical ones too.
        """
        c = self.coords
        if c is None:
            return
        idx = self.canonical_index
        pscale = torch.ones(2 * c.dim_q, dtype=self.state_mean.dtype, device=idx.device)
        pscale[c.dim_q :] = torch.as_tensor(c.p_scales, dtype=pscale.dtype, device=idx.device)
        mean = self.state_mean[idx] * pscale
        std = self.state_std[idx] * pscale
        sq, sp = std[: c.dim_q], std[c.dim_q :]
        prod = sq * sp
        fix = torch.sqrt(torch.exp(torch.log(prod).mean()) / prod)
        scale = torch.cat([sq * fix, sp * fix])
        to_state = torch.zeros_like(self.canonical_to_state)
        to_state[torch.arange(2 * c.dim_q, device=idx.device), idx] = scale / pscale
        with torch.no_grad():
            self.canonical_mean.copy_(mean)
            self.canonical_scale.copy_(scale)
            delta = (self.delta_std[idx] * pscale / scale).clamp_min(1e-12)
            self.canonical_delta_std.copy_(delta)
            self.canonical_gain.copy_(pscale / scale)
            self.canonical_offset.copy_(mean / scale)
            self.canonical_to_state.copy_(to_state)

    def canonical(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised canonical coordinates: x (..., nx) -> z (..., 2d)."""
        return (
            x.index_select(-1, self.canonical_index) * self.canonical_gain - self.canonical_offset
        )

    def _trusted_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(lower, upper) of the trusted region, (nx,) each, or None if unfitted.

        A component that was constant in the training data (a box side under 1e-9, e.g.
        Im ρ_ii of a Hermitian density matrix) is unbounded: the data says nothing of where
        it may go, and a model's round-off there must not read as leaving the data.
        """
        lo = self.trusted_lo.detach().cpu().numpy().astype(np.float64)
        hi = self.trusted_hi.detach().cpu().numpy().astype(np.float64)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            return None
        flat = hi - lo < 1e-9
        return np.where(flat, -np.inf, lo), np.where(flat, np.inf, hi)

    @property
    def trusted_lower(self) -> np.ndarray | None:
        """(nx,) lower corner of the training data's state box (widened), or None if unfitted."""
        box = self._trusted_box()
        return None if box is None else box[0]

    @property
    def trusted_upper(self) -> np.ndarray | None:
        """(nx,) upper corner of the training data's state box (widened), or None if unfitted."""
        box = self._trusted_box()
        return None if box is None else box[1]

    def norm_state(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised state: (x - mean) / std, shape kept."""
        return (x - self.state_mean) / self.state_std

    def norm_action(self, u: torch.Tensor) -> torch.Tensor:
        """Standardised action: (u - mean) / std, shape kept."""
        return (u - self.action_mean) / self.action_std

    # ---------------------------------------------------------------- protocol
    def fast_weight_names(self) -> list[str]:
        """Names (as in `named_parameters`) of the fast weights adapted per system."""
        raise NotImplementedError

    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """See `metasym_control.dynamics.DynamicsModel.init_memory`."""
        raise NotImplementedError

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """See `metasym_control.dynamics.DynamicsModel.step`."""
        raise NotImplementedError

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Predict T steps: x0 (..., nx), actions (..., T, nu) -> (..., T, nx), x0 excluded."""
        return rollout_by_steps(self, x0, actions, memory)

    def adapt(self, support: Trajectory, budget: AdaptBudget) -> DynamicsModel:
        """A copy whose fast weights are fitted to `support`; `self` is left untouched.

        Runs the shared inner loop of `metasym_control.models.inner_loop.adapt_model` (the
        same for every learned model) within `budget`. The copy's trusted region also covers
        the support states (`extend_trusted_region`): the adapted model has been fitted
        there, so a held-out system that moves beyond the meta-training data (a heavier mesh
        carries more momentum) is not refused the states its own data showed.
        """
        adapted = adapt_model(self, support, budget)
        adapted.extend_trusted_region(support)
        return adapted

    def extend_trusted_region(self, data: Trajectory, margin: float = 0.1) -> None:
        """Grow the trusted box (in place) to hold `data`'s valid states, each component's
        range widened by `margin` of its span, as `set_normalization` does. No-op on an
        unfitted model."""
        if not bool(torch.isfinite(self.trusted_lo).all()):
            return
        mask = data.valid_mask()
        xs = np.concatenate([data.states[:, :-1][mask], data.states[:, 1:][mask]])
        if xs.size == 0:
            return
        lo, hi = xs.min(axis=0), xs.max(axis=0)
        pad = margin * (hi - lo)
        with torch.no_grad():
            new_lo = torch.as_tensor(lo - pad, dtype=self.trusted_lo.dtype)
            new_hi = torch.as_tensor(hi + pad, dtype=self.trusted_hi.dtype)
            self.trusted_lo.copy_(torch.minimum(self.trusted_lo, new_lo.to(self.trusted_lo)))
            self.trusted_hi.copy_(torch.maximum(self.trusted_hi, new_hi.to(self.trusted_hi)))

    # ---------------------------------------------------------------- training
    def predict_windows(self, batch: Batch) -> torch.Tensor:
        """Rollouts of a batch of windows: (B, H, nx) predictions of `batch["y"]`."""
        memory = self.init_memory(batch["hs"], batch["ha"], batch["hv"])
        return self.rollout(batch["x0"], batch["ua"], memory)

    def auxiliary_loss(self, batch: Batch) -> torch.Tensor:
        """Extra training loss beyond the rollout error (MetaSym: time reversal); default 0."""
        return batch["x0"].new_zeros(())

    def forward(self, batch: Batch, aux: bool = False) -> torch.Tensor:
        """Training loss of a batch of windows (a scalar).

        The mean squared rollout error in units of the one-step change's standard deviation,
        plus `auxiliary_loss` when `aux`. This is what `torch.func.functional_call` calls in
        the inner and outer loops.
        """
        pred = self.predict_windows(batch)
        err = (pred - batch["y"]) / self.delta_std
        loss = err.pow(2).mean()
        if aux:
            loss = loss + self.auxiliary_loss(batch)
        return loss

    # ---------------------------------------------------------------- description
    def spec(self) -> dict[str, Any]:
        """JSON-ready description from which `models.registry.build_model` rebuilds the
        architecture."""
        return {
            "class": type(self).__name__,
            "config": dataclasses.asdict(self.config),
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "dt": self.dt,
            "coords": self.coords.to_dict() if self.coords is not None else None,
            "env_id": self.env_id,
        }

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())


def data_statistics(parts: Sequence[Trajectory]) -> dict[str, np.ndarray]:
    """Pooled sums over the valid transitions: count, sums and sums of squares of x, u, dx,
    and the state range (so distributed ranks can combine theirs exactly)."""
    xs, us, dxs = [], [], []
    for tr in parts:
        mask = tr.valid_mask()
        us.append(tr.actions[mask])
        xs.append(tr.states[:, :-1][mask])
        dxs.append((tr.states[:, 1:] - tr.states[:, :-1])[mask])
    x, u, dx = np.concatenate(xs), np.concatenate(us), np.concatenate(dxs)
    out = {"count": np.array([float(len(x))])}
    for key, a in (("x", x), ("u", u), ("dx", dx)):
        out[key + "_sum"] = a.sum(0)
        out[key + "_sq"] = (a * a).sum(0)
    out["x_min"] = x.min(0) if len(x) else np.full(x.shape[1], np.inf)
    out["x_max"] = x.max(0) if len(x) else np.full(x.shape[1], -np.inf)
    return out
