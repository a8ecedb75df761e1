"""Tests of the vector-environment trajectory generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metasym_control.data import collect_quadrotor_dataset, collect_trajectories
from metasym_control.envs.quadrotor import QuadrotorParams
from metasym_control.models.quadrotor_analytic import QuadrotorModel


@pytest.fixture(scope="module")
def small_dataset():
    return collect_quadrotor_dataset(5, 2, 60, "train", seed=3, num_envs=3)


def test_dataset_layout_and_metadata(small_dataset) -> None:
    tr = small_dataset
    assert tr.states.shape == (10, 61, 13) and tr.actions.shape == (10, 60, 4)
    assert tr.env_id == "MetaSymQuadrotor-v0" and tr.dt == 0.02
    assert tr.state_names[:4] == ["px", "py", "pz", "qw"] and tr.state_units[7] == "m/s"
    assert tr.action_names == ["a1", "a2", "a3", "a4"]
    assert tr.meta["seed"] == 3 and tr.meta["split"] == "train"
    assert tr.meta["policy"] == "QuadrotorExplorationPolicy"
    assert tr.meta["task_index"] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # one parameter set per task, kept across its episodes; tasks differ
    for i in range(5):
        assert tr.params[2 * i] == tr.params[2 * i + 1]
    assert len({tr.params[2 * i]["mass"] for i in range(5)}) == 5
    assert np.all(tr.lengths == 60) and not tr.terminated.any()
    assert np.all(np.abs(tr.actions) <= 1.0)
    # episodes of one task start from different states
    assert not np.allclose(tr.states[0, 0], tr.states[1, 0])


def test_no_autoreset_transition_inside_episodes() -> None:
    # no gusts: then every recorded transition must be the analytic model's step of the
    # recorded system (two chunks of two: the second reuses the sub-environments)
    params = [
        QuadrotorParams(mass=m, drag=(0.1, 0.1, 0.2), wind=(0.3, 0, 0))
        for m in (1.2, 1.5, 1.0, 1.8)
    ]
    tr = collect_quadrotor_dataset(4, 3, 25, seed=0, num_envs=2, params=params)
    assert tr.num == 12
    assert [tr.params[i]["mass"] for i in range(0, 12, 3)] == [1.2, 1.5, 1.0, 1.8]
    for i in range(tr.num):
        p = QuadrotorParams.from_dict(tr.params[i])
        model = QuadrotorModel(p)
        x0 = torch.tensor(tr.states[i, :-1])
        pred = model.step(x0, torch.tensor(tr.actions[i]), {})[0].numpy()
        change = np.linalg.norm(tr.states[i, 1:] - tr.states[i, :-1], axis=1)
        err = np.linalg.norm(pred - tr.states[i, 1:], axis=1)
        assert np.all(err < 1e-6 * change + 1e-12)
        # every episode starts near the hover point, at rest within the start noise
        assert np.linalg.norm(tr.states[i, 0, 0:3] - [0, 0, 1.5]) < 0.2


def test_seeded_collection_is_reproducible(small_dataset) -> None:
    again = collect_quadrotor_dataset(5, 2, 60, "train", seed=3, num_envs=3)
    np.testing.assert_array_equal(again.states, small_dataset.states)
    np.testing.assert_array_equal(again.actions, small_dataset.actions)
    other = collect_quadrotor_dataset(5, 2, 60, "train", seed=4, num_envs=3)
    assert not np.allclose(other.states, small_dataset.states)


def test_generic_collector_pads_terminated_episodes() -> None:
    class FreeFall:
        """Zero thrust for everyone: episodes end by crashing into the floor."""

        def reset(self, index, state, physics=None) -> None:
            pass

        def act_batch(self, states: np.ndarray) -> np.ndarray:
            return -np.ones((states.shape[0], 4))

    params = [QuadrotorParams(), QuadrotorParams(mass=1.5)]
    tr = collect_trajectories(
        "MetaSymQuadrotor-v0",
        params,
        lambda chunk, seed: FreeFall(),
        episodes_per_task=2,
        steps=100,
        num_envs=2,
        env_kwargs={"task": "hover", "init_noise": 0.0},
        policy_name="free-fall",
    )
    assert tr.terminated.all()
    # from 1.5 m the floor (0.05 m) is reached after ~0.54 s = 28 steps
    assert np.all((tr.lengths > 20) & (tr.lengths < 35))
    for i in range(tr.num):
        n = tr.lengths[i]
        assert tr.states[i, n, 2] < 0.05 <= tr.states[i, n - 1, 2]
        np.testing.assert_array_equal(
            tr.states[i, n + 1 :], np.broadcast_to(tr.states[i, n], (100 - n, 13))
        )
        assert tr.states[i, 0, 2] == pytest.approx(1.5)  # the reset state, not the crash
    with pytest.raises(ValueError):
        collect_trajectories("MetaSymQuadrotor-v0", [], lambda c, s: FreeFall(), 1, 10)
