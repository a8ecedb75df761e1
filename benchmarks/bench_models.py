"""Timing of the default MetaSym model in the control loop (`make bench-models`).

Times one `step` for 1 and 1024 batched samples (history encoded once, broadcast; the folded
fast path, beside the general path and `torch.compile` of the folded step), a 20-step
`rollout` for 256 samples, Jacobians along a 20-step trajectory (torch.func, memory held
fixed), `init_memory`, and one 3-shot `adapt`, on the CPU (2 threads) and on CUDA when
available; the MLP baseline's step for comparison. Writes section "models" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from torch.func import jacrev, vmap

from metasym_control.bench import machine_description, markdown_table, time_call, write_section
from metasym_control.dynamics import AdaptBudget, expand_memory
from metasym_control.models.learned import LearnedModel
from metasym_control.models.metasym import MetaSymConfig
from metasym_control.models.registry import make_model
from metasym_control.systems import coordinates_for_env
from metasym_control.trajectory import Trajectory
from metasym_control.weights import DEFAULT_WEIGHTS

QUAD = "MetaSymQuadrotor-v0"
QUAD_COORDS = coordinates_for_env(QUAD, 13)


def _load_default(device: str) -> tuple[LearnedModel, str]:
    """The shipped quadrotor weights, or a fresh default model when they are absent."""
    from metasym_control.checkpoint import CheckpointError, load_checkpoint

    try:
        model, _ = load_checkpoint(DEFAULT_WEIGHTS, device=device, dtype=torch.float32)
        return model, "shipped weights"
    except CheckpointError:
        model = make_model("metasym", QUAD, 13, 4, 0.02, QUAD_COORDS, device=device)
        return model, "fresh default model (no shipped weights found)"


def _support(path: Path | None = None, n_episodes: int = 3, steps: int = 100) -> Trajectory:
    """3 episodes of one test-split quadrotor: collected, or read from a saved Trajectory."""
    if path is not None:
        return Trajectory.load(path)
    from metasym_control.data import collect_quadrotor_dataset

    return collect_quadrotor_dataset(1, n_episodes, steps, "test", seed=7)


def bench(device: str, repeat: int, support_path: Path | None = None) -> list[list[object]]:
    """Rows (what, device, median ms, p10 ms) for one device."""
    model, origin = _load_default(device)
    model.eval()
    mlp = make_model("mlp", QUAD, 13, 4, 0.02, QUAD_COORDS, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    gen = torch.Generator(device="cpu").manual_seed(0)
    L = model.history_len
    hover = torch.zeros(13)
    hover[2], hover[3] = 1.5, 1.0
    hist_x = (hover + 0.01 * torch.randn(L, 13, generator=gen)).to(device)
    hist_u = (-0.5 + 0.05 * torch.randn(L, 4, generator=gen)).to(device)
    mem1 = model.init_memory(hist_x, hist_u)
    rows: list[list[object]] = []

    def row(name: str, times: np.ndarray) -> None:
        rows.append(
            [name, device, f"{1e3 * np.median(times):.3f}", f"{1e3 * np.quantile(times, 0.1):.3f}"]
        )

    with torch.no_grad():
        x1, u1 = hist_x[-1:], hist_u[-1:]
        row(
            "init_memory (one history)",
            time_call(lambda: model.init_memory(hist_x, hist_u), repeat, sync=sync),
        )
        m1 = expand_memory(mem1, (1,))
        row("step, 1 sample", time_call(lambda: model.step(x1, u1, m1), repeat, sync=sync))
        k = 1024
        xk = hover.to(device).expand(k, 13).contiguous()
        uk = (-0.5 + 0.1 * torch.randn(k, 4, generator=gen)).to(device)
        mk = expand_memory(mem1, (k,))
        row("step, 1024 samples", time_call(lambda: model.step(xk, uk, mk), repeat, sync=sync))
        # the same step without the folded matrices (the general, per-layer path)
        mg = expand_memory({n: v for n, v in mem1.items() if not n.startswith("fold_")}, (k,))
        row(
            "step, 1024 samples, general path (no fold)",
            time_call(lambda: model.step(xk, uk, mg), repeat, sync=sync),
        )
        # the planner variant (learned self key, `attend_self=False`): its step is folded;
        # timing does not depend on the weights, so a fresh model of the same size
        variant = make_model(
            "metasym",
            QUAD,
            13,
            4,
            0.02,
            QUAD_COORDS,
            device=device,
            metasym=MetaSymConfig(attend_self=False),
        ).to(torch.float32)
        mv = expand_memory(variant.init_memory(hist_x, hist_u), (k,))
        row(
            "step, 1024 samples, folded planner variant (attend_self=False)",
            time_call(lambda: variant.step(xk, uk, mv), repeat, sync=sync),
        )
        compiled = torch.compile(lambda a, b, m: model.step(a, b, m)[0], dynamic=False)
        compiled(xk, uk, mk)  # compile outside the timing
        row(
            "step, 1024 samples, torch.compile",
            time_call(lambda: compiled(xk, uk, mk), repeat, sync=sync),
        )
        row(
            "MLP baseline step, 1024 samples",
            time_call(lambda: mlp.step(xk, uk, {}), repeat, sync=sync),
        )
        us = (-0.5 + 0.1 * torch.randn(256, 20, 4, generator=gen)).to(device)
        m256 = expand_memory(mem1, (256,))
        row(
            "rollout, 256 samples x 20 steps",
            time_call(lambda: model.rollout(xk[:256], us, m256), max(5, repeat // 5), sync=sync),
        )
    # Jacobians d x_{k+1} / d (x_k, u_k) at the 20 states of a predicted trajectory
    with torch.no_grad():
        traj = model.rollout(x1[0], us[0], mem1)  # (20, 13)

    def f(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return model.step(x, u, mem1)[0]

    jac = vmap(jacrev(f, argnums=(0, 1)))
    row(
        "Jacobians along 20 steps (vmap(jacrev))",
        time_call(lambda: jac(traj, us[0]), max(5, repeat // 5), sync=sync),
    )
    support = _support(support_path)
    budget = AdaptBudget()
    row(
        f"3-shot adapt ({budget.inner_steps} {budget.optimizer} steps, 300 transitions)",
        time_call(lambda: model.adapt(support, budget), 3, warmup=1, sync=sync),  # type: ignore[arg-type]
    )
    rows.append(
        [f"(model: {origin}, {model.num_parameters()} parameters, float32)", device, "", ""]
    )
    return rows


def main() -> None:
    """Run the benchmark, print the table and write section "models" of BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per item")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument(
        "--support",
        type=Path,
        help="adaptation data as a saved Trajectory (.npz) instead of collecting it with MuJoCo",
    )
    parser.add_argument("--save-support", type=Path, help="save the collected data here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.save_support:
        _support().save(args.save_support)
    rows = bench("cpu", args.repeat, args.support)
    gpu_line = ""
    if torch.cuda.is_available():
        rows += bench("cuda", args.repeat, args.support)
    else:
        gpu_line = "\nNo CUDA device in this run: no GPU rows (`benchmarks/gpu_session.sh`).\n"
    table = markdown_table(["what", "device", "median (ms)", "p10 (ms)"], rows)
    text = (
        "## Models: the default MetaSym in the control loop\n\n"
        "Command: `make bench-models` (`python benchmarks/bench_models.py`). "
        f"CPU timings with {args.threads} torch threads. The history window is encoded once "
        "(`init_memory`) and broadcast to every sample without copies.\n"
        f"Machine: {machine_description()}.\n{gpu_line}\n" + table
    )
    print(text)
    if not args.no_write:
        write_section("models", text)


if __name__ == "__main__":
    main()
