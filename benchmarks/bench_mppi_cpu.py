"""MPPI on the CPU: `act` phase by phase, beside the model's rollout alone and pytorch-mppi.

Every row of one table is measured in one run, side by side, under fixed settings: the
shipped float32 MetaSym, horizon 20, the control benchmark's noise (σ 0.2, β 2) and
temperature (0.05 of the cost spread), `trust_samples` on (the default), one torch thread
(`--threads`), 150 control steps of the figure-8 from seed 0. Writes the "mppi-cpu" section of
BENCHMARKS.md (`make bench-control` runs it after bench_control.py).

    python benchmarks/bench_mppi_cpu.py            # ~10 minutes on 2 cores (compilation included)
    python benchmarks/bench_mppi_cpu.py --quick    # K 256, 40 steps; no file write

Rows: `model.rollout` alone (eager and through `torch.compile`), this project's MPPI (eager
and compiled, with the exact plan rollout, the default, and the weighted plan), and the
`pytorch-mppi` package under `no_grad` on the same model (its dynamics eager and compiled).
Then the phase table (`MPPIConfig.profile`), the batched step of the analytic quadrotor
model beside MetaSym's (and the analytic model's error against MuJoCo at each dtype), and
how reproducible the actions are.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_control import MPPI_TUNED, WEIGHTS, PyTorchMPPIController

from metasym_control.bench import (
    machine_description,
    markdown_table,
    time_call,
    write_section,
)
from metasym_control.checkpoint import load_checkpoint
from metasym_control.closed_loop import ClosedLoopResult, run_closed_loop
from metasym_control.controllers.mppi import MPPI, PROFILE_PHASES, MPPIConfig
from metasym_control.dynamics import expand_memory
from metasym_control.envs.quadrotor import QuadrotorEnv, QuadrotorParams
from metasym_control.models.quadrotor_analytic import QuadrotorModel

HORIZON = 20
PHASES = PROFILE_PHASES


def _rollout(model: Any, x0: torch.Tensor, actions: torch.Tensor, memory: Any) -> torch.Tensor:
    """`model.rollout` (the function that `torch.compile` wraps for the compiled row)."""
    return model.rollout(x0, actions, memory)


def _step(model: Any, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A Markov model's batched step x (K, nx), u (K, nu) -> (K, nx)."""
    return model.step(x, u, {})[0]


def _step_with_memory(model: Any, x: torch.Tensor, u: torch.Tensor, memory: Any) -> torch.Tensor:
    """A model's batched step with a memory expanded to the batch."""
    return model.step(x, u, memory)[0]


def flight_window(model: Any, env: QuadrotorEnv) -> tuple[torch.Tensor, ...]:
    """A real history window (states, actions, validity) of the figure-8 after 40 steps of
    the cascaded baseline, so the rollouts alone run on the memory a flight gives."""
    from metasym_control.controllers.cascaded_pd import CascadedPD

    r = run_closed_loop(env, CascadedPD(QuadrotorParams(), env.task, dt=env.dt), 40, seed=0)
    n = model.history_len
    states = torch.as_tensor(r.states[-n - 1 : -1], dtype=torch.float32)
    actions = torch.as_tensor(r.actions[-n:], dtype=torch.float32)
    return states, actions, torch.ones(n, dtype=torch.bool)


def rollout_alone(model: Any, window: tuple[torch.Tensor, ...], k: int, compiled: bool) -> float:
    """Median ms of one rollout of K action sequences of length T from one state (the
    memory encoded once, as MPPI does), eager or through `torch.compile`."""
    fn = torch.compile(_rollout, dynamic=False) if compiled else _rollout
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        memory = expand_memory(model.init_memory(*window), (k,))
        x0 = window[0][-1].expand(k, -1)
        u = (0.2 * torch.randn(k, HORIZON, 4, generator=g)).clamp(-1.0, 1.0)
        ms = 1e3 * time_call(lambda: fn(model, x0, u, memory), repeat=100, warmup=3)
    return float(np.median(ms))


def fly(env: QuadrotorEnv, ctrl: Any, steps: int, hist: int) -> tuple[ClosedLoopResult, float]:
    """Warm-up flight (compilation) and the timed flight of `steps` from seed 0."""
    t0 = time.perf_counter()
    run_closed_loop(env, ctrl, 3, seed=1, history_len=hist)
    first = time.perf_counter() - t0
    return run_closed_loop(env, ctrl, steps, seed=0, history_len=hist), first


