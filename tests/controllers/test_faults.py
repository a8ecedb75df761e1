"""Faults injected through the model and solver interfaces: fallbacks, reports, never a raise."""

from __future__ import annotations

from typing import Any

import casadi as ca
import numpy as np
import pytest
import torch
from controller_toy import DoubleIntegrator, QuadraticTask, TorchOnly, simulate

from metasym_control.controllers.mppi import MPPI, MPPIConfig
from metasym_control.controllers.nmpc import NMPC, NMPCConfig
from metasym_control.dynamics import Memory

X0 = np.array([1.0, -0.5, 0.0, 0.0])
TASK = QuadraticTask(amp=0.5)  # u_ref(t) = (-0.25 sin t, 0): the documented safe action
MPPI_CFG = MPPIConfig(horizon=10, num_samples=64, noise_sigma=0.5)


class NaNModel(DoubleIntegrator):
    """Predicts NaN for every step once `after` steps have been taken (torch and CasADi)."""

    def __init__(self, after: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        self.after = after
        self.calls = 0

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        self.calls += 1
        xn, mem = super().step(x, u, memory)
        return (xn * np.nan if self.calls > self.after else xn), mem

    def casadi_step(self, x: Any, u: Any) -> Any:
        return super().casadi_step(x, u) * ca.DM.nan()


class NaNForLargeActions(DoubleIntegrator):
    """Predicts NaN only where the first action component exceeds 0.3 (some MPPI samples)."""

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        xn, mem = super().step(x, u, memory)
        bad = (u[..., :1] > 0.3).expand_as(xn)
        return torch.where(bad, torch.full_like(xn, np.nan), xn), mem


class TinyTrustModel(DoubleIntegrator):
    """Declares a trusted region of ±1 cm around the origin in position and velocity."""

    trusted_lower = np.full(4, -0.01)
    trusted_upper = np.full(4, 0.01)


def u_ref(t: float) -> np.ndarray:
    return TASK.reference(np.array([t]))[1][0]


@pytest.mark.parametrize("kind", ["mppi", "rti-torch", "rti-casadi", "ipopt"])
def test_nan_model_falls_back_to_the_safe_action(kind: str) -> None:
    model = NaNModel()
    ctrl: Any
    if kind == "mppi":
        ctrl = MPPI(model, TASK, MPPI_CFG)
    elif kind == "rti-torch":
        ctrl = NMPC(TorchOnly(model), TASK, NMPCConfig(horizon=10))
    elif kind == "rti-casadi":
        ctrl = NMPC(model, TASK, NMPCConfig(horizon=10))
    else:
        ctrl = NMPC(model, TASK, NMPCConfig(horizon=10, mode="ipopt"))
    xs, us, infos = simulate(ctrl, X0, 5)
    for k, info in enumerate(infos):
        assert info["fallback"] == "safe_action"
        assert info["fault"] in ("non_finite", "solver_failed")
        assert info["fallback_count"] == k + 1
        np.testing.assert_allclose(us[k], u_ref(0.1 * k))
    assert np.all(np.isfinite(xs))
    ctrl.reset()
    assert ctrl.last_info == {}


def test_model_that_breaks_mid_run_uses_the_shifted_plan_first() -> None:
    """NaN predictions from step 3 on: the shifted previous plan is itself re-predicted with
    the broken model, so it fails too, and the safe action is used; counters add up."""
    model = NaNModel(after=10**9)
    ctrl = NMPC(TorchOnly(model), TASK, NMPCConfig(horizon=10))
    hist = None
    x = X0
    for k in range(3):
        ctrl.act(x, 0.1 * k, hist)
    assert ctrl.last_info["fallback"] == "none"
    model.after = model.calls  # every further step is NaN
    u = ctrl.act(x, 0.3, hist)
    assert ctrl.last_info["fault"] == "non_finite"
    assert ctrl.last_info["fallback"] == "safe_action"
    np.testing.assert_allclose(u, u_ref(0.3))
    assert ctrl.last_info["fallback_counts"] == {"non_finite": 1}


def test_mppi_ignores_samples_with_non_finite_predictions() -> None:
    ctrl = MPPI(NaNForLargeActions(), TASK, MPPI_CFG)
    xs, us, infos = simulate(ctrl, X0, 10)
    assert all(i["fallback"] == "none" for i in infos)
    assert all(0 < i["finite_samples"] < MPPI_CFG.num_samples for i in infos)
    assert np.all(us[:, 0] <= 0.3 + 1e-12)  # no weight on the NaN samples
    assert np.all(np.isfinite(xs))


@pytest.mark.parametrize("kind", ["mppi", "rti"])
def test_plan_leaving_the_trusted_region_falls_back(kind: str) -> None:
    model = TinyTrustModel()
    # RTI without the region in its QP, so that its plan can leave it
    cfg = NMPCConfig(trusted_constraints=False)
    ctrl: Any = MPPI(model, TASK, MPPI_CFG) if kind == "mppi" else NMPC(model, TASK, cfg)
    _, us, infos = simulate(ctrl, X0, 3)
    assert all(i["fault"] == "untrusted" and i["fallback"] == "safe_action" for i in infos)
    np.testing.assert_allclose(us[0], u_ref(0.0))
    # inside the region, with a reference inside it, nothing falls back
    quiet = QuadraticTask()
    small = MPPIConfig(horizon=10, num_samples=64, noise_sigma=0.01)
    ctrl2: Any = MPPI(model, quiet, small) if kind == "mppi" else NMPC(model, quiet)
    _, _, infos2 = simulate(ctrl2, np.array([0.002, 0.0, 0.0, 0.0]), 3)
    assert all(i["fallback"] == "none" for i in infos2)


def test_a_state_outside_the_trusted_region_is_not_itself_a_fault() -> None:
    """At 1 m with a region of ±1 cm, RTI (the region in its QP, widened to the state) plans
    no further out than the vehicle already is; that plan is flown, not refused."""
    ctrl = NMPC(TinyTrustModel(), TASK)
    _, _, infos = simulate(ctrl, X0, 3)
    assert all(i["fault"] == "none" and i["fallback"] == "none" for i in infos)
    lo = np.minimum(TinyTrustModel.trusted_lower, X0) - 1e-9
    hi = np.maximum(TinyTrustModel.trusted_upper, X0) + 1e-9
    assert ctrl.last_plan is not None
    assert np.all((ctrl.last_plan >= lo) & (ctrl.last_plan <= hi))


def test_failed_qp_falls_back_to_the_shifted_plan_then_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctrl = NMPC(DoubleIntegrator(), TASK, NMPCConfig(horizon=10))
    ctrl.act(X0, 0.0)
    planned = ctrl.last_actions.copy()  # type: ignore[union-attr]

    def broken(*_a: Any, **_kw: Any) -> dict[str, Any]:
        raise RuntimeError("injected QP failure")

    monkeypatch.setattr(ctrl.qp, "evaluate", broken)
    u = ctrl.act(X0, 0.1)
    assert ctrl.last_info["fault"] == "solver_failed"
    assert ctrl.last_info["fallback"] == "shifted_plan"
    assert "injected" in ctrl.last_info["solver_error"]
    np.testing.assert_allclose(u, planned[1])
    u2 = ctrl.act(X0, 0.2)
    np.testing.assert_allclose(u2, planned[2])
    assert ctrl.last_info["fallback_count"] == 2
    monkeypatch.undo()
    ctrl.act(X0, 0.3)
    assert ctrl.last_info["fallback"] == "none"
    assert ctrl.last_info["fallback_count"] == 2


def test_ipopt_with_no_iterations_is_a_failed_solve() -> None:
    ctrl = NMPC(DoubleIntegrator(), TASK, NMPCConfig(horizon=10, mode="ipopt", ipopt_max_iter=0))
    _, us, infos = simulate(ctrl, X0, 3)
    assert all(i["fault"] == "solver_failed" for i in infos)
    assert all(i["fallback"] == "safe_action" for i in infos)
    np.testing.assert_allclose(us[2], u_ref(0.2))


def test_osqp_with_too_few_iterations_is_a_failed_solve() -> None:
    cfg = NMPCConfig(horizon=10, qp_solver="osqp", qp_backup=None, qp_max_iter=1)
    ctrl = NMPC(DoubleIntegrator(), TASK, cfg)
    _, _, infos = simulate(ctrl, X0, 3)
    assert all(i["fault"] == "solver_failed" for i in infos)


@pytest.mark.parametrize(
    "cfg",
    [
        NMPCConfig(horizon=10, mode="rti"),
        NMPCConfig(horizon=10, mode="rti", qp_solver="hpipm", qp_backup=None),
        NMPCConfig(horizon=10, mode="ipopt"),
    ],
    ids=["rti", "rti-hpipm", "ipopt"],
)
def test_infeasible_state_bounds_fall_back(cfg: NMPCConfig) -> None:
    """Starting at 1 m/s with |v| <= 0.1 and |a| <= 0.2 m/s² per step: no feasible plan."""
    task = QuadraticTask(v_max=0.1)
    ctrl = NMPC(DoubleIntegrator(), task, cfg)
    u = ctrl.act(np.array([0.0, 0.0, 1.0, 0.0]), 0.0)
    assert ctrl.last_info["fallback"] == "safe_action"
    assert ctrl.last_info["fault"] in ("infeasible", "solver_failed")
    np.testing.assert_allclose(u, 0.0)


def test_mppi_failed_update_falls_back_to_the_shifted_plan() -> None:
    ctrl = MPPI(DoubleIntegrator(), TASK, MPPI_CFG)
    ctrl.act(X0, 0.0)
    planned = ctrl.last_actions.copy()  # type: ignore[union-attr]
    good = ctrl._plan_fn

    def broken(*args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u, x, c = good(*args)
        return u * np.nan, x, c

    ctrl._plan_fn = broken
    u = ctrl.act(X0, 0.1)
    assert ctrl.last_info["fallback"] == "shifted_plan"
    np.testing.assert_allclose(u, planned[1])
    ctrl._plan_fn = good
    ctrl.act(X0, 0.2)
    assert ctrl.last_info["fallback"] == "none"
    assert ctrl.last_info["fallback_count"] == 1


def test_an_mppi_update_that_raises_is_a_failed_update_not_a_crash() -> None:
    ctrl = MPPI(DoubleIntegrator(), TASK, MPPI_CFG)
    ctrl.act(X0, 0.0)
    planned = ctrl.last_actions.copy()  # type: ignore[union-attr]

    def raising(*args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise RuntimeError("expected scalar type Double but found Float")

    ctrl._plan_fn = raising
    u = ctrl.act(X0, 0.1)
    assert ctrl.last_info["fault"] == "solver_failed"
    assert "RuntimeError" in ctrl.last_info["solver_error"]
    assert ctrl.last_info["fallback"] == "shifted_plan"
    np.testing.assert_allclose(u, planned[1])


class SpeedLimitModel(DoubleIntegrator):
    """Trusted only below 0.3 m/s per axis: fast samples leave the region."""

    trusted_lower = np.array([-10.0, -10.0, -0.3, -0.3])
    trusted_upper = np.array([10.0, 10.0, 0.3, 0.3])


def test_mppi_weighs_only_trusted_samples() -> None:
    """With `trust_samples` (default) the samples that leave the trusted region get no
    weight, so the plan stays inside and nothing falls back; weighing all samples, the plan
    leaves it and the step falls back."""
    cfg = MPPIConfig(horizon=10, num_samples=256, noise_sigma=0.5)
    ctrl = MPPI(SpeedLimitModel(), TASK, cfg)
    xs, _, infos = simulate(ctrl, X0, 10)
    assert all(i["fallback"] == "none" for i in infos)
    assert np.all(np.abs(xs[:, 2:]) <= 0.3 + 1e-9)
    assert np.all(np.abs(ctrl.last_plan[:, 2:]) <= 0.3 + 1e-9)
    blind = MPPI(SpeedLimitModel(), TASK, MPPIConfig(**{**cfg.__dict__, "trust_samples": False}))
    _, _, infos2 = simulate(blind, X0, 10)
    assert any(i["fault"] == "untrusted" for i in infos2)


class WallModel(DoubleIntegrator):
    """Trusted only for x <= 1 m: a state at the wall moving outward must leave the region
    for a few steps whatever the actions."""

    trusted_lower = np.array([-10.0, -10.0, -5.0, -5.0])
    trusted_upper = np.array([1.0, 10.0, 5.0, 5.0])


@pytest.mark.parametrize("soft", [True, False])
def test_a_soft_trusted_region_keeps_the_rti_qp_feasible(soft: bool) -> None:
    """At x = 1 m (the wall) moving out at 0.5 m/s: with hard bounds the QP is infeasible
    and the step falls back; with the soft region the plan leaves it by the least
    the dynamics force (well within the tolerance), turns back, and is flown (an option:
    off by default, docs/controllers.md)."""
    cfg = NMPCConfig(horizon=10, mode="rti", soft_trust=soft)
    ctrl = NMPC(WallModel(), TASK, cfg)
    ctrl.act(np.array([1.0, 0.0, 0.5, 0.0]), 0.0)
    if not soft:
        assert ctrl.last_info["fault"] in ("infeasible", "solver_failed")
        return
    assert ctrl.last_info["fault"] == "none" and ctrl.last_info["fallback"] == "none"
    plan = ctrl.last_plan
    assert plan is not None
    beyond = plan[:, 0].max() - 1.0
    # the least possible excursion at the 2 m/s² action bound is v² / 2a = 0.0625 m
    assert 0.0 < beyond <= 0.0625 + 1e-3
    assert plan[-1, 0] < 1.0 + 1e-6  # back inside by the horizon's end


class ShortWallModel(DoubleIntegrator):
    """Trusted only for x <= 0.3 m, short of where the sine reference (amplitude 0.5 m) goes."""

    trusted_lower = np.array([-10.0, -10.0, -5.0, -5.0])
    trusted_upper = np.array([0.3, 10.0, 5.0, 5.0])


@pytest.mark.parametrize("repair", [False, True])
def test_trust_repair_flies_the_bounded_plan_instead_of_the_fallback(repair: bool) -> None:
    """RTI with the region judged after the solve: the free plan tracks the reference past
    the wall and is refused; with `trust_repair` the bounded re-solve stops short of the
    wall and is flown (reported), without it the step goes to the fallback."""
    cfg = NMPCConfig(horizon=10, trusted_constraints=False, trust_repair=repair)
    ctrl = NMPC(ShortWallModel(), TASK, cfg)
    ctrl.act(np.zeros(4), 0.0)
    info = ctrl.last_info
    if not repair:
        assert (info["fault"], info["fallback"]) == ("untrusted", "safe_action")
        assert "trust_repair" not in info and info["trust_repairs"] == {"flown": 0, "refused": 0}
        return
    assert (info["fault"], info["fallback"]) == ("none", "none")
    assert info["trust_repair"] == "flown"
    assert info["trust_repairs"] == {"flown": 1, "refused": 0}
    plan = ctrl.last_plan
    assert plan is not None and plan[:, 0].max() <= 0.3 + 1e-6
    assert plan[:, 0].max() > 0.2  # it still goes towards the reference, up to the wall


def test_a_trust_repair_that_cannot_keep_the_region_falls_back() -> None:
    """At the wall moving out, no bounded plan exists: the re-solve is refused and reported,
    and the fallback chain flies the step."""
    cfg = NMPCConfig(horizon=10, trusted_constraints=False, trust_repair=True)
    ctrl = NMPC(WallModel(), TASK, cfg)
    ctrl.act(np.array([1.0, 0.0, 0.5, 0.0]), 0.0)
    info = ctrl.last_info
    assert info["trust_repair"] == "refused" and info["fallback"] == "safe_action"
    assert info["fault"] in ("infeasible", "solver_failed")
    assert info["trust_repairs"] == {"flown": 0, "refused": 1}


def test_mppi_flies_a_plan_within_its_trust_tolerance() -> None:
    """`trust_tolerance`: a plan may leave the trusted region by that fraction of its span
    (here 0.5 × 0.6 m/s in speed) and still be flown; the strict check refuses such plans."""
    cfg = MPPIConfig(horizon=10, num_samples=256, noise_sigma=0.5, trust_samples=False)
    _, _, infos = simulate(MPPI(SpeedLimitModel(), TASK, cfg), X0, 10)
    refused = sum(i["fault"] == "untrusted" for i in infos)
    assert refused > 0
    tolerant = MPPI(SpeedLimitModel(), TASK, MPPIConfig(**{**cfg.__dict__, "trust_tolerance": 0.5}))
    speeds: list[tuple[float, float]] = []  # (flown plan's top speed, the region's reach)
    act = tolerant.act

    def recording_act(x: np.ndarray, *args: Any) -> np.ndarray:
        u = act(x, *args)
        if tolerant.last_info["fault"] == "none":
            reach = max(0.3, *np.abs(x[2:]))  # widened to contain the measured state
            speeds.append((float(np.abs(tolerant.last_plan[:, 2:]).max()), reach))
        return u

    tolerant.act = recording_act  # type: ignore[method-assign]
    _, _, infos2 = simulate(tolerant, X0, 10)
    assert sum(i["fault"] == "untrusted" for i in infos2) < refused
    assert any(v > reach for v, reach in speeds)  # flown beyond the region itself ...
    assert all(v <= reach + 0.5 * 0.6 + 1e-9 for v, reach in speeds)  # ... within the tolerance
