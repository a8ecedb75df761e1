"""Every subcommand refuses a bad option with one line that names the flag, exit code 2, no
traceback and nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# (arguments, what the message must name); OUT is replaced by a fresh output path
CASES = [
    (["demo", "--seconds", "-1"], "--seconds must be > 0"),
    (["demo", "--support-seconds", "-1"], "--support-seconds must be > 0"),
    (["demo", "--samples", "0"], "--samples must be >= 1"),
    (["demo", "--video-every", "0"], "--video-every must be >= 1"),
    (["demo", "--env", "nope"], "--env must be one of"),
    (["demo", "--checkpoint", "missing/ck"], "--checkpoint must be an existing checkpoint"),
    (["generate", "--n-tasks", "0"], "--n-tasks must be >= 1"),
    (["generate", "--env", "nope"], "--env must be one of"),
    (["train", "--train.steps", "0"], "--train.steps must be >= 1"),
    (["train", "--episodes", "0"], "--episodes must be >= 1"),
    (["adapt", "--data", "missing.npz"], "--data must be an existing trajectory file"),
    (["eval", "--horizons", "-1"], "--horizons must be >= 1"),
    (["eval", "--test-systems", "1"], "--test-systems must be >= 2"),
    (["eval", "--models", "nope"], "--models must be among"),
    (["eval", "--shots", "0"], "--shots must be >= 1"),
    (["few-shot", "--seeds", "0"], "--seeds must be >= 1"),
    (["experiment", "--systems", "0"], "--systems must be >= 1"),
    (["experiment", "--envs", "nope"], "--envs must be systems of"),
    (["train-default", "--meta-steps", "0"], "--meta-steps must be >= 1"),
    (["demo", "--env", "spring_mesh", "--task", "loop"], "--task must be one of"),
    (["experiment", "--envs", "spring_mesh", "--task", "loop"], "--task must be one of"),
    (["adapt", "--data", "log.csv", "--tail", "1.5"], "--data must be an existing"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_option_is_one_line_exit_2_nothing_written(
    args: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out_flag = [] if args[0] == "train-default" else ["--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "metasym_control.cli", *args, *out_flag],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "outputs").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "metasym_control.cli", "demo", "--samples", "0", "--debug"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "UsageError" in proc.stderr


@pytest.mark.parametrize("command", ["demo", "adapt"])
def test_a_corrupt_checkpoint_is_one_line_and_leaves_nothing(command: str, tmp_path: Path) -> None:
    from metasym_control.weights import weights_stem

    stem = weights_stem("quantum")
    (tmp_path / "ck.json").write_text(stem.with_suffix(".json").read_text())
    (tmp_path / "ck.safetensors").write_bytes(stem.with_suffix(".safetensors").read_bytes()[:999])
    out = tmp_path / "out"
    extra = ["--data", str(tmp_path / "ck.json")] if command == "adapt" else []
    proc = subprocess.run(
        [sys.executable, "-m", "metasym_control.cli", command, "--checkpoint",
         str(tmp_path / "ck"), "--out", str(out), *extra],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt or truncated" in lines[0], proc.stderr
    assert not out.exists() and not out.with_suffix(".json").exists()
