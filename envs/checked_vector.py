"""Vector environments that check the whole action batch before any sub-environment steps.

`gymnasium.make_vec(id, n)` for the MuJoCo environments returns a `CheckedSyncVectorEnv`: a
`SyncVectorEnv` whose `step` refuses a batch holding a non-finite or mis-shaped action
*before* stepping anything. A plain `SyncVectorEnv` steps the sub-environments one by one,
so a NaN for sub-environment 2 raised only after 0 and 1 had stepped: their transitions were
lost and the batch was out of step for the rest of the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit


class CheckedSyncVectorEnv(gym.vector.SyncVectorEnv):
    """`SyncVectorEnv` whose `step` validates every sub-environment's action first.

    Args:
        env_fns: one constructor per sub-environment.
        name: the environment's id, for error messages.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], name: str) -> None:
        super().__init__(env_fns)
        self.name = name

    def step(self, actions: Any) -> Any:
        """Step every sub-environment with `actions` (num_envs, *action_shape).

        Raises:
            ValueError: a shape other than the batch's, or a NaN / inf in any row (naming the
                sub-environments); no sub-environment has stepped then.
        """
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"{self.name}: action batch of shape {a.shape}, expected {self.action_space.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(a.reshape(self.num_envs, -1)).all(axis=1))
        if bad.size:
            raise ValueError(
                f"{self.name}: non-finite action for sub-environment(s) {bad.tolist()} "
                f"({a[bad[0]].tolist()}); no sub-environment was stepped"
            )
        return super().step(actions)


def _factory(name: str, entry_point: str) -> Callable[..., CheckedSyncVectorEnv]:
    def make(
        num_envs: int, max_episode_steps: int | None = None, **kwargs: Any
    ) -> CheckedSyncVectorEnv:
        from gymnasium.envs.registration import load_env_creator

        cls = load_env_creator(entry_point)

        def one() -> gym.Env:
            env: gym.Env = cls(**kwargs)  # type: ignore[assignment]  # a single env class
            return TimeLimit(env, max_episode_steps) if max_episode_steps else env

        vec = CheckedSyncVectorEnv([one for _ in range(num_envs)], name)
        vec.name = str(getattr(vec.envs[0].unwrapped, "env_id", name))  # -v0 or -v1
        return vec

    return make


quadrotor_vector_env = _factory(
    "MetaSymQuadrotor-v0", "metasym_control.envs.quadrotor:QuadrotorEnv"
)
"""`make_vec("MetaSymQuadrotor-v0", n, **kwargs)`: a `CheckedSyncVectorEnv` of n quadrotors."""

spring_mesh_vector_env = _factory(
    "MetaSymSpringMesh", "metasym_control.envs.spring_mesh:SpringMeshEnv"
)
"""`make_vec("MetaSymSpringMesh-v1", n, **kwargs)`: a `CheckedSyncVectorEnv` of n meshes."""
