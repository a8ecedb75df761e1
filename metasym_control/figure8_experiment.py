"""The figure-8 over many held-out quadrotors: cached, resumable flights, summary, plots.

`quadrotor_experiment` flies `figure8.fly_figure8` on `n` quadrotors of the test range (or
of the stress set beyond it), records per method the tracking RMSE, crash, fallbacks by
kind, control effort, act latency and online adaptation time, and per vehicle the
tracking error over time. A few vehicles also fly MetaSym adapted on K = 0, 1, 2, 4 support
flights (no online adaptation) for the RMSE-against-K curve. Each finished vehicle is
written to `<out>/<stem>/vehicle_<i>.json` under a key of everything that decides its
flight, so an interrupted run resumes where it stopped and a changed setting flies again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from metasym_control.closed_loop import ClosedLoopResult, run_closed_loop
from metasym_control.demo_config import DemoConfig
from metasym_control.dynamics import DynamicsModel
from metasym_control.figure8 import (
    PD,
    fly_figure8,
    make_quadrotor_mpc,
    method_names,
    mlp_name,
)

if TYPE_CHECKING:
    from metasym_control.envs.quadrotor import QuadrotorParams

CURVE_SHOTS = (0, 1, 2, 4)
"""Support flights (of `DemoConfig.support_seconds` each) of the RMSE-against-K curve."""


def stress_params(rng: np.random.Generator) -> QuadrotorParams:
    """A quadrotor beyond the test range that the oracle MPC can still fly: heavier (mass
    2.0–2.4 kg), larger inertia (×1.4–1.8), steady wind up to a quarter of the weight;
    thrust-to-weight stays >= 1.5 (4 × 13 N against at most 2.4 × 9.81 N)."""
    from metasym_control.envs.quadrotor import QuadrotorParams

    nominal = QuadrotorParams()
    mass = float(rng.uniform(2.0, 2.4))
    scale = float(rng.uniform(1.4, 1.8))
    weight = mass * 9.81
    heading = rng.uniform(0.0, 2.0 * np.pi)
    wind_xy = float(rng.uniform(0.1, 0.25)) * weight
    wind = (wind_xy * float(np.cos(heading)), wind_xy * float(np.sin(heading)), 0.0)
    inertia = tuple(float(v) * scale for v in nominal.inertia)
    return nominal.replace(mass=mass, inertia=inertia, wind=wind)


def flight_metrics(r: ClosedLoopResult, env: Any) -> dict[str, Any]:
    """One flight's numbers.

    Returns:
        rmse_m (m), crashed (0/1), fallback_share (of the steps), fallbacks ({kind: steps}),
        unrecoverable (steps the supervisor handed to the fallback, `MPPIConfig.supervise`),
        trust_repairs ({"flown": steps, "refused": steps}: RTI's bounded re-solves of
        untrusted plans, `NMPCConfig.trust_repair`; absent where none was tried),
        effort_n (RMS over steps and motors of the applied thrust minus the reference
        (hover) thrust, N), act_ms (median `act` wall time, ms), adapt_s (median online
        adaptation wall time, s; NaN without one), error_m ((T+1,) tracking error over time).
    """
    base = env.unwrapped
    kinds = [str(i.get("fallback", "none") or "none") for i in r.infos]
    fell = [k for k in kinds if k != "none"]
    err = base.task.tracking_error(r.states, r.x_ref)
    n = len(r.actions)
    effort = float(np.sqrt(np.mean((r.actions - r.u_ref[:n]) ** 2))) if n else 0.0
    return {
        "rmse_m": r.tracking_rmse(base),
        "crashed": float(r.terminated),
        "fallback_share": len(fell) / len(kinds) if kinds else 0.0,
        "fallbacks": {k: fell.count(k) for k in sorted(set(fell))},
        "unrecoverable": sum(i.get("fault") == "unrecoverable" for i in r.infos),
        **_repairs(r.infos),
        "effort_n": effort,
        "act_ms": 1e3 * float(np.median(r.act_seconds)) if n else float("nan"),
        "adapt_s": float(np.median(r.adapt_seconds)) if r.adapt_seconds else float("nan"),
        "error_m": [round(float(e), 5) for e in err],
    }


def _repairs(infos: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """{"trust_repairs": {outcome: steps}} over a flight's infos, or {} with no repair."""
    outcomes = [str(i["trust_repair"]) for i in infos if "trust_repair" in i]
    if not outcomes:
        return {}
    return {"trust_repairs": {k: outcomes.count(k) for k in ("flown", "refused")}}


