"""Users' own logs (CSV, or the same columns as named arrays in an .npz) into trajectories.

A log is a table with a header: a time column `t` (s), the system's state columns (the
environment's `state_names`, in its units and frames), its action columns (normalised to
[-1, 1]; the quadrotor also takes rotor thrusts in N) and an optional integer `episode`
column. Everything is validated before anything is written (`LogError` names the column and
the row), then converted: a quaternion within 1e-3 of unit norm is renormalised (w >= 0),
roll-pitch-yaw becomes a quaternion, thrusts become normalised actions, and a log that is
regular at another rate is resampled to the model's control period. The schema of every
system is in docs/user_data.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metasym_control.params import SystemParams
from metasym_control.systems import SystemEntry, get_system
from metasym_control.trajectory import FormatError, Trajectory

TIME = "t"
EPISODE = "episode"
QUAT_TOL = 1e-3  # a quaternion further than this from unit norm is refused
JITTER_TOL = 0.1  # largest deviation of a time step from the median step, as a fraction
EULER = ("roll", "pitch", "yaw")
THRUSTS = ("f1", "f2", "f3", "f4")


class LogError(FormatError):
    """A user's log that cannot be used: the message names the column and the row."""


@dataclass(frozen=True)
class LogSchema:
    """The columns of one system's logs.

    Attributes:
        system: the registered system.
        state_columns: the state's columns in state order (the env's `state_names`).
        state_units: their units.
        action_columns: the normalised actions' columns (the env's `action_names`).
        env_id: the environment id the trajectories will carry.
        dt: the environment's control period, s.
    """

    system: str
    state_columns: tuple[str, ...]
    state_units: tuple[str, ...]
    action_columns: tuple[str, ...]
    env_id: str
    dt: float

    def alternatives(self) -> dict[str, tuple[str, ...]]:
        """Column groups that may replace a canonical group (quadrotor: orientation as
        roll-pitch-yaw instead of the quaternion, rotor thrusts in N instead of actions)."""
        if self.system != "quadrotor":
            return {}
        return {"qw qx qy qz": EULER, " ".join(self.action_columns): THRUSTS}

    def header(self) -> list[str]:
        """The canonical header: t, the state columns, the action columns, episode."""
        return [TIME, *self.state_columns, *self.action_columns, EPISODE]


def schema_for(system: str | SystemEntry) -> LogSchema:
    """The log schema of a registered system (from its environment's names and units)."""
    entry = get_system(system) if isinstance(system, str) else system
    env = entry.make_env()
    base = env.unwrapped
    schema = LogSchema(
        system=entry.name,
        state_columns=tuple(base.state_names),
        state_units=tuple(base.state_units),
        action_columns=tuple(base.action_names),
        env_id=str(base.env_id or entry.env_id),
        dt=float(base.dt),
    )
    env.close()
    return schema


# --- reading ----------------------------------------------------------------------------------


def _read_table(path: Path) -> tuple[dict[str, np.ndarray], int]:
    """Columns (name -> (rows,) float64) and the number of rows of a CSV or named .npz."""
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                cols = {k: np.asarray(z[k], dtype=np.float64).reshape(-1) for k in z.files}
        except (OSError, ValueError) as e:
            raise LogError(f"{path}: not a readable .npz of named columns: {e}") from e
    elif path.suffix == ".csv":
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise LogError(f"{path}: cannot be read as text: {e}") from e
        if not lines:
            raise LogError(f"{path}: empty file (a header naming the columns is required)")
        names = [c.strip() for c in lines[0].split(",")]
        if any(not n or n[0].isdigit() or n[0] in "+-." for n in names):
            raise LogError(f"{path}: line 1 must be a header naming the columns, got {lines[0]!r}")
        if len(set(names)) != len(names):
            raise LogError(f"{path}: repeated column names in the header {names}")
        rows = []
        for i, line in enumerate(lines[1:], start=1):
            if not line.strip():
                continue
            cells = line.split(",")
            if len(cells) != len(names):
                raise LogError(
                    f"{path}: row {i} (line {i + 1}) has {len(cells)} values for "
                    f"{len(names)} columns"
                )
            try:
                rows.append([float(c) for c in cells])
            except ValueError as e:
                raise LogError(f"{path}: row {i} (line {i + 1}): {e}") from e
        data = np.asarray(rows, dtype=np.float64).reshape(-1, len(names))
        cols = {n: data[:, j] for j, n in enumerate(names)}
    else:
        raise LogError(
            f"{path}: a log is a .csv or an .npz of named columns (see docs/user_data.md)"
        )
    n = {len(v) for v in cols.values()}
    if len(n) != 1:
        raise LogError(f"{path}: columns of different lengths {sorted(n)}")
    return cols, n.pop()