def analytic_error(dtype: torch.dtype, n: int = 40) -> float:
    """Largest one-step error of the analytic model (substeps 4) against MuJoCo over random
    tilted, spinning states with drag and wind, relative to the state change."""
    p = QuadrotorParams(
        mass=1.7, inertia=(0.04, 0.03, 0.065), drag=(0.3, 0.2, 0.4), wind=(1.0, -1.0, 0.2)
    )
    rng = np.random.default_rng(0)
    x = np.zeros((n, 13))
    x[:, 0:3] = rng.uniform(-1, 1, (n, 3)) + np.array([0.0, 0.0, 2.0])
    q = rng.normal(size=(n, 4))
    q[:, 0] = np.abs(q[:, 0]) + 0.6
    x[:, 3:7] = q / np.linalg.norm(q, axis=1, keepdims=True)
    x[:, 7:10] = rng.uniform(-3, 3, (n, 3))
    x[:, 10:13] = rng.uniform(-8, 8, (n, 3))
    u = rng.uniform(-1, 1, (n, 4)).astype(np.float32).astype(np.float64)
    env = QuadrotorEnv(task="hover", params=p)
    env.reset(seed=0)
    x_mj = np.empty_like(x)
    for i in range(n):
        env.set_state(x[i])
        env.step(u[i].astype(np.float32))
        x_mj[i] = env.get_state()
    model = QuadrotorModel(p, dtype=dtype)
    with torch.no_grad():
        pred = model.step(torch.tensor(x, dtype=dtype), torch.tensor(u, dtype=dtype), {})[0]
    change = np.linalg.norm(x_mj - x, axis=1)
    return float((np.linalg.norm(pred.double().numpy() - x_mj, axis=1) / change).max())


def step_rows(model: Any, window: tuple[torch.Tensor, ...], ks: tuple[int, ...]) -> list[list]:
    """Batched step, µs: MetaSym (float32) beside the analytic model with drag and wind
    (substeps 4, float32 and float64), eager and compiled."""
    rows = []
    p = QuadrotorParams(drag=(0.1, 0.12, 0.2), wind=(0.5, -0.2, 0.1))
    compiled = torch.compile(_step, dynamic=False)
    compiled_mem = torch.compile(_step_with_memory, dynamic=False)
    errors = {d: analytic_error(d) for d in (torch.float32, torch.float64)}
    for k in ks:
        with torch.no_grad():
            memory = expand_memory(model.init_memory(*window), (k,))
            x = window[0][-1].expand(k, -1).contiguous()
            u = torch.zeros(k, 4)
            eager = _time(_step_with_memory, model, x, u, memory)
            comp = _time(compiled_mem, model, x, u, memory)
            rows.append(
                ["MetaSym (shipped)", "float32", k, _us(eager), _us(comp), "—"]  # not physics
            )
            for dtype in (torch.float32, torch.float64):
                a = QuadrotorModel(p, dtype=dtype)
                xa, ua = x.to(dtype), u.to(dtype)
                eager = _time(_step, a, xa, ua)
                comp = _time(compiled, a, xa, ua)
                name = "analytic (substeps 4)"
                rows.append(
                    [name, str(dtype)[6:], k, _us(eager), _us(comp), f"{errors[dtype]:.1e}"]
                )
    return rows


def _time(fn: Any, *args: Any) -> np.ndarray:
    """Seconds of 200 calls of fn(*args) after 5 untimed ones."""
    return time_call(lambda: fn(*args), repeat=200, warmup=5)