def adaptation_curve(
    true_params: QuadrotorParams,
    metasym: DynamicsModel,
    cfg: DemoConfig,
    shots: Sequence[int] = CURVE_SHOTS,
) -> dict[str, float]:
    """Figure-8 RMSE (m) of the MPC with MetaSym adapted on K support flights, no online
    adaptation (K = 0: the meta-trained model as it is), for each K in `shots`.

    The K flights are the first K of one seeded collection of max(shots) flights of
    `cfg.support_seconds` each; a crash counts with its RMSE up to the crash.
    """
    import gymnasium as gym

    from metasym_control.data import collect_quadrotor_dataset

    support = collect_quadrotor_dataset(
        n_tasks=1,
        episodes_per_task=max(max(shots), 1),
        steps=round(cfg.support_seconds / 0.02),
        split="test",
        seed=cfg.seed + 1,
        params=[true_params],
        num_envs=1,
    )
    steps = round(cfg.seconds / 0.02)
    env = gym.make(
        "MetaSymQuadrotor-v0", task="figure8", omega=cfg.omega, params=true_params,
        init_noise=0.0, max_episode_steps=steps,
    )  # fmt: skip
    base: Any = env.unwrapped
    out = {}
    for k in shots:
        model = metasym.adapt(support.subset(range(k)), cfg.adapt_budget) if k else metasym
        ctrl = make_quadrotor_mpc(cfg.controller, model, base.task, cfg)
        r = run_closed_loop(
            env, ctrl, steps, seed=cfg.seed, history_len=int(getattr(model, "history_len", 0))
        )
        out[str(k)] = r.tracking_rmse(env)
    env.close()
    return out


@dataclass(frozen=True)
class QuadrotorGoal:
    """The closed-loop issue's goals, per-system ratios summarised by median and worst."""

    oracle_median: float = 1.3
    oracle_worst: float = 1.6
    nominal_median: float = 0.6
    fallback_share: float = 0.02


def _nanmedian(v: Sequence[float]) -> float:
    a = np.asarray(v, dtype=float)
    return float(np.median(a[np.isfinite(a)])) if np.isfinite(a).any() else float("nan")


def summarise(runs: list[dict[str, dict[str, Any]]], controller: str) -> dict[str, Any]:
    """Per method: RMSE median / worst / 95% interval, crashes, fallback shares and kinds,
    effort, act latency and online adaptation time; per-system ratios of the adapted MetaSym
    to the oracle, the nominal model and the MLP; the goals.

    Args:
        runs: per vehicle, `flight_metrics` by method name.
        controller: "mppi" or "rti".
    """
    from metasym_control.bench import bootstrap_median_interval

    nominal_name, adapted_name, oracle_name = method_names(controller)
    methods = list(runs[0])
    out: dict[str, Any] = {"methods": {}, "ratios": {}, "goals": []}
    for m in methods:
        rmse = [r[m]["rmse_m"] for r in runs]
        fall = [r[m]["fallback_share"] for r in runs]
        kinds: dict[str, int] = {}
        for r in runs:
            for k, c in r[m].get("fallbacks", {}).items():
                kinds[k] = kinds.get(k, 0) + int(c)
        lo, hi = bootstrap_median_interval(rmse)
        out["methods"][m] = {
            "rmse_median": float(np.median(rmse)),
            "rmse_worst": float(np.max(rmse)),
            "rmse_interval": [lo, hi],
            "crashes": int(sum(r[m]["crashed"] for r in runs)),
            "fallback_median": float(np.median(fall)),
            "fallback_worst": float(np.max(fall)),
            "fallback_kinds": kinds,
            # flights recorded before the supervisor existed count none
            "unrecoverable": int(sum(r[m].get("unrecoverable", 0) for r in runs)),
            "effort_n": _nanmedian([r[m].get("effort_n", np.nan) for r in runs]),
            "act_ms": _nanmedian([r[m].get("act_ms", np.nan) for r in runs]),
            "adapt_s": _nanmedian([r[m].get("adapt_s", np.nan) for r in runs]),
        }

    def ratio(other: str) -> dict[str, float]:
        v = [r[adapted_name]["rmse_m"] / r[other]["rmse_m"] for r in runs]
        return {"median": float(np.median(v)), "worst": float(np.max(v))}

    out["ratios"] = {"to_oracle": ratio(oracle_name), "to_nominal": ratio(nominal_name)}
    g = QuadrotorGoal()
    # the MPC runs, with every model; the cascaded PD is the baseline (its crashes are in
    # the table)
    crashes = sum(v["crashes"] for m, v in out["methods"].items() if m != PD)
    share = out["methods"][adapted_name]["fallback_worst"]
    to_oracle, to_nominal = out["ratios"]["to_oracle"], out["ratios"]["to_nominal"]
    out["goals"] = [
        {"text": "no MPC crash with any model", "value": float(crashes), "met": crashes == 0},
        {
            "text": f"MetaSym's fallbacks under {g.fallback_share:.0%} of its steps (worst system)",
            "value": share,
            "met": share < g.fallback_share,
        },
        {
            "text": f"median ratio to the oracle <= {g.oracle_median}",
            "value": to_oracle["median"],
            "met": to_oracle["median"] <= g.oracle_median,
        },
        {
            "text": f"worst ratio to the oracle <= {g.oracle_worst}",
            "value": to_oracle["worst"],
            "met": to_oracle["worst"] <= g.oracle_worst,
        },
        {
            "text": f"median ratio to the nominal model <= {g.nominal_median}",
            "value": to_nominal["median"],
            "met": to_nominal["median"] <= g.nominal_median,
        },
    ]
    if mlp_name(controller) in methods:
        out["ratios"]["to_mlp"] = ratio(mlp_name(controller))
        out["goals"].append(
            {
                "text": "better than the adapted MLP (median ratio < 1)",
                "value": out["ratios"]["to_mlp"]["median"],
                "met": out["ratios"]["to_mlp"]["median"] < 1.0,
            }
        )
    return out


