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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metasym_control.bench import markdown_table, write_section
from metasym_control.checkpoint import CheckpointError, load_checkpoint
from metasym_control.control import History
from metasym_control.controllers.common import history_window
from metasym_control.controllers.mppi import MPPI, MPPIConfig
from metasym_control.envs.quadrotor import Figure8Task
from metasym_control.experiments import DEFAULT_WEIGHTS
from metasym_control.models.baselines import MLPModel
from metasym_control.models.coordinates import quadrotor_coordinates
from metasym_control.models.metasym import MetaSym

# (model, horizon, MPPI options)
COMBOS: list[tuple[str, int, dict[str, Any]]] = [
    ("MLP 2x128", 30, {"cuda_graph": True}),
    ("MetaSym", 30, {}),
    ("MetaSym", 30, {"cuda_graph": True}),
    ("MetaSym", 30, {"cuda_graph": True, "plan_rollout": "weighted"}),
    ("MetaSym", 30, {"cuda_graph": True, "plan_rollout": "weighted", "compile": True}),
    ("MetaSym general path", 30, {"cuda_graph": True, "plan_rollout": "weighted"}),
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
    if name.endswith("general path"):  # the unfolded step, for comparison
        model.fold_mode = "never"
        label += ", general path"
    return model.eval(), label


def measure(
    steps: int = 60, device: str = "cuda", samples: int = 4096, fresh: bool = False
) -> list[dict[str, Any]]:
    """Median and p90 latency (ms) of `MPPI.act` for each combination, K = 4096, float32.

    `device="cpu"` with few samples and steps is a quick dry run of the script itself.
    """
    task = Figure8Task()
    x_ref, _ = task.reference(np.arange(steps + 40) * 0.02)
    rng = np.random.default_rng(0)
    rows = []
    for name, horizon, options in COMBOS:
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
            ctrl.act(x, i * 0.02, hist)
            _sync(device)
            times.append(time.perf_counter() - t0)
        ms = 1e3 * np.asarray(times[10:])  # the first calls capture and compile
        row = {"model": label, "T": horizon, **options}
        row |= {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90))}
        row["update_ms"] = _update_only(ctrl, x_ref[0], hist)
        print(row, flush=True)
        rows.append(row)
    return rows


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
        rows = []
        for r in run["rows"]:
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
    args = ap.parse_args()
    if args.dry_run:
        print(measure(steps=3, device="cpu", samples=64, fresh=args.fresh))
        return
    if args.from_json:
        runs = [json.loads(p.read_text()) for p in args.from_json]
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: pass --from-json with recorded runs instead")
        rows = measure(fresh=args.fresh)
        run = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows}
        if args.out:
            args.out.write_text(json.dumps(run, indent=1))
        runs = [run]
    text = section(runs)
    print(text)
    write_section("control-gpu", text)


if __name__ == "__main__":
    main()
