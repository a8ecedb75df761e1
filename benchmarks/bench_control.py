"""Benchmark of the MPC controllers on the quadrotor figure-8: per-step latency and tracking RMSE.

Rows: MPPI (K = 256 / 1024 / 4096) with the default learned model, MPPI with the analytic
model, `pytorch-mppi` on the same model, horizon and K, NMPC (ipopt, RTI) with the analytic
model, RTI (and a 5-iteration SQP) with the learned model, and the cascaded baseline. The
default learned model is MetaSym's shipped checkpoint when it exists, else an MLP stand-in
fitted here to the analytic model (labelled as such). Writes the "control" section of
BENCHMARKS.md.

    python benchmarks/bench_control.py             # CPU, ~5 minutes on 2 cores
    python benchmarks/bench_control.py --quick     # fewer steps and sizes
    python benchmarks/bench_control.py --device cuda   # adds the GPU MPPI rows (float32)
    python benchmarks/bench_control.py --device cuda --skip-cpu --json gpu.json
                                        # the GPU rows alone (no CasADi needed), as JSON that
                                        # bench_mppi_gpu.py --from-json renders
    python benchmarks/bench_control.py --only RTI,ipopt   # only rows whose label matches
                                                          # (case-insensitive; no file write)

NMPC rows also report where an RTI step's time goes (median per step: linearisation, cost
blocks and QP data, QP solve with its checks, the rest of `act`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metasym_control.bench import machine_description, markdown_table, write_section
from metasym_control.closed_loop import run_closed_loop
from metasym_control.controllers.cascaded_pd import CascadedPD
from metasym_control.controllers.common import history_memory
from metasym_control.controllers.mppi import MPPI, MPPIConfig
from metasym_control.dynamics import expand_memory
from metasym_control.envs.quadrotor import QuadrotorEnv, QuadrotorParams
from metasym_control.models.baselines import MLPModel
from metasym_control.models.quadrotor_analytic import QuadrotorModel

WEIGHTS = (
    Path(__file__).resolve().parent.parent
    / "metasym_control"
    / "weights"
    / "metasym_quadrotor.safetensors"
)
MPPI_TUNED = {"noise_sigma": 0.2, "noise_beta": 2.0, "temperature": 0.05}


@dataclass
class Row:
    """One line of the table."""

    controller: str
    model: str
    device: str
    k: str
    horizon: int
    median_ms: float
    p90_ms: float
    rmse: float | None
    fallbacks: int | None
    steps: int
    breakdown: dict[str, float] | None = None  # median ms per phase of an NMPC step

    def cells(self) -> list[object]:
        rmse = "—" if self.rmse is None else f"{self.rmse:.3f}"
        fb = "—" if self.fallbacks is None else str(self.fallbacks)
        return [
            self.controller,
            self.model,
            self.device,
            self.k,
            self.horizon,
            f"{self.median_ms:.2f}",
            f"{self.p90_ms:.2f}",
            rmse,
            fb,
            self.steps,
        ]


# ------------------------------------------------------------------------------ models
def default_learned_model(
    analytic: QuadrotorModel, task: Any, fit_seconds: float, dtype: torch.dtype
) -> tuple[Any, str]:
    """MetaSym's shipped checkpoint if present, else an MLP fitted to the analytic model."""
    if WEIGHTS.exists():
        from metasym_control.checkpoint import load_checkpoint

        model, _ = load_checkpoint(WEIGHTS, expect_class="MetaSym", dtype=dtype)
        model.eval()
        return model, "MetaSym (shipped)"
    return fit_mlp_standin(analytic, task, fit_seconds, dtype), "MLP 2×128 stand-in"