def _us(seconds: np.ndarray) -> str:
    return f"{1e6 * float(np.median(seconds)):.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="K 256, 40 steps, no file write")
    ap.add_argument("--steps", type=int, default=None, help="closed-loop control steps")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (40 if args.quick else 150)
    ks = (256,) if args.quick else (256, 1024)
    t_start = time.perf_counter()
    load0 = _load()

    model, _ = load_checkpoint(WEIGHTS, expect_class="MetaSym", dtype=torch.float32)
    model.eval()
    env = QuadrotorEnv(task="figure8")
    task = env.task
    hist = int(model.history_len)
    window = flight_window(model, env)

    table: list[list[object]] = []
    phases: list[list[object]] = []
    actions: dict[str, np.ndarray] = {}
    summary: dict[tuple[int, str], float] = {}
    print("method | K | median ms | p90 ms | × rollout (compiled) | × rollout (eager) | RMSE m")
    for k in ks:
        base = {
            "eager": rollout_alone(model, window, k, compiled=False),
            "compiled": rollout_alone(model, window, k, compiled=True),
        }
        summary[(k, "rollout eager")] = base["eager"]
        summary[(k, "rollout compiled")] = base["compiled"]
        for name in ("eager", "compiled"):
            ms = base[name]
            table.append([f"`model.rollout` alone ({name})", k, f"{ms:.2f}", "—", "—", "—"])
            table[-1] += ["—", "—", "—"]
            print(f"rollout alone ({name}) | {k} | {ms:.2f}", flush=True)
        variants: list[tuple[str, dict[str, Any]]] = [
            ("MPPI, eager, exact plan (the defaults)", {}),
            ("MPPI, eager, weighted plan", {"plan_rollout": "weighted"}),
            ("MPPI, compiled, exact plan", {"compile": True}),
            ("MPPI, compiled, weighted plan", {"compile": True, "plan_rollout": "weighted"}),
        ]
        for label, kw in variants:
            cfg = MPPIConfig(horizon=HORIZON, num_samples=k, **{**MPPI_TUNED, **kw})
            r, first = fly(env, MPPI(model, task, cfg), steps, hist)
            actions[f"{label} K{k}"] = r.actions
            summary[(k, label)] = _row(table, label, k, r, env, base, first)
            if "eager" in label:  # the same configuration, phase by phase
                prof = MPPIConfig(
                    horizon=HORIZON, num_samples=k, profile=True, **{**MPPI_TUNED, **kw}
                )
                rp, _ = fly(env, MPPI(model, task, prof), min(steps, 60), hist)
                ph = {
                    p: float(np.median([i["phase_ms"].get(p, 0.0) for i in rp.infos[2:]]))
                    for p in PHASES
                }
                total = float(np.median(1e3 * rp.act_seconds[2:]))
                phases.append(
                    [label.split(", ", 1)[1].split(" (")[0], k, f"{total:.2f}"]
                    + [f"{ph[p]:.2f} ({100 * ph[p] / total:.0f}%)" for p in PHASES]
                )
        for label, comp in (
            ("pytorch-mppi (no_grad), eager dynamics", False),
            ("pytorch-mppi (no_grad), compiled dynamics", True),
        ):
            ctrl = PyTorchMPPIController(model, task, k, HORIZON, "cpu", torch.float32, comp)
            r, first = fly(env, ctrl, steps, hist)
            summary[(k, label)] = _row(table, label, k, r, env, base, first, fallbacks=False)

    # reproducibility: the same seed twice (compiled and eager), and compiled against eager
    k = ks[0]
    repro = []
    for kw in ({}, {"compile": True, "plan_rollout": "weighted"}):
        cfg = MPPIConfig(horizon=HORIZON, num_samples=k, **{**MPPI_TUNED, **kw})
        a = run_closed_loop(env, MPPI(model, task, cfg), 40, seed=0, history_len=hist).actions
        b = run_closed_loop(env, MPPI(model, task, cfg), 40, seed=0, history_len=hist).actions
        repro.append(float(np.abs(a - b).max() / np.abs(a).max()))
    cfg_e = MPPIConfig(horizon=HORIZON, num_samples=k, plan_rollout="weighted", **MPPI_TUNED)
    cfg_c = MPPIConfig(
        horizon=HORIZON, num_samples=k, plan_rollout="weighted", compile=True, **MPPI_TUNED
    )
    ue = run_closed_loop(env, MPPI(model, task, cfg_e), 10, seed=0, history_len=hist).actions
    uc = run_closed_loop(env, MPPI(model, task, cfg_c), 10, seed=0, history_len=hist).actions
    cross_first = float(np.abs(ue[0] - uc[0]).max() / np.abs(ue[0]).max())
    cross_all = float(np.abs(ue - uc).max() / np.abs(ue).max())

    steps_table = step_rows(model, window, ks)
    load1 = _load()
    elapsed = time.perf_counter() - t_start
    md = render(
        table,
        phases,
        steps_table,
        repro,
        (cross_first, cross_all),
        args,
        steps,
        load0,
        load1,
        elapsed,
    )
    print(md)
    if not (args.quick or args.no_write):
        print("wrote", write_section("mppi-cpu", md))


