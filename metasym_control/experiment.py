"""Closed-loop trials on any system: zero action and MPPI with nominal, adapted and oracle models.

One trial takes a held-out system, records a few support episodes of it with the system's
exploration policy, adapts a meta-trained checkpoint on them, and runs the same MPPI with
each model from the same start. `run_trial` is what `metasym-control demo --env NAME` shows
for one system; `experiment_main` (`metasym-control experiment`) repeats it over many
held-out systems and seeds, reports median, worst and a bootstrap interval, and checks the
goals of `GOALS` against them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from metasym_control.closed_loop import ClosedLoopResult, run_closed_loop
from metasym_control.controller import History
from metasym_control.demo_config import DemoConfig, FlightOptions
from metasym_control.dynamics import AdaptBudget, DynamicsModel
from metasym_control.params import SystemParams
from metasym_control.systems import SystemEntry, get_system

ZERO = "zero"
NOMINAL = "nominal"
ADAPTED = "adapted"
ORACLE = "oracle"
ROLES = (ZERO, NOMINAL, ADAPTED, ORACLE)
"""The controllers of a trial, by role: zero action, then MPC with the nominal, the adapted
MetaSym and the true (oracle) model."""

MPC_NAMES = {"mppi": "MPPI", "rti": "RTI"}


def label(role: str, controller: str = "mppi") -> str:
    """Display name of a trial's role, e.g. "MPPI + MetaSym (adapted)"."""
    if role == ZERO:
        return "zero action"
    model = {NOMINAL: "nominal physics", ADAPTED: "MetaSym (adapted)", ORACLE: "oracle physics"}
    return f"{MPC_NAMES[controller]} + {model[role]}"


class ZeroAction:
    """The do-nothing controller (action 0 of the normalised range): the baseline of every
    trial, e.g. the mesh ringing down under its own damping, the qubit under no drive."""

    model: DynamicsModel | None = None
    last_plan: np.ndarray | None = None

    def __init__(self, action_dim: int) -> None:
        self.action_dim = action_dim
        self.last_info: dict[str, Any] = {}

    def reset(self) -> None:
        """Nothing to forget."""

    def act(self, state: np.ndarray, t: float, history: History) -> np.ndarray:
        """(nu,) zeros."""
        return np.zeros(self.action_dim)

    def set_model(self, model: DynamicsModel) -> None:
        """Ignored: the zero action uses no model."""


@dataclass(frozen=True)
class TrialConfig:
    """One closed-loop comparison on one held-out system.

    Attributes:
        steps: control steps of each closed-loop episode (None: the system's `trial_steps`).
        support_episodes: exploration episodes of the held-out system MetaSym adapts on.
        support_steps: their length, control steps (None: the system's `episode_steps`).
        controller: "mppi" (sampling, torch) or "rti" (real-time-iteration SQP on CasADi,
            learned models linearised by torch Jacobians).
        horizon, samples, noise_sigma: MPC settings (None: the system's `mpc` defaults;
            samples and noise_sigma are MPPI's).
        adapt: the adaptation budget (Adam on MetaSym's fast weights).
        include_oracle: also run MPPI with the true parameters.
        render: record frames of the adapted-MetaSym run (every `render_every` steps).
        render_every: frame stride.
        env_overrides: constructor arguments of the trial's env on top of the system's
            `env_kwargs` and `trial_kwargs` (e.g. the task); the support data uses them too.
    """

    steps: int | None = None
    support_episodes: int = 3
    support_steps: int | None = None
    controller: Literal["mppi", "rti"] = "mppi"
    horizon: int | None = None
    samples: int | None = None
    noise_sigma: float | None = None
    adapt: AdaptBudget = field(
        default_factory=lambda: AdaptBudget(inner_steps=30, lr=3e-3, optimizer="adam", horizon=4)
    )
    include_oracle: bool = True
    render: bool = False
    render_every: int = 1
    env_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrialResult:
    """What one trial recorded: the system, each role's run and its metrics (keyed by
    `ROLES`), the adaptation's wall time, s, and the (open) env."""

    system: str
    params: SystemParams
    runs: dict[str, ClosedLoopResult]
    metrics: dict[str, dict[str, float]]
    adapt_seconds: float
    env: Any


