"""Closed-loop trials on every system: the experiment command, the per-system demos, the
Pendulum-v1 user-system path and MPC with the shipped float32 checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli

from metasym_control.controller import History
from metasym_control.dynamics import AdaptBudget, DynamicsModel
from metasym_control.experiment import (
    ADAPTED,
    NOMINAL,
    ORACLE,
    ROLES,
    ZERO,
    Goal,
    TrialConfig,
    held_out_params,
    run_trial,
)
from metasym_control.generate import generate_data
from metasym_control.model_error import constant_error, rollout_error
from metasym_control.pretrained import RECIPES, load_pretrained
from metasym_control.systems import get_system

TINY_ADAPT = AdaptBudget(inner_steps=2, lr=3e-3, optimizer="adam", horizon=2)


def test_goals_read_ratios_gaps_and_counts() -> None:
    values = {ADAPTED: [1.0, 2.0, 3.0], ORACLE: [1.0, 1.0, 2.0], ZERO: [0.0, 1.0, 0.0]}
    assert Goal("s", "cost", ORACLE, "ratio", 1.3).check(values) == (1.5, False)
    assert Goal("s", "f", ZERO, "gap", 1.0, at_most=False).check(values) == (1.0, True)
    assert Goal("s", "ok", ADAPTED, "count", 3, at_most=False).check(values) == (3.0, True)
    assert Goal("s", "ok", ADAPTED, "count", 4, at_most=False).check(values)[1] is False


def test_experiment_runs_end_to_end_and_writes_its_section(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = tmp_path / "BENCHMARKS.md"
    run_cli(
        monkeypatch,
        "experiment",
        "--envs", "quantum",
        "--systems", "2",
        "--steps", "6",
        "--samples", "16",
        "--out", str(tmp_path / "exp"),
        "--benchmarks", str(bench),
        "--export-csv",
    )  # fmt: skip
    from metasym_control.user_data import read_log

    for i in range(2):
        assert read_log(tmp_path / "exp" / "logs" / f"quantum_{i}_adapted.csv", "quantum").num == 1
    summary = json.loads((tmp_path / "exp" / "quantum_mppi.json").read_text())
    assert set(summary["values"]["fidelity_2nd_half"]) == set(ROLES)
    for role, v in summary["values"]["cost"].items():
        assert len(v) == 2 and np.all(np.isfinite(v)), role
    assert [g["text"] for g in summary["goals"]] == [
        "fidelity ≥ oracle MPC's − 0.05",
        "fidelity ≥ zero drive's + 0.1",
    ]
    text = bench.read_text()
    assert "<!-- section:experiment-quantum-mppi -->" in text
    assert "metasym-control experiment --envs quantum --systems 2" in text
    assert "MPPI + MetaSym (adapted)" in capsys.readouterr().out
    # a named run (e.g. a checkpoint that is not shipped) keeps its own section
    run_cli(
        monkeypatch, "experiment", "--envs", "quantum", "--systems", "1", "--steps", "3",
        "--samples", "8", "--out", str(tmp_path / "named"), "--benchmarks", str(bench),
        "--section", "candidate",
    )  # fmt: skip
    named = bench.read_text()
    assert named.startswith(text.split("<!-- /section:experiment-quantum-mppi -->")[0])
    assert "<!-- section:experiment-quantum-mppi-candidate -->" in named
    assert "(run candidate)" in named and "--systems 1 --controller mppi" in named
    assert "--section candidate" in named


@pytest.mark.parametrize("system", ["spring_mesh", "quantum"])
def test_system_demo_writes_table_plot_and_video(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, system: str
) -> None:
    out = tmp_path / system
    run_cli(
        monkeypatch,
        "demo", "--env", system, "--steps", "4", "--samples", "16", "--adapt-steps", "2",
        "--out", str(out), "--export-csv",
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["system"] == system
    assert list(summary["metrics"]) == [
        "zero action",
        "MPPI + nominal physics",
        "MPPI + MetaSym (adapted)",
        "MPPI + oracle physics",
    ]
    for name, m in summary["metrics"].items():
        assert np.isfinite(m["cost"]) and m["terminated"] == 0, name
    for f in ("table.md", f"{system}.png", f"metasym_{system}.mp4", f"metasym_{system}.gif"):
        assert (out / f).stat().st_size > 0, f
    # the flown runs as logs in the system's CSV schema, which `adapt --data` reads back
    from metasym_control.user_data import read_log

    log = read_log(out / "mppi_metasym_adapted.csv", system)
    assert log.num == 1 and log.lengths[0] == 4


def test_the_mesh_hold_edge_task_flies_with_the_adapted_metasym(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "hold"
    run_cli(
        monkeypatch,
        "demo", "--env", "spring_mesh", "--task", "hold_edge", "--steps", "3", "--samples", "16",
        "--adapt-steps", "2", "--no-video", "--out", str(out),
    )  # fmt: skip
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    assert np.isfinite(metrics["MPPI + MetaSym (adapted)"]["cost"])


def test_a_trial_with_rti_flies_the_adapted_float32_checkpoint() -> None:
    # the shipped checkpoint as loaded (float32), no dtype given to the controller; the mesh's
    # RTI with MetaSym is covered below (its analytic rows build a large CasADi problem)
    system = "quantum"
    entry = get_system(system)
    (params,) = held_out_params(entry, 1, seed=3)
    model = load_pretrained(system)
    assert next(model.parameters()).dtype == torch.float32
    cfg = TrialConfig(steps=4, controller="rti", horizon=5, adapt=TINY_ADAPT, support_steps=20)
    trial = run_trial(entry, params, model, cfg, seed=3)
    for role in (NOMINAL, ADAPTED, ORACLE):
        run = trial.runs[role]
        assert len(run.actions) == 4 and np.all(np.isfinite(run.actions)), role
        assert all("fallback" in info for info in run.infos), role
    trial.env.close()


@pytest.mark.parametrize("system", ["spring_mesh", "quantum", "quadrotor"])
def test_mppi_and_rti_take_a_float32_metasym_with_a_history(system: str) -> None:
    from metasym_control.controllers.mppi import MPPI, MPPIConfig
    from metasym_control.controllers.nmpc import NMPC, NMPCConfig

    entry = get_system(system)
    model = load_pretrained(system)
    env = entry.make_env()
    env.reset(seed=0)
    base = env.unwrapped
    history = History(model.history_len, base.task.state_dim, base.task.action_dim)
    x = base.get_state()
    for _ in range(3):
        history.push(x, np.zeros(base.task.action_dim))
    for ctrl in (
        MPPI(model, base.task, MPPIConfig(horizon=4, num_samples=8)),
        NMPC(model, base.task, NMPCConfig(horizon=4, mode="rti")),
    ):
        assert ctrl.dtype == torch.float32
        u = ctrl.act(x, 0.0, history)
        assert u.shape == (base.task.action_dim,) and np.all(np.isfinite(u))
        assert ctrl.last_info.get("fault", "none") != "exception", ctrl.last_info
    env.close()


# Adapted on 3 episodes of each held-out system, the 10-step open-loop error over fresh query
# episodes must stay under this fraction of the hold-the-state predictor's. The mesh's and the
# qubit's checkpoints beat it only narrowly (measured about 0.7-0.9 and 0.6-0.95 per system);
# making them accurate is the model-accuracy issue's work, and these bounds then tighten.
HOLD_MARGIN = {"quadrotor": 0.5, "spring_mesh": 0.95, "quantum": 0.95}


@pytest.mark.parametrize("key", sorted(RECIPES))
def test_shipped_checkpoints_beat_holding_the_state_on_fresh_held_out_data(
    key: tuple[str, str],
) -> None:
    system, kind = key
    entry = get_system(system)
    model = load_pretrained(system, kind, dtype=torch.float64)
    budget = AdaptBudget(inner_steps=30, lr=3e-3, optimizer="adam", horizon=4)
    errs, holds = [], []
    # fresh held-out systems (test split), seeds no training run used
    for i, params in enumerate(held_out_params(entry, 3, seed=9173)):
        support = generate_data(system, 1, 3, None, "test", 9200 + i, params=[params])
        query = generate_data(system, 1, 2, 40, "test", 9300 + i, params=[params])
        adapted = model.adapt(support, budget)
        errs.append(rollout_error(adapted, query, 10))  # type: ignore[arg-type]
        holds.append(constant_error(model, query, 10))
    err, hold = float(np.mean(errs)), float(np.mean(holds))
    assert err < HOLD_MARGIN[system] * hold, (system, kind, errs, holds)


@pytest.mark.slow
def test_pendulum_user_system_path_runs_end_to_end(tmp_path: Path) -> None:
    # generate -> train -> adapt -> MPPI on a held-out pendulum, at a tiny training size;
    # the protocol itself is checked: MPPI on the true model swings up, zero torque does not
    from metasym_control.examples.pendulum import PendulumPathArgs, pendulum_swing_up

    args = PendulumPathArgs(
        out=tmp_path, n_tasks=2, episodes=2, meta_steps=2, systems=1, samples=64, progress=False
    )
    summary = pendulum_swing_up(args)
    assert (tmp_path / "checkpoint.safetensors").exists()
    ok = summary["values"]["swing_up"]
    assert ok[ORACLE] == [1.0] and ok[ZERO] == [0.0]
    assert len(ok[ADAPTED]) == 1 and len(ok[NOMINAL]) == 1
    assert summary["goals"][0]["text"].startswith("swung up")


def test_quadrotor_figure8_experiment_runs_end_to_end(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bench = tmp_path / "BENCHMARKS.md"
    argv = (
        "experiment", "--envs", "quadrotor", "--systems", "2", "--seconds", "0.3",
        "--samples", "16", "--controller", "rti", "--out", str(tmp_path),
        "--benchmarks", str(bench), "--curve-systems", "1",
    )  # fmt: skip
    run_cli(monkeypatch, *argv)
    for name in ("quadrotor_rti.json", "quadrotor_rti_stress.json"):
        summary = json.loads((tmp_path / name).read_text())
        assert len(summary["systems"]) == 2
        assert set(summary["methods"]) == {
            "cascaded PD (nominal)",
            "RTI + nominal physics",
            "RTI + MetaSym (adapted)",
            "RTI + MetaSym (unadapted)",
            "RTI + MLP (adapted)",
            "RTI + physics, least-squares identified",
            "RTI + oracle physics",
        }
        assert [g["text"].split()[0] for g in summary["goals"]] == [
            "no", "MetaSym's", "median", "worst", "median", "better",
        ]  # fmt: skip
        adapted = summary["methods"]["RTI + MetaSym (adapted)"]
        assert adapted["act_ms"] > 0 and adapted["effort_n"] > 0
        assert isinstance(adapted["fallback_kinds"], dict)
        assert adapted["unrecoverable"] == 0  # a 0.3 s flight stays far from the floor
        # the RMSE-against-K curve: K = 0, 1, 2, 4 support flights on the first vehicle
        assert summary["curve"]["systems"] == 1
        assert list(summary["curve"]["median"]) == ["0", "1", "2", "4"]
    for suffix in ("_error.png", "_path.png", "_curve.png", "_flight.mp4", ".md"):
        assert (tmp_path / f"quadrotor_rti{suffix}").stat().st_size > 0, suffix
    assert (tmp_path / "quadrotor_rti_stress" / "vehicle_1.json").exists()
    # the stress set is beyond the test range yet flyable: thrust-to-weight >= 1.5
    stress = json.loads((tmp_path / "quadrotor_rti_stress.json").read_text())["params"]
    for p in stress:
        assert p["mass"] >= 2.0 and 4 * p["max_thrust"] >= 1.5 * 9.81 * p["mass"]
        assert np.hypot(*p["wind"][:2]) <= 0.25 * 9.81 * p["mass"] + 1e-9
    text = bench.read_text()
    assert "section:experiment-quadrotor-rti-stress" in text
    assert "--controller rti --seed 100 --seconds 0.3 --samples 16 --curve-systems 1`" in text

    # an interrupted run resumes: the same command flies no vehicle again
    import metasym_control.figure8_experiment as fx

    before = json.loads((tmp_path / "quadrotor_rti.json").read_text())

    def no_flight(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished vehicle was flown again")

    monkeypatch.setattr(fx, "_fly_vehicle", no_flight)
    run_cli(monkeypatch, *argv)
    assert json.loads((tmp_path / "quadrotor_rti.json").read_text()) == before
    # so does the same model saved elsewhere (the key holds its weights, not its path)
    from metasym_control.checkpoint import load_checkpoint, save_checkpoint
    from metasym_control.weights import DEFAULT_WEIGHTS

    save_checkpoint(tmp_path / "copy" / "ck", load_checkpoint(DEFAULT_WEIGHTS)[0])
    run_cli(monkeypatch, *argv, "--checkpoint", str(tmp_path / "copy" / "ck"))
    # another setting (here the flight's length) is not taken from the cache
    with pytest.raises(AssertionError, match="flown again"):
        run_cli(monkeypatch, *argv[:6], "0.2", *argv[7:])


def test_the_figure8_experiment_is_the_same_twice_under_one_seed() -> None:
    """Two fresh runs (no cache) with one seed at one thread count: the same RMSE, crashes
    and fallbacks for every method (the wall-time columns are measurements, not results)."""
    import dataclasses

    from metasym_control.checkpoint import load_checkpoint
    from metasym_control.demo_config import DemoConfig
    from metasym_control.figure8_experiment import quadrotor_experiment
    from metasym_control.weights import DEFAULT_WEIGHTS

    cfg = dataclasses.replace(
        DemoConfig(), seconds=0.4, samples=16, video=False, include_unadapted=True,
        include_identified=True,
    )  # fmt: skip

    def loader() -> DynamicsModel:
        return load_checkpoint(DEFAULT_WEIGHTS, dtype=torch.float64)[0]

    keep = ("rmse_m", "crashed", "fallback_share", "fallbacks", "effort_n")
    runs = [quadrotor_experiment(1, 31, cfg, loader, progress=False)["systems"] for _ in range(2)]
    first, second = ({m: {k: s[0][m][k] for k in keep} for m in s[0]} for s in runs)
    assert first == second


@pytest.mark.slow
def test_a_short_adapted_loop_tracks_better_than_the_unadapted_model() -> None:
    """A held-out quadrotor (the experiment's first vehicle), 3 s of figure-8 with MPPI: the
    MetaSym adapted on the support flight and re-adapted online tracks better than the same
    checkpoint unadapted (the 20-vehicle experiment: better on 20 of 20, 2.2-3.2x)."""
    import dataclasses

    from metasym_control.checkpoint import load_checkpoint
    from metasym_control.demo_config import DemoConfig
    from metasym_control.envs.quadrotor import sample_quadrotor_params
    from metasym_control.figure8 import fly_figure8, method_names, unadapted_name
    from metasym_control.weights import DEFAULT_WEIGHTS

    params = sample_quadrotor_params(np.random.default_rng(200), "test").replace(gust_std=0.0)
    cfg = dataclasses.replace(
        DemoConfig(), seconds=3.0, samples=128, video=False, include_mlp=False,
        include_oracle=False, include_unadapted=True, seed=200,
    )  # fmt: skip
    model = load_checkpoint(DEFAULT_WEIGHTS, dtype=torch.float64)[0]
    results, _, env = fly_figure8(params, model, cfg)
    base = env.unwrapped
    adapted = results[method_names("mppi")[1]].tracking_rmse(base)
    unadapted = results[unadapted_name("mppi")].tracking_rmse(base)
    env.close()
    # measured 0.212 against 0.336 m (one thread); the start from rest weighs on 3 s
    assert adapted < 0.8 * unadapted, (adapted, unadapted)


@pytest.mark.parametrize("fallback", ["nominal_rti", "pd"])
def test_the_figure8_rti_falls_back_to_the_chosen_controller(fallback: str) -> None:
    """RTI for the figure-8: no trusted-region bounds in the QP; a refused step flies RTI on
    the nominal physics (which itself falls back to the PD), or the PD directly."""
    import dataclasses

    import gymnasium as gym

    from metasym_control.controllers.cascaded_pd import CascadedPD
    from metasym_control.controllers.nmpc import NMPC
    from metasym_control.demo_config import DemoConfig
    from metasym_control.figure8 import make_quadrotor_mpc
    from metasym_control.models.baselines import MLPModel
    from metasym_control.models.quadrotor_analytic import QuadrotorModel

    env = gym.make("MetaSymQuadrotor-v0", task="figure8")
    cfg = dataclasses.replace(DemoConfig(), controller="rti", rti_fallback=fallback)
    task = env.unwrapped.task  # type: ignore[attr-defined]
    ctrl = make_quadrotor_mpc("rti", QuadrotorModel(), task, cfg)
    assert isinstance(ctrl, NMPC) and not ctrl.config.trusted_constraints
    assert ctrl.config.step_fractions == ()  # analytic: the full step
    if fallback == "pd":
        assert isinstance(ctrl.fallback, CascadedPD)
    else:
        assert isinstance(ctrl.fallback, NMPC) and isinstance(ctrl.fallback.model, QuadrotorModel)
        assert ctrl.fallback.config.step_fractions == ()
        assert isinstance(ctrl.fallback.fallback, CascadedPD)
        # the backup flies the unrecoverable steps itself, not on its PD
        assert ctrl.config.supervise and not ctrl.fallback.config.supervise
    # a learned model gets the line search
    learned = make_quadrotor_mpc("rti", MLPModel(13, 4, 0.02), task, cfg)
    assert isinstance(learned, NMPC)
    assert learned.config.step_fractions == cfg.rti_step_fractions != ()
    assert not learned.config.trust_repair and not learned.config.trusted_constraints
    env.close()


@pytest.mark.parametrize("mass, wind", [(2.3, (4.5, 0.0)), (2.2, (0.0, -4.0))])
def test_mppi_that_trusts_no_plan_keeps_a_heavy_vehicle_flying_on_nominal_rti(
    mass: float, wind: tuple[float, float]
) -> None:
    """Every MPPI plan refused (an empty trusted region in the yaw rate): on a stress-set
    vehicle (heavy, in a strong steady wind) the fallback flies the whole figure-8. RTI on
    the nominal physics keeps it in the air and near the path; the nominal PD crashes or
    strays (measured 0.35 m against a crash at step 111, and 0.35 against 1.21 m)."""
    import dataclasses

    import gymnasium as gym

    from metasym_control.closed_loop import run_closed_loop
    from metasym_control.controllers.nmpc import NMPC
    from metasym_control.demo_config import DemoConfig
    from metasym_control.envs.quadrotor import QuadrotorParams
    from metasym_control.figure8 import make_quadrotor_mpc
    from metasym_control.models.quadrotor_analytic import QuadrotorModel

    class Distrustful(QuadrotorModel):
        def __init__(self) -> None:
            super().__init__(QuadrotorParams())
            self.trusted_lower = np.full(13, -np.inf)
            self.trusted_upper = np.full(13, np.inf)
            self.trusted_lower[12], self.trusted_upper[12] = np.inf, -np.inf

    heavy = QuadrotorParams(
        mass=mass, inertia=(0.05, 0.05, 0.08), max_thrust=13.0, wind=(*wind, 0.0)
    )
    steps = 200

    def fly(fallback: str) -> tuple[float, bool]:
        cfg = dataclasses.replace(DemoConfig(), samples=32, mppi_fallback=fallback)
        env = gym.make("MetaSymQuadrotor-v0", task="figure8", params=heavy,
                       max_episode_steps=steps)  # fmt: skip
        ctrl = make_quadrotor_mpc("mppi", Distrustful(), env.unwrapped.task, cfg)  # type: ignore[attr-defined]
        assert isinstance(ctrl.fallback, NMPC) == (fallback == "nominal_rti")  # type: ignore[attr-defined]
        r = run_closed_loop(env, ctrl, steps, seed=0)
        env.close()
        assert {i["fallback"] for i in r.infos} == {"controller"}  # every step refused
        err = np.linalg.norm(r.states[:, :3] - r.x_ref[:, :3], axis=1)
        return float(np.sqrt(np.mean(err**2))), bool(r.terminated)

    rmse_rti, crashed_rti = fly("nominal_rti")
    assert not crashed_rti and rmse_rti < 0.5
    rmse_pd, crashed_pd = fly("pd")
    assert crashed_pd or rmse_pd > 2 * rmse_rti, (rmse_pd, rmse_rti)


def test_the_experiment_passes_its_flight_options_to_every_flight() -> None:
    from metasym_control.experiment import ExperimentArgs
    from metasym_control.usage import UsageError

    args = ExperimentArgs(envs=("quadrotor",), controller="rti", online_holdout=25,
                          rti_trust_bounds=True, rti_fallback="pd", samples=64)  # fmt: skip
    cfg = args.flight_config()
    assert (cfg.controller, cfg.online_holdout, cfg.rti_trust_bounds) == ("rti", 25, True)
    assert (cfg.rti_fallback, cfg.samples, cfg.include_identified) == ("pd", 64, True)
    with pytest.raises(UsageError, match="--online-holdout"):
        ExperimentArgs(envs=("quadrotor",), online_holdout=5).validate()
    with pytest.raises(UsageError, match="--rti-step-fractions"):
        ExperimentArgs(envs=("quadrotor",), rti_step_fractions=(1.0, 0.0)).validate()
    with pytest.raises(UsageError, match="--mppi-fallback"):
        ExperimentArgs(envs=("quadrotor",), mppi_fallback="hover").validate()  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--no-test-range"):
        ExperimentArgs(envs=("quadrotor",), test_range=False, stress=False).validate()
    ExperimentArgs(envs=("quadrotor",), test_range=False, stress=True).validate()


def test_a_table_names_the_non_default_flight_flags() -> None:
    from metasym_control.experiment import ExperimentArgs, flight_flags

    assert flight_flags(ExperimentArgs()) == ""
    args = ExperimentArgs(online=False, rti_trust_bounds=True, online_holdout=25, rti_fallback="pd")
    assert flight_flags(args) == (
        " --no-online --rti-trust-bounds --online-holdout 25 --rti-fallback pd"
    )
    assert flight_flags(ExperimentArgs(rti_step_fractions=())) == " --rti-step-fractions"
    assert flight_flags(ExperimentArgs(rti_trust_repair=True)) == " --rti-trust-repair"
    assert flight_flags(ExperimentArgs(mppi_fallback="pd")) == " --mppi-fallback pd"
    unsupervised = ExperimentArgs(supervise=False)
    assert flight_flags(unsupervised) == " --no-supervise"
    assert not unsupervised.flight_config().supervise
    # the free offset: offset-free flights only, where an observer supplies it
    free = ExperimentArgs(disturbance_gain=0.3)
    assert flight_flags(free) == " --disturbance-gain 0.3"
    assert free.flight_config().adapt_budget.free_offset
    assert not ExperimentArgs().flight_config().adapt_budget.free_offset
    usual = ExperimentArgs(disturbance_gain=0.3, adapt_free_offset=False)
    assert flight_flags(usual) == " --no-adapt-free-offset --disturbance-gain 0.3"
    assert not usual.flight_config().adapt_budget.free_offset
    line_search = ExperimentArgs(rti_step_fractions=(1.0, 0.5))
    assert flight_flags(line_search) == " --rti-step-fractions 1 0.5"
    assert line_search.flight_config().rti_step_fractions == (1.0, 0.5)
    # the adaptation budget of the support flight and the online updates
    matched = ExperimentArgs(adapt_steps=3, adapt_lr=1e-2, adapt_horizon=1)
    assert flight_flags(matched) == " --adapt-steps 3 --adapt-lr 0.01 --adapt-horizon 1"
    budget = matched.flight_config().adapt_budget
    assert (budget.inner_steps, budget.lr, budget.horizon) == (3, 1e-2, 1)


def test_offset_free_flights_are_named_and_kept_apart() -> None:
    import gymnasium as gym

    from metasym_control.controllers.mppi import MPPI
    from metasym_control.controllers.nmpc import NMPC
    from metasym_control.experiment import ExperimentArgs, flight_flags
    from metasym_control.figure8 import make_quadrotor_mpc
    from metasym_control.figure8_experiment import experiment_stem
    from metasym_control.models.quadrotor_analytic import QuadrotorModel
    from metasym_control.usage import UsageError

    args = ExperimentArgs(envs=("quadrotor",), controller="rti", disturbance_gain=0.3)
    cfg = args.flight_config()
    assert flight_flags(args) == " --disturbance-gain 0.3"
    # its own tables, plots, cache and BENCHMARKS.md section beside the plain run's
    assert experiment_stem(cfg, stress=True) == "quadrotor_rti_offset_free_stress"
    assert experiment_stem(ExperimentArgs().flight_config(), stress=False) == "quadrotor_mppi"
    env = gym.make("MetaSymQuadrotor-v0", task="figure8")
    task = env.unwrapped.task  # type: ignore[attr-defined]
    rti = make_quadrotor_mpc("rti", QuadrotorModel(), task, cfg)
    assert isinstance(rti, NMPC) and rti.config.disturbance_gain == 0.3
    # the nominal-RTI fallback too (it follows every step through `observe`)
    assert isinstance(rti.fallback, NMPC) and rti.fallback.config.disturbance_gain == 0.3
    mppi = make_quadrotor_mpc("mppi", QuadrotorModel(substeps=1), task, cfg)
    assert isinstance(mppi, MPPI) and mppi.config.disturbance_gain == 0.3
    env.close()
    with pytest.raises(UsageError, match="--disturbance-gain"):
        ExperimentArgs(envs=("quadrotor",), disturbance_gain=2.0).validate()


def test_offset_free_mppi_keeps_a_heavy_vehicle_flying_on_the_nominal_physics() -> None:
    """The stress set's failure: MPPI on the nominal physics lets a 1.7x heavier vehicle in
    wind sink into the ground; the offset-free MPPI learns the missing thrust and flies (both
    unsupervised: the supervisor would keep the plain one up, tests/controllers)."""
    import dataclasses

    import gymnasium as gym

    from metasym_control.closed_loop import run_closed_loop
    from metasym_control.demo_config import DemoConfig
    from metasym_control.envs.quadrotor import QuadrotorParams
    from metasym_control.figure8 import make_quadrotor_mpc
    from metasym_control.models.quadrotor_analytic import QuadrotorModel

    heavy = QuadrotorParams(mass=2.25, inertia=(0.055, 0.035, 0.09), wind=(2.8, 0.5, 0.0))
    env = gym.make("MetaSymQuadrotor-v0", task="figure8", params=heavy, init_noise=0.0)
    task = env.unwrapped.task  # type: ignore[attr-defined]
    runs = {}
    for gain in (0.0, 0.3):
        cfg = dataclasses.replace(DemoConfig(), disturbance_gain=gain, supervise=False)
        ctrl = make_quadrotor_mpc("mppi", QuadrotorModel(substeps=1), task, cfg)
        runs[gain] = run_closed_loop(env, ctrl, 200, seed=0)
    env.close()
    assert runs[0.0].terminated  # down within 4 s
    assert not runs[0.3].terminated and len(runs[0.3].actions) == 200
    assert runs[0.3].tracking_rmse(env.unwrapped) < 0.25


def test_the_table_counts_the_steps_the_supervisor_handed_over() -> None:
    """Per method, the steps flown by the fallback because the vehicle could no longer brake
    (fault "unrecoverable") are summed over the vehicles and named beside the kinds;
    vehicles recorded before the count existed count none."""
    from metasym_control.figure8 import method_names
    from metasym_control.figure8_experiment import PD, quadrotor_tables, summarise

    names = [PD, *method_names("mppi")]

    def flight(rmse: float, fallbacks: dict[str, int], unrecoverable: int | None) -> dict:
        m = {
            "rmse_m": rmse,
            "crashed": 0.0,
            "fallback_share": sum(fallbacks.values()) / 400,
            "fallbacks": fallbacks,
            "effort_n": 0.2,
            "act_ms": 20.0,
            "adapt_s": float("nan"),
        }
        return m if unrecoverable is None else {**m, "unrecoverable": unrecoverable}

    supervised = {n: flight(0.1, {}, 0) for n in names}
    supervised[names[1]] = flight(0.2, {"controller": 12}, 12)
    older = {n: flight(0.1, {}, None) for n in names}  # recorded before the count
    older[names[1]] = flight(0.3, {"controller": 5}, None)
    runs = [supervised, older]
    summary = summarise(runs, "mppi")
    assert summary["methods"][names[1]]["unrecoverable"] == 12
    assert summary["methods"][names[2]]["unrecoverable"] == 0
    table = quadrotor_tables(summary)
    row = next(line for line in table.splitlines() if line.startswith(f"| {names[1]} |"))
    assert "controller 17 (12 unrecoverable)" in row
    assert "unrecoverable" not in next(
        line for line in table.splitlines() if line.startswith(f"| {names[2]} |")
    )
