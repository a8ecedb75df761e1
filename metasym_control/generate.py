"""Data for any registered system (`metasym-control generate --env NAME`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metasym_control.data import ExplorationFactory, collect_trajectories
from metasym_control.params import Split, SystemParams
from metasym_control.systems import SystemEntry, get_system
from metasym_control.trajectory import Trajectory


def split_by_task(traj: Trajectory) -> list[Trajectory]:
    """Group the episodes of a trajectory set by system (equal parameter dicts), in order."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(traj.params):
        groups.setdefault(json.dumps(p, sort_keys=True), []).append(i)
    return [traj.subset(idx) for idx in groups.values()]


def generate_data(
    system: str | SystemEntry,
    n_tasks: int,
    episodes: int,
    steps: int | None = None,
    split: Split = "train",
    seed: int = 0,
    *,
    params: Sequence[SystemParams] | None = None,
    num_envs: int = 8,
    progress: bool = False,
    env_overrides: dict[str, Any] | None = None,
    exploration: ExplorationFactory | None = None,
) -> Trajectory:
    """Exploration data of a registered system on Gymnasium vector environments.

    Draws `n_tasks` systems from the `split` range with the entry's sampler (unless `params`
    is given) and runs the entry's exploration policy for `episodes` episodes of up to
    `steps` transitions on each, one system per sub-environment, autoreset steps dropped
    (`collect_trajectories`). Deterministic under `seed`.

    Args:
        system: a name of `SYSTEMS` or an entry.
        n_tasks: systems (ignored when `params` is given).
        episodes: episodes per system.
        steps: transitions per episode (None: the entry's `episode_steps`).
        split: "train" or "test" range.
        seed: master seed (parameters, resets, policy).
        params: explicit systems instead of sampled ones.
        num_envs: sub-environments per vector environment.
        progress: tqdm bar.
        env_overrides: constructor arguments on top of the entry's `env_kwargs`.
        exploration: `(chunk_params, seed, dt) -> BatchPolicy` flying the data instead of
            the entry's own `exploration` (e.g. a quadrotor policy with other settings).

    Returns:
        `Trajectory` of n_tasks · episodes episodes (task-major), `meta["system"]` = the name.
    """
    entry = get_system(system) if isinstance(system, str) else system
    steps = entry.episode_steps if steps is None else steps
    if n_tasks < 1 and params is None:
        raise ValueError("generate_data: n_tasks must be >= 1")
    rng = np.random.default_rng(seed)
    if entry.generate is not None:
        if params is not None:
            raise ValueError(f"generate_data: system {entry.name!r} draws its own parameters")
        traj = entry.generate(n_tasks, episodes, steps, split, seed)
    else:
        if params is None:
            params = [entry.sample_params(rng, split) for _ in range(n_tasks)]
        kwargs = {**entry.env_kwargs, **(env_overrides or {})}
        probe = entry.make_env(params=params[0], **(env_overrides or {}))
        dt = float(probe.unwrapped.dt)
        probe.close()

        explore = entry.exploration if exploration is None else exploration

        def policy(chunk: Sequence[SystemParams], policy_seed: int) -> Any:
            return explore(chunk, policy_seed, dt)

        traj = collect_trajectories(
            entry.env_id,
            params,
            policy,
            episodes,
            steps,
            num_envs=num_envs,
            seed=int(rng.integers(0, 2**31 - 1)),
            split=split,
            env_kwargs=kwargs,
            policy_name=f"{entry.name} exploration",
            progress=progress,
        )
    traj.meta["seed"] = seed
    traj.meta["system"] = entry.name
    return traj


def generate_tasks(
    system: str,
    n_tasks: int,
    episodes: int,
    steps: int | None,
    split: Split,
    seed: int,
    progress: bool = False,
    exploration: ExplorationFactory | None = None,
) -> list[Trajectory]:
    """`generate_data` split into one `Trajectory` per system (meta-training's tasks)."""
    data = generate_data(
        system, n_tasks, episodes, steps, split, seed, progress=progress, exploration=exploration
    )
    return split_by_task(data)


@dataclass(frozen=True)
class GenerateArgs:
    """Generate exploration data of a registered system into a trajectory file.

    Attributes:
        env: the system (`metasym_control.systems.SYSTEMS`).
        out: output file stem (`<out>.npz` and `<out>.json`).
        n_tasks: systems drawn from the split's range.
        episodes: episodes per system.
        steps: transitions per episode (None: the system's default).
        split: "train" or "test" parameter range.
        seed: master seed.
        num_envs: sub-environments per vector environment.
        progress: progress bar.
    """

    env: str = "quadrotor"
    out: Path = Path("outputs/data/train")
    n_tasks: int = 32
    episodes: int = 5
    steps: int | None = None
    split: Split = "train"
    seed: int = 0
    num_envs: int = 8
    progress: bool = True

    def validate(self) -> None:
        """Check every option up front (`UsageError` naming the flag and its range)."""
        from metasym_control.systems import known_systems
        from metasym_control.usage import at_least, require

        require(self.env in known_systems(), "--env", f"one of {known_systems()}", self.env)
        at_least("--n-tasks", self.n_tasks, 1)
        at_least("--episodes", self.episodes, 1)
        at_least("--steps", self.steps, 1, optional=True)
        require(self.split in ("train", "test"), "--split", "train or test", self.split)
        at_least("--num-envs", self.num_envs, 1)


def generate_main(args: GenerateArgs) -> None:
    """`metasym-control generate`: write a trajectory file of a registered system."""
    t0 = time.perf_counter()
    traj = generate_data(
        args.env,
        args.n_tasks,
        args.episodes,
        args.steps,
        args.split,
        args.seed,
        num_envs=args.num_envs,
        progress=args.progress,
    )
    path = traj.save(args.out)
    print(
        f"{args.env}: {traj.num} episodes x {traj.horizon} steps of {args.n_tasks} {args.split} "
        f"systems in {time.perf_counter() - t0:.1f} s; wrote {path}"
    )
