"""Gradient-based MPC on a float64 double integrator: optimality, bounds, RTI, memory."""

from __future__ import annotations

import numpy as np
import pytest
from controller_toy import DoubleIntegrator, QuadraticTask, TorchOnly, simulate

from metasym_control.controllers.nmpc import NMPC, NMPCConfig

X0 = np.array([1.0, -0.5, 0.0, 0.0])


def riccati_first_action(
    model: DoubleIntegrator, task: QuadraticTask, horizon: int, x0: np.ndarray
) -> np.ndarray:
    """Unconstrained finite-horizon LQR by the backward Riccati recursion: u_0 for x0 (nu,)."""
    q, r = np.diag(task.q), task.r * np.eye(2)
    p = task.qf * q
    a, b = model.a, model.b
    gain: np.ndarray = np.zeros((2, 4))
    for _ in range(horizon):
        gain = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        p = q + a.T @ p @ (a - b @ gain)
    return -gain @ x0


@pytest.mark.parametrize(
    "cfg",
    [
        NMPCConfig(mode="ipopt"),
        NMPCConfig(mode="rti", qp_solver="osqp", qp_backup=None),
        NMPCConfig(mode="rti", qp_solver="qrqp", qp_backup=None),
        NMPCConfig(mode="rti", qp_solver="hpipm", qp_backup=None),
    ],
    ids=["ipopt", "rti-osqp", "rti-qrqp", "rti-hpipm"],
)
def test_unconstrained_first_action_is_the_lqr_action(cfg: NMPCConfig) -> None:
    model, task = DoubleIntegrator(), QuadraticTask()
    x0 = np.array([0.1, -0.05, 0.02, 0.0])  # small: no bound is active
    u = NMPC(model, task, cfg).act(x0, 0.0)
    np.testing.assert_allclose(u, riccati_first_action(model, task, 20, x0), atol=1e-5)


@pytest.mark.parametrize("linearization", ["casadi", "fd", "jacrev", "jacfwd"])
def test_rti_closed_loop_equals_ipopt_on_a_nonlinear_model(linearization: str) -> None:
    """With drag the model is nonlinear; one SQP step per control period, warm-started, tracks
    like the full ipopt solve (measured RMSE 0.4564 for both; zero action 1.32)."""
    model = DoubleIntegrator(drag=3.0)
    task = QuadraticTask(amp=1.0, omega=2.0)
    xr, _ = task.reference(np.arange(61) * 0.1)

    def rmse(xs: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.sum((xs - xr)[:, :2] ** 2, axis=1))))

    ref_xs, _, _ = simulate(NMPC(model, task, NMPCConfig(mode="ipopt")), X0, 60, plant=model)
    m = model if linearization == "casadi" else TorchOnly(model)
    cfg = NMPCConfig(mode="rti", linearization=linearization)  # type: ignore[arg-type]
    xs, us, infos = simulate(NMPC(m, task, cfg), X0, 60, plant=model)
    assert rmse(ref_xs) < 0.5
    assert rmse(xs) < 1.1 * rmse(ref_xs)
    assert abs(rmse(xs) - rmse(ref_xs)) < 1e-3
    assert all(i["fallback"] == "none" for i in infos)
    assert np.all(np.abs(us) <= 1.0)


@pytest.mark.parametrize("mode, qp_solver", [("ipopt", "qrqp"), ("rti", "qrqp"), ("rti", "hpipm")])
def test_state_and_action_bounds_hold(mode: str, qp_solver: str) -> None:
    task = QuadraticTask(v_max=0.5)
    cfg = NMPCConfig(mode=mode, qp_solver=qp_solver, qp_backup=None)  # type: ignore[arg-type]
    xs, us, infos = simulate(NMPC(DoubleIntegrator(), task, cfg), X0, 40)
    assert np.abs(xs[:, 2:]).max() <= 0.5 + 1e-6
    assert np.abs(xs[:, 2:]).max() > 0.49  # the bound was active
    assert np.all(np.abs(us) <= 1.0)
    assert np.linalg.norm(xs[-1, :2]) < 0.05
    assert infos[-1]["fallback_count"] == 0


def test_torch_rti_holds_the_history_memory_fixed_and_uses_it() -> None:
    """A model that reads a constant disturbance from its history removes the offset that a
    Markov model keeps (measured 0.061 vs 1.2e-6)."""
    bias = (0.0, 0.0, -0.1, 0.06)
    plant = DoubleIntegrator(bias=bias)
    task = QuadraticTask()
    errs = {}
    for hist in (0, 3):
        ctrl = NMPC(TorchOnly(DoubleIntegrator(history_len=hist)), task)
        xs, _, _ = simulate(ctrl, X0, 50, plant=plant)
        errs[hist] = float(np.linalg.norm(xs[-10:, :2], axis=1).mean())
    assert errs[3] < 1e-4
    assert errs[0] > 0.03


