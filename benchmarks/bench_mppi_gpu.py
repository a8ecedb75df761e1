"""MPPI latency on a CUDA GPU (eager, CUDA graph, torch.compile), K 4096, horizon 20/30.

On a machine with CUDA: `python benchmarks/bench_mppi_gpu.py --out results.json` measures and
writes the raw rows as JSON and the "control-gpu" section of BENCHMARKS.md. Anywhere:
`python benchmarks/bench_mppi_gpu.py --from-json benchmarks/results/*.json` rewrites the section
from recorded runs (the lent GPU machines are not always available; the JSON keeps the device
and torch version of the run that produced each row).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metasym_control.bench import markdown_table, time_call, write_section
from metasym_control.checkpoint import CheckpointError, load_checkpoint
from metasym_control.controller import History
from metasym_control.controllers.common import history_window
from metasym_control.controllers.mppi import MPPI, MPPIConfig
from metasym_control.envs.quadrotor import Figure8Task
from metasym_control.models.baselines import MLPModel
from metasym_control.models.coordinates import quadrotor_coordinates
from metasym_control.models.metasym import MetaSym
from metasym_control.weights import DEFAULT_WEIGHTS

# (model, horizon, MPPI options), the candidates for the goal first (a lent machine's time
# is short); "fused": the whole rollout in one Triton kernel (`MetaSym.rollout_kernel`)
W = {"cuda_graph": True, "plan_rollout": "weighted"}
COMBOS: list[tuple[str, int, dict[str, Any]]] = [
    ("MetaSym fused", 30, W),
    ("MetaSym fused tf32", 30, W),
    ("MetaSym", 30, W),
    ("MetaSym general path", 30, W),
    ("MLP 2x128", 30, {"cuda_graph": True}),
    ("MetaSym fused", 30, {}),
    ("MetaSym", 30, {}),
    ("MetaSym", 30, {"cuda_graph": True}),
]
# torch.compile rows: 30-90 s of compilation each on the first call (--with-compile)
COMPILED: list[tuple[str, int, dict[str, Any]]] = [
    ("MetaSym fused", 30, {**W, "compile": True}),
    ("MetaSym", 30, {**W, "compile": True}),
]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _model(name: str, dtype: torch.dtype, device: str, fresh: bool) -> tuple[Any, str]:
    """The model and its description (MetaSym: the shipped weights unless `fresh`)."""
    if name.startswith("MLP"):
        return MLPModel(13, 4, 0.02, device=device, dtype=dtype).eval(), name
    try:
        if fresh:
            raise CheckpointError("fresh model asked for")
        model, _ = load_checkpoint(DEFAULT_WEIGHTS, device=device, dtype=dtype)
        label = "MetaSym (shipped weights)"
    except CheckpointError:  # latency does not depend on the weights
        model = MetaSym(13, 4, 0.02, coords=quadrotor_coordinates(), device=device, dtype=dtype)
        label = "MetaSym default (untrained)"
    model.rollout_kernel = "torch"  # the torch path unless the row names the kernel
    if name.endswith("general path"):  # the unfolded step, for comparison
        model.fold_mode = "never"
        label += ", general path"
    if " fused" in name:
        model.rollout_kernel = "triton-tf32" if name.endswith("tf32") else "triton"
        label += ", fused Triton rollout" + (
            " (tf32)" if name.endswith("tf32") else " (the default on CUDA)"
        )
    return model.eval(), label


def measure(
    steps: int = 60,
    device: str = "cuda",
    samples: int = 4096,
    fresh: bool = False,
    only: list[str] | None = None,
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
    with_compile: bool = False,
) -> list[dict[str, Any]]:
    """Median and p90 latency (ms) of `MPPI.act` for each combination, K = 4096, float32.

    `device="cpu"` with few samples and steps is a quick dry run of the script itself;
    `only`: substrings of the row keys to run, the model name and the option names (e.g.
    "fused", "compile"; None: all). A row that fails records its
    error instead of timings. `on_row` gets the rows so far after each one (a lent machine
    may be taken back mid-run).
    """
    task = Figure8Task()
    x_ref, _ = task.reference(np.arange(steps + 40) * 0.02)
    rng = np.random.default_rng(0)
    rows = []
    for name, horizon, options in COMBOS + (COMPILED if with_compile else []):
        key = " ".join([name, *options])  # e.g. "MetaSym fused cuda_graph plan_rollout compile"
        if only and not any(o in key for o in only):
            continue
        try:
            row = _measure_one(name, horizon, options, steps, device, samples, fresh, x_ref, rng)
        except Exception as exc:  # one failing variant must not cost the others their rows
            row = {"model": name, "T": horizon, **options, "error": f"{type(exc).__name__}: {exc}"}
        print(row, flush=True)
        rows.append(row)
        if on_row is not None:
            on_row(rows)
    return rows


def _measure_one(
    name: str,
    horizon: int,
    options: dict[str, Any],
    steps: int,
    device: str,
    samples: int,
    fresh: bool,
    x_ref: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """One row of `measure`."""
    task = Figure8Task()
    model, label = _model(name, torch.float32, device, fresh)
    hist = History(model.history_len, 13, 4)
    for _ in range(model.history_len):
        hist.push(x_ref[0], np.full(4, task.hover_action))
    cfg = MPPIConfig(horizon=horizon, num_samples=samples, noise_beta=2.0, **options)
    ctrl = MPPI(model, task, cfg, device=device, dtype=torch.float32)
    times = []
    for i in range(steps + 10):
        x = x_ref[i].copy()
        x[:3] += 0.05 * rng.standard_normal(3)
        t0 = time.perf_counter()
        u = ctrl.act(x, i * 0.02, hist)
        _sync(device)
        times.append(time.perf_counter() - t0)
        hist.push(x, u)  # a history that matches the states (a stale one trips fallbacks)
    ms = 1e3 * np.asarray(times[10:])  # the first calls capture and compile
    row = {"model": label, "T": horizon, **options}
    row |= {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90))}
    row["fallbacks"] = int(ctrl.last_info.get("fallback_count", 0))
    row["update_ms"] = _update_only(ctrl, x_ref[0], hist)
    return row


def _update_only(ctrl: MPPI, x: np.ndarray, hist: History, n: int = 50) -> float:
    """Median ms of the MPPI update alone (inputs already on the GPU): act's fixed cost is
    the difference to its latency."""
    c = ctrl.config
    window = history_window(ctrl.model, hist)  # type: ignore[arg-type]
    dev, dt = ctrl.device, ctrl.dtype
    hs, ha, hv = (torch.as_tensor(a, device=dev, dtype=dt) for a in window)
    x_ref_np, u_ref_np = ctrl.task.reference(np.arange(c.horizon + 1) * 0.02)
    x0 = torch.as_tensor(x, device=dev, dtype=dt)
    x_ref = torch.as_tensor(x_ref_np, device=dev, dtype=dt)
    u_ref = torch.as_tensor(u_ref_np, device=dev, dtype=dt)
    u = u_ref[:-1].clone()
    eps = 0.2 * torch.randn(c.num_samples, c.horizon, u.shape[-1], device=dev, dtype=dt)
    times = []
    with torch.no_grad():
        for _ in range(n + 5):
            _sync(str(dev))
            t0 = time.perf_counter()
            ctrl._plan_fn(x0, u, eps, (hs, ha, hv), x_ref, u_ref)
            _sync(str(dev))
            times.append(time.perf_counter() - t0)
    return float(1e3 * np.median(times[5:]))


# the fused rollout's launch options timed by `--sweep` ("ieee" spills, bench_kernel_count.py)
SWEEP = [
    (prec, block, warps)
    for prec in ("tf32x3", "tf32")
    for block, warps in ((16, 4), (32, 4), (32, 8), (64, 4), (128, 4))
]


def sweep(
    device: str = "cuda",
    samples: int = 4096,
    horizon: int = 30,
    n: int = 50,
    configs: list[tuple[str, int, int]] | None = None,
) -> list[dict[str, Any]]:
    """The fused rollout alone (no MPPI around it) against the torch folded rollout, per
    launch configuration: median ms of one K x T rollout, float32, shipped or default weights.

    `configs`: (precision, block, warps) to time; None: `SWEEP`. A launch that faults leaves
    the CUDA context unusable, so each faulting configuration belongs in a run of its own.
    """
    configs = SWEEP if configs is None else configs
    from metasym_control.dynamics import expand_memory
    from metasym_control.models.fused_rollout import fused_rollout
    from metasym_control.models.metasym_fold import shared_fold

    model, label = _model("MetaSym", torch.float32, device, fresh=False)
    model.fold_mode = "always"
    model.rollout_kernel = "torch"
    L = model.history_len
    g = torch.Generator().manual_seed(0)
    hs = torch.randn(L, 13, generator=g).to(device)
    hs[:, 3:7] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    ha = torch.zeros(L, 4, device=device)
    mem = expand_memory(model.init_memory(hs, ha), (samples,))  # the torch path's chain
    model.rollout_kernel = "triton"  # the kernel's stream form
    fold = shared_fold(expand_memory(model.init_memory(hs, ha), (samples,)))
    model.rollout_kernel = "torch"
    assert fold is not None
    x0 = hs[-1].expand(samples, 13).contiguous()
    us = (0.3 * torch.randn(samples, horizon, 4, generator=g)).to(device)

    def timed(fn: Callable[[], torch.Tensor]) -> float:
        return float(1e3 * np.median(time_call(fn, repeat=n, warmup=3, sync=lambda: _sync(device))))

    rows = []
    with torch.no_grad():
        ref = model.rollout(x0, us, mem)
        rows.append(
            {
                "model": label,
                "config": "torch folded rollout",
                "ms": timed(lambda: model.rollout(x0, us, mem)),
            }
        )
        for prec, block, warps in configs:
            cfg = f"fused, {prec}, block {block}, {warps} warps"
            try:
                run = partial(fused_rollout, model, fold, x0, us, prec, block, warps)
                err = ((run() - ref).abs().max() / ref.abs().max()).item()
                rows.append({"model": label, "config": cfg, "ms": timed(run), "rel_err": err})
            except Exception as exc:  # record and go on: a launch option may not fit
                rows.append({"model": label, "config": cfg, "error": f"{exc}"[:200]})
            print(rows[-1], flush=True)
    return rows


def _closed_loop_table(run: dict[str, Any]) -> str:
    """Markdown table of a `bench_control.py --json` run (latency and tracking RMSE)."""
    body = [
        [
            r["controller"],
            r["k"],
            r["horizon"],
            f"{r['median_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            "—" if r["rmse"] is None else f"{r['rmse']:.3f}",
            "—" if r["fallbacks"] is None else r["fallbacks"],
        ]
        for r in run["rows"]
        if r["device"] != "cpu"
    ]
    head = (
        f"Closed loop on the figure-8 (`bench_control.py --device cuda --skip-cpu`), "
        f"{run['model']}, {run['steps']} control steps, float32; latency of `act`, position "
        "RMSE in m:\n\n"
    )
    cols = ["controller", "K", "T", "median ms", "p90 ms", "RMSE m", "fallbacks"]
    return head + markdown_table(cols, body)


def _sweep_table(rows: list[dict[str, Any]], samples: int) -> str:
    """Markdown table of a `sweep` run."""
    body = [
        [
            r["config"],
            f"{r['ms']:.3f}" if "ms" in r else "failed: " + r.get("error", "?")[:100],
            f"{r['rel_err']:.1e}" if "rel_err" in r else "—",
        ]
        for r in rows
    ]
    head = f"The rollout alone, K {samples}, T 30 (`--sweep`):\n\n"
    return head + markdown_table(["rollout", "median ms", "max error / max state"], body)


def section(runs: list[dict[str, Any]]) -> str:
    """The "control-gpu" markdown section from runs {device, torch, rows}."""
    out = [
        "## Control: MPPI on a GPU (`benchmarks/bench_mppi_gpu.py`)",
        "",
        "K = 4096 samples, float32, figure-8 task, latency of `MPPI.act` (history encoding, "
        "sampling, rollout, softmin update, one device-to-host copy), after 10 warm-up calls. "
        "MetaSym rows use the default architecture (latency does not depend on the weights; "
        "the run says whether they were the shipped ones). `update ms`: the MPPI update "
        "alone with its inputs on the GPU (sampling noise and host work excluded). "
        "Goal: MPPI with the default model, K 4096, T 30 under 2 ms on an H100-class GPU.",
    ]
    for run in runs:
        out += ["", f"Device: {run['device']}, torch {run.get('torch', '?')}."]
        out += [run["note"], ""] if "note" in run else [""]
        if run.get("closed_loop"):  # `bench_control.py --device cuda --json`: flown rows
            out.append(_closed_loop_table(run))
            continue
        if any("config" in r for r in run["rows"]):  # a `--sweep` run: the rollout alone
            out.append(_sweep_table(run["rows"], run.get("samples", 4096)))
            continue
        rows = []
        for r in run["rows"]:
            if "error" in r:  # a variant that failed on this machine: say so
                rows.append([r["model"], r["T"], "failed: " + r["error"][:120], "—", "—", "—"])
                continue
            if "median_ms" not in r:
                continue
            opts = [k for k in ("cuda_graph", "compile") if r.get(k)]
            if r.get("graph") == "pytorch-mppi":
                opts.append("pytorch-mppi package, no_grad")
            if r.get("plan_rollout") == "weighted":
                opts.append("weighted plan")
            rows.append(
                [
                    r["model"],
                    r["T"],
                    ", ".join(opts) or "eager",
                    f"{r['median_ms']:.2f}",
                    f"{r['p90_ms']:.2f}",
                    f"{r['update_ms']:.2f}" if "update_ms" in r else "—",
                ]
            )
        head = ["model", "T", "mode", "median ms", "p90 ms", "update ms"]
        out.append(markdown_table(head, rows))
    return "\n".join(out)


def main() -> None:
    """Measure on CUDA, or render recorded runs."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, help="write the measured rows here (JSON)")
    ap.add_argument("--from-json", type=Path, nargs="*", help="recorded runs to render")
    ap.add_argument("--dry-run", action="store_true", help="a few CPU steps, nothing written")
    ap.add_argument("--fresh", action="store_true", help="an untrained default MetaSym")
    ap.add_argument(
        "--only", nargs="*", help="substrings of the row keys (model name, option names) to run"
    )
    ap.add_argument("--with-compile", action="store_true", help="also the torch.compile rows")
    ap.add_argument(
        "--sweep", type=Path, help="time the fused rollout alone per launch option; JSON here"
    )
    ap.add_argument(
        "--configs", help="with --sweep: precision:block:warps,... instead of the default set"
    )
    args = ap.parse_args()
    if args.sweep:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        configs = None
        if args.configs:  # "tf32x3:64:4,tf32:32:8"
            configs = [
                (p, int(b), int(w)) for p, b, w in (c.split(":") for c in args.configs.split(","))
            ]
        rows = sweep(
            dev,
            samples=4096 if dev == "cuda" else 64,
            n=50 if dev == "cuda" else 2,
            configs=configs,
        )
        name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu (Triton interpreter)"
        run = {
            "device": name,
            "torch": torch.__version__,
            "samples": 4096 if dev == "cuda" else 64,
            "rows": rows,
        }
        args.sweep.write_text(json.dumps(run, indent=1))
        return
    if args.dry_run:
        print(
            measure(
                steps=3,
                device="cpu",
                samples=64,
                fresh=args.fresh,
                only=args.only,
                with_compile=args.with_compile,
            )
        )
        return
    if args.from_json:
        runs = [json.loads(p.read_text()) for p in args.from_json]
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: pass --from-json with recorded runs instead")
        run: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}

        def save(rows: list[dict[str, Any]]) -> None:
            run["rows"] = rows
            if args.out:
                args.out.write_text(json.dumps(run, indent=1))

        save(measure(fresh=args.fresh, only=args.only, on_row=save, with_compile=args.with_compile))
        runs = [run]
    text = section(runs)
    print(text)
    write_section("control-gpu", text)


if __name__ == "__main__":
    main()
