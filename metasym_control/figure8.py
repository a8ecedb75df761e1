"""One figure-8 flight of a held-out quadrotor with every method (the demo's and the experiment's).

`fly_figure8` records a few seconds of exploratory flight of the unseen vehicle, adapts the
meta-trained MetaSym on it, and flies the same figure-8 from the same start with the
cascaded PD and with the MPC (MPPI or RTI) over the nominal physics, the adapted MetaSym
(re-adapting online) and the true physics. `quadrotor_experiment` repeats it over many
held-out quadrotors and a stress set beyond the test range.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from metasym_control.closed_loop import ClosedLoopResult, OnlineAdaptConfig, run_closed_loop
from metasym_control.controller import Controller
from metasym_control.demo_config import DemoConfig
from metasym_control.dynamics import DynamicsModel

if TYPE_CHECKING:
    from metasym_control.envs.quadrotor import QuadrotorParams

logger = logging.getLogger(__name__)

PD = "cascaded PD (nominal)"


def make_quadrotor_mpc(
    kind: str, model: DynamicsModel, task: Any, cfg: DemoConfig, device: str = "cpu"
) -> Controller:
    """The demo's MPC (`kind` "mppi" or "rti") over `model`, with the registry's fallback."""
    from metasym_control.controllers.mppi import MPPI, MPPIConfig
    from metasym_control.controllers.nmpc import NMPC, NMPCConfig
    from metasym_control.systems import get_system

    # when no plan can be trusted: the registry's fallback (the cascaded PD on the nominal
    # physics) stabilises the held-out vehicles; the nominal hover command does not
    make_fallback = get_system("quadrotor").fallback
    fallback = make_fallback(task, 0.02) if make_fallback is not None else None
    if kind == "mppi":
        mcfg = MPPIConfig(
            horizon=cfg.horizon,
            num_samples=cfg.samples,
            noise_sigma=0.15,
            noise_beta=1.0,
            seed=cfg.seed,
        )
        return MPPI(model, task, mcfg, device=device, fallback=fallback)
    return NMPC(model, task, NMPCConfig(horizon=cfg.horizon, mode="rti"), fallback=fallback)


def method_names(controller: str) -> tuple[str, str, str]:
    """Names of the nominal, adapted-MetaSym and oracle runs for `controller`."""
    mpc = controller.upper()
    return f"{mpc} + nominal physics", f"{mpc} + MetaSym (adapted)", f"{mpc} + oracle physics"


def mlp_name(controller: str) -> str:
    """Name of the adapted-MLP run for `controller`."""
    return f"{controller.upper()} + MLP (adapted)"


def identified_name(controller: str) -> str:
    """Name of the run with the least-squares identified physics for `controller`."""
    return f"{controller.upper()} + physics, least-squares identified"


def unadapted_name(controller: str) -> str:
    """Name of the run with the unadapted MetaSym for `controller`."""
    return f"{controller.upper()} + MetaSym (unadapted)"


def fly_figure8(
    true_params: QuadrotorParams,
    metasym: DynamicsModel,
    cfg: DemoConfig,
    progress: bool = False,
) -> tuple[dict[str, ClosedLoopResult], float, Any]:
    """Fly every method on one unseen quadrotor.

    Args:
        true_params: the unseen vehicle.
        metasym: the meta-trained MetaSym (float64 for the controllers' linearisations).
        cfg: the demo's settings (seed, controller, horizon, samples, support and flight
            length, online adaptation, video).
        progress: a tqdm bar per flight.

    Returns:
        The runs by method name (PD first), the adaptation's wall time (s) and the env (open;
        the caller closes it).
    """
    import gymnasium as gym

    from metasym_control.controllers.cascaded_pd import CascadedPD
    from metasym_control.data import collect_quadrotor_dataset
    from metasym_control.envs.quadrotor import QuadrotorParams
    from metasym_control.models.quadrotor_analytic import QuadrotorModel

    nominal = QuadrotorParams()
    # 1. a few seconds of exploratory flight on the unseen system: the support data
    support = collect_quadrotor_dataset(
        n_tasks=1,
        episodes_per_task=1,
        steps=round(cfg.support_seconds / 0.02),
        split="test",
        seed=cfg.seed + 1,
        params=[true_params],
        num_envs=1,
    )
    # 2. the models: nominal physics, MetaSym adapted on the support data, the oracle
    t0 = time.perf_counter()
    adapted = metasym.adapt(support, cfg.adapt_budget)
    adapt_s = time.perf_counter() - t0
    # MPPI rolls out K samples a step: one RK4 substep keeps the physics within 1e-5 of the
    # four-substep model at a quarter of the cost (docs/quadrotor.md)
    substeps = 1 if cfg.controller == "mppi" else 4
    nominal_name, adapted_name, oracle_name = method_names(cfg.controller)
    models: dict[str, DynamicsModel] = {
        nominal_name: QuadrotorModel(nominal, substeps=substeps),
        adapted_name: adapted,
    }
    if cfg.include_mlp:
        from metasym_control.pretrained import load_pretrained

        mlp = load_pretrained("quadrotor", "mlp", dtype=next(metasym.parameters()).dtype)  # type: ignore[attr-defined]
        models[mlp_name(cfg.controller)] = mlp.adapt(support, cfg.adapt_budget)
    if cfg.include_identified:
        models[identified_name(cfg.controller)] = QuadrotorModel(nominal, substeps=substeps).adapt(
            support, cfg.adapt_budget
        )
    if cfg.include_unadapted:
        models[unadapted_name(cfg.controller)] = metasym
    if cfg.include_oracle:
        models[oracle_name] = QuadrotorModel(true_params, substeps=substeps)

    steps = round(cfg.seconds / 0.02)
    env = gym.make(
        "MetaSymQuadrotor-v0",
        task="figure8",
        omega=cfg.omega,
        params=true_params,
        init_noise=0.0,
        render_mode="rgb_array" if cfg.video else None,
        max_episode_steps=steps,
    )
    base: Any = env.unwrapped
    results: dict[str, ClosedLoopResult] = {}
    # 3. the reference controller a user compares MPC against
    baseline = CascadedPD(nominal, base.task, dt=base.dt)
    results[PD] = run_closed_loop(env, baseline, steps, seed=cfg.seed)
    # 4. MPC with each model, MetaSym re-adapting online
    online = (
        OnlineAdaptConfig(window=100, every=50, latency=5, budget=cfg.adapt_budget)
        if cfg.online
        else None
    )
    for name, model in models.items():
        ctrl = make_quadrotor_mpc(cfg.controller, model, base.task, cfg)
        is_metasym = name == adapted_name
        # re-adapted (re-identified) online: every adapted model
        adapting = name in (adapted_name, mlp_name(cfg.controller), identified_name(cfg.controller))
        with tqdm(total=steps, desc=name, leave=False, disable=not progress) as bar:
            results[name] = run_closed_loop(
                env,
                ctrl,
                steps,
                seed=cfg.seed,
                history_len=int(getattr(model, "history_len", 0)),
                online=online if adapting else None,
                render_every=cfg.video_every if (is_metasym and cfg.video) else 0,
                progress=lambda _k: bar.update(1),
            )
    return results, adapt_s, env


# --- many held-out quadrotors ---------------------------------------------------------------


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


@dataclass(frozen=True)
class QuadrotorGoal:
    """The closed-loop issue's goals, per-system ratios summarised by median and worst."""

    oracle_median: float = 1.3
    oracle_worst: float = 1.6
    nominal_median: float = 0.6
    fallback_share: float = 0.02


