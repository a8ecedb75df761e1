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
import torch.nn.functional as F

from metasym_control.dynamics import Memory
from metasym_control.models.coordinates import CoordinateMap
from metasym_control.models.decoder import ActiveDecoder, DecoderConfig, compact_broadcast
from metasym_control.models.fused_rollout import stream_form_reason
from metasym_control.models.learned import Batch, LearnedModel
from metasym_control.models.symplectic import (
    ActivationShear,
    Affine,
    GradientShear,
    SymplecticConfig,
    SymplecticEncoder,
    fold_encoder,
)

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
    attend_self: bool = True  # own-key self score: better adaptation (docs/metasym.md)
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

    Attributes:
        fold_mode: when `init_memory` of one history adds the folded planner step: "auto"
            (default; see `_folds`), "always" or "never". A runtime speed choice, not saved.
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
                cfg.d_model,
                cfg.n_heads,
                cfg.n_layers,
                cfg.mlp_ratio,
                cfg.own_context,
                cfg.attend_self,
            ),
        )
        self.to(device=device, dtype=dtype)
        self.can_index = self.can_index.long()
        # when one history's step is folded: "auto", "always" or "never" (see `_folds`); a
        # runtime choice of speed, not part of the model (not saved)
        self.fold_mode = "auto"
        self.rollout_kernel = "auto"
        # the folded step's nonlinear nodes in order, (kind, width): the encoder's tanh
        # stages, then per attention layer its softmax over [window, self] per head and,
        # in the ordinary blocks, the MLP's GELU
        # (kind, input width, output width)
        self._fold_nodes: list[tuple[str, int, int]] = [
            ("tanh", w, w)
            for w in (
                m.k.shape[0] if isinstance(m, GradientShear) else d
                for m in self.encoder.shears
                if isinstance(m, GradientShear | ActivationShear)
            )
        ]
        hl1, dm = cfg.n_heads * (cfg.history_len + 1), cfg.d_model
        for i in range(self.decoder.n_attn):
            if cfg.attend_self:  # [window scores | q | k | v] -> [weights | own value]
                self._fold_nodes.append(("attn_qk", hl1 - cfg.n_heads + 3 * dm, hl1 + dm))
            else:  # [scores | v] -> [weights | own value]
                self._fold_nodes.append(("attn", hl1 + dm, hl1 + dm))
            if i < cfg.n_layers:
                self._fold_nodes.append(("gelu", cfg.mlp_ratio * dm, cfg.mlp_ratio * dm))

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
        memory = self.decoder.encode_prefix(self._token(states, actions, e), valid.bool())
        if states.dim() == 2 and self.config.own_context == 0 and self._folds(states.device):
            memory.update(self._fold(memory))
        return memory

    def _folds(self, device: torch.device) -> bool:
        """Whether `init_memory` of one history adds the folded step (see `fold_mode`).

        "auto": always with the learned self key (fewer products and less arithmetic); with
        the own key only on CUDA devices, where a step is bound by kernel launches (the chain
        has about a third of the products) and not by its 1.8x arithmetic, which on a CPU
        makes it slower than the general path.
        """
        mode = self.fold_mode
        if mode not in ("auto", "always", "never"):
            raise ValueError(f"MetaSym.fold_mode must be auto, always or never, got {mode!r}")
        if mode == "auto":
            return not self.config.attend_self or device.type == "cuda"
        return mode == "always"

    def _fold(self, memory: Memory) -> Memory:
        """The whole step for ONE history as a chain of nonlinear nodes and matrices.

        Between its nonlinearities (the encoder's tanh stages, each attention's softmax, each
        MLP's GELU) a step is affine: the canonical map, the linear shears, normalisation,
        embedding, every bias, the residual stream, the prefix keys and values and the head
        all compose. So each node's output goes through ONE matrix straight to every later
        consumer (the residual stream is never formed), and a step is one product for the
        state, then per node its nonlinearity and one product.

        Layout: the columns of a running accumulator are [each node's pre-activation, in
        order | the next state before projection (nx)]. Entries: `fold_wx` (nx, N),
        `fold_wu` (nu, N), `fold_b` (N,) for the inputs, and `fold_n{k}` (w_k, N_k) from
        node k to the columns after it. With `rollout_kernel` set (and a structure the kernel
        supports) it returns the kernel's stream form instead (`_stream_fold`).
        """
        nx, nu, d = self.state_dim, self.action_dim, self.coords.dim_q
        ref = self.decoder.head.weight
        dec = self.decoder.fold_shared(memory)
        # canonical coordinates z = x[idx] * mul - sub as an affine map of X = [x, u]
        pz = ref.new_zeros(nx + nu, 2 * d)
        pz[self.can_index, torch.arange(2 * d, device=ref.device)] = self.can_mul.to(ref)
        sub = self.can_sub.to(ref)
        q0 = Affine(pz[:, :d], [], -sub[:d])
        p0 = Affine(pz[:, d:], [], -sub[d:])
        stages, q1, p1 = fold_encoder(self.encoder, q0, p0, self.dt)
        n_st = len(stages)
        # e = Φ(z) - z; embedded token h0 and x + e @ can_out, per source
        e_ts = [
            None if a is None and b is None else torch.cat([_or0(a, d, b), _or0(b, d, a)], 1)
            for a, b in zip(_pad(q1.ts, n_st), _pad(p1.ts, n_st))
        ]
        e_x = torch.cat([q1.x - q0.x, p1.x - p0.x], dim=1)  # (nx+nu, 2d)
        e_c = torch.cat([q1.c - q0.c, p1.c - p0.c])  # (2d,)
        we = self.decoder.embed.weight.T  # (nx+nu+2d, dm)
        inv = torch.cat([1.0 / self.state_std, 1.0 / self.action_std]).to(ref)
        mean = torch.cat([self.state_mean, self.action_mean]).to(ref)
        w_e = we[nx + nu :]
        to_x = torch.cat([torch.eye(nx, dtype=ref.dtype, device=ref.device), ref.new_zeros(nu, nx)])
        can_out = self.can_out.to(ref)
        dstd = self.delta_std.to(ref)
        head = self.decoder.head.weight.T * dstd  # (dm, nx)
        c_h = self.decoder.embed.bias - (mean * inv) @ we[: nx + nu] + e_c @ w_e
        c_x = e_c @ can_out + self.decoder.head.bias * dstd
        # the decoder's consumers of the stream: node index -> (matrix, bias)
        nodes = self._fold_nodes
        cons: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        k = n_st
        for i in range(self.decoder.n_attn):
            cons[k] = (dec[f"fold_a{i}_w"], dec[f"fold_a{i}_b"])
            k += 1
            if f"fold_m{i}_w1" in dec:
                cons[k] = (dec[f"fold_m{i}_w1"], dec[f"fold_m{i}_b1"])
                k += 1
        out_n = len(nodes)
        cons[out_n] = (head, ref.new_zeros(nx))
        widths = [w for _, w, _ in nodes] + [nx]  # the accumulator's column blocks
        out_widths = [w for _, _, w in nodes]  # each node's output width

        def block(
            rows: int, direct: dict[int, torch.Tensor], stream: torch.Tensor | None, after: int
        ) -> torch.Tensor:
            """(rows, N): direct coefficients, plus the stream contribution times the matrix
            of every decoder consumer after node `after`."""
            cols = []
            for n, w in enumerate(widths):
                c = direct.get(n)
                if stream is not None and n in cons and n > after:
                    c = stream @ cons[n][0] if c is None else c + stream @ cons[n][0]
                cols.append(ref.new_zeros(rows, w) if c is None else c)
            return torch.cat(cols, dim=1)

        direct_in = {j: st.pre.x for j, st in enumerate(stages)}
        direct_in[out_n] = to_x + e_x @ can_out
        stream_x = inv[:, None] * we[: nx + nu] + e_x @ w_e  # (nx+nu, dm) into the stream
        if self._kernel_for(stream_x) != "torch" and stream_form_reason(self) is None:
            # the fused kernel's stream form instead of the chain (not both: each costs
            # about 150 small operators per control step)
            inputs = torch.cat(  # (nx+nu, w0 + w1 + dm + nx)
                [stages[0].pre.x, stages[1].pre.x, stream_x, direct_in[out_n]], dim=1
            )
            consts = [stages[0].pre.c, stages[1].pre.c, c_h, c_x + dec["c_head"] @ head]
            from_stage = [(_pad(stages[1].pre.ts, n_st)[0], e_ts[0]), (None, e_ts[1])]
            return self._stream_fold(inputs, torch.cat(consts), from_stage, dec, head, w_e, can_out)
        w_in = block(nx + nu, direct_in, stream_x, -1)
        bias = [st.pre.c for st in stages]
        bias += [cons[n][1] + c_h @ cons[n][0] for n in range(n_st, out_n)]
        bias.append(c_x + c_h @ head + dec["c_head"] @ head)
        out: Memory = {"fold_wx": w_in[:nx], "fold_wu": w_in[nx:], "fold_b": torch.cat(bias)}
        offs = [0]
        for w in widths:
            offs.append(offs[-1] + w)
        for j in range(n_st):  # tanh stages: later stages, the output, the stream
            direct = {
                n: t
                for n, st in enumerate(stages)
                if n > j
                for t in [_pad(st.pre.ts, n)[j]]
                if t is not None
            }
            et = e_ts[j]
            if et is not None:
                direct[out_n] = et @ can_out
            full = block(out_widths[j], direct, None if et is None else et @ w_e, -1)
            out[f"fold_n{j}"] = full[:, offs[j + 1] :]
        k = n_st
        for i in range(self.decoder.n_attn):  # softmax and GELU nodes write to the stream
            full = block(out_widths[k], {}, dec[f"fold_a{i}_vw"], k)
            out[f"fold_n{k}"] = full[:, offs[k + 1] :]
            k += 1
            if f"fold_m{i}_w2" in dec:
                full = block(out_widths[k], {}, dec[f"fold_m{i}_w2"], k)
                out[f"fold_n{k}"] = full[:, offs[k + 1] :]
                k += 1
        return out

    def _stream_fold(
        self,
        inputs: torch.Tensor,
        consts: torch.Tensor,
        from_stage: list[tuple[torch.Tensor | None, torch.Tensor | None]],
        dec: Memory,
        head: torch.Tensor,
        w_e: torch.Tensor,
        can_out: torch.Tensor,
    ) -> Memory:
        """The same step in stream form, for the fused rollout kernel (`fused_rollout.py`).

        Each node reads the d_model-wide residual stream instead of every earlier node's
        output: under half the chain's weights, which a kernel streams every step.

        Args:
            inputs: (nx+nu, Ns) from [x, u] to the columns [tanh stage 0 | stage 1 | stream
                h0 | next state before the head]; consts: (Ns,) their constants.
            from_stage: per tanh stage, its coefficient on stage 1's pre-activation (stage
                0 only) and on the encoder output e (or None where it does not enter).
            dec: `ActiveDecoder.fold_shared` of the window; head: (dm, nx) the scaled head;
            w_e: (2d, dm) e into the stream; can_out: (2d, nx) e into the state.

        Returns:
            `fold_s_wx` (nx, Ns), `fold_s_wu` (nu, Ns), `fold_s_b` (Ns,); `fold_s_n0` (w0,
            w1 + dm + nx) and `fold_s_n1` (w1, dm + nx), each stage to the columns after it;
            the decoder's per-layer matrices as `fold_s_a{i}_*`, `fold_s_m{i}_*`; and
            `fold_s_head` (dm, nx). The next state is the last block plus the final stream
            times the head.
        """
        nx = self.state_dim
        widths = [st[1] for st in self._fold_nodes[:2]]
        ref = head
        blocks = []
        for j, (to_t1, to_e) in enumerate(from_stage):
            w = widths[j]
            cols = [ref.new_zeros(w, widths[1]) if to_t1 is None else to_t1] if j == 0 else []
            for m in (w_e, can_out):
                cols.append(ref.new_zeros(w, m.shape[1]) if to_e is None else to_e @ m)
            blocks.append(torch.cat(cols, dim=1))
        out: Memory = {
            "fold_s_wx": inputs[:nx],
            "fold_s_wu": inputs[nx:],
            "fold_s_b": consts,
            "fold_s_n0": blocks[0],
            "fold_s_n1": blocks[1],
            "fold_s_head": head,
        }
        for k, v in dec.items():
            if k.startswith(("fold_a", "fold_m")):
                out["fold_s_" + k[len("fold_") :]] = v
        return out

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Predict T steps: x0 (..., nx), actions (..., T, nu) -> (..., T, nx), x0 excluded.

        Equal to repeated `step`. With one shared history, the actions of all T steps pass
        the input matrix in one product before the loop (one product fewer per step), or
        the whole rollout is one kernel launch (`rollout_kernel`).
        """
        kernel = self._kernel_for(x0)
        fold = _shared_fold(memory)
        if fold is None:
            return super().rollout(x0, actions, memory)
        lead = torch.broadcast_shapes(x0.shape[:-1], actions.shape[:-2])
        nx, nu, T = self.state_dim, self.action_dim, actions.shape[-2]
        x = x0.expand(*lead, nx).reshape(-1, nx)  # (B, nx)
        ua = actions.expand(*lead, T, nu).reshape(-1, T, nu)  # (B, T, nu)
        if kernel != "torch" and (self.rollout_kernel != "auto" or "fold_s_b" in fold):
            from metasym_control.models.fused_rollout import fused_rollout

            precision = "tf32" if kernel == "triton-tf32" else "tf32x3"
            return fused_rollout(self, fold, x, ua, precision).view(*lead, T, nx)
        if "fold_b" not in fold:  # a stream-form memory (made for the kernel): general path
            return super().rollout(x0, actions, memory)
        pu = torch.matmul(ua, fold["fold_wu"]) + fold["fold_b"]  # (B, T, N)
        xs = []
        for k in range(T):
            x = self.coords.postprocess(self._step_folded(x, None, fold, pu[:, k]))
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
            from metasym_control.models.fused_rollout import unsupported_reason

            ok = x.device.type == "cuda" and unsupported_reason(self, x) is None
            return "triton" if ok else "torch"
        return kernel

    def _step_folded(
        self,
        x: torch.Tensor,
        u: torch.Tensor | None,
        fold: Memory,
        pu: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`step` for one shared history on the `_fold` chain.

        Args:
            x: (B, nx) states; u: (B, nu) actions; fold: `_shared_fold` of the memory.
            pu: (B, N) the actions' part `u @ fold_wu + fold_b` when already computed
                (then u is ignored).

        Returns:
            (B, nx) next states before the manifold projection.
        """
        if pu is None:
            assert u is not None
            pu = torch.addmm(fold["fold_b"], u, fold["fold_wu"])
        acc = torch.addmm(pu, x, fold["fold_wx"])  # (B, N)
        B, H = x.shape[0], self.config.n_heads
        dm = self.config.d_model
        for k, (kind, w, _) in enumerate(self._fold_nodes):
            pre = acc[:, :w]
            if kind == "tanh":
                y = torch.tanh(pre)
            elif kind == "gelu":
                y = F.gelu(pre)
            else:  # attention: softmax per head over [window, self] (by hand: fast for short
                # rows), and the self slot's weight times the token's own value
                v = pre[:, w - dm :].view(B, H, -1)
                if kind == "attn_qk":  # the self score from the token's own query and key
                    hl = w - 3 * dm
                    q, kk = pre[:, hl : hl + dm], pre[:, hl + dm : hl + 2 * dm]
                    own = (q * kk).view(B, H, -1).sum(-1, keepdim=True)
                    s = torch.cat([pre[:, :hl].view(B, H, -1), own], dim=-1)
                else:
                    s = pre[:, : w - dm].view(B, H, -1)
                e = (s - s.amax(dim=-1, keepdim=True)).exp()
                p = e / e.sum(dim=-1, keepdim=True)
                y = torch.cat([p.view(B, -1), (p[..., -1:] * v).view(B, dm)], dim=1)
            acc = torch.addmm(acc[:, w:], y, fold[f"fold_n{k}"])
        return acc

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """One control step: x (..., nx), u (..., nu) -> x_next (..., nx), new memory.

        The memory may be one history broadcast (expanded) over the samples: its prefix is
        read without copies.
        """
        lead = torch.broadcast_shapes(x.shape[:-1], u.shape[:-1])
        x2 = x.expand(*lead, self.state_dim).reshape(-1, self.state_dim)  # (B, nx)
        u2 = u.expand(*lead, self.action_dim).reshape(-1, self.action_dim)  # (B, nu)
        fold = _shared_fold(memory)
        if fold is not None and "fold_b" in fold:  # the chain (not the kernel's stream form)
            x_next = self._step_folded(x2, u2, fold)
            return self.coords.postprocess(x_next).view(*lead, self.state_dim), memory
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


def _pad(ts: list[torch.Tensor | None], n: int) -> list[torch.Tensor | None]:
    """`ts` padded with None (or cut) to length n."""
    return (list(ts) + [None] * n)[:n]


def _or0(t: torch.Tensor | None, d: int, like: torch.Tensor | None) -> torch.Tensor:
    """t, or zeros (w, d) shaped after the other half's coefficient `like`."""
    if t is not None:
        return t
    assert like is not None
    return like.new_zeros(like.shape[0], d)


def _shared_fold(memory: Memory) -> Memory | None:
    """The memory's `fold_*` entries at their own shapes if one history is shared, else None.

    Entries broadcast to the samples (stride-0 leading dimensions) are read back as views;
    a memory without fold entries, or whose entries differ per sample, takes the general path.
    """
    key = "fold_b" if "fold_b" in memory else "fold_s_b"  # the chain, or the stream form
    if key not in memory:
        return None
    n_lead = memory[key].dim() - 1
    out: Memory = {}
    for k, v in memory.items():
        if not k.startswith("fold_"):
            continue
        t = compact_broadcast(v, n_lead)
        if math.prod(t.shape[:n_lead]) != 1:
            return None
        out[k] = t.reshape(t.shape[n_lead:])
    return out
