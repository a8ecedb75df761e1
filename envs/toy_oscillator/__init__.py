"""The toy oscillator family: parameters, trajectories, task and Gymnasium environment."""

from metasym_control.envs.toy_oscillator.data import (
    ACTION_NAMES,
    STATE_NAMES,
    STATE_UNITS,
    oscillator_family,
    oscillator_trajectories,
)
from metasym_control.envs.toy_oscillator.env import ToyOscillatorEnv
from metasym_control.envs.toy_oscillator.params import (
    TOY_DT,
    TOY_ENV_ID,
    OscillatorParams,
    sample_oscillator_params,
)
from metasym_control.envs.toy_oscillator.tasks import OscillatorCostWeights, OscillatorTask

__all__ = [
    "ACTION_NAMES",
    "STATE_NAMES",
    "STATE_UNITS",
    "TOY_DT",
    "TOY_ENV_ID",
    "OscillatorCostWeights",
    "OscillatorParams",
    "OscillatorTask",
    "ToyOscillatorEnv",
    "oscillator_family",
    "oscillator_trajectories",
    "sample_oscillator_params",
]
