"""Where one MPPI control step's time goes: `act`'s phases and the plan's kernels, on a GPU.

`python benchmarks/profile_mppi_gpu.py --out profile.json` flies the figure-8 with MPPI on the
shipped MetaSym (K 4096, T 30, CUDA graph, weighted plan, `--kernel` rollout) for a few
seconds, then, at the reached state and history, times each phase of `act` with a
synchronisation after it (median of `--n` calls) and profiles the plan's pieces in eager
mode (the encoding of the history, the rollout, the cost and update) by their GPU time and
kernel count. `--device cpu` is a dry run of the script.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metasym_control.bench import time_call
from metasym_control.checkpoint import load_checkpoint
from metasym_control.closed_loop import run_closed_loop
from metasym_control.controllers.mppi import MPPI, MPPIConfig
from metasym_control.dynamics import expand_memory
from metasym_control.envs.quadrotor import QuadrotorEnv
from metasym_control.weights import DEFAULT_WEIGHTS


class _Recorder:
    """Passes `act` through to the controller and keeps its last arguments."""

    def __init__(self, ctrl: MPPI) -> None:
        self.ctrl = ctrl
        self.last: tuple[np.ndarray, float, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ctrl, name)

    def act(self, state: np.ndarray, t: float, history: Any = None) -> np.ndarray:
        self.last = (state.copy(), t, copy.deepcopy(history))
        return self.ctrl.act(state, t, history)


def _median_ms(fn: Callable[[], Any], sync: Callable[[], None], n: int) -> float:
    """Median wall ms of `fn` followed by a synchronisation, after 3 warm-up calls."""
    return float(1e3 * np.median(time_call(fn, repeat=n, warmup=3, sync=sync)))


def profile(
    device: str = "cuda",
    samples: int = 4096,
    horizon: int = 30,
    kernel: str = "triton",
    steps: int = 60,
    n: int = 100,
) -> dict[str, Any]:
    """Phase times (ms) of `act` and the eager plan's GPU time and kernels per piece.

    Returns:
        {"phases_ms": {...}, "act_fallbacks", "pieces": {piece: {"gpu_ms": the piece's span
        on the GPU in eager mode, launch gaps included; "kernels": launches}},
        "act_kernels": device kernels and busy time per `act`, "top_kernels": [...]}.
    """
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    model, _ = load_checkpoint(DEFAULT_WEIGHTS, device=device, dtype=torch.float32)
    if cuda:
        model.rollout_kernel = kernel
    env = QuadrotorEnv(task="figure8")
    cfg = MPPIConfig(horizon=horizon, num_samples=samples, cuda_graph=cuda, plan_rollout="weighted")
    ctrl = MPPI(model, env.task, cfg, device=device, dtype=torch.float32)
    rec = _Recorder(ctrl)
    run_closed_loop(env, rec, steps, seed=0, history_len=model.history_len)  # type: ignore[arg-type]
    assert rec.last is not None
    state, t, hist = rec.last
    c = ctrl.config

    def prep() -> tuple[torch.Tensor, ...]:
        return ctrl._inputs(state, t, hist)

    x0, x_ref, u_ref, hs, ha, hv = prep()
    window = (hs, ha, hv)
    warm = torch.clamp(u_ref[:-1], ctrl._action_lower, ctrl._action_upper)
    eps = ctrl._sample_noise()
    out = ctrl._plan_fn(x0, warm, eps, window, x_ref, u_ref)

    before = int(ctrl.last_info.get("fallback_count", 0))
    act_ms = _median_ms(lambda: ctrl.act(state, t, hist), sync, n)
    # a state whose plans leave the trusted region times the fallback too: say how often
    act_fallbacks = int(ctrl.last_info.get("fallback_count", 0)) - before
    phases = {
        "act (whole, no extra syncs)": act_ms,
        "reference, history window, host-to-device copy": _median_ms(prep, sync, n),
        "noise sampling": _median_ms(ctrl._sample_noise, sync, n),
        "plan (graph replay: encoding, rollout, cost, update)": _median_ms(
            lambda: ctrl._plan_fn(x0, warm, eps, window, x_ref, u_ref), sync, n
        ),
        "device-to-host copy of plan and stats": _median_ms(
            lambda: torch.cat([o.reshape(-1) for o in out]).cpu(), sync, n
        ),
    }

    # the plan's pieces in eager mode, each under a profiler range
    k = samples
    with torch.no_grad():

        def pieces() -> None:
            with torch.profiler.record_function("piece: encode history (init_memory)"):
                memory = model.init_memory(hs, ha, hv > 0.5)
            v = torch.maximum(torch.minimum(warm + eps, ctrl._action_upper), ctrl._action_lower)
            with torch.profiler.record_function("piece: rollout"):
                xs = model.rollout(x0.expand(k, -1), v, expand_memory(memory, (k,)))
            with torch.profiler.record_function("piece: cost and weighted update"):
                x_all = torch.cat([x0.expand(k, 1, -1), xs], dim=1)
                stage = ctrl.task.running_cost(x_all[:, :-1], v, x_ref[:-1], u_ref[:-1])
                costs = stage.sum(-1) + ctrl.task.terminal_cost(x_all[:, -1], x_ref[-1])
                w = torch.softmax(-(costs - costs.min()) / c.temperature, dim=0)
                torch.einsum("k,ktu->tu", w, v)
                torch.einsum("k,ktx->tx", w, xs)

        for _ in range(3):
            pieces()
        sync()
        acts = [torch.profiler.ProfilerActivity.CPU]
        if cuda:
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        reps = 5
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(reps):
                pieces()
            sync()
    events = prof.key_averages()

    def dev_us(e: Any) -> float:
        return float(getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0.0)))

    piece_rows = {}
    for e in events:
        if e.key.startswith("piece: "):
            piece_rows[e.key[7:]] = {"gpu_ms": dev_us(e) / reps / 1e3}
    # kernels per piece: count the device events inside each range's CPU interval
    ranges = [(e.name[7:], e.time_range) for e in prof.events() if e.name.startswith("piece: ")]
    counts: dict[str, int] = {name: 0 for name, _ in ranges}
    launch_names = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
    launches = [e for e in prof.events() if e.name in launch_names]
    for e in launches:
        for name, rng in ranges:
            if rng.start <= e.time_range.start <= rng.end:
                counts[name] += 1
                break
    for name, cnt in counts.items():
        piece_rows.setdefault(name, {})["kernels"] = cnt // reps
    top = sorted(
        (e for e in events if not e.key.startswith("piece: ") and dev_us(e) > 0),
        key=dev_us,
        reverse=True,
    )[:15]
    top_rows = [
        {"kernel": e.key[:80], "calls": e.count // reps, "gpu_ms": dev_us(e) / reps / 1e3}
        for e in top
    ]
    # act itself (graph replay included): device kernels per call and their busy time
    with torch.profiler.profile(activities=acts) as prof_act:
        for _ in range(reps):
            ctrl.act(state, t, hist)
        sync()
    dev_events = [e for e in prof_act.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kern = [e for e in dev_events if "memcpy" not in e.name.lower()]
    act_kernels = {
        "device_events_per_act": len(dev_events) / reps,
        "kernels_per_act": len(kern) / reps,
        "kernel_busy_ms_per_act": sum(e.time_range.elapsed_us() for e in kern) / reps / 1e3,
        "top": sorted(
            (
                (name, sum(e.time_range.elapsed_us() for e in kern if e.name == name) / reps)
                for name in {e.name for e in kern}
            ),
            key=lambda r: -r[1],
        )[:12],
    }
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "act_kernels": act_kernels,
        "torch": torch.__version__,
        "samples": samples,
        "horizon": horizon,
        "kernel": kernel,
        "phases_ms": phases,
        "act_fallbacks": f"{act_fallbacks} of {n + 3} calls",
        "pieces": piece_rows,
        "top_kernels": top_rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--kernel", default="triton", help="MetaSym.rollout_kernel")
    ap.add_argument("--out", type=Path, help="write the result here (JSON)")
    args = ap.parse_args()
    quick = args.device == "cpu"
    res = profile(
        args.device,
        samples=64 if quick else 4096,
        steps=15 if quick else 60,
        n=3 if quick else 100,
        kernel=args.kernel,
    )
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
