"""Offset-free MPC: the disturbance observer, the corrected model and both MPCs with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from controller_toy import DoubleIntegrator, QuadraticTask, TorchOnly, simulate

from metasym_control.controllers.mppi import MPPI, MPPIConfig
from metasym_control.controllers.nmpc import NMPC, NMPCConfig
from metasym_control.controllers.offset import DisturbanceObserver, OffsetModel

# a constant push the model does not know: +0.05 m/s a step on vx (a steady force)
PUSH = (0.0, 0.0, 0.05, 0.0)
X0 = np.array([0.5, -0.3, 0.0, 0.0])


def test_the_observer_learns_a_constant_model_error() -> None:
    model, plant = DoubleIntegrator(), DoubleIntegrator(bias=PUSH)
    obs = DisturbanceObserver(0.3, 4, 0.1, None, torch.device("cpu"), torch.float64)
    x, u = X0.copy(), np.array([0.2, -0.1])
    for k in range(60):
        obs.correct(x, 0.1 * k)
        obs.expect(model, x, u, {}, 0.1 * k)
        x = plant.numpy_step(x, u)
    np.testing.assert_allclose(obs.bias.numpy(), PUSH, atol=1e-6)
    # a step that was not predicted (an MPC called only now and then) changes nothing
    before = obs.bias.clone()
    obs.correct(x + 1.0, 0.1 * 70)
    assert torch.equal(obs.bias, before)
    # components outside the index stay zero; reset forgets
    masked = DisturbanceObserver(0.5, 4, 0.1, (3,), torch.device("cpu"), torch.float64)
    masked.expect(model, X0, u, {}, 0.0)
    masked.correct(plant.numpy_step(X0, u), 0.1)
    assert masked.bias[2] == 0.0
    masked.reset()
    assert not masked.bias.any()


def test_the_offset_model_adds_the_bias_every_step() -> None:
    model = DoubleIntegrator()
    bias = torch.tensor([0.0, 0.01, 0.02, -0.03], dtype=torch.float64)
    wrapped = OffsetModel(model, bias)
    x0 = torch.as_tensor(X0)[None]
    us = torch.full((1, 5, 2), 0.3, dtype=torch.float64)
    xs = wrapped.rollout(x0, us, {})
    plant = DoubleIntegrator(bias=tuple(bias.tolist()))  # type: ignore[arg-type]
    np.testing.assert_allclose(xs.numpy(), plant.rollout(x0, us, {}).numpy(), atol=1e-12)
    bias += 1.0  # updated in place: seen at the next call
    assert torch.allclose(wrapped.step(x0, us[:, 0], {})[0], model.step(x0, us[:, 0], {})[0] + bias)
    assert (wrapped.state_dim, wrapped.history_len, wrapped.trusted_lower) == (4, 0, None)


def _controllers(gain: float) -> dict[str, object]:
    model, task = DoubleIntegrator(), QuadraticTask()
    mppi = MPPIConfig(horizon=20, num_samples=256, temperature=0.03, noise_sigma=0.5,
                      noise_beta=2.0, disturbance_gain=gain)  # fmt: skip
    return {
        "mppi": MPPI(model, task, mppi),
        "rti-casadi": NMPC(model, task, NMPCConfig(mode="rti", disturbance_gain=gain)),
        "rti-torch-line-search": NMPC(
            TorchOnly(model), task,
            NMPCConfig(mode="rti", step_fractions=(1.0, 0.5), disturbance_gain=gain),
        ),
    }  # fmt: skip


@pytest.mark.parametrize("name", ["mppi", "rti-casadi", "rti-torch-line-search"])
def test_offset_free_mpc_removes_the_steady_offset(name: str) -> None:
    plant = DoubleIntegrator(bias=PUSH)
    plain = simulate(_controllers(0.0)[name], X0, 80, plant=plant)[0]
    ctrl = _controllers(0.3)[name]
    free, _, infos = simulate(ctrl, X0, 80, plant=plant)
    # the model's error leaves the plain MPC off the origin for good; the offset-free one
    # learns the push and regulates it away (the mean over the last 2 s: MPPI's sampling
    # jitters about 0.02 m around it either way)
    offset_plain = abs(plain[-20:, 0].mean())
    offset_free = abs(free[-20:, 0].mean())
    assert offset_plain > 0.01
    assert offset_free < 0.1 * offset_plain
    np.testing.assert_allclose(infos[-1]["disturbance"], PUSH, atol=2e-3)
    # a new episode starts from no estimate
    ctrl.reset()  # type: ignore[attr-defined]
    assert not ctrl._observer.bias.any()  # type: ignore[attr-defined]


def test_bad_disturbance_options_are_refused() -> None:
    with pytest.raises(ValueError, match="disturbance_gain"):
        MPPIConfig(disturbance_gain=1.5)
    with pytest.raises(ValueError, match="disturbance_gain"):
        NMPCConfig(disturbance_gain=-0.1)
    with pytest.raises(ValueError, match="mode='rti'"):
        NMPCConfig(mode="ipopt", disturbance_gain=0.3)
    with pytest.raises(ValueError, match="disturbance_index"):
        MPPIConfig(disturbance_gain=0.3, disturbance_index=(1, 1))
    with pytest.raises(ValueError, match="out of range"):
        MPPI(
            DoubleIntegrator(),
            QuadraticTask(),
            MPPIConfig(disturbance_gain=0.3, disturbance_index=(7,)),
        )


def test_a_fallback_mpc_keeps_its_estimate_current_from_the_steps_others_fly() -> None:
    task = QuadraticTask()
    backup = NMPC(DoubleIntegrator(), task, NMPCConfig(mode="rti", disturbance_gain=0.3))
    ctrl = NMPC(TorchOnly(DoubleIntegrator()), task, NMPCConfig(mode="rti"), fallback=backup)
    simulate(ctrl, X0, 60, plant=DoubleIntegrator(bias=PUSH))
    # the primary flew every step (no refusal); the backup learned the push all the same
    assert backup.last_info == {}
    np.testing.assert_allclose(backup._observer.bias.numpy(), PUSH, atol=1e-3)  # type: ignore[union-attr]


def test_a_model_that_raises_in_the_observer_does_not_escape_act() -> None:
    class Raising(DoubleIntegrator):
        """Plans fine, but its single-sample step (the observer's prediction) raises."""

        def step(self, x: torch.Tensor, u: torch.Tensor, memory: dict) -> tuple:  # type: ignore[override]
            if x.shape[0] == 1:
                raise RuntimeError("no single steps")
            return super().step(x, u, memory)

    ctrl = MPPI(Raising(), QuadraticTask(), MPPIConfig(num_samples=64, disturbance_gain=0.3))
    for k in range(3):
        u = ctrl.act(X0, 0.1 * k)
        assert np.all(np.isfinite(u))
    assert not ctrl._observer.bias.any()  # type: ignore[union-attr]