def quadrotor_tables(summary: dict[str, Any]) -> str:
    """Markdown of `summarise`'s result (and of the adaptation curve when there is one)."""
    from metasym_control.bench import markdown_table

    rows: list[list[object]] = []
    for m, v in summary["methods"].items():
        lo, hi = v["rmse_interval"]
        kinds = ", ".join(f"{k} {c}" for k, c in v.get("fallback_kinds", {}).items()) or "—"
        if v.get("unrecoverable", 0):
            kinds += f" ({v['unrecoverable']} unrecoverable)"
        adapt = v.get("adapt_s", float("nan"))
        rows.append(
            [
                m,
                f"{v['rmse_median']:.3f}",
                f"{v['rmse_worst']:.3f}",
                f"[{lo:.3f}, {hi:.3f}]",
                v["crashes"],
                f"{100 * v['fallback_median']:.1f} / {100 * v['fallback_worst']:.1f}",
                kinds,
                f"{v.get('effort_n', float('nan')):.2f}",
                f"{v.get('act_ms', float('nan')):.1f}",
                "—" if not np.isfinite(adapt) else f"{adapt:.2f}",
            ]
        )
    table = markdown_table(
        [
            "controller + model",
            "RMSE median (m)",
            "RMSE worst (m)",
            "95% CI of median",
            "crashes",
            "fallbacks % median / worst",
            "fallback steps by kind",
            "effort (N)",
            "act ms",
            "online adaptation s",
        ],
        rows,
    )
    goals = markdown_table(
        ["goal (per-system ratios)", "measured", ""],
        [
            [g["text"], f"{g['value']:.3f}", "met" if g["met"] else "**not met**"]
            for g in summary["goals"]
        ],
    )
    text = (
        f"{table}\n\nUnrecoverable: steps from which the vehicle could no longer brake before "
        "the floor or a wall, flown by the fallback whatever the plan. "
        "Effort: RMS over steps and motors of thrust minus hover thrust. Act: "
        "median wall time of one control step (the control period is 20 ms). Online "
        "adaptation: median wall time of one re-adaptation (the loop swaps the result in 5 "
        f"steps later).\n\n{goals}"
    )
    curve = summary.get("curve")
    if curve:
        shots = list(curve["median"])
        rows = [
            ["median RMSE (m)", *[f"{curve['median'][k]:.3f}" for k in shots]],
            ["worst RMSE (m)", *[f"{curve['worst'][k]:.3f}" for k in shots]],
        ]
        text += (
            f"\n\nMetaSym adapted on K support flights, no online adaptation "
            f"({curve['systems']} vehicles):\n\n"
            + markdown_table(["", *[f"K = {k}" for k in shots]], rows)
        )
    return text


