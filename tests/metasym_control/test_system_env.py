"""The env base class and the registration: action checks, and every id made by Gymnasium."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import metasym_control  # noqa: F401  (registers the ids)
from metasym_control.registration import ENV_IDS, register_envs
from metasym_control.system_env import SystemEnv


class Minimal(SystemEnv):
    """The least a subclass sets: spaces and an id; the base provides `check_action`."""

    env_id = "Minimal-v0"

    def __init__(self) -> None:
        self.action_space = gym.spaces.Box(
            np.array([-1.0, 0.0], dtype=np.float32), np.array([1.0, 0.5], dtype=np.float32)
        )


def test_check_action_clips_into_the_space_and_says_so() -> None:
    env = Minimal()
    a, clipped = env.check_action([0.3, 0.2])
    assert not clipped and a.dtype == np.float64
    np.testing.assert_array_equal(a, [0.3, 0.2])
    a, clipped = env.check_action(np.array([-3.0, 0.7], dtype=np.float32))
    assert clipped
    np.testing.assert_array_equal(a, [-1.0, 0.5])


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ([0.1], "shape"),
        ([[0.1, 0.2]], "shape"),
        ([np.nan, 0.1], "non-finite"),
        ([np.inf, 0.1], "non-finite"),
        (["a", "b"], "not numeric"),
    ],
)
def test_check_action_names_the_env_on_bad_input(action: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        Minimal().check_action(action)
    assert "Minimal-v0" in str(err.value)


def test_state_access_must_be_implemented() -> None:
    with pytest.raises(NotImplementedError):
        Minimal().get_state()
    with pytest.raises(NotImplementedError):
        Minimal().set_state(np.zeros(2))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_id_is_registered_and_speaks_the_base_class(env_id: str) -> None:
    register_envs()  # idempotent: a second registration must not raise
    env = gym.make(env_id)
    base = env.unwrapped
    assert isinstance(base, SystemEnv) and base.env_id == env_id
    env.reset(seed=0)
    x = base.get_state()
    assert x.shape == (base.task.state_dim,) == (len(base.state_names),)
    assert len(base.state_units) == len(base.state_names)
    assert len(base.action_names) == base.action_space.shape[0] == base.task.action_dim
    base.set_state(x)
    np.testing.assert_allclose(base.get_state(), x, atol=1e-12)
    _, reward, *_ = env.step(np.zeros(base.action_space.shape, dtype=np.float32))
    assert np.isfinite(reward) and base.dt > 0
    env.close()


@pytest.mark.parametrize(
    "env_id",
    ["MetaSymQuadrotor-v0", "MetaSymSpringMesh-v1", "MetaSymOpenQuantum-v0", "ToyOscillator-v0"],
)
def test_every_env_shares_the_info_keys(env_id: str) -> None:
    env = gym.make(env_id, disable_env_checker=True)
    _, info0 = env.reset(seed=0)
    _, _, _, _, info = env.step(2.0 * np.ones(env.action_space.shape, dtype=np.float32))
    base = env.unwrapped
    for i, t, clipped in ((info0, 0.0, False), (info, base.dt, True)):
        assert i["action_clipped"] is clipped and i["clipped"] is clipped  # old name: alias
        assert i["t"] == pytest.approx(t) and i["time"] == pytest.approx(t)
        assert i["params"] == base.params