def _choose(
    cols: dict[str, np.ndarray], canonical: tuple[str, ...], alt: tuple[str, ...] | None, path: Path
) -> tuple[str, ...]:
    """Which of a canonical column group and its alternative the log holds (refusing both
    and neither)."""
    has_c = [c in cols for c in canonical]
    has_a = [c in cols for c in alt] if alt else [False]
    if all(has_c) and not any(has_a):
        return canonical
    if alt and all(has_a) and not any(has_c):
        return alt
    missing = [c for c, h in zip(canonical, has_c, strict=True) if not h]
    extra = f" (or {', '.join(alt)})" if alt else ""
    if any(has_c) and alt and any(has_a):
        raise LogError(f"{path}: give either {', '.join(canonical)} or {', '.join(alt)}, not both")
    raise LogError(f"{path}: missing column(s) {', '.join(missing)}{extra}")


def _first_bad(mask: np.ndarray) -> int:
    """1-based data row of the first True in a (rows,) mask."""
    return int(np.argmax(mask)) + 1


def _quat_from_euler(roll: np.ndarray, pitch: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(rows, 4) w-x-y-z quaternions of Z-Y-X (yaw first) Euler angles, rad."""
    cr, sr = np.cos(roll / 2), np.sin(roll / 2)
    cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
    cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
    return np.stack(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ],
        axis=1,
    )


def _resample(t: np.ndarray, x: np.ndarray, u: np.ndarray, dt: float) -> tuple[np.ndarray, ...]:
    """States linearly interpolated and actions held (zero order) on t0 + k dt."""
    grid = t[0] + dt * np.arange(math.floor((t[-1] - t[0]) / dt + 1e-9) + 1)
    xs = np.stack([np.interp(grid, t, x[:, j]) for j in range(x.shape[1])], axis=1)
    idx = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, len(t) - 1)
    return grid, xs, u[idx]


def read_log(
    path: str | Path,
    system: str,
    params: SystemParams | None = None,
    dt: float | None = None,
    min_samples: int = 2,
) -> Trajectory:
    """Read, validate and convert a user's log into a `Trajectory`.

    Args:
        path: a `.csv` with a header, or an `.npz` of named (rows,) arrays.
        system: the registered system the log comes from.
        params: the system's parameters where known (thrust range of the quadrotor's `f1..f4`
            columns, the physical range check); None: the nominal ones.
        dt: the model's control period, s (None: the environment's); a log regular at another
            rate is resampled to it.
        min_samples: samples each episode needs after resampling (the model's history
            window plus the steps it predicts).

    Returns:
        One trajectory per episode, `meta["source"]` = the file.

    Raises:
        LogError: naming the column and the row: a missing or unknown column, a non-finite
            value, a time column that does not increase or is irregular (a step more than 10%
            from the median), a quaternion further than 1e-3 from unit norm, a value outside
            its component's physical range (e.g. positions in mm), too few samples.
    """
    path = Path(path)
    entry = get_system(system)
    schema = schema_for(entry)
    p = params or entry.nominal_params()
    dt = float(dt or schema.dt)
    cols, n_rows = _read_table(path)

    # columns: required, alternatives, unknown
    alts = schema.alternatives()
    quat = ("qw", "qx", "qy", "qz")
    if TIME not in cols:
        raise LogError(f"{path}: missing column {TIME!r} (time, s)")
    orient: tuple[str, ...] = ()
    if system == "quadrotor":
        orient = _choose(cols, quat, EULER, path)
    state_cols = [c for c in schema.state_columns if c not in quat or orient == quat]
    missing = [c for c in state_cols if c not in cols]
    if missing:
        raise LogError(f"{path}: missing state column(s) {', '.join(missing)}")
    act_alt = alts.get(" ".join(schema.action_columns))
    actions = _choose(cols, schema.action_columns, act_alt, path)
    known = {TIME, EPISODE, *state_cols, *orient, *actions}
    unknown = sorted(set(cols) - known)
    if unknown:
        raise LogError(
            f"{path}: unknown column(s) {', '.join(unknown)}; expected {', '.join(schema.header())}"
            " (docs/user_data.md)"
        )
    if n_rows < min_samples:
        raise LogError(f"{path}: {n_rows} rows, at least {min_samples} needed (history + steps)")

    # values: finite, in range
    for name in [TIME, *state_cols, *orient, *actions, *([EPISODE] if EPISODE in cols else [])]:
        bad = ~np.isfinite(cols[name])
        if bad.any():
            raise LogError(f"{path}: column {name!r} row {_first_bad(bad)}: non-finite value")
    if orient == quat:
        norm = np.sqrt(sum(cols[c] ** 2 for c in quat))
        bad = np.abs(norm - 1.0) > QUAT_TOL
        if bad.any():
            r = _first_bad(bad)
            raise LogError(
                f"{path}: columns qw..qz row {r}: quaternion norm {norm[r - 1]:.6f}, more than "
                f"{QUAT_TOL:g} from 1"
            )
    if actions == THRUSTS:
        lo_f, hi_f = float(p.min_thrust), float(p.max_thrust)  # type: ignore[attr-defined]
        a = np.stack([(cols[c] - lo_f) / (hi_f - lo_f) * 2.0 - 1.0 for c in THRUSTS], axis=1)
    else:
        a = np.stack([cols[c] for c in actions], axis=1)
    for j, name in enumerate(actions):
        bad = np.abs(a[:, j]) > 1.0 + 1e-9
        if bad.any():
            r = _first_bad(bad)
            what = "thrust outside the vehicle's range" if actions == THRUSTS else "outside [-1, 1]"
            raise LogError(f"{path}: column {name!r} row {r}: {cols[name][r - 1]:g} is {what}")

    # the state in the environment's layout
    if system == "quadrotor":
        q = (
            np.stack([cols[c] for c in quat], axis=1)
            if orient == quat
            else _quat_from_euler(*(cols[c] for c in EULER))
        )
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        q *= np.where(q[:, :1] < 0, -1.0, 1.0)  # w >= 0
        values = {c: cols[c] for c in state_cols if c not in quat}
        values.update({c: q[:, k] for k, c in enumerate(quat)})
    else:
        values = {c: cols[c] for c in state_cols}
    x = np.stack([values[c] for c in schema.state_columns], axis=1)
    lo, hi = entry.state_range(p)
    for j, name in enumerate(schema.state_columns):
        bad = (x[:, j] < lo[j]) | (x[:, j] > hi[j])
        if bad.any():
            r = _first_bad(bad)
            raise LogError(
                f"{path}: column {name!r} row {r}: {x[r - 1, j]:g} {schema.state_units[j]} is "
                f"outside its physical range [{lo[j]:g}, {hi[j]:g}] (another unit, e.g. mm?)"
            )

    # episodes: increasing, regular time; resampled to dt
    ep = cols.get(EPISODE, np.zeros(n_rows))
    if np.any(ep != np.round(ep)):
        raise LogError(
            f"{path}: column 'episode' row {_first_bad(ep != np.round(ep))}: not an integer"
        )
    trajs: list[tuple[np.ndarray, np.ndarray]] = []
    for e in dict.fromkeys(ep.tolist()):
        rows = np.flatnonzero(ep == e)
        t = cols[TIME][rows]
        steps = np.diff(t)
        bad = steps <= 0
        if bad.any():
            r = int(rows[np.argmax(bad) + 1]) + 1
            raise LogError(f"{path}: column 't' row {r}: time does not increase")
        if steps.size:
            med = float(np.median(steps))
            jitter = np.abs(steps - med) > JITTER_TOL * med
            if jitter.any():
                r = int(rows[np.argmax(jitter) + 1]) + 1
                raise LogError(
                    f"{path}: column 't' row {r}: irregular time step {steps[np.argmax(jitter)]:g}"
                    f" s against the median {med:g} s (more than {JITTER_TOL:.0%} off)"
                )
            if not math.isclose(med, dt, rel_tol=1e-6):
                t, xs, us = _resample(t, x[rows], a[rows], dt)
            else:
                xs, us = x[rows], a[rows]
        else:
            xs, us = x[rows], a[rows]
        if system == "quadrotor":
            xs = xs.copy()
            xs[:, 3:7] /= np.linalg.norm(xs[:, 3:7], axis=1, keepdims=True)
        if len(xs) < min_samples:
            raise LogError(
                f"{path}: episode {int(e)} has {len(xs)} samples at dt = {dt:g} s, at least "
                f"{min_samples} needed (the model's history window plus the steps it predicts)"
            )
        trajs.append((xs, us))
    return _to_trajectory(trajs, schema, p, dt, path)


def _to_trajectory(
    trajs: list[tuple[np.ndarray, np.ndarray]],
    schema: LogSchema,
    params: SystemParams,
    dt: float,
    path: Path,
) -> Trajectory:
    """Pad episodes (states (n_i, nx), actions (n_i, nu); the last action unused)."""
    t_max = max(len(xs) for xs, _ in trajs) - 1
    nx, nu = len(schema.state_columns), len(schema.action_columns)
    states = np.zeros((len(trajs), t_max + 1, nx))
    actions = np.zeros((len(trajs), t_max, nu))
    lengths = np.zeros(len(trajs), dtype=np.int64)
    for i, (xs, us) in enumerate(trajs):
        n = len(xs) - 1
        states[i, : n + 1], states[i, n + 1 :] = xs, xs[-1]
        actions[i, :n] = us[:n]
        lengths[i] = n
    return Trajectory(
        states=states,
        actions=actions,
        lengths=lengths,
        terminated=np.zeros(len(trajs), dtype=bool),
        params=[params.to_dict()] * len(trajs),
        dt=dt,
        env_id=schema.env_id,
        state_names=list(schema.state_columns),
        state_units=list(schema.state_units),
        action_names=list(schema.action_columns),
        meta={"source": str(path), "system": schema.system},
    )


def is_log(path: str | Path) -> bool:
    """Whether `path` is a user's log (a .csv, or an .npz without the trajectory JSON)."""
    path = Path(path)
    if path.suffix == ".csv":
        return True
    return path.suffix == ".npz" and not path.with_suffix(".json").exists()


