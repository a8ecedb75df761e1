"""Tests of the analytic spring-mesh model: MuJoCo agreement, CasADi, energy, identification."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is first imported (render tests)

import casadi as ca
import numpy as np
import pytest
import torch

from metasym_control.dynamics import DynamicsModel, SymbolicModel, rollout_by_steps
from metasym_control.envs.spring_mesh import (
    PRESETS,
    SpringMeshEnv,
    SpringMeshParams,
    particle_masses,
    rest_state,
    sample_spring_mesh_params,
    total_energy,
)
from metasym_control.models.spring_mesh_analytic import (
    SpringMeshAdaptConfig,
    SpringMeshModel,
    omega_bound,
)
from metasym_control.trajectory import Trajectory


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waits on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _collect(
    env: SpringMeshEnv, episodes: int, steps: int, seed: int, bound: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """States (E, T+1, nx) and actions (E, T, nu) uniform in [-bound, bound] (env clips)."""
    rng = np.random.default_rng(seed)
    nu = env.action_space.shape[0]
    states, actions = [], []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        xs, us = [env.get_state()], []
        for _ in range(steps):
            a = rng.uniform(-bound, bound, nu)
            env.step(a)
            xs.append(env.get_state())
            us.append(a)
        states.append(xs)
        actions.append(us)
    return np.asarray(states), np.asarray(actions)


def _trajectory(env: SpringMeshEnv, states: np.ndarray, actions: np.ndarray) -> Trajectory:
    n, t = actions.shape[:2]
    return Trajectory(
        states=states,
        actions=actions,
        lengths=np.full(n, t),
        terminated=np.zeros(n, dtype=bool),
        params=[env.params.to_dict()] * n,
        dt=env.dt,
        env_id=env.env_id,
    )


def test_protocols_and_memory() -> None:
    model = SpringMeshModel(SpringMeshParams())
    assert isinstance(model, DynamicsModel) and isinstance(model, SymbolicModel)
    assert model.history_len == 0
    assert (model.state_dim, model.action_dim) == (80, 10)
    assert model.init_memory(torch.zeros(3, 0, 80), torch.zeros(3, 0, 10)) == {}
    assert model.n_substeps == 9 and omega_bound(SpringMeshParams()) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="x \\(\\.\\.\\., 80\\)"):
        model.step(torch.zeros(79), torch.zeros(10), {})


@pytest.mark.parametrize("which", ["default", "test_split_spread", "hanging"])
def test_one_step_agreement_with_mujoco(which: str) -> None:
    """Error below 1e-3 of the state's change over the step (default substeps; measured
    ~1e-5), and round-off level with the simulator's own substeps."""
    rng = np.random.default_rng(0)
    if which == "default":
        p = SpringMeshParams()
    elif which == "test_split_spread":
        p = sample_spring_mesh_params(rng, "test", stiffness_spread=0.3, mass_spread=0.3)
    else:
        p = PRESETS["hanging"]
    env = SpringMeshEnv(params=p)
    states, actions = _collect(env, 1, 12, seed=4, bound=1.5)  # both clip to [-1, 1]
    x0 = torch.tensor(states[0, :-1])
    x1 = states[0, 1:]
    u = torch.tensor(actions[0])
    change = np.linalg.norm(x1 - states[0, :-1], axis=-1)
    assert change.min() > 1e-3
    fast = SpringMeshModel.from_env(env)
    exact = SpringMeshModel.from_env(env, exact=True)
    assert exact.n_substeps == env.n_substeps
    for model, bound in ((fast, 1e-4), (exact, 1e-9)):
        pred = model.step(x0, u, {})[0].numpy()
        rel = np.linalg.norm(pred - x1, axis=-1) / change
        assert rel.max() < 1e-3
        assert rel.max() < bound


def test_sparse_maps_agree_with_dense_and_mujoco() -> None:
    p = SpringMeshParams(rows=4, cols=3, pinned=(0, 2), gravity=True, damping=0.1)
    env = SpringMeshEnv(params=p, n_substeps=8)
    states, actions = _collect(env, 1, 5, seed=1)
    x0, u = torch.tensor(states[0, :-1]), torch.tensor(actions[0])
    dense = SpringMeshModel(p, dt=env.dt, n_substeps=8, maps="dense")
    sparse = SpringMeshModel(p, dt=env.dt, n_substeps=8, maps="sparse")
    assert (dense.maps, sparse.maps) == ("dense", "sparse")
    a = dense.step(x0, u, {})[0]
    b = sparse.step(x0, u, {})[0]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    np.testing.assert_allclose(b.numpy(), states[0, 1:], rtol=0, atol=1e-10)
    torch.testing.assert_close(dense.energy(x0), sparse.energy(x0), rtol=1e-13, atol=1e-13)
    assert SpringMeshModel(SpringMeshParams(rows=20, cols=20)).maps == "sparse"


