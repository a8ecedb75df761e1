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

For a planner (many samples from one history) the step is also compiled into matrices once
per control step (`metasym_fold.py`), or rolled out in one Triton kernel (`fused_rollout.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from metasym_control.dynamics import Memory
from metasym_control.models.coordinates import CoordinateMap
from metasym_control.models.decoder import ActiveDecoder, DecoderConfig
from metasym_control.models.fused_rollout import fused_rollout, unsupported_reason
from metasym_control.models.learned import LearnedModel
from metasym_control.models.metasym_fold import FoldLayout, fold_step, shared_fold, step_folded
from metasym_control.models.symplectic import SymplecticConfig, SymplecticEncoder
from metasym_control.windows import Batch

# "auto": an own-key model's folded step on a CPU up to this many samples (see `_use_fold`)
FOLD_CPU_BATCH = 64

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
        attend_self: the self slot's score is the query-key product (format-1 checkpoints)
            instead of the query times a learned key (see `ActiveDecoder`; a score linear in
            the token lets a step fold).
        encoder_kind: "G" or "LA" symplectic shears.
        encoder_layers: (up, low) pairs of nonlinear shears.
        encoder_width: width of the gradient shears.
        encoder_linear: linear shear pairs first.
        encoder_linear_pairs: how many (see `SymplecticConfig.linear_pairs`).
        encoder_init_scale: scale of the encoder's initial fields (small: near identity).
        fast_set: which parameters adapt per system (the ablation knob).
        canonical_attitude: the encoder also takes the rotation's local chart and angular
            momentum (the coordinate map must hold them: `model_for_data` picks the system's
            attitude map, e.g. `quadrotor_coordinates(nx, attitude=True)`).
        kinematic_attitude: the predicted quaternion is not the decoder's but the previous
            one turned through the step's mean body rate (`CoordinateMap.carry_attitude`):
            the rotation kinematics exact, the decoder predicts only the body rates' change
            (the map must have a quaternion and body rates).
        body_force: the decoder also predicts a velocity change in the body frame, rotated
            into the world frame by the step's starting attitude (`CoordinateMap.body_to_world`)
            and added to its world-frame one: the rotors' thrust turns with the vehicle
            exactly, so a tilt beyond the training data's needs no extrapolation (the map
            must have a quaternion and a velocity; the step is then never folded).
        reversal_weight: weight of ||Φ_-dt(x_{k+1}) - x_k||^2 in the training loss.
        roundtrip_weight: weight of ||Φ_-dt(Φ_dt(x_k)) - x_k||^2 in the training loss.
    """

    history_len: int = 8  # 8 steps = 0.16 s of quadrotor flight: enough to see drag and lag
    d_model: int = 32  # sized for MPPI: a 1024-sample step well under 1 ms on 2 cores
    n_heads: int = 2  # small heads; more buys little at this width
    n_layers: int = 1  # one ordinary block + meta-attention: ~15k parameters in all
    mlp_ratio: int = 2  # modest MLP; the per-system part lives in the meta-attention
    own_context: int = 0  # states are Markov: the window identifies, the step copies nothing
    attend_self: bool = True  # own-key self score: better adaptation (docs/metasym.md)
    encoder_kind: str = "G"  # gradient shears: universal, few parameters
    encoder_layers: int = 1  # one nonlinear (up, low) pair: tanh is costly in the hot loop
    encoder_width: int = 16  # the conservative flows here are smooth
    encoder_linear: bool = True  # the harmonic part in one linear pair
    encoder_linear_pairs: int = 1  # more where modes turn far in a control step (the mesh)
    encoder_init_scale: float = 0.01  # start near Φ = id, like the decoder's zero head
    fast_set: str = "meta_attention"  # the paper's choice: adapt the meta-attention only
    canonical_attitude: bool = False  # measured in docs/metasym.md; translation only by default
    kinematic_attitude: bool = False  # measured in docs/metasym.md; off in format-1 checkpoints
    body_force: bool = False  # off in format-1 checkpoints (docs/metasym.md)
    reversal_weight: float = 0.1  # time reversal keeps energy drift down without dominating
    roundtrip_weight: float = 0.1  # Φ_-dt∘Φ_dt = id: the backward flow is the inverse

    def __post_init__(self) -> None:
        if self.history_len < 0:
            raise ValueError(f"MetaSymConfig.history_len must be >= 0, got {self.history_len}")
        if self.fast_set not in ("meta_attention", "meta_attention_head", "decoder", "none"):
            raise ValueError(f"MetaSymConfig.fast_set unknown: {self.fast_set!r}")
        if self.d_model % self.n_heads:
            raise ValueError("MetaSymConfig.d_model must be divisible by n_heads")


def _has_attitude_pair(coords: CoordinateMap) -> bool:
    """Whether `coords` pairs a quaternion's vector part (x, y, z) with momenta."""
    i = coords.quaternion_index
    return i >= 0 and {i + 1, i + 2, i + 3} <= set(coords.q_index)


class MetaSym(LearnedModel):
    """The MetaSym dynamics model (see the module docstring for the step).

    Attributes:
        fold_mode: when `init_memory` of one history adds the folded planner step: "auto"
            (default; see `_should_fold`), "always" or "never". A runtime speed choice, not saved.
        rollout_kernel: how `rollout` runs the folded step: "torch" (T steps of torch
            operators), "triton" / "triton-tf32" (the whole rollout in one Triton kernel
            launch, `models/fused_rollout.py`; CUDA and float32; products on tensor cores,
            three tf32 products each for float32 accuracy, or one, about 4e-2 relative
            error over 30 steps), or "auto" (default): "triton" for float32 CUDA models when
            Triton is installed and the structure is supported, else "torch". With the
            kernel, `init_memory` makes the kernel's stream form, and `step` then takes the
            general path. A runtime speed choice, not saved.

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
        if cfg.canonical_attitude and not _has_attitude_pair(coords):
            raise ValueError(
                "MetaSymConfig.canonical_attitude needs a coordinate map whose q holds the "
                "quaternion's vector part (e.g. quadrotor_coordinates(nx, attitude=True)); got "
                f"q_index {coords.q_index}"
            )
        if cfg.kinematic_attitude and (coords.quaternion_index < 0 or coords.rate_index < 0):
            raise ValueError(
                "MetaSymConfig.kinematic_attitude needs a coordinate map with a quaternion and "
                f"body rates (quaternion_index, rate_index); the {coords.kind!r} map has none"
            )
        if cfg.body_force and coords.velocity_index < 0:
            raise ValueError(
                "MetaSymConfig.body_force needs a coordinate map with a quaternion and a "
                f"world-frame velocity (velocity_index); the {coords.kind!r} map has none"
            )
        if cfg.kinematic_attitude and cfg.canonical_attitude:
            raise ValueError(
                "MetaSymConfig: kinematic_attitude would overwrite the encoder's attitude "
                "chart (canonical_attitude); choose one"
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
                linear_pairs=cfg.encoder_linear_pairs,
                dt_ref=dt,
                init_scale=cfg.encoder_init_scale,
            ),
        )
        self.decoder = ActiveDecoder(
            token_dim=state_dim + action_dim + 2 * d,
            out_dim=state_dim + (3 if cfg.body_force else 0),
            history_len=cfg.history_len,
            config=DecoderConfig(
                cfg.d_model,
                cfg.n_heads,
                cfg.n_layers,
                cfg.mlp_ratio,
                cfg.own_context,
                cfg.attend_self,
            ),
        )
        self.to(device=device, dtype=dtype)
        # when one history's step is folded: "auto", "always" or "never" (see
        # `_should_fold`); a runtime choice of speed, not part of the model (not saved)
        self.fold_mode = "auto"
        self.rollout_kernel = "auto"
        # the folded step's structure (`metasym_fold.FoldLayout`)
        self.fold_layout = FoldLayout.of(self.encoder, self.decoder, coords, action_dim)

    # ---------------------------------------------------------------- fast weights
    def fast_weight_names(self) -> list[str]:
        """The fast-weight set chosen by `config.fast_set` (default: the meta-attention)."""
        fast_set = self.config.fast_set
        meta = [f"decoder.{n}" for n in self.decoder.meta_attention_names()]
        if fast_set == "meta_attention":
            return meta
        if fast_set == "meta_attention_head":
            return [*meta, "decoder.head.weight", "decoder.head.bias"]
        if fast_set == "decoder":
            return [n for n, _ in self.named_parameters() if n.startswith("decoder.")]
        return []

    # ---------------------------------------------------------------- pieces
    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder increment e (..., 2d) (standardised) and its state change (..., nx)."""
        z = self.canonical(x)
        e = self.encoder(z, self.dt) - z
        return e, e @ self.canonical_to_state

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
        memory = self.decoder.encode_prefix(self._token(states, actions, e), valid.bool())
        foldable = self.config.own_context == 0 and not self.config.body_force
        if states.dim() == 2 and foldable and self._should_fold():
            # the kernel's stream form where the rollout runs the kernel, else the chain
            stream_form = self._kernel_for(self.decoder.head.weight) != "torch"
            memory.update(fold_step(self, memory, stream_form))
        return memory

    def _should_fold(self) -> bool:
        """Whether `init_memory` of one history adds the folded step (see `fold_mode`).

        "auto": always. With the learned self key the folded step has fewer products and
        less arithmetic at any batch; with the own key (the shipped default) it has about a
        third of the products and 1.8x the arithmetic, so it wins where a step is bound by
        its operator count (CUDA, and small batches on a CPU) and loses where it is bound by
        arithmetic (large CPU batches): `_use_fold` decides per call.
        """
        mode = self.fold_mode
        if mode not in ("auto", "always", "never"):
            raise ValueError(f"MetaSym.fold_mode must be auto, always or never, got {mode!r}")
        return mode != "never"

    def _use_fold(self, x: torch.Tensor, batch: int) -> bool:
        """Whether a step of `batch` samples like x (device) takes a memory's folded step.

        "auto" with the own key on a CPU: only up to `FOLD_CPU_BATCH` samples (a 20-step
        rollout of the shipped model on one thread: 5 against 13 ms for one sample, the same
        at 256, 3x slower at 1024; docs/metasym.md).
        """
        if self.fold_mode != "auto" or not self.config.attend_self or x.device.type == "cuda":
            return True
        return batch <= FOLD_CPU_BATCH

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Predict T steps: x0 (..., nx), actions (..., T, nu) -> (..., T, nx), x0 excluded.

        Equal to repeated `step`. With one shared history, the actions of all T steps pass
        the input matrix in one product before the loop (one product fewer per step), or
        the whole rollout is one kernel launch (`rollout_kernel`).
        """
        kernel = self._kernel_for(x0)
        fold = shared_fold(memory)
        lead = torch.broadcast_shapes(x0.shape[:-1], actions.shape[:-2])
        if fold is None or not self._use_fold(x0, math.prod(lead)):
            return super().rollout(x0, actions, memory)
        nx, nu, T = self.state_dim, self.action_dim, actions.shape[-2]
        x = x0.expand(*lead, nx).reshape(-1, nx)  # (B, nx)
        ua = actions.expand(*lead, T, nu).reshape(-1, T, nu)  # (B, T, nu)
        if kernel != "torch" and (self.rollout_kernel != "auto" or "fold_s_b" in fold):
            precision = "tf32" if kernel == "triton-tf32" else "tf32x3"
            return fused_rollout(self, fold, x, ua, precision).view(*lead, T, nx)
        if "fold_b" not in fold:  # a stream-form memory (made for the kernel): general path
            return super().rollout(x0, actions, memory)
        pu = torch.matmul(ua, fold["fold_wu"]) + fold["fold_b"]  # (B, T, N)
        xs = []
        for k in range(T):
            x = self._finish(x, step_folded(self.fold_layout, x, None, fold, pu[:, k]))
            xs.append(x)
        return torch.stack(xs, dim=1).view(*lead, T, nx)

    def _kernel_for(self, x: torch.Tensor) -> str:
        """`rollout_kernel` resolved for tensors like x (device, dtype): "torch", "triton" or
        "triton-tf32" ("auto": the kernel where it runs, see the attribute)."""
        kernel = self.rollout_kernel
        if kernel not in ("auto", "torch", "triton", "triton-tf32"):
            raise ValueError(
                f"MetaSym.rollout_kernel must be auto, torch, triton or triton-tf32, got {kernel!r}"
            )
        if kernel == "auto":
            ok = x.device.type == "cuda" and unsupported_reason(self, x) is None
            return "triton" if ok else "torch"
        return kernel

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """One control step: x (..., nx), u (..., nu) -> x_next (..., nx), new memory.

        The memory may be one history broadcast (expanded) over the samples: its prefix is
        read without copies.
        """
        lead = torch.broadcast_shapes(x.shape[:-1], u.shape[:-1])
        x2 = x.expand(*lead, self.state_dim).reshape(-1, self.state_dim)  # (B, nx)
        u2 = u.expand(*lead, self.action_dim).reshape(-1, self.action_dim)  # (B, nu)
        fold = shared_fold(memory)
        # the chain (not the kernel's stream form), where it is the faster path
        if fold is not None and "fold_b" in fold and self._use_fold(x2, x2.shape[0]):
            x_next = step_folded(self.fold_layout, x2, u2, fold)
            return self._finish(x2, x_next).view(*lead, self.state_dim), memory
        e, dx = self._encode(x2)  # (B, 2d), (B, nx)
        tok = torch.cat([self.norm_state(x2), self.norm_action(u2), e], dim=-1)
        r, memory = self.decoder.step(tok.view(*lead, -1), memory)  # (..., nx [+ 3])
        r = r.reshape(x2.shape[0], -1)
        x_next = torch.addcmul(x2 + dx, self.delta_std, r[:, : self.state_dim])
        if self.config.body_force:
            x_next = x_next + self._body_change(x2, r[:, self.state_dim :])
        return self._finish(x2, x_next).view(*lead, self.state_dim), memory

    def _body_change(self, x: torch.Tensor, r_body: torch.Tensor) -> torch.Tensor:
        """The state change (B, nx) of the decoder's body-frame outputs r_body (B, 3): a
        velocity change R(q) s r_body, s the RMS of the velocity's one-step-change stds (one
        scale for all three axes, so the rotation stays a rotation)."""
        i = self.coords.velocity_index
        scale = self.delta_std[i : i + 3].pow(2).mean().sqrt()
        dv = self.coords.body_to_world(x, scale * r_body)  # (B, 3) m/s
        out = torch.zeros_like(x)
        return torch.cat([out[:, :i], dv, out[:, i + 3 :]], dim=-1)

    def _finish(self, x: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        """The step's last stage, (B, nx), (B, nx) -> (B, nx): the attitude carried by the
        body rates (`kinematic_attitude`), then the map's projection onto the states."""
        if self.config.kinematic_attitude:
            x_next = self.coords.carry_attitude(x, x_next, self.dt)
        return self.coords.postprocess(x_next)

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
            loss = (
                loss + cfg.reversal_weight * ((back - z0) / self.canonical_delta_std).pow(2).mean()
            )
        if cfg.roundtrip_weight:
            rt = self.encoder(self.encoder(z0, self.dt), -self.dt)
            loss = (
                loss + cfg.roundtrip_weight * ((rt - z0) / self.canonical_delta_std).pow(2).mean()
            )
        return loss
