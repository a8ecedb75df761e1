"""ActiveDecoder: a small causal transformer over the recent history, with meta-attention.

The decoder reads one token per control step (state, action, encoder output) and predicts
the part of the next state that the conservative flow misses. Its last attention layer, the
*meta-attention*, holds the fast weights adapted per system.

Speed (the planner's inner loop): the history window is encoded once per control step by
`encode_prefix`, whose keys and values every planner sample then reads by broadcasting;
each sample only computes and caches its own new steps. Attention is plain matmul attention
written with `einsum` over leading dimensions of size 1 for the shared prefix, so nothing is
copied per sample and it batches and differentiates under `torch.func`.

Context: the history window is causal among itself (token i sees tokens <= i); each new
rollout token attends to the whole window, to the last min(t, `own_context`) tokens of its own
rollout and to itself. The self slot's score is either the query-key product (`attend_self`,
the default) or the query times a learned key per head, which is linear in the token and
makes a planner's folded step cheaper (`fold_shared`); the slot's value is the token's own
either way. With `own_context = 0` (the default) the rollout is Markov given the
window: the environments' states are Markov, so the window's role is to identify the system
in context, and a step then copies nothing per sample. Training and control run the very same
`init_memory` + `step` code, so the context has one form in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from metasym_control.dynamics import Memory


@dataclass(frozen=True)
class DecoderConfig:
    """Architecture of an `ActiveDecoder`.

    Attributes:
        d_model: token width.
        n_heads: attention heads (d_model must be divisible by it).
        n_layers: ordinary causal blocks (attention + MLP) before the meta-attention.
        mlp_ratio: hidden width of the blocks' MLP as a multiple of d_model.
        own_context: how many of its own previous rollout steps a new token also attends to
            (0: the rollout is Markov given the history window, and a step copies nothing).
        attend_self: the self slot's score is the query-key product (the checkpoints of
            format 1) instead of the query times a learned key per head; its value is the
            token's own either way.
    """

    d_model: int = 32  # ~10-20k parameters in all: many steps fit into a 20 ms period
    n_heads: int = 2  # two heads of 16: one can track the system, one the control input
    n_layers: int = 1  # one ordinary block + the meta-attention keeps a step to few ops
    mlp_ratio: int = 2  # a small MLP: the meta-attention carries the per-system part
    own_context: int = 0  # the state is Markov; the window identifies the system
    attend_self: bool = True  # own-key self score: measurably better adaptation (docs/metasym.md)


def compact_broadcast(t: torch.Tensor, n_lead: int) -> torch.Tensor:
    """Turn broadcast (stride-0) leading dimensions into size-1 dimensions, as views.

    A controller expands one history's memory to K samples with `expand`; reading it back at
    size 1 lets the step use one shared matrix product instead of copying it K times.
    """
    try:
        strides = t.stride()
    except (RuntimeError, NotImplementedError):  # functorch batched tensors hide strides
        return t
    for i in range(n_lead):
        if t.shape[i] > 1 and strides[i] == 0:
            t = t.narrow(i, 0, 1)
    return t


def _flat_lead(t: torch.Tensor, n_tail: int, lead: tuple[int, ...]) -> torch.Tensor | None:
    """A memory tensor (*lead_t, *tail) as (B, *tail) for the batch `lead`, or None if shared.

    Shared (every leading dimension of size 1 after `_compact`): returns None, the caller
    uses the tail alone. Otherwise broadcasts to `lead` and flattens (a view when possible).
    """
    t = compact_broadcast(t, t.dim() - n_tail)
    tail = t.shape[t.dim() - n_tail :]
    if math.prod(t.shape[: t.dim() - n_tail]) == 1:
        return None
    return t.expand(*lead, *tail).reshape(-1, *tail)


def _own_shape(t: torch.Tensor, n_tail: int) -> torch.Tensor:
    """A shared (broadcast) memory tensor read back at its own trailing shape, as a view."""
    return compact_broadcast(t, t.dim() - n_tail).reshape(t.shape[t.dim() - n_tail :])


class Attention(nn.Module):
    """Multi-head attention with a fused q/k/v projection and an output projection.

    Args:
        d_model: token width; n_heads: heads.
        self_key: score a new token's own slot with a learned key per head (`self_key`,
            (H, dh), zero at start) instead of its own key (see `ActiveDecoder`).
    """

    def __init__(self, d_model: int, n_heads: int, self_key: bool = False) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} not divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.self_key: nn.Parameter | None = None
        if self_key:
            self.self_key = nn.Parameter(torch.zeros(n_heads, self.d_head))

    def prefix(
        self, h: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Causal attention within a window, and the window's keys/values for the cache.

        Args:
            h: (..., L, d) tokens.
            valid: (..., L) bool; invalid tokens are never attended to (except by themselves,
                so no row is empty).

        Returns:
            out (..., L, d); keys as a block-diagonal (..., d, H*L) and values as a
            block-diagonal (..., H*L, d) matrix, so a step reads all heads in one product.
        """
        H, dh = self.n_heads, self.d_head
        L = h.shape[-2]
        q, k, v = self.qkv(h).unflatten(-1, (3, H, dh)).unbind(-3)  # (..., L, H, dh)
        q, k, v = (t.transpose(-3, -2) for t in (q, k, v))  # (..., H, L, dh)
        s = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (..., H, L, L)
        eye = torch.eye(L, dtype=torch.bool, device=h.device)
        causal = torch.ones(L, L, dtype=torch.bool, device=h.device).tril()
        allowed = causal & (valid[..., None, None, :] | eye)  # (..., 1, L, L)
        s = s.masked_fill(~allowed, -math.inf)
        out = (torch.softmax(s, dim=-1) @ v).transpose(-3, -2).flatten(-2)  # (..., L, d)
        eh = torch.eye(H, dtype=h.dtype, device=h.device)
        kbd = torch.einsum("...hld,hg->...hdgl", k, eh).flatten(-4, -3).flatten(-2)  # (..., d, H*L)
        vbd = torch.einsum("...hld,hg->...hlgd", v, eh).flatten(-4, -3).flatten(-2)  # (..., H*L, d)
        return self.proj(out), kbd, vbd

    def step(
        self,
        h: torch.Tensor,
        kbd: torch.Tensor | None,
        vbd: torch.Tensor | None,
        shared: tuple[torch.Tensor, torch.Tensor],
        bias: torch.Tensor,
        own: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of B new tokens to the prefix, their own recent steps and themselves.

        Args:
            h: (B, d) current tokens.
            kbd, vbd: per-sample block-diagonal prefix keys (B, d, H*L) / values (B, H*L, d),
                or None when the prefix is shared.
            shared: the shared prefix keys (d, H*L) and values (H*L, d) (used when kbd is None).
            bias: (1 or B, L) additive mask of the prefix (0 visible, -inf hidden).
            own: (B, n, 2, d) keys and values of each sample's own previous steps, or None.

        Returns:
            out (B, d), and the current keys and values stacked as (B, 2, d).
        """
        B, H, dh = h.shape[0], self.n_heads, self.d_head
        q, k, v = self.qkv(h).chunk(3, dim=-1)  # (B, d) each
        q = q * (1.0 / math.sqrt(dh))
        L = bias.shape[-1]
        # scores against the prefix (one product for every head), own steps, and itself
        if kbd is None:
            sp = q @ shared[0]  # (B, H*L)
        else:
            sp = torch.bmm(q.unsqueeze(1), kbd).squeeze(1)  # (B, H*L)
        scores = [sp.view(B, H, L) + bias.unsqueeze(-2)]  # (B, H, L)
        qh = q.view(B, 1, H, dh)
        n = 0 if own is None else own.shape[1]
        if own is not None:
            ok = own[:, :, 0].view(B, n, H, dh)
            scores.append((qh * ok).sum(-1).transpose(1, 2))  # (B, H, n)
        if self.self_key is None:  # the token's own key
            scores.append((qh[:, 0] * k.view(B, H, dh)).sum(-1, keepdim=True))  # (B, H, 1)
        else:  # the learned self key: linear in the token
            scores.append((qh[:, 0] * self.self_key).sum(-1, keepdim=True))  # (B, H, 1)
        s = torch.cat(scores, dim=-1)  # (B, H, L+n+1)
        # softmax by hand: torch.softmax is slow on CPU for short rows like these
        e = (s - s.amax(dim=-1, keepdim=True)).exp()
        w = e / e.sum(dim=-1, keepdim=True)
        # weighted values
        wp = w[..., :L].reshape(B, H * L)
        out = wp @ shared[1] if vbd is None else torch.bmm(wp.unsqueeze(1), vbd).squeeze(1)
        out = out + (w[..., -1:] * v.view(B, H, dh)).reshape(B, -1)  # (B, d) own value
        if own is not None:
            ov = own[:, :, 1].view(B, n, H, dh)
            wn = w[..., L : L + n].transpose(1, 2).unsqueeze(-1)  # (B, n, H, 1)
            out = out + (wn * ov).sum(1).reshape(B, -1)
        return self.proj(out), torch.stack([k, v], dim=1)


class Block(nn.Module):
    """An ordinary causal block: h + attn(h), then + mlp(.) (no normalisation: tiny depth)."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, self_key: bool = False) -> None:
        super().__init__()
        self.attn = Attention(d_model, n_heads, self_key)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
        )


