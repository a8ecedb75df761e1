"""Gymnasium registration of the project's environments (string entry points: lazy imports)."""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

# id -> register() arguments; entry points are strings so heavy imports wait for `make`
_SPECS: dict[str, dict[str, Any]] = {
    "MetaSymQuadrotor-v0": {
        "entry_point": "metasym_control.envs.quadrotor:QuadrotorEnv",
        "vector_entry_point": "metasym_control.envs.checked_vector:quadrotor_vector_env",
        "max_episode_steps": 500,
    },
    "MetaSymSpringMesh-v1": {
        "entry_point": "metasym_control.envs.spring_mesh:SpringMeshEnv",
        "vector_entry_point": "metasym_control.envs.checked_vector:spring_mesh_vector_env",
        "max_episode_steps": 400,
    },
    "MetaSymSpringMesh-v0": {  # radius drawn uniformly (smaller starts); kept for old data
        "entry_point": "metasym_control.envs.spring_mesh:SpringMeshEnv",
        "vector_entry_point": "metasym_control.envs.checked_vector:spring_mesh_vector_env",
        "max_episode_steps": 400,
        "kwargs": {"radius_draw": "radius"},
    },
    "MetaSymOpenQuantum-v0": {
        "entry_point": "metasym_control.envs.open_quantum:OpenQuantumEnv",
        "vector_entry_point": "metasym_control.envs.open_quantum:OpenQuantumVectorEnv",
        "max_episode_steps": 400,
    },
    "ToyOscillator-v0": {
        "entry_point": "metasym_control.envs.toy_oscillator:ToyOscillatorEnv",
        "max_episode_steps": 200,
    },
}
ENV_IDS = tuple(_SPECS)


def register_envs() -> None:
    """Register every environment id once; safe to call repeatedly."""
    for env_id, spec in _SPECS.items():
        if env_id not in registry:
            register(id=env_id, **spec)
