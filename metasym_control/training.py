"""Meta-training and adaptation behind the CLI's `train` and `adapt` (also under torchrun)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

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
from metasym_control.models.registry import ModelKind
from metasym_control.params import Split
from metasym_control.systems import model_for_data
from metasym_control.trajectory import Trajectory
from metasym_control.weights import DEFAULT_WEIGHTS

logger = logging.getLogger(__name__)

EnvName = Literal["quadrotor", "toy"]


def split_by_task(traj: Trajectory) -> list[Trajectory]:
    """Group the episodes of a trajectory set by system (equal parameter dicts), in order."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(traj.params):
        groups.setdefault(json.dumps(p, sort_keys=True), []).append(i)
    return [traj.subset(idx) for idx in groups.values()]


def generate_tasks(
    env: EnvName, n_tasks: int, episodes: int, steps: int, split: Split, seed: int, progress: bool
) -> list[Trajectory]:
    """Fresh data: `n_tasks` systems of `env`, `episodes` episodes of `steps` steps each."""
    if env == "toy":
        from metasym_control.envs.toy_oscillator import oscillator_family

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
