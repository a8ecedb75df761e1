"""MetaSym's speed compiler: the step for ONE shared history folded into matrices.

Between its nonlinearities (the encoder's tanh stages, each attention's softmax, each MLP's
GELU) a MetaSym step is affine: the canonical map, the linear shears, normalisation,
embedding, every bias, the residual stream, the prefix keys and values and the head all
compose. `fold_step` composes them once per control step (when a planner rolls many samples
out from one history), `step_folded` runs a step on the result, and `shared_fold` reads the
folded entries back from a memory broadcast over the samples. The fused Triton rollout
(`fused_rollout.py`) runs the same step in the stream form that `fold_step` also makes.

The folded entries are memory entries named `fold_*` (the chain) or `fold_s_*` (the stream
form); see `fold_step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from metasym_control.dynamics import Memory
from metasym_control.models.coordinates import CoordinateMap
from metasym_control.models.decoder import ActiveDecoder, compact_broadcast
from metasym_control.models.symplectic import (
    ActivationShear,
    Affine,
    GradientShear,
    SymplecticEncoder,
    fold_encoder,
)

# A node of the folded step: (kind, input width, output width); kind is "tanh" (an encoder
# stage), "gelu" (a decoder MLP), "attn" or "attn_qk" (an attention's softmax over [window,
# self] per head, the self score learned or the token's own query-key product).
FoldNode = tuple[str, int, int]


@dataclass(frozen=True)
class FoldLayout:
    """The structure of a folded step: what the chain and the fused kernel need to know.

    Attributes:
        nodes: the nonlinear nodes in evaluation order: the encoder's tanh stages, then per
            attention layer its softmax and, in the ordinary blocks, the MLP's GELU.
        state_dim: nx; action_dim: nu.
        history_len: L, window slots of each attention.
        d_model: the decoder's stream width; n_heads: its heads.
        attend_self: the self slot's score is the query-key product ("attn_qk" nodes).
        quaternion_index: start of the unit quaternion the step renormalises, or -1.
        density_levels: N of the density matrix the step projects onto (quantum), or 0.
    """

    nodes: tuple[FoldNode, ...]
    state_dim: int
    action_dim: int
    history_len: int
    d_model: int
    n_heads: int
    attend_self: bool
    quaternion_index: int
    density_levels: int = 0

    @classmethod
    def of(
        cls, encoder: SymplecticEncoder, decoder: ActiveDecoder, coords: CoordinateMap, nu: int
    ) -> FoldLayout:
        """The layout of a MetaSym step with this encoder, decoder and coordinate map.

        Args:
            encoder: the symplectic encoder; decoder: the active decoder; coords: the
                coordinate map; nu: the action dimension.
        """
        cfg = decoder.config
        nodes: list[FoldNode] = [
            ("tanh", w, w)
            for w in (
                m.k.shape[0] if isinstance(m, GradientShear) else m.dim_q
                for m in encoder.shears
                if isinstance(m, GradientShear | ActivationShear)
            )
        ]
        slots, dm = cfg.n_heads * (decoder.history_len + 1), cfg.d_model  # scores incl. self
        for i in range(decoder.n_attn):
            if cfg.attend_self:  # [window scores | q | k | v] -> [weights | own value]
                nodes.append(("attn_qk", slots - cfg.n_heads + 3 * dm, slots + dm))
            else:  # [scores | v] -> [weights | own value]
                nodes.append(("attn", slots + dm, slots + dm))
            if i < cfg.n_layers:
                nodes.append(("gelu", cfg.mlp_ratio * dm, cfg.mlp_ratio * dm))
        return cls(
            nodes=tuple(nodes),
            state_dim=coords.state_dim,
            action_dim=nu,
            history_len=decoder.history_len,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            attend_self=cfg.attend_self,
            quaternion_index=coords.quaternion_index,
            density_levels=coords.density_levels,
        )


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def stream_form_reason(layout: FoldLayout) -> str | None:
    """Why a step of this layout has no stream form for the fused kernel, or None.

    Args:
        layout: the folded step's layout.
    """
    if layout.density_levels:
        return "the fused rollout does not project onto density matrices (quantum states)"
    kinds = [k for k, _, _ in layout.nodes]
    attn = "attn_qk" if layout.attend_self else "attn"
    if kinds != ["tanh", "tanh", attn, "gelu", attn]:
        return f"the fused rollout supports nodes tanh, tanh, {attn}, gelu, {attn}; got {kinds}"
    dh = layout.d_model // layout.n_heads
    if not (_is_pow2(layout.n_heads) and _is_pow2(dh)) or dh * layout.n_heads < 16:
        return "the fused rollout needs power-of-two heads and head width, d_model >= 16"
    return None


class FoldableModel(Protocol):
    """What `fold_step` reads of a model (MetaSym): its pieces and normalisation buffers."""

    state_dim: int
    action_dim: int
    dt: float
    coords: CoordinateMap
    encoder: SymplecticEncoder
    decoder: ActiveDecoder
    fold_layout: FoldLayout
    state_mean: torch.Tensor
    state_std: torch.Tensor
    action_mean: torch.Tensor
    action_std: torch.Tensor
    delta_std: torch.Tensor
    canonical_index: torch.Tensor
    canonical_gain: torch.Tensor
    canonical_offset: torch.Tensor
    canonical_to_state: torch.Tensor


def fold_step(model: FoldableModel, memory: Memory, stream_form: bool = False) -> Memory:
    """The whole step for ONE history as a chain of nonlinear nodes and matrices.

    Each node's output goes through ONE matrix straight to every later consumer (the
    residual stream is never formed), so a step is one product for the state, then per
    node its nonlinearity and one product.

    Layout: the columns of a running accumulator are [each node's pre-activation, in
    order | the next state before projection (nx)]. Entries: `fold_wx` (nx, N),
    `fold_wu` (nu, N), `fold_b` (N,) for the inputs, and `fold_n{k}` (w_k, N_k) from
    node k to the columns after it.

    Args:
        model: the model (MetaSym); memory: its `encode_prefix` memory of one history
            (no leading dimensions).
        stream_form: return the fused kernel's stream form instead (`fold_s_*` entries,
            see `_stream_fold`) where the layout has one (`stream_form_reason`).

    Returns:
        The folded entries, to add to the memory.
    """
    nx, nu, d = model.state_dim, model.action_dim, model.coords.dim_q
    layout = model.fold_layout
    decoder = model.decoder
    ref = decoder.head.weight
    dec = decoder.fold_shared(memory)
    # canonical coordinates z = x[idx] * gain - offset as an affine map of X = [x, u]
    pz = ref.new_zeros(nx + nu, 2 * d)
    pz[model.canonical_index, torch.arange(2 * d, device=ref.device)] = model.canonical_gain.to(ref)
    offset = model.canonical_offset.to(ref)
    q0 = Affine(pz[:, :d], [], -offset[:d])
    p0 = Affine(pz[:, d:], [], -offset[d:])
    stages, q1, p1 = fold_encoder(model.encoder, q0, p0, model.dt)
    n_st = len(stages)
    # e = Φ(z) - z; embedded token h0 and x + e @ to_state, per source
    e_ts = [
        None if a is None and b is None else torch.cat([_or_zeros(a, d, b), _or_zeros(b, d, a)], 1)
        for a, b in zip(_padded(q1.ts, n_st), _padded(p1.ts, n_st))
    ]
    e_x = torch.cat([q1.x - q0.x, p1.x - p0.x], dim=1)  # (nx+nu, 2d)
    e_c = torch.cat([q1.c - q0.c, p1.c - p0.c])  # (2d,)
    we = decoder.embed.weight.T  # (nx+nu+2d, dm)
    inv = torch.cat([1.0 / model.state_std, 1.0 / model.action_std]).to(ref)
    mean = torch.cat([model.state_mean, model.action_mean]).to(ref)
    w_e = we[nx + nu :]
    to_x = torch.cat([torch.eye(nx, dtype=ref.dtype, device=ref.device), ref.new_zeros(nu, nx)])
    to_state = model.canonical_to_state.to(ref)
    dstd = model.delta_std.to(ref)
    head = decoder.head.weight.T * dstd  # (dm, nx)
    c_h = decoder.embed.bias - (mean * inv) @ we[: nx + nu] + e_c @ w_e
    c_x = e_c @ to_state + decoder.head.bias * dstd
    # the decoder's consumers of the stream: node index -> (matrix, bias)
    nodes = layout.nodes
    cons: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    k = n_st
    for i in range(decoder.n_attn):
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
    direct_in[out_n] = to_x + e_x @ to_state
    stream_x = inv[:, None] * we[: nx + nu] + e_x @ w_e  # (nx+nu, dm) into the stream
    if stream_form and stream_form_reason(layout) is None:
        # the fused kernel's stream form instead of the chain (not both: each costs
        # about 150 small operators per control step)
        inputs = torch.cat(  # (nx+nu, w0 + w1 + dm + nx)
            [stages[0].pre.x, stages[1].pre.x, stream_x, direct_in[out_n]], dim=1
        )
        consts = [stages[0].pre.c, stages[1].pre.c, c_h, c_x + dec["c_head"] @ head]
        from_stage = [(_padded(stages[1].pre.ts, n_st)[0], e_ts[0]), (None, e_ts[1])]
        return _stream_fold(layout, inputs, torch.cat(consts), from_stage, dec, head, w_e, to_state)
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
            for t in [_padded(st.pre.ts, n)[j]]
            if t is not None
        }
        et = e_ts[j]
        if et is not None:
            direct[out_n] = et @ to_state
        full = block(out_widths[j], direct, None if et is None else et @ w_e, -1)
        out[f"fold_n{j}"] = full[:, offs[j + 1] :]
    k = n_st
    for i in range(decoder.n_attn):  # softmax and GELU nodes write to the stream
        full = block(out_widths[k], {}, dec[f"fold_a{i}_vw"], k)
        out[f"fold_n{k}"] = full[:, offs[k + 1] :]
        k += 1
        if f"fold_m{i}_w2" in dec:
            full = block(out_widths[k], {}, dec[f"fold_m{i}_w2"], k)
            out[f"fold_n{k}"] = full[:, offs[k + 1] :]
            k += 1
    return out


def _stream_fold(
    layout: FoldLayout,
    inputs: torch.Tensor,
    consts: torch.Tensor,
    from_stage: list[tuple[torch.Tensor | None, torch.Tensor | None]],
    dec: Memory,
    head: torch.Tensor,
    w_e: torch.Tensor,
    to_state: torch.Tensor,
) -> Memory:
    """The same step in stream form, for the fused rollout kernel (`fused_rollout.py`).

    Each node reads the d_model-wide residual stream instead of every earlier node's
    output: under half the chain's weights, which a kernel streams every step.

    Args:
        layout: the step's layout.
        inputs: (nx+nu, Ns) from [x, u] to the columns [tanh stage 0 | stage 1 | stream
            h0 | next state before the head]; consts: (Ns,) their constants.
        from_stage: per tanh stage, its coefficient on stage 1's pre-activation (stage
            0 only) and on the encoder output e (or None where it does not enter).
        dec: `ActiveDecoder.fold_shared` of the window; head: (dm, nx) the scaled head;
        w_e: (2d, dm) e into the stream; to_state: (2d, nx) e into the state.

    Returns:
        `fold_s_wx` (nx, Ns), `fold_s_wu` (nu, Ns), `fold_s_b` (Ns,); `fold_s_n0` (w0,
        w1 + dm + nx) and `fold_s_n1` (w1, dm + nx), each stage to the columns after it;
        the decoder's per-layer matrices as `fold_s_a{i}_*`, `fold_s_m{i}_*`; and
        `fold_s_head` (dm, nx). The next state is the last block plus the final stream
        times the head.
    """
    nx = layout.state_dim
    widths = [node[1] for node in layout.nodes[:2]]
    ref = head
    blocks = []
    for j, (to_t1, to_e) in enumerate(from_stage):
        w = widths[j]
        cols = [ref.new_zeros(w, widths[1]) if to_t1 is None else to_t1] if j == 0 else []
        for m in (w_e, to_state):
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


def step_folded(
    layout: FoldLayout,
    x: torch.Tensor,
    u: torch.Tensor | None,
    fold: Memory,
    pu: torch.Tensor | None = None,
) -> torch.Tensor:
    """A step for one shared history on the `fold_step` chain.

    Args:
        layout: the step's layout.
        x: (B, nx) states; u: (B, nu) actions; fold: `shared_fold` of the memory.
        pu: (B, N) the actions' part `u @ fold_wu + fold_b` when already computed
            (then u is ignored).

    Returns:
        (B, nx) next states before the manifold projection.
    """
    if pu is None:
        assert u is not None
        pu = torch.addmm(fold["fold_b"], u, fold["fold_wu"])
    acc = torch.addmm(pu, x, fold["fold_wx"])  # (B, N)
    B, H, dm = x.shape[0], layout.n_heads, layout.d_model
    for k, (kind, w, _) in enumerate(layout.nodes):
        pre = acc[:, :w]
        if kind == "tanh":
            y = torch.tanh(pre)
        elif kind == "gelu":
            y = F.gelu(pre)
        else:  # attention: softmax per head over [window, self] (by hand: fast for short
            # rows), and the self slot's weight times the token's own value
            v = pre[:, w - dm :].view(B, H, -1)
            if kind == "attn_qk":  # the self score from the token's own query and key
                n_scores = w - 3 * dm  # the window's scores, H * L
                q = pre[:, n_scores : n_scores + dm]
                key = pre[:, n_scores + dm : n_scores + 2 * dm]
                own = (q * key).view(B, H, -1).sum(-1, keepdim=True)
                s = torch.cat([pre[:, :n_scores].view(B, H, -1), own], dim=-1)
            else:
                s = pre[:, : w - dm].view(B, H, -1)
            e = (s - s.amax(dim=-1, keepdim=True)).exp()
            p = e / e.sum(dim=-1, keepdim=True)
            y = torch.cat([p.view(B, -1), (p[..., -1:] * v).view(B, dm)], dim=1)
        acc = torch.addmm(acc[:, w:], y, fold[f"fold_n{k}"])
    return acc


def shared_fold(memory: Memory) -> Memory | None:
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


def _padded(ts: list[torch.Tensor | None], n: int) -> list[torch.Tensor | None]:
    """`ts` padded with None (or cut) to length n."""
    return (list(ts) + [None] * n)[:n]


def _or_zeros(t: torch.Tensor | None, d: int, like: torch.Tensor | None) -> torch.Tensor:
    """t, or zeros (w, d) shaped after the other half's coefficient `like`."""
    if t is not None:
        return t
    assert like is not None
    return like.new_zeros(like.shape[0], d)
