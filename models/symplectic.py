"""Exactly symplectic maps of canonical coordinates: SympNet shears conditioned on the step dt.

Every module is a *shear*: it changes q by a gradient field of p ("up") or p by a gradient
field of q ("low"), with the increment scaled by `h = dt / dt_ref`:

    up:   q <- q + h * grad V(p),   p unchanged
    low:  p <- p + h * grad V(q),   q unchanged

Its Jacobian is [[I, h S], [0, I]] (or the transpose pattern) with S = Hess V symmetric, hence
symplectic for every input and every h; its inverse is the same shear with -h. Three kinds
(SympNet / LA-SympNet, Jin et al. 2020):

- linear: grad V(y) = (A + A^T) y;
- activation: grad V(y) = a * tanh(y) (elementwise);
- gradient: grad V(y) = K^T (a * tanh(K y + b)), K of shape (width, d).

A composition of shears is symplectic by construction (to float64 round-off), `Φ_0` is the
identity, `inverse(·, dt)` undoes `forward(·, dt)` exactly, and `forward(·, -dt)` is the learned
backward flow: for a composition it is *not* automatically the inverse, which is why training
adds the time-reversal losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


def _h(dt: float | torch.Tensor, dt_ref: float, like: torch.Tensor) -> float | torch.Tensor:
    """Step fraction h = dt / dt_ref, as a float or a (..., 1) tensor broadcasting over coords."""
    if isinstance(dt, torch.Tensor):
        return (dt / dt_ref).to(like.dtype).unsqueeze(-1)
    return float(dt) / dt_ref


class Shear(nn.Module):
    """Base of the shear modules over x = (q, p) of dimension 2d.

    Args:
        dim_q: d.
        up: True changes q from p, False changes p from q.
    """

    def __init__(self, dim_q: int, up: bool) -> None:
        super().__init__()
        self.dim_q = dim_q
        self.up = up

    def increment(
        self, y: torch.Tensor, base: torch.Tensor, h: float | torch.Tensor
    ) -> torch.Tensor:
        """base + h * grad V(y), for y, base (..., d) (2-D inputs and float h use addmm)."""
        raise NotImplementedError

    def shear_qp(
        self, q: torch.Tensor, p: torch.Tensor, h: float | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The shear on separate halves q, p (..., d) with step fraction h."""
        if self.up:
            return self.increment(p, q, h), p
        return q, self.increment(q, p, h)

    def forward(self, x: torch.Tensor, h: float | torch.Tensor) -> torch.Tensor:
        """Apply the shear with step fraction h: x (..., 2d) -> (..., 2d)."""
        q, p = self.shear_qp(x[..., : self.dim_q], x[..., self.dim_q :], h)
        return torch.cat([q, p], dim=-1)

    def inverse(self, x: torch.Tensor, h: float | torch.Tensor) -> torch.Tensor:
        """Exact inverse of `forward(·, h)` (the same shear with -h)."""
        return self.forward(x, -h)


def _fast(y: torch.Tensor, h: float | torch.Tensor) -> bool:
    return y.dim() == 2 and not isinstance(h, torch.Tensor)


class LinearShear(Shear):
    """grad V(y) = S y with S = A + A^T symmetric (d x d)."""

    def __init__(self, dim_q: int, up: bool, init_scale: float = 0.1) -> None:
        super().__init__(dim_q, up)
        self.a = nn.Parameter(torch.randn(dim_q, dim_q) * init_scale / max(1.0, dim_q**0.5))

    def field(self, y: torch.Tensor) -> torch.Tensor:
        """S y for y (..., d)."""
        return y @ (self.a + self.a.T)

    def increment(
        self, y: torch.Tensor, base: torch.Tensor, h: float | torch.Tensor
    ) -> torch.Tensor:
        """base + h S y."""
        if _fast(y, h):
            return torch.addmm(base, y, self.a + self.a.T, alpha=float(h))  # type: ignore[arg-type]
        return base + h * self.field(y)


class ActivationShear(Shear):
    """grad V(y) = a * tanh(y), elementwise (the LA-SympNet activation module)."""

    def __init__(self, dim_q: int, up: bool, init_scale: float = 0.1) -> None:
        super().__init__(dim_q, up)
        self.a = nn.Parameter(torch.randn(dim_q) * init_scale)

    def field(self, y: torch.Tensor) -> torch.Tensor:
        """a * tanh(y) for y (..., d)."""
        return self.a * torch.tanh(y)

    def increment(
        self, y: torch.Tensor, base: torch.Tensor, h: float | torch.Tensor
    ) -> torch.Tensor:
        """base + h a tanh(y)."""
        return base + h * self.field(y)


