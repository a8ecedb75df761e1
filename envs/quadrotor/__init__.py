"""MuJoCo quadrotor `MetaSymQuadrotor-v0`: parameters, physics helpers, tasks, MJCF, the env."""

from metasym_control.envs.quadrotor.env import (
    ACTION_NAMES,
    STATE_NAMES,
    STATE_UNITS,
    THRUST_NAMES,
    QuadrotorEnv,
)
from metasym_control.envs.quadrotor.mjcf import import_mujoco, quadrotor_mjcf
from metasym_control.envs.quadrotor.params import (
    DRAG_RANGE,
    ENV_ID,
    GUST_RANGE,
    INERTIA_SCALE_RANGE,
    INERTIA_Z_RATIO,
    MASS_RANGE,
    MOTOR_TAU_RANGE,
    WIND_RANGE,
    WIND_Z_RANGE,
    QuadrotorParams,
    sample_quadrotor_params,
)
from metasym_control.envs.quadrotor.physics import (
    GRAVITY,
    ROTOR_SIGNS_X,
    ROTOR_SIGNS_Y,
    ROTOR_YAW_SIGNS,
    quat_mul,
)
from metasym_control.envs.quadrotor.tasks import (
    FLIGHT_LOWER,
    FLIGHT_UPPER,
    TASKS,
    Figure8Task,
    HoverTask,
    QuadrotorCostWeights,
    QuadrotorTask,
    WaypointTask,
)

__all__ = [
    "ACTION_NAMES",
    "DRAG_RANGE",
    "ENV_ID",
    "FLIGHT_LOWER",
    "FLIGHT_UPPER",
    "GRAVITY",
    "GUST_RANGE",
    "INERTIA_SCALE_RANGE",
    "INERTIA_Z_RATIO",
    "MASS_RANGE",
    "MOTOR_TAU_RANGE",
    "ROTOR_SIGNS_X",
    "ROTOR_SIGNS_Y",
    "ROTOR_YAW_SIGNS",
    "STATE_NAMES",
    "STATE_UNITS",
    "TASKS",
    "THRUST_NAMES",
    "WIND_RANGE",
    "WIND_Z_RANGE",
    "Figure8Task",
    "HoverTask",
    "QuadrotorCostWeights",
    "QuadrotorEnv",
    "QuadrotorParams",
    "QuadrotorTask",
    "WaypointTask",
    "import_mujoco",
    "quadrotor_mjcf",
    "quat_mul",
    "sample_quadrotor_params",
]
