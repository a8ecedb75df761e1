"""Training, adaptation and few-shot experiments behind the CLI (`train`, `adapt`, ...)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from metasym_control.adaptation import make_windows, to_batch
from metasym_control.checkpoint import load_checkpoint, save_checkpoint
from metasym_control.dynamics import AdaptBudget
from metasym_control.meta_training import (
    MetaTrainConfig,
    fit_normalization_distributed,
    init_distributed,
    meta_train,
    shutdown_distributed,
)
from metasym_control.models.learned import LearnedModel
from metasym_control.models.metasym import MetaSymConfig
from metasym_control.params import Split
from metasym_control.trajectory import Trajectory

logger = logging.getLogger(__name__)

ModelKind = Literal["metasym", "metasym_decoder", "mlp", "transformer", "symplectic", "hnn"]
EnvName = Literal["quadrotor", "toy"]

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "metasym_quadrotor"


def split_by_task(traj: Trajectory) -> list[Trajectory]:
    """Group the episodes of a trajectory set by system (equal parameter dicts), in order."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(traj.params):
        groups.setdefault(json.dumps(p, sort_keys=True), []).append(i)
    return [traj.subset(idx) for idx in groups.values()]


def make_model(
    kind: ModelKind,
    env_id: str,
    state_dim: int,
    action_dim: int,
    dt: float,
    metasym: MetaSymConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LearnedModel:
    """A fresh learned model of `kind` for an environment.

    Args:
        kind: "metasym", "metasym_decoder" (MetaSym adapting its whole decoder, the
            ablation) or a baseline ("mlp", "transformer", "symplectic", "hnn").
        env_id: environment id with version (picks the canonical coordinates).
        state_dim, action_dim, dt: of the data.
        metasym: a `MetaSymConfig` (MetaSym only; default config if None).
        device, dtype: of the parameters.
    """
    from metasym_control.models import baselines
    from metasym_control.models.coordinates import coordinates_for_env
    from metasym_control.models.metasym import MetaSym

    coords = coordinates_for_env(env_id, state_dim)
    args: dict[str, Any] = {"coords": coords, "env_id": env_id, "device": device, "dtype": dtype}
    if kind == "metasym":
        return MetaSym(state_dim, action_dim, dt, metasym, **args)
    if kind == "metasym_decoder":
        cfg = dataclasses.replace(metasym or MetaSymConfig(), fast_set="decoder")
        return MetaSym(state_dim, action_dim, dt, cfg, **args)
    classes: dict[str, type[LearnedModel]] = {
        "mlp": baselines.MLPModel,
        "transformer": baselines.TransformerModel,
        "symplectic": baselines.SymplecticOnlyModel,
        "hnn": baselines.HNNModel,
    }
    if kind not in classes:
        raise ValueError(f"unknown model kind {kind!r}")
    return classes[kind](state_dim, action_dim, dt, **args)  # type: ignore[call-arg]


def generate_tasks(
    env: EnvName, n_tasks: int, episodes: int, steps: int, split: Split, seed: int, progress: bool
) -> list[Trajectory]:
    """Fresh data: `n_tasks` systems of `env`, `episodes` episodes of `steps` steps each."""
    if env == "toy":
        from metasym_control.toy import oscillator_family

        return oscillator_family(n_tasks, episodes, steps, split, seed)
    from metasym_control.data import collect_quadrotor_dataset

    traj = collect_quadrotor_dataset(
        n_tasks,
        episodes,
        steps,
        split,
        seed,
        progress=progress,  # type: ignore[arg-type]
    )
    return split_by_task(traj)


@dataclass(frozen=True)
class TrainArgs:
    """Meta-train a dynamics model on an environment's data (also under torchrun).

    Attributes:
        env: environment whose data is generated when no --data is given.
        data: a trajectory file (`Trajectory.save`) to train on instead of generating data.
        out: output folder (checkpoint, log.json).
        model: which model to train.
        n_tasks: systems to generate (over all ranks).
        episodes: episodes per system.
        steps_per_episode: transitions per episode.
        seed: data and initialisation seed.
        device: "cpu" or "cuda".
        dtype: parameter dtype.
        resume: continue from `out/checkpoint` when present.
        progress: progress bars.
        metasym: MetaSym architecture.
        train: meta-training settings.
    """

    env: EnvName = "quadrotor"
    data: Path | None = None
    out: Path = Path("outputs/train")
    model: ModelKind = "metasym"
    n_tasks: int = 32
    episodes: int = 6
    steps_per_episode: int = 150
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    resume: bool = False
    progress: bool = True
    metasym: MetaSymConfig = field(default_factory=MetaSymConfig)
    train: MetaTrainConfig = field(default_factory=MetaTrainConfig)


def run_training(args: TrainArgs) -> LearnedModel:
    """Meta-train as `args` says; writes `args.out/checkpoint.*` and `args.out/log.json`.

    Under `torchrun` each rank generates (or takes from --data) its own shard of tasks:
    global task i belongs to rank i mod world.
    """
    torch.manual_seed(args.seed)
    rank, world = init_distributed(args.device)
    try:
        if args.data is not None:
            everything = split_by_task(Trajectory.load(args.data))
            ids = list(range(rank, len(everything), world))
            tasks = [everything[i] for i in ids]
            n_total = len(everything)
        else:
            ids = list(range(rank, args.n_tasks, world))
            tasks = generate_tasks(
                args.env,
                len(ids),
                args.episodes,
                args.steps_per_episode,
                "train",
                args.seed * 1000 + rank,
                args.progress and rank == 0,
            )
            n_total = args.n_tasks
        first = tasks[0]
        model = make_model(
            args.model,
            first.env_id,
            first.state_dim,
            first.action_dim,
            first.dt,
            args.metasym,
            args.device,
            getattr(torch, args.dtype),
        )
        fit_normalization_distributed(model, tasks)
        meta_train(
            model,
            tasks,
            args.train,
            task_ids=ids,
            n_tasks_total=n_total,
            out_dir=args.out,
            resume=args.resume,
            progress=args.progress,
        )
    finally:
        shutdown_distributed()
    return model


def train_main(args: TrainArgs) -> None:
    """`metasym-control train`: meta-train a model (MetaSym by default)."""
    logging.basicConfig(level=logging.INFO)
    t0 = time.perf_counter()
    model = run_training(args)
    print(
        f"trained {type(model).__name__} ({model.num_parameters()} parameters) in "
        f"{time.perf_counter() - t0:.0f} s; checkpoint {args.out / 'checkpoint.safetensors'}"
    )


@dataclass(frozen=True)
class AdaptArgs:
    """Adapt a checkpoint to the system that produced a trajectory file.

    Attributes:
        checkpoint: the meta-trained checkpoint (stem or file).
        data: trajectory file of the new system (`Trajectory.save`).
        out: stem of the adapted checkpoint to write.
        budget: the adaptation budget.
        device: "cpu" or "cuda".
    """

    checkpoint: Path = DEFAULT_WEIGHTS
    data: Path = Path("support.npz")
    out: Path = Path("outputs/adapted")
    budget: AdaptBudget = field(default_factory=AdaptBudget)
    device: str = "cpu"


def adapt_main(args: AdaptArgs) -> None:
    """`metasym-control adapt`: adapt a checkpoint to a trajectory file and save the result."""
    model, meta = load_checkpoint(args.checkpoint, device=args.device)
    support = Trajectory.load(args.data, env_id=meta.get("env_id") or None)
    t0 = time.perf_counter()
    adapted = model.adapt(support, args.budget)
    dt = time.perf_counter() - t0
    assert isinstance(adapted, LearnedModel)
    path = save_checkpoint(args.out, adapted, training={"adapted_from": str(args.checkpoint)})
    print(f"adapted in {dt:.2f} s on {support.num} trajectories; wrote {path}")


# ------------------------------------------------------------------ the shipped weights

DEFAULT_TRAIN = MetaTrainConfig(
    steps=1200,
    meta_batch=8,
    support_episodes=3,
    inner_steps=3,
    inner_lr=1e-2,
    inner_optimizer="adam",
    horizon=4,
    batch_windows=48,
    outer_lr=3e-3,
    unadapted_weight=0.5,
    seed=0,
    log_every=10,
)


@dataclass(frozen=True)
class TrainDefaultArgs:
    """Regenerate the shipped default quadrotor checkpoint with its fixed seed and config.

    Attributes:
        device: "cpu" (a few minutes on 2 cores; see docs/metasym.md) or "cuda".
        out: stem of the checkpoint (default: the package's weights folder).
        n_tasks: training systems.
        episodes: episodes per system.
        steps_per_episode: transitions per episode.
    """

    device: str = "cpu"
    out: Path = DEFAULT_WEIGHTS
    n_tasks: int = 48
    episodes: int = 5
    steps_per_episode: int = 100


def train_default_main(args: TrainDefaultArgs) -> None:
    """`metasym-control train-default`: the shipped MetaSym quadrotor weights (fixed seed)."""
    import tempfile

    logging.basicConfig(level=logging.INFO)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainArgs(
            env="quadrotor",
            out=Path(tmp),
            model="metasym",
            n_tasks=args.n_tasks,
            episodes=args.episodes,
            steps_per_episode=args.steps_per_episode,
            seed=0,
            device=args.device,
            dtype="float32",
            metasym=MetaSymConfig(),
            train=DEFAULT_TRAIN,
        )
        model = run_training(targs)
        log = json.loads((Path(tmp) / "log.json").read_text())
    model.to("cpu")
    path = save_checkpoint(
        args.out,
        model,
        training={"recipe": "train-default", "args": _jsonable(asdict(targs)), "log": log},
    )
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e3:.0f} kB) in {time.perf_counter() - t0:.0f} s")


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


# ------------------------------------------------------------------ few-shot experiment


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

    env: EnvName = "toy"
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
            first = train[0]
            model = make_model(
                kind, first.env_id, first.state_dim, first.action_dim, first.dt, MetaSymConfig()
            )
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