def test_set_model_keeps_the_qp_for_torch_models() -> None:
    task = QuadraticTask()
    ctrl = NMPC(TorchOnly(DoubleIntegrator()), task)
    qp = ctrl.qp
    ctrl.act(X0, 0.0)
    ctrl.set_model(TorchOnly(DoubleIntegrator(drag=1.0)))
    ctrl.act(X0, 0.1)
    assert ctrl.qp is qp
    assert ctrl.last_info["fallback"] == "none"


def test_ipopt_needs_a_symbolic_model() -> None:
    with pytest.raises(ValueError, match="casadi_step"):
        NMPC(TorchOnly(DoubleIntegrator()), QuadraticTask(), NMPCConfig(mode="ipopt"))


def test_hpipm_and_qrqp_take_the_same_constrained_rti_steps() -> None:
    """Both QP solvers see the same buffered QP (stage-wise rows for hpipm); with the velocity
    bound active they must agree on every step of a closed loop."""
    task = QuadraticTask(v_max=0.5)
    runs = {}
    for solver in ("qrqp", "hpipm"):
        cfg = NMPCConfig(qp_solver=solver, qp_backup=None)  # type: ignore[arg-type]
        plant = DoubleIntegrator(drag=3.0)
        xs, us, infos = simulate(NMPC(TorchOnly(plant), task, cfg), X0, 30, plant=plant)
        assert all(i["qp_solver"] == solver and i["fallback"] == "none" for i in infos)
        assert 0.49 < np.abs(xs[:, 2:]).max() <= 0.5 + 1e-6  # the bound was active and held
        runs[solver] = us
    np.testing.assert_allclose(runs["hpipm"], runs["qrqp"], atol=1e-5)


def test_a_warm_start_is_used_only_on_the_next_step() -> None:
    """Called again one period later, RTI starts from its shifted plan; called after a gap
    (as another controller's fallback is), it starts cold instead of from a plan made for
    a state several steps ago."""
    model = DoubleIntegrator()
    ctrl = NMPC(model, QuadraticTask(), NMPCConfig(horizon=10, mode="rti"))
    x = np.array([1.0, -0.5, 0.0, 0.0])
    ctrl.act(x, 0.0)
    ctrl.act(x, model.dt)
    assert "cold_start" not in ctrl.last_info
    ctrl.act(x, 5 * model.dt)
    assert ctrl.last_info["cold_start"] is True
    ctrl.act(x, 6 * model.dt)
    assert "cold_start" not in ctrl.last_info


def _corrupted(ctrl: NMPC, starts: list[np.ndarray]) -> None:
    """Make `ctrl`'s QP step command full thrust (+1) on every action, recording its warm
    starts in `starts`."""
    solve = ctrl._solve_rti

    def away(w_init: np.ndarray, *args: object) -> tuple[np.ndarray | None, str]:
        starts.append(w_init.copy())
        w, fault = solve(w_init, *args)  # type: ignore[arg-type]
        assert w is not None
        xs, us = ctrl._layout.split(w)
        return ctrl._layout.join(xs, np.ones_like(us)), fault

    ctrl._solve_rti = away  # type: ignore[method-assign]


def test_the_line_search_damps_a_step_the_model_says_is_bad() -> None:
    """A step the model's own rollout scores worse than a shorter one is shortened, and the
    plan flown is the model's rollout of the chosen actions (not the linearised states)."""
    model = DoubleIntegrator(drag=3.0)  # nonlinear: the QP's states are not the rollout's
    cfg = NMPCConfig(horizon=10, mode="rti", step_fractions=(1.0, 0.5, 0.25))
    ctrl = NMPC(TorchOnly(model), QuadraticTask(), cfg)
    ctrl.act(X0, 0.0)
    assert ctrl.last_info["step_fraction"] in (1.0, 0.5, 0.25)
    assert ctrl.last_actions is not None and ctrl.last_plan is not None
    rollout = ctrl._rollout(X0, ctrl.last_actions, {})  # a Markov model: no memory
    np.testing.assert_allclose(ctrl.last_plan, rollout, atol=1e-12)
    # full thrust away from the origin: the shortest step is the model's best
    starts: list[np.ndarray] = []
    _corrupted(ctrl, starts)
    u = ctrl.act(X0, model.dt)
    assert ctrl.last_info["step_fraction"] == 0.25
    _, u_init = ctrl._layout.split(starts[0])
    np.testing.assert_allclose(u, u_init[0] + 0.25 * (1.0 - u_init[0]), atol=1e-12)
    # without the line search the same step is flown whole
    plain = NMPC(TorchOnly(model), QuadraticTask(), NMPCConfig(horizon=10, mode="rti"))
    _corrupted(plain, [])
    np.testing.assert_allclose(plain.act(X0, 0.0), 1.0)
    assert "step_fraction" not in plain.last_info
    with pytest.raises(ValueError, match="step_fractions"):
        NMPCConfig(step_fractions=(1.0, 0.0))