def summarise(runs: list[dict[str, dict[str, float]]], controller: str) -> dict[str, Any]:
    """Per method: RMSE median / worst / 95% interval, crashes, fallback shares; per-system
    ratios of the adapted MetaSym to the oracle and to the nominal model; the goals."""
    from metasym_control.bench import bootstrap_median_interval

    nominal_name, adapted_name, oracle_name = method_names(controller)
    methods = list(runs[0])
    out: dict[str, Any] = {"methods": {}, "ratios": {}, "goals": []}
    for m in methods:
        rmse = [r[m]["rmse_m"] for r in runs]
        fall = [r[m]["fallback_share"] for r in runs]
        lo, hi = bootstrap_median_interval(rmse)
        out["methods"][m] = {
            "rmse_median": float(np.median(rmse)),
            "rmse_worst": float(np.max(rmse)),
            "rmse_interval": [lo, hi],
            "crashes": int(sum(r[m]["crashed"] for r in runs)),
            "fallback_median": float(np.median(fall)),
            "fallback_worst": float(np.max(fall)),
        }
    to_oracle = [r[adapted_name]["rmse_m"] / r[oracle_name]["rmse_m"] for r in runs]
    to_nominal = [r[adapted_name]["rmse_m"] / r[nominal_name]["rmse_m"] for r in runs]
    out["ratios"] = {
        "to_oracle": {"median": float(np.median(to_oracle)), "worst": float(np.max(to_oracle))},
        "to_nominal": {"median": float(np.median(to_nominal)), "worst": float(np.max(to_nominal))},
    }
    g = QuadrotorGoal()
    crashes = sum(v["crashes"] for v in out["methods"].values())
    share = out["methods"][adapted_name]["fallback_worst"]
    out["goals"] = [
        {"text": "no crash with any model", "value": float(crashes), "met": crashes == 0},
        {
            "text": f"MetaSym's fallbacks under {g.fallback_share:.0%} of its steps (worst system)",
            "value": share,
            "met": share < g.fallback_share,
        },
        {
            "text": f"median ratio to the oracle <= {g.oracle_median}",
            "value": out["ratios"]["to_oracle"]["median"],
            "met": out["ratios"]["to_oracle"]["median"] <= g.oracle_median,
        },
        {
            "text": f"worst ratio to the oracle <= {g.oracle_worst}",
            "value": out["ratios"]["to_oracle"]["worst"],
            "met": out["ratios"]["to_oracle"]["worst"] <= g.oracle_worst,
        },
        {
            "text": f"median ratio to the nominal model <= {g.nominal_median}",
            "value": out["ratios"]["to_nominal"]["median"],
            "met": out["ratios"]["to_nominal"]["median"] <= g.nominal_median,
        },
    ]
    mlp = mlp_name(controller)
    if mlp in methods:
        to_mlp = [r[adapted_name]["rmse_m"] / r[mlp]["rmse_m"] for r in runs]
        out["ratios"]["to_mlp"] = {
            "median": float(np.median(to_mlp)),
            "worst": float(np.max(to_mlp)),
        }
        out["goals"].append(
            {
                "text": "better than the adapted MLP (median ratio < 1)",
                "value": out["ratios"]["to_mlp"]["median"],
                "met": out["ratios"]["to_mlp"]["median"] < 1.0,
            }
        )
    return out


