"""The one trajectory container: training data, adaptation data and users' logs."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TRAJECTORY_FORMAT_VERSION = 1


class FormatError(ValueError):
    """A file on disk is corrupt, truncated, of another kind or of another version."""


_META_KEYS = ("dt", "env_id", "params", "state_names", "state_units", "action_names", "meta")
"""The keys a trajectory file's JSON must hold."""


def trajectory_paths(path: str | Path) -> tuple[Path, Path]:
    """(`<stem>.npz`, `<stem>.json`) of a trajectory file given as either file or the stem."""
    base = Path(path)
    if base.suffix in (".npz", ".json"):
        base = base.with_suffix("")
    return base.with_suffix(".npz"), base.with_suffix(".json")


@dataclass
class Trajectory:
    """N trajectories of up to T transitions each, padded to a common length.

    Attributes:
        states: (N, T+1, nx) float64 states; entries past `lengths[i]` are padding (copies of
            the last valid state).
        actions: (N, T, nu) float64 normalised actions in [-1, 1]; padding past `lengths[i]`.
        lengths: (N,) int64 number of valid transitions of each trajectory.
        terminated: (N,) bool, whether each trajectory ended by termination (crash, flip)
            rather than by truncation.
        params: N dicts of the system parameters in force (`SystemParams.to_dict()`).
        dt: control period in seconds.
        env_id: Gymnasium id of the environment, version included (e.g. `MetaSymQuadrotor-v0`).
        state_names: nx column names; state_units: nx units.
        action_names: nu column names.
        meta: free-form JSON-ready extras (seed, split, policy).
    """

    states: np.ndarray
    actions: np.ndarray
    lengths: np.ndarray
    terminated: np.ndarray
    params: list[dict[str, Any]]
    dt: float
    env_id: str
    state_names: list[str] = field(default_factory=list)
    state_units: list[str] = field(default_factory=list)
    action_names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.states = np.asarray(self.states, dtype=np.float64)
        self.actions = np.asarray(self.actions, dtype=np.float64)
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        self.terminated = np.asarray(self.terminated, dtype=bool)
        if self.states.ndim != 3 or self.actions.ndim != 3:
            raise ValueError(
                f"Trajectory: states must be (N, T+1, nx) and actions (N, T, nu); got "
                f"{self.states.shape} and {self.actions.shape}"
            )
        n, t1, nx = self.states.shape
        if self.actions.shape[:2] != (n, t1 - 1):
            raise ValueError(
                f"Trajectory: actions {self.actions.shape} do not match states {self.states.shape}"
            )
        if self.lengths.shape != (n,) or self.terminated.shape != (n,):
            raise ValueError("Trajectory: lengths and terminated must be (N,)")
        if np.any(self.lengths < 0) or np.any(self.lengths > t1 - 1):
            raise ValueError(f"Trajectory: lengths must lie in [0, {t1 - 1}]")
        if len(self.params) != n:
            raise ValueError(f"Trajectory: {len(self.params)} parameter dicts for {n} trajectories")
        if self.state_names and len(self.state_names) != nx:
            raise ValueError(f"Trajectory: {len(self.state_names)} state names for nx={nx}")
        if not np.isfinite(self.dt) or self.dt <= 0:
            raise ValueError(f"Trajectory: dt must be > 0, got {self.dt}")
        self._check_finite()

    def _check_finite(self) -> None:
        """Refuse a NaN or infinity in the valid part (a model adapted on it would be NaN)."""
        steps = np.arange(self.states.shape[1])[None, :]
        bad_x = ~np.isfinite(self.states).all(axis=-1) & (steps <= self.lengths[:, None])
        bad_u = ~np.isfinite(self.actions).all(axis=-1) & self.valid_mask()
        for what, bad in (("state", bad_x), ("action", bad_u)):
            if bad.any():
                i, k = (int(v) for v in np.argwhere(bad)[0])
                raise ValueError(
                    f"Trajectory: non-finite {what} in trajectory {i} at step {k} "
                    f"({int(bad.sum())} such rows in all)"
                )

    @property
    def num(self) -> int:
        """N, the number of trajectories."""
        return int(self.states.shape[0])

    @property
    def horizon(self) -> int:
        """T, the padded number of transitions."""
        return int(self.actions.shape[1])

    @property
    def state_dim(self) -> int:
        """nx."""
        return int(self.states.shape[2])

    @property
    def action_dim(self) -> int:
        """nu."""
        return int(self.actions.shape[2])

    def valid_mask(self) -> np.ndarray:
        """(N, T) bool, True for each valid transition."""
        return np.arange(self.horizon)[None, :] < self.lengths[:, None]

    def subset(self, index: Sequence[int] | np.ndarray) -> Trajectory:
        """The trajectories at `index`, same metadata."""
        idx = np.asarray(index, dtype=np.int64)
        return Trajectory(
            states=self.states[idx],
            actions=self.actions[idx],
            lengths=self.lengths[idx],
            terminated=self.terminated[idx],
            params=[self.params[i] for i in idx],
            dt=self.dt,
            env_id=self.env_id,
            state_names=list(self.state_names),
            state_units=list(self.state_units),
            action_names=list(self.action_names),
            meta=dict(self.meta),
        )

    def window(self, start: int, length: int) -> Trajectory:
        """Transitions `start .. start+length` of every trajectory (lengths clipped)."""
        stop = min(start + length, self.horizon)
        lengths = np.clip(self.lengths - start, 0, stop - start)
        return Trajectory(
            states=self.states[:, start : stop + 1],
            actions=self.actions[:, start:stop],
            lengths=lengths,
            terminated=self.terminated & (self.lengths <= stop),
            params=list(self.params),
            dt=self.dt,
            env_id=self.env_id,
            state_names=list(self.state_names),
            state_units=list(self.state_units),
            action_names=list(self.action_names),
            meta=dict(self.meta),
        )

    @staticmethod
    def concatenate(parts: Sequence[Trajectory]) -> Trajectory:
        """Stack trajectories of one environment along N, padding to the longest."""
        if not parts:
            raise ValueError("Trajectory.concatenate needs at least one part")
        first = parts[0]
        for p in parts[1:]:
            if p.env_id != first.env_id or p.dt != first.dt or p.state_dim != first.state_dim:
                raise ValueError("Trajectory.concatenate: parts differ in env_id, dt or nx")
        t = max(p.horizon for p in parts)
        states, actions = [], []
        for p in parts:
            pad = t - p.horizon
            states.append(np.concatenate([p.states, np.repeat(p.states[:, -1:], pad, 1)], 1))
            actions.append(np.concatenate([p.actions, np.zeros((p.num, pad, p.action_dim))], 1))
        return Trajectory(
            states=np.concatenate(states),
            actions=np.concatenate(actions),
            lengths=np.concatenate([p.lengths for p in parts]),
            terminated=np.concatenate([p.terminated for p in parts]),
            params=[d for p in parts for d in p.params],
            dt=first.dt,
            env_id=first.env_id,
            state_names=list(first.state_names),
            state_units=list(first.state_units),
            action_names=list(first.action_names),
            meta=dict(first.meta),
        )

    def save(self, path: str | Path) -> Path:
        """Write `<path>.npz` (arrays) and `<path>.json` (metadata); returns the .npz path."""
        npath, jpath = trajectory_paths(path)
        npath.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            npath,
            states=self.states,
            actions=self.actions,
            lengths=self.lengths,
            terminated=self.terminated,
        )
        meta = {
            "kind": "metasym_control.Trajectory",
            "format_version": TRAJECTORY_FORMAT_VERSION,
            "env_id": self.env_id,
            "dt": self.dt,
            "params": self.params,
            "state_names": self.state_names,
            "state_units": self.state_units,
            "action_names": self.action_names,
            "meta": self.meta,
        }
        jpath.write_text(json.dumps(meta, indent=1))
        return npath

    @classmethod
    def load(cls, path: str | Path, env_id: str | None = None) -> Trajectory:
        """Read a trajectory written by `save`.

        Args:
            path: `.npz`, `.json` or the common stem.
            env_id: if given, the id (with version) the data must come from.

        Raises:
            FormatError: missing, corrupt or truncated files, another kind of file, another
                format version, or another environment id or version than `env_id`.
        """
        npath, jpath = trajectory_paths(path)
        try:
            meta = json.loads(jpath.read_text())
        except FileNotFoundError as e:
            raise FormatError(f"trajectory metadata {jpath} not found") from e
        except json.JSONDecodeError as e:
            raise FormatError(f"trajectory metadata {jpath} is corrupt: {e}") from e
        if meta.get("kind") != "metasym_control.Trajectory":
            raise FormatError(f"{jpath} is not a metasym_control trajectory file")
        if meta.get("format_version") != TRAJECTORY_FORMAT_VERSION:
            raise FormatError(
                f"{jpath}: trajectory format version {meta.get('format_version')}, this "
                f"library reads version {TRAJECTORY_FORMAT_VERSION}"
            )
        missing = [k for k in _META_KEYS if k not in meta]
        if missing:
            raise FormatError(f"{jpath}: trajectory metadata lacks the key(s) {', '.join(missing)}")
        if env_id is not None and meta["env_id"] != env_id:
            raise FormatError(f"{jpath}: data from {meta['env_id']}, expected {env_id}")
        try:
            with np.load(npath) as z:
                arrays = {k: z[k] for k in ("states", "actions", "lengths", "terminated")}
        except FileNotFoundError as e:
            raise FormatError(f"trajectory arrays {npath} not found") from e
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
            raise FormatError(f"trajectory arrays {npath} are corrupt or truncated: {e}") from e
        return cls(
            dt=float(meta["dt"]),
            env_id=str(meta["env_id"]),
            params=list(meta["params"]),
            state_names=list(meta["state_names"]),
            state_units=list(meta["state_units"]),
            action_names=list(meta["action_names"]),
            meta=dict(meta["meta"]),
            **arrays,
        )
