"""The registry of systems: every entry generates seeded data without autoreset steps, users'
systems join through entry points, and the checkpoints name their system."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metasym_control.generate import generate_data
from metasym_control.systems import (
    SYSTEMS,
    get_system,
    known_systems,
    load_plugins,
    system_of,
)

load_plugins()
ALL_SYSTEMS = sorted(SYSTEMS)


def test_every_project_system_and_the_pendulum_plugin_are_registered() -> None:
    names = known_systems()
    for name in ("quadrotor", "spring_mesh", "quantum", "quantum_oscillator", "toy", "pendulum"):
        assert name in names
    # the pendulum joins through the `metasym_control.systems` entry point, as a user's would
    assert system_of("MetaSymPendulum-v0", 2) is get_system("pendulum")
    assert system_of("MetaSymOpenQuantum-v0", 8) is get_system("quantum")
    assert system_of("MetaSymOpenQuantum-v0", 2 * 10 * 10) is get_system("quantum_oscillator")
    with pytest.raises(ValueError, match=r"unknown system 'nope'.*quadrotor"):
        get_system("nope")


@pytest.mark.parametrize("name", ALL_SYSTEMS)
def test_generation_is_seeded_and_every_transition_is_a_step_of_the_system(name: str) -> None:
    entry = get_system(name)
    a = generate_data(name, 2, 2, 6, "train", seed=5, num_envs=2)
    b = generate_data(name, 2, 2, 6, "train", seed=5, num_envs=2)
    c = generate_data(name, 2, 2, 6, "train", seed=6, num_envs=2)
    np.testing.assert_array_equal(a.states, b.states)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert not np.array_equal(a.states, c.states)
    assert a.num == 4 and a.meta["system"] == name
    assert np.all(np.isfinite(a.states[:, :-1][a.valid_mask()]))
    assert np.all(np.abs(a.actions) <= 1.0)
    # the two episodes of a system share its parameters; the two systems differ
    assert a.params[0] == a.params[1] and a.params[0] != a.params[2]
    # no autoreset transition: where the system has a deterministic analytic model (no
    # measurement noise, no gusts), every recorded transition is that model's step of the
    # recorded system; a reset inside an episode would be a jump it cannot explain
    deterministic = {"spring_mesh", "pendulum"}
    if name in deterministic and entry.analytic_model is not None:
        for i in range(a.num):
            params = type(entry.nominal_params()).from_dict(a.params[i])
            model = entry.analytic_model(params, a.dt)
            n = int(a.lengths[i])
            x = torch.as_tensor(a.states[i, :n])
            u = torch.as_tensor(a.actions[i, :n])
            pred = model.step(x, u, model.init_memory(x[:, None], u[:, None]))[0].numpy()
            truth = a.states[i, 1 : n + 1]
            change = np.abs(truth - a.states[i, :n]).max()
            assert np.abs(pred - truth).max() < 1e-5 * change + 1e-9, name


def test_mesh_v1_data_starts_from_the_benchmarks_ring_area_draw() -> None:
    # -v1 draws each start displacement uniform over the disc's area: mean radius 2/3 r1
    entry = get_system("spring_mesh")
    assert entry.env_id == "MetaSymSpringMesh-v1"
    data = generate_data("spring_mesh", 4, 4, 1, "train", seed=0, num_envs=4)
    params = entry.nominal_params()
    lay = params.layout  # type: ignore[attr-defined]
    rest = lay.rest[lay.free].reshape(-1)
    disp = (data.states[:, 0, : rest.size] - rest).reshape(data.num, -1, 2)
    radius = np.linalg.norm(disp, axis=-1) / params.spacing  # type: ignore[attr-defined]
    assert radius.max() <= 0.35 + 1e-9
    assert abs(radius.mean() - 2 / 3 * 0.35) < 0.04  # radius-uniform would give 0.175
