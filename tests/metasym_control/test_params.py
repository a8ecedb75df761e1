"""Tests of the parameter base class, split ranges, the history window and benchmark sections."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from metasym_control.bench import markdown_table, write_section
from metasym_control.controller import History
from metasym_control.dynamics import AdaptBudget
from metasym_control.params import SplitRange, SystemParams, require_positive


@dataclass(frozen=True)
class _Pendulum(SystemParams):
    mass: float = 1.0
    length: float = 0.5
    pivot: tuple[float, float] = (0.0, 1.0)

    def validate(self) -> None:
        require_positive("_Pendulum", "mass", self.mass)
        require_positive("_Pendulum", "length", self.length)


def test_params_validate_and_name_the_field() -> None:
    with pytest.raises(ValueError, match="mass"):
        _Pendulum(mass=-1.0)
    with pytest.raises(ValueError, match="length"):
        _Pendulum().replace(length=float("nan"))


def test_params_dict_round_trip() -> None:
    p = _Pendulum(mass=2.0, pivot=(0.1, 0.2))
    assert _Pendulum.from_dict(p.to_dict()) == p
    np.testing.assert_allclose(p.as_vector(), [2.0, 0.5, 0.1, 0.2])
    with pytest.raises(ValueError, match="unknown"):
        _Pendulum.from_dict({"mass": 1.0, "colour": "red"})


def test_split_range_is_disjoint_and_samples_inside() -> None:
    r = SplitRange(train=(0.8, 1.2), test=((0.5, 0.7), (1.3, 1.6)))
    rng = np.random.default_rng(0)
    train = [r.sample(rng, "train") for _ in range(500)]
    test = [r.sample(rng, "test") for _ in range(500)]
    assert all(0.8 <= v <= 1.2 for v in train)
    assert all(r.contains(v, "test") and not r.contains(v, "train") for v in test)
    # both test intervals are used, in proportion to their length
    assert 0.25 < np.mean(np.asarray(test) < 1.0) < 0.55
    with pytest.raises(ValueError, match="overlaps"):
        SplitRange(train=(0.0, 1.0), test=((0.5, 2.0),))
    with pytest.raises(ValueError, match="split"):
        r.sample(rng, "val")  # type: ignore[arg-type]


def test_log_split_range() -> None:
    r = SplitRange(train=(1e-3, 1e-1), test=((1.0, 10.0),), log=True)
    rng = np.random.default_rng(1)
    v = np.array([r.sample(rng, "train") for _ in range(2000)])
    # log-uniform: half the draws below the geometric mean
    assert abs(np.mean(v < 1e-2) - 0.5) < 0.05


def test_history_keeps_latest_transitions_in_order() -> None:
    h = History(3, state_dim=2, action_dim=1)
    assert not h.valid.any()
    for k in range(5):
        h.push(np.full(2, k), np.full(1, 10 * k))
    np.testing.assert_array_equal(h.states[:, 0], [2, 3, 4])
    np.testing.assert_array_equal(h.actions[:, 0], [20, 30, 40])
    assert h.valid.all()
    h.reset()
    assert not h.valid.any()


def test_adapt_budget_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="lr"):
        AdaptBudget(lr=0.0)
    with pytest.raises(ValueError, match="optimizer"):
        AdaptBudget(optimizer="lbfgs")  # type: ignore[arg-type]


def test_write_section_replaces_only_its_own(tmp_path: Path) -> None:
    f = tmp_path / "B.md"
    write_section("a", "first A", f)
    write_section("b", markdown_table(["x", "y"], [[1, 2]]), f)
    write_section("a", "second A", f)
    text = f.read_text()
    assert "second A" in text and "first A" not in text
    assert "| 1 | 2 |" in text
    assert text.count("<!-- section:a -->") == 1
