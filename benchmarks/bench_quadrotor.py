"""Benchmark of MetaSymQuadrotor-v0: env steps/s beside raw mj_step, and where the time goes.

Run: `make bench` (or `python benchmarks/bench_quadrotor.py`); writes section
"quadrotor-env" of BENCHMARKS.md.
"""

from __future__ import annotations

import datetime
import time

import gymnasium as gym
import mujoco
import numpy as np
import torch

import metasym_control  # noqa: F401  (registers the ids)
from metasym_control.bench import machine_description, markdown_table, time_call, write_section
from metasym_control.data import collect_quadrotor_dataset
from metasym_control.envs.quadrotor import QuadrotorEnv, QuadrotorParams
from metasym_control.models.quadrotor_analytic import QuadrotorModel

N_STEPS = 20000


def _per_step(fn, n: int) -> float:
    """Fastest of 7 repeats of the seconds per call of `fn` called n times.

    The minimum, not the median: on a shared machine other processes only ever add time.
    """
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return float(np.min(times))


def bench_single(task: str = "figure8") -> tuple[list[list[object]], dict[str, float]]:
    """Raw physics, the unwrapped env, the registered (wrapped) env and a breakdown."""
    p = QuadrotorParams()
    env = QuadrotorEnv(task=task, params=p, init_noise=0.0)
    env.reset(seed=0)
    a = np.full(4, p.hover_action(), dtype=np.float32)
    a64 = a.astype(np.float64)

    # raw physics: the same compiled model and substeps, no Python around it
    m, d = env.model, mujoco.MjData(env.model)
    mujoco.mj_resetData(m, d)
    d.qpos[2] = 1.5
    d.ctrl[:] = a64
    raw = _per_step(lambda: mujoco.mj_step(m, d, env.substeps), N_STEPS)

    n_ep = 500

    def env_block() -> None:
        env.reset(seed=0)
        for _ in range(n_ep):
            env.step(a)

    unwrapped = _per_step(env_block, 1) / n_ep

    wrapped_env = gym.make("MetaSymQuadrotor-v0", task=task, params=p, init_noise=0.0)

    def wrapped_block() -> None:
        wrapped_env.reset(seed=0)
        for _ in range(n_ep):
            wrapped_env.step(a)

    wrapped = _per_step(wrapped_block, 1) / n_ep

    # breakdown: each part of `QuadrotorEnv.step` alone
    env.reset(seed=0)
    x = env.get_state()
    t = 1.0
    pr, vr = env._reference_pv(t)
    xr, ur = env._x_ref, env._u_ref
    parts = {
        "action check": _per_step(lambda: env.check_action(a), N_STEPS),
        "physics (mj_step × substeps)": raw,
        "state read": _per_step(env.get_state, N_STEPS),
        "reference": _per_step(lambda: env._reference_pv(t), N_STEPS),
        "observation": _per_step(lambda: env._observe(x, (pr, vr)), N_STEPS),
        "reward (task cost)": _per_step(
            lambda: env.task.running_cost_numpy(x, a64, xr, ur), N_STEPS
        ),
        "termination + info": _per_step(
            lambda: (env._termination(x), env._info(x, pr, False)), N_STEPS
        ),
    }
    parts["rest of step()"] = max(unwrapped - sum(parts.values()), 0.0)
    parts["Gymnasium wrappers (make)"] = max(wrapped - unwrapped, 0.0)
    rows = [
        [
            "raw mj_step (same model, same control step)",
            f"{raw * 1e6:.1f}",
            f"{1 / raw:,.0f}",
            "1.00",
        ],
        [
            "QuadrotorEnv.step (unwrapped)",
            f"{unwrapped * 1e6:.1f}",
            f"{1 / unwrapped:,.0f}",
            f"{unwrapped / raw:.2f}",
        ],
        [
            "gymnasium.make(...).step (TimeLimit, checker)",
            f"{wrapped * 1e6:.1f}",
            f"{1 / wrapped:,.0f}",
            f"{wrapped / raw:.2f}",
        ],
    ]
    return rows, parts


