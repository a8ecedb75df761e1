"""The RTI linearisation (what `NMPC.linearizer` computes): CasADi and torch Jacobians agree
with each other and with central finite differences of the model's torch step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from controller_toy import DoubleIntegrator, QuadraticTask, TorchOnly

from metasym_control.controllers.linearization import SymbolicDynamics, TorchLinearizer
from metasym_control.controllers.nmpc import NMPC, NMPCConfig
from metasym_control.envs.quadrotor import Figure8Task, QuadrotorParams
from metasym_control.models.quadrotor_analytic import QuadrotorModel


def state_matrices(values: tuple[np.ndarray, np.ndarray], nx: int) -> list[np.ndarray]:
    """(f (N, nx), jt (N, nz, nx)) -> [f, A (N, nx, nx), B (N, nx, nu)]."""
    f, jt = values
    jac = np.swapaxes(jt, 1, 2)  # (N, nx, nz)
    return [f, jac[..., :nx], jac[..., nx:]]


def central_differences(
    model: QuadrotorModel, xs: np.ndarray, us: np.ndarray, h: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """f (N, nx) and jt (N, nz, nx) of `model.step` by central differences, float64."""
    nx = xs.shape[1]
    z = torch.as_tensor(np.concatenate([xs, us], axis=1))  # (N, nz)
    nz = z.shape[1]
    eye = h * torch.eye(nz, dtype=z.dtype)  # (nz, nz)
    plus = z[:, None, :] + eye  # (N, nz, nz)
    minus = z[:, None, :] - eye
    with torch.no_grad():
        f_plus = model.step(plus[..., :nx], plus[..., nx:], {})[0]  # (N, nz, nx)
        f_minus = model.step(minus[..., :nx], minus[..., nx:], {})[0]
        f0 = model.step(z[:, :nx], z[:, nx:], {})[0]  # (N, nx)
    return f0.numpy(), ((f_plus - f_minus) / (2 * h)).numpy()


def test_torch_jacobians_agree_with_casadi() -> None:
    model = DoubleIntegrator(drag=3.0)
    task = QuadraticTask()
    rng = np.random.default_rng(0)
    xs, us = rng.normal(size=(20, 4)), rng.uniform(-1, 1, size=(20, 2))
    casadi = NMPC(model, task, NMPCConfig(linearization="casadi"))
    assert isinstance(casadi.linearizer, SymbolicDynamics)
    ref = state_matrices(casadi.linearizer(xs, us, {}), nx=4)
    for lin, tol in (("fd", 1e-6), ("jacrev", 1e-12), ("jacfwd", 1e-12)):
        ctrl = NMPC(TorchOnly(model), task, NMPCConfig(linearization=lin))  # type: ignore[arg-type]
        assert isinstance(ctrl.linearizer, TorchLinearizer)
        got = state_matrices(ctrl.linearizer(xs, us, {}), nx=4)
        for r, g in zip(ref, got):
            assert g.shape == r.shape
            np.testing.assert_allclose(g, r, atol=tol, rtol=0)


@pytest.mark.parametrize("lag", [False, True], ids=["13-state", "17-state-lag"])
def test_quadrotor_linearisation_matches_central_differences(lag: bool) -> None:
    """The analytic quadrotor (RK4 substeps, quaternion renormalised): the CasADi Jacobian and
    every torch one match central differences of the torch step along a random trajectory
    near the figure-8; the values match the step itself."""
    params = QuadrotorParams(motor_tau=0.03) if lag else QuadrotorParams()
    model = QuadrotorModel(params)
    nx, n = model.state_dim, 20
    rng = np.random.default_rng(1)
    x_ref = Figure8Task().reference(np.arange(n) * 0.02)[0][:, :13]  # (N, 13)
    xs = np.zeros((n, nx))
    xs[:, :13] = x_ref + 0.05 * rng.normal(size=x_ref.shape)
    xs[:, 3:7] /= np.linalg.norm(xs[:, 3:7], axis=1, keepdims=True)
    xs[:, 10:13] = rng.normal(scale=0.5, size=(n, 3))
    if lag:
        xs[:, 13:17] = rng.uniform(params.min_thrust, params.max_thrust, size=(n, 4))
    us = rng.uniform(-0.5, 0.5, size=(n, 4))
    f_ref, jt_ref = central_differences(model, xs, us)
    assert np.abs(jt_ref).max() > 0.1  # the Jacobian is not trivially zero

    linearizers = [SymbolicDynamics(model.casadi_step, nx, 4, n)]
    linearizers += [TorchLinearizer(model, m) for m in ("fd", "jacrev", "jacfwd")]  # type: ignore[arg-type]
    if not lag:  # and what the controller resolves by default for this model
        ctrl = NMPC(model, Figure8Task(), NMPCConfig(horizon=n))
        assert ctrl.linearization == "casadi"
        linearizers.append(ctrl.linearizer)
    # measured, relative to the largest entry: 4e-10 for the exact Jacobians (the central
    # differences' own error), 8e-8 for forward differences
    scale = np.abs(jt_ref).max()
    exact = []
    for lin in linearizers:
        f, jt = lin(xs, us, {})
        assert f.shape == (n, nx) and jt.shape == (n, nx + 4, nx)
        np.testing.assert_allclose(f, f_ref, atol=1e-12, rtol=0)
        forward = isinstance(lin, TorchLinearizer) and lin.method == "fd"
        np.testing.assert_allclose(
            jt / scale, jt_ref / scale, atol=5e-7 if forward else 5e-9, rtol=0
        )
        if not forward:
            exact.append(jt.copy())
    for jt in exact[1:]:  # CasADi and torch.func agree to round-off
        np.testing.assert_allclose(jt, exact[0], atol=1e-12 * scale, rtol=0)
