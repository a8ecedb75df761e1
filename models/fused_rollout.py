"""MetaSym's planner rollout as one Triton kernel: T steps of B samples in a single launch.

On a GPU a planner rollout of a small model is bound by kernel launches: the folded step
(`metasym_fold.fold_step`) still launches about a dozen kernels a step, 450 for an MPPI
update at T = 30. This kernel runs the whole rollout in one launch. Each program owns a block
of samples and keeps its states in registers for all T steps; the step's matrices are read
as tiles from the memory entries, so nothing is repacked per control step. It runs the step
in stream form (`metasym_fold.fold_step` with `stream_form`): every node reads the
d_model-wide residual stream, which streams under half the weights of the torch path's chain
per step (21k against 46k floats, padded).

Supported: the default MetaSym family (two tanh stages in the encoder, two attention nodes
with one GELU MLP between them, either self slot), float32, CUDA tensors, or CPU tensors
under Triton's interpreter (`TRITON_INTERPRET=1`, how the tests check it without a GPU).
`unsupported_reason` says why another model cannot use it. Triton is optional: without it
the torch path runs.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import torch

from metasym_control.dynamics import Memory
from metasym_control.models.metasym_fold import FoldLayout, stream_form_reason

try:
    import triton
    import triton.language as tl
except ImportError:  # optional dependency: the torch path needs none of this
    triton = None

PRECISIONS = ("tf32x3", "tf32", "ieee")
# (samples per program, warps) per precision: the fastest launch of the rollout alone at
# K 4096, T 30 on an H100 (`bench_mppi_gpu.py --sweep`, BENCHMARKS.md "control-gpu")
LAUNCH = {"tf32x3": (64, 4), "tf32": (32, 8), "ieee": (32, 4)}
# launches that faulted there (illegal memory access, both precisions, Triton 3.6; cause not
# found): refused, since a fault leaves the process's CUDA context unusable
FAULTED = ((64, 8),)


def available() -> bool:
    """Whether Triton is importable."""
    return triton is not None


def _pow2(n: int, low: int = 16) -> int:
    """The next power of two >= max(n, low) (Triton tiles; `tl.dot` needs >= 16)."""
    p = low
    while p < n:
        p *= 2
    return p


class FoldedModel(Protocol):
    """What the kernel needs of a model: the layout of its folded step (MetaSym)."""

    fold_layout: FoldLayout


def unsupported_reason(model: FoldedModel, x: torch.Tensor) -> str | None:
    """Why `fused_rollout` cannot run this model on this tensor, or None if it can.

    Args:
        model: the model (MetaSym); x: (..., nx) a state tensor with the rollout's device and
            dtype.
    """
    if triton is None:
        return "Triton is not installed (pip install triton)"
    if x.dtype != torch.float32:
        return f"the fused rollout runs float32 only, got {x.dtype}"
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"the fused rollout needs a CUDA device (or TRITON_INTERPRET=1), got {x.device}"
    if getattr(getattr(model, "config", None), "kinematic_attitude", False):
        return "the fused rollout does not carry the attitude by the body rates"
    if getattr(getattr(model, "config", None), "body_force", False):
        return "the fused rollout has no body-frame force (MetaSymConfig.body_force)"
    return stream_form_reason(model.fold_layout)


if triton is not None:

    @triton.jit
    def _plain(P: tl.constexpr, n):
        """Indices 0..P-1 and the mask of the first n."""
        i = tl.arange(0, P)
        return i, i < n

    @triton.jit
    def _heads(P: tl.constexpr, LP: tl.constexpr, H: tl.constexpr, stride, slots):
        """Padded slot h*LP + l -> stored column h*stride + l, valid for l < slots."""
        i = tl.arange(0, P)
        h = i // LP
        j = i % LP
        return h * stride + j, (j < slots) & (h < H)

    @triton.jit
    def _mm(acc, a, ptr, ld, r0, ri, rm, c0, ci, cm, PREC: tl.constexpr):
        """acc + a @ W[r0 + ri, c0 + ci] (W row-major with leading dimension ld)."""
        w = tl.load(
            ptr + (r0 + ri)[:, None] * ld + (c0 + ci)[None, :],
            mask=rm[:, None] & cm[None, :],
            other=0.0,
        )
        return acc + tl.dot(a, w, input_precision=PREC)

    @triton.jit
    def _bias(ptr, c0, ci, cm, BB: tl.constexpr):
        """(BB, len(ci)): the constants at columns c0 + ci, on every row."""
        b = tl.load(ptr + c0 + ci, mask=cm, other=0.0)
        return tl.zeros((BB, 1), dtype=tl.float32) + b[None, :]

    @triton.jit
    def _tanh(z):
        """tanh without libdevice: 1 - 2 / (exp(2z) + 1) (exact limits at +-inf)."""
        return 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)

    @triton.jit
    def _softmax_attn(
        s,
        own,
        v,
        L,
        BB: tl.constexpr,
        H: tl.constexpr,
        LP1: tl.constexpr,
        HL1P: tl.constexpr,
        DH: tl.constexpr,
        DM: tl.constexpr,
        SELF_QK: tl.constexpr,
    ):
        """Softmax per head over [window, self]; returns the weights (BB, HL1P) in the
        padded slot layout and the self weight times the token's value (BB, DM)."""
        s3 = tl.reshape(s, (BB, H, LP1))
        slot = tl.arange(0, LP1)[None, None, :]
        if SELF_QK:  # the own score q.k per head goes in slot L
            s3 = tl.where(slot == L, own[:, :, None], s3)
        s3 = tl.where(slot <= L, s3, float("-inf"))
        m = tl.max(s3, axis=2)
        e = tl.exp(s3 - m[:, :, None])
        p3 = e / tl.sum(e, axis=2)[:, :, None]
        p_self = tl.sum(tl.where(slot == L, p3, 0.0), axis=2)  # (BB, H)
        ov = tl.reshape(p_self[:, :, None] * tl.reshape(v, (BB, H, DH)), (BB, DM))
        return tl.reshape(p3, (BB, HL1P)), ov

    @triton.jit
    def _attention(
        h, aw, ab, av, WA, L, cd, md, cs, ms, rp, mp, rv, q_off, v_off,
        BB: tl.constexpr, H: tl.constexpr, LP1: tl.constexpr, HL1P: tl.constexpr,
        DH: tl.constexpr, DM: tl.constexpr, SELF_QK: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        """h + one attention layer of the stream form: (BB, DM) -> (BB, DM).

        `aw` (DM, WA) maps the stream to [scores | (q | k) | v] (column maps cs / ms and the
        offsets q_off, v_off), `av` maps [weights incl. self (rows rp / mp) | self weight *
        v (rows rv)] back to the stream.
        """
        s = _mm(_bias(ab, 0, cs, ms, BB), h, aw, WA, 0, cd, md, 0, cs, ms, PREC)
        v = _mm(_bias(ab, v_off, cd, md, BB), h, aw, WA, 0, cd, md, v_off, cd, md, PREC)
        own = tl.zeros((BB, H), dtype=tl.float32)
        if SELF_QK:  # the own score: the token's query times its own key, per head
            q = _mm(_bias(ab, q_off, cd, md, BB), h, aw, WA, 0, cd, md, q_off, cd, md, PREC)
            k = _bias(ab, q_off + DM, cd, md, BB)
            k = _mm(k, h, aw, WA, 0, cd, md, q_off + DM, cd, md, PREC)
            own = tl.sum(tl.reshape(q * k, (BB, H, DH)), axis=2)
        p, ov = _softmax_attn(s, own, v, L, BB, H, LP1, HL1P, DH, DM, SELF_QK)
        h = _mm(h, p, av, DM, 0, rp, mp, 0, cd, md, PREC)
        return _mm(h, ov, av, DM, 0, rv, md, 0, cd, md, PREC)

    # fmt: off
    @triton.jit
    def _rollout_kernel(
        x0_ptr, u_ptr, out_ptr,
        swx0, swu0, sb0, sn00, sn10, a0w0, a0b0, a0v0, mw10, mb10, mw20, a1w0, a1b0, a1v0, hd0,
        B, T, NX, NU, L, W0, W1, MLP, WA, WSTEP,
        BB: tl.constexpr, NXP: tl.constexpr, NUP: tl.constexpr, WP: tl.constexpr,
        MLPP: tl.constexpr, H: tl.constexpr, LP1: tl.constexpr, HL1P: tl.constexpr,
        DH: tl.constexpr, DM: tl.constexpr, SELF_QK: tl.constexpr, QI: tl.constexpr,
        PREC: tl.constexpr,
    ):
        # fmt: on
        """T MetaSym steps in stream form for BB samples (layout: `metasym_fold._stream_fold`).

        Input columns (`fold_s_wx`, `fold_s_wu`, `fold_s_b`, leading dimension NS): tanh
        stage 0 at 0, stage 1 at W0, the stream at CH = W0 + W1, the next state at CO =
        CH + DM. Stage 0's matrix holds [stage 1 | stream | state], stage 1's [stream |
        state]. Attention i: `a{i}w` (DM, WA) to [scores | (q | k) | v], `a{i}v` from
        [weights incl. self | self weight * v] back to the stream; the MLP `mw1`, `mw2`.
        """
        rows = tl.program_id(0) * BB + tl.arange(0, BB)
        rmask = rows < B
        cx, mx = _plain(NXP, NX)
        cu, mu = _plain(NUP, NU)
        x = tl.load(
            x0_ptr + rows[:, None] * NX + cx[None, :], mask=rmask[:, None] & mx[None, :], other=0.0
        )
        NS = W0 + W1 + DM + NX
        CH = W0 + W1
        CO = CH + DM
        c0, m0 = _plain(WP, W0)  # stage 0's columns, and its output's rows
        c1, m1 = _plain(WP, W1)
        cd, md = _plain(DM, DM)
        cg, mg = _plain(MLPP, MLP)
        rp, mp = _heads(HL1P, LP1, H, L + 1, L + 1)  # softmax weights incl. the self slot
        rv = cd + H * (L + 1)  # the self weight times the value, after the weights
        if SELF_QK:  # [window scores (H*L) | q | k | v]
            cs, ms = _heads(HL1P, LP1, H, L, L)
            q_off = H * L
            v_off = H * L + 2 * DM
        else:  # [scores incl. the self slot (H*(L+1)) | v]
            cs, ms = _heads(HL1P, LP1, H, L + 1, L + 1)
            q_off = 0
            v_off = H * (L + 1)
        for t in range(T):
            # The matrices are loop-invariant; left so, the compiler may hoist every tile out
            # of the loop. Offsetting them by t * WSTEP (0 at run time, unknown when
            # compiling) keeps each load in the step, where the tiles stream from L1/L2.
            wo = t * WSTEP
            swx, swu, sb, sn0, sn1 = swx0 + wo, swu0 + wo, sb0 + wo, sn00 + wo, sn10 + wo
            a0w, a0b, a0v = a0w0 + wo, a0b0 + wo, a0v0 + wo
            a1w, a1b, a1v = a1w0 + wo, a1b0 + wo, a1v0 + wo
            mw1, mb1, mw2, hd = mw10 + wo, mb10 + wo, mw20 + wo, hd0 + wo
            u = tl.load(
                u_ptr + (rows[:, None] * T + t) * NU + cu[None, :],
                mask=rmask[:, None] & mu[None, :],
                other=0.0,
            )
            # encoder tanh stages
            a = _mm(_bias(sb, 0, c0, m0, BB), x, swx, NS, 0, cx, mx, 0, c0, m0, PREC)
            y0 = _tanh(_mm(a, u, swu, NS, 0, cu, mu, 0, c0, m0, PREC))
            a = _mm(_bias(sb, W0, c1, m1, BB), x, swx, NS, 0, cx, mx, W0, c1, m1, PREC)
            a = _mm(a, u, swu, NS, 0, cu, mu, W0, c1, m1, PREC)
            y1 = _tanh(_mm(a, y0, sn0, W1 + DM + NX, 0, c0, m0, 0, c1, m1, PREC))
            # the stream h0 (token embedding) and the state's direct part
            h = _mm(_bias(sb, CH, cd, md, BB), x, swx, NS, 0, cx, mx, CH, cd, md, PREC)
            h = _mm(h, u, swu, NS, 0, cu, mu, CH, cd, md, PREC)
            h = _mm(h, y0, sn0, W1 + DM + NX, 0, c0, m0, W1, cd, md, PREC)
            h = _mm(h, y1, sn1, DM + NX, 0, c1, m1, 0, cd, md, PREC)
            xn = _mm(_bias(sb, CO, cx, mx, BB), x, swx, NS, 0, cx, mx, CO, cx, mx, PREC)
            xn = _mm(xn, u, swu, NS, 0, cu, mu, CO, cx, mx, PREC)
            xn = _mm(xn, y0, sn0, W1 + DM + NX, 0, c0, m0, W1 + DM, cx, mx, PREC)
            xn = _mm(xn, y1, sn1, DM + NX, 0, c1, m1, DM, cx, mx, PREC)
            # attention 1, the GELU MLP, attention 2 (the meta-attention), on the stream
            h = _attention(
                h, a0w, a0b, a0v, WA, L, cd, md, cs, ms, rp, mp, rv, q_off, v_off,
                BB, H, LP1, HL1P, DH, DM, SELF_QK, PREC,
            )  # fmt: skip
            g = _mm(_bias(mb1, 0, cg, mg, BB), h, mw1, MLP, 0, cd, md, 0, cg, mg, PREC)
            g = 0.5 * g * (1.0 + tl.math.erf(g * 0.7071067811865476))
            h = _mm(h, g, mw2, DM, 0, cg, mg, 0, cd, md, PREC)
            h = _attention(
                h, a1w, a1b, a1v, WA, L, cd, md, cs, ms, rp, mp, rv, q_off, v_off,
                BB, H, LP1, HL1P, DH, DM, SELF_QK, PREC,
            )  # fmt: skip
            # the next state: the direct part plus the final stream through the head
            xn = _mm(xn, h, hd, NX, 0, cd, md, 0, cx, mx, PREC)
            if QI >= 0:  # unit quaternion with w >= 0 (`CoordinateMap.postprocess`)
                qm = (cx >= QI) & (cx < QI + 4)
                nrm = tl.sqrt(tl.sum(tl.where(qm[None, :], xn * xn, 0.0), axis=1))
                w = tl.sum(tl.where((cx == QI)[None, :], xn, 0.0), axis=1)
                scale = tl.where(w < 0.0, -1.0, 1.0) / tl.maximum(nrm, 1e-12)
                xn = tl.where(qm[None, :], xn * scale[:, None], xn)
            x = xn
            tl.store(
                out_ptr + (rows[:, None] * T + t) * NX + cx[None, :],
                x,
                mask=rmask[:, None] & mx[None, :],
            )


# the stream form's entries (`metasym_fold._stream_fold`), in the kernel's pointer order
_MATRICES = (
    "wx", "wu", "b", "n0", "n1", "a0_w", "a0_b", "a0_vw", "m0_w1", "m0_b1", "m0_w2",
    "a1_w", "a1_b", "a1_vw", "head",
)  # fmt: skip


def _layout(layout: FoldLayout, block: int, precision: str) -> tuple[list[int], dict[str, Any]]:
    """The kernel's integer arguments after the pointers (without B and T) and its
    compile-time constants, for this folded step."""
    H, L, dm = layout.n_heads, layout.history_len, layout.d_model
    nx, nu = layout.state_dim, layout.action_dim
    widths = [w for _, w, _ in layout.nodes]  # tanh, tanh, attention, GELU, attention
    w0, w1, wa, mlp = widths[0], widths[1], widths[2], widths[3]
    lp1 = max(_pow2(L + 1, 1), 16 // H)  # H * lp1 >= 16: the weights feed `tl.dot`
    ints = [nx, nu, L, w0, w1, mlp, wa, 0]  # 0: WSTEP
    const = {
        "BB": block,
        "NXP": _pow2(nx),
        "NUP": _pow2(nu),
        "WP": _pow2(max(w0, w1)),
        "MLPP": _pow2(mlp),
        "H": H,
        "LP1": lp1,
        "HL1P": H * lp1,
        "DH": dm // H,
        "DM": dm,
        "SELF_QK": bool(layout.attend_self),
        "QI": int(layout.quaternion_index),
        "PREC": precision,
    }
    return ints, const


def _launch(precision: str, block: int | None, num_warps: int | None) -> tuple[int, int]:
    """The checked (block, num_warps) of a launch; None: the precision's `LAUNCH`."""
    if precision not in PRECISIONS:
        raise ValueError(f"fused_rollout: precision must be one of {PRECISIONS}, got {precision!r}")
    block = LAUNCH[precision][0] if block is None else block
    num_warps = LAUNCH[precision][1] if num_warps is None else num_warps
    if block < 16 or _pow2(block) != block:
        raise ValueError(f"fused_rollout: block must be a power of two >= 16, got {block}")
    if (block, num_warps) in FAULTED:
        raise ValueError(
            f"fused_rollout: block {block} with {num_warps} warps faulted on an H100 (illegal "
            "memory access); choose another launch"
        )
    return block, num_warps


def fused_rollout(
    model: FoldedModel,
    fold: Memory,
    x0: torch.Tensor,
    actions: torch.Tensor,
    precision: str = "tf32x3",
    block: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Roll the folded step out T steps in one kernel launch.

    Args:
        model: the model the fold belongs to (MetaSym; its `fold_layout`).
        fold: `metasym_fold.shared_fold` of a memory made with `rollout_kernel` set: the
            stream form's `fold_s_*` entries (`metasym_fold._stream_fold`).
        x0: (B, nx) initial states; actions: (B, T, nu) normalised actions.
        precision: how `tl.dot` multiplies: "tf32x3" (three tensor-core products, about
            float32's accuracy; default), "tf32" (one, about 1e-3 relative error a product)
            or "ieee" (float32 on CUDA cores).
        block: samples per program (a power of two >= 16); num_warps: warps per program
            (Triton's launch option); None: the precision's `LAUNCH`.

    Returns:
        (B, T, nx) the predicted states, x0 excluded; equal to repeated `MetaSym.step`.
    """
    reason = unsupported_reason(model, x0)
    if reason is not None:
        raise ValueError(f"fused_rollout: {reason}")
    block, num_warps = _launch(precision, block, num_warps)
    layout = model.fold_layout
    B, T, nu = actions.shape
    nx = layout.state_dim
    if x0.shape != (B, nx) or nu != layout.action_dim:
        raise ValueError(
            f"fused_rollout: x0 {tuple(x0.shape)} and actions {tuple(actions.shape)} do not "
            f"match (B, {nx}) and (B, T, {layout.action_dim})"
        )
    if "fold_s_b" not in fold:
        raise ValueError(
            "fused_rollout: the memory has no stream form; make it with init_memory after "
            "setting MetaSym.rollout_kernel"
        )
    mats = [fold["fold_s_" + k].contiguous() for k in _MATRICES]
    out = torch.empty(B, T, nx, dtype=x0.dtype, device=x0.device)
    if T == 0:
        return out
    ints, const = _layout(layout, block, precision)
    kernel: Any = _rollout_kernel
    # num_stages=1: Triton's software pipelining would stage every weight tile of the next
    # step in shared memory (over 200 kB for this model; the launch fails)
    kernel[(triton.cdiv(B, block),)](
        x0.contiguous(),
        actions.contiguous(),
        out,
        *mats,
        B,
        T,
        *ints,
        **const,
        num_warps=num_warps,
        num_stages=1,
    )
    return out


def compile_report(
    model: FoldedModel,
    precision: str = "tf32x3",
    block: int = 32,
    num_warps: int = 4,
    arch: int = 90,
) -> dict[str, Any]:
    """Compile the kernel for an NVIDIA architecture on this machine (no GPU needed) and
    report its static resources: what decides whether it launches and how much it spills.

    Args:
        model: the model whose layout to compile for; precision, block, num_warps: as in
            `fused_rollout`; arch: compute capability x 10 (90: Hopper, H100 / H200).

    Returns:
        {"shared_bytes": shared memory per program, "registers": per thread,
        "spill_store_bytes", "spill_load_bytes", "stack_bytes": per thread (ptxas -v)}.
    """
    if triton is None:
        raise RuntimeError("compile_report needs Triton (pip install triton)")
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    block, num_warps = _launch(precision, block, num_warps)
    _, const = _layout(model.fold_layout, block, precision)
    kernel: Any = _rollout_kernel
    names = list(kernel.arg_names)
    n_ptr = 3 + len(_MATRICES)  # x0, actions, out, then the stream form's matrices
    sig = {
        n: ("*fp32" if i < n_ptr else "constexpr" if n in const else "i32")
        for i, n in enumerate(names)
    }
    constexprs = {(names.index(k),): v for k, v in const.items()}
    compiled = triton.compile(
        ASTSource(fn=kernel, signature=sig, constexprs=constexprs),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": num_warps, "num_stages": 1, "enable_fp_fusion": True},
    )
    with tempfile.TemporaryDirectory() as tmp:
        ptx = f"{tmp}/k.ptx"
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        run = subprocess.run(
            [get_ptxas(arch).path, "-v", f"--gpu-name={gpu}", ptx, "-o", f"{tmp}/k.cubin"],
            capture_output=True,
            text=True,
            check=True,
        )
    log = run.stdout + run.stderr

    def grab(pattern: str) -> int:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0

    return {
        "shared_bytes": int(compiled.metadata.shared),
        "registers": grab(r"Used (\d+) registers"),
        "spill_store_bytes": grab(r"(\d+) bytes spill stores"),
        "spill_load_bytes": grab(r"(\d+) bytes spill loads"),
        "stack_bytes": grab(r"(\d+) bytes stack frame"),
    }