class GradientShear(Shear):
    """grad V(y) = K^T (a * tanh(K y + b)) with K (width, d) (the G-SympNet module)."""

    def __init__(self, dim_q: int, up: bool, width: int, init_scale: float = 0.1) -> None:
        super().__init__(dim_q, up)
        self.k = nn.Parameter(torch.randn(width, dim_q) / dim_q**0.5)
        self.b = nn.Parameter(torch.zeros(width))
        self.a = nn.Parameter(torch.randn(width) * init_scale / width**0.5)

    def field(self, y: torch.Tensor) -> torch.Tensor:
        """K^T (a * tanh(K y + b)) for y (..., d)."""
        return (self.a * torch.tanh(y @ self.k.T + self.b)) @ self.k

    def increment(
        self, y: torch.Tensor, base: torch.Tensor, h: float | torch.Tensor
    ) -> torch.Tensor:
        """base + h K^T (a * tanh(K y + b))."""
        if _fast(y, h):
            t = torch.tanh(torch.addmm(self.b, y, self.k.T)) * self.a
            return torch.addmm(base, t, self.k, alpha=float(h))  # type: ignore[arg-type]
        return base + h * self.field(y)


@dataclass(frozen=True)
class SymplecticConfig:
    """Architecture of a `SymplecticEncoder`.

    Attributes:
        kind: "G" (gradient shears) or "LA" (linear + activation shears).
        layers: number of (up, low) pairs of nonlinear shears.
        width: hidden width of each gradient shear (G only).
        linear: put a (up, low) pair of linear shears first: the harmonic part of the flow.
        dt_ref: the step (s) at which a shear's increment is its field (h = dt / dt_ref).
        init_scale: scale of the initial fields (small: the map starts near a gentle flow).
    """

    kind: Literal["G", "LA"] = "G"  # gradient shears are universal with few parameters
    layers: int = 2  # two (up, low) pairs: enough for the oscillator and translational flows
    width: int = 16  # sized for the control loop, not the accuracy table
    linear: bool = True  # a leapfrog-like linear pair captures harmonic flows at once
    dt_ref: float = 1.0  # set to the data's dt so learned fields are O(1)
    init_scale: float = 0.1  # near-identity start keeps early training stable


class SymplecticEncoder(nn.Module):
    """An exactly symplectic map Φ_dt of (q, p) of any even dimension 2d.

    Args:
        dim_q: d, the number of canonical pairs.
        config: architecture.
        device, dtype: of the parameters.
    """

    def __init__(
        self,
        dim_q: int,
        config: SymplecticConfig | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if dim_q < 1:
            raise ValueError(f"SymplecticEncoder needs dim_q >= 1, got {dim_q}")
        self.dim_q = dim_q
        self.config = cfg = config or SymplecticConfig()
        if cfg.kind not in ("G", "LA"):
            raise ValueError(f"SymplecticConfig.kind must be 'G' or 'LA', got {cfg.kind!r}")
        if not cfg.dt_ref > 0:
            raise ValueError(f"SymplecticConfig.dt_ref must be > 0, got {cfg.dt_ref}")
        mods: list[Shear] = []
        if cfg.linear:
            mods += [
                LinearShear(dim_q, True, cfg.init_scale),
                LinearShear(dim_q, False, cfg.init_scale),
            ]
        for _ in range(cfg.layers):
            for up in (True, False):
                if cfg.kind == "G":
                    mods.append(GradientShear(dim_q, up, cfg.width, cfg.init_scale))
                else:
                    mods.append(LinearShear(dim_q, up, cfg.init_scale))
            if cfg.kind == "LA":
                mods += [
                    ActivationShear(dim_q, True, cfg.init_scale),
                    ActivationShear(dim_q, False, cfg.init_scale),
                ]
        self.shears = nn.ModuleList(mods)
        self.to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, dt: float | torch.Tensor) -> torch.Tensor:
        """Φ_dt(x): x (..., 2d) -> (..., 2d); dt a float or a (...) tensor of steps (s).

        `forward(x, -dt)` is the learned backward flow.
        """
        self._check(x)
        h = _h(dt, self.config.dt_ref, x)
        q, p = x[..., : self.dim_q], x[..., self.dim_q :]
        for m in self._shears():
            q, p = m.shear_qp(q, p, h)
        return torch.cat([q, p], dim=-1)

    def inverse(self, x: torch.Tensor, dt: float | torch.Tensor) -> torch.Tensor:
        """Exact inverse of `forward(·, dt)`: (..., 2d) -> (..., 2d)."""
        self._check(x)
        h = _h(dt, self.config.dt_ref, x)
        q, p = x[..., : self.dim_q], x[..., self.dim_q :]
        for m in reversed(self._shears()):
            q, p = m.shear_qp(q, p, -h)
        return torch.cat([q, p], dim=-1)

    def _shears(self) -> list[Shear]:
        return [m for m in self.shears if isinstance(m, Shear)]

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != 2 * self.dim_q:
            raise ValueError(
                f"SymplecticEncoder over 2d={2 * self.dim_q} coordinates got x of shape "
                f"{tuple(x.shape)}"
            )


def symplectic_form(dim_q: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Ω = [[0, I], [-I, 0]] of shape (2d, 2d)."""
    eye = torch.eye(dim_q, dtype=dtype)
    zero = torch.zeros(dim_q, dim_q, dtype=dtype)
    return torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0)