def _row(
    table: list[list[object]],
    label: str,
    k: int,
    r: ClosedLoopResult,
    env: QuadrotorEnv,
    base: dict[str, float],
    first: float,
    fallbacks: bool = True,
) -> float:
    """Append one closed-loop row; returns its median act ms."""
    ms = 1e3 * r.act_seconds[2:]
    med = float(np.median(ms))
    rmse = r.tracking_rmse(env) if not r.terminated else float("nan")
    fb = str(r.infos[-1].get("fallback_count", "—")) if fallbacks and r.infos else "—"
    table.append(
        [
            label,
            k,
            f"{med:.2f}",
            f"{np.percentile(ms, 90):.2f}",
            f"{med / base['compiled']:.2f}",
            f"{med / base['eager']:.2f}",
            f"{rmse:.3f}",
            fb,
            f"{first:.1f}",
        ]
    )
    print(" | ".join(str(c) for c in table[-1]), flush=True)
    return med


def _load() -> float:
    try:
        import os

        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def render(
    table: list[list[object]],
    phases: list[list[object]],
    steps_table: list[list],
    repro: list[float],
    cross: tuple[float, float],
    args: argparse.Namespace,
    steps: int,
    load0: float,
    load1: float,
    elapsed: float,
) -> str:
    """The markdown section."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python benchmarks/bench_mppi_cpu.py" + (" --quick" if args.quick else "")
    out = [
        "## MPPI on the CPU",
        "",
        f"`{cmd}` (`make bench-control`) — {now}; {machine_description()}, "
        f"{args.threads} torch thread(s) for every row; load average {load0:.1f} at "
        f"the start, {load1:.1f} at the end; {elapsed / 60:.0f} min in all.",
        "",
        f"Settings of every row: the shipped MetaSym in float32, horizon T = {HORIZON}, noise "
        f"σ = {MPPI_TUNED['noise_sigma']} coloured with β = {MPPI_TUNED['noise_beta']}, "
        f"temperature {MPPI_TUNED['temperature']} of the cost spread, `trust_samples` on, one "
        f"action per command; {steps} control steps of the figure-8 (seed 0). Latency = wall "
        "time of `act` (reference and history copy, history encoding, noise, rollout, costs, "
        "update, plan checks, host transfer), median and 90th percentile. The rollout alone: "
        "`model.rollout` of K sequences from one state with the memory encoded once (eager, "
        "and through `torch.compile(dynamic=False)`). `first s`: the first three steps, "
        "compilation included (inductor's on-disk cache shortens it on later runs). "
        "pytorch-mppi gets the model's `step` as its dynamics (eager, or compiled), white noise "
        "of the same σ and its own absolute temperature λ = 0.01 (it has no normalised one; "
        "the temperature does not change the work).",
        "",
        markdown_table(
            [
                "method",
                "K",
                "median ms",
                "p90 ms",
                "× rollout alone (compiled)",
                "× rollout alone (eager)",
                "RMSE m",
                "fallbacks",
                "first s",
            ],
            table,
        ),
        "",
        "Where an eager `act` goes (`MPPIConfig(profile=True)`: the update run phase by phase; "
        "median ms of each phase over the steps, share of the median `act`):",
        "",
        markdown_table(["plan", "K", "act ms", *PHASES], phases),
        "",
        "Batched step of one control period (µs, median; the analytic model with drag and "
        "wind; `error`: its largest one-step error against MuJoCo relative to the state change, "
        "random tilted and spinning states):",
        "",
        markdown_table(
            ["model", "dtype", "K", "eager µs", "compiled µs", "error vs MuJoCo"], steps_table
        ),
        "",
        f"Reproducibility (K = {table[2][1] if len(table) > 2 else '—'}, 40 steps): the same "
        f"seed twice gives actions equal to {repro[0]:.1e} (eager) and {repro[1]:.1e} "
        "(compiled) of the largest action; compiled against eager (weighted plan) differ by "
        f"{cross[0]:.1e} at the first step and {cross[1]:.1e} over 10 steps (float32 rounding "
        "of fused kernels, amplified by the closed loop; see docs/controllers.md).",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    main()