def quadrotor_tables(summary: dict[str, Any]) -> str:
    """Markdown of `summarise`'s result."""
    from metasym_control.bench import markdown_table

    rows: list[list[object]] = []
    for m, v in summary["methods"].items():
        lo, hi = v["rmse_interval"]
        rows.append(
            [
                m,
                f"{v['rmse_median']:.3f}",
                f"{v['rmse_worst']:.3f}",
                f"[{lo:.3f}, {hi:.3f}]",
                v["crashes"],
                f"{100 * v['fallback_median']:.1f} / {100 * v['fallback_worst']:.1f}",
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
    return f"{table}\n\n{goals}"


def quadrotor_experiment(
    n_systems: int,
    seed: int,
    cfg: DemoConfig,
    metasym_loader: Any,
    stress: bool = False,
    progress: bool = True,
    out: Path | None = None,
) -> dict[str, Any]:
    """The figure-8 flown by every method on `n_systems` held-out quadrotors (test range, or
    the stress set), seeded; per-system results and `summarise`'s summary.

    Args:
        n_systems: vehicles.
        seed: seed of the draw; vehicle i flies with seed `seed + i`.
        cfg: flight settings (the demo's; `video` is ignored).
        metasym_loader: `() -> DynamicsModel`, the meta-trained MetaSym.
        stress: draw from `stress_params` instead of the test range.
        progress: a bar over the vehicles.
        out: folder for `quadrotor_<controller>[_stress].json` (None: not written).
    """
    import dataclasses

    from metasym_control.envs.quadrotor import sample_quadrotor_params

    rng = np.random.default_rng(seed)
    per_system: list[dict[str, dict[str, float]]] = []
    params = []
    desc = f"quadrotor {'stress' if stress else 'held-out'} systems"
    for i in tqdm(range(n_systems), desc=desc, disable=not progress):
        p = stress_params(rng) if stress else sample_quadrotor_params(rng, "test")
        p = p.replace(gust_std=0.0)
        params.append(p.to_dict())
        flight_cfg = dataclasses.replace(cfg, seed=seed + i, video=False)
        results, _adapt_s, env = fly_figure8(p, metasym_loader(), flight_cfg)
        base = env.unwrapped
        row: dict[str, dict[str, float]] = {}
        for name, r in results.items():
            fell = [x.get("fallback", "none") not in ("none", None) for x in r.infos]
            row[name] = {
                "rmse_m": r.tracking_rmse(base),
                "crashed": float(r.terminated),
                "fallback_share": float(np.mean(fell)) if fell else 0.0,
            }
        env.close()
        per_system.append(row)
    summary = {"systems": per_system, "params": params, **summarise(per_system, cfg.controller)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        name = f"quadrotor_{cfg.controller}{'_stress' if stress else ''}.json"
        (out / name).write_text(json.dumps(summary, indent=1))
    return summary