def test_rollout_batches_and_equals_repeated_steps() -> None:
    p = SpringMeshParams(damping=0.2)
    model = SpringMeshModel(p, n_substeps=3)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor(rest_state(p)) + 0.1 * torch.randn(4, 80, generator=gen, dtype=torch.float64)
    acts = 2 * torch.rand(4, 6, 10, generator=gen, dtype=torch.float64) - 1
    out = model.rollout(x0, acts, {})
    assert out.shape == (4, 6, 80)
    torch.testing.assert_close(out, rollout_by_steps(model, x0, acts, {}), rtol=0, atol=1e-14)
    single = model.rollout(x0[2], acts[2], {})
    torch.testing.assert_close(single, out[2], rtol=0, atol=1e-14)
    deep = model.rollout(x0.expand(2, 4, 80), acts.expand(2, 4, 6, 10), {})
    assert deep.shape == (2, 4, 6, 80)
    # float32 on request
    m32 = SpringMeshModel(p, n_substeps=3, dtype=torch.float32)
    out32 = m32.rollout(x0.float(), acts.float(), {})
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out, rtol=0, atol=1e-4)


def test_casadi_step_matches_torch_step() -> None:
    rng = np.random.default_rng(2)
    for p in (
        SpringMeshParams(),
        sample_spring_mesh_params(rng, "train", stiffness_spread=0.2, mass_spread=0.2),
    ):
        model = SpringMeshModel(p, n_substeps=4)
        x = ca.MX.sym("x", model.state_dim)
        u = ca.MX.sym("u", model.action_dim)
        f = ca.Function("f", [x, u], [model.casadi_step(x, u)])
        for _ in range(3):
            xv = rest_state(p) + rng.normal(0, 0.2, model.state_dim)
            uv = rng.uniform(-1.5, 1.5, model.action_dim)
            ref = model.step(torch.tensor(xv), torch.tensor(uv), {})[0].numpy()
            np.testing.assert_allclose(np.asarray(f(xv, uv)).ravel(), ref, rtol=0, atol=1e-12)
        # SX inputs too (an SX-based solver)
        xs = ca.SX.sym("x", model.state_dim)
        us = ca.SX.sym("u", model.action_dim)
        g = ca.Function("g", [xs, us], [model.casadi_step(xs, us)])
        np.testing.assert_allclose(np.asarray(g(xv, uv)).ravel(), ref, rtol=0, atol=1e-12)


def test_energy_matches_env_and_is_conserved_undamped() -> None:
    p = SpringMeshParams(damping=0.0, stiffness=1.3, mass=0.9)
    model = SpringMeshModel(p)
    rng = np.random.default_rng(3)
    xs = rest_state(p) + rng.normal(0, 0.2, (5, 80))
    np.testing.assert_allclose(model.energy(torch.tensor(xs)).numpy(), total_energy(p, xs))
    assert float(model.energy(torch.tensor(rest_state(p)))) == 0.0
    traj = model.rollout(torch.tensor(xs), torch.zeros(5, 100, 10, dtype=torch.float64), {})
    e = model.energy(traj)  # (5, 100)
    e0 = model.energy(torch.tensor(xs))[:, None]
    assert float(((e - e0).abs() / e0).max()) < 1e-4  # measured 1.7e-5 with 9 substeps
    grav = PRESETS["hanging"]
    gm = SpringMeshModel(grav)
    xg = rest_state(grav) + rng.normal(0, 0.05, 80)
    assert float(gm.energy(torch.tensor(xg))) == pytest.approx(float(total_energy(grav, xg)))


def test_step_differentiates_under_torch_func() -> None:
    model = SpringMeshModel(SpringMeshParams(), n_substeps=2)
    x = torch.tensor(rest_state(model.params)) + 0.05
    u = torch.zeros(10, dtype=torch.float64)
    jx = torch.func.jacrev(lambda xx: model.step(xx, u, {})[0])(x)
    assert jx.shape == (80, 80) and torch.isfinite(jx).all()
    # Finite-difference check of one column.
    e = torch.zeros(80, dtype=torch.float64)
    e[7] = 1e-6
    fd = (model.step(x + e, u, {})[0] - model.step(x - e, u, {})[0]) / 2e-6
    torch.testing.assert_close(jx[:, 7], fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("task_name", "max_ratio"), [("settle", 0.6), ("hold_edge", 0.5)])
