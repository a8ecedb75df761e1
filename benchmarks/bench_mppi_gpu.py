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
from metasym_control.control import History
from metasym_control.controllers.mppi import MPPI, MPPIConfig
from metasym_control.envs.quadrotor import Figure8Task
from metasym_control.models.baselines import MLPModel
from metasym_control.models.coordinates import quadrotor_coordinates
from metasym_control.models.metasym import MetaSym

# (model, horizon, MPPI options)
COMBOS: list[tuple[str, int, dict[str, Any]]] = [
    ("MLP 2x128", 20, {}),
    ("MLP 2x128", 30, {}),
    ("MLP 2x128", 30, {"cuda_graph": True}),
    ("MLP 2x128", 30, {"cuda_graph": True, "plan_rollout": "weighted"}),
    ("MLP 2x128", 30, {"cuda_graph": True, "plan_rollout": "weighted", "compile": True}),
    ("MetaSym default", 30, {"cuda_graph": True}),
    ("MetaSym default", 30, {"cuda_graph": True, "plan_rollout": "weighted", "compile": True}),
]


def _model(name: str, dtype: torch.dtype) -> Any:
    if name.startswith("MLP"):
        return MLPModel(13, 4, 0.02, device="cuda", dtype=dtype).eval()
    # latency does not depend on the weights: the default architecture, freshly initialised
    return MetaSym(13, 4, 0.02, coords=quadrotor_coordinates(), device="cuda", dtype=dtype).eval()


def measure(steps: int = 60) -> list[dict[str, Any]]:
    """Median and p90 latency (ms) of `MPPI.act` for each combination, K = 4096, float32."""
    task = Figure8Task()
    x_ref, _ = task.reference(np.arange(steps + 40) * 0.02)
    rng = np.random.default_rng(0)
    rows = []
    for name, horizon, options in COMBOS:
        model = _model(name, torch.float32)
        hist = History(model.history_len, 13, 4)
        for _ in range(model.history_len):
            hist.push(x_ref[0], np.full(4, task.hover_action))
        cfg = MPPIConfig(horizon=horizon, num_samples=4096, noise_beta=2.0, **options)
        ctrl = MPPI(model, task, cfg, device="cuda", dtype=torch.float32)
        times = []
        for i in range(steps + 10):
            x = x_ref[i].copy()
            x[:3] += 0.05 * rng.standard_normal(3)
            t0 = time.perf_counter()
            ctrl.act(x, i * 0.02, hist)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        ms = 1e3 * np.asarray(times[10:])  # the first calls capture and compile
        row = {"model": name, "T": horizon, **options}
        row |= {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90))}
        print(row, flush=True)
        rows.append(row)
    return rows


def section(runs: list[dict[str, Any]]) -> str:
    """The "control-gpu" markdown section from runs {device, torch, rows}."""
    out = [
        "## Control: MPPI on a GPU (`benchmarks/bench_mppi_gpu.py`)",
        "",
        "K = 4096 samples, float32, figure-8 task, latency of `MPPI.act` (history encoding, "
        "sampling, rollout, softmin update, one device-to-host copy), after 10 warm-up calls. "
        "MetaSym rows use the default architecture (latency does not depend on the weights). "
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
                ]
            )
        out.append(markdown_table(["model", "T", "mode", "median ms", "p90 ms"], rows))
    return "\n".join(out)


def main() -> None:
    """Measure on CUDA, or render recorded runs."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, help="write the measured rows here (JSON)")
    ap.add_argument("--from-json", type=Path, nargs="*", help="recorded runs to render")
    args = ap.parse_args()
    if args.from_json:
        runs = [json.loads(p.read_text()) for p in args.from_json]
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: pass --from-json with recorded runs instead")
        rows = measure()
        run = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows}
        if args.out:
            args.out.write_text(json.dumps(run, indent=1))
        runs = [run]
    text = section(runs)
    print(text)
    write_section("control-gpu", text)


if __name__ == "__main__":
    main()
