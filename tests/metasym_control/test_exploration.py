"""The quadrotor exploration policy (data collection): it excites without crashing."""

from __future__ import annotations

import numpy as np
import pytest

from metasym_control.envs.quadrotor import QuadrotorEnv, QuadrotorParams, sample_quadrotor_params
from metasym_control.exploration import ExplorationConfig, QuadrotorExplorationPolicy


@pytest.mark.parametrize(
    ("split", "lag", "base"),
    [
        ("train", False, QuadrotorParams()),
        ("test", False, QuadrotorParams()),
        ("test", True, QuadrotorParams()),
        ("test", True, QuadrotorParams.crazyflie()),
    ],
    ids=["x2-train", "x2-test", "x2-test-lag", "crazyflie-test-lag"],
)
def test_exploration_policy_excites_without_crashing(
    split: str, lag: bool, base: QuadrotorParams
) -> None:
    # held-out systems (light or heavy, low inertia, strong wind) with a motor lag are the
    # hard case; a heavy Crazyflie has a thrust-to-weight ratio of only 1.6
    rng = np.random.default_rng(7)
    params = [sample_quadrotor_params(rng, split, base=base, motor_lag=lag) for _ in range(8)]
    envs = [QuadrotorEnv(task="hover", params=p) for p in params]
    policy = QuadrotorExplorationPolicy(params, ExplorationConfig(), seed=0)
    for i, e in enumerate(envs):
        e.reset(seed=i)
    states = np.stack([e.get_state() for e in envs])
    for i in range(len(envs)):
        policy.reset(i, states[i])
    xs, acts = [states], []
    for _ in range(300):
        a = policy.act_batch(states)
        acts.append(a)
        for i, e in enumerate(envs):
            _, _, term, _, info = e.step(a[i].astype(np.float32))
            assert not term, info
        states = np.stack([e.get_state() for e in envs])
        xs.append(states)
    x = np.stack(xs)  # (T+1, N, nx)
    a = np.stack(acts)
    assert np.all(np.abs(a) <= 1)
    # random references move the vehicles around the volume and excite the rotation
    assert x[..., 0:3].std(axis=0).mean() > 0.2
    assert np.abs(x[..., 10:13]).max() > 0.5
    assert a.std(axis=0).mean() > 0.03
