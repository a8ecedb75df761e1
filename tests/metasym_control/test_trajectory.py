"""Tests of the Trajectory container and its on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metasym_control.data import collect_quadrotor_dataset
from metasym_control.trajectory import TRAJECTORY_FORMAT_VERSION, FormatError, Trajectory


@pytest.fixture(scope="module")
def traj() -> Trajectory:
    return collect_quadrotor_dataset(2, 2, 20, "test", seed=0, num_envs=2)


def test_save_load_round_trip(traj: Trajectory, tmp_path: Path) -> None:
    path = traj.save(tmp_path / "data" / "quad")
    assert path.suffix == ".npz" and path.with_suffix(".json").exists()
    back = Trajectory.load(path, env_id="MetaSymQuadrotor-v0")
    np.testing.assert_array_equal(back.states, traj.states)
    np.testing.assert_array_equal(back.actions, traj.actions)
    np.testing.assert_array_equal(back.lengths, traj.lengths)
    np.testing.assert_array_equal(back.terminated, traj.terminated)
    assert back.params == traj.params and back.meta == traj.meta
    assert back.state_names == traj.state_names and back.state_units == traj.state_units
    assert back.dt == traj.dt and back.env_id == traj.env_id
    # the stem and the json path work too
    assert Trajectory.load(tmp_path / "data" / "quad.json").num == traj.num


def test_corrupt_and_truncated_files_say_so(traj: Trajectory, tmp_path: Path) -> None:
    path = traj.save(tmp_path / "quad")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="corrupt or truncated"):
        Trajectory.load(path)
    traj.save(tmp_path / "quad")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(FormatError, match="corrupt"):
        Trajectory.load(path)
    with pytest.raises(FormatError, match="not found"):
        Trajectory.load(tmp_path / "missing")


def test_other_environment_or_version_is_refused(traj: Trajectory, tmp_path: Path) -> None:
    path = traj.save(tmp_path / "quad")
    with pytest.raises(FormatError, match="MetaSymSpringMesh-v0"):
        Trajectory.load(path, env_id="MetaSymSpringMesh-v0")
    with pytest.raises(FormatError, match="MetaSymQuadrotor-v1"):
        Trajectory.load(path, env_id="MetaSymQuadrotor-v1")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["format_version"] = TRAJECTORY_FORMAT_VERSION + 1
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="format version"):
        Trajectory.load(path)
    meta["kind"] = "something else"
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="not a metasym_control trajectory"):
        Trajectory.load(path)


def test_container_checks_and_views(traj: Trajectory) -> None:
    with pytest.raises(ValueError, match="actions"):
        Trajectory(
            traj.states, traj.actions[:, :-1], traj.lengths, traj.terminated, traj.params, 0.02, "x"
        )
    with pytest.raises(ValueError, match="dt"):
        Trajectory(traj.states, traj.actions, traj.lengths, traj.terminated, traj.params, 0.0, "x")
    sub = traj.subset([0, 3])
    assert sub.num == 2 and sub.params == [traj.params[0], traj.params[3]]
    win = traj.window(5, 10)
    assert win.horizon == 10 and win.states.shape[1] == 11
    np.testing.assert_array_equal(win.states[:, 0], traj.states[:, 5])
    both = Trajectory.concatenate([traj, traj.window(0, 7)])
    assert both.num == 2 * traj.num and both.horizon == traj.horizon
    assert both.valid_mask().sum() == traj.lengths.sum() + np.minimum(traj.lengths, 7).sum()


def test_non_finite_data_is_refused_naming_trajectory_and_step() -> None:
    states = np.zeros((2, 5, 2))
    actions = np.zeros((2, 4, 1))
    kwargs = {"lengths": np.array([4, 2]), "terminated": np.zeros(2, bool), "dt": 0.1}
    kwargs |= {"params": [{}, {}], "env_id": "ToyOscillator-v0"}
    states[1, 4] = np.nan  # padding past trajectory 1's length: allowed
    Trajectory(states=states, actions=actions, **kwargs)
    states[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite state in trajectory 1 at step 2"):
        Trajectory(states=states, actions=actions, **kwargs)
    states[1, 2, 0] = 0.0
    actions[0, 3, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite action in trajectory 0 at step 3"):
        Trajectory(states=states, actions=actions, **kwargs)


def test_a_file_missing_a_metadata_key_is_a_format_error(tmp_path: Path) -> None:
    tr = Trajectory(
        states=np.zeros((1, 3, 2)),
        actions=np.zeros((1, 2, 1)),
        lengths=np.array([2]),
        terminated=np.zeros(1, bool),
        params=[{}],
        dt=0.1,
        env_id="ToyOscillator-v0",
    )
    tr.save(tmp_path / "d")
    meta = json.loads((tmp_path / "d.json").read_text())
    del meta["dt"]
    (tmp_path / "d.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="lacks the key"):
        Trajectory.load(tmp_path / "d")
