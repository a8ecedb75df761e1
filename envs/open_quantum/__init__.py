"""Monitored open quantum system `MetaSymOpenQuantum-v0`: params, operators, SME, tasks, envs."""

from metasym_control.envs.open_quantum.env import OpenQuantumEnv, episode_params
from metasym_control.envs.open_quantum.params import (
    DEFAULT_OSCILLATOR_LEVELS,
    ENV_ID,
    OPEN_QUANTUM_RANGES,
    SYSTEMS,
    OpenQuantumParams,
    SystemKind,
    sample_open_quantum_params,
)
from metasym_control.envs.open_quantum.physics import (
    SystemOperators,
    check_physical,
    coherent_ket,
    compact_observation,
    density_to_state,
    ground_density,
    ket_to_state,
    lowering_operator,
    observation_bounds,
    state_to_density,
    system_operators,
)
from metasym_control.envs.open_quantum.sme import SMEBatch
from metasym_control.envs.open_quantum.tasks import (
    CoherentStateTask,
    FockStateTask,
    QubitPlusXTask,
    StateTargetTask,
    make_task,
)
from metasym_control.envs.open_quantum.vector import OpenQuantumVectorEnv

__all__ = [
    "DEFAULT_OSCILLATOR_LEVELS",
    "ENV_ID",
    "OPEN_QUANTUM_RANGES",
    "SYSTEMS",
    "CoherentStateTask",
    "FockStateTask",
    "OpenQuantumEnv",
    "OpenQuantumParams",
    "OpenQuantumVectorEnv",
    "QubitPlusXTask",
    "SMEBatch",
    "StateTargetTask",
    "SystemKind",
    "SystemOperators",
    "check_physical",
    "coherent_ket",
    "compact_observation",
    "density_to_state",
    "episode_params",
    "ground_density",
    "ket_to_state",
    "lowering_operator",
    "make_task",
    "observation_bounds",
    "sample_open_quantum_params",
    "state_to_density",
    "system_operators",
]
