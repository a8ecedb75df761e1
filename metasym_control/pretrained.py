"""Regenerating the shipped pretrained weights (`make weights`): fixed seed, data and recipe."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from metasym_control.checkpoint import save_checkpoint
from metasym_control.meta_training import MetaTrainConfig
from metasym_control.models.metasym import MetaSymConfig
from metasym_control.params import jsonable
from metasym_control.training import TrainArgs, run_training
from metasym_control.weights import DEFAULT_WEIGHTS

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
        meta_steps: outer meta-training steps (the shipped run: 1200; fewer for a trial).
    """

    device: str = "cpu"
    out: Path = DEFAULT_WEIGHTS
    n_tasks: int = 48
    episodes: int = 5
    steps_per_episode: int = 100
    meta_steps: int = DEFAULT_TRAIN.steps


def train_default_main(args: TrainDefaultArgs) -> None:
    """`metasym-control train-default`: the shipped MetaSym quadrotor weights (fixed seed)."""
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
            train=dataclasses.replace(DEFAULT_TRAIN, steps=args.meta_steps),
        )
        model = run_training(targs)
        log = json.loads((Path(tmp) / "log.json").read_text())
    model.to("cpu")
    path = save_checkpoint(
        args.out,
        model,
        training={"recipe": "train-default", "args": jsonable(asdict(targs)), "log": log},
    )
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e3:.0f} kB) in {time.perf_counter() - t0:.0f} s")
