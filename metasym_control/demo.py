"""The closed-loop demos: an unseen quadrotor, mesh or qubit under MPC with an adapted MetaSym."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from metasym_control.bench import markdown_table
from metasym_control.closed_loop import ClosedLoopResult
from metasym_control.demo_config import DemoConfig
from metasym_control.dynamics import DynamicsModel

logger = logging.getLogger(__name__)


def _plot(results: dict[str, ClosedLoopResult], env: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    first = next(iter(results.values()))
    ax0.plot(first.x_ref[:, 0], first.x_ref[:, 2], "k--", lw=1.2, label="reference")
    for name, r in results.items():
        ax0.plot(r.states[:, 0], r.states[:, 2], lw=1.2, label=name)
        err = env.task.tracking_error(r.states, r.x_ref)
        ax1.plot(r.times, err, lw=1.0, label=name)
        for k in r.adaptations:
            ax1.axvline(k * env.dt, color="0.85", lw=0.6, zorder=0)
    ax0.set(xlabel="x (m)", ylabel="z (m)", title="figure-8 in the x–z plane")
    ax0.set_aspect("equal", adjustable="datalim")
    ax0.legend(fontsize=7, loc="upper right")
    ax1.set(xlabel="time (s)", ylabel="position error (m)", title="tracking error")
    ax1.set_yscale("log")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def demo_system(cfg: DemoConfig) -> str:
    """The system a demo runs: `cfg.env`, else the checkpoint's, else "quadrotor".

    Raises:
        CheckpointError: `cfg.env` disagrees with the checkpoint's system.
    """
    from metasym_control.checkpoint import checkpoint_system, read_checkpoint_meta

    if cfg.checkpoint is not None:
        return checkpoint_system(read_checkpoint_meta(cfg.checkpoint), cfg.env)
    return cfg.env or "quadrotor"


def main(cfg: DemoConfig) -> None:
    """Run the demo of `demo_system(cfg)`: the quadrotor's figure-8, or `system_demo`."""
    system = demo_system(cfg)
    if system == "quadrotor":
        quadrotor_demo(cfg)
    else:
        system_demo(system, cfg)


def quadrotor_demo(cfg: DemoConfig) -> None:
    """Fly the figure-8 on an unseen (test-split) quadrotor and compare models.

    Writes `figure8.png`, `metasym_flight.mp4` (and a GIF), `table.md` and `summary.json` to
    `cfg.out` and prints the table.
    """
    from metasym_control.envs.quadrotor import QuadrotorParams, sample_quadrotor_params
    from metasym_control.figure8 import fly_figure8

    logging.basicConfig(level=logging.WARNING)
    metasym = _load_metasym(cfg)  # first: a refused checkpoint leaves nothing behind
    cfg.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    true_params = sample_quadrotor_params(rng, "test").replace(gust_std=0.0)
    nominal = QuadrotorParams()
    print(f"Unseen quadrotor (test split, seed {cfg.seed}):")
    print(
        f"  mass {true_params.mass:.3f} kg (nominal {nominal.mass}), "
        f"wind {np.round(true_params.wind, 2).tolist()} N, "
        f"drag {np.round(true_params.drag, 3).tolist()} N·s/m"
    )
    results, adapt_s, env = fly_figure8(true_params, metasym, cfg, progress=True)
    print(f"MetaSym adapted on {cfg.support_seconds:.0f} s of flight in {adapt_s:.2f} s")
    base: Any = env.unwrapped

    # 5. the table, the plot, the video
    header = [
        "controller + model",
        "position RMSE (m)",
        "max error (m)",
        "median act (ms)",
        "crashed",
        "fallbacks",
        "adaptations",
    ]
    rows: list[list[object]] = []
    summary: dict[str, Any] = {
        "params": true_params.to_dict(),
        "adapt_seconds": adapt_s,
        "runs": {},
    }
    for name, r in results.items():
        err = base.task.tracking_error(r.states, r.x_ref)
        fallbacks = sum(1 for i in r.infos if i.get("fallback", "none") not in ("none", None))
        rows.append(
            [
                name,
                f"{r.tracking_rmse(base):.3f}",
                f"{err.max():.3f}",
                f"{1e3 * np.median(r.act_seconds):.1f}",
                "yes" if r.terminated else "no",
                fallbacks,
                len(r.adaptations),
            ]
        )
        summary["runs"][name] = {
            "rmse_m": r.tracking_rmse(base),
            "max_error_m": float(err.max()),
            "median_act_ms": 1e3 * float(np.median(r.act_seconds)),
            "terminated": r.terminated,
            "steps": len(r.actions),
            "fallbacks": fallbacks,
            "adaptations": r.adaptations,
        }
    table = markdown_table(header, rows)
    print()
    print(table)
    (cfg.out / "table.md").write_text(table + "\n")
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=1))
    if cfg.export_csv:
        _export_csv(cfg, "quadrotor", results, base)
    _plot(results, base, cfg.out / "figure8.png")
    print(f"\nplot: {cfg.out / 'figure8.png'}")
    frames: list[np.ndarray] = next((r.frames for r in results.values() if r.frames), [])
    if frames:
        import imageio.v2 as imageio

        fps = round(1 / (base.dt * cfg.video_every))  # real time
        video = np.stack(frames)  # (F, H, W, 3) uint8
        imageio.mimsave(cfg.out / "metasym_flight.mp4", list(video), fps=fps)
        gif = list(video[::3])  # a third of the frames keeps the GIF small
        imageio.mimsave(cfg.out / "metasym_flight.gif", gif, duration=3000 / fps, loop=0)
        print(f"video: {cfg.out / 'metasym_flight.mp4'}")
    env.close()