class ActiveDecoder(nn.Module):
    """Causal transformer over history tokens, predicting a residual; meta-attention on top.

    Layers: token embedding -> `n_layers` blocks (attention + MLP) -> meta-attention (the
    fast weights `meta_attn.qkv.*`, `meta_attn.proj.*`) -> linear head (zero at start, so
    the untrained decoder adds nothing).

    Args:
        token_dim: width of the raw token (state, action and encoder output features).
        out_dim: width of the prediction.
        history_len: L, the window length the memory holds.
        config: architecture.
        device, dtype: of the parameters.
    """

    def __init__(
        self,
        token_dim: int,
        out_dim: int,
        history_len: int,
        config: DecoderConfig | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self.config = cfg = config or DecoderConfig()
        self.history_len = history_len
        self.embed = nn.Linear(token_dim, cfg.d_model)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.mlp_ratio, not cfg.attend_self)
            for _ in range(cfg.n_layers)
        )
        self.meta_attn = Attention(cfg.d_model, cfg.n_heads, not cfg.attend_self)
        self.head = nn.Linear(cfg.d_model, out_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.to(device=device, dtype=dtype)

    def _layers(self) -> list[tuple[Attention, nn.Module | None]]:
        out: list[tuple[Attention, nn.Module | None]] = [
            (blk.attn, blk.mlp)  # type: ignore[misc]
            for blk in self.blocks
        ]
        out.append((self.meta_attn, None))
        return out

    @property
    def n_attn(self) -> int:
        """Number of attention layers (blocks + meta-attention), i.e. of cached key/value pairs."""
        return len(self.blocks) + 1

    def meta_attention_names(self) -> list[str]:
        """Parameter names of the meta-attention (relative to this module)."""
        return [f"meta_attn.{n}" for n, _ in self.meta_attn.named_parameters()]

    def window_outputs(
        self, tokens: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, Memory]:
        """Causal pass over a window: outputs (..., L, out_dim) and the `encode_prefix` memory."""
        h = self.embed(tokens)  # (..., L, d)
        mem: Memory = {"valid": valid}
        for i, (attn, mlp) in enumerate(self._layers()):
            a, kbd, vbd = attn.prefix(h, valid)
            h = h + a
            if mlp is not None:
                h = h + mlp(h)
            mem[f"kbd{i}"], mem[f"vbd{i}"] = kbd, vbd
            mem[f"own{i}"] = h.new_zeros(*h.shape[:-2], 0, 2, h.shape[-1])  # (..., 0, 2, d)
        zero = torch.zeros((), dtype=h.dtype, device=h.device)
        mem["bias"] = torch.where(valid, zero, -math.inf)  # (..., L)
        return self.head(h), mem

    def encode_prefix(self, tokens: torch.Tensor, valid: torch.Tensor) -> Memory:
        """Encode the history window once per control step.

        Args:
            tokens: (..., L, token_dim) raw tokens, oldest first.
            valid: (..., L) bool.

        Returns:
            Memory: per attention layer i the block-diagonal prefix keys `kbd{i}`
            (..., d, H*L) and values `vbd{i}` (..., H*L, d) and an empty per-sample cache
            `own{i}` (..., 0, 2, d); the validity `valid` (..., L) and its additive mask
            `bias` (..., L).
        """
        return self.window_outputs(tokens, valid)[1]

    def fold_shared(self, memory: Memory) -> Memory:
        """ONE window's prefix folded into per-layer matrices (MetaSym's planner fast path).

        With the prefix shared by every sample, each layer's query projection times the
        prefix keys is one matrix and the prefix values times the output projection another;
        each bias the residual stream picks up is carried as one constant that the next
        consumer's bias absorbs. Needs `own_context = 0`. With the learned self key
        (`attend_self` False) everything between the softmaxes and GELUs is affine in the
        stream; with the own key the step also forms each token's query and key.

        Args:
            memory: `encode_prefix` of one window (no batch dimensions).

        Returns:
            Per attention layer i: `fold_a{i}_w` and `fold_a{i}_b`, from the stream to
            [scores per head (L window slots incl. mask, the self slot) | the token's own
            value v] (d, H*(L+1) + d) with a learned self key, or to [window scores (H*L) |
            q / sqrt(dh) | k | v] (d, H*L + 3d) with the own key; `fold_a{i}_vw`
            (H*(L+1) + d, d), from [softmax weights | self weight * v] back to the stream
            (window values through the output projection, zero rows for the self slots; then
            the projection); for blocks with an MLP `fold_m{i}_w1` (d, r*d), `fold_m{i}_b1`
            (r*d,), `fold_m{i}_w2` (r*d, d); and `c_head` (d,), the constant the stream
            carries into the head.
        """
        if self.config.own_context:
            raise ValueError("ActiveDecoder.fold_shared needs own_context = 0")
        d, H = self.config.d_model, self.config.n_heads
        dh = d // H
        bias = memory["bias"]  # (L,)
        L = bias.shape[-1]
        c = self.head.weight.new_zeros(d)
        out: Memory = {}
        for i, (attn, mlp) in enumerate(self._layers()):
            kbd, vbd = memory[f"kbd{i}"], memory[f"vbd{i}"]  # (d, H*L), (H*L, d)
            w, b = attn.qkv.weight, attn.qkv.bias + attn.qkv.weight @ c  # (3d, d), (3d,)
            wq, wk, wv = w[:d], w[d : 2 * d], w[2 * d :]
            bq, bk, bv = b[:d], b[d : 2 * d], b[2 * d :]
            s = 1.0 / math.sqrt(dh)
            ws = ((wq.T * s) @ kbd).view(d, H, L)
            bs = ((bq * s) @ kbd + bias.repeat(H)).view(H, L)
            sk = attn.self_key
            if sk is None:  # own key: the step forms q and k to score the self slot
                out[f"fold_a{i}_w"] = torch.cat([ws.view(d, -1), wq.T * s, wk.T, wv.T], 1)
                out[f"fold_a{i}_b"] = torch.cat([bs.view(-1), bq * s, bk, bv])
            else:  # the learned self key: the self score is one more column per head
                w_own = torch.einsum("dhe,he->dh", (wq.T * s).view(d, H, dh), sk)  # (d, H)
                b_own = ((bq * s).view(H, dh) * sk).sum(-1)  # (H,)
                ws = torch.cat([ws, w_own[..., None]], 2).view(d, -1)
                bs = torch.cat([bs, b_own[:, None]], 1).view(-1)
                out[f"fold_a{i}_w"] = torch.cat([ws, wv.T], dim=1)
                out[f"fold_a{i}_b"] = torch.cat([bs, bv])
            pw = attn.proj.weight.T
            vw = (vbd @ pw).view(H, L, d)
            vw = torch.cat([vw, vw.new_zeros(H, 1, d)], dim=1).view(-1, d)
            out[f"fold_a{i}_vw"] = torch.cat([vw, pw], dim=0)
            c = c + attn.proj.bias
            if mlp is not None:
                assert isinstance(mlp, nn.Sequential)
                l1, l2 = mlp[0], mlp[2]
                assert isinstance(l1, nn.Linear) and isinstance(l2, nn.Linear)
                out[f"fold_m{i}_w1"] = l1.weight.T
                out[f"fold_m{i}_b1"] = l1.bias + l1.weight @ c
                out[f"fold_m{i}_w2"] = l2.weight.T
                c = c + l2.bias
        out["c_head"] = c
        return out

    def step(self, token: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """One new token per sample: token (..., token_dim) -> out (..., out_dim), new memory.

        The memory's prefix entries may be one history broadcast (expanded) over the samples;
        they are read without copies and passed on unchanged. With `own_context > 0` each
        sample's own last steps are cached in `own{i}`.
        """
        lead = tuple(token.shape[:-1])
        B = math.prod(lead)
        L = memory["bias"].shape[-1]
        m = self.config.own_context
        n = memory["own0"].shape[-3]  # own steps cached so far (<= own_context)
        bias = compact_broadcast(memory["bias"], memory["bias"].dim() - 1)
        bias_f = _flat_lead(bias, 1, lead)
        bias2 = bias.reshape(1, L) if bias_f is None else bias_f
        h = self.embed(token.reshape(B, -1))  # (B, d)
        new_mem: Memory = {"valid": memory["valid"], "bias": memory["bias"]}
        for i, (attn, mlp) in enumerate(self._layers()):
            kbd, vbd = memory[f"kbd{i}"], memory[f"vbd{i}"]
            kf, vf = _flat_lead(kbd, 2, lead), _flat_lead(vbd, 2, lead)
            shared = (
                _own_shape(kbd, 2) if kf is None else kbd,
                _own_shape(vbd, 2) if vf is None else vbd,
            )
            own = _flat_lead(memory[f"own{i}"], 3, lead) if n else None
            if own is None and n:  # shared own cache (unusual): broadcast it
                own = memory[f"own{i}"].expand(*lead, n, 2, h.shape[-1]).reshape(B, n, 2, -1)
            a, kv = attn.step(h, kf, vf, shared, bias2, own)
            h = h + a
            if mlp is not None:
                h = h + mlp(h)
            new_mem[f"kbd{i}"], new_mem[f"vbd{i}"] = kbd, vbd
            if m == 0:  # Markov rollout given the window: nothing to cache
                new_mem[f"own{i}"] = memory[f"own{i}"]
            else:
                cache = kv.unsqueeze(1) if own is None else torch.cat([own, kv.unsqueeze(1)], 1)
                new_mem[f"own{i}"] = cache[:, -m:].reshape(*lead, -1, 2, h.shape[-1])
        return self.head(h).reshape(*lead, -1), new_mem
