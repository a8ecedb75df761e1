"""Trajectory generation on Gymnasium vector environments (autoreset transitions dropped)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import gymnasium as gym
import numpy as np

from metasym_control.params import Split, SystemParams
from metasym_control.trajectory import Trajectory

if TYPE_CHECKING:
    from metasym_control.exploration import ExplorationConfig

logger = logging.getLogger(__name__)


class BatchPolicy(Protocol):
    """A policy acting for N parallel environments at once (one slot per sub-environment)."""

    def reset(self, index: int, state: np.ndarray, physics: Any | None = None) -> None:
        """Start a new episode in slot `index` from `state` (nx,)."""
        ...

    def act_batch(self, states: np.ndarray) -> np.ndarray:
        """Normalised actions (N, nu) for states (N, nx); advances every slot by one step."""
        ...


PolicyFactory = Callable[[Sequence[SystemParams], int], BatchPolicy]
# (chunk_params, seed, dt) -> BatchPolicy: a system's exploration (`SystemEntry.exploration`)
ExplorationFactory = Callable[[Sequence[SystemParams], int, float], BatchPolicy]


def collect_trajectories(
    env_id: str,
    params: Sequence[SystemParams],
    policy_factory: PolicyFactory,
    episodes_per_task: int,
    steps: int,
    *,
    num_envs: int = 8,
    seed: int = 0,
    split: Split = "train",
    env_kwargs: dict[str, Any] | None = None,
    policy_name: str = "",
    progress: bool = False,
) -> Trajectory:
    """Roll a batched policy out on Gymnasium vector environments, one system per sub-env.

    A *task* is one parameter set: its sub-environment is made with `params=p` (so every
    autoreset keeps the system) and runs `episodes_per_task` episodes of at most `steps`
    transitions (`TimeLimit`), ending earlier on termination. Tasks are processed in chunks of
    `num_envs` on a `gymnasium.vector.SyncVectorEnv` in next-step autoreset mode (reused
    from chunk to chunk when the sub-environments expose an assignable `fixed_params`); the step
    that performs an autoreset is dropped, and states come from `env.get_state()` (the exact
    physical state, not the noisy observation). The recorded actions are the ones the
    environment applied (float32 at the Gymnasium face, clipped to [-1, 1]).

    Args:
        env_id: registered id (with version); its constructor must accept `params=`.
        params: one parameter set per task (n_tasks).
        policy_factory: `(chunk_params, seed) -> BatchPolicy` for one chunk of tasks.
        episodes_per_task: episodes per task.
        steps: maximum transitions per episode (the trajectories' T).
        num_envs: sub-environments per vector environment.
        seed: master seed (environment resets and policy seeds derive from it).
        split: recorded in `meta` (which range `params` came from).
        env_kwargs: extra constructor arguments of every sub-environment.
        policy_name: recorded in `meta`.
        progress: show a tqdm bar over tasks.

    Returns:
        A `Trajectory` of n_tasks · episodes_per_task episodes, task-major (episode e of task
        i at index i · episodes_per_task + e); `meta` holds seed, split, policy, n_tasks,
        episodes_per_task and `task_index` per episode.
    """
    if episodes_per_task < 1 or steps < 1 or num_envs < 1:
        raise ValueError("collect_trajectories: episodes_per_task, steps, num_envs must be >= 1")
    if not params:
        raise ValueError("collect_trajectories: no parameter sets given")
    kwargs = dict(env_kwargs or {})
    master = np.random.default_rng(seed)
    episodes: list[tuple[np.ndarray, np.ndarray, bool]] = []
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(params), desc=f"collect {env_id}", unit="task")
    meta_env: dict[str, Any] = {}
    vec: gym.vector.SyncVectorEnv | None = None
    try:
        for start in range(0, len(params), num_envs):
            chunk = list(params[start : start + num_envs])
            reset_seeds: list[int | None] = [
                int(s) for s in master.integers(0, 2**31 - 1, size=len(chunk))
            ]
            policy_seed = int(master.integers(0, 2**31 - 1))
            if vec is not None and vec.num_envs == len(chunk) and _reassign(vec, chunk):
                pass  # sub-environments reused with the new systems (no recompilation)
            else:
                if vec is not None:
                    vec.close()
                fns = [
                    partial(
                        gym.make,
                        env_id,
                        params=p,
                        max_episode_steps=steps,
                        disable_env_checker=True,
                        **kwargs,
                    )
                    for p in chunk
                ]
                vec = gym.vector.SyncVectorEnv(
                    fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP
                )
            episodes.extend(
                _run_chunk(vec, chunk, policy_factory, policy_seed, reset_seeds, episodes_per_task)
            )
            if not meta_env:
                base = vec.envs[0].unwrapped
                meta_env = {
                    "dt": float(getattr(base, "dt")),  # noqa: B009
                    "state_names": list(getattr(base, "state_names", [])),
                    "state_units": list(getattr(base, "state_units", [])),
                    "action_names": list(getattr(base, "action_names", [])),
                }
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if vec is not None:
            vec.close()
    if bar is not None:
        bar.close()

    n = len(episodes)
    nx = episodes[0][0].shape[1]
    nu = episodes[0][1].shape[1]
    states = np.zeros((n, steps + 1, nx))
    actions = np.zeros((n, steps, nu))
    lengths = np.zeros(n, dtype=np.int64)
    terminated = np.zeros(n, dtype=bool)
    for i, (s, a, term) in enumerate(episodes):
        t = a.shape[0]
        states[i, : t + 1] = s
        states[i, t + 1 :] = s[-1]  # padding: copies of the last valid state
        actions[i, :t] = a
        lengths[i] = t
        terminated[i] = term
    task_index = [i for i in range(len(params)) for _ in range(episodes_per_task)]
    return Trajectory(
        states=states,
        actions=actions,
        lengths=lengths,
        terminated=terminated,
        params=[params[i].to_dict() for i in task_index],
        dt=meta_env["dt"],
        env_id=env_id,
        state_names=meta_env["state_names"],
        state_units=meta_env["state_units"],
        action_names=meta_env["action_names"],
        meta={
            "seed": seed,
            "split": split,
            "policy": policy_name,
            "n_tasks": len(params),
            "episodes_per_task": episodes_per_task,
            "task_index": task_index,
            "terminated_episodes": int(terminated.sum()),
        },
    )


def _reassign(vec: gym.vector.SyncVectorEnv, chunk: Sequence[SystemParams]) -> bool:
    """Give each sub-environment its new system through `fixed_params`, if it has one."""
    bases = [e.unwrapped for e in vec.envs]
    if not all(hasattr(b, "fixed_params") for b in bases):
        return False
    for b, p in zip(bases, chunk):
        b.fixed_params = p  # type: ignore[attr-defined]
    return True


def _run_chunk(
    vec: gym.vector.SyncVectorEnv,
    chunk: Sequence[SystemParams],
    policy_factory: PolicyFactory,
    policy_seed: int,
    reset_seeds: list[int | None],
    episodes_per_task: int,
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Run one vector environment until each slot has its episodes; task-major output."""
    n = len(chunk)
    vec.reset(seed=reset_seeds)
    states = np.stack(vec.call("get_state"))  # (n, nx)
    policy = policy_factory(chunk, policy_seed)
    for j in range(n):
        policy.reset(j, states[j], chunk[j])
    cur_s: list[list[np.ndarray]] = [[states[j].copy()] for j in range(n)]
    cur_a: list[list[np.ndarray]] = [[] for _ in range(n)]
    done: list[list[tuple[np.ndarray, np.ndarray, bool]]] = [[] for _ in range(n)]
    resetting = np.zeros(n, dtype=bool)
    while any(len(d) < episodes_per_task for d in done):
        actions = np.asarray(policy.act_batch(states), dtype=np.float32)
        _, _, term, trunc, _ = vec.step(actions)
        new_states = np.stack(vec.call("get_state"))
        applied = np.clip(actions.astype(np.float64), -1.0, 1.0)
        for j in range(n):
            if resetting[j]:
                # this step was the autoreset: its state starts the next episode
                resetting[j] = False
                cur_s[j] = [new_states[j].copy()]
                cur_a[j] = []
                policy.reset(j, new_states[j])
                continue
            if len(done[j]) >= episodes_per_task:
                continue
            cur_a[j].append(applied[j])
            cur_s[j].append(new_states[j].copy())
            if term[j] or trunc[j]:
                done[j].append((np.stack(cur_s[j]), np.stack(cur_a[j]), bool(term[j])))
                resetting[j] = True
        states = new_states
    return [ep for d in done for ep in d]


def collect_quadrotor_dataset(
    n_tasks: int,
    episodes_per_task: int,
    steps: int,
    split: Split = "train",
    seed: int = 0,
    *,
    motor_lag: bool = False,
    sensor_noise: float = 0.0,
    num_envs: int = 8,
    exploration: ExplorationConfig | None = None,
    params: Sequence[SystemParams] | None = None,
    progress: bool = False,
) -> Trajectory:
    """Meta-training / adaptation data of `MetaSymQuadrotor-v0` from the exploration policy.

    Draws `n_tasks` quadrotors with `sample_quadrotor_params(rng, split)` (unless `params`
    is given) and flies `episodes_per_task` episodes of up to `steps` control steps on each,
    starting near the hover point (0, 0, 1.5) m.

    Args:
        n_tasks: number of systems.
        episodes_per_task: episodes per system.
        steps: maximum transitions per episode (T of the result).
        split: "train" or "test" parameter range.
        seed: master seed (parameters, resets, policy).
        motor_lag: systems with motor lag (17 states) instead of 13.
        sensor_noise: observation noise of the systems (states are recorded exactly).
        num_envs: sub-environments per vector environment.
        exploration: exploration settings.
        params: explicit systems instead of sampled ones.
        progress: tqdm bar.

    Returns:
        `Trajectory` with N = n_tasks · episodes_per_task, states (N, steps+1, 13 or 17).
    """
    from metasym_control.envs.quadrotor import ENV_ID, sample_quadrotor_params
    from metasym_control.exploration import quadrotor_exploration

    explore = quadrotor_exploration(exploration)
    rng = np.random.default_rng(seed)
    if params is None:
        params = [
            sample_quadrotor_params(rng, split, motor_lag=motor_lag, sensor_noise=sensor_noise)
            for _ in range(n_tasks)
        ]
    traj = collect_trajectories(
        ENV_ID,
        params,
        lambda chunk, policy_seed: explore(chunk, policy_seed, 0.02),  # the env's period, s
        episodes_per_task,
        steps,
        num_envs=num_envs,
        seed=int(rng.integers(0, 2**31 - 1)),
        split=split,
        env_kwargs={"task": "hover"},
        policy_name="QuadrotorExplorationPolicy",
        progress=progress,
    )
    traj.meta["seed"] = seed
    traj.meta["motor_lag"] = motor_lag
    return traj
