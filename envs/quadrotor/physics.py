"""Quadrotor rigid-body helpers shared by the env and the analytic model: rotors, quaternions."""

from __future__ import annotations

import numpy as np

GRAVITY = 9.81  # m/s², world z up

# Rotor layout shared by the env, the analytic model and the mixer (Skydio X2 order):
# rotor i sits at (sx_i * arm_x, sy_i * arm_y, 0) in the body frame and its drag moment about
# body z is yaw_sign_i * yaw_coeff * T_i.
ROTOR_SIGNS_X = (-1.0, -1.0, 1.0, 1.0)
ROTOR_SIGNS_Y = (-1.0, 1.0, 1.0, -1.0)
ROTOR_YAW_SIGNS = (-1.0, 1.0, -1.0, 1.0)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of quaternions (w, x, y, z): (4,), (4,) -> (4,)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )
