"""MJCF text of a spring mesh (bodies on slide joints, spatial-tendon springs, motors)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from metasym_control.envs.spring_mesh.params import SpringMeshParams
from metasym_control.envs.spring_mesh.physics import (
    BENCHMARK_TIMESTEP,
    GRAVITY,
    particle_masses,
    spring_stiffnesses,
)

Integrator = Literal["RK4", "Euler"]


def _exact(v: float) -> str:
    """A float as exact MJCF text."""
    return repr(float(v))


def build_mjcf(
    p: SpringMeshParams, timestep: float = BENCHMARK_TIMESTEP, integrator: Integrator = "RK4"
) -> str:
    """MJCF text of the mesh `p`.

    Each free particle is a body at its rest position with two slide joints (x then y, so
    `qpos` is the displacement from rest) and damping `m · γ` (velocity decay at rate γ);
    pinned particles are sites of the world body; each spring is a spatial tendon between two
    sites with stiffness `k_s` and spring length (rest length) the initial distance; each
    actuated particle has two motors with gear `max_force` and control range [-1, 1].
    Contacts are off; the mesh lies in the world x-y plane, seen from +z.

    Args:
        p: parameters.
        timestep: physics step, s.
        integrator: MuJoCo integrator ("RK4" is the documented default, see `SpringMeshEnv`).

    Returns:
        The model's XML text.
    """
    lay = p.layout
    s = p.spacing
    k = spring_stiffnesses(p)
    m = particle_masses(p)
    radius = 0.08 * s
    width = 0.025 * s
    cx = 0.5 * (p.cols - 1) * s
    cy = -0.5 * (p.rows - 1) * s
    half = 0.5 * max(p.cols - 1, p.rows - 1, 1) * s + 0.8 * s
    fovy = 45.0
    cam_z = half / math.tan(math.radians(fovy / 2))
    g = -GRAVITY if p.gravity else 0.0
    lines = [
        f'<mujoco model="spring_mesh_{p.rows}x{p.cols}">',
        '  <compiler angle="radian" autolimits="true"/>',
        f'  <option timestep="{_exact(timestep)}" integrator="{integrator}" '
        f'gravity="0 {_exact(g)} 0">',
        '    <flag contact="disable"/>',
        "  </option>",
        '  <visual><global offwidth="1280" offheight="1280"/>'
        '<headlight ambient="0.5 0.5 0.5" diffuse="0.5 0.5 0.5"/></visual>',
        '  <default><geom contype="0" conaffinity="0"/></default>',
        "  <worldbody>",
        f'    <camera name="top" pos="{_exact(cx)} {_exact(cy)} {_exact(cam_z)}" '
        f'xyaxes="1 0 0 0 1 0" fovy="{fovy}"/>',
        f'    <geom name="floor" type="plane" '
        f'pos="{_exact(cx)} {_exact(cy)} {_exact(-radius * 2)}" '
        f'size="{_exact(half * 2)} {_exact(half * 2)} 0.1" rgba="0.95 0.95 0.95 1"/>',
    ]
    for i in lay.pinned:
        x, y = lay.rest[i]
        lines.append(
            f'    <site name="s{i}" pos="{_exact(x)} {_exact(y)} 0" size="{_exact(radius)}"/>'
        )
        lines.append(
            f'    <geom name="g{i}" type="box" pos="{_exact(x)} {_exact(y)} 0" '
            f'size="{_exact(radius)} {_exact(radius)} {_exact(radius)}" rgba="0.3 0.3 0.3 1"/>'
        )
    for n, i in enumerate(lay.free):
        x, y = lay.rest[i]
        d = m[n] * p.damping
        lines += [
            f'    <body name="b{i}" pos="{_exact(x)} {_exact(y)} 0">',
            f'      <joint name="j{i}x" type="slide" axis="1 0 0" damping="{_exact(d)}"/>',
            f'      <joint name="j{i}y" type="slide" axis="0 1 0" damping="{_exact(d)}"/>',
            f'      <inertial pos="0 0 0" mass="{_exact(m[n])}" diaginertia="1e-4 1e-4 1e-4"/>',
            f'      <geom name="g{i}" type="sphere" size="{_exact(radius)}" rgba="0.5 0.5 0.5 1"/>',
            f'      <site name="s{i}" size="{_exact(radius / 2)}"/>',
            "    </body>",
        ]
    lines.append("  </worldbody>")
    lines.append("  <tendon>")
    for t, (i, j) in enumerate(lay.pairs):
        lines.append(
            f'    <spatial name="k{t}" stiffness="{_exact(k[t])}" '
            f'springlength="{_exact(lay.rest_length[t])}" '
            f'width="{_exact(width)}" rgba="0.5 0.5 0.5 1"><site site="s{i}"/><site site="s{j}"/>'
            "</spatial>"
        )
    lines.append("  </tendon>")
    lines.append("  <actuator>")
    for i in p.actuated_indices:
        for ax in "xy":
            lines.append(
                f'    <motor name="u{i}{ax}" joint="j{i}{ax}" gear="{_exact(p.max_force)}" '
                'ctrlrange="-1 1"/>'
            )
    lines.append("  </actuator>")
    lines.append("</mujoco>")
    return "\n".join(lines) + "\n"


def strain_rgba(strain: np.ndarray, saturate: float = 0.15) -> np.ndarray:
    """(..., 4) colours: blue for compression, grey at rest length, red for extension."""
    t = np.clip(np.asarray(strain) / saturate, -1.0, 1.0)[..., None]
    grey = np.array([0.55, 0.55, 0.55, 1.0])
    red = np.array([0.85, 0.1, 0.1, 1.0])
    blue = np.array([0.1, 0.25, 0.9, 1.0])
    return np.where(t >= 0, grey + t * (red - grey), grey - t * (blue - grey))
