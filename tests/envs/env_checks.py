"""Shared check of the Gymnasium env checker: it must run, and warn only about infinite bounds."""

from __future__ import annotations

import warnings

import gymnasium as gym
from gymnasium.utils.env_checker import check_env


def assert_env_checker_clean(env: gym.Env, skip_render_check: bool = False) -> None:
    """Run `check_env` on `env`; fail on any warning but the expected infinite-bounds one.

    Every project env observes an unbounded state, so the checker always warns about the
    observation space's infinite bounds: that warning must appear (it shows the checker
    inspected the spaces), and nothing else may.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=skip_render_check)
    messages = [str(w.message) for w in caught]
    expected = [m for m in messages if "infinity" in m]
    others = [m for m in messages if "infinity" not in m]
    assert others == [], others
    assert expected, "check_env did not inspect the observation space's infinite bounds"
