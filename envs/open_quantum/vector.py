"""`OpenQuantumVectorEnv`: B copies of the open-quantum env integrated as one numpy batch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from metasym_control.envs.open_quantum.env import OpenQuantumEnv, episode_params
from metasym_control.envs.open_quantum.params import ENV_ID, OpenQuantumParams
from metasym_control.envs.open_quantum.physics import (
    compact_observation,
    density_to_state,
    ground_density,
)
from metasym_control.envs.open_quantum.sme import SMEBatch


class OpenQuantumVectorEnv(VectorEnv):
    """`num_envs` independent copies of `OpenQuantumEnv`, integrated as one numpy batch.

    Served by `gymnasium.make_vec("MetaSymOpenQuantum-v0", num_envs=B)`. Each copy has its
    own parameters (drawn from `split` at each of its resets unless fixed by `params` or
    `reset(options={"params": p or [p_1..p_B]})`), its own noise and its own record.
    Next-step autoreset: after a copy is truncated (`max_episode_steps`), its next `step`
    ignores the action and returns its reset observation with reward 0. Info holds (B,)
    arrays `measurement`, `fidelity`, `purity`, `action_clipped`.

    Args:
        num_envs: B.
        max_episode_steps: truncation length of each copy.
        **env_kwargs: the keyword arguments of `OpenQuantumEnv` (system, n_levels, params,
            split, target, alpha, fock, effort_weight); render_mode must be None, as the
            vector env does not render.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012
        "render_modes": [],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int = 400,
        **env_kwargs: Any,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"{ENV_ID}: num_envs must be >= 1, got {num_envs}")
        # the single env renders, this batch does not: refuse rather than ignore the mode
        if env_kwargs.get("render_mode") is not None:
            raise ValueError(f"{ENV_ID}: the vector env does not render; render_mode must be None")
        self._proto = OpenQuantumEnv(**env_kwargs)
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(max_episode_steps)
        self.system = self._proto.system
        self.n = self._proto.n
        self.split = self._proto.split
        self.task = self._proto.task
        self._fixed_params: OpenQuantumParams | None = env_kwargs.get("params")
        self.single_observation_space = self._proto.observation_space
        self.single_action_space = self._proto.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = None
        self.params_list = [self._proto.params] * self.num_envs
        self.dt = self._proto.dt
        self._sim = SMEBatch(self.params_list)
        self._rho = np.repeat(ground_density(self.system, self.n)[None], self.num_envs, 0)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._last_dy = np.zeros(self.num_envs)
        self._records: list[list[np.ndarray]] = [[] for _ in range(self.num_envs)]

    def _draw(self, i: int, given: Any) -> OpenQuantumParams:
        p = given[i] if isinstance(given, (list, tuple)) else given
        return episode_params(
            p, self._fixed_params, self.np_random, self.split, self.system, self.n
        )

    def _reset_indices(self, idx: np.ndarray, given: Any = None) -> None:
        for i in idx:
            self.params_list[i] = self._draw(int(i), given)
            self._rho[i] = ground_density(self.system, self.n)
            self._steps[i] = 0
            self._last_dy[i] = 0.0
            self._records[i] = []
        self._sim = SMEBatch(self.params_list)

    def _obs(self) -> np.ndarray:
        comp = compact_observation(self._rho, self.system)
        return np.concatenate([comp, self._last_dy[:, None]], axis=1).astype(np.float64)

    def _fidelity(self) -> np.ndarray:
        return density_to_state(self._rho) @ self.task.target_state

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every copy; `seed` seeds the batch's one generator."""
        if seed is not None:
            if isinstance(seed, (list, tuple)):
                seed = int(seed[0])
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        given = (options or {}).get("params")
        if isinstance(given, (list, tuple)) and len(given) != self.num_envs:
            raise ValueError(f"{ENV_ID}: {len(given)} params for {self.num_envs} envs")
        self._reset_indices(np.arange(self.num_envs), given)
        self._autoreset[:] = False
        return self._obs(), {"fidelity": self._fidelity()}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every copy; actions (B, 2) in [-1, 1] (clipped, noted in info)."""
        try:
            a = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{ENV_ID}: actions {actions!r} are not numeric") from e
        if a.shape != (self.num_envs, 2):
            raise ValueError(f"{ENV_ID}: actions of shape {a.shape}, expected ({self.num_envs}, 2)")
        if not np.all(np.isfinite(a)):
            bad = np.where(~np.all(np.isfinite(a), axis=1))[0].tolist()
            raise ValueError(f"{ENV_ID}: non-finite actions in envs {bad}")
        u = np.clip(a, -1.0, 1.0)
        clipped = np.any(u != a, axis=1)
        # step every copy (the autoreset ones are overwritten below)
        h, s = self._sim.h, self._sim.substeps
        dw = self.np_random.normal(0.0, math.sqrt(h), size=(self.num_envs, s))
        self._rho, dys = self._sim.step(self._rho, u, dw)
        self._last_dy = dys.sum(axis=1)
        for i in range(self.num_envs):
            self._records[i].append(dys[i])
        self._steps += 1
        rewards = self._fidelity() - self.task.effort_weight * np.sum(u * u, axis=1)
        done = self._autoreset.copy()
        if np.any(done):
            self._reset_indices(np.where(done)[0])
            rewards[done] = 0.0
            clipped[done] = False
        truncated = (self._steps >= self.max_episode_steps) & ~done
        terminated = np.zeros(self.num_envs, dtype=bool)
        self._autoreset = truncated.copy()
        fid = self._fidelity()
        purity = np.einsum("bij,bji->b", self._rho, self._rho).real
        info = {
            "measurement": self._last_dy.copy(),
            "fidelity": fid,
            "purity": purity,
            "action_clipped": clipped,
        }
        return self._obs(), rewards, terminated, truncated, info

    def get_state(self) -> np.ndarray:
        """(B, 2N²) float64 states of every copy."""
        return density_to_state(self._rho)

    def measurement_record(self) -> list[np.ndarray]:
        """Per copy, the (T_i,) record increments dY of its current episode (√μs)."""
        return [np.asarray([d.sum() for d in r]) for r in self._records]
