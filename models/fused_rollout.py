"""MetaSym's folded rollout as one Triton kernel: T steps of B samples in a single launch.

On a GPU a planner rollout of a small model is bound by kernel launches: the folded step
(`MetaSym._fold`) still launches about a dozen kernels a step, 450 for an MPPI update at
T = 30. This kernel runs the whole rollout in one launch. Each program owns a block of
samples and keeps its states in registers for all T steps; every matrix of the fold is read
from the (cached) memory entries as tiles, so nothing is repacked per control step.

Supported: the default MetaSym family (two tanh stages in the encoder, two attention nodes
with one GELU MLP between them, either self slot), float32, CUDA tensors, or CPU tensors
under Triton's interpreter (`TRITON_INTERPRET=1`, how the tests check it without a GPU).
`unsupported_reason` says why another model cannot use it. Triton is optional: without it
the torch path runs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from metasym_control.dynamics import Memory

if TYPE_CHECKING:
    from metasym_control.models.metasym import MetaSym

try:
    import triton
    import triton.language as tl
except ImportError:  # optional dependency: the torch path needs none of this
    triton = None

PRECISIONS = ("tf32x3", "tf32", "ieee")


def available() -> bool:
    """Whether Triton is importable."""
    return triton is not None


def _pow2(n: int, low: int = 16) -> int:
    """The next power of two >= max(n, low) (Triton tiles; `tl.dot` needs >= 16)."""
    p = low
    while p < n:
        p *= 2
    return p


def unsupported_reason(model: MetaSym, x: torch.Tensor) -> str | None:
    """Why `fused_rollout` cannot run this model on this tensor, or None if it can.

    Args:
        model: the MetaSym model; x: (..., nx) a state tensor with the rollout's device and
            dtype.
    """
    if triton is None:
        return "Triton is not installed (pip install triton)"
    if x.dtype != torch.float32:
        return f"the fused rollout runs float32 only, got {x.dtype}"
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"the fused rollout needs a CUDA device (or TRITON_INTERPRET=1), got {x.device}"
    kinds = [k for k, _, _ in model._fold_nodes]
    attn = "attn_qk" if model.config.attend_self else "attn"
    if kinds != ["tanh", "tanh", attn, "gelu", attn]:
        return f"the fused rollout supports nodes tanh, tanh, {attn}, gelu, {attn}; got {kinds}"
    cfg = model.config
    dh = cfg.d_model // cfg.n_heads
    if _pow2(cfg.n_heads, 1) != cfg.n_heads or _pow2(dh, 1) != dh or dh * cfg.n_heads < 16:
        return "the fused rollout needs power-of-two heads and head width, d_model >= 16"
    return None


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
    def _pre(
        x,
        u,
        wx,
        wu,
        b,
        N,
        c0,
        ci,
        cm,
        BB: tl.constexpr,
        NX,
        NXP: tl.constexpr,
        NU,
        NUP: tl.constexpr,
        PREC: tl.constexpr,
    ):
        """The inputs' part of a pre-activation block: x @ Wx + u @ Wu + b at columns c0 + ci."""
        rx, mx = _plain(NXP, NX)
        ru, mu = _plain(NUP, NU)
        bias = tl.load(b + c0 + ci, mask=cm, other=0.0)
        acc = tl.zeros((BB, 1), dtype=tl.float32) + bias[None, :]
        acc = _mm(acc, x, wx, N, 0, rx, mx, c0, ci, cm, PREC)
        return _mm(acc, u, wu, N, 0, ru, mu, c0, ci, cm, PREC)

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

    # fmt: off
    @triton.jit
    def _rollout_kernel(
        x0_ptr, u_ptr, out_ptr, wx0, wu0, b0, n00, n10, n20, n30, n40,
        B, T, NX, NU, L, N, W0, W1, MLP, WSTEP,
        C1, CA1, CG, CA2, CO,
        BB: tl.constexpr, NXP: tl.constexpr, NUP: tl.constexpr, WP: tl.constexpr,
        MLPP: tl.constexpr, H: tl.constexpr, LP1: tl.constexpr, HL1P: tl.constexpr,
        DH: tl.constexpr, DM: tl.constexpr, SELF_QK: tl.constexpr, QI: tl.constexpr,
        PREC: tl.constexpr,
    ):
        # fmt: on
        """T folded MetaSym steps for BB samples (see `fused_rollout` for the layout).

        Column bases of the pre-activation accumulator: tanh 0 at 0, tanh 1 at C1, attention
        1 at CA1, GELU at CG, attention 2 at CA2, the next state at CO; node k's matrix n{k}
        holds the columns after node k (from the next node's base), so its leading dimension
        is N minus that base.
        """
        rows = tl.program_id(0) * BB + tl.arange(0, BB)
        rmask = rows < B
        cx, mx = _plain(NXP, NX)
        cu, mu = _plain(NUP, NU)
        x = tl.load(
            x0_ptr + rows[:, None] * NX + cx[None, :], mask=rmask[:, None] & mx[None, :], other=0.0
        )
        ld0, ld1, ld2, ld3, ld4 = N - C1, N - CA1, N - CG, N - CA2, N - CO
        # row maps of each node's output into the matrices it feeds
        r0, m0 = _plain(WP, W0)
        r1, m1 = _plain(WP, W1)
        rp, mp = _heads(HL1P, LP1, H, L + 1, L + 1)  # softmax weights incl. the self slot
        rv, mv = _plain(DM, DM)
        rv = rv + H * (L + 1)  # the self weight times the value, after the weights
        rg, mg = _plain(MLPP, MLP)
        # column maps of the pre-activation blocks
        cw0, cmw0 = _plain(WP, W0)
        cw1, cmw1 = _plain(WP, W1)
        cg, cmg = _plain(MLPP, MLP)
        if SELF_QK:  # [window scores (H*L) | q | k | v]
            cs, cms = _heads(HL1P, LP1, H, L, L)
            q_off = H * L
            v_off = H * L + 2 * DM
        else:  # [scores incl. the self slot (H*(L+1)) | v]
            cs, cms = _heads(HL1P, LP1, H, L + 1, L + 1)
            q_off = 0
            v_off = H * (L + 1)
        cd, cmd = _plain(DM, DM)
        for t in range(T):
            # The fold's matrices are loop-invariant; left so, the compiler hoists every tile
            # out of the loop into shared memory (~400 kB: the launch fails). Offsetting them
            # by t * WSTEP (0 at run time, unknown when compiling) keeps each load in the
            # step, where the tiles stream from L1/L2.
            wo = t * WSTEP
            wx, wu, b = wx0 + wo, wu0 + wo, b0 + wo
            n0, n1, n2, n3, n4 = n00 + wo, n10 + wo, n20 + wo, n30 + wo, n40 + wo
            u = tl.load(
                u_ptr + (rows[:, None] * T + t) * NU + cu[None, :],
                mask=rmask[:, None] & mu[None, :],
                other=0.0,
            )
            # encoder tanh stages
            y0 = _tanh(_pre(x, u, wx, wu, b, N, 0, cw0, cmw0, BB, NX, NXP, NU, NUP, PREC))
            a = _pre(x, u, wx, wu, b, N, C1, cw1, cmw1, BB, NX, NXP, NU, NUP, PREC)
            y1 = _tanh(_mm(a, y0, n0, ld0, 0, r0, m0, 0, cw1, cmw1, PREC))
            # attention 1: scores, (q, k), v
            s = _pre(x, u, wx, wu, b, N, CA1, cs, cms, BB, NX, NXP, NU, NUP, PREC)
            s = _mm(s, y0, n0, ld0, 0, r0, m0, CA1 - C1, cs, cms, PREC)
            s = _mm(s, y1, n1, ld1, 0, r1, m1, 0, cs, cms, PREC)
            v = _pre(x, u, wx, wu, b, N, CA1 + v_off, cd, cmd, BB, NX, NXP, NU, NUP, PREC)
            v = _mm(v, y0, n0, ld0, 0, r0, m0, CA1 - C1 + v_off, cd, cmd, PREC)
            v = _mm(v, y1, n1, ld1, 0, r1, m1, v_off, cd, cmd, PREC)
            own = tl.zeros((BB, H), dtype=tl.float32)
            if SELF_QK:
                q = _pre(x, u, wx, wu, b, N, CA1 + q_off, cd, cmd, BB, NX, NXP, NU, NUP, PREC)
                q = _mm(q, y0, n0, ld0, 0, r0, m0, CA1 - C1 + q_off, cd, cmd, PREC)
                q = _mm(q, y1, n1, ld1, 0, r1, m1, q_off, cd, cmd, PREC)
                k = _pre(x, u, wx, wu, b, N, CA1 + q_off + DM, cd, cmd, BB, NX, NXP, NU, NUP, PREC)
                k = _mm(k, y0, n0, ld0, 0, r0, m0, CA1 - C1 + q_off + DM, cd, cmd, PREC)
                k = _mm(k, y1, n1, ld1, 0, r1, m1, q_off + DM, cd, cmd, PREC)
                own = tl.sum(tl.reshape(q * k, (BB, H, DH)), axis=2)
            p1, ov1 = _softmax_attn(s, own, v, L, BB, H, LP1, HL1P, DH, DM, SELF_QK)
            # GELU MLP
            g = _pre(x, u, wx, wu, b, N, CG, cg, cmg, BB, NX, NXP, NU, NUP, PREC)
            g = _mm(g, y0, n0, ld0, 0, r0, m0, CG - C1, cg, cmg, PREC)
            g = _mm(g, y1, n1, ld1, 0, r1, m1, CG - CA1, cg, cmg, PREC)
            g = _mm(g, p1, n2, ld2, 0, rp, mp, 0, cg, cmg, PREC)
            g = _mm(g, ov1, n2, ld2, 0, rv, mv, 0, cg, cmg, PREC)
            g = 0.5 * g * (1.0 + tl.math.erf(g * 0.7071067811865476))
            # attention 2 (the meta-attention)
            s = _pre(x, u, wx, wu, b, N, CA2, cs, cms, BB, NX, NXP, NU, NUP, PREC)
            s = _mm(s, y0, n0, ld0, 0, r0, m0, CA2 - C1, cs, cms, PREC)
            s = _mm(s, y1, n1, ld1, 0, r1, m1, CA2 - CA1, cs, cms, PREC)
            s = _mm(s, p1, n2, ld2, 0, rp, mp, CA2 - CG, cs, cms, PREC)
            s = _mm(s, ov1, n2, ld2, 0, rv, mv, CA2 - CG, cs, cms, PREC)
            s = _mm(s, g, n3, ld3, 0, rg, mg, 0, cs, cms, PREC)
            v = _pre(x, u, wx, wu, b, N, CA2 + v_off, cd, cmd, BB, NX, NXP, NU, NUP, PREC)
            v = _mm(v, y0, n0, ld0, 0, r0, m0, CA2 - C1 + v_off, cd, cmd, PREC)
            v = _mm(v, y1, n1, ld1, 0, r1, m1, CA2 - CA1 + v_off, cd, cmd, PREC)
            v = _mm(v, p1, n2, ld2, 0, rp, mp, CA2 - CG + v_off, cd, cmd, PREC)
            v = _mm(v, ov1, n2, ld2, 0, rv, mv, CA2 - CG + v_off, cd, cmd, PREC)
            v = _mm(v, g, n3, ld3, 0, rg, mg, v_off, cd, cmd, PREC)
            if SELF_QK:
                o = CA2 + q_off
                q = _pre(x, u, wx, wu, b, N, o, cd, cmd, BB, NX, NXP, NU, NUP, PREC)
                q = _mm(q, y0, n0, ld0, 0, r0, m0, o - C1, cd, cmd, PREC)
                q = _mm(q, y1, n1, ld1, 0, r1, m1, o - CA1, cd, cmd, PREC)
                q = _mm(q, p1, n2, ld2, 0, rp, mp, o - CG, cd, cmd, PREC)
                q = _mm(q, ov1, n2, ld2, 0, rv, mv, o - CG, cd, cmd, PREC)
                q = _mm(q, g, n3, ld3, 0, rg, mg, o - CA2, cd, cmd, PREC)
                o = CA2 + q_off + DM
                k = _pre(x, u, wx, wu, b, N, o, cd, cmd, BB, NX, NXP, NU, NUP, PREC)
                k = _mm(k, y0, n0, ld0, 0, r0, m0, o - C1, cd, cmd, PREC)
                k = _mm(k, y1, n1, ld1, 0, r1, m1, o - CA1, cd, cmd, PREC)
                k = _mm(k, p1, n2, ld2, 0, rp, mp, o - CG, cd, cmd, PREC)
                k = _mm(k, ov1, n2, ld2, 0, rv, mv, o - CG, cd, cmd, PREC)
                k = _mm(k, g, n3, ld3, 0, rg, mg, o - CA2, cd, cmd, PREC)
                own = tl.sum(tl.reshape(q * k, (BB, H, DH)), axis=2)
            p2, ov2 = _softmax_attn(s, own, v, L, BB, H, LP1, HL1P, DH, DM, SELF_QK)
            # the next state
            xn = _pre(x, u, wx, wu, b, N, CO, cx, mx, BB, NX, NXP, NU, NUP, PREC)
            xn = _mm(xn, y0, n0, ld0, 0, r0, m0, CO - C1, cx, mx, PREC)
            xn = _mm(xn, y1, n1, ld1, 0, r1, m1, CO - CA1, cx, mx, PREC)
            xn = _mm(xn, p1, n2, ld2, 0, rp, mp, CO - CG, cx, mx, PREC)
            xn = _mm(xn, ov1, n2, ld2, 0, rv, mv, CO - CG, cx, mx, PREC)
            xn = _mm(xn, g, n3, ld3, 0, rg, mg, CO - CA2, cx, mx, PREC)
            xn = _mm(xn, p2, n4, ld4, 0, rp, mp, 0, cx, mx, PREC)
            xn = _mm(xn, ov2, n4, ld4, 0, rv, mv, 0, cx, mx, PREC)
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


