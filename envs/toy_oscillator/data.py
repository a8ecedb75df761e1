"""Toy oscillator trajectories under smooth random forcing, one family of systems per call."""

from __future__ import annotations

import numpy as np

from metasym_control.envs.toy_oscillator.params import (
    TOY_DT,
    TOY_ENV_ID,
    OscillatorParams,
    sample_oscillator_params,
)
from metasym_control.params import Split
from metasym_control.trajectory import Trajectory

STATE_NAMES = ["q", "p"]
STATE_UNITS = ["m", "kg m/s"]
ACTION_NAMES = ["force"]


def oscillator_trajectories(
    params: OscillatorParams,
    n: int,
    steps: int,
    rng: np.random.Generator,
    dt: float = TOY_DT,
) -> Trajectory:
    """`n` episodes of one oscillator under smooth random forcing.

    Args:
        params: the system.
        n: episodes.
        steps: transitions per episode.
        rng: random source (initial states and forcing).
        dt: control period, s.

    Returns:
        Trajectory with states (n, steps+1, 2), actions (n, steps, 1).
    """
    a, b = params.discrete(dt)
    t = np.arange(steps) * dt
    # forcing: a sum of three sinusoids of random frequency and phase, clipped to [-1, 1]
    freq = rng.uniform(0.2, 2.0, size=(n, 3, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 3, 1))
    amp = rng.uniform(0.0, 0.6, size=(n, 3, 1))
    u = np.clip((amp * np.sin(2 * np.pi * freq * t + phase)).sum(1), -1, 1)[..., None]
    x = np.empty((n, steps + 1, 2))
    x[:, 0, 0] = rng.uniform(-1, 1, n)
    x[:, 0, 1] = params.mass * rng.uniform(-1, 1, n)
    for k in range(steps):
        x[:, k + 1] = x[:, k] @ a.T + u[:, k] @ b.T
    return Trajectory(
        states=x,
        actions=u,
        lengths=np.full(n, steps),
        terminated=np.zeros(n, dtype=bool),
        params=[params.to_dict()] * n,
        dt=dt,
        env_id=TOY_ENV_ID,
        state_names=list(STATE_NAMES),
        state_units=list(STATE_UNITS),
        action_names=list(ACTION_NAMES),
    )


def oscillator_family(
    n_tasks: int, episodes: int, steps: int, split: Split, seed: int, dt: float = TOY_DT
) -> list[Trajectory]:
    """`n_tasks` systems of the `split` range, `episodes` episodes each (one Trajectory each)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_tasks):
        p = sample_oscillator_params(rng, split)
        out.append(oscillator_trajectories(p, episodes, steps, rng, dt))
    return out
