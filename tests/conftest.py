"""Test-wide set-up: headless MuJoCo rendering, and one torch thread."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import torch

# The suite's models are small: one thread is as fast, and two OpenMP threads on a busy
# 2-core machine (CI, parallel work) slow some tests tenfold by spinning.
torch.set_num_threads(1)
