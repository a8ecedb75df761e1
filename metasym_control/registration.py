"""Gymnasium registration of the project's environments (string entry points: lazy imports)."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

ENV_IDS = ("MetaSymQuadrotor-v0", "MetaSymSpringMesh-v0", "MetaSymOpenQuantum-v0")


def register_envs() -> None:
    """Register every environment id once; safe to call repeatedly."""
    if "MetaSymQuadrotor-v0" not in registry:
        register(
            id="MetaSymQuadrotor-v0",
            entry_point="metasym_control.envs.quadrotor:QuadrotorEnv",
            max_episode_steps=500,
        )
    if "MetaSymSpringMesh-v0" not in registry:
        register(
            id="MetaSymSpringMesh-v0",
            entry_point="metasym_control.envs.spring_mesh:SpringMeshEnv",
            max_episode_steps=400,
        )
    if "MetaSymOpenQuantum-v0" not in registry:
        register(
            id="MetaSymOpenQuantum-v0",
            entry_point="metasym_control.envs.open_quantum:OpenQuantumEnv",
            vector_entry_point="metasym_control.envs.open_quantum:OpenQuantumVectorEnv",
            max_episode_steps=400,
        )