def episode_metrics(entry: SystemEntry, result: ClosedLoopResult, env: Any) -> dict[str, float]:
    """Scores of one closed-loop run: "cost" (the task's accumulated running cost, i.e.
    minus the summed reward), "final_error" (the task's tracking error at the end, task
    units), "terminated" (0/1), "fallbacks" (fraction of steps on which the controller fell
    back from its plan; a run that flies its fallback does not fly its model) and the
    entry's own `metrics` (e.g. the qubit's fidelity)."""
    base = env.unwrapped
    err = base.task.tracking_error(result.states[-1:], result.x_ref[-1:])
    fell = [info.get("fallback", "none") not in ("none", None) for info in result.infos]
    out = {
        "cost": float(-np.sum(result.rewards)),
        "final_error": float(err[0]),
        "terminated": float(result.terminated),
        "fallbacks": float(np.mean(fell)) if fell else 0.0,
    }
    if entry.metrics is not None:
        out.update(entry.metrics(result, base))
    return out


def make_mpc(
    model: DynamicsModel, task: Any, entry: SystemEntry, cfg: TrialConfig, seed: int
) -> Any:
    """The trial's MPC (`cfg.controller`) over `model` with the system's defaults."""
    from metasym_control.controllers.mppi import MPPI, MPPIConfig
    from metasym_control.controllers.nmpc import NMPC, NMPCConfig

    fallback = entry.fallback(task, float(model.dt)) if entry.fallback is not None else None
    if cfg.controller == "rti":
        horizon = cfg.horizon or entry.mpc.horizon
        return NMPC(model, task, NMPCConfig(horizon=horizon, mode="rti"), fallback=fallback)
    mcfg = MPPIConfig(
        horizon=cfg.horizon or entry.mpc.horizon,
        num_samples=cfg.samples or entry.mpc.samples,
        noise_sigma=cfg.noise_sigma if cfg.noise_sigma is not None else entry.mpc.noise_sigma,
        temperature=entry.mpc.temperature,
        noise_beta=1.0,
        seed=seed,
    )
    return MPPI(model, task, mcfg, fallback=fallback)


def run_trial(
    system: str | SystemEntry,
    params: SystemParams,
    model: DynamicsModel,
    cfg: TrialConfig,
    seed: int = 0,
    progress: bool = False,
) -> TrialResult:
    """Adapt `model` to the held-out system `params` and run every controller on it.

    Args:
        system: a registered system (name or entry).
        params: the held-out system's true parameters.
        model: a meta-trained model of that system (e.g. `load_pretrained(system)`).
        cfg: the trial's settings.
        seed: seed of the support data, the episode's start and the controllers' noise.
        progress: tqdm bars per controller.

    Returns:
        The runs of every role (zero action, nominal, adapted, oracle) from the same reset
        and their metrics.
    """
    from metasym_control.generate import generate_data

    os.environ.setdefault("MUJOCO_GL", "egl")
    entry = get_system(system) if isinstance(system, str) else system
    if entry.analytic_model is None:
        raise ValueError(f"run_trial: system {entry.name!r} has no analytic model to compare")
    support = generate_data(
        entry,
        1,
        cfg.support_episodes,
        cfg.support_steps,
        "test",
        seed + 1,
        params=[params],
        num_envs=min(cfg.support_episodes, 4),
        env_overrides=cfg.env_overrides,
    )
    t0 = time.perf_counter()
    adapted = model.adapt(support, cfg.adapt)
    adapt_s = time.perf_counter() - t0

    steps = cfg.steps or entry.trial_steps
    env = entry.make_env(
        params=params,
        split="test",
        max_episode_steps=steps,
        render_mode="rgb_array" if cfg.render else None,
        **{**entry.trial_kwargs, **cfg.env_overrides},
    )
    base = env.unwrapped
    dt = float(base.dt)
    models: dict[str, DynamicsModel] = {
        NOMINAL: entry.analytic_model(entry.nominal_params(), dt),
        ADAPTED: adapted,
    }
    if cfg.include_oracle:
        models[ORACLE] = entry.analytic_model(params, dt)
    runs: dict[str, ClosedLoopResult] = {
        ZERO: run_closed_loop(env, ZeroAction(base.task.action_dim), steps, seed=seed)
    }
    for name, m in models.items():
        ctrl = make_mpc(m, base.task, entry, cfg, seed)
        is_learned = name == ADAPTED
        desc = label(name, cfg.controller)
        with tqdm(total=steps, desc=desc, leave=False, disable=not progress) as bar:
            runs[name] = run_closed_loop(
                env,
                ctrl,
                steps,
                seed=seed,
                history_len=int(getattr(m, "history_len", 0)),
                render_every=cfg.render_every if (is_learned and cfg.render) else 0,
                progress=lambda _k: bar.update(1),
            )
    metrics = {name: episode_metrics(entry, r, env) for name, r in runs.items()}
    return TrialResult(entry.name, params, runs, metrics, adapt_s, env)


