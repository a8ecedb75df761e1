"""The few-shot experiment: meta-train MetaSym and the baselines, adapt on K trajectories of
held-out systems, compare open-loop rollout errors (the CLI's `few-shot`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metasym_control.checkpoint import load_checkpoint
from metasym_control.dynamics import AdaptBudget
from metasym_control.generate import generate_tasks
from metasym_control.meta_training import MetaTrainConfig, meta_train
from metasym_control.models.learned import LearnedModel
from metasym_control.models.metasym import MetaSymConfig
from metasym_control.models.registry import ModelKind
from metasym_control.systems import model_for_data
from metasym_control.trajectory import Trajectory
from metasym_control.windows import make_windows, to_batch


def rollout_error(model: LearnedModel, data: Trajectory, horizon: int) -> float:
    """RMS over windows of the `horizon`-step open-loop error, in units of the state std.

    Every window of `data` (history from the data, then `horizon` predicted steps driven by
    the recorded actions) is scored by the root mean square over steps and components of
    (prediction - truth) / state std of the model's normalisation.
    """
    ref = next(iter(model.parameters()))
    w = to_batch(make_windows(data, model.history_len, horizon), None, ref.device, ref.dtype)
    with torch.no_grad():
        pred = model.predict_windows(w)
    err = (pred - w["y"]) / model.state_std
    return float(err.pow(2).mean().sqrt())


def constant_error(model: LearnedModel, data: Trajectory, horizon: int) -> float:
    """The same score for the "next state = state" predictor."""
    ref = next(iter(model.parameters()))
    w = to_batch(make_windows(data, model.history_len, horizon), None, ref.device, ref.dtype)
    err = (w["x0"].unsqueeze(-2) - w["y"]) / model.state_std
    return float(err.pow(2).mean().sqrt())


FEW_SHOT_BUDGET = AdaptBudget(inner_steps=50, lr=3e-3, optimizer="adam", horizon=4)
# the oscillator learning test's recipe (tests/metasym_control/test_meta_training.py): the
# inner loop on the adaptation budget's loss, the unadapted model trained too, outer lr 1e-2
FEW_SHOT_TRAIN = MetaTrainConfig(
    steps=400,
    meta_batch=4,
    support_episodes=3,
    inner_steps=3,
    horizon=4,
    batch_windows=32,
    outer_lr=1e-2,
    unadapted_weight=0.5,
    seed=0,
    log_every=50,
).matching(FEW_SHOT_BUDGET)


@dataclass(frozen=True)
class FewShotArgs:
    """Meta-train (or load) MetaSym and the baselines, adapt on K trajectories of held-out
    systems, and compare multi-step rollout errors.

    Attributes:
        env: environment.
        models: models to compare.
        shots: K, support trajectories per held-out system.
        test_tasks: held-out (test-split) systems.
        test_episodes: episodes per held-out system (K support + the rest evaluated).
        horizon: rollout length of the error, control steps.
        n_tasks, episodes, steps_per_episode: training data.
        out: folder for checkpoints (reused when present) and results.
        budget: the adaptation budget (the same for every model).
        train: meta-training settings (the same for every model).
        write_benchmarks: write the table as section "few-shot" of BENCHMARKS.md.
        seed: seed.
    """

    env: str = "toy"
    models: tuple[ModelKind, ...] = (
        "metasym",
        "metasym_decoder",
        "mlp",
        "transformer",
        "symplectic",
        "hnn",
    )
    shots: int = 3
    test_tasks: int = 8
    test_episodes: int = 5
    horizon: int = 20
    n_tasks: int = 32
    episodes: int = 5
    steps_per_episode: int = 40
    out: Path = Path("outputs/few_shot")
    budget: AdaptBudget = field(default_factory=lambda: FEW_SHOT_BUDGET)
    train: MetaTrainConfig = field(default_factory=lambda: FEW_SHOT_TRAIN)
    write_benchmarks: bool = False
    seed: int = 0

    def validate(self) -> None:
        """Check every option up front (`UsageError` naming the flag and its range)."""
        from metasym_control.meta_training import validate_train_config
        from metasym_control.systems import known_systems
        from metasym_control.usage import at_least, require

        require(self.env in known_systems(), "--env", f"one of {known_systems()}", self.env)
        require(len(self.models) >= 1, "--models", "at least one model", self.models)
        at_least("--shots", self.shots, 1)
        at_least("--test-tasks", self.test_tasks, 1)
        require(
            self.test_episodes > self.shots, "--test-episodes",
            f"> --shots ({self.shots}), leaving query episodes", self.test_episodes,
        )  # fmt: skip
        at_least("--horizon", self.horizon, 1)
        at_least("--n-tasks", self.n_tasks, 1)
        at_least("--episodes", self.episodes, 1)
        require(
            self.steps_per_episode > self.horizon, "--steps-per-episode",
            f"> --horizon ({self.horizon})", self.steps_per_episode,
        )  # fmt: skip
        validate_train_config(self.train)


def few_shot_experiment(args: FewShotArgs) -> list[dict[str, Any]]:
    """Run the few-shot comparison; returns one row per model (errors before/after adapting).

    Every model sees the same training tasks, the same meta-training settings, the same
    support data and the same adaptation budget.
    """
    train = generate_tasks(
        args.env, args.n_tasks, args.episodes, args.steps_per_episode, "train", args.seed, True
    )
    test = generate_tasks(
        args.env,
        args.test_tasks,
        args.test_episodes,
        args.steps_per_episode,
        "test",
        args.seed + 1,
        True,
    )
    rows = []
    for kind in args.models:
        ckpt = args.out / kind / "checkpoint"
        t0 = time.perf_counter()
        if ckpt.with_suffix(".json").exists():
            model, _ = load_checkpoint(ckpt)
        else:
            torch.manual_seed(args.seed)
            model = model_for_data(kind, train[0], MetaSymConfig())
            model.fit_normalization(train)
            meta_train(model, train, args.train, out_dir=args.out / kind, progress=False)
        train_s = time.perf_counter() - t0
        before, after, const, adapt_s = [], [], [], []
        for task in test:
            support = task.subset(list(range(args.shots)))
            query = task.subset(list(range(args.shots, task.num)))
            t1 = time.perf_counter()
            adapted = model.adapt(support, args.budget)
            adapt_s.append(time.perf_counter() - t1)
            assert isinstance(adapted, LearnedModel)
            before.append(rollout_error(model, query, args.horizon))
            after.append(rollout_error(adapted, query, args.horizon))
            const.append(constant_error(model, query, args.horizon))
        rows.append(
            {
                "model": kind,
                "parameters": model.num_parameters(),
                "fast_weights": sum(
                    dict(model.named_parameters())[n].numel() for n in model.fast_weight_names()
                ),
                "error_unadapted": float(np.mean(before)),
                "error_adapted": float(np.mean(after)),
                "error_constant": float(np.mean(const)),
                "adapt_seconds": float(np.median(adapt_s)),
                "train_seconds": train_s,
            }
        )
    return rows


def few_shot_table(rows: Sequence[dict[str, Any]], args: FewShotArgs) -> str:
    """The few-shot rows as a markdown table with the settings above it."""
    from metasym_control.bench import machine_description, markdown_table

    header = [
        "model",
        "params",
        "fast weights",
        f"{args.horizon}-step error, unadapted",
        f"after {args.shots}-shot adapt",
        "next state = state",
        "adapt time (s)",
    ]
    body = [
        [
            r["model"],
            r["parameters"],
            r["fast_weights"],
            f"{r['error_unadapted']:.4f}",
            f"{r['error_adapted']:.4f}",
            f"{r['error_constant']:.4f}",
            f"{r['adapt_seconds']:.3f}",
        ]
        for r in rows
    ]
    return (
        f"## Few-shot adaptation ({args.env})\n\n"
        f"Command: `python -m metasym_control.cli few-shot --env {args.env} "
        f"--write-benchmarks`. {args.n_tasks} training systems x {args.episodes} episodes; "
        f"{args.test_tasks} held-out (test-split) systems, {args.shots} support episodes each, "
        f"the rest evaluated. Error: RMS of the {args.horizon}-step open-loop rollout error in "
        f"units of the state's standard deviation. Same data, meta-training settings and "
        f"adaptation budget ({args.budget}) for every model.\n"
        f"Machine: {machine_description()}.\n\n"
        + markdown_table(header, body)
        + _few_shot_verdict(rows)
    )


def _few_shot_verdict(rows: Sequence[dict[str, Any]]) -> str:
    """One measured sentence under the table: who adapts best, and where MetaSym stands."""
    if not rows:
        return ""
    ranked = sorted(rows, key=lambda r: r["error_adapted"])
    names = [r["model"] for r in ranked]
    best = ranked[0]
    text = f"\n\nBest after adaptation: {best['model']} ({best['error_adapted']:.4f})."
    ours = [r for r in ranked if r["model"].startswith("metasym")]
    if ours:
        top = ours[0]
        text += (
            f" Best MetaSym row: {top['model']} ({top['error_adapted']:.4f}), rank "
            f"{names.index(top['model']) + 1} of {len(rows)}."
        )
        if best["model"].startswith("metasym"):
            text += " MetaSym adapts best in this run."
        else:
            text += " The paper's claim (MetaSym adapts better than the baselines) is not "
            text += "reproduced by this run."
    return text + "\n"


def few_shot_main(args: FewShotArgs) -> None:
    """`metasym-control few-shot`: the few-shot comparison table."""
    logging.basicConfig(level=logging.INFO)
    rows = few_shot_experiment(args)
    table = few_shot_table(rows, args)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    if args.write_benchmarks:
        from metasym_control.bench import write_section

        write_section("few-shot", table)
