"""Meta-training and adaptation behind the CLI's `train` and `adapt` (also under torchrun)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from metasym_control.checkpoint import checkpoint_system, load_checkpoint, save_checkpoint
from metasym_control.dynamics import AdaptBudget
from metasym_control.exploration import ExplorationConfig, quadrotor_exploration
from metasym_control.generate import generate_tasks, split_by_task
from metasym_control.meta_training import (
    MetaTrainConfig,
    fit_normalization_distributed,
    init_distributed,
    meta_train,
    shutdown_distributed,
    validate_train_config,
)
from metasym_control.models.learned import LearnedModel
from metasym_control.models.metasym import MetaSymConfig
from metasym_control.models.registry import ModelKind
from metasym_control.systems import get_system, model_for_data, system_of
from metasym_control.trajectory import Trajectory
from metasym_control.weights import DEFAULT_WEIGHTS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainArgs:
    """Meta-train a dynamics model on an environment's data (also under torchrun).

    Attributes:
        env: the system (`metasym_control.systems.SYSTEMS`) whose data is generated when no
            --data is given; with --data it must agree with the file's system.
        data: a trajectory file (`Trajectory.save`) to train on instead of generating data.
        out: output folder (checkpoint, log.json).
        model: which model to train.
        n_tasks: systems to generate (over all ranks).
        episodes: episodes per system.
        steps_per_episode: transitions per episode (None: the system's default).
        seed: data and initialisation seed.
        device: "cpu" or "cuda".
        dtype: parameter dtype.
        resume: continue from `out/checkpoint` when present.
        progress: progress bars.
        metasym: MetaSym architecture.
        train: meta-training settings.
        exploration: quadrotor only: the exploration policy's settings for the generated
            data (the default is the policy every other data of the project is flown with,
            the held-out vehicles' support flights included); other systems keep the default.
    """

    env: str = "quadrotor"
    data: Path | None = None
    out: Path = Path("outputs/train")
    model: ModelKind = "metasym"
    n_tasks: int = 32
    episodes: int = 6
    steps_per_episode: int | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    resume: bool = False
    progress: bool = True
    metasym: MetaSymConfig = field(default_factory=MetaSymConfig)
    train: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)

    def validate(self) -> None:
        """Check every option up front (`UsageError` naming the flag and its range)."""
        from metasym_control.systems import known_systems
        from metasym_control.usage import at_least, require

        require(self.env in known_systems(), "--env", f"one of {known_systems()}", self.env)
        if self.data is not None:
            from metasym_control.trajectory import trajectory_paths

            require(
                trajectory_paths(self.data)[1].exists(), "--data", "an existing trajectory file",
                str(self.data),
            )  # fmt: skip
        at_least("--n-tasks", self.n_tasks, 1)
        at_least("--episodes", self.episodes, 1)
        at_least("--steps-per-episode", self.steps_per_episode, 1, optional=True)
        validate_train_config(self.train)
        if self.exploration != ExplorationConfig():
            require(
                self.env == "quadrotor" and self.data is None, "--exploration.*",
                "the quadrotor's generated data only (not with --data)", self.env,
            )  # fmt: skip
            require(
                self.exploration.ref_bandwidth > 0 and self.exploration.noise_tau > 0,
                "--exploration.ref-bandwidth / --exploration.noise-tau", "> 0",
                (self.exploration.ref_bandwidth, self.exploration.noise_tau),
            )  # fmt: skip


def run_training(args: TrainArgs) -> LearnedModel:
    """Meta-train as `args` says; writes `args.out/checkpoint.*` and `args.out/log.json`.

    Under `torchrun` each rank generates (or takes from --data) its own shard of tasks:
    global task i belongs to rank i mod world.
    """
    torch.manual_seed(args.seed)
    entry = get_system(args.env)
    rank, world = init_distributed(args.device)
    try:
        if args.data is not None:
            data = Trajectory.load(args.data)
            check_system(args.env, data, f"--data {args.data}")
            everything = split_by_task(data)
            ids = list(range(rank, len(everything), world))
            tasks = [everything[i] for i in ids]
            n_total = len(everything)
        else:
            ids = list(range(rank, args.n_tasks, world))
            tasks = generate_tasks(
                entry.name,
                len(ids),
                args.episodes,
                args.steps_per_episode,
                "train",
                args.seed * 1000 + rank,
                args.progress and rank == 0,
                exploration=quadrotor_exploration(args.exploration)
                if args.exploration != ExplorationConfig()
                else None,
            )
            n_total = args.n_tasks
        first = tasks[0]
        model = model_for_data(
            args.model, first, args.metasym, args.device, getattr(torch, args.dtype)
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


def check_system(name: str, data: Trajectory, what: str) -> None:
    """Refuse data that belongs to another registered system than `name`.

    Raises:
        ValueError: naming `what` (e.g. the flag), the data's system and the expected one.
    """
    entry = get_system(name)
    found = system_of(data.env_id, data.state_dim)
    if found is None or found.name != entry.name:
        theirs = found.name if found is not None else f"{data.env_id} with {data.state_dim} states"
        raise ValueError(f"{what} holds data of {theirs}, not of --env {entry.name}")


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
        checkpoint: the meta-trained checkpoint (stem or file); it names its system.
        env: the system, or None to take it from the checkpoint (one that disagrees with the
            checkpoint's is refused).
        data: the new system's data: a trajectory file (`Trajectory.save`) or a user's log
            (a .csv, or an .npz of named columns; docs/user_data.md).
        params: a JSON file of the system's known parameters (a log's thrust range), or None.
        tail: fraction of every episode held out to report the fit before and after.
        out: stem of the adapted checkpoint to write.
        budget: the adaptation budget.
        device: "cpu" or "cuda".
    """

    checkpoint: Path = DEFAULT_WEIGHTS
    env: str | None = None
    data: Path = Path("support.npz")
    params: Path | None = None
    tail: float = 0.2
    out: Path = Path("outputs/adapted")
    budget: AdaptBudget = field(default_factory=AdaptBudget)
    device: str = "cpu"

    def validate(self) -> None:
        """Check every option up front (`UsageError` naming the flag and its range)."""
        from metasym_control.checkpoint import checkpoint_paths
        from metasym_control.trajectory import trajectory_paths
        from metasym_control.usage import require

        require(
            checkpoint_paths(self.checkpoint)[1].exists(), "--checkpoint",
            "an existing checkpoint", str(self.checkpoint),
        )  # fmt: skip
        from metasym_control.user_data import is_log

        exists = (
            self.data.exists() if is_log(self.data) else trajectory_paths(self.data)[1].exists()
        )
        require(exists, "--data", "an existing trajectory file or log", str(self.data))
        if self.params is not None:
            require(self.params.exists(), "--params", "an existing JSON file", str(self.params))
        require(0.0 < self.tail < 1.0, "--tail", "in (0, 1)", self.tail)


def adapt_main(args: AdaptArgs) -> None:
    """`metasym-control adapt`: adapt a checkpoint to a trajectory file or a user's log, report
    the fit on a held-out tail of it before and after, and save the result (nothing is
    written when the data are refused)."""
    from metasym_control.user_data import (
        fit_report,
        is_log,
        params_from_file,
        read_log,
        split_tail,
    )

    model, meta = load_checkpoint(args.checkpoint, device=args.device)
    name = checkpoint_system(meta, args.env)
    if is_log(args.data):
        params = params_from_file(args.params, name) if args.params is not None else None
        data = read_log(args.data, name, params, model.dt, model.history_len + 2)
    else:
        data = Trajectory.load(args.data, env_id=meta.get("env_id") or None)
    check_system(name, data, f"--data {args.data}")
    # the tail long enough for the 50-step error where the episodes allow it
    support, tail = split_tail(data, args.tail, model.history_len + 51, model.history_len + 4)
    t0 = time.perf_counter()
    adapted = model.adapt(support, args.budget)
    dt = time.perf_counter() - t0
    assert isinstance(adapted, LearnedModel)
    fit = fit_report(model, adapted, tail)
    for h, b, a, c in zip(fit["horizons"], fit["before"], fit["after"], fit["hold"], strict=True):
        if b is None:
            print(f"{h:>3}-step error: the held-out tail is too short")
        else:
            print(f"{h:>3}-step error on the held-out tail: {b:.4f} before, {a:.4f} after "
                  f"(hold the state: {c:.4f}; state-std units)")  # fmt: skip
    path = save_checkpoint(
        args.out,
        adapted,
        training={"adapted_from": str(args.checkpoint), "data": str(args.data), "fit": fit},
        system=name,
    )
    print(f"adapted in {dt:.2f} s on {support.num} trajectories; wrote {path}")