def _load_metasym(cfg: DemoConfig) -> DynamicsModel:
    """The shipped (or given) MetaSym quadrotor checkpoint; clear error when it is unusable."""
    import torch

    from metasym_control.checkpoint import load_checkpoint
    from metasym_control.weights import DEFAULT_WEIGHTS

    path = cfg.checkpoint or DEFAULT_WEIGHTS
    # float64: the controllers' default, and finite-difference Jacobians want it
    model, _meta = load_checkpoint(
        path, expect_class="MetaSym", env_id="MetaSymQuadrotor-v0", dtype=torch.float64
    )
    return model


def system_demo(system: str, cfg: DemoConfig) -> None:
    """A held-out system of `system` under zero action and MPPI with each model.

    Adapts the shipped (or `cfg.checkpoint`) MetaSym on `cfg.support_seconds`-independent
    support data (the system's exploration episodes), runs the trial of
    `metasym_control.experiment.run_trial`, and writes `table.md`, `summary.json`,
    `<system>.png` (mesh: distance to target and energy over time; qubit: fidelity and
    Bloch vector over time) and `metasym_<system>.mp4` (and a GIF) to `cfg.out`.
    """
    import torch

    from metasym_control.checkpoint import load_checkpoint
    from metasym_control.experiment import (
        PARAM_OVERRIDES,
        TrialConfig,
        held_out_params,
        label,
        run_trial,
    )
    from metasym_control.pretrained import load_pretrained
    from metasym_control.systems import get_system

    logging.basicConfig(level=logging.WARNING)
    entry = get_system(system)
    if cfg.checkpoint is not None:
        model: DynamicsModel = load_checkpoint(cfg.checkpoint, dtype=torch.float64)[0]
    else:
        model = load_pretrained(system, dtype=torch.float64)
    cfg.out.mkdir(parents=True, exist_ok=True)  # after the checks that may refuse the run
    (params,) = held_out_params(entry, 1, cfg.seed, PARAM_OVERRIDES.get(system))
    print(f"Unseen {system} (test split, seed {cfg.seed}): {_short_params(params.to_dict())}")
    tcfg = TrialConfig(
        steps=cfg.steps,
        samples=cfg.samples,
        adapt=cfg.adapt_budget,
        include_oracle=cfg.include_oracle,
        controller=cfg.controller,
        render=cfg.video,
        render_every=1,
        env_overrides={} if cfg.task is None else {entry.task_kwarg: cfg.task},
    )
    trial = run_trial(entry, params, model, tcfg, seed=cfg.seed, progress=True)
    print(
        f"MetaSym adapted on {tcfg.support_episodes} support episodes in "
        f"{trial.adapt_seconds:.2f} s"
    )
    names = sorted({k for m in trial.metrics.values() for k in m})
    rows: list[list[object]] = [
        [label(role, cfg.controller), *(f"{m[k]:.4g}" for k in names)]
        for role, m in trial.metrics.items()
    ]
    table = markdown_table(["controller + model", *names], rows)
    print()
    print(table)
    (cfg.out / "table.md").write_text(table + "\n")
    summary = {
        "system": system,
        "params": params.to_dict(),
        "controller": cfg.controller,
        "adapt_seconds": trial.adapt_seconds,
        "metrics": {label(role, cfg.controller): m for role, m in trial.metrics.items()},
    }
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=1))
    if cfg.export_csv:
        runs = {label(role, cfg.controller): r for role, r in trial.runs.items()}
        _export_csv(cfg, system, runs, trial.env.unwrapped)
    plot = cfg.out / f"{system}.png"
    _plot_system(system, trial.runs, trial.env.unwrapped, plot, cfg.controller)
    print(f"\nplot: {plot}")
    frames = next((r.frames for r in trial.runs.values() if r.frames), [])
    if frames:
        import imageio.v2 as imageio

        fps = max(1, min(30, round(1 / float(trial.env.unwrapped.dt))))
        video = cfg.out / f"metasym_{system}.mp4"
        clip = np.stack(frames)  # (F, H, W, 3) uint8
        imageio.mimsave(video, list(clip), fps=fps, macro_block_size=1)
        imageio.mimsave(
            cfg.out / f"metasym_{system}.gif", list(clip[::2]), duration=2000 / fps, loop=0
        )
        print(f"video: {video}")
    trial.env.close()


