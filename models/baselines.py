"""Learned baselines under MetaSym's protocol, data and adaptation budget.

- `MLPModel`: a residual next-state MLP; fast weights = its last layer.
- `TransformerModel`: a larger causal transformer without symplectic structure; fast weights =
  its meta-attention, as in MetaSym.
- `SymplecticOnlyModel`: the symplectic encoder alone plus a linear control input; fast
  weights = the control input matrix and a bias.
- `HNNModel`: a Hamiltonian neural network with learned damping and a linear control input,
  integrated with RK4; fast weights = control matrix, damping and the Hamiltonian's output
  layer.

(The analytic least-squares baselines are the analytic models' own `adapt`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from metasym_control.dynamics import Memory
from metasym_control.models.coordinates import CoordinateMap
from metasym_control.models.decoder import ActiveDecoder, DecoderConfig
from metasym_control.models.learned import LearnedModel
from metasym_control.models.symplectic import SymplecticConfig, SymplecticEncoder
from metasym_control.windows import Batch


def _zero_linear(n_in: int, n_out: int, bias: bool = True) -> nn.Linear:
    """A linear layer (n_in -> n_out) whose weights start at zero: the untrained model adds
    nothing through it. (Built as nn.Linear first, so it draws from the global generator as
    any layer does and the layers after it start the same.)"""
    layer = nn.Linear(n_in, n_out, bias=bias)
    nn.init.zeros_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class _Baseline(LearnedModel):
    """Base of the learned baselines: the one constructor; a subclass builds its layers.

    Args:
        state_dim, action_dim: nx, nu.
        dt: control period, s.
        config: the subclass's `config_class` instance (its defaults if None).
        coords: canonical coordinates (required where `needs_coords`).
        env_id: environment id, saved in the spec.
        device, dtype: of the parameters.
    """

    needs_coords: ClassVar[bool] = False

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        dt: float,
        config: Any = None,
        coords: CoordinateMap | None = None,
        env_id: str = "",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if self.needs_coords and coords is None:
            raise ValueError(f"{type(self).__name__} needs a CoordinateMap")
        cfg = config if config is not None else self.config_class()
        super().__init__(state_dim, action_dim, dt, self._history_len(cfg), coords, env_id)
        self.config = cfg
        self._build()
        self.to(device=device, dtype=dtype)

    @staticmethod
    def _history_len(config: Any) -> int:
        """L, the past transitions the model reads (0: Markov)."""
        return 0

    def _build(self) -> None:
        """Create the modules from `self.config` (in a fixed order: the random draws)."""
        raise NotImplementedError


class _MarkovModel(_Baseline):
    """Base of the learned baselines that read no history: empty memory, windows from x0."""

    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """Markov model: the memory is empty."""
        return {}

    def predict_windows(self, batch: Batch) -> torch.Tensor:
        """Rollouts of a batch of windows: (B, H, nx)."""
        return self.rollout(batch["x0"], batch["ua"], {})


@dataclass(frozen=True)
class MLPConfig:
    """Residual MLP baseline.

    Attributes:
        hidden: width of each hidden layer (the MPPI reference model of the project is 2 x 256).
        layers: number of hidden layers.
    """

    hidden: int = 128  # wide enough for 13-17 states; 2 x 128 keeps MPPI rollouts cheap
    layers: int = 2  # two hidden layers: the usual MBRL size


class MLPModel(_MarkovModel):
    """x_{k+1} = x_k + delta_std * MLP(norm(x_k), norm(u_k)); Markov (history_len 0).

    The last layer starts at zero, so the untrained model predicts `x_{k+1} = x_k`.
    """

    config_class = MLPConfig

    config: MLPConfig

    def _build(self) -> None:
        mods: list[nn.Module] = []
        d_in = self.state_dim + self.action_dim
        for _ in range(self.config.layers):
            mods += [nn.Linear(d_in, self.config.hidden), nn.SiLU()]
            d_in = self.config.hidden
        self.net = nn.Sequential(*mods)
        self.out = _zero_linear(d_in, self.state_dim)

    def fast_weight_names(self) -> list[str]:
        """The last layer: `out.weight`, `out.bias`."""
        return ["out.weight", "out.bias"]

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """x (..., nx), u (..., nu) -> x_next (..., nx), memory unchanged."""
        h = self.net(torch.cat([self.norm_state(x), self.norm_action(u)], dim=-1))
        x_next = x + self.delta_std * self.out(h)
        # on the state manifold like every learned model (unit quaternion, density matrix)
        return (x_next if self.coords is None else self.coords.postprocess(x_next)), memory


@dataclass(frozen=True)
class TransformerConfig:
    """Larger causal transformer baseline without symplectic structure.

    Attributes:
        history_len: L, past transitions read.
        d_model: token width.
        n_heads: heads.
        n_layers: ordinary blocks before the meta-attention.
        mlp_ratio: MLP width / d_model.
        attend_self: the self slot's score is the query-key product (format-1 checkpoints),
            else the query times a learned key.
    """

    history_len: int = 8  # the same window as MetaSym
    d_model: int = 64  # twice MetaSym's width: the "larger baseline" of the claim
    n_heads: int = 4  # 16 per head, as in MetaSym
    n_layers: int = 2  # one more block than MetaSym
    mlp_ratio: int = 4  # the usual transformer MLP
    attend_self: bool = True  # as MetaSym's decoder


class TransformerModel(_Baseline):
    """x_{k+1} = x_k + delta_std * decoder([norm(x), norm(u)] | history); no encoder.

    Fast weights: the meta-attention, as in MetaSym (same budget, same kind of set).
    """

    config_class = TransformerConfig

    config: TransformerConfig

    @staticmethod
    def _history_len(config: Any) -> int:
        return int(config.history_len)

    def _build(self) -> None:
        cfg = self.config
        self.decoder = ActiveDecoder(
            self.state_dim + self.action_dim,
            self.state_dim,
            cfg.history_len,
            DecoderConfig(
                cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.mlp_ratio, 0, cfg.attend_self
            ),
        )

    def fast_weight_names(self) -> list[str]:
        """The meta-attention's projections."""
        return [f"decoder.{n}" for n in self.decoder.meta_attention_names()]

    def _token(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        lead = torch.broadcast_shapes(x.shape[:-1], u.shape[:-1])
        xn = self.norm_state(x).expand(*lead, self.state_dim)
        un = self.norm_action(u).expand(*lead, self.action_dim)
        return torch.cat([xn, un], dim=-1)

    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """Encode the window (..., L, nx), (..., L, nu) once per control step."""
        if states.shape[-2] != self.history_len:
            raise ValueError(f"window of {states.shape[-2]} states, history_len {self.history_len}")
        if valid is None:
            valid = torch.ones(states.shape[:-1], dtype=torch.bool, device=states.device)
        return self.decoder.encode_prefix(self._token(states, actions), valid.bool())

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """x (..., nx), u (..., nu) -> x_next (..., nx), memory."""
        r, memory = self.decoder.step(self._token(x, u), memory)
        x_next = x + self.delta_std * r
        if self.coords is not None:
            x_next = self.coords.postprocess(x_next)
        return x_next, memory


class _CanonicalMarkovModel(_MarkovModel):
    """Base of the Markov baselines on canonical coordinates (a `CoordinateMap` is required).

    Subclasses add their modules, then the linear control input on the state
    `control` (`_zero_linear(nu, nx)`), in that order (the order of the random draws).
    """

    coords: CoordinateMap
    needs_coords = True


@dataclass(frozen=True)
class SymplecticOnlyConfig:
    """The symplectic encoder alone plus a linear control input.

    Attributes:
        encoder_kind: "G" or "LA".
        encoder_layers: nonlinear (up, low) pairs.
        encoder_width: gradient-shear width.
    """

    encoder_kind: str = "G"  # as MetaSym
    encoder_layers: int = 2  # a little deeper than MetaSym's: it has no decoder
    encoder_width: int = 32  # the same reason


class SymplecticOnlyModel(_CanonicalMarkovModel):
    """x_{k+1} = x_k + state(Φ_dt(z) - z) + delta_std * (B norm(u) + c); Markov.

    Fast weights: the control matrix B and the bias c.
    """

    config_class = SymplecticOnlyConfig

    config: SymplecticOnlyConfig

    def _build(self) -> None:
        cfg = self.config
        self.encoder = SymplecticEncoder(
            self.coords.dim_q,
            SymplecticConfig(
                kind=cfg.encoder_kind,  # type: ignore[arg-type]
                layers=cfg.encoder_layers,
                width=cfg.encoder_width,
                dt_ref=self.dt,
                init_scale=0.01,
            ),
        )
        self.control = _zero_linear(self.action_dim, self.state_dim)

    def fast_weight_names(self) -> list[str]:
        """The control input: `control.weight`, `control.bias`."""
        return ["control.weight", "control.bias"]

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """x (..., nx), u (..., nu) -> x_next (..., nx), memory unchanged."""
        z = self.canonical(x)
        dx = (self.encoder(z, self.dt) - z) @ self.canonical_to_state
        x_next = x + dx + self.delta_std * self.control(self.norm_action(u))
        return self.coords.postprocess(x_next), memory


@dataclass(frozen=True)
class HNNConfig:
    """Hamiltonian neural network with damping and a linear control input.

    Attributes:
        hidden: width of the Hamiltonian's hidden layer.
        substeps: RK4 substeps per control step.
    """

    hidden: int = 64  # one tanh layer: H is smooth for the systems here
    substeps: int = 1  # one RK4 step per control step: the flows are slow against dt


class HNNModel(_CanonicalMarkovModel):
    """A Hamiltonian neural network (Greydanus et al. 2019) with dissipation and control.

    In standardised canonical coordinates z = (q, p) (time in units of dt):
    dz/dt = J grad H(z) - (0, softplus(gamma) * p) + G norm(u), with H(z) = w . tanh(W z + b)
    (its gradient written out, so no autograd inside the model and `torch.func` applies),
    integrated by RK4; the non-canonical components follow a linear control term
    delta_std * (B norm(u) + c). Fast weights: G, gamma, B, c and H's output weights w.
    """

    config_class = HNNConfig

    config: HNNConfig

    def _build(self) -> None:
        cfg = self.config
        d = self.coords.dim_q
        self.h_in = nn.Linear(2 * d, cfg.hidden)
        self.h_out = nn.Parameter(torch.randn(cfg.hidden) * 0.01)
        self.gamma = nn.Parameter(torch.full((d,), -4.0))
        self.g = _zero_linear(self.action_dim, 2 * d, bias=False)
        self.control = _zero_linear(self.action_dim, self.state_dim)

    def fast_weight_names(self) -> list[str]:
        """Control, damping and the Hamiltonian's output layer."""
        return ["h_out", "gamma", "g.weight", "control.weight", "control.bias"]

    def grad_h(self, z: torch.Tensor) -> torch.Tensor:
        """grad H(z) for z (..., 2d): W^T (w * (1 - tanh^2(W z + b)))."""
        t = torch.tanh(self.h_in(z))
        return (self.h_out * (1 - t * t)) @ self.h_in.weight

    def field(self, z: torch.Tensor, force: torch.Tensor) -> torch.Tensor:
        """dz/dt (per unit dt) at z (..., 2d) with the control force (..., 2d)."""
        d = self.coords.dim_q
        gh = self.grad_h(z)
        damp = torch.nn.functional.softplus(self.gamma) * z[..., d:]
        return torch.cat([gh[..., d:], -gh[..., :d] - damp], dim=-1) + force

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """x (..., nx), u (..., nu) -> x_next (..., nx), memory unchanged."""
        un = self.norm_action(u)
        force = self.g(un)
        z = self.canonical(x)
        h = 1.0 / self.config.substeps
        w = z
        for _ in range(self.config.substeps):
            k1 = self.field(w, force)
            k2 = self.field(w + 0.5 * h * k1, force)
            k3 = self.field(w + 0.5 * h * k2, force)
            k4 = self.field(w + h * k3, force)
            w = w + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        x_next = x + (w - z) @ self.canonical_to_state + self.delta_std * self.control(un)
        return self.coords.postprocess(x_next), memory