def fit_mlp_standin(
    analytic: QuadrotorModel, task: Any, seconds: float, dtype: torch.dtype
) -> MLPModel:
    """Fit the MLP baseline to one-step transitions of the analytic model (the stand-in for
    MetaSym until its weights ship): states drawn around the figure-8's flight envelope,
    actions around hover; Adam on the normalised one-step error for `seconds` of wall time."""
    g = torch.Generator().manual_seed(0)
    n = 60_000
    t = torch.rand(n, generator=g, dtype=torch.float64) * 2 * np.pi
    x_ref, _ = task.reference(t.numpy())
    x = torch.as_tensor(x_ref)
    x[:, 0:3] += 0.3 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    half = 0.15 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    q = torch.cat([torch.ones(n, 1, dtype=torch.float64), half], dim=1)
    x[:, 3:7] = q / q.norm(dim=1, keepdim=True)
    x[:, 7:10] += 0.5 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    x[:, 10:13] = 1.0 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    u = (task.hover_action + 0.25 * torch.randn(n, 4, generator=g, dtype=torch.float64)).clamp(
        -1, 1
    )
    with torch.no_grad():
        x1 = analytic.step(x, u, {})[0]
    dx = x1 - x
    model = MLPModel(13, 4, analytic.dt, dtype=torch.float64, env_id="MetaSymQuadrotor-v0")
    stats = {"count": np.array([float(n)])}
    for key, a in (("x", x), ("u", u), ("dx", dx)):
        stats[key + "_sum"] = a.sum(0).numpy()
        stats[key + "_sq"] = (a * a).sum(0).numpy()
    stats["x_min"], stats["x_max"] = x.min(0).values.numpy(), x.max(0).values.numpy()
    model.set_normalization(stats, margin=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched_end = time.perf_counter() + seconds
    it = 0
    while time.perf_counter() < sched_end:
        idx = torch.randint(0, n, (2048,), generator=g)
        pred = model.step(x[idx], u[idx], {})[0]
        loss = (((pred - x1[idx]) / model.delta_std) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        it += 1
        if it % 500 == 0:
            for group in opt.param_groups:
                group["lr"] *= 0.7
    model.eval()
    model.to(dtype=dtype)
    print(f"MLP stand-in: {it} Adam steps, final normalised one-step MSE {loss.item():.2e}")
    return model


# ------------------------------------------------------------------------------ pytorch-mppi
def _model_step(model: Any, x: torch.Tensor, u: torch.Tensor, memory: Any) -> torch.Tensor:
    """`model.step`'s next state (K, nx) of x (K, nx), u (K, nu): pytorch-mppi's dynamics."""
    return model.step(x, u, memory)[0]


class PyTorchMPPIController:
    """`pytorch_mppi.MPPI` behind the `Controller` protocol, called under torch.no_grad().

    `compiled_step` gives it the model's step through `torch.compile` (the same compiler
    this project's MPPI may use), so a comparison can be made at equal footing.
    """

    def __init__(
        self,
        model: Any,
        task: Any,
        k: int,
        horizon: int,
        device: str,
        dtype: torch.dtype,
        compiled_step: bool = False,
    ) -> None:
        from pytorch_mppi import MPPI as PMPPI

        step = torch.compile(_model_step, dynamic=False) if compiled_step else _model_step

        self.model, self.task, self.k, self.horizon = model, task, k, horizon
        self.device, self.dtype = torch.device(device), dtype
        self.last_plan = None
        self.last_info: dict[str, Any] = {}
        self._ref: tuple[torch.Tensor, torch.Tensor] | None = None
        self._memory: dict[str, torch.Tensor] = {}
        sigma = MPPI_TUNED["noise_sigma"] ** 2 * torch.eye(4, dtype=dtype, device=self.device)
        hover = torch.full((4,), task.hover_action, dtype=dtype, device=self.device)

        def dynamics(x: torch.Tensor, u: torch.Tensor, t: int) -> torch.Tensor:
            # the history window, encoded once per control step, shared by the K samples
            memory = expand_memory(self._memory, tuple(x.shape[:-1]))
            return step(self.model, x, u, memory)

        def running(x: torch.Tensor, u: torch.Tensor, t: int) -> torch.Tensor:
            assert self._ref is not None
            return task.running_cost(x, u, self._ref[0][t + 1], self._ref[1][t])

        def terminal(xs: torch.Tensor, us: torch.Tensor) -> torch.Tensor:
            assert self._ref is not None
            return task.terminal_cost(xs[..., -1, :], self._ref[0][-1])

        self._mk = lambda: PMPPI(
            dynamics,
            running,
            13,
            sigma,
            num_samples=k,
            horizon=horizon,
            device=self.device,
            terminal_state_cost=terminal,
            lambda_=1e-2,
            u_min=-torch.ones(4, dtype=dtype),
            u_max=torch.ones(4, dtype=dtype),
            u_init=hover,
            step_dependent_dynamics=True,
        )
        self.ctrl = self._mk()

    def reset(self) -> None:
        # pytorch-mppi draws its noise from the global torch generator: seed it, so the row
        # does not depend on which rows ran before it
        torch.manual_seed(0)
        self.ctrl = self._mk()

    def set_model(self, model: Any) -> None:
        self.model = model

    def act(self, state: np.ndarray, t: float, history: Any) -> np.ndarray:
        times = t + self.model.dt * np.arange(self.horizon + 1)
        xr, ur = self.task.reference(times)
        self._ref = (
            torch.as_tensor(xr, device=self.device, dtype=self.dtype),
            torch.as_tensor(ur, device=self.device, dtype=self.dtype),
        )
        with torch.no_grad():
            self._memory = history_memory(self.model, history, self.device, self.dtype)
            x = torch.as_tensor(state, device=self.device, dtype=self.dtype)
            u = self.ctrl.command(x)
        return np.clip(u.cpu().double().numpy(), -1.0, 1.0)


# ------------------------------------------------------------------------------ runs
ONLY: list[str] = []  # label filters from --only (empty: every row)
SKIP_CPU: list[bool] = [False]  # --skip-cpu: the GPU rows alone


def wanted(name: str, model_name: str) -> bool:
    """Whether the row `name` / `model_name` passes the --only filters."""
    label = f"{name} {model_name}".lower()
    return not ONLY or any(f in label for f in ONLY)


def phase_breakdown(infos: list[dict[str, Any]], act_ms: np.ndarray) -> dict[str, float] | None:
    """Median ms per phase of the NMPC steps that solved (no fallback): linearisation, cost
    blocks and QP data, QP solve and checks, and the rest of `act` (history encoding,
    reference, warm start, plan check)."""
    keys = ("linearize_seconds", "cost_seconds", "qp_seconds", "solve_seconds")
    ok = [
        (i, a)
        for i, a in zip(infos, act_ms)
        if all(k in i for k in keys) and i.get("fallback") == "none"
    ]
    if not ok:
        return None
    col = {k: np.array([1e3 * i[k] for i, _ in ok]) for k in keys}
    rest = np.array([a for _, a in ok]) - col["solve_seconds"]
    return {
        "linearize": float(np.median(col["linearize_seconds"])),
        "cost+data": float(np.median(col["cost_seconds"])),
        "qp": float(np.median(col["qp_seconds"])),
        "rest": float(np.median(rest)),
    }


def closed_loop_row(
    name: str,
    model_name: str,
    device: str,
    k: str,
    horizon: int,
    make: Callable[[], Any],
    env: QuadrotorEnv,
    steps: int,
    history_len: int = 0,
) -> Row | None:
    """Fly `make()` on the figure-8 for `steps` control steps; time every act (None: the row
    is filtered out by --only)."""
    if not wanted(name, model_name) or (SKIP_CPU[0] and device == "cpu"):
        return None
    ctrl = make()
    run_closed_loop(env, ctrl, 3, seed=1, history_len=history_len)  # warm-up (JIT, graphs)
    r = run_closed_loop(env, ctrl, steps, seed=0, history_len=history_len)
    ms = 1e3 * r.act_seconds[2:]
    fb = r.infos[-1].get("fallback_count") if r.infos else None
    rmse = r.tracking_rmse(env) if not r.terminated else float("nan")
    row = Row(
        name,
        model_name,
        device,
        k,
        horizon,
        float(np.median(ms)),
        float(np.percentile(ms, 90)),
        rmse,
        fb,
        len(r.actions),
        phase_breakdown(r.infos[2:], ms),
    )
    extra = ""
    if row.breakdown:
        extra = "  [" + ", ".join(f"{k} {v:.2f}" for k, v in row.breakdown.items()) + " ms]"
    print(" | ".join(str(c) for c in row.cells()) + extra, flush=True)
    return row


def gpu_rows(
    learned: Any,
    learned_name: str,
    env: QuadrotorEnv,
    steps: int,
    horizon: int,
    dev: str,
    name: str,
    with_compile: bool = True,
) -> list[Row]:
    """MPPI rows on the device `dev` (named `name`), float32: K 256 / 1024 / 4096 at the
    table's horizon, then the goal's setting (default model, K 4096, T 30) eager, graphed,
    compiled (`with_compile`) and with the fused rollout (MetaSym), and pytorch-mppi on the
    same model."""
    task = env.task
    hist = int(learned.history_len)
    rows: list[Row] = []

    def add(row: Row | None) -> None:
        if row is not None:
            rows.append(row)

    gpu_model = copy.deepcopy(learned).to(device=dev, dtype=torch.float32)
    fused = hasattr(gpu_model, "rollout_kernel")  # MetaSym: the one-launch rollout
    graph_w = {"cuda_graph": True, "plan_rollout": "weighted"}
    variants: list[tuple[int, int, str, dict[str, Any], str]] = [
        (k, horizon, "MPPI (CUDA graph, weighted plan)", graph_w, "torch")
        for k in (256, 1024, 4096)
    ]
    variants += [
        (4096, 30, "MPPI (eager)", {}, "torch"),
        (4096, 30, "MPPI (CUDA graph)", {"cuda_graph": True}, "torch"),
        (4096, 30, "MPPI (CUDA graph, weighted plan)", graph_w, "torch"),
    ]
    if fused:
        variants += [
            (k, t, "MPPI (CUDA graph, weighted plan, fused rollout)", graph_w, "triton")
            for k, t in ((1024, horizon), (4096, horizon), (4096, 30))
        ]
        variants.append(
            (4096, 30, "MPPI (CUDA graph, weighted plan, fused tf32)", graph_w, "triton-tf32")
        )
    if with_compile:  # 30-90 s of compilation on the first call
        variants.append(
            (
                4096,
                30,
                "MPPI (compiled, CUDA graph, weighted plan)",
                {**graph_w, "compile": True},
                "torch",
            )
        )
    for k, t_h, label, kw, kernel in variants:
        if fused:
            gpu_model.rollout_kernel = kernel

        def make(k: int = k, t_h: int = t_h, kw: dict[str, Any] = kw) -> Any:
            cfg = MPPIConfig(horizon=t_h, num_samples=k, **{**MPPI_TUNED, **kw})
            return MPPI(gpu_model, task, cfg, device=dev, dtype=torch.float32)

        try:
            add(closed_loop_row(label, learned_name, name, str(k), t_h, make, env, steps, hist))
        except Exception as exc:  # one variant failing must not lose the others
            print(f"{label} K {k} T {t_h}: failed: {type(exc).__name__}: {exc}", flush=True)
    if fused:
        gpu_model.rollout_kernel = "torch"
    add(
        closed_loop_row(
            "pytorch-mppi (no_grad)",
            learned_name,
            name,
            "4096",
            30,
            lambda: PyTorchMPPIController(gpu_model, task, 4096, 30, dev, torch.float32),
            env,
            steps,
            hist,
        )
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU MPPI rows")
    ap.add_argument("--quick", action="store_true", help="fewer steps, K and rows")
    ap.add_argument("--steps", type=int, default=None, help="closed-loop control steps")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: on a 2-core machine the small batched ops run faster on "
        "one thread, and CasADi/MuJoCo use the other core's time)",
    )
    ap.add_argument("--fit-seconds", type=float, default=None, help="MLP stand-in fit time")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--skip-cpu", action="store_true", help="only the GPU rows; implies --no-write")
    ap.add_argument("--json", type=Path, help="also write the rows here (JSON)")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated, case-insensitive substrings of the row labels (controller and "
        "model) to run, e.g. 'RTI,ipopt'; implies --no-write",
    )
    args = ap.parse_args()
    ONLY[:] = [f.strip().lower() for f in args.only.split(",") if f.strip()]
    SKIP_CPU[0] = args.skip_cpu
    torch.set_num_threads(args.threads)
    steps = args.steps or (60 if args.quick else 150)
    fit_s = args.fit_seconds if args.fit_seconds is not None else (10.0 if args.quick else 40.0)
    horizon = 20
    dtype = torch.float64

    params = QuadrotorParams()
    env = QuadrotorEnv(task="figure8", params=params)
    task = env.task
    analytic = QuadrotorModel(params)
    learned, learned_name = default_learned_model(analytic, task, fit_s, dtype)
    hist = int(learned.history_len)
    rows: list[Row] = []

    def add(row: Row | None) -> None:
        if row is not None:
            rows.append(row)

    print("controller | model | device | K | T | median ms | p90 ms | RMSE m | fallbacks | steps")

    def mppi(model: Any, k: int, t: int, device: str = "cpu", **kw: Any) -> Callable[[], Any]:
        cfg = MPPIConfig(horizon=t, num_samples=k, **{**MPPI_TUNED, **kw})
        return lambda: MPPI(model, task, cfg, device=device, dtype=dtype)

    # sampling-based MPC on the CPU
    ks = (256, 1024) if args.quick else (256, 1024, 4096)
    for k in ks:
        mppi_steps = steps if k < 4096 or not args.quick else max(30, steps // 3)
        add(
            closed_loop_row(
                "MPPI",
                learned_name,
                "cpu",
                str(k),
                horizon,
                mppi(learned, k, horizon),
                env,
                mppi_steps,
                hist,
            )
        )
    add(
        closed_loop_row(
            "MPPI",
            "analytic",
            "cpu",
            "256",
            horizon,
            mppi(analytic, 256, horizon),
            env,
            steps if not args.quick else 30,
        )
    )
    k = 1024
    add(
        closed_loop_row(
            "pytorch-mppi (no_grad)",
            learned_name,
            "cpu",
            str(k),
            horizon,
            lambda: PyTorchMPPIController(learned, task, k, horizon, "cpu", dtype),
            env,
            steps,
            learned.history_len,
        )
    )

    # gradient-based MPC
    def nmpc(model: Any, **kw: Any) -> Callable[[], Any]:
        def make() -> Any:
            from metasym_control.controllers.nmpc import NMPC, NMPCConfig  # CasADi: CPU rows

            return NMPC(model, task, NMPCConfig(horizon=horizon, **kw), dtype=dtype)

        return make

    add(
        closed_loop_row(
            "NMPC ipopt", "analytic", "cpu", "—", horizon, nmpc(analytic, mode="ipopt"), env, steps
        )
    )
    for qp in ("qrqp", "hpipm"):
        add(
            closed_loop_row(
                f"NMPC RTI ({qp})",
                "analytic",
                "cpu",
                "—",
                horizon,
                nmpc(analytic, qp_solver=qp),
                env,
                steps,
            )
        )
    lins = [("qrqp", "fd"), ("hpipm", "fd")] + ([] if args.quick else [("qrqp", "jacrev")])
    for qp, lin in lins:
        add(
            closed_loop_row(
                f"NMPC RTI ({qp}, {lin} Jacobians)",
                learned_name,
                "cpu",
                "—",
                horizon,
                nmpc(learned, linearization=lin, qp_solver=qp),
                env,
                steps,
                hist,
            )
        )
    add(
        closed_loop_row(
            "NMPC SQP ×5 (full solve)",
            learned_name,
            "cpu",
            "—",
            horizon,
            nmpc(learned, sqp_iters=5),
            env,
            steps,
            hist,
        )
    )
    add(
        closed_loop_row(
            "cascaded baseline",
            "physics params",
            "cpu",
            "—",
            0,
            lambda: CascadedPD(params, task, dt=env.dt),
            env,
            steps,
        )
    )

    if args.device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(args.device))
        rows += gpu_rows(
            learned, learned_name, env, steps, horizon, args.device, name, not args.quick
        )

    header = [
        "controller",
        "model",
        "device",
        "K",
        "T",
        "median ms",
        "p90 ms",
        "RMSE m",
        "fallbacks",
        "steps",
    ]
    table = markdown_table(header, [r.cells() for r in rows])
    by_name = {r.controller: r for r in rows}
    ipopt = by_name.get("NMPC ipopt")
    goals = []
    for qp in ("qrqp", "hpipm"):
        rti_l = by_name.get(f"NMPC RTI ({qp}, fd Jacobians)")
        if rti_l is not None:
            goals.append(
                f"- RTI ({qp}) with the default learned model ({learned_name}), horizon 20, "
                f"{args.threads} CPU threads: median {rti_l.median_ms:.2f} ms per step "
                "(goal < 5 ms)."
            )
        rti = by_name.get(f"NMPC RTI ({qp})")
        if rti is not None and ipopt is not None and rti.rmse and ipopt.rmse:
            goals.append(
                f"- RTI ({qp}) tracking RMSE {rti.rmse:.4f} m vs full ipopt {ipopt.rmse:.4f} m "
                f"with the analytic model: {100 * (rti.rmse / ipopt.rmse - 1):+.1f}% "
                "(goal within 10%)."
            )
    split = [r for r in rows if r.breakdown]
    breakdown = markdown_table(
        ["controller", "model", "linearisation", "cost + QP data", "QP solve + checks", "rest"],
        [
            [r.controller, r.model, *(f"{v:.2f}" for v in r.breakdown.values())]  # type: ignore[union-attr]
            for r in split
        ],
    )
    gpu = [
        r
        for r in rows
        if r.device not in ("cpu",) and r.controller.startswith("MPPI") and r.horizon == 30
    ]
    # the goal's row: the default model as it runs on CUDA by default (the float32-accurate
    # fused rollout, `MetaSym.rollout_kernel` "auto"), else the fastest float32-accurate row
    accurate = [r for r in gpu if "tf32" not in r.controller]
    if accurate:
        default = [r for r in accurate if "fused rollout" in r.controller]
        best = min(default or accurate, key=lambda r: r.median_ms)
        goals.append(
            f"- MPPI K 4096, T 30 on {best.device}: {best.controller} median "
            f"{best.median_ms:.2f} ms (goal < 2 ms)."
        )
    else:
        goals.append("- MPPI K 4096, T 30 on a GPU: not measured in this run (`--device cuda`).")
    md = "\n".join(
        [
            "## Control: MPC on the quadrotor figure-8",
            "",
            f"`python benchmarks/bench_control.py{' --quick' if args.quick else ''}"
            f"{' --device ' + args.device if args.device != 'cpu' else ''}` — "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine_description()}.",
            "",
            f"Figure-8 (x = 1.25 sin t, z = 1.5 + 0.75 sin 2t), X2 quadrotor, {steps} control "
            f"steps of 20 ms, seed 0, float64 (GPU rows: float32). "
            "Latency = wall time of `act` (history encoding, reference, solve, fallback "
            "checks). RMSE = position error over the run, including the start from rest. "
            f"The learned model is {learned_name}"
            + (
                ""
                if "MetaSym" in learned_name
                else " (MetaSym's shipped weights were absent; an MLP fitted to the analytic "
                "model stands in)"
            )
            + ".",
            "",
            table,
            "",
            "Where an NMPC step's time goes (median ms over the steps without a fallback; "
            "`rest` = history encoding, reference, warm start and plan check):",
            "",
            breakdown,
            "",
            *goals,
        ]
    )
    print()
    print("\n".join(goals))
    if args.json:
        on_gpu = args.device.startswith("cuda") and torch.cuda.is_available()
        run = {
            "device": torch.cuda.get_device_name(0) if on_gpu else args.device,
            "torch": torch.__version__,
            "closed_loop": True,
            "steps": steps,
            "model": learned_name,
            "rows": [dataclasses.asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(run, indent=1))
    if not args.no_write and not ONLY and not args.skip_cpu:
        path = write_section("control", md)
        print(f"wrote section 'control' of {path}")


if __name__ == "__main__":
    main()
