"""The registry of systems: which canonical coordinates each environment id's state has.

Environment ids live here, in the wiring, so that models stay free of them: a model takes a
`CoordinateMap`, and this module says which map a project environment documents.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from metasym_control.envs.open_quantum.params import ENV_ID as QUANTUM_ENV_ID
from metasym_control.envs.quadrotor.params import ENV_ID as QUADROTOR_ENV_ID
from metasym_control.envs.spring_mesh.params import ENV_ID as SPRING_MESH_ENV_ID
from metasym_control.envs.toy_oscillator.params import TOY_ENV_ID
from metasym_control.models.coordinates import (
    CoordinateMap,
    generic_coordinates,
    quadrotor_coordinates,
    quantum_coordinates,
    spring_mesh_coordinates,
)
from metasym_control.models.learned import LearnedModel
from metasym_control.models.metasym import MetaSymConfig
from metasym_control.models.registry import ModelKind, make_model
from metasym_control.trajectory import Trajectory


def _toy_coordinates(state_dim: int) -> CoordinateMap:
    half = state_dim // 2
    return generic_coordinates(state_dim, range(half), range(half, state_dim))


# environment name (the id without its version) -> its coordinates for a state length
COORDINATES: dict[str, Callable[[int], CoordinateMap]] = {
    QUADROTOR_ENV_ID.split("-v")[0]: quadrotor_coordinates,
    SPRING_MESH_ENV_ID.split("-v")[0]: spring_mesh_coordinates,
    QUANTUM_ENV_ID.split("-v")[0]: quantum_coordinates,
    TOY_ENV_ID.split("-v")[0]: _toy_coordinates,
}


def coordinates_for_env(env_id: str, state_dim: int) -> CoordinateMap:
    """The documented canonical coordinates of a project environment.

    Args:
        env_id: Gymnasium id with version, e.g. "MetaSymQuadrotor-v0".
        state_dim: nx of the data.

    Raises:
        ValueError: an environment without a known map (use `generic_coordinates`).
    """
    name = env_id.split("-v")[0]
    if name not in COORDINATES:
        raise ValueError(
            f"no canonical coordinates known for {env_id!r} (known: {sorted(COORDINATES)}); "
            "use metasym_control.models.coordinates.generic_coordinates"
        )
    return COORDINATES[name](state_dim)


def model_for_data(
    kind: ModelKind,
    data: Trajectory,
    metasym: MetaSymConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LearnedModel:
    """A fresh model of `kind` shaped for `data` (its env id, nx, nu, dt and coordinates).

    Args:
        kind: a model kind of `metasym_control.models.registry.make_model`.
        data: a trajectory set of a project environment.
        metasym: MetaSym's config (MetaSym kinds only; default if None).
        device, dtype: of the parameters.
    """
    coords = coordinates_for_env(data.env_id, data.state_dim)
    return make_model(
        kind, data.env_id, data.state_dim, data.action_dim, data.dt, coords, metasym, device, dtype
    )