def test_lqr_from_the_model_controls_the_mesh(task_name: str, max_ratio: float) -> None:
    """The tasks are controllable through the bounded bottom-row forces: an LQR from the
    model's Jacobians at the target roughly halves the 40-step cost of holding the reference
    action (measured cost ratios 0.47 settle, 0.38 hold_edge; final RMS errors 4 cm)."""
    import scipy.linalg

    env = SpringMeshEnv(params=SpringMeshParams(), task=task_name)
    env.reset(seed=0)
    task = env.task
    model = SpringMeshModel.from_env(env, n_substeps=4)
    xr, ur = torch.tensor(task.x_target), torch.tensor(task.u_target)
    # The target is a fixed point of the model under the reference action.
    assert float((model.step(xr, ur, {})[0] - xr).abs().max()) < 1e-12
    a_mat = torch.func.jacrev(lambda x: model.step(x, ur, {})[0])(xr).numpy()  # (80, 80)
    b_mat = torch.func.jacrev(lambda u: model.step(xr, u, {})[0])(ur).numpy()  # (80, 10)
    w = task.weights
    q_mat = np.diag(np.r_[np.full(40, w.position / 40), np.full(40, w.momentum / 40)])
    r_mat = np.eye(10) * w.action / 10
    p_mat = scipy.linalg.solve_discrete_are(a_mat, b_mat, q_mat, r_mat)
    gain = np.linalg.solve(r_mat + b_mat.T @ p_mat @ b_mat, b_mat.T @ p_mat @ a_mat)
    costs, finals = {}, {}
    for name in ("reference action", "lqr"):
        env.reset(seed=0)
        cost = 0.0
        for _ in range(40):
            x = env.get_state()
            a = task.u_target.copy()
            if name == "lqr":
                a = np.clip(a - gain @ (x - task.x_target), -1.0, 1.0)
            _, reward, *_, info = env.step(a)
            cost -= reward
        costs[name], finals[name] = cost, info["tracking_error"]
    assert costs["lqr"] < max_ratio * costs["reference action"]
    assert finals["lqr"] < 0.6 * finals["reference action"]
    assert finals["lqr"] < 0.06


def test_adapt_recovers_perturbed_parameters() -> None:
    """LS identification from 2 short random-action episodes: stiffness within 2% (measured
    ~1e-6), damping and per-particle masses as well."""
    rng = np.random.default_rng(11)
    truth = SpringMeshParams(
        stiffness=1.3, damping=0.15, mass=0.8, mass_scales=tuple(rng.uniform(0.8, 1.2, 20))
    )
    env = SpringMeshEnv(params=truth)
    states, actions = _collect(env, 2, 12, seed=0)
    support = _trajectory(env, states, actions)
    nominal = SpringMeshModel(SpringMeshParams(), dt=env.dt)
    adapted = nominal.adapt(support)
    assert nominal.params == SpringMeshParams()  # untouched
    q = adapted.params
    assert abs(q.stiffness - 1.3) / 1.3 < 2e-2
    assert abs(q.stiffness - 1.3) / 1.3 < 1e-4
    assert abs(q.damping - 0.15) < 1e-3
    np.testing.assert_allclose(particle_masses(q), particle_masses(truth), rtol=1e-3)
    # Its predictions now match the data far better than the nominal model's.
    x0, x1 = torch.tensor(states[:, :-1]), states[:, 1:]
    u = torch.tensor(actions)
    err_nom = np.abs(nominal.step(x0, u, {})[0].numpy() - x1).max()
    err_ad = np.abs(adapted.step(x0, u, {})[0].numpy() - x1).max()
    assert err_ad < 1e-3 * err_nom


def test_adapt_mass_scale_variant_and_bad_support() -> None:
    truth = SpringMeshParams(stiffness=0.7, damping=0.02, mass=1.3)
    env = SpringMeshEnv(params=truth)
    states, actions = _collect(env, 1, 10, seed=5)
    support = _trajectory(env, states, actions)
    model = SpringMeshModel(SpringMeshParams(), dt=env.dt)
    q = model.adapt(support, config=SpringMeshAdaptConfig(masses="scale")).params
    assert abs(q.stiffness - 0.7) / 0.7 < 2e-2
    assert abs(q.mass - 1.3) / 1.3 < 1e-3
    wrong_dt = SpringMeshModel(SpringMeshParams(), dt=0.1)
    with pytest.raises(ValueError, match="dt"):
        wrong_dt.adapt(support)
    empty = Trajectory(
        states, actions, np.zeros(1, dtype=np.int64), np.zeros(1, bool), support.params, env.dt, ""
    )
    with pytest.raises(ValueError, match="no valid transition"):
        model.adapt(empty)
