"""RTI with the shipped, adapted MetaSym quadrotor model flies the figure-8 (regression)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import metasym_control  # noqa: F401  (registers the environments)
from metasym_control.checkpoint import load_checkpoint
from metasym_control.closed_loop import run_closed_loop
from metasym_control.controllers.nmpc import NMPC, NMPCConfig
from metasym_control.data import collect_quadrotor_dataset
from metasym_control.dynamics import AdaptBudget
from metasym_control.envs.quadrotor import sample_quadrotor_params
from metasym_control.weights import DEFAULT_WEIGHTS

STEPS = 150  # 3 s of the default figure-8


@pytest.mark.slow
def test_rti_with_adapted_metasym_flies_the_figure8() -> None:
    """Before the trusted region entered the QP as bounds (and proxqp became the backup),
    this crashed within 2 s: 67 of 99 steps fell back to the safe action ('untrusted' plans
    grazing the learned model's pitch-rate bound, qrqp 'successes' breaking constraints)."""
    if not DEFAULT_WEIGHTS.with_suffix(".safetensors").exists():
        pytest.skip("shipped MetaSym weights not present")
    torch.manual_seed(0)
    params = sample_quadrotor_params(np.random.default_rng(0), "test").replace(gust_std=0.0)
    support = collect_quadrotor_dataset(1, 1, 150, "test", 1, params=[params], num_envs=1)
    model, _ = load_checkpoint(
        DEFAULT_WEIGHTS,
        expect_class="MetaSym",
        env_id="MetaSymQuadrotor-v0",
        dtype=torch.float64,
    )
    budget = AdaptBudget(inner_steps=30, lr=3e-3, optimizer="adam", horizon=4, seed=0)
    adapted = model.adapt(support, budget)
    env = gym.make("MetaSymQuadrotor-v0", params=params, init_noise=0.0, max_episode_steps=STEPS)
    task = env.unwrapped.task  # type: ignore[attr-defined]
    ctrl = NMPC(adapted, task, NMPCConfig(horizon=20, mode="rti"))
    result = run_closed_loop(env, ctrl, STEPS, seed=0, history_len=adapted.history_len)
    assert not result.terminated
    assert len(result.actions) == STEPS
    fallbacks = sum(i.get("fallback") != "none" for i in result.infos)
    assert fallbacks <= 5, [i.get("fault") for i in result.infos if i.get("fallback") != "none"]
    # measured 0.29 m over these 3 s with the first shipped weights (0.26 m over the whole
    # 8 s loop); 0.148 m, no fallback, with the current weights and the buffered RTI (qrqp).
    # The start is chaotic: hpipm, which solves the cold first QP more accurately, flies this
    # system worse (docs/controllers.md). The open-loop reference action (the safe action)
    # drifts to 2.7 m
    rmse = result.tracking_rmse(env)
    print(f"learned RTI: rmse {rmse:.3f} m, fallbacks {fallbacks}")
    assert rmse < 0.45
