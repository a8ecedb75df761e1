"""Meta-training data flown by another exploration setting (`TrainArgs.exploration`)."""

from __future__ import annotations

import numpy as np
import pytest

from metasym_control.exploration import ExplorationConfig, quadrotor_exploration
from metasym_control.generate import generate_tasks
from metasym_control.training import TrainArgs
from metasym_control.usage import UsageError


def _spread(bandwidth: float | None) -> tuple[float, float]:
    """99th percentile of |vertical speed| (m/s) and std of the collective action."""
    factory = (
        None
        if bandwidth is None
        else quadrotor_exploration(ExplorationConfig(ref_bandwidth=bandwidth))
    )
    tasks = generate_tasks("quadrotor", 3, 2, 80, "train", 5, exploration=factory)
    vz = np.concatenate([np.asarray(t.states)[..., 9].ravel() for t in tasks])
    collective = np.concatenate([np.asarray(t.actions).mean(-1).ravel() for t in tasks])
    return float(np.percentile(np.abs(vz), 99)), float(collective.std())


def test_a_faster_reference_widens_the_data_and_the_default_is_the_registrys() -> None:
    # the same seed draws the same vehicles, goals and noise: only the reference filter differs;
    # the tilt limit caps horizontal speed, so the climbs and the thrust spread grow
    default = _spread(None)
    assert _spread(2.5) == pytest.approx(default, rel=1e-12)
    vz, collective = _spread(4.0)
    assert vz > 1.3 * default[0]
    assert collective > 1.3 * default[1]


def test_exploration_settings_are_refused_where_they_do_not_apply() -> None:
    wide = ExplorationConfig(ref_bandwidth=4.0)
    TrainArgs(env="quadrotor", exploration=wide).validate()
    with pytest.raises(UsageError, match="exploration"):
        TrainArgs(env="spring_mesh", exploration=wide).validate()
    with pytest.raises(UsageError, match="ref-bandwidth"):
        TrainArgs(env="quadrotor", exploration=ExplorationConfig(ref_bandwidth=0.0)).validate()
