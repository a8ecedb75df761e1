"""Spring-mesh speed: env steps/s beside raw mj_step, and how the cost grows with the mesh.

Run: `.venv/bin/python benchmarks/bench_spring_mesh.py` (or `make bench`); writes the
"spring-mesh" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from collections.abc import Callable

import casadi as ca
import mujoco
import numpy as np
import torch

from metasym_control.bench import machine_description, markdown_table, write_section
from metasym_control.envs.spring_mesh import SpringMeshEnv, SpringMeshParams, rest_state
from metasym_control.models.spring_mesh_analytic import SpringMeshModel


def time_call(fn: Callable[[], object], repeat: int = 50, warmup: int = 5) -> np.ndarray:
    """CPU seconds of this thread taken by each of `repeat` calls of `fn` after `warmup`.

    Everything timed here runs single-threaded in the calling thread (MuJoCo; torch with one
    thread; CasADi), so thread CPU time is the cost without the waits of a machine shared with
    other processes, which inflate wall-clock medians unpredictably.
    """
    for _ in range(warmup):
        fn()
    out = np.empty(repeat)
    for i in range(repeat):
        t0 = time.thread_time()
        fn()
        out[i] = time.thread_time() - t0
    return out


def _median_us(samples: np.ndarray) -> float:
    return float(np.median(samples) * 1e6)


def bench_env(n: int, repeat: int) -> dict[str, float]:
    """Control-step and physics-step timings of an n×n mesh with its default control period."""
    env = SpringMeshEnv(params=SpringMeshParams(rows=n, cols=n))
    env.reset(seed=0)
    lay = env.params.layout
    a = np.zeros(env.action_space.shape[0], dtype=np.float32)
    m, d = env.model, env.data
    steps, raws = [], []
    for _ in range(4):  # interleaved blocks: other processes' load hits both alike
        steps.append(time_call(lambda: env.step(a), repeat=repeat, warmup=1))
        raws.append(
            time_call(lambda: mujoco.mj_step(m, d, nstep=env.n_substeps), repeat=repeat, warmup=1)
        )
    step_s, raw_s = np.concatenate(steps), np.concatenate(raws)
    env1 = SpringMeshEnv(params=env.params, n_substeps=1)
    env1.reset(seed=0)
    m1, d1 = env1.model, env1.data
    # Interleaved, so that load from other processes hits both alike: the wrapper's own cost
    # is the difference of a 1-substep env step and one raw mj_step.
    one, step1 = [], []
    for _ in range(5):
        one.append(time_call(lambda: mujoco.mj_step(m1, d1), repeat=4 * repeat, warmup=5))
        step1.append(time_call(lambda: env1.step(a), repeat=4 * repeat, warmup=5))
    one_s, step1_s = np.concatenate(one), np.concatenate(step1)
    return {
        "free": lay.n_free,
        "springs": lay.n_springs,
        "substeps": env.n_substeps,
        "dt": env.dt,
        "env_step_us": _median_us(step_s),
        "raw_us": _median_us(raw_s),
        "mj_step_us": _median_us(one_s),
        "env1_step_us": _median_us(step1_s),
    }


def bench_model(n: int, k: int, repeat: int) -> dict[str, float]:
    """Analytic-model control step (default substeps) for k samples, torch and CasADi."""
    p = SpringMeshParams(rows=n, cols=n)
    env_dt = SpringMeshEnv(params=p).dt
    model = SpringMeshModel(p, dt=env_dt)
    x = torch.tensor(rest_state(p)).expand(k, -1).clone()
    x += 0.05 * torch.randn_like(x)
    u = torch.zeros(k, model.action_dim, dtype=torch.float64)
    with torch.no_grad():
        t_s = time_call(lambda: model.step(x, u, {}), repeat=repeat, warmup=2)
    xs = ca.MX.sym("x", model.state_dim)
    us = ca.MX.sym("u", model.action_dim)
    f = ca.Function("f", [xs, us], [model.casadi_step(xs, us)])
    x0 = x[0].numpy()
    u0 = np.zeros(model.action_dim)
    c_s = time_call(lambda: f(x0, u0), repeat=repeat, warmup=2)
    return {
        "substeps": model.n_substeps,
        "maps": model.maps,
        "torch_ms": _median_us(t_s) / 1e3,
        "casadi_ms": _median_us(c_s) / 1e3,
    }


def main() -> None:
    """Run the benchmark, print the tables and write the BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, sizes 5 and 10")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeat = 3 if args.quick else 8
    sizes = (5, 10) if args.quick else (5, 10, 15, 20)
    t0 = time.perf_counter()
    load = os.getloadavg()

    env_rows = {n: bench_env(n, repeat) for n in sizes}
    base = env_rows[5]
    rows = []
    for n, r in env_rows.items():
        rows.append(
            [
                f"{n}×{n}",
                r["free"],
                r["springs"],
                r["substeps"],
                f"{r['dt']:.3f}",
                f"{1e6 / r['env_step_us']:.0f}",
                f"{1e6 / r['raw_us']:.0f}",
                f"{(r['env1_step_us'] - r['mj_step_us']):.1f}",
                f"{r['mj_step_us']:.2f}",
                f"{1e6 / r['mj_step_us']:.0f}",
                f"{1e6 / r['env1_step_us']:.0f}",
                f"{r['mj_step_us'] / base['mj_step_us']:.1f}× / "
                f"{r['springs'] / base['springs']:.1f}×",
            ]
        )
    env_table = markdown_table(
        [
            "mesh",
            "free",
            "springs",
            "substeps",
            "dt (s)",
            "env steps/s",
            "raw mj_step×substeps /s",
            "wrapper µs/step",
            "µs / mj_step",
            "mj_steps/s",
            "env steps/s (1 substep)",
            "mj_step cost / springs vs 5×5",
        ],
        rows,
    )

    model_rows = []
    for n in sizes:
        for k in (1, 256):
            r = bench_model(n, k, max(3, repeat // 2))
            model_rows.append(
                [
                    f"{n}×{n}",
                    k,
                    r["substeps"],
                    r["maps"],
                    f"{r['torch_ms']:.2f}",
                    f"{r['casadi_ms']:.2f}" if k == 1 else "—",
                ]
            )
    model_table = markdown_table(
        ["mesh", "K", "model substeps", "maps", "torch step (ms)", "CasADi step (ms)"],
        model_rows,
    )

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = "\n".join(
        [
            "## Spring mesh (`MetaSymSpringMesh-v1`)",
            "",
            f"Command: `.venv/bin/python benchmarks/bench_spring_mesh.py` — {stamp}.",
            f"Machine: {machine_description()} (model timings with 1 torch thread); load "
            f"average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end. All "
            "timings are medians of the calling thread's CPU time (everything here runs "
            "single-threaded), so waits on a shared machine do not inflate them; rates are "
            "their inverses.",
            "",
            "Environment control steps (default control period: `substeps` RK4 steps of "
            "2π/805 s, chosen so that 20 steps span a quarter of the slowest mode) beside raw "
            "`mj_step` on the same model; zero action. `wrapper µs/step` = a 1-substep env step "
            "minus one raw `mj_step`, timed interleaved (action check, state read-out, task "
            "cost, energy, info).",
            "",
            env_table,
            "",
            "Analytic model (`SpringMeshModel`, float64, default substeps h <= 0.05 s): one "
            "control step for K states; CasADi: one numeric evaluation of `casadi_step`.",
            "",
            model_table,
            "",
            f"Total benchmark time {time.perf_counter() - t0:.0f} s.",
        ]
    )
    print(md)
    path = write_section("spring-mesh", md)
    print(f"\nwrote section 'spring-mesh' of {path}")


if __name__ == "__main__":
    main()
