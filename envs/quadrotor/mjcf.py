"""MJCF text of a quadrotor with given parameters (one free body, four rotor actuators)."""

from __future__ import annotations

import math
from types import ModuleType

from metasym_control.envs.quadrotor.params import QuadrotorParams
from metasym_control.envs.quadrotor.physics import ROTOR_SIGNS_X, ROTOR_SIGNS_Y, ROTOR_YAW_SIGNS


def import_mujoco() -> ModuleType:
    """MuJoCo, imported when an environment is built (parameters, tasks and the analytic
    model stay importable on hosts without MuJoCo or CasADi, e.g. a bare GPU box)."""
    import mujoco

    return mujoco


def quadrotor_mjcf(params: QuadrotorParams, timestep: float = 0.005) -> str:
    """MJCF text of the quadrotor with `params` (one free body, four rotor site actuators).

    Physics: RK4 integrator at `timestep`, contacts disabled (crashes are detected
    geometrically by the environment), gravity -z. The body's inertial frame is its origin,
    aligned with the body axes. Actuator i has `ctrl` = normalised action a_i, force
    `T_i = gain · act_or_ctrl + bias` along the site's z axis and moment `±yaw_coeff · T_i`
    about it; with the motor lag on, `dyntype="filter"` integrates the first-order lag
    (act = lagged normalised command).
    """
    p = params
    ixx, iyy, izz = p.inertia
    half = 0.5 * (p.max_thrust - p.min_thrust)
    bias = p.min_thrust + half
    # visual sizes follow the geometry
    ax, ay = p.arm_x, p.arm_y
    arm = math.hypot(ax, ay)
    rotor_r = 0.45 * min(ax, ay) + 0.2 * arm * 0.5
    body = (0.45 * ax, 0.35 * ay, 0.15 * arm)
    dyn = f'dyntype="filter" dynprm="{p.motor_tau:.10g}"' if p.has_lag else ""
    sites, arms, rotors, acts = [], [], [], []
    for i, (sx, sy, ys) in enumerate(zip(ROTOR_SIGNS_X, ROTOR_SIGNS_Y, ROTOR_YAW_SIGNS), 1):
        x, y = sx * ax, sy * ay
        sites.append(f'<site name="rotor{i}" pos="{x:.10g} {y:.10g} 0" size="{0.1 * arm:.4g}"/>')
        arms.append(
            f'<geom class="visual" type="capsule" size="{0.06 * arm:.4g}" '
            f'fromto="0 0 0 {x:.10g} {y:.10g} 0" rgba=".25 .25 .28 1"/>'
        )
        color = ".85 .35 .2 .8" if i in (3, 4) else ".2 .45 .85 .8"  # front rotors orange
        rotors.append(
            f'<geom class="visual" type="cylinder" size="{rotor_r:.4g} {0.03 * arm:.4g}" '
            f'pos="{x:.10g} {y:.10g} {0.12 * arm:.4g}" rgba="{color}"/>'
        )
        acts.append(
            f'<general name="thrust{i}" site="rotor{i}" gear="0 0 1 0 0 '
            f'{ys * p.yaw_coeff:.10g}" ctrllimited="true" ctrlrange="-1 1" '
            f'gainprm="{half:.10g}" biastype="affine" biasprm="{bias:.10g}" {dyn}/>'
        )
    nl = "\n      "
    return f"""<mujoco model="metasym_quadrotor">
  <compiler angle="radian"/>
  <option timestep="{timestep:.10g}" integrator="RK4" gravity="0 0 {-p.gravity:.10g}">
    <flag contact="disable"/>
  </option>
  <visual>
    <global offwidth="1280" offheight="960"/>
    <headlight ambient=".4 .4 .4" diffuse=".6 .6 .6"/>
  </visual>
  <default>
    <default class="visual">
      <geom contype="0" conaffinity="0" mass="0" group="1"/>
    </default>
  </default>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1=".5 .7 .9" rgb2=".1 .15 .3"
      width="256" height="256"/>
    <texture name="grid" type="2d" builtin="checker" rgb1=".3 .35 .4" rgb2=".45 .5 .55"
      width="256" height="256" mark="edge" markrgb=".7 .7 .7"/>
    <material name="grid" texture="grid" texrepeat="8 8" reflectance=".1"/>
  </asset>
  <worldbody>
    <light pos="0 0 6" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="6 6 .05" material="grid" contype="0" conaffinity="0"/>
    <body name="target" mocap="true" pos="0 0 1.5">
      <geom class="visual" type="sphere" size="{0.2 * arm:.4g}" rgba="1 .2 .2 .5"/>
    </body>
    <body name="quad" pos="0 0 1.5">
      <freejoint name="root"/>
      <inertial pos="0 0 0" mass="{p.mass:.12g}" diaginertia="{ixx:.12g} {iyy:.12g} {izz:.12g}"/>
      <camera name="track" mode="trackcom" pos="{-8 * arm:.4g} {-4 * arm:.4g} {3 * arm:.4g}"
        xyaxes="0.447 -0.894 0 0.25 0.125 1"/>
      <geom class="visual" type="box" size="{body[0]:.4g} {body[1]:.4g} {body[2]:.4g}"
        rgba=".15 .15 .18 1"/>
      {nl.join(arms)}
      {nl.join(rotors)}
      {nl.join(sites)}
    </body>
  </worldbody>
  <actuator>
    {(nl[:-2]).join(acts)}
  </actuator>
</mujoco>
"""
