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


def _step_fraction(
    dt: float | torch.Tensor, dt_ref: float, like: torch.Tensor
) -> float | torch.Tensor:
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


def _takes_addmm(y: torch.Tensor, h: float | torch.Tensor) -> bool:
    """Whether an increment can use the fused addmm: 2-D input and a float step fraction."""
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
        if _takes_addmm(y, h):
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
        if _takes_addmm(y, h):
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
        linear: put linear (up, low) shear pairs first: the harmonic part of the flow.
        linear_pairs: how many such pairs, each a leapfrog-like substep of h / linear_pairs
            worth of flow once trained (one pair cannot turn a mode by much more than a
            radian a step; a mesh at its control period needs several).
        dt_ref: the step (s) at which a shear's increment is its field (h = dt / dt_ref).
        init_scale: scale of the initial fields (small: the map starts near a gentle flow).
    """

    kind: Literal["G", "LA"] = "G"  # gradient shears are universal with few parameters
    layers: int = 2  # two (up, low) pairs: enough for the oscillator and translational flows
    width: int = 16  # sized for the control loop, not the accuracy table
    linear: bool = True  # a leapfrog-like linear pair captures harmonic flows at once
    linear_pairs: int = 1  # more pairs for flows that turn far in one step
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
        if cfg.linear_pairs < 1:
            raise ValueError(f"SymplecticConfig.linear_pairs must be >= 1, got {cfg.linear_pairs}")
        if cfg.linear:
            for _ in range(cfg.linear_pairs):
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
        h = _step_fraction(dt, self.config.dt_ref, x)
        q, p = x[..., : self.dim_q], x[..., self.dim_q :]
        for m in self._shears():
            q, p = m.shear_qp(q, p, h)
        return torch.cat([q, p], dim=-1)

    def inverse(self, x: torch.Tensor, dt: float | torch.Tensor) -> torch.Tensor:
        """Exact inverse of `forward(·, dt)`: (..., 2d) -> (..., 2d)."""
        self._check(x)
        h = _step_fraction(dt, self.config.dt_ref, x)
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


@dataclass
class Affine:
    """An affine expression `X @ x + Σ_i t_i @ ts[i] + c` of a batch's inputs and tanh stages.

    The encoder's fold (`fold_encoder`) tracks q and p this way: every shear either adds a
    matrix product of the other half (linear shears) or a new tanh stage (gradient and
    activation shears), so each coordinate stays affine in the inputs and the stages' outputs.

    Attributes:
        x: (n_in, k) coefficient of the input X (B, n_in).
        ts: per earlier tanh stage i, its coefficient (w_i, k), or None where it does not enter.
        c: (k,) constant.
    """

    x: torch.Tensor
    ts: list[torch.Tensor | None]
    c: torch.Tensor

    def matmul(self, m: torch.Tensor) -> Affine:
        """The expression times a matrix m (k, k2) on the right."""
        return Affine(self.x @ m, [None if t is None else t @ m for t in self.ts], self.c @ m)

    def plus(self, other: Affine) -> Affine:
        """Sum of two expressions with the same width."""
        n = max(len(self.ts), len(other.ts))
        ts: list[torch.Tensor | None] = []
        for i in range(n):
            a = self.ts[i] if i < len(self.ts) else None
            b = other.ts[i] if i < len(other.ts) else None
            ts.append(a if b is None else b if a is None else a + b)
        return Affine(self.x + other.x, ts, self.c + other.c)

    def stage(self, index: int, g: torch.Tensor) -> Affine:
        """The expression plus the stage `index`'s output times g (w, k)."""
        ts = list(self.ts) + [None] * max(0, index + 1 - len(self.ts))
        ts[index] = g if ts[index] is None else ts[index] + g  # type: ignore[operator]
        return Affine(self.x, ts, self.c)


@dataclass
class TanhStage:
    """One nonlinear stage of a folded encoder: t = tanh(pre.x-part + Σ t_i pre.ts[i] + pre.c).

    Attributes:
        pre: the pre-activation (width w) as an `Affine` of the inputs and earlier stages.
    """

    pre: Affine


def fold_encoder(
    encoder: SymplecticEncoder, q: Affine, p: Affine, dt: float
) -> tuple[list[TanhStage], Affine, Affine]:
    """Unroll Φ_dt over affine inputs into tanh stages and affine outputs (a planner's fast path).

    Linear shears compose into matrices; each gradient shear becomes one stage
    `t = tanh(y K^T + b)` whose output enters the other half through `h diag(a) K`; an
    activation shear is the same with K = I and b = 0. Evaluating the stages in order and the
    final expressions reproduces `encoder(z, dt)` to round-off with far fewer operators.

    Args:
        encoder: the symplectic encoder.
        q, p: the encoder's input halves (width d) as affine expressions of the inputs.
        dt: the step (s).

    Returns:
        The stages in evaluation order and the output halves q', p' as affine expressions.
    """
    h = float(dt) / encoder.config.dt_ref
    stages: list[TanhStage] = []
    for m in encoder._shears():
        y, base = (p, q) if m.up else (q, p)
        if isinstance(m, LinearShear):
            new = base.plus(y.matmul(h * (m.a + m.a.T)))
        else:
            if isinstance(m, GradientShear):
                pre = y.matmul(m.k.T)
                pre = Affine(pre.x, pre.ts, pre.c + m.b)
                g = h * m.a[:, None] * m.k  # (w, d)
            elif isinstance(m, ActivationShear):
                pre, g = y, torch.diag(h * m.a)
            else:
                raise TypeError(f"fold_encoder: unknown shear {type(m).__name__}")
            stages.append(TanhStage(pre))
            new = base.stage(len(stages) - 1, g)
        q, p = (new, p) if m.up else (q, new)
    return stages, q, p
