"""A learned model's trusted region: a component constant in the data bounds nothing, and an
adapted model trusts the states of its support data."""

from __future__ import annotations

import numpy as np
import torch

from metasym_control.dynamics import AdaptBudget
from metasym_control.models.baselines import MLPModel
from metasym_control.trajectory import Trajectory


def _data(scale: float, seed: int) -> Trajectory:
    rng = np.random.default_rng(seed)
    states = rng.normal(0.0, scale, (3, 21, 3))
    states[..., 2] = 0.0  # a component the physics keeps at zero (like Im ρ_ii)
    actions = rng.uniform(-1, 1, (3, 20, 1))
    return Trajectory(
        states=states,
        actions=actions,
        lengths=np.full(3, 20),
        terminated=np.zeros(3, dtype=bool),
        params=[{}] * 3,
        dt=0.1,
        env_id="Toy-v0",
    )


def test_constant_component_is_unbounded_and_adaptation_widens_the_box() -> None:
    model = MLPModel(3, 1, 0.1, dtype=torch.float64)
    train = _data(1.0, 0)
    model.fit_normalization(train)
    lo, hi = model.trusted_lower, model.trusted_upper
    assert lo is not None and hi is not None
    assert np.isinf(lo[2]) and np.isinf(hi[2])  # constant in the data: no bound
    assert np.all(np.isfinite(lo[:2])) and np.all(hi[:2] - lo[:2] > 1.0)
    # support data of a system that moves twice as far: the adapted copy trusts it, the
    # meta-model is untouched
    support = _data(2.0, 1)
    adapted = model.adapt(support, AdaptBudget(inner_steps=1, lr=1e-3, horizon=1))
    span = support.states[..., :2].reshape(-1, 2)
    assert np.all(adapted.trusted_lower[:2] <= span.min(0))  # type: ignore[attr-defined,index]
    assert np.all(adapted.trusted_upper[:2] >= span.max(0))  # type: ignore[attr-defined,index]
    np.testing.assert_array_equal(model.trusted_lower, lo)
    assert np.any(model.trusted_upper[:2] < span.max(0))  # type: ignore[index]
