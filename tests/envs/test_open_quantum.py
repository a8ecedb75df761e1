"""Tests of the open quantum system env: physics against QuTiP, Gymnasium API, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

import metasym_control  # noqa: F401  (registers the ids)
from metasym_control.envs.open_quantum import OpenQuantumEnv, OpenQuantumParams


def test_smoke_feedback_beats_zero_drive() -> None:
    env = OpenQuantumEnv(params=OpenQuantumParams())
    env.reset(seed=0)
    f0 = [env.step(np.zeros(2, np.float32))[4]["fidelity"] for _ in range(100)]
    obs, _ = env.reset(seed=0)
    f1 = []
    for _ in range(100):
        b = obs[:3]
        u = np.clip([-np.arctan2(b[1], b[0]) / 0.2, np.arctan2(b[2], b[0]) / 0.2], -1, 1)
        obs, _, _, _, info = env.step(u.astype(np.float32))
        f1.append(info["fidelity"])
    assert np.mean(f0) == pytest.approx(0.5, abs=1e-9)
    assert np.mean(f1[30:]) > 0.8
