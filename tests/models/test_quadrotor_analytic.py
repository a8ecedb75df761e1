"""Tests of the analytic quadrotor model: MuJoCo agreement, CasADi twin, identification."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metasym_control.dynamics import AdaptBudget, DynamicsModel, SymbolicModel, rollout_by_steps
from metasym_control.envs.quadrotor import QuadrotorEnv, QuadrotorParams
from metasym_control.models.quadrotor_analytic import QuadrotorModel
from metasym_control.trajectory import Trajectory


def _random_states(rng: np.random.Generator, n: int, lag: bool, p: QuadrotorParams) -> np.ndarray:
    """Tilted (up to ~70°), spinning (up to 8 rad/s), moving (up to 3 m/s) states."""
    x = np.zeros((n, 17 if lag else 13))
    x[:, 0:3] = rng.uniform(-1, 1, (n, 3)) + np.array([0.0, 0.0, 2.0])
    q = rng.normal(size=(n, 4))
    q[:, 0] = np.abs(q[:, 0]) + 0.6
    x[:, 3:7] = q / np.linalg.norm(q, axis=1, keepdims=True)
    x[:, 7:10] = rng.uniform(-3, 3, (n, 3))
    x[:, 10:13] = rng.uniform(-8, 8, (n, 3))
    if lag:
        x[:, 13:17] = rng.uniform(p.min_thrust, p.max_thrust, (n, 4))
    return x


def _mujoco_steps(p: QuadrotorParams, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    env = QuadrotorEnv(task="hover", params=p)
    env.reset(seed=0)
    out = np.empty_like(x)
    for i in range(len(x)):
        env.set_state(x[i])
        env.step(u[i].astype(np.float32))
        out[i] = env.get_state()
    return out


@pytest.mark.parametrize(
    "params",
    [
        QuadrotorParams(),
        QuadrotorParams(motor_tau=0.03),
        QuadrotorParams(
            mass=1.7, inertia=(0.04, 0.03, 0.065), drag=(0.3, 0.2, 0.4), wind=(1, -1, 0.2)
        ),
        QuadrotorParams.crazyflie(),
    ],
    ids=["x2", "x2-lag", "x2-drag-wind", "crazyflie"],
)
def test_one_step_matches_mujoco(params: QuadrotorParams) -> None:
    rng = np.random.default_rng(0)
    n = 40
    x = _random_states(rng, n, params.has_lag, params)
    if params.mass < 0.1:
        x[:, 10:13] *= 3  # a Crazyflie spins faster
    u = rng.uniform(-1, 1, (n, 4)).astype(np.float32).astype(np.float64)
    x_mj = _mujoco_steps(params, x, u)
    model = QuadrotorModel(params)
    x_pred = model.step(torch.tensor(x), torch.tensor(u), {})[0].numpy()
    change = np.linalg.norm(x_mj - x, axis=1)
    rel = np.linalg.norm(x_pred - x_mj, axis=1) / change
    # the issue asks for < 1e-3; measured ~2e-8 (same RK4 scheme on both sides)
    assert rel.max() < 1e-6
    # the bound tells physics apart: an independent reference, the same model with a mass
    # 1 % off, misses it over a thousandfold (measured 1.8e-3 to 8.7e-3 over these cases)
    wrong = QuadrotorModel(params.replace(mass=1.01 * params.mass))
    x_wrong = wrong.step(torch.tensor(x), torch.tensor(u), {})[0].numpy()
    assert (np.linalg.norm(x_wrong - x_mj, axis=1) / change).max() > 1e3 * 1e-6
    # and MuJoCo really moved every state (the relative error is of a real change)
    assert change.min() > 1e-3


def test_single_substep_variant_is_close() -> None:
    # one RK4 step of 20 ms per control step: 4x cheaper for planners; measured 6.5e-6
    p = QuadrotorParams()
    rng = np.random.default_rng(3)
    x = _random_states(rng, 40, False, p)
    u = rng.uniform(-1, 1, (40, 4)).astype(np.float32).astype(np.float64)
    x_mj = _mujoco_steps(p, x, u)
    fast = QuadrotorModel(p, substeps=1)
    x_pred = fast.step(torch.tensor(x), torch.tensor(u), {})[0].numpy()
    rel = np.linalg.norm(x_pred - x_mj, axis=1) / np.linalg.norm(x_mj - x, axis=1)
    assert 1e-9 < rel.max() < 5e-5  # not the exact replica, but far below 1e-3


def test_casadi_step_matches_torch() -> None:
    rng = np.random.default_rng(1)
    for p in (
        QuadrotorParams(drag=(0.1, 0.2, 0.3), wind=(0.5, 0, 0)),
        QuadrotorParams(motor_tau=0.04),
    ):
        model = QuadrotorModel(p)
        f = model.casadi_function()
        x = _random_states(rng, 10, p.has_lag, p)
        u = rng.uniform(-1.2, 1.2, (10, 4))  # also out of range: both clip
        xt = model.step(torch.tensor(x), torch.tensor(u), {})[0].numpy()
        for i in range(10):
            np.testing.assert_allclose(np.asarray(f(x[i], u[i])).ravel(), xt[i], atol=1e-12)


def test_protocol_batching_and_rollout() -> None:
    model = QuadrotorModel()
    assert isinstance(model, DynamicsModel) and isinstance(model, SymbolicModel)
    assert (model.state_dim, model.action_dim, model.history_len, model.dt) == (13, 4, 0, 0.02)
    assert model.init_memory(torch.zeros(0, 13), torch.zeros(0, 4)) == {}
    rng = np.random.default_rng(2)
    x0 = torch.tensor(_random_states(rng, 6, False, model.params)).reshape(2, 3, 13)
    acts = torch.tensor(rng.uniform(-0.6, -0.4, (2, 3, 5, 4)))
    xs = model.rollout(x0, acts, {})
    assert xs.shape == (2, 3, 5, 13) and xs.dtype == torch.float64
    torch.testing.assert_close(xs, rollout_by_steps(model, x0, acts, {}), rtol=0, atol=0)
    q = xs[..., 3:7]
    torch.testing.assert_close(
        q.norm(dim=-1), torch.ones(2, 3, 5, dtype=torch.float64), rtol=0, atol=1e-12
    )
    assert torch.all(q[..., 0] >= 0)
    # differentiable for gradient-based MPC
    jac = torch.func.jacrev(lambda u: model(x0[0, 0], u))(acts[0, 0, 0])
    assert jac.shape == (13, 4) and torch.all(torch.isfinite(jac))
    assert jac[12].abs().sum() > 0  # actions reach the yaw rate
    # float32 works too
    m32 = QuadrotorModel(dtype=torch.float32)
    assert m32.step(x0.float(), acts[..., 0, :].float(), {})[0].dtype == torch.float32


def _support(true: QuadrotorParams, n_ep: int, steps: int, seed: int) -> Trajectory:
    """Closed-loop data of `true` flown by a simple PD attitude/altitude law plus noise."""
    env = QuadrotorEnv(task="hover", params=true)
    rng = np.random.default_rng(seed)
    states = np.zeros((n_ep, steps + 1, true.state_dim))
    actions = np.zeros((n_ep, steps, 4))
    mix_inv = np.linalg.inv(true.mixer_matrix())
    for e in range(n_ep):
        env.reset(seed=seed + e)
        states[e, 0] = env.get_state()
        for k in range(steps):
            x = states[e, k]
            # stabilise attitude and altitude; excitation on every axis
            roll_err = 2 * x[4] * np.sign(x[3])
            pitch_err = 2 * x[5] * np.sign(x[3])
            tau = np.array(true.inertia) * (
                -80 * np.array([roll_err, pitch_err, 2 * x[6]]) - 12 * x[10:13]
            )
            f = true.mass * (9.81 - 4 * (x[2] - 1.5) - 3 * x[9])
            thrust = mix_inv @ np.r_[f, tau] + rng.normal(0, 0.4, 4)
            a = np.clip(true.action_of_thrust(thrust), -1, 1).astype(np.float32)
            env.step(a)
            actions[e, k] = a
            states[e, k + 1] = env.get_state()
    return Trajectory(
        states=states,
        actions=actions,
        lengths=np.full(n_ep, steps),
        terminated=np.zeros(n_ep, dtype=bool),
        params=[true.to_dict()] * n_ep,
        dt=0.02,
        env_id="MetaSymQuadrotor-v0",
    )


def test_least_squares_identification_recovers_mass_inertia_drag_wind() -> None:
    true = QuadrotorParams(
        mass=1.325 * 1.25,
        inertia=(0.03284 * 0.8, 0.02086 * 1.3, 0.0520),
        drag=(0.25, 0.15, 0.35),
        wind=(0.8, -0.4, 0.1),
    )
    support = _support(true, n_ep=3, steps=100, seed=0)
    nominal = QuadrotorModel()
    adapted = nominal.adapt(support, AdaptBudget())
    assert nominal.params == QuadrotorParams()  # self untouched
    assert isinstance(adapted, QuadrotorModel)
    got = adapted.params
    assert abs(got.mass / true.mass - 1) < 0.02
    np.testing.assert_allclose(got.inertia, true.inertia, rtol=0.02)
    np.testing.assert_allclose(got.drag, true.drag, atol=0.02)
    np.testing.assert_allclose(got.wind, true.wind, atol=0.02)
    # the identified model predicts the support far better than the nominal one
    x0 = torch.tensor(support.states[:, :-1].reshape(-1, 13))
    u = torch.tensor(support.actions.reshape(-1, 4))
    x1 = support.states[:, 1:].reshape(-1, 13)
    err_nom = np.abs(nominal.step(x0, u, {})[0].numpy() - x1).mean()
    err_ad = np.abs(adapted.step(x0, u, {})[0].numpy() - x1).mean()
    assert err_ad < 0.01 * err_nom


def test_linear_identification_alone_is_close_and_bad_support_is_refused() -> None:
    from metasym_control.models.quadrotor_analytic import IdentificationConfig

    true = QuadrotorParams(mass=1.1, inertia=(0.03, 0.025, 0.05))
    support = _support(true, n_ep=2, steps=60, seed=5)
    lin = QuadrotorModel(ident=IdentificationConfig(gauss_newton_steps=0)).adapt(
        support, AdaptBudget()
    )
    assert abs(lin.params.mass / true.mass - 1) < 0.01
    np.testing.assert_allclose(lin.params.inertia, true.inertia, rtol=0.02)
    with pytest.raises(ValueError, match="nx"):
        QuadrotorModel(QuadrotorParams(motor_tau=0.03)).adapt(support, AdaptBudget())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_matches_cpu() -> None:
    p = QuadrotorParams(motor_tau=0.03, drag=(0.1, 0.2, 0.3), wind=(0.5, 0.0, 0.1))
    rng = np.random.default_rng(4)
    x = torch.tensor(_random_states(rng, 512, True, p))
    u = torch.tensor(rng.uniform(-1, 1, (512, 4)))
    cpu = QuadrotorModel(p).step(x, u, {})[0]
    gpu = QuadrotorModel(p, device="cuda").step(x.cuda(), u.cuda(), {})[0]
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-12)


def test_identification_on_exploration_data_of_a_held_out_system() -> None:
    # the realistic pipeline: exploration flight of an unseen (test-split) quadrotor with a
    # gust process; the gust is unmodelled noise, mass and inertia must still come out close
    from metasym_control.data import collect_quadrotor_dataset
    from metasym_control.envs.quadrotor import sample_quadrotor_params

    true = sample_quadrotor_params(np.random.default_rng(12), "test")
    assert true.gust_std > 0
    support = collect_quadrotor_dataset(1, 2, 150, "test", seed=0, params=[true], num_envs=1)
    got = QuadrotorModel().adapt(support, AdaptBudget()).params
    assert abs(got.mass / true.mass - 1) < 0.02  # measured 0.24 %
    np.testing.assert_allclose(got.inertia, true.inertia, rtol=0.02)
    # the nominal X2 is far from this system: the test is not passed by the prior
    assert abs(QuadrotorParams().mass / true.mass - 1) > 0.1


def test_quadratic_form_step_equals_the_general_step() -> None:
    """Without the motor lag the eager step writes ṡ as one quadratic form; it must be the
    same map as the general per-term step (which the lag, a per-parameter-set inertia and a
    compiled graph use)."""
    p = QuadrotorParams(
        mass=1.3, inertia=(0.02, 0.025, 0.04), drag=(0.1, 0.12, 0.2), wind=(0.5, -0.2, 0.1)
    )
    rng = np.random.default_rng(3)
    x = torch.tensor(_random_states(rng, 64, False, p))
    u = torch.tensor(rng.uniform(-1, 1, (64, 4)))
    model = QuadrotorModel(p)
    fast = model.step(x, u, {})[0]
    general = QuadrotorModel(p)
    general._inertia = general._inertia[None]  # (1, 3): the general path
    slow = general.step(x, u, {})[0]
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), rtol=0, atol=1e-12)
    assert (fast - x).abs().max() > 0.1  # and the state really moved
