"""Physical-parameter dataclasses that validate themselves, and train/test samplers."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal, TypeVar

import numpy as np

Split = Literal["train", "test"]
P = TypeVar("P", bound="SystemParams")


@dataclass(frozen=True)
class SystemParams:
    """Base of every environment's frozen parameter dataclass.

    Subclasses declare their fields with defaults and override `validate`, which runs on
    construction and raises `ValueError` naming the offending field. One parameter set is
    one system, i.e. one *task* of meta-learning.
    """

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the field if the parameters are not physical."""

    def replace(self: P, **changes: Any) -> P:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: tuples become lists, numpy scalars become floats."""
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[P], data: Mapping[str, Any]) -> P:
        """Inverse of `to_dict`; unknown keys raise `ValueError`."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        kwargs = {k: _from_json(v) for k, v in data.items()}
        return cls(**kwargs)

    def as_vector(self) -> np.ndarray:
        """Flat float64 vector of every numeric field, in field order (for logs and tables)."""
        out: list[float] = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool):
                out.append(float(v))
            elif isinstance(v, (int, float)):
                out.append(float(v))
            elif isinstance(v, (tuple, list)):
                out.extend(float(x) for x in np.ravel(np.asarray(v, dtype=float)))
        return np.asarray(out, dtype=np.float64)


def jsonable(v: Any) -> Any:
    """`v` with tuples, arrays, numpy scalars and paths made JSON-ready (dicts recursively)."""
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, PurePath):
        return str(v)
    return v


def _from_json(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_from_json(x) for x in v)
    return v


def require_positive(owner: str, name: str, value: float) -> None:
    """Raise `ValueError` unless `value` is finite and > 0."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}.{name} must be finite and > 0, got {value!r}")


def require_nonnegative(owner: str, name: str, value: float) -> None:
    """Raise `ValueError` unless `value` is finite and >= 0."""
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{owner}.{name} must be finite and >= 0, got {value!r}")


def require_in_range(owner: str, name: str, value: float, low: float, high: float) -> None:
    """Raise `ValueError` unless `low <= value <= high`."""
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{owner}.{name} must lie in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class SplitRange:
    """A scalar's sampling range: one `train` interval and disjoint `test` intervals.

    Attributes:
        train: (low, high) of the training range.
        test: intervals of the held-out range; none may overlap `train`, so held-out systems
            are really unseen.
        log: sample uniformly in log space (for scales and rates spanning decades).
    """

    train: tuple[float, float]
    test: tuple[tuple[float, float], ...]
    log: bool = False

    def __post_init__(self) -> None:
        lo, hi = self.train
        if not lo <= hi:
            raise ValueError(f"SplitRange.train must be (low, high) with low <= high: {self.train}")
        for a, b in self.test:
            if not a <= b:
                raise ValueError(f"SplitRange.test interval must have low <= high: {(a, b)}")
            if a < hi and b > lo and not (a == b == lo or a == b == hi):
                raise ValueError(f"SplitRange.test interval {(a, b)} overlaps train {self.train}")
        if self.log and (lo <= 0 or any(a <= 0 for a, _ in self.test)):
            raise ValueError("SplitRange with log=True needs positive bounds")

    def sample(self, rng: np.random.Generator, split: Split) -> float:
        """One draw from the `split` range (test: interval chosen by its length)."""
        if split == "train":
            intervals: Sequence[tuple[float, float]] = [self.train]
        elif split == "test":
            if not self.test:
                intervals = [self.train]
            else:
                intervals = self.test
        else:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if self.log:
            spans = [math.log(b) - math.log(a) for a, b in intervals]
        else:
            spans = [b - a for a, b in intervals]
        total = sum(spans)
        if total <= 0:
            idx = int(rng.integers(len(intervals)))
        else:
            idx = int(rng.choice(len(intervals), p=np.asarray(spans) / total))
        a, b = intervals[idx]
        if self.log:
            return float(math.exp(rng.uniform(math.log(a), math.log(b))))
        return float(rng.uniform(a, b))

    def contains(self, value: float, split: Split) -> bool:
        """Whether `value` lies in the `split` range."""
        intervals = [self.train] if split == "train" else list(self.test)
        return any(a <= value <= b for a, b in intervals)