def bench_vector() -> list[list[object]]:
    """Sync and async (2 worker processes) vector environments of 2 sub-envs."""
    rows = []
    p = QuadrotorParams()
    for mode in ("sync", "async"):
        vec = gym.make_vec(
            "MetaSymQuadrotor-v0",
            num_envs=2,
            vectorization_mode=mode,
            task="hover",
            params=p,
            init_noise=0.0,
        )
        vec.reset(seed=0)
        acts = np.full((2, 4), p.hover_action(), dtype=np.float32)
        n = 3000
        for _ in range(100):
            vec.step(acts)
        t0 = time.perf_counter()
        for _ in range(n):
            vec.step(acts)
        dt = (time.perf_counter() - t0) / n
        vec.close()
        label = "SyncVectorEnv, 2 envs" if mode == "sync" else "AsyncVectorEnv, 2 worker processes"
        rows.append([label, f"{dt * 1e6:.1f}", f"{2 / dt:,.0f}"])
    return rows


def bench_collect() -> list[object]:
    """Throughput of the meta-training data generator (exploration policy, 8 sub-envs)."""
    collect_quadrotor_dataset(8, 1, 50, seed=0)  # warm-up (imports, first compile)
    t0 = time.perf_counter()
    tr = collect_quadrotor_dataset(32, 2, 200, seed=1)
    dt = time.perf_counter() - t0
    n = int(tr.lengths.sum())
    return [
        "collect_quadrotor_dataset(32 tasks × 2 episodes × 200 steps)",
        f"{n}",
        f"{dt:.2f}",
        f"{n / dt:,.0f}",
    ]


def bench_model() -> list[list[object]]:
    """Analytic model step (torch, float64, CPU, 1 thread and the default) and CasADi."""
    rows = []
    default_threads = torch.get_num_threads()
    for k, substeps in ((1, 4), (256, 4), (4096, 4), (256, 1), (4096, 1)):
        model = QuadrotorModel(substeps=substeps)
        x = torch.zeros(k, 13, dtype=torch.float64)
        x[:, 2] = 1.5
        x[:, 3] = 1.0
        u = torch.full((k, 4), -0.5, dtype=torch.float64)
        cells: list[object] = [f"QuadrotorModel(substeps={substeps}).step, float64, K={k}"]
        for threads in (1, default_threads):
            torch.set_num_threads(threads)
            with torch.no_grad():
                t = time_call(lambda m=model, x=x, u=u: m.step(x, u, {}), repeat=30, warmup=3)
            cells.append(f"{t.min() * 1e6:.0f}")
        torch.set_num_threads(default_threads)
        rows.append(cells)
    f = QuadrotorModel().casadi_function()
    x0, u0 = np.r_[0, 0, 1.5, 1, 0, 0, 0, np.zeros(6)], np.full(4, -0.5)
    t = time_call(lambda: f(x0, u0), repeat=200, warmup=10)
    rows.append(["QuadrotorModel.casadi_function(), one call", f"{t.min() * 1e6:.0f}", "—"])
    return rows


def main() -> None:
    """Run every benchmark, print the tables and write the BENCHMARKS.md section."""
    single, parts = bench_single()
    vector = bench_vector()
    collect = bench_collect()
    model = bench_model()
    raw = parts["physics (mj_step × substeps)"]
    layer = sum(v for k, v in parts.items() if not k.startswith("physics"))
    md = [
        f"Command: `python benchmarks/bench_quadrotor.py` (`make bench`). "
        f"{datetime.date.today().isoformat()}, {machine_description()}, "
        f"mujoco {mujoco.__version__}, gymnasium {gym.__version__}.",
        "",
        "One control step = 20 ms = 4 RK4 physics steps of 5 ms (X2 defaults, figure-8 task).",
        "",
        markdown_table(["what", "µs / control step", "steps / s", "× raw physics"], single),
        "",
        "Where an environment step goes (each part timed alone, fastest of 7 repeats; µs):",
        "",
        markdown_table(
            ["part", "µs", "share of wrapped step"],
            [[k, f"{v * 1e6:.1f}", f"{100 * v / (raw + layer):.0f}%"] for k, v in parts.items()],
        ),
        "",
        f"Environment layer (everything but physics, wrappers included): {layer * 1e6:.1f} µs = "
        f"{layer / raw:.2f}× the raw physics time (aim: at most 2×).",
        "",
        markdown_table(["vector environment", "µs / vector step", "env steps / s"], vector),
        "",
        markdown_table(["data generation", "transitions", "s", "transitions / s"], [collect]),
        "",
        markdown_table(
            ["analytic model (torch, CPU)", "µs / call, 1 thread", "µs, default threads"],
            model,
        ),
    ]
    text = "\n".join(md)
    print(text)
    path = write_section(
        "quadrotor-env", "## Quadrotor environment (`MetaSymQuadrotor-v0`)\n\n" + text
    )
    print(f"\nwrote section quadrotor-env of {path}")


if __name__ == "__main__":
    main()