def _layout(model: MetaSym, block: int, precision: str) -> tuple[list[int], dict[str, Any]]:
    """The kernel's integer arguments after the pointers (without B and T) and its
    compile-time constants, for this model."""
    cfg = model.config
    H, L, dm, nx, nu = cfg.n_heads, cfg.history_len, cfg.d_model, model.state_dim, model.action_dim
    widths = [w for _, w, _ in model._fold_nodes]
    bases = [0]
    for w in widths:
        bases.append(bases[-1] + w)
    w0, w1, mlp = widths[0], widths[1], widths[3]
    lp1 = max(_pow2(L + 1, 1), 16 // H)  # H * lp1 >= 16: the weights feed `tl.dot`
    ints = [nx, nu, L, bases[-1] + nx, w0, w1, mlp, 0, *bases[1:6]]  # 0: WSTEP
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
        "SELF_QK": bool(cfg.attend_self),
        "QI": int(model.coords.quaternion_index),
        "PREC": precision,
    }
    return ints, const


def _check_options(precision: str, block: int) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"fused_rollout: precision must be one of {PRECISIONS}, got {precision!r}")
    if block < 16 or _pow2(block) != block:
        raise ValueError(f"fused_rollout: block must be a power of two >= 16, got {block}")


def fused_rollout(
    model: MetaSym,
    fold: Memory,
    x0: torch.Tensor,
    actions: torch.Tensor,
    precision: str = "tf32x3",
    block: int = 32,
    num_warps: int = 4,
) -> torch.Tensor:
    """Roll the folded step out T steps in one kernel launch.

    Args:
        model: the MetaSym model the fold belongs to (structure and coordinates).
        fold: `_shared_fold` of its memory: `fold_wx` (nx, N), `fold_wu` (nu, N), `fold_b`
            (N,), `fold_n0`..`fold_n4`.
        x0: (B, nx) initial states; actions: (B, T, nu) normalised actions.
        precision: how `tl.dot` multiplies: "tf32x3" (three tensor-core products, about
            float32's accuracy; default), "tf32" (one, about 1e-3 relative error a product)
            or "ieee" (CUDA cores; compiled for sm_90 it spills heavily, see
            `compile_report`).
        block: samples per program (a power of two >= 16).
        num_warps: warps per program (Triton's launch option).

    Returns:
        (B, T, nx) the predicted states, x0 excluded; equal to repeated `MetaSym.step`.
    """
    reason = unsupported_reason(model, x0)
    if reason is not None:
        raise ValueError(f"fused_rollout: {reason}")
    _check_options(precision, block)
    B, T, nu = actions.shape
    nx = model.state_dim
    if x0.shape != (B, nx) or nu != model.action_dim:
        raise ValueError(
            f"fused_rollout: x0 {tuple(x0.shape)} and actions {tuple(actions.shape)} do not "
            f"match (B, {nx}) and (B, T, {model.action_dim})"
        )
    mats = [fold[k].contiguous() for k in ("fold_wx", "fold_wu", "fold_b")]
    mats += [fold[f"fold_n{k}"].contiguous() for k in range(5)]
    out = torch.empty(B, T, nx, dtype=x0.dtype, device=x0.device)
    if T == 0:
        return out
    ints, const = _layout(model, block, precision)
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
        enable_fp_fusion=True,  # multiply-adds fused, stated (Triton 3.9 warns when unset)
    )
    return out


def compile_report(
    model: MetaSym,
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

    _check_options(precision, block)
    _, const = _layout(model, block, precision)
    kernel: Any = _rollout_kernel
    names = list(kernel.arg_names)
    n_ptr = 11  # x0, actions, out, then the fold's 8 matrices
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
