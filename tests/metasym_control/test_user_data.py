"""Users' logs: the example file and a closed-loop export are read, every kind of bad file is
refused naming the column and the row, and `adapt --data log.csv` reports its fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metasym_control.envs.quadrotor.params import QuadrotorParams
from metasym_control.generate import generate_data
from metasym_control.user_data import LogError, read_log, write_log

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "quadrotor_log.csv"


def _table(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    return lines[0].split(","), np.array([[float(c) for c in ln.split(",")] for ln in lines[1:]])


def _write(path: Path, names: list[str], rows: np.ndarray) -> Path:
    body = "\n".join(",".join(f"{v:.10g}" for v in r) for r in rows)
    path.write_text(",".join(names) + "\n" + body + "\n")
    return path


def test_example_file_reads_into_the_state_and_action_layout() -> None:
    traj = read_log(EXAMPLE, "quadrotor")
    assert traj.num == 2 and list(traj.lengths) == [150, 150]
    assert traj.env_id == "MetaSymQuadrotor-v0" and traj.dt == pytest.approx(0.02)
    q = traj.states[:, :, 3:7]
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    assert np.all(q[..., 0] >= 0)


@pytest.mark.parametrize("system", ["quadrotor", "spring_mesh", "quantum"])
def test_written_logs_read_back_exactly(tmp_path: Path, system: str) -> None:
    data = generate_data(system, 1, 2, 20, "test", seed=11)
    back = read_log(write_log(tmp_path / "log.csv", data, system), system)
    m = data.valid_mask()
    np.testing.assert_allclose(back.states[:, :-1][m], data.states[:, :-1][m], atol=1e-8)
    np.testing.assert_allclose(back.actions[m], data.actions[m], atol=1e-9)


def test_euler_angles_thrusts_and_another_rate_are_converted(tmp_path: Path) -> None:
    names, rows = _table(EXAMPLE)
    rows = rows[rows[:, -1] == 0]
    col = {n: j for j, n in enumerate(names)}
    q = rows[:, [col[c] for c in ("qw", "qx", "qy", "qz")]]
    w, x, y, z = q.T
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1, 1))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    p = QuadrotorParams()
    thrust = p.min_thrust + (rows[:, [col[f"a{i}"] for i in range(1, 5)]] + 1) / 2 * (
        p.max_thrust - p.min_thrust
    )
    keep = [n for n in names if n not in ("qw", "qx", "qy", "qz", "a1", "a2", "a3", "a4")]
    new_names = [*keep, "roll", "pitch", "yaw", "f1", "f2", "f3", "f4"]
    new = np.column_stack([rows[:, [col[n] for n in keep]], roll, pitch, yaw, thrust])
    a = read_log(EXAMPLE, "quadrotor")
    b = read_log(_write(tmp_path / "rpy.csv", new_names, new), "quadrotor")
    np.testing.assert_allclose(b.states[0], a.states[0], atol=1e-8)
    np.testing.assert_allclose(b.actions[0], a.actions[0], atol=1e-8)
    # logged at twice the rate (every other row dropped gives 0.04 s): resampled to 0.02 s
    slow = read_log(_write(tmp_path / "slow.csv", names, rows[::2]), "quadrotor")
    assert slow.dt == pytest.approx(0.02) and slow.lengths[0] == 150
    np.testing.assert_allclose(slow.states[0, ::2, :3], a.states[0, ::2, :3], atol=1e-9)


def _bad_cases() -> list[tuple[str, str]]:
    return [
        ("missing", r"missing state column\(s\) vx"),
        ("unknown", r"unknown column\(s\) pressure"),
        ("nan", r"column 'pz' row 5: non-finite"),
        ("backwards", r"column 't' row 7: time does not increase"),
        ("jitter", r"column 't' row 9: irregular time step"),
        ("quaternion", r"columns qw..qz row 3: quaternion norm"),
        ("millimetres", r"column 'px' row 1: .* outside its physical range .*mm"),
        ("short", r"at least 10 needed"),
    ]


@pytest.mark.parametrize(("kind", "message"), _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_logs_are_refused_naming_column_and_row(
    tmp_path: Path, kind: str, message: str
) -> None:
    names, rows = _table(EXAMPLE)
    rows = rows[rows[:, -1] == 0][:40].copy()
    col = {n: j for j, n in enumerate(names)}
    if kind == "missing":
        names, rows = [n for n in names if n != "vx"], np.delete(rows, col["vx"], axis=1)
    elif kind == "unknown":
        names, rows = [*names, "pressure"], np.column_stack([rows, np.ones(len(rows))])
    elif kind == "nan":
        rows[4, col["pz"]] = np.nan
    elif kind == "backwards":
        rows[6, col["t"]] = rows[5, col["t"]]
    elif kind == "jitter":
        rows[8:, col["t"]] += 0.005
    elif kind == "quaternion":
        rows[2, col["qw"]] *= 1.01
    elif kind == "millimetres":
        rows[:, col["px"]] *= 1000.0
        rows[:, col["px"]] += 5000.0
    elif kind == "short":
        rows = rows[:5]
    path = _write(tmp_path / f"{kind}.csv", names, rows)
    with pytest.raises(LogError, match=message):
        read_log(path, "quadrotor", min_samples=10)


def test_adapt_on_a_log_reports_its_fit_and_refuses_bad_ones(tmp_path: Path) -> None:
    out = tmp_path / "adapted"
    cmd = [sys.executable, "-m", "metasym_control.cli", "adapt", "--data", str(EXAMPLE)]
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1-step error on the held-out tail" in proc.stdout
    fit = json.loads(out.with_suffix(".json").read_text())["training"]["fit"]
    assert fit["horizons"] == [1, 50]
    assert fit["after"][0] < fit["hold"][0]  # fitted: better than holding the state
    # a NaN in the log: one line naming column and row, exit 2, nothing written
    names, rows = _table(EXAMPLE)
    rows[3, names.index("vz")] = np.nan
    bad = _write(tmp_path / "bad.csv", names, rows)
    proc = subprocess.run(
        [*cmd[:-1], str(bad), "--out", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "column 'vz' row 4: non-finite" in proc.stderr
    assert not (tmp_path / "x.json").exists()