# --- many held-out systems ---------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A claim about the adapted MetaSym's metric, alone or relative to another role's.

    `ratio`: median over systems of metric(adapted) / metric(other) <= bound (costs);
    `gap`: median of metric(adapted) - metric(other) >= bound, or <= bound with `at_most`;
    `count`: the number of systems whose metric(adapted) is 1 (a 0/1 success) >= bound
    (`other` unused).
    """

    system: str
    metric: str
    other: str
    kind: str  # "ratio", "gap" or "count"
    bound: float
    at_most: bool = True
    text: str = ""
    controllers: tuple[str, ...] = ("mppi", "rti")

    def check(self, values: dict[str, list[float]]) -> tuple[float, bool]:
        """(statistic, met) from per-system values of every role: the median of the
        ratio or gap, or the count of successes."""
        a = np.asarray(values[ADAPTED])
        if self.kind == "count":
            n = float(np.sum(a >= 0.5))
            return n, bool(n <= self.bound if self.at_most else n >= self.bound)
        b = np.asarray(values[self.other])
        stat = a / np.maximum(b, 1e-12) if self.kind == "ratio" else a - b
        med = float(np.median(stat))
        met = med <= self.bound if self.at_most else med >= self.bound
        return med, bool(met)


GOALS: tuple[Goal, ...] = (
    Goal("spring_mesh", "cost", ORACLE, "ratio", 1.3, text="cost ≤ 1.3 × oracle MPC's"),
    Goal("spring_mesh", "cost", NOMINAL, "ratio", 0.7, text="cost ≤ 0.7 × nominal MPC's"),
    Goal("spring_mesh", "cost", ZERO, "ratio", 0.5, text="cost ≤ 0.5 × zero action's"),
    Goal(
        "quantum",
        "fidelity_2nd_half",
        ORACLE,
        "gap",
        -0.05,
        at_most=False,
        text="fidelity ≥ oracle MPC's − 0.05",
    ),
    Goal(
        "quantum",
        "fidelity_2nd_half",
        ZERO,
        "gap",
        0.1,
        at_most=False,
        text="fidelity ≥ zero drive's + 0.1",
    ),
    Goal(
        "pendulum",
        "swing_up",
        ADAPTED,
        "count",
        4,
        at_most=False,
        text="swung up and held (MPPI + adapted MetaSym) on ≥ 4 of 5 pendulums",
        controllers=("mppi",),
    ),
)
"""The all-systems issue's closed-loop goals (medians or counts over the held-out systems),
each posed for the MPC flavours in its `controllers`."""


def held_out_params(
    entry: SystemEntry, n: int, seed: int, overrides: dict[str, Any] | None = None
) -> list[SystemParams]:
    """`n` systems of the entry's test range (seeded), with `overrides` applied to each
    (e.g. `{"damping": 0.005}`, the lowest damping of the mesh's test range)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p = entry.sample_params(rng, "test")
        if overrides:
            p = p.replace(**overrides)
        out.append(p)
    return out


@dataclass(frozen=True)
class ExperimentArgs(FlightOptions):
    """Closed-loop experiment over held-out systems (writes a BENCHMARKS.md section).

    Attributes:
        envs: systems to run (each needs a shipped checkpoint or `checkpoint`); the quadrotor
            flies the demo's figure-8 with online adaptation and the cascaded PD beside the
            MPCs, on the held-out systems and a stress set (`metasym_control.figure8`).
        systems: held-out systems per env.
        controller: "mppi" or "rti" (see `TrialConfig`).
        seed: seed of the held-out draw and of every trial.
        steps: closed-loop steps per episode (None: each system's default).
        samples: MPPI samples (None: each system's default).
        seconds: length of the quadrotor's figure-8 flights, s.
        stress: also fly the quadrotor's stress set (as many vehicles as `systems`).
        test_range: fly the quadrotor's held-out test range (`--no-test-range` with
            `--stress`: the stress set alone, e.g. to add it to a run of the test range).
        checkpoint: a MetaSym checkpoint stem instead of the shipped one (one env only).
        task: the task (None: each system's default, e.g. the mesh's "settle"; one env only).
        export_csv: also write every flown run as a CSV log into `out/logs/`.
        out: folder of the run: JSON summaries, markdown tables, plots, the quadrotor's
            video and per-vehicle results (what an interrupted run resumes from).
        benchmarks: BENCHMARKS.md to update (its experiment section), or None.
        section: a name that keeps this run's BENCHMARKS.md sections apart from the main
            ones ("experiment-<system>-<controller>...-<section>"), e.g. for a checkpoint
            that is not shipped; None: the main sections.
        curve_systems: quadrotor: the first this many vehicles also fly MetaSym adapted on
            K = 0, 1, 2, 4 support flights (RMSE against K; 0: no curve).
        video: quadrotor: render vehicle 0's flight with the adapted MetaSym (MP4).
        resume: quadrotor: reuse vehicles that a previous run with the same settings,
            checkpoint and seed already flew (in `out`).
        online, online_support, online_anchor, online_holdout, rti_trust_bounds,
            rti_trust_repair, rti_fallback, mppi_fallback, rti_step_fractions,
            disturbance_gain,
            adapt_steps, adapt_lr, adapt_horizon, adapt_free_offset, supervise:
            quadrotor: the flights' online adaptation, RTI and offset-free settings
            (`FlightOptions`, as `demo`'s flags; the defaults are the demo's).
    """

    envs: tuple[str, ...] = ("spring_mesh", "quantum")
    systems: int = 5
    controller: Literal["mppi", "rti"] = "mppi"
    seed: int = 100
    steps: int | None = None
    samples: int | None = None
    checkpoint: Path | None = None
    task: str | None = None
    export_csv: bool = False
    seconds: float = 8.0
    stress: bool = True
    test_range: bool = True
    out: Path = Path("runs/experiment")
    benchmarks: Path | None = Path("BENCHMARKS.md")
    section: str | None = None
    curve_systems: int = 4
    video: bool = True
    resume: bool = True

    def flight_config(self) -> DemoConfig:
        """The quadrotor flights' settings: the demo's, with this run's options."""
        import dataclasses

        base = DemoConfig()
        flight = {f.name: getattr(self, f.name) for f in dataclasses.fields(FlightOptions)}
        return dataclasses.replace(
            base,
            controller=self.controller,
            seconds=self.seconds,
            video=False,
            include_identified=True,
            include_unadapted=True,
            samples=base.samples if self.samples is None else self.samples,
            **flight,
        )

    def validate(self) -> None:
        """Check every option up front (`UsageError` naming the flag and its range)."""
        from metasym_control.checkpoint import checkpoint_paths
        from metasym_control.systems import known_systems
        from metasym_control.usage import at_least, require, section_name

        require(len(self.envs) >= 1, "--envs", "at least one system", self.envs)
        for env in self.envs:
            require(env in known_systems(), "--envs", f"systems of {known_systems()}", env)
        at_least("--systems", self.systems, 1)
        require(self.controller in ("mppi", "rti"), "--controller", "mppi or rti", self.controller)
        at_least("--steps", self.steps, 1, optional=True)
        at_least("--samples", self.samples, 1, optional=True)
        at_least("--curve-systems", self.curve_systems, 0)
        nothing = "used with --stress (else nothing is flown)"
        require(self.test_range or self.stress, "--no-test-range", nothing, "--no-stress")
        section_name(self.section)
        if self.task is not None:
            require(len(self.envs) == 1, "--task", "used with exactly one --envs", self.envs)
            tasks = get_system(self.envs[0]).tasks
            require(self.task in tasks, "--task", f"one of {list(tasks)}", self.task)
        if self.checkpoint is not None:
            require(len(self.envs) == 1, "--checkpoint", "used with exactly one --envs", self.envs)
            require(
                checkpoint_paths(self.checkpoint)[1].exists(), "--checkpoint",
                "an existing checkpoint", str(self.checkpoint),
            )  # fmt: skip
        self.flight_config().validate()


def flight_flags(args: FlightOptions) -> str:
    """The command-line flags of `args`' flight options that differ from the defaults
    (e.g. " --rti-trust-bounds --rti-fallback pd"), so a table names its exact command."""
    default = FlightOptions()
    out = ""
    bools = ("online", "online_support", "rti_trust_bounds", "rti_trust_repair",
             "adapt_free_offset", "supervise")  # fmt: skip
    for name in bools:
        value = getattr(args, name)
        if value != getattr(default, name):
            out += f" --{'' if value else 'no-'}{name.replace('_', '-')}"
    for name in ("online_anchor", "online_holdout", "rti_fallback", "mppi_fallback"):
        value = getattr(args, name)
        if value != getattr(default, name):
            out += f" --{name.replace('_', '-')} {value}"
    if args.rti_step_fractions != default.rti_step_fractions:
        out += " ".join([" --rti-step-fractions", *(f"{f:g}" for f in args.rti_step_fractions)])
    for name in ("disturbance_gain", "adapt_steps", "adapt_lr", "adapt_horizon"):
        value = getattr(args, name)
        if value != getattr(default, name):
            out += f" --{name.replace('_', '-')} {value:g}"
    return out


# systems whose goals are posed at a stated parameter point of the test range
PARAM_OVERRIDES: dict[str, dict[str, Any]] = {"spring_mesh": {"damping": 0.005}}


def run_experiment(
    system: str,
    n_systems: int,
    seed: int,
    model_loader: Callable[[], DynamicsModel],
    cfg: TrialConfig,
    progress: bool = True,
    export_dir: Path | None = None,
) -> dict[str, Any]:
    """Trials on `n_systems` held-out systems; per-role metric lists and the goals.

    With `export_dir`, every run is also written as a CSV log `<system>_<i>_<role>.csv`
    (docs/user_data.md).

    Returns:
        {"system", "controller", "params": [...], "values": {metric: {role: [per system]}},
         "goals": [{"text", "value", "met"}], "adapt_seconds": [...]}.
    """
    entry = get_system(system)
    params = held_out_params(entry, n_systems, seed, PARAM_OVERRIDES.get(system))
    values: dict[str, dict[str, list[float]]] = {}
    adapt_s = []
    for i, p in enumerate(tqdm(params, desc=f"{system} held-out systems", disable=not progress)):
        trial = run_trial(entry, p, model_loader(), cfg, seed=seed + 17 * i)
        if export_dir is not None:
            from metasym_control.user_data import write_log

            base = trial.env.unwrapped
            for role, run in trial.runs.items():
                log = run.to_trajectory(base.env_id, base.dt)
                write_log(export_dir / f"{system}_{i}_{role}.csv", log, system)
        trial.env.close()
        adapt_s.append(trial.adapt_seconds)
        for ctrl, m in trial.metrics.items():
            for k, v in m.items():
                values.setdefault(k, {}).setdefault(ctrl, []).append(v)
    goals = []
    for g in GOALS:
        if g.system == system and g.metric in values and cfg.controller in g.controllers:
            stat, met = g.check(values[g.metric])
            goals.append({"text": g.text, "value": stat, "met": met})
    return {
        "system": system,
        "controller": cfg.controller,
        "params": [p.to_dict() for p in params],
        "values": values,
        "goals": goals,
        "adapt_seconds": adapt_s,
    }


def experiment_tables(summary: dict[str, Any]) -> str:
    """Markdown: per role the median, worst and 95% interval of each metric; the goals."""
    from metasym_control.bench import bootstrap_median_interval, markdown_table

    lines = []
    higher_better = {"fidelity_2nd_half", "swing_up"}
    for metric, by_ctrl in summary["values"].items():
        if metric == "terminated":
            continue
        rows = []
        for role, v in by_ctrl.items():
            worst = min(v) if metric in higher_better else max(v)
            lo, hi = bootstrap_median_interval(v)
            name = label(role, summary["controller"])
            rows.append(
                [name, f"{np.median(v):.4g}", f"{worst:.4g}", f"[{lo:.4g}, {hi:.4g}]", len(v)]
            )
        lines.append(f"`{metric}`:\n")
        lines.append(
            markdown_table(["controller", "median", "worst", "95% CI of median", "n"], rows)
        )
        lines.append("")
    if summary["goals"]:
        rows = [
            [g["text"], f"{g['value']:.3f}", "met" if g["met"] else "**not met**"]
            for g in summary["goals"]
        ]
        lines.append(markdown_table(["goal (over systems)", "measured", ""], rows))
    return "\n".join(lines)


def _suffix(section: str | None) -> str:
    """The BENCHMARKS.md section name's suffix: "-<section>", or "" for the main one."""
    return f"-{section}" if section else ""


def _titled(section: str | None) -> str:
    """The section title's suffix: " (run <section>)", or "" for the main one."""
    return f" (run {section})" if section else ""


def report_experiment(
    summary: dict[str, Any],
    command: str,
    seconds: float,
    out: Path,
    benchmarks: Path | None,
    how: str = "",
    section: str | None = None,
) -> str:
    """Print and write one system's experiment: `out/<system>_<controller>.{md,json}` and
    its own section of `benchmarks` (so systems run one at a time keep each other's).

    Args:
        summary: `run_experiment`'s result.
        command: the exact command that produced it (printed with the table).
        seconds: its wall time.
        out: output folder.
        benchmarks: BENCHMARKS.md to update, or None.
        how: how the model was obtained (default: the MetaSym checkpoint).
        section: suffix of the BENCHMARKS.md section's name (`ExperimentArgs.section`).

    Returns:
        The markdown body.
    """
    from metasym_control.bench import machine_description, write_section

    system, controller = summary["system"], summary["controller"]
    mpc = MPC_NAMES[controller]
    table = experiment_tables(summary)
    print(f"\n## {system} ({mpc})\n\n{table}")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{system}_{controller}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    where = f" at {PARAM_OVERRIDES[system]}" if system in PARAM_OVERRIDES else ""
    body = (
        f"`{command}` ({seconds:.0f} s on {machine_description()}). Held-out (test-split) "
        f"systems{where}; each trial adapts {how or 'the MetaSym checkpoint'} on "
        f"{TrialConfig().support_episodes} exploration episodes of that system, then runs "
        "every controller from the same start. Median over systems, worst system, 95% "
        f"bootstrap interval of the median.\n\n{table}\n"
    )
    stem.with_suffix(".md").write_text(body)
    if benchmarks is not None:
        write_section(
            f"experiment-{system}-{controller}{_suffix(section)}",
            f"### Closed loop: {system}, {mpc}{_titled(section)}\n\n" + body,
            benchmarks,
        )
        print(f"updated {benchmarks}")
    return body


def experiment_main(args: ExperimentArgs) -> None:
    """`metasym-control experiment`: the closed-loop goals over held-out systems, one
    `report_experiment` per system."""
    from metasym_control.checkpoint import load_checkpoint
    from metasym_control.pretrained import load_pretrained

    if args.checkpoint is not None and len(args.envs) != 1:
        raise SystemExit("experiment: --checkpoint needs exactly one --envs system")
    for system in args.envs:
        if system == "quadrotor" and args.task in (None, "figure8"):
            quadrotor_main(args)
            continue
        entry = get_system(system)
        overrides = {} if args.task is None else {entry.task_kwarg: args.task}
        cfg = TrialConfig(
            steps=args.steps,
            samples=args.samples,
            controller=args.controller,
            env_overrides=overrides,
        )

        def loader(system: str = system) -> DynamicsModel:
            if args.checkpoint is not None:
                return load_checkpoint(args.checkpoint, dtype=torch.float64)[0]
            return load_pretrained(system, dtype=torch.float64)

        t0 = time.perf_counter()
        logs = args.out / "logs" if args.export_csv else None
        summary = run_experiment(system, args.systems, args.seed, loader, cfg, export_dir=logs)
        extra = "" if args.steps is None else f" --steps {args.steps}"
        extra += "" if args.samples is None else f" --samples {args.samples}"
        extra += "" if args.checkpoint is None else f" --checkpoint {args.checkpoint}"
        extra += "" if args.task is None else f" --task {args.task}"
        command = (
            f"metasym-control experiment --envs {system} --systems {args.systems} "
            f"--controller {args.controller} --seed {args.seed}{extra}"
        )
        command += "" if args.section is None else f" --section {args.section}"
        report_experiment(
            summary, command, time.perf_counter() - t0, args.out, args.benchmarks,
            section=args.section,
        )  # fmt: skip


def quadrotor_main(args: ExperimentArgs) -> None:
    """The quadrotor part of `experiment`: the figure-8 over held-out vehicles (and the
    stress set), per-system ratios to the oracle and the nominal model, the goals."""

    from metasym_control.bench import machine_description, write_section
    from metasym_control.checkpoint import load_checkpoint, model_digest
    from metasym_control.figure8_experiment import (
        experiment_stem,
        quadrotor_experiment,
        quadrotor_tables,
    )
    from metasym_control.weights import DEFAULT_WEIGHTS

    stem = args.checkpoint or DEFAULT_WEIGHTS

    def loader() -> DynamicsModel:
        return load_checkpoint(stem, dtype=torch.float64)[0]

    cfg = args.flight_config()
    mpc = MPC_NAMES[args.controller]
    sets = ([("held-out (test range)", False)] if args.test_range else []) + (
        [("stress set", True)] if args.stress else []
    )
    for title, stress in sets:
        summary = quadrotor_experiment(
            args.systems,
            args.seed,
            cfg,
            loader,
            stress=stress,
            out=args.out,
            model_id=model_digest(stem),
            curve_systems=min(args.curve_systems, args.systems),
            video=args.video,
            resume=args.resume,
        )
        table = quadrotor_tables(summary)
        print(f"\n## quadrotor figure-8, {title} ({mpc})\n\n{table}")
        extra = "" if args.samples is None else f" --samples {args.samples}"
        extra += "" if args.checkpoint is None else f" --checkpoint {args.checkpoint}"
        extra += flight_flags(args)
        extra += "" if args.stress else " --no-stress"
        extra += "" if args.test_range else " --no-test-range"
        curves = args.curve_systems
        extra += "" if curves == ExperimentArgs.curve_systems else f" --curve-systems {curves}"
        extra += "" if args.section is None else f" --section {args.section}"
        fallback_text = (
            ("a refused RTI step flies RTI on the nominal physics (its own refused steps the "
             "shipped cascaded PD)" if cfg.rti_fallback == "nominal_rti"
             else "a refused RTI step flies the shipped cascaded PD")
            + (", and the learned models' trusted region bounds the QP's states"
               if cfg.rti_trust_bounds
               else ", and the learned models' trusted region is judged after the solve, "
               "not imposed as QP bounds"
               + ("; a plan that leaves it is solved once more with the region as QP bounds "
                  "and flown if it then stays inside" if cfg.rti_trust_repair else ""))
            + ("; each RTI step is line-searched on its model's own rollout (step fractions "
               + ", ".join(f"{f:g}" for f in cfg.rti_step_fractions) + ")."
               if cfg.rti_step_fractions else ".")
            if args.controller == "rti"
            else "MPPI + MetaSym and the other MPCs fall back to "
            + ("RTI on the nominal physics (its own refused steps the shipped cascaded PD)"
               if cfg.mppi_fallback == "nominal_rti" else "the shipped cascaded PD")
            + " when no plan can be trusted."
        ) + (
            f" Offset-free MPC: every MPC-flown model predicts with an additive disturbance "
            f"estimated from its own one-step errors (gain {cfg.disturbance_gain:g} a step)."
            if cfg.disturbance_gain > 0 else ""
        ) + (
            " The learned models adapt with a free constant offset that they then drop, "
            "leaving the constant to the observer." if cfg.adapt_budget.free_offset else ""
        )  # fmt: skip
        body = (
            f"`metasym-control experiment --envs quadrotor --systems {args.systems} "
            f"--controller {args.controller} --seed {args.seed} --seconds {args.seconds:g}"
            f"{extra}` ({summary['flight_seconds']:.0f} s of flights on "
            f"{machine_description()}). "
            f"{args.systems} quadrotors of the {title}, each flying the demo's figure-8 "
            f"({args.seconds:g} s) after the same 3 s support flight; MetaSym adapted on it "
            f"and re-adapted online every second; {fallback_text} RMSE median, worst, 95% "
            "bootstrap interval; goals on per-system ratios.\n\n" + table + "\n"
        )
        name = experiment_stem(cfg, stress)
        offset = ", offset-free" if cfg.disturbance_gain > 0 else ""
        (args.out / f"{name}.md").write_text(body)
        print(f"table, plots{' and video' if args.video else ''}: {args.out}/{name}*")
        if args.benchmarks is not None:
            key = "experiment-" + name.replace("_", "-") + _suffix(args.section)
            head = f"### Closed loop: quadrotor figure-8, {title}, {mpc}{offset}"
            write_section(
                key, head + _titled(args.section) + "\n\n" + body,
                args.benchmarks,
            )  # fmt: skip
            print(f"updated {args.benchmarks}")
