"""The toy oscillator env: exact linear step, reset options, split ranges, task costs."""

from __future__ import annotations

import casadi as ca
import gymnasium as gym
import numpy as np
import pytest
import torch
from env_checks import assert_env_checker_clean

import metasym_control  # noqa: F401  (registers the ids)
from metasym_control.envs.toy_oscillator import (
    TOY_ENV_ID,
    OscillatorParams,
    OscillatorTask,
    ToyOscillatorEnv,
    oscillator_trajectories,
)


def test_check_env_warns_only_about_infinite_bounds() -> None:
    assert_env_checker_clean(gym.make(TOY_ENV_ID).unwrapped)


def test_step_is_the_exact_solution_of_the_ode() -> None:
    # closed form of an undamped oscillator under a constant force F:
    # q(t) = F/k + (q0 - F/k) cos(w t) + v0/w sin(w t), w = sqrt(k/m)
    p = OscillatorParams(mass=1.3, stiffness=2.7, damping=0.0, gain=0.9)
    env = ToyOscillatorEnv(params=p)
    q0, v0, u = 0.4, -0.3, 0.5
    env.reset(seed=0, options={"state": [q0, p.mass * v0]})
    for _ in range(25):
        obs, *_ = env.step(np.array([u], dtype=np.float32))
    t, w, f = 25 * env.dt, np.sqrt(p.stiffness / p.mass), p.gain * u
    q = f / p.stiffness + (q0 - f / p.stiffness) * np.cos(w * t) + v0 / w * np.sin(w * t)
    v = -(q0 - f / p.stiffness) * w * np.sin(w * t) + v0 * np.cos(w * t)
    np.testing.assert_allclose(obs, [q, p.mass * v], atol=1e-9)


def test_env_and_trajectory_generator_share_the_physics() -> None:
    p = OscillatorParams(mass=0.9, stiffness=2.2, damping=0.25, gain=1.1)
    traj = oscillator_trajectories(p, 1, 30, np.random.default_rng(1))
    env = ToyOscillatorEnv(params=p)
    env.reset(seed=0, options={"state": traj.states[0, 0]})
    for k in range(30):
        obs, *_ = env.step(traj.actions[0, k])
        np.testing.assert_allclose(obs, traj.states[0, k + 1], atol=1e-12)


def test_reset_draws_from_the_split_and_honours_options() -> None:
    for split in ("train", "test"):
        env = ToyOscillatorEnv(split=split)
        for seed in range(20):
            env.reset(seed=seed)
            for name, r in OscillatorParams.RANGES.items():
                v = getattr(env.params, name)
                lo, hi = r.train
                inside = lo <= v <= hi
                assert inside if split == "train" else not inside, (split, name, v)
    env = ToyOscillatorEnv()
    p = OscillatorParams(mass=2.0)
    obs, _ = env.reset(seed=0, options={"params": p, "state": [0.1, 0.2]})
    assert env.params == p
    np.testing.assert_array_equal(obs, [0.1, 0.2])
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"mass": 2.0})
    with pytest.raises(ValueError, match="OscillatorParams"):
        env.reset(options={"params": {"mass": 2.0}})


def test_reward_regulates_to_the_target_and_runaway_terminates() -> None:
    env = ToyOscillatorEnv(params=OscillatorParams(), target=0.2, max_position=1.0)
    hold = env.task.u_target
    env.reset(seed=0, options={"state": env.task.x_target})
    _, r, term, _, info = env.step(hold.astype(np.float32))
    assert r == pytest.approx(0.0, abs=1e-12) and not term and info["tracking_error"] < 1e-9
    env.reset(seed=0, options={"state": [0.9, 5.0]})
    _, r, term, _, info = env.step(np.array([1.0], dtype=np.float32))
    assert term and "max_position" in info["reason"] and r < 0


def test_task_costs_agree_in_torch_and_casadi() -> None:
    task = OscillatorTask(target=0.3, stiffness=2.0, gain=1.0)
    rng = np.random.default_rng(0)
    xs, us = ca.MX.sym("x", 2), ca.MX.sym("u", 1)
    xr, ur = ca.MX.sym("xr", 2), ca.MX.sym("ur", 1)
    run = ca.Function("run", [xs, us, xr, ur], [task.running_cost_casadi(xs, us, xr, ur)])
    term = ca.Function("term", [xs, xr], [task.terminal_cost_casadi(xs, xr)])
    x_ref, u_ref = task.reference(np.zeros(1))
    for _ in range(5):
        x, u = rng.normal(size=2), rng.uniform(-1, 1, 1)
        t = [torch.as_tensor(v) for v in (x, u, x_ref[0], u_ref[0])]
        assert float(task.running_cost(*t)) == pytest.approx(float(run(x, u, x_ref[0], u_ref[0])))
        assert float(task.terminal_cost(t[0], t[2])) == pytest.approx(float(term(x, x_ref[0])))
        assert task.cost_numpy(x, u) == pytest.approx(float(run(x, u, x_ref[0], u_ref[0])))
    with pytest.raises(ValueError, match="holding action"):
        OscillatorTask(target=1.0, stiffness=3.0, gain=1.0)


def test_registered_and_made_by_gymnasium() -> None:
    env = gym.make(TOY_ENV_ID, split="test")
    assert isinstance(env.unwrapped, ToyOscillatorEnv)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (2,) and env.spec is not None and env.spec.max_episode_steps == 200


class _StepIgnoresDtype(ToyOscillatorEnv):
    """Broken on purpose: observations of the wrong dtype and shape."""

    def step(self, action):  # type: ignore[no-untyped-def]
        obs, r, term, trunc, info = super().step(action)
        return obs.astype(np.int64)[:1], r, term, trunc, info


def test_the_env_checker_helper_fails_a_broken_env() -> None:
    with pytest.raises(AssertionError):
        assert_env_checker_clean(_StepIgnoresDtype())
