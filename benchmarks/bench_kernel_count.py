"""Kernel launches of one compiled MPPI update with MetaSym: general path vs folded step.

On a GPU a small model's MPPI step is bound by kernel launches, not arithmetic, so the number
of kernels one update runs is the figure to cut. This counts them in the code `torch.compile`
(Inductor) generates for `MPPI._plan_eager` (K samples, horizon T, float32) on the CPU: the
external matrix products (`extern_kernels.mm/addmm/bmm/baddbmm`) and the fused kernels Inductor
writes for everything else. The CUDA code has the same graph, with Triton kernels in place of
the C++ ones. Writes section "kernel-count" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import re

import numpy as np
import torch
from torch._inductor.utils import run_and_get_code

from metasym_control.bench import machine_description, markdown_table, write_section
from metasym_control.controller import History
from metasym_control.controllers.common import history_window
from metasym_control.controllers.mppi import MPPI, MPPIConfig
from metasym_control.envs.quadrotor import Figure8Task
from metasym_control.models import fused_rollout
from metasym_control.models.coordinates import quadrotor_coordinates
from metasym_control.models.metasym import MetaSym, MetaSymConfig

FUSED_HEADER = ["products", "samples / program", "warps", "shared kB", "registers"]
FUSED_HEADER += ["spill stores B", "spill loads B"]
# (precision, samples per program, warps) of the fused kernel to compile (64 with 8 warps
# faulted on an H100 and is refused, `fused_rollout.FAULTED`)
FUSED_OPTIONS = [
    ("tf32x3", 32, 4),
    ("tf32x3", 32, 8),
    ("tf32x3", 64, 4),
    ("tf32x3", 128, 8),
    ("tf32", 16, 4),
    ("tf32", 32, 4),
    ("tf32", 32, 8),
    ("tf32", 128, 8),
    ("ieee", 32, 4),
]

_GEMM = re.compile(r"extern_kernels\.(?:mm|addmm|bmm|baddbmm)\(")
_FUSED = re.compile(r"^\s+(?:cpp|triton)_[a-z_]*fused_\w+\(", re.MULTILINE)


def count(config: MetaSymConfig, fold_mode: str, horizon: int, samples: int) -> tuple[int, int]:
    """(matrix products, fused kernels) in the compiled MPPI update."""
    torch.manual_seed(0)
    model = MetaSym(13, 4, 0.02, config, quadrotor_coordinates(), dtype=torch.float32).eval()
    model.fold_mode = fold_mode
    task = Figure8Task()
    cfg = MPPIConfig(horizon=horizon, num_samples=samples, plan_rollout="weighted")
    ctrl = MPPI(model, task, cfg, dtype=torch.float32)
    hist = History(model.history_len, 13, 4)
    x_ref_np, u_ref_np = task.reference(np.arange(horizon + 1) * 0.02)
    for _ in range(model.history_len):
        hist.push(x_ref_np[0], np.full(4, task.hover_action))
    window = tuple(torch.as_tensor(a, dtype=torch.float32) for a in history_window(model, hist))
    x_ref = torch.as_tensor(x_ref_np, dtype=torch.float32)
    u_ref = torch.as_tensor(u_ref_np, dtype=torch.float32)
    eps = 0.2 * torch.randn(samples, horizon, 4)
    fn = torch.compile(ctrl._plan_eager, dynamic=False)
    torch._dynamo.reset()
    with torch.no_grad():
        _, codes = run_and_get_code(fn, x_ref[0], u_ref[:-1], eps, window, x_ref, u_ref)
    text = "\n".join(codes)
    calls = text[text.rfind("def call(") :]  # the launch sequence of the last graph
    return len(_GEMM.findall(calls)), len(_FUSED.findall(calls))


def main() -> None:
    """Count both paths for both self-slot variants and write the section."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--horizon", type=int, default=30)
    ap.add_argument("--samples", type=int, default=256, help="K (the counts do not depend on it)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for label, config in (
        ("own key (shipped)", MetaSymConfig()),
        ("learned self key", MetaSymConfig(attend_self=False)),
    ):
        for mode in ("never", "always"):
            gemm, fused = count(config, mode, args.horizon, args.samples)
            path = "folded" if mode == "always" else "general"
            rows.append([label, path, gemm, fused, gemm + fused])
            print(rows[-1], flush=True)
    text = (
        "## Kernel launches of one compiled MPPI update (`benchmarks/bench_kernel_count.py`)\n\n"
        f"MetaSym default size, horizon {args.horizon}, weighted plan, float32; counted in the "
        "code `torch.compile` generates on the CPU (matrix products run as external kernels, "
        "the rest as fused kernels; on a GPU the same graph launches Triton kernels). "
        '`fold_mode` "auto" folds learned-self-key models everywhere and own-key models on '
        f"CUDA devices.\nMachine: {machine_description()}.\n\n"
        + markdown_table(["self slot", "step", "matrix products", "fused kernels", "total"], rows)
    )
    if fused_rollout.available():
        model = MetaSym(13, 4, 0.02, MetaSymConfig(), quadrotor_coordinates(), dtype=torch.float32)
        fused = []
        for prec, block, warps in FUSED_OPTIONS:
            r = fused_rollout.compile_report(model, prec, block, warps)
            kb = r["shared_bytes"] // 1024
            spills = [r["spill_store_bytes"], r["spill_load_bytes"]]
            fused.append([prec, block, warps, kb, r["registers"], *spills])
            print(fused[-1], flush=True)
        text += (
            "\n\nThe fused rollout (`MetaSym.rollout_kernel`, one launch for the whole "
            "rollout, shipped architecture) compiled for sm_90a on this machine (Triton "
            f"{fused_rollout.triton.__version__}, its ptxas): static resources per launch "
            "option. A Hopper SM gives a block at most 227 kB of shared memory and a thread "
            "255 registers; spills go to local memory (cached in L1).\n\n"
            + markdown_table(
                FUSED_HEADER,
                fused,
            )
        )
    print(text)
    if not args.no_write:
        write_section("kernel-count", text)


if __name__ == "__main__":
    main()
