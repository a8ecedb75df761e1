"""Gymnasium's RecordVideo works on the project's environments with the project's install."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

import metasym_control  # noqa: F401  (registers the ids)


def test_record_video_works_with_the_projects_install(tmp_path: Path) -> None:
    # gymnasium's RecordVideo needs MoviePy: the `video` extra (and `dev`) brings it
    from gymnasium.wrappers import RecordVideo

    env = gym.make("MetaSymQuadrotor-v0", render_mode="rgb_array", width=64, height=48)
    env = RecordVideo(env, str(tmp_path), episode_trigger=lambda i: True, disable_logger=True)
    env.reset(seed=0)
    for _ in range(5):
        env.step(np.zeros(4, dtype=np.float32))
    env.close()
    videos = list(tmp_path.glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0
