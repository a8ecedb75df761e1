"""Tests of the analytic open-quantum model: QuTiP agreement, CasADi = torch, replay, adapt."""

from __future__ import annotations

import math
from collections.abc import Iterator

import casadi as ca
import numpy as np
import pytest
import qutip
import torch

from metasym_control.dynamics import (
    AdaptBudget,
    DynamicsModel,
    SymbolicModel,
    rollout_by_steps,
)
from metasym_control.envs.open_quantum import (
    OpenQuantumEnv,
    OpenQuantumParams,
    density_to_state,
    ground_density,
    sample_open_quantum_params,
    system_operators,
)
from metasym_control.models.open_quantum_analytic import OpenQuantumModel
from metasym_control.trajectory import Trajectory

QUBIT = OpenQuantumParams()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """These small products run fastest on one thread (and far faster on a shared box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


OSC = OpenQuantumParams.for_system("oscillator")
OSC5 = OSC.replace(n_levels=5)


def random_states(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """(count, 2N²) states of random mixed density matrices."""
    g = rng.normal(size=(count, n, n)) + 1j * rng.normal(size=(count, n, n))
    rho = g @ np.conj(np.swapaxes(g, -1, -2))
    rho /= np.einsum("bii->b", rho).real[:, None, None]
    return density_to_state(rho)


def lindblad_reference(p: OpenQuantumParams, rho0: np.ndarray, drives: np.ndarray) -> np.ndarray:
    """QuTiP mesolve over piecewise-constant drives: (K, 2) -> (K, 2N²) states."""
    ops = system_operators(p.system, p.dim)
    c_ops = [
        qutip.Qobj(math.sqrt(p.damping) * ops.damping_op),
        qutip.Qobj(math.sqrt(p.dephasing) * ops.dephasing_op),
        qutip.Qobj(math.sqrt(p.measurement_rate) * ops.measured_op),
    ]
    rho = qutip.Qobj(rho0)
    out = []
    for u in drives:
        h = p.detuning * ops.detuning_op + p.max_rabi * (u[0] * ops.drive_x + u[1] * ops.drive_y)
        rho = qutip.mesolve(
            qutip.Qobj(h), rho, [0.0, p.dt], c_ops, options={"atol": 1e-12, "rtol": 1e-11}
        ).final_state
        out.append(density_to_state(rho.full()))
    return np.asarray(out)


def support_data(p: OpenQuantumParams, episodes: int, steps: int, seed: int) -> Trajectory:
    """Conditional trajectories of the env under uniformly random drives."""
    env = OpenQuantumEnv(system=p.system, params=p)
    rng = np.random.default_rng(seed)
    states, actions = [], []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        xs, us = [env.get_state()], []
        for _ in range(steps):
            u = rng.uniform(-1, 1, 2).astype(np.float32)
            env.step(u)
            us.append(u.astype(np.float64))
            xs.append(env.get_state())
        states.append(xs)
        actions.append(us)
    return Trajectory(
        states=np.asarray(states),
        actions=np.asarray(actions),
        lengths=np.full(episodes, steps),
        terminated=np.zeros(episodes, dtype=bool),
        params=[p.to_dict()] * episodes,
        dt=p.dt,
        env_id="MetaSymOpenQuantum-v0",
    )


def test_protocol_shapes_and_purity_of_prediction() -> None:
    m = OpenQuantumModel(QUBIT)
    assert isinstance(m, DynamicsModel) and isinstance(m, SymbolicModel)
    assert (m.state_dim, m.action_dim, m.history_len, m.dt) == (8, 2, 0, QUBIT.dt)
    assert m.init_memory(torch.zeros(3, 0, 8), torch.zeros(3, 0, 2)) == {}
    assert m.trusted_lower.shape == (8,) and np.all(m.trusted_upper == 1)
    rng = np.random.default_rng(0)
    x0 = torch.as_tensor(random_states(rng, 2, 12).reshape(3, 4, 8))
    acts = torch.as_tensor(rng.uniform(-1, 1, (3, 4, 5, 2)))
    xs = m.rollout(x0, acts, {})
    assert xs.shape == (3, 4, 5, 8)
    assert torch.allclose(xs, rollout_by_steps(m, x0, acts, {}), atol=0, rtol=0)
    # trace stays 1 under the Lindblad map (entries 0 and 3 are the populations)
    assert torch.allclose(
        xs[..., 0] + xs[..., 3], torch.ones(3, 4, 5, dtype=torch.float64), atol=1e-12
    )


@pytest.mark.parametrize("p", [QUBIT, OSC], ids=["qubit", "oscillator10"])
def test_casadi_step_is_the_same_map(p: OpenQuantumParams) -> None:
    m = OpenQuantumModel(p)
    xs, us = ca.SX.sym("x", m.state_dim), ca.SX.sym("u", 2)
    f = ca.Function("f", [xs, us], [m.casadi_step(xs, us)])
    rng = np.random.default_rng(1)
    x = random_states(rng, p.dim, 5)
    u = rng.uniform(-1.3, 1.3, (5, 2))  # some outside [-1, 1]: both clip
    want = m.step(torch.as_tensor(x), torch.as_tensor(u), {})[0].numpy()
    for i in range(5):
        got = np.asarray(f(x[i], u[i])).ravel()
        assert np.max(np.abs(got - want[i])) < 1e-13


@pytest.mark.parametrize("system", ["qubit", "oscillator"])
def test_step_matches_mesolve(system: str) -> None:
    """Unconditional map vs QuTiP's Lindblad solution for random systems and drives
    (RK4 with h·‖A‖ <= 0.2: measured error ~1e-7 qubit, 1e-8 oscillator)."""
    rng = np.random.default_rng(2)
    for _ in range(2):
        p = sample_open_quantum_params(rng, "train", system, n_levels=6)
        m = OpenQuantumModel(p)
        drives = rng.uniform(-1, 1, (8, 2))
        rho0 = ground_density(system, p.dim)
        want = lindblad_reference(p, rho0, drives)
        got = m.rollout(torch.as_tensor(density_to_state(rho0)), torch.as_tensor(drives), {})
        err = float(np.max(np.abs(got.numpy() - want)))
        assert err < 2e-6, err
        # far below the distance a drive makes (a trivial predictor fails)
        assert np.max(np.abs(want[-1] - density_to_state(rho0))) > 0.05


@pytest.mark.parametrize("p", [QUBIT, OSC5], ids=["qubit", "oscillator5"])
def test_conditional_step_replays_the_env(p: OpenQuantumParams) -> None:
    env = OpenQuantumEnv(system=p.system, params=p)
    env.reset(seed=3)
    # a superposition, so that the record moves the conditional state
    psi = np.zeros(p.dim, dtype=complex)
    psi[0], psi[-1] = 0.6, 0.8j
    env.set_state(density_to_state(np.outer(psi, psi.conj())))
    m = OpenQuantumModel(p)
    rng = np.random.default_rng(3)
    x = torch.as_tensor(env.get_state())
    acts = rng.uniform(-1, 1, (25, 2)).astype(np.float32)
    for a in acts:
        env.step(a)
    rec = torch.as_tensor(env.measurement_record(per_substep=True))
    for a, dy in zip(acts, rec):
        x = m.conditional_step(x, torch.as_tensor(a.astype(np.float64)), dy)
    assert np.max(np.abs(x.numpy() - env.get_state())) < 1e-11
    # the record matters: replaying with zero increments ends elsewhere
    x0 = torch.as_tensor(density_to_state(np.outer(psi, psi.conj())))
    for a in acts:
        x0 = m.conditional_step(x0, torch.as_tensor(a.astype(np.float64)), torch.zeros(p.substeps))
    assert np.max(np.abs(x0.numpy() - env.get_state())) > 1e-3


@pytest.mark.parametrize("system", ["qubit", "oscillator"])
def test_adapt_identifies_a_held_out_system(system: str) -> None:
    """Least squares from 2 × 120 conditional steps of a test-range system: detuning and
    Rabi frequency to a few percent, and one-step ensemble predictions on new states far
    closer to the true system's than the default (prior) model's (measured: 37× closer for
    the qubit, 10⁴× for the oscillator)."""
    rng = np.random.default_rng(5)
    true = sample_open_quantum_params(
        rng, "test", system, n_levels=6 if system != "qubit" else None
    )
    prior = OpenQuantumModel(
        OpenQuantumParams.for_system(system, **({"n_levels": 6} if system != "qubit" else {}))
    )
    before = prior.params
    adapted = prior.adapt(support_data(true, 2, 120, seed=6), AdaptBudget())
    assert prior.params == before  # untouched
    q = adapted.params
    assert abs(q.detuning - true.detuning) < 0.05
    assert abs(q.max_rabi - true.max_rabi) < 0.02 * true.max_rabi
    # total rates of the channels that the mean dynamics sees
    if system == "qubit":
        tot = (q.dephasing + q.measurement_rate, true.dephasing + true.measurement_rate)
    else:
        tot = (q.damping + q.measurement_rate, true.damping + true.measurement_rate)
    assert abs(tot[0] - tot[1]) < 0.2 * tot[1], tot
    query = support_data(true, 1, 60, seed=40)
    x = torch.as_tensor(query.states[0, :-1])
    u = torch.as_tensor(query.actions[0])
    want = OpenQuantumModel(true).step(x, u, {})[0]

    def err(model: OpenQuantumModel) -> float:
        return float((model.step(x, u, {})[0] - want).norm(dim=-1).mean())

    assert err(adapted) < 0.1 * err(prior), (err(adapted), err(prior))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="dt"):
        OpenQuantumModel(QUBIT, dt=-1.0)
    m = OpenQuantumModel(QUBIT)
    bad = Trajectory(
        states=np.zeros((1, 3, 5)),
        actions=np.zeros((1, 2, 2)),
        lengths=np.array([2]),
        terminated=np.array([False]),
        params=[{}],
        dt=0.02,
        env_id="x",
    )
    with pytest.raises(ValueError, match="nx=5"):
        m.adapt(bad, AdaptBudget())


def test_model_predictive_feedback_holds_plus_x() -> None:
    """A brute-force MPC on the model (21 × 21 constant drives, 3-step horizon, task cost)
    holds the default qubit near +x: mean F > 0.8 over steps 20..150 (measured ≈ 0.88),
    where zero drive stays at 0.5. A sign error in the model's drive would fail this."""
    from metasym_control.envs.open_quantum import QubitPlusXTask

    env = OpenQuantumEnv(params=QUBIT)
    env.reset(seed=0)
    m = OpenQuantumModel(QUBIT)
    task = env.task
    assert isinstance(task, QubitPlusXTask)
    grid = np.linspace(-1, 1, 21)
    cand = torch.as_tensor(np.array([[a, b] for a in grid for b in grid]))  # (441, 2)
    x_ref = torch.as_tensor(task.target_state)
    u_ref = torch.zeros(2, dtype=torch.float64)
    fids = []
    for _ in range(150):
        x = torch.as_tensor(env.get_state()).expand(len(cand), -1)
        cost = torch.zeros(len(cand), dtype=torch.float64)
        for _ in range(3):
            x, _ = m.step(x, cand, {})
            cost = cost + task.running_cost(x, cand, x_ref, u_ref)
        u = cand[int(torch.argmin(cost))].numpy().astype(np.float32)
        fids.append(env.step(u)[4]["fidelity"])
    assert np.mean(fids[20:]) > 0.8, np.mean(fids[20:])