def _export_csv(cfg: DemoConfig, system: str, runs: dict[str, ClosedLoopResult], env: Any) -> None:
    """Write each flown run as a log in the system's CSV schema (docs/user_data.md)."""
    from metasym_control.user_data import write_log

    for name, r in runs.items():
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")  # "mppi_metasym_adapted"
        path = write_log(cfg.out / f"{slug}.csv", r.to_trajectory(env.env_id, env.dt), system)
        print(f"log: {path}")


def _short_params(d: dict[str, Any]) -> str:
    """Scalar parameters of a system, rounded, for one printed line."""
    parts = [f"{k} {v:.3g}" for k, v in d.items() if isinstance(v, float)]
    return ", ".join(parts[:6])


def _plot_system(
    system: str, by_role: dict[str, ClosedLoopResult], env: Any, path: Path, controller: str
) -> None:
    """Per-system picture of a trial's runs (keyed by role): what a person would look at
    first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metasym_control.experiment import ADAPTED, ORACLE, label

    runs = {label(role, controller): r for role, r in by_role.items()}
    adapted, oracle = label(ADAPTED, controller), label(ORACLE, controller)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, r in runs.items():
        err = env.task.tracking_error(r.states, r.x_ref)
        ax0.plot(r.times, err, lw=1.2, label=name)
    ax0.set(xlabel="time (s)", ylabel="tracking error (task units)", title="distance to target")
    if system == "spring_mesh":
        from metasym_control.envs.spring_mesh.physics import total_energy

        ax0.set(ylabel="RMS position error (m)")
        for name, r in runs.items():
            ax1.plot(r.times, total_energy(env.params, r.states), lw=1.2, label=name)
        ax1.set(xlabel="time (s)", ylabel="energy H (J)", title="mesh energy")
        ax0.set_yscale("log")
        ax1.set_yscale("log")
    elif system.startswith("quantum"):
        ax0.cla()
        for name, r in runs.items():
            ax0.plot(r.times, r.states @ env.task.target_state, lw=1.2, label=name)
        ax0.set(xlabel="time (μs)", ylabel="fidelity F", title="fidelity to the target")
        ax0.set_ylim(0, 1.02)
        if env.task.n == 2:
            from metasym_control.envs.open_quantum.physics import state_to_density

            pauli = {
                "x": np.array([[0, 1], [1, 0]]),
                "y": np.array([[0, -1j], [1j, 0]]),
                "z": np.array([[1, 0], [0, -1]]),
            }
            for name in (adapted, oracle):
                if name not in runs:
                    continue
                r = runs[name]
                rho = np.stack([state_to_density(x, 2) for x in r.states])
                style = "-" if name == adapted else ":"
                for (axis, s), colour in zip(pauli.items(), ("C0", "C1", "C2"), strict=True):
                    v = np.einsum("tij,ji->t", rho, s).real
                    ax1.plot(r.times, v, style, color=colour, lw=1.2, label=f"{axis} ({name})")
            ax1.set(xlabel="time (μs)", ylabel="Bloch vector", title="Bloch vector")
            ax1.set_ylim(-1.05, 1.05)
    else:
        ax1.set_visible(False)
    ax0.legend(fontsize=7)
    if ax1.get_visible():
        ax1.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