def _vehicle_key(payload: dict[str, Any]) -> str:
    """A hash of everything that decides one vehicle's flights."""
    from metasym_control.params import jsonable

    text = json.dumps(jsonable(payload), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def experiment_stem(cfg: DemoConfig, stress: bool) -> str:
    """The run's file stem: "quadrotor_<mpc>", "_offset_free" for offset-free MPCs (a
    `disturbance_gain`), "_stress" for the stress set; its tables, plots and cache share it."""
    offset = "_offset_free" if cfg.disturbance_gain > 0 else ""
    return f"quadrotor_{cfg.controller}{offset}{'_stress' if stress else ''}"


def quadrotor_experiment(
    n_systems: int,
    seed: int,
    cfg: DemoConfig,
    metasym_loader: Callable[[], DynamicsModel],
    stress: bool = False,
    progress: bool = True,
    out: Path | None = None,
    model_id: str = "",
    curve_systems: int = 0,
    video: bool = False,
    resume: bool = True,
) -> dict[str, Any]:
    """The figure-8 flown by every method on `n_systems` held-out quadrotors (test range, or
    the stress set), seeded; per-vehicle results, `summarise`'s summary and the plots.

    Args:
        n_systems: vehicles.
        seed: seed of the draw; vehicle i flies with seed `seed + i`.
        cfg: flight settings (the demo's; `video` is ignored, see `video`).
        metasym_loader: `() -> DynamicsModel`, the meta-trained MetaSym.
        stress: draw from `stress_params` instead of the test range.
        progress: bars over the vehicles and the flights.
        out: folder for `quadrotor_<controller>[_stress].{json,md}`, the per-vehicle cache
            and the plots (None: nothing written, nothing resumed).
        model_id: identity of the meta-trained model (`checkpoint.model_digest` of its
            checkpoint), part of the resume key (the checkpoint's path is not).
        curve_systems: the first this many vehicles also fly the RMSE-against-K curve.
        video: render vehicle 0's flight with the adapted MetaSym to `<stem>_flight.mp4`.
        resume: reuse vehicles already flown with the same key.

    Returns:
        {"systems": per-vehicle metrics (without the error traces), "params", "curve" (when
        flown), **summarise(...)}.
    """
    from metasym_control.envs.quadrotor import sample_quadrotor_params

    rng = np.random.default_rng(seed)
    stem = experiment_stem(cfg, stress)
    cache = out / stem if out is not None else None
    records = []
    desc = f"quadrotor {'stress' if stress else 'held-out'} systems"
    for i in tqdm(range(n_systems), desc=desc, disable=not progress):
        p = stress_params(rng) if stress else sample_quadrotor_params(rng, "test")
        p = p.replace(gust_std=0.0)
        flight_cfg = dataclasses.replace(cfg, seed=seed + i, video=video and i == 0)
        with_curve = i < curve_systems
        key = _vehicle_key(
            # the model's identity is model_id, not the path it was loaded from
            {"params": p.to_dict(), "cfg": {**dataclasses.asdict(flight_cfg), "checkpoint": None},
             "model": model_id,
             "curve": list(CURVE_SHOTS) if with_curve else []}
        )  # fmt: skip
        path = cache / f"vehicle_{i}.json" if cache is not None else None
        if resume and path is not None and path.exists():
            rec = json.loads(path.read_text())
            if rec.get("key") == key:
                records.append(rec)
                continue
        rec = _fly_vehicle(p, metasym_loader, flight_cfg, with_curve, progress)
        rec["key"] = key
        frames = rec.pop("video_frames", None)
        if frames and out is not None:
            _write_video(frames, out / f"{stem}_flight.mp4", cfg.video_every)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rec))
        records.append(rec)
    per_system = [
        {m: {k: v for k, v in row.items() if k != "error_m"} for m, row in rec["metrics"].items()}
        for rec in records
    ]
    summary: dict[str, Any] = {
        "systems": per_system,
        "params": [rec["params"] for rec in records],
        # wall time of the flights themselves, resumed vehicles included
        "flight_seconds": float(sum(rec.get("seconds", 0.0) for rec in records)),
        **summarise(per_system, cfg.controller),
    }
    curves = [rec["curve"] for rec in records if rec.get("curve")]
    if curves:
        shots = list(curves[0])
        summary["curve"] = {
            "systems": len(curves),
            "median": {k: float(np.median([c[k] for c in curves])) for k in shots},
            "worst": {k: float(np.max([c[k] for c in curves])) for k in shots},
            "per_system": curves,
        }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(summary, indent=1))
        experiment_plots(records, cfg, out / stem)
    return summary


