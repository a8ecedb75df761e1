"""The objective over action sequences (K, T, nu) -> (K,) that MPPI (or a CEM) minimises."""

from __future__ import annotations

import numpy as np
import torch
from controller_toy import DoubleIntegrator, QuadraticTask

from metasym_control.controllers.objective import SequenceObjective

T = 6


def inputs(k: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """x0 (4,), actions (K, T, 2), x_ref (T+1, 4), u_ref (T+1, 2), float64, seeded."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64)
    actions = torch.rand(k, T, 2, generator=g, dtype=torch.float64) * 2 - 1
    task = QuadraticTask(amp=0.5)
    x_ref, u_ref = (torch.as_tensor(a) for a in task.reference(np.arange(T + 1) * 0.1))
    return x0, actions, x_ref, u_ref


def test_costs_are_the_task_costs_of_each_sequence_rolled_out() -> None:
    model, task = DoubleIntegrator(drag=1.0), QuadraticTask(amp=0.5)
    x0, actions, x_ref, u_ref = inputs(5)
    costs, xs = SequenceObjective(model, task)(x0, actions, {}, x_ref, u_ref)
    assert costs.shape == (5,) and xs.shape == (5, T, 4)
    for k in range(5):  # one sequence at a time, by the numpy plant
        x, total = x0.numpy(), 0.0
        for t in range(T):
            u = actions[k, t].numpy()
            total += float(np.sum((x - x_ref[t].numpy()) ** 2 * task.q))
            total += task.r * float(np.sum((u - u_ref[t].numpy()) ** 2))
            x = model.numpy_step(x, u)
            np.testing.assert_allclose(xs[k, t].numpy(), x, atol=1e-12)
        total += task.qf * float(np.sum((x - x_ref[T].numpy()) ** 2 * task.q))
        np.testing.assert_allclose(float(costs[k]), total, rtol=1e-12)


class NaNAbove(DoubleIntegrator):
    """NaN predictions where the first action component exceeds 0.5."""

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: dict) -> tuple[torch.Tensor, dict]:
        xn, mem = super().step(x, u, memory)
        return torch.where(u[..., :1] > 0.5, torch.full_like(xn, np.nan), xn), mem


def test_non_finite_and_untrusted_samples_cost_infinity() -> None:
    x0, actions, x_ref, u_ref = inputs(64, seed=1)
    task = QuadraticTask(amp=0.5)
    costs, _ = SequenceObjective(NaNAbove(), task)(x0, actions, {}, x_ref, u_ref)
    nan_rows = (actions[..., 0] > 0.5).any(dim=1)
    assert 0 < int(nan_rows.sum()) < 64
    assert torch.equal(torch.isinf(costs), nan_rows)
    # a trusted box on the velocity: samples leaving it cost +inf, the others keep their cost
    lo = torch.tensor([-10.0, -10.0, -0.15, -0.15], dtype=torch.float64)
    trusted = (lo, -lo)
    plain, xs = SequenceObjective(DoubleIntegrator(), task)(x0, actions, {}, x_ref, u_ref)
    boxed, _ = SequenceObjective(DoubleIntegrator(), task, trusted)(x0, actions, {}, x_ref, u_ref)
    out = ((xs < lo) | (xs > -lo)).flatten(1).any(dim=1)
    assert 0 < int(out.sum()) < 64
    assert torch.equal(torch.isinf(boxed), out)
    assert torch.equal(boxed[~out], plain[~out])
    # no sample trusted: every cost is kept (the planner's plan check then falls back)
    tiny = (
        torch.full((4,), -1e-6, dtype=torch.float64),
        torch.full((4,), 1e-6, dtype=torch.float64),
    )
    none_in, _ = SequenceObjective(DoubleIntegrator(), task, tiny)(x0, actions, {}, x_ref, u_ref)
    assert torch.equal(none_in, plain)