# --- writing ---------------------------------------------------------------------------------


def write_log(path: str | Path, traj: Trajectory, system: str) -> Path:
    """Write trajectories as a CSV log in the system's canonical schema (t, states, actions,
    episode; the last sample of an episode repeats its last action).

    Args:
        path: the .csv to write.
        traj: trajectories of the system.
        system: the registered system.

    Returns:
        The path written.
    """
    schema = schema_for(system)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(traj.num):
        n = int(traj.lengths[i])
        for k in range(n + 1):
            u = traj.actions[i, min(k, n - 1)] if n > 0 else np.zeros(traj.action_dim)
            rows.append([k * traj.dt, *traj.states[i, k], *u, i])
    header = ",".join(schema.header())
    body = "\n".join(",".join(f"{v:.10g}" for v in row) for row in rows)
    path.write_text(header + "\n" + body + "\n")
    return path


def fit_report(
    model: Any, adapted: Any, tail: Trajectory, horizons: tuple[int, ...] = (1, 50)
) -> dict[str, Any]:
    """Open-loop error on the held-out tail before and after adapting, in state-std units.

    Returns:
        {"horizons": [...], "before": [...], "after": [...], "hold": [...]} (None where the
        tail is too short for a horizon).
    """
    from metasym_control.model_error import constant_error, rollout_error

    out: dict[str, Any] = {"horizons": list(horizons), "before": [], "after": [], "hold": []}
    longest = int(tail.lengths.max()) - int(getattr(model, "history_len", 0))
    for h in horizons:
        if h > longest:
            for k in ("before", "after", "hold"):
                out[k].append(None)
            continue
        out["before"].append(rollout_error(model, tail, h))
        out["after"].append(rollout_error(adapted, tail, h))
        out["hold"].append(constant_error(model, tail, h))
    return out


