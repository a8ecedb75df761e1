"""Tests of the learned baselines: protocol, shapes, adaptation leaves meta-parameters alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from metasym_control.dynamics import AdaptBudget, DynamicsModel, rollout_by_steps
from metasym_control.envs.toy_oscillator import oscillator_family
from metasym_control.models.baselines import (
    HNNModel,
    MLPModel,
    SymplecticOnlyModel,
    TransformerModel,
)
from metasym_control.models.coordinates import generic_coordinates

BASELINES = [MLPModel, TransformerModel, SymplecticOnlyModel, HNNModel]


@pytest.fixture(scope="module")
def tasks() -> list:
    return oscillator_family(3, 3, 40, "train", seed=1)


def _make(cls: type, tasks: list, pretrain: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    m = cls(2, 1, 0.1, coords=generic_coordinates(2, [0], [1]))
    m.fit_normalization(tasks)
    if pretrain:  # a few plain training steps on other systems: a non-trivial start
        from metasym_control.trajectory import Trajectory
        from metasym_control.windows import make_windows, to_batch

        b = to_batch(make_windows(Trajectory.concatenate(tasks[1:]), m.history_len, 1))
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(pretrain):
            opt.zero_grad()
            m(b).backward()
            opt.step()
    return m


@pytest.mark.parametrize("cls", BASELINES)
def test_protocol_shapes_and_rollout(cls: type, tasks: list) -> None:
    m = _make(cls, tasks)
    assert isinstance(m, DynamicsModel)
    g = torch.Generator().manual_seed(0)
    lead = (3, 2)
    L = m.history_len
    mem = m.init_memory(
        torch.randn(*lead, L, 2, generator=g, dtype=torch.float64),
        torch.rand(*lead, L, 1, generator=g, dtype=torch.float64) * 2 - 1,
    )
    x = torch.randn(*lead, 2, generator=g, dtype=torch.float64)
    us = torch.rand(*lead, 6, 1, generator=g, dtype=torch.float64) * 2 - 1
    before = {k: v.clone() for k, v in m.state_dict().items()}
    xn, _ = m.step(x, us[..., 0, :], mem)
    assert xn.shape == (*lead, 2) and xn.dtype == torch.float64
    roll = m.rollout(x, us, mem)
    assert roll.shape == (*lead, 6, 2)
    torch.testing.assert_close(roll, rollout_by_steps(m, x, us, mem), rtol=1e-12, atol=1e-12)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), f"prediction changed {k}"


@pytest.mark.parametrize("cls", BASELINES)
def test_adapt_leaves_meta_parameters_and_fits(cls: type, tasks: list) -> None:
    m = _make(cls, tasks, pretrain=10)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    support = tasks[0]
    budget = AdaptBudget(inner_steps=30, lr=1e-2, optimizer="adam")
    a = m.adapt(support, budget)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), f"adapt changed meta-parameter {k}"
    fast = set(m.fast_weight_names())
    own = dict(a.named_parameters())
    assert any(not torch.equal(own[n], dict(m.named_parameters())[n]) for n in fast)
    for n, p in m.named_parameters():
        if n not in fast:
            assert torch.equal(own[n], p), f"adapt changed slow weight {n}"
    # one-step error on the support system goes down
    from metasym_control.windows import make_windows, to_batch

    b = to_batch(make_windows(support, m.history_len, 1))
    with torch.no_grad():
        e0, e1 = float(m(b)), float(a(b))
    assert e1 < 0.95 * e0, (e0, e1)
    assert np.isfinite(e1)


def test_a_free_offset_leaves_a_constant_disturbance_out_of_the_fast_weights(tasks: list) -> None:
    """Data from the model itself plus a constant per-step offset c: the plain adaptation
    absorbs c into the fast weights, the free-offset one leaves it (to an observer)."""
    from metasym_control.models.inner_loop import mean_step_error

    m = _make(MLPModel, tasks, pretrain=10)
    src = tasks[0]
    c = 0.5 * m.delta_std.detach()
    x = torch.as_tensor(src.states[:, 0])
    u = torch.as_tensor(src.actions)
    states = [x]
    with torch.no_grad():
        memory = m.init_memory(x[:, None][:, :0], u[:, :0])
        for k in range(u.shape[1]):
            x, memory = m.step(x, u[:, k], memory)
            x = x + c
            states.append(x)
    data = dataclasses.replace(src, states=torch.stack(states, dim=1).numpy())
    torch.testing.assert_close(mean_step_error(m, data), c, rtol=1e-6, atol=1e-9)
    budget = AdaptBudget(inner_steps=30, lr=1e-2, optimizer="adam")
    plain = m.adapt(data, budget)
    free = m.adapt(data, dataclasses.replace(budget, free_offset=True))
    scale = float(torch.linalg.norm(c / m.delta_std))

    def left(model: torch.nn.Module) -> float:
        """Norm of the mean one-step error in one-step-change stds, over |c| in them."""
        return float(torch.linalg.norm(mean_step_error(model, data) / m.delta_std)) / scale

    assert left(plain) < 0.5, left(plain)  # absorbed
    assert left(free) > 0.8, left(free)  # left to the observer