def _fly_vehicle(
    p: QuadrotorParams,
    metasym_loader: Callable[[], DynamicsModel],
    cfg: DemoConfig,
    with_curve: bool,
    progress: bool,
) -> dict[str, Any]:
    """One vehicle: every method's flight metrics, the reference and paths (x, y, z), the
    curve when asked, and (with `cfg.video`) the adapted MetaSym's frames."""
    t0 = time.perf_counter()
    results, adapt_s, env = fly_figure8(p, metasym_loader(), cfg, progress=progress)
    rec: dict[str, Any] = {
        "params": p.to_dict(),
        "support_adapt_s": adapt_s,
        "metrics": {name: flight_metrics(r, env) for name, r in results.items()},
        "reference": np.round(next(iter(results.values())).x_ref[:, :3], 4).tolist(),
        "paths": {name: np.round(r.states[:, :3], 4).tolist() for name, r in results.items()},
    }
    frames = next((r.frames for r in results.values() if r.frames), [])
    if frames:
        rec["video_frames"] = frames
    env.close()
    if with_curve:
        rec["curve"] = adaptation_curve(p, metasym_loader(), cfg)
    rec["seconds"] = time.perf_counter() - t0
    return rec


def _write_video(frames: list[np.ndarray], path: Path, every: int) -> None:
    """MP4 of the frames at real time (one frame every `every` 20 ms steps)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, [np.asarray(f) for f in frames], fps=round(1 / (0.02 * every)))


def experiment_plots(records: list[dict[str, Any]], cfg: DemoConfig, stem: Path) -> list[Path]:
    """`<stem>_error.png` (tracking error over time: median over vehicles and the
    interquartile band, per method), `<stem>_path.png` (vehicle 0's 3-D paths against the
    reference) and, when flown, `<stem>_curve.png` (RMSE against the number of support
    flights K). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    methods = list(records[0]["metrics"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for m in methods:
        traces = [rec["metrics"][m]["error_m"] for rec in records]
        n = max(len(t) for t in traces)
        # a crashed flight stops early: its error stays NaN after the crash
        a = np.full((len(traces), n), np.nan)
        for j, t in enumerate(traces):
            a[j, : len(t)] = t
        times = np.arange(n) * 0.02
        with np.errstate(all="ignore"):
            med = np.nanmedian(a, axis=0)
            lo, hi = np.nanpercentile(a, 25, axis=0), np.nanpercentile(a, 75, axis=0)
        (line,) = ax.plot(times, med, lw=1.2, label=m)
        ax.fill_between(times, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    ax.set(xlabel="time (s)", ylabel="position error (m)", yscale="log")
    ax.set_title(f"tracking error over {len(records)} vehicles (median, 25–75%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(Path(f"{stem}_error.png"))
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig = plt.figure(figsize=(7, 6))
    ax3 = fig.add_subplot(projection="3d")
    ref = np.asarray(records[0]["reference"])
    ax3.plot(ref[:, 0], ref[:, 1], ref[:, 2], "k--", lw=1.2, label="reference")
    for m in methods:
        path = np.asarray(records[0]["paths"][m])
        ax3.plot(path[:, 0], path[:, 1], path[:, 2], lw=1.0, label=m)
    ax3.set(xlabel="x (m)", ylabel="y (m)", zlabel="z (m)", title="vehicle 0: flown paths")
    ax3.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    written.append(Path(f"{stem}_path.png"))
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    curves = [rec["curve"] for rec in records if rec.get("curve")]
    if curves:
        shots = [int(k) for k in curves[0]]
        a = np.array([[c[str(k)] for k in shots] for c in curves])
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for row in a:
            ax.plot(shots, row, color="0.75", lw=0.8)
        ax.plot(shots, np.median(a, axis=0), "o-", color="C1", lw=1.6, label="median")
        ax.set(
            xlabel="support flights K", ylabel="figure-8 RMSE (m)", yscale="log",
            title=f"{cfg.controller.upper()} + MetaSym adapted on K flights",
        )  # fmt: skip
        ax.set_xticks(shots)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(Path(f"{stem}_curve.png"))
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


__all__ = [
    "CURVE_SHOTS",
    "QuadrotorGoal",
    "adaptation_curve",
    "experiment_plots",
    "flight_metrics",
    "quadrotor_experiment",
    "quadrotor_tables",
    "stress_params",
    "summarise",
]
