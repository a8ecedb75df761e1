"""Toy oscillator parameters, their train/test ranges, sampler and exact discretisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.linalg import expm

from metasym_control.params import (
    Split,
    SplitRange,
    SystemParams,
    require_nonnegative,
    require_positive,
)

TOY_ENV_ID = "ToyOscillator-v0"
TOY_DT = 0.1


@dataclass(frozen=True)
class OscillatorParams(SystemParams):
    """One damped, driven oscillator: m q'' = -k q - c q' + gain * u.

    State x = [q (m), p = m q' (kg m/s)]; action u in [-1, 1] is a force of `gain * u` N.

    Attributes:
        mass: m, kg.
        stiffness: k, N/m.
        damping: c, N s/m.
        gain: force per unit action, N.
    """

    mass: float = 1.0
    stiffness: float = 2.0
    damping: float = 0.2
    gain: float = 1.0

    RANGES: ClassVar[dict[str, SplitRange]] = {
        "mass": SplitRange(train=(0.8, 1.25), test=((0.7, 0.8), (1.25, 1.4))),
        "stiffness": SplitRange(train=(1.5, 3.0), test=((1.3, 1.5), (3.0, 3.4))),
        "damping": SplitRange(train=(0.1, 0.3), test=((0.3, 0.35),)),
        "gain": SplitRange(train=(0.8, 1.2), test=((1.2, 1.3),)),
    }

    def validate(self) -> None:
        """Mass, stiffness and gain > 0, damping >= 0."""
        require_positive("OscillatorParams", "mass", self.mass)
        require_positive("OscillatorParams", "stiffness", self.stiffness)
        require_nonnegative("OscillatorParams", "damping", self.damping)
        require_positive("OscillatorParams", "gain", self.gain)

    def discrete(self, dt: float = TOY_DT) -> tuple[np.ndarray, np.ndarray]:
        """Exact zero-order-hold discretisation: x_{k+1} = A x_k + B u_k, A (2,2), B (2,1)."""
        m, k, c, g = self.mass, self.stiffness, self.damping, self.gain
        ac = np.array([[0.0, 1.0 / m], [-k, -c / m]])
        bc = np.array([[0.0], [g]])
        aug = np.zeros((3, 3))
        aug[:2, :2], aug[:2, 2:] = ac, bc
        e = expm(aug * dt)
        return e[:2, :2], e[:2, 2:]


def sample_oscillator_params(rng: np.random.Generator, split: Split) -> OscillatorParams:
    """One oscillator from the `split` range (train and test ranges are disjoint)."""
    return OscillatorParams(**{n: r.sample(rng, split) for n, r in OscillatorParams.RANGES.items()})
