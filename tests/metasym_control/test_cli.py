"""Every `metasym-control` subcommand runs end to end at a tiny size and writes what it says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli

from metasym_control.checkpoint import load_checkpoint
from metasym_control.envs.toy_oscillator import oscillator_family

# a meta-training run of a few steps: enough to exercise every stage, not to learn
TINY_TRAIN = ["--train.steps", "3", "--train.meta-batch", "2", "--train.support-episodes", "1"]


def test_console_script_lists_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "metasym_control.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = (
        "demo",
        "generate",
        "train",
        "adapt",
        "train-default",
        "eval",
        "few-shot",
        "experiment",
    )
    for name in names:
        assert name in out


def test_train_then_adapt_on_the_toy_family(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "train"
    run_cli(
        monkeypatch,
        "train",
        "--env", "toy",
        "--model", "mlp",
        "--n-tasks", "3",
        "--episodes", "2",
        "--steps-per-episode", "20",
        "--out", str(out),
        "--no-progress",
        *TINY_TRAIN,
    )  # fmt: skip
    model, meta = load_checkpoint(out / "checkpoint")
    assert type(model).__name__ == "MLPModel"
    assert meta["env_id"].startswith("ToyOscillator-v")
    log = json.loads((out / "log.json").read_text())
    assert log[-1]["step"] == 3 and np.isfinite(log[-1]["loss"])

    # adapt the trained checkpoint to a held-out oscillator's trajectory file
    support = oscillator_family(1, 2, 20, "test", seed=5)[0]
    data = tmp_path / "support"
    support.save(data)
    adapted_stem = tmp_path / "adapted"
    run_cli(
        monkeypatch,
        "adapt",
        "--checkpoint", str(out / "checkpoint"),
        "--data", str(data) + ".npz",
        "--out", str(adapted_stem),
        "--budget.inner-steps", "5",
    )  # fmt: skip
    adapted, _ = load_checkpoint(adapted_stem)
    fast = model.fast_weight_names()
    before = dict(model.named_parameters())
    after = dict(adapted.named_parameters())
    assert any(not np.allclose(before[n].detach(), after[n].detach()) for n in fast)


def test_train_default_writes_a_loadable_metasym(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stem = tmp_path / "weights"
    run_cli(
        monkeypatch,
        "train-default",
        "--out", str(stem),
        "--n-tasks", "2",
        "--episodes", "2",
        "--steps-per-episode", "20",
        "--meta-steps", "2",
    )  # fmt: skip
    model, meta = load_checkpoint(stem / "metasym_quadrotor")
    assert type(model).__name__ == "MetaSym"
    assert meta["system"] == "quadrotor"
    assert meta["training"]["recipe"] == "train-default"
    assert meta["training"]["args"]["train"]["steps"] == 2


def test_eval_prints_its_command_and_tables_and_writes_results_and_plots(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ev"
    args = [
        "eval", "--env", "toy", "--quick", "--models", "mlp", "metasym",
        "--test-systems", "2", "--shots", "1", "--horizons", "1", "5",
        "--meta-steps", "2", "--n-tasks", "3", "--out", str(out),
    ]  # fmt: skip
    run_cli(monkeypatch, *args)
    printed = capsys.readouterr().out
    assert "Command: `metasym-control " + " ".join(args) + "`" in printed
    assert "| next state = state |" in printed and "| training mean state |" in printed
    assert "| mlp, 1-shot |" in printed and "| metasym, 1-shot |" in printed
    result = json.loads((out / "toy" / "results.json").read_text())
    assert {r["model"] for r in result["rows"]} >= {"mlp", "metasym"}
    for name in ("errors_vs_horizon.png", "errors_vs_shots.png", "tables.md"):
        assert (out / "toy" / name).stat().st_size > 0


@pytest.mark.slow
def test_demo_flies_every_controller_and_writes_its_outputs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    run_cli(
        monkeypatch,
        "demo",
        "--seconds", "0.4",
        "--support-seconds", "0.6",
        "--samples", "32",
        "--horizon", "5",
        "--video-every", "5",
        "--out", str(out),
    )  # fmt: skip
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    names = list(summary["runs"])
    assert names[0] == "cascaded PD (nominal)"
    assert any("MetaSym" in n for n in names) and any("oracle" in n for n in names)
    for name, run in summary["runs"].items():
        assert run["steps"] == 20, name
        assert np.isfinite(run["rmse_m"]) and not run["terminated"], name
        assert name in printed
    for f in ("figure8.png", "table.md", "metasym_flight.mp4", "metasym_flight.gif"):
        assert (out / f).stat().st_size > 0, f
