"""The `metasym-control` command line: demo, training, adaptation (typed options, --help)."""

from __future__ import annotations

import os
import sys

# MuJoCo picks its OpenGL platform when first imported (below, through the configs): the
# commands render videos headless, so EGL unless the user chose another
os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Callable
from typing import Annotated, Any

import tyro

from metasym_control.demo import DemoConfig
from metasym_control.evaluation import EvalArgs
from metasym_control.experiment import ExperimentArgs
from metasym_control.generate import GenerateArgs
from metasym_control.pretrained import TrainDefaultArgs
from metasym_control.training import AdaptArgs, TrainArgs

_DEMO_DEFAULTS = DemoConfig()
_TRAIN = TrainArgs()
_ADAPT = AdaptArgs()
_TRAIN_DEFAULT = TrainDefaultArgs()
_EVAL = EvalArgs()
_GENERATE = GenerateArgs()
_EXPERIMENT = ExperimentArgs()


def demo(cfg: Annotated[DemoConfig, tyro.conf.OmitArgPrefixes] = _DEMO_DEFAULTS) -> None:
    """Closed-loop demo on an unseen system (`--env`; the quadrotor's figure-8 by default):
    MPC with nominal physics, adapted MetaSym and the oracle; table, plot and video."""
    from metasym_control import demo as demo_module

    cfg.validate()
    demo_module.main(cfg)


def train(args: Annotated[TrainArgs, tyro.conf.arg(name="")] = _TRAIN) -> None:
    """Meta-train MetaSym (or a baseline) on an environment's data; runs under torchrun too."""
    from metasym_control import training

    args.validate()
    training.train_main(args)


def adapt(args: Annotated[AdaptArgs, tyro.conf.arg(name="")] = _ADAPT) -> None:
    """Adapt a checkpoint to a trajectory file and save the adapted checkpoint."""
    from metasym_control import training

    args.validate()
    training.adapt_main(args)


def train_default(
    args: Annotated[TrainDefaultArgs, tyro.conf.arg(name="")] = _TRAIN_DEFAULT,
) -> None:
    """Regenerate shipped checkpoints (`--env NAME --model KIND`, or `--all`; fixed seeds)."""
    from metasym_control import pretrained

    args.validate()
    pretrained.train_default_main(args)


def eval_models(args: Annotated[EvalArgs, tyro.conf.arg(name="")] = _EVAL) -> None:
    """Evaluate models on held-out systems: K-shot adaptation, open-loop errors at long
    horizons in one fixed unit, beside trivial predictors (`few-shot` is the same command)."""
    from metasym_control import evaluation

    args.validate()
    evaluation.eval_main(args)


def generate(args: Annotated[GenerateArgs, tyro.conf.arg(name="")] = _GENERATE) -> None:
    """Generate exploration data of a registered system (`--env NAME`) into a trajectory file."""
    from metasym_control import generate as generate_module

    args.validate()
    generate_module.generate_main(args)


def experiment(args: Annotated[ExperimentArgs, tyro.conf.arg(name="")] = _EXPERIMENT) -> None:
    """Closed-loop experiment: zero action and MPC with nominal, adapted-MetaSym and oracle
    models over many held-out systems (median, worst, interval; writes BENCHMARKS.md)."""
    from metasym_control import experiment as experiment_module

    args.validate()
    experiment_module.experiment_main(args)


def _commands() -> dict[str, Callable[..., Any]]:
    return {
        "demo": demo,
        "generate": generate,
        "train": train,
        "adapt": adapt,
        "train-default": train_default,
        "eval": eval_models,
        "few-shot": eval_models,
        "experiment": experiment,
    }


def main() -> None:
    """Entry point of `metasym-control` and `python -m metasym_control.cli`.

    A bad option or input (a `UsageError`, or the `ValueError` of a checkpoint, trajectory
    file, configuration or environment that refuses it) is one line on stderr and exit code
    2; `--debug` (anywhere on the line) shows the traceback instead.
    """
    debug = "--debug" in sys.argv
    if debug:
        sys.argv = [a for a in sys.argv if a != "--debug"]
    try:
        tyro.extras.subcommand_cli_from_dict(_commands())
    except ValueError as e:  # UsageError, CheckpointError, FormatError and the configs' checks
        if debug:
            raise
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        print(f"metasym-control {command}: error: {e} (--debug shows where)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
