"""The shipped pretrained weights: their recipes (`make weights`) and loading them by name."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from metasym_control.checkpoint import load_checkpoint, save_checkpoint
from metasym_control.exploration import ExplorationConfig
from metasym_control.meta_training import MetaTrainConfig
from metasym_control.models.learned import LearnedModel
from metasym_control.models.metasym import MetaSymConfig
from metasym_control.models.registry import ModelKind
from metasym_control.params import jsonable
from metasym_control.training import TrainArgs, run_training
from metasym_control.weights import weights_stem

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
class Recipe:
    """How one shipped checkpoint is made (fixed seed: rerunning reproduces it).

    Attributes:
        system: the registered system.
        model: the model kind.
        n_tasks: training systems drawn from the train range.
        episodes: episodes per system.
        steps_per_episode: transitions per episode.
        train: meta-training settings.
        metasym: MetaSym's architecture (MetaSym kinds).
        exploration: the quadrotor's exploration settings for its generated data.
    """

    system: str
    model: ModelKind
    n_tasks: int
    episodes: int
    steps_per_episode: int
    train: MetaTrainConfig = DEFAULT_TRAIN
    metasym: MetaSymConfig = dataclasses.field(default_factory=MetaSymConfig)
    exploration: ExplorationConfig = dataclasses.field(default_factory=ExplorationConfig)


# every shipped checkpoint; each trains in well under 20 minutes on 2 CPU cores
RECIPES: dict[tuple[str, str], Recipe] = {
    # the head fast set and stale contexts: in closed loop better with RTI on 17-20 of 20
    # vehicles and offset-free everywhere (docs/controllers.md)
    ("quadrotor", "metasym"): Recipe(
        "quadrotor",
        "metasym",
        48,
        5,
        100,
        dataclasses.replace(DEFAULT_TRAIN, context_gap=32),
        MetaSymConfig(fast_set="meta_attention_head"),
    ),
    ("quadrotor", "mlp"): Recipe("quadrotor", "mlp", 48, 5, 100),
    ("spring_mesh", "metasym"): Recipe(
        "spring_mesh", "metasym", 32, 4, 100, dataclasses.replace(DEFAULT_TRAIN, steps=800)
    ),
    ("quantum", "metasym"): Recipe(
        "quantum", "metasym", 48, 4, 100, dataclasses.replace(DEFAULT_TRAIN, steps=800)
    ),
}


def load_pretrained(
    system: str = "quadrotor",
    model: str = "metasym",
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> LearnedModel:
    """A shipped checkpoint by name, e.g. `load_pretrained("spring_mesh")`.

    Args:
        system: a system with a shipped checkpoint (see `RECIPES`).
        model: the model kind ("metasym"; the quadrotor also ships "mlp").
        device, dtype: where to put it (dtype None: as saved, float32).

    Raises:
        ValueError: no checkpoint is shipped for that system and model.
    """
    if (system, model) not in RECIPES:
        known = ", ".join(f"{s}/{m}" for s, m in RECIPES)
        raise ValueError(f"no shipped {model} checkpoint for {system!r}; shipped: {known}")
    loaded, _meta = load_checkpoint(weights_stem(system, model), device=device, dtype=dtype)
    return loaded


@dataclass(frozen=True)
class TrainDefaultArgs:
    """Regenerate shipped checkpoints with their fixed seeds and recipes.

    Attributes:
        env: the system whose checkpoint to train (None with --all).
        model: the model kind.
        all: regenerate every shipped checkpoint (`make weights`).
        device: "cpu" (minutes on 2 cores; see docs/metasym.md) or "cuda".
        out: folder of the checkpoints (`make weights` passes the package's weights folder;
            the default keeps a trial run from overwriting the shipped ones).
        meta_steps: outer meta-training steps (None: the recipe's; fewer for a trial).
        n_tasks, episodes, steps_per_episode: data size (None: the recipe's; for a trial).
    """

    env: str | None = "quadrotor"
    model: str = "metasym"
    all: bool = False
    device: str = "cpu"
    out: Path = Path("outputs/weights")
    meta_steps: int | None = None
    n_tasks: int | None = None
    episodes: int | None = None
    steps_per_episode: int | None = None

    def validate(self) -> None:
        """Check every option up front (`UsageError` naming the flag and its range)."""
        from metasym_control.usage import at_least, require

        if not self.all:
            known = ", ".join(f"--env {s} --model {m}" for s, m in RECIPES)
            require(
                (self.env, self.model) in RECIPES, "--env/--model", f"a recipe ({known}) or --all",
                f"--env {self.env} --model {self.model}",
            )  # fmt: skip
        at_least("--meta-steps", self.meta_steps, 1, optional=True)
        at_least("--n-tasks", self.n_tasks, 1, optional=True)
        at_least("--episodes", self.episodes, 1, optional=True)
        at_least("--steps-per-episode", self.steps_per_episode, 1, optional=True)


def train_recipe(
    recipe: Recipe, out: Path, device: str = "cpu", meta_steps: int | None = None
) -> Path:
    """Train one recipe and write `<out>/<model>_<system>.*`; returns the .safetensors path."""
    train = recipe.train
    if meta_steps is not None:
        train = dataclasses.replace(train, steps=meta_steps)
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainArgs(
            env=recipe.system,
            out=Path(tmp),
            model=recipe.model,
            n_tasks=recipe.n_tasks,
            episodes=recipe.episodes,
            steps_per_episode=recipe.steps_per_episode,
            seed=0,
            device=device,
            dtype="float32",
            metasym=recipe.metasym,
            train=train,
            exploration=recipe.exploration,
        )
        model = run_training(targs)
        log = json.loads((Path(tmp) / "log.json").read_text())
    model.to("cpu")
    return save_checkpoint(
        out / f"{recipe.model}_{recipe.system}",
        model,
        training={"recipe": "train-default", "args": jsonable(asdict(targs)), "log": log},
        system=recipe.system,
    )


def train_default_main(args: TrainDefaultArgs) -> None:
    """`metasym-control train-default`: the shipped checkpoints (fixed seeds and recipes)."""
    logging.basicConfig(level=logging.INFO)
    if args.all:
        recipes = list(RECIPES.values())
    elif (args.env, args.model) in RECIPES:
        recipes = [RECIPES[(str(args.env), args.model)]]
    else:
        known = ", ".join(f"--env {s} --model {m}" for s, m in RECIPES)
        raise SystemExit(
            f"train-default: no recipe for --env {args.env} --model {args.model}; "
            f"known: {known}, or --all"
        )
    for recipe in recipes:
        t0 = time.perf_counter()
        sizes: dict[str, Any] = {
            k: v
            for k, v in (
                ("n_tasks", args.n_tasks),
                ("episodes", args.episodes),
                ("steps_per_episode", args.steps_per_episode),
            )
            if v is not None
        }
        path = train_recipe(
            dataclasses.replace(recipe, **sizes), args.out, args.device, args.meta_steps
        )
        size = path.stat().st_size
        print(f"wrote {path} ({size / 1e3:.0f} kB) in {time.perf_counter() - t0:.0f} s")
