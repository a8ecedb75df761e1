"""MetaSym: symplectic encoder + active decoder with meta-attention, as a dynamics model.

One step, for a state x and action u (normalised actions in [-1, 1]):

    z    = canonical(x), standardised           (q, p) of the coordinate map, 2d reals
    z'   = Φ_dt(z)                               the exactly symplectic conservative flow
    e    = z' - z                                the encoder output fed to the decoder
    r    = decoder(token = [norm(x), norm(u), e] | history memory)
    x'   = project(x + state_delta(e) + delta_std * r)

The standardisation of (q, p) scales each pair so that s_q,i * s_p,i is the same constant for
every i: then the conservative map is exactly symplectic in the physical canonical
coordinates too (up to that constant factor of the form, which symplecticity ignores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from metasym_control.dynamics import Memory
from metasym_control.models.coordinates import CoordinateMap
from metasym_control.models.decoder import ActiveDecoder, DecoderConfig
from metasym_control.models.learned import Batch, LearnedModel
from metasym_control.models.symplectic import SymplecticConfig, SymplecticEncoder

FastSet = Literal["meta_attention", "meta_attention_head", "decoder", "none"]


@dataclass(frozen=True)
class MetaSymConfig:
    """MetaSym's architecture and training-loss weights.

    Attributes:
        history_len: L, past transitions the decoder reads.
        d_model: decoder token width.
        n_heads: decoder attention heads.
        n_layers: ordinary decoder blocks before the meta-attention.
        mlp_ratio: decoder MLP width / d_model.
        own_context: own previous rollout steps each new token attends to (0: Markov given
            the window, the fastest step).
        encoder_kind: "G" or "LA" symplectic shears.
        encoder_layers: (up, low) pairs of nonlinear shears.
        encoder_width: width of the gradient shears.
        encoder_linear: a linear shear pair first.
        encoder_init_scale: scale of the encoder's initial fields (small: near identity).
        fast_set: which parameters adapt per system (the ablation knob).
        reversal_weight: weight of ||Φ_-dt(x_{k+1}) - x_k||^2 in the training loss.
        roundtrip_weight: weight of ||Φ_-dt(Φ_dt(x_k)) - x_k||^2 in the training loss.
    """

    history_len: int = 8  # 8 steps = 0.16 s of quadrotor flight: enough to see drag and lag
    d_model: int = 32  # sized for MPPI: a 1024-sample step well under 1 ms on 2 cores
    n_heads: int = 2  # small heads; more buys little at this width
    n_layers: int = 1  # one ordinary block + meta-attention: ~15k parameters in all
    mlp_ratio: int = 2  # modest MLP; the per-system part lives in the meta-attention
    own_context: int = 0  # states are Markov: the window identifies, the step copies nothing
    encoder_kind: str = "G"  # gradient shears: universal, few parameters
    encoder_layers: int = 1  # one nonlinear (up, low) pair: tanh is costly in the hot loop
    encoder_width: int = 16  # the conservative flows here are smooth
    encoder_linear: bool = True  # the harmonic part in one linear pair
    encoder_init_scale: float = 0.01  # start near Φ = id, like the decoder's zero head
    fast_set: str = "meta_attention"  # the paper's choice: adapt the meta-attention only
    reversal_weight: float = 0.1  # time reversal keeps energy drift down without dominating
    roundtrip_weight: float = 0.1  # Φ_-dt∘Φ_dt = id: the backward flow is the inverse

    def __post_init__(self) -> None:
        if self.history_len < 0:
            raise ValueError(f"MetaSymConfig.history_len must be >= 0, got {self.history_len}")
        if self.fast_set not in ("meta_attention", "meta_attention_head", "decoder", "none"):
            raise ValueError(f"MetaSymConfig.fast_set unknown: {self.fast_set!r}")
        if self.d_model % self.n_heads:
            raise ValueError("MetaSymConfig.d_model must be divisible by n_heads")


class MetaSym(LearnedModel):
    """The MetaSym dynamics model (see the module docstring for the step).

    Args:
        state_dim: nx; action_dim: nu; dt: control period (s).
        config: architecture.
        coords: canonical-coordinate map of the environment (required).
        env_id: environment id with version.
        device, dtype: of parameters and buffers.
    """

    config_class = MetaSymConfig

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        dt: float,
        config: MetaSymConfig | None = None,
        coords: CoordinateMap | None = None,
        env_id: str = "",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        cfg = config or MetaSymConfig()
        if coords is None:
            raise ValueError(
                "MetaSym needs a CoordinateMap (see metasym_control.models.coordinates)"
            )
        super().__init__(state_dim, action_dim, dt, cfg.history_len, coords, env_id)
        self.config = cfg
        self.coords: CoordinateMap = coords
        d = coords.dim_q
        self.encoder = SymplecticEncoder(
            d,
            SymplecticConfig(
                kind=cfg.encoder_kind,  # type: ignore[arg-type]
                layers=cfg.encoder_layers,
                width=cfg.encoder_width,
                linear=cfg.encoder_linear,
                dt_ref=dt,
                init_scale=cfg.encoder_init_scale,
            ),
        )
        self.decoder = ActiveDecoder(
            token_dim=state_dim + action_dim + 2 * d,
            out_dim=state_dim,
            history_len=cfg.history_len,
            config=DecoderConfig(
                cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.mlp_ratio, cfg.own_context
            ),
        )
        self.to(device=device, dtype=dtype)
        self.can_index = self.can_index.long()

    # ---------------------------------------------------------------- fast weights
    def fast_weight_names(self) -> list[str]:
        """The fast-weight set chosen by `config.fast_set` (default: the meta-attention)."""
        fs = self.config.fast_set
        meta = [f"decoder.{n}" for n in self.decoder.meta_attention_names()]
        if fs == "meta_attention":
            return meta
        if fs == "meta_attention_head":
            return [*meta, "decoder.head.weight", "decoder.head.bias"]
        if fs == "decoder":
            return [n for n, _ in self.named_parameters() if n.startswith("decoder.")]
        return []

    # ---------------------------------------------------------------- pieces
    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder increment e (..., 2d) (standardised) and its state change (..., nx)."""
        z = self.canonical(x)
        e = self.encoder(z, self.dt) - z
        return e, e @ self.can_out

    def _token(self, x: torch.Tensor, u: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Decoder token (..., nx + nu + 2d)."""
        xn, un = self.norm_state(x), self.norm_action(u)
        lead = torch.broadcast_shapes(xn.shape[:-1], un.shape[:-1], e.shape[:-1])
        return torch.cat(
            [
                xn.expand(*lead, xn.shape[-1]),
                un.expand(*lead, un.shape[-1]),
                e.expand(*lead, e.shape[-1]),
            ],
            dim=-1,
        )

    # ---------------------------------------------------------------- protocol
    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """Encode the history window once per control step.

        Args:
            states: (..., L, nx) past states, oldest first.
            actions: (..., L, nu) past actions.
            valid: (..., L) bool (None: all valid).

        Returns:
            Memory with the decoder's prefix keys/values `k{i}`, `v{i}` (..., H, L, dh), the
            validity `valid` (..., L) and empty per-sample caches `nk{i}`, `nv{i}`.
        """
        L = self.history_len
        if states.shape[-2] != L or actions.shape[-2] != L:
            raise ValueError(
                f"MetaSym.init_memory: window of {states.shape[-2]} states / "
                f"{actions.shape[-2]} actions, model history_len is {L}"
            )
        if valid is None:
            valid = torch.ones(states.shape[:-1], dtype=torch.bool, device=states.device)
        e, _ = self._encode(states)
        return self.decoder.encode_prefix(self._token(states, actions, e), valid.bool())

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """One control step: x (..., nx), u (..., nu) -> x_next (..., nx), new memory.

        The memory may be one history broadcast (expanded) over the samples: its prefix is
        read without copies.
        """
        lead = torch.broadcast_shapes(x.shape[:-1], u.shape[:-1])
        x2 = x.expand(*lead, self.state_dim).reshape(-1, self.state_dim)  # (B, nx)
        u2 = u.expand(*lead, self.action_dim).reshape(-1, self.action_dim)  # (B, nu)
        e, dx = self._encode(x2)  # (B, 2d), (B, nx)
        tok = torch.cat([self.norm_state(x2), self.norm_action(u2), e], dim=-1)
        r, memory = self.decoder.step(tok.view(*lead, -1), memory)  # (..., nx)
        x_next = torch.addcmul(x2 + dx, self.delta_std, r.reshape(x2.shape))
        return self.coords.postprocess(x_next).view(*lead, self.state_dim), memory

    # ---------------------------------------------------------------- training
    def auxiliary_loss(self, batch: Batch) -> torch.Tensor:
        """Time-reversal losses of the encoder on the first transition of each window.

        `reversal_weight * |Φ_-dt(z_{k+1}) - z_k|^2 + roundtrip_weight * |Φ_-dt(Φ_dt(z_k)) -
        z_k|^2`, both in units of the one-step change of each canonical coordinate.
        """
        cfg = self.config
        z0 = self.canonical(batch["x0"])
        z1 = self.canonical(batch["y"][..., 0, :])
        loss = z0.new_zeros(())
        if cfg.reversal_weight:
            back = self.encoder(z1, -self.dt)
            loss = loss + cfg.reversal_weight * ((back - z0) / self.can_delta).pow(2).mean()
        if cfg.roundtrip_weight:
            rt = self.encoder(self.encoder(z0, self.dt), -self.dt)
            loss = loss + cfg.roundtrip_weight * ((rt - z0) / self.can_delta).pow(2).mean()
        return loss

    def energy_drift_check(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """Forward `steps` steps of Φ_dt then back with Φ_-dt: (..., nx) -> (...) error.

        A diagnostic of time reversibility, in standardised canonical units.
        """
        z = self.canonical(x)
        w = z
        for _ in range(steps):
            w = self.encoder(w, self.dt)
        for _ in range(steps):
            w = self.encoder(w, -self.dt)
        return (w - z).norm(dim=-1) / math.sqrt(z.shape[-1])