def split_tail(
    traj: Trajectory, fraction: float = 0.2, min_tail: int = 0, min_head: int = 1
) -> tuple[Trajectory, Trajectory]:
    """(head, tail) of every episode: the tail held out for the fit report.

    The tail is the last `fraction` of the transitions, or `min_tail` of them if that is
    more (a 50-step error needs the history window plus 50 steps), as long as `min_head`
    transitions stay in the head.
    """
    heads, tails = [], []
    for i in range(traj.num):
        n = int(traj.lengths[i])
        tail = max(round(n * fraction), min_tail)
        cut = max(min(n - tail, n - 1), min(min_head, n - 1), 1)
        heads.append((traj.states[i, : cut + 1], traj.actions[i, :cut]))
        tails.append((traj.states[i, cut : n + 1], traj.actions[i, cut:n]))

    def build(parts: list[tuple[np.ndarray, np.ndarray]]) -> Trajectory:
        t_max = max(len(u) for _, u in parts)
        states = np.stack(
            [np.concatenate([x, np.repeat(x[-1:], t_max + 1 - len(x), 0)]) for x, _ in parts]
        )
        actions = np.stack(
            [np.concatenate([u, np.zeros((t_max - len(u), u.shape[1]))]) for _, u in parts]
        )
        return Trajectory(
            states=states,
            actions=actions,
            lengths=np.array([len(u) for _, u in parts]),
            terminated=np.zeros(len(parts), dtype=bool),
            params=list(traj.params),
            dt=traj.dt,
            env_id=traj.env_id,
            state_names=traj.state_names,
            state_units=traj.state_units,
            action_names=traj.action_names,
            meta=dict(traj.meta),
        )

    return build(heads), build(tails)


def params_from_file(path: str | Path, system: str) -> SystemParams:
    """The system's parameters from a JSON file of `SystemParams.to_dict()` fields (missing
    fields take the nominal values)."""
    entry = get_system(system)
    nominal = entry.nominal_params()
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LogError(f"{path}: cannot read the parameters: {e}") from e
    return type(nominal).from_dict({**nominal.to_dict(), **data})
