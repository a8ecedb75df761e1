"""A toy task family for tests: damped, driven oscillators of varied mass, stiffness, damping."""

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
from metasym_control.trajectory import Trajectory

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


def oscillator_trajectories(
    params: OscillatorParams,
    n: int,
    steps: int,
    rng: np.random.Generator,
    dt: float = TOY_DT,
) -> Trajectory:
    """`n` episodes of one oscillator under smooth random forcing.

    Args:
        params: the system.
        n: episodes.
        steps: transitions per episode.
        rng: random source (initial states and forcing).
        dt: control period, s.

    Returns:
        Trajectory with states (n, steps+1, 2), actions (n, steps, 1).
    """
    a, b = params.discrete(dt)
    t = np.arange(steps) * dt
    # forcing: a sum of three sinusoids of random frequency and phase, clipped to [-1, 1]
    freq = rng.uniform(0.2, 2.0, size=(n, 3, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 3, 1))
    amp = rng.uniform(0.0, 0.6, size=(n, 3, 1))
    u = np.clip((amp * np.sin(2 * np.pi * freq * t + phase)).sum(1), -1, 1)[..., None]
    x = np.empty((n, steps + 1, 2))
    x[:, 0, 0] = rng.uniform(-1, 1, n)
    x[:, 0, 1] = params.mass * rng.uniform(-1, 1, n)
    for k in range(steps):
        x[:, k + 1] = x[:, k] @ a.T + u[:, k] @ b.T
    return Trajectory(
        states=x,
        actions=u,
        lengths=np.full(n, steps),
        terminated=np.zeros(n, dtype=bool),
        params=[params.to_dict()] * n,
        dt=dt,
        env_id=TOY_ENV_ID,
        state_names=["q", "p"],
        state_units=["m", "kg m/s"],
        action_names=["force"],
    )


def oscillator_family(
    n_tasks: int, episodes: int, steps: int, split: Split, seed: int, dt: float = TOY_DT
) -> list[Trajectory]:
    """`n_tasks` systems of the `split` range, `episodes` episodes each (one Trajectory each)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_tasks):
        p = sample_oscillator_params(rng, split)
        out.append(oscillator_trajectories(p, episodes, steps, rng, dt))
    return out
