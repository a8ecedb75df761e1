"""Benchmark of the open quantum env: steps/s beside QuTiP's smesolve, and measured orders."""

from __future__ import annotations

import argparse
import math
import time
from datetime import datetime, timezone

import gymnasium as gym
import numpy as np
import qutip

import metasym_control  # noqa: F401  (registers the ids)
from metasym_control.bench import machine_description, markdown_table, write_section
from metasym_control.envs.open_quantum import (
    OpenQuantumParams,
    OpenQuantumVectorEnv,
    SMEBatch,
    ground_density,
    system_operators,
)

ENV_ID = "MetaSymOpenQuantum-v0"


def env_steps_per_second(p: OpenQuantumParams, steps: int) -> float:
    """Control steps per second of one `gym.make` env (wrappers included), random drives."""
    env = gym.make(ENV_ID, system=p.system, params=p)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (steps, 2)).astype(np.float32)
    for a in acts[:10]:
        env.step(a)
    t0 = time.perf_counter()
    for a in acts:
        env.step(a)
    return steps / (time.perf_counter() - t0)


def vector_steps_per_second(p: OpenQuantumParams, batch: int, steps: int) -> float:
    """Trajectory control steps per second of the native vector env with `batch` copies."""
    venv = OpenQuantumVectorEnv(num_envs=batch, system=p.system, params=p, max_episode_steps=10**9)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (steps, batch, 2))
    venv.step(acts[0])
    t0 = time.perf_counter()
    for a in acts:
        venv.step(a)
    return batch * steps / (time.perf_counter() - t0)


def qutip_steps_per_second(
    p: OpenQuantumParams, ntraj: int, steps: int, method: str = "platen"
) -> float:
    """Trajectory control steps per second of QuTiP smesolve, same system, same step h.

    Operators in QuTiP's sparse CSR format (what `qutip.destroy` gives; dense operators
    make its default Platen method about 30× slower for N = 10).
    """
    ops = system_operators(p.system, p.dim)
    u = (0.3, -0.2)
    h = p.detuning * ops.detuning_op + p.max_rabi * (u[0] * ops.drive_x + u[1] * ops.drive_y)

    def q(a: np.ndarray) -> qutip.Qobj:
        return qutip.Qobj(a).to("csr")

    c_ops = [
        q(math.sqrt(p.damping) * ops.damping_op),
        q(math.sqrt(p.dephasing) * ops.dephasing_op),
        q(math.sqrt((1 - p.efficiency) * p.measurement_rate) * ops.measured_op),
    ]
    sc_ops = [q(math.sqrt(p.efficiency * p.measurement_rate) * ops.measured_op)]
    times = np.arange(steps + 1) * p.dt
    t0 = time.perf_counter()
    qutip.smesolve(
        q(h),
        q(ground_density(p.system, p.dim)),
        times,
        c_ops,
        sc_ops,
        e_ops=[q(ops.drive_x)],
        ntraj=ntraj,
        options={"dt": p.h, "progress_bar": "", "store_measurement": "end", "method": method},
        seeds=0,
    )
    return ntraj * steps / (time.perf_counter() - t0)


def strong_order(p: OpenQuantumParams, batch: int = 200) -> tuple[float, list[float]]:
    """Slope of the RMS strong error at T = 0.4 μs against the step (2^k steps, k = 4..7)
    on shared Brownian paths, reference 2^10 steps."""
    t_end, kref = 0.4, 10
    rng = np.random.default_rng(0)
    dwf = rng.normal(0.0, math.sqrt(t_end / 2**kref), (batch, 2**kref))
    rho0 = np.repeat(ground_density(p.system, p.dim)[None], batch, 0)
    u = np.repeat(np.array([[0.3, -0.5]]), batch, 0)

    def final(k: int) -> np.ndarray:
        sim = SMEBatch([p.replace(dt=t_end, substeps=2**k)] * batch)
        return sim.step(rho0, u, dwf.reshape(batch, 2**k, -1).sum(-1))[0]

    ref = final(kref)
    ks = np.array([4, 5, 6, 7])
    errs = [float(np.sqrt(np.mean(np.sum(np.abs(final(k) - ref) ** 2, (1, 2))))) for k in ks]
    return float(np.polyfit(np.log(t_end / 2.0**ks), np.log(errs), 1)[0]), errs


def main() -> None:
    """Run the benchmark, print the table and write the `open-quantum` section."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=400, help="env control steps timed")
    parser.add_argument("--qutip-steps", type=int, default=40, help="smesolve control steps")
    args = parser.parse_args()
    qubit = OpenQuantumParams()
    osc = OpenQuantumParams.for_system("oscillator")
    rows = []
    for name, p in (("qubit", qubit), ("oscillator N=10", osc)):
        single = env_steps_per_second(p, args.steps)
        vec = vector_steps_per_second(p, 256, max(10, args.steps // 10))
        q1 = qutip_steps_per_second(p, 8, args.qutip_steps)
        q256 = qutip_steps_per_second(p, 256, max(4, args.qutip_steps // 4))
        r256 = qutip_steps_per_second(p, 256, max(4, args.qutip_steps // 4), "rouchon")
        rows.append(
            [
                name,
                f"{p.dt:g} μs / {p.substeps}",
                f"{single:,.0f}",
                f"{vec:,.0f}",
                f"{q1:,.0f}",
                f"{q256:,.0f}",
                f"{r256:,.0f}",
                f"{vec / max(q256, r256):.1f}×",
            ]
        )
        print(rows[-1], flush=True)
    header = [
        "system",
        "dt / substeps",
        "env steps/s (1 traj)",
        "vector env traj-steps/s (256)",
        "smesolve platen (8)",
        "smesolve platen (256)",
        "smesolve rouchon (256)",
        "vector / best smesolve",
    ]
    table = markdown_table(header, rows)
    slope_q, errs_q = strong_order(qubit)
    slope_off, errs_off = strong_order(qubit.replace(measurement_rate=0.0))
    orders = markdown_table(
        ["qubit (defaults), T = 0.4 μs", "measured order", "RMS error at h = 0.4/2^4 .. 0.4/2^7"],
        [
            ["measurement on (strong)", f"{slope_q:.2f}", ", ".join(f"{e:.2e}" for e in errs_q)],
            ["measurement off", f"{slope_off:.2f}", ", ".join(f"{e:.2e}" for e in errs_off)],
        ],
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = (
        "## Open quantum system (`benchmarks/bench_open_quantum.py`)\n\n"
        f"{stamp}; {machine_description()}; QuTiP {qutip.__version__}.\n\n"
        "Control steps of the same system with the same integration step h = dt/substeps: "
        "the env's Kraus-map integrator (numpy, one `gym.make` env, or the native vector "
        "env with 256 trajectories) beside QuTiP's `smesolve` (`dt=h`, serial map, CSR "
        "operators; its default Platen method with 8 and 256 trajectories, and its "
        "Rouchon method). Columns after the second: trajectory control steps per second "
        "(one control period of one trajectory). `smesolve` integrates whole open-loop "
        "trajectories (fixed drive) in compiled code; the env makes one Python call per "
        "control period so that a controller can choose each drive — the price shows in "
        "the one-trajectory column and is amortised by the vector env.\n\n"
        f"{table}\n\nIntegrator convergence on shared Brownian paths (2^10-step "
        f"reference):\n\n{orders}\n"
    )
    print(md)
    write_section("open-quantum", md)


if __name__ == "__main__":
    main()
