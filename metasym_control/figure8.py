"""One figure-8 flight of a held-out quadrotor with every method (the demo's and the experiment's).

`fly_figure8` records a few seconds of exploratory flight of the unseen vehicle, adapts the
meta-trained MetaSym on it, and flies the same figure-8 from the same start with the
cascaded PD and with the MPC (MPPI or RTI) over the nominal physics, the adapted MetaSym
(re-adapting online) and the true physics. `figure8_experiment.quadrotor_experiment`
repeats it over many held-out quadrotors and a stress set beyond the test range.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

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
    """The demo's MPC (`kind` "mppi" or "rti") over `model`, with the registry's fallback.

    With `cfg.disturbance_gain` the MPC is offset-free, and so is the nominal-RTI fallback,
    whose estimate follows every step flown (`NMPC.observe`), not only the refused ones.
    """
    from metasym_control.controllers.mppi import MPPI, MPPIConfig
    from metasym_control.controllers.nmpc import NMPC, NMPCConfig
    from metasym_control.systems import get_system

    # when no plan can be trusted: the registry's fallback (the cascaded PD on the nominal
    # physics) stabilises the held-out vehicles; the nominal hover command does not
    # the line search, for the models RTI linearises numerically (the learned ones): an
    # analytic model's symbolic linearisation made the full step the best on every
    # development vehicle, and its rollouts would only cost time (docs/controllers.md)
    fractions = () if callable(getattr(model, "casadi_step", None)) else cfg.rti_step_fractions
    make_fallback = get_system("quadrotor").fallback
    fallback = make_fallback(task, 0.02) if make_fallback is not None else None
    chosen = cfg.rti_fallback if kind == "rti" else cfg.mppi_fallback
    if chosen == "nominal_rti":
        from metasym_control.envs.quadrotor import QuadrotorParams
        from metasym_control.models.quadrotor_analytic import QuadrotorModel

        # RTI on the nominal physics flew every held-out vehicle of the experiment (test
        # range and stress set) without a crash; the nominal PD crashed on half the stress
        # set, and a learned loop that fell back to it there went down with it
        nominal = QuadrotorModel(QuadrotorParams(), substeps=4)
        # the backup flies the unrecoverable steps itself: its PD would not brake them
        backup = NMPCConfig(
            horizon=cfg.horizon,
            mode="rti",
            disturbance_gain=cfg.disturbance_gain,
            supervise=False,
        )
        fallback = NMPC(nominal, task, backup, fallback=fallback)
    if kind == "mppi":
        mcfg = MPPIConfig(
            horizon=cfg.horizon,
            num_samples=cfg.samples,
            noise_sigma=0.15,
            noise_beta=1.0,
            seed=cfg.seed,
            disturbance_gain=cfg.disturbance_gain,
            supervise=cfg.supervise,
        )
        return MPPI(model, task, mcfg, device=device, fallback=fallback)
    ncfg = NMPCConfig(
        horizon=cfg.horizon,
        mode="rti",
        trusted_constraints=cfg.rti_trust_bounds,
        trust_repair=cfg.rti_trust_repair,
        step_fractions=fractions,
        disturbance_gain=cfg.disturbance_gain,
        supervise=cfg.supervise,
    )
    return NMPC(model, task, ncfg, fallback=fallback)


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
        OnlineAdaptConfig(
            window=100,
            every=50,
            latency=5,
            budget=cfg.adapt_budget,
            prior=support if cfg.online_support else None,
            anchor=cfg.online_anchor,
            holdout=cfg.online_holdout,
        )
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
