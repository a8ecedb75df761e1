"""`make_vec` of the MuJoCo environments checks the whole action batch before stepping."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import metasym_control  # noqa: F401  (registers the ids)
from metasym_control.envs.checked_vector import CheckedSyncVectorEnv


@pytest.mark.parametrize("env_id", ["MetaSymQuadrotor-v0", "MetaSymSpringMesh-v1"])
def test_a_nan_for_one_sub_environment_steps_none(env_id: str) -> None:
    vec = gym.make_vec(env_id, 3)
    assert isinstance(vec, CheckedSyncVectorEnv)
    vec.reset(seed=0)
    before = [e.unwrapped.get_state().copy() for e in vec.envs]
    actions = np.zeros(vec.action_space.shape, dtype=np.float32)
    actions[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"sub-environment\(s\) \[2\].*no sub-environment"):
        vec.step(actions)
    for env, x in zip(vec.envs, before, strict=True):
        np.testing.assert_array_equal(env.unwrapped.get_state(), x)
    with pytest.raises(ValueError, match="action batch of shape"):
        vec.step(np.zeros((2, vec.action_space.shape[1])))
    # the batch is still in step: a good action moves every sub-environment once
    vec.step(np.zeros(vec.action_space.shape, dtype=np.float32))
    after = [e.unwrapped.get_state() for e in vec.envs]
    assert all(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
    vec.close()
