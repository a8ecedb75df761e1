"""Exploration policies that excite each system's dynamics without leaving its region of interest.

Wiring: the quadrotor's flies the cascaded PD controller of
`metasym_control.controllers.cascaded_pd`; the spring mesh's and the quantum system's are
open-loop random forcing (both systems are stable without control).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from metasym_control.controllers.cascaded_pd import (
    CascadedPDConfig,
    PhysicsArrays,
    QuadrotorPhysics,
    geometric_control,
    yaw_of,
)

if TYPE_CHECKING:
    from metasym_control.params import SystemParams

# softer than the tracking defaults: robust to the motor lag and to held-out inertias under
# excitation (one frozen instance, shared)
EXPLORATION_GAINS = CascadedPDConfig(
    kp=(4.0, 4.0, 6.0),
    kd=(3.5, 3.5, 4.5),
    k_att=(80.0, 80.0, 20.0),
    k_rate=(14.0, 14.0, 6.0),
    max_tilt=0.5,
)


@dataclass(frozen=True)
class ExplorationConfig:
    """Random references and excitation noise for collecting training data without crashing.

    Attributes:
        box_low / box_high: (3,) box the random goals are drawn from, m.
        hold: (min, max) seconds a goal is held before the next is drawn.
        ref_bandwidth: natural frequency of the critically damped filter the reference
            follows towards the goal, rad/s (smooth p, v, a references).
        yaw_range: goals' yaw drawn from ±yaw_range, rad.
        noise_accel: stationary std of the Ornstein–Uhlenbeck excitation of the collective
            thrust, as a vertical acceleration, m/s².
        noise_ang_accel: the same for the body moments (roll, pitch, yaw), as angular
            accelerations, rad/s² (yaw lower: rotor drag moments are weak, yaw excitation
            costs much thrust).
            Excitation is specified in accelerations and mapped through each vehicle's mass,
            inertia and mixer, so an X2 and a Crazyflie are excited alike.
        noise_tau: correlation time of that noise, s.
        gains: the underlying controller's gains (softer than the tracking defaults: robust
            to the motor lag and to held-out inertias under excitation).
    """

    box_low: tuple[float, float, float] = (-1.5, -1.5, 0.8)
    box_high: tuple[float, float, float] = (1.5, 1.5, 2.5)
    hold: tuple[float, float] = (0.5, 2.0)
    ref_bandwidth: float = 2.5
    yaw_range: float = 0.6
    noise_accel: float = 1.0
    noise_ang_accel: tuple[float, float, float] = (5.0, 5.0, 1.0)
    noise_tau: float = 0.06
    gains: CascadedPDConfig = EXPLORATION_GAINS


class QuadrotorExplorationPolicy:
    """Batched stabilising exploration policy: the cascaded PD controller flying random
    smooth references, plus coloured excitation noise on the actions.

    One slot per parallel environment; each slot keeps its own physics, goal, reference
    filter state, integral term and noise, all drawn from a seeded numpy generator.

    Args:
        physics: one `QuadrotorPhysics` per slot (the true parameters: this is a data
            generator, so it may know the system it flies).
        config: exploration settings.
        dt: control period, s.
        seed: seed of the random goals and noise.
    """

    def __init__(
        self,
        physics: Sequence[QuadrotorPhysics],
        config: ExplorationConfig | None = None,
        dt: float = 0.02,
        seed: int = 0,
    ) -> None:
        self.config = config or ExplorationConfig()
        self.dt = float(dt)
        self.n = len(physics)
        self._phys = PhysicsArrays(physics)
        self.rng = np.random.default_rng(seed)
        self._goal = np.zeros((self.n, 3))
        self._goal_yaw = np.zeros(self.n)
        self._next_goal = np.zeros(self.n)
        # the reference filter's position, velocity and acceleration (N, 3)
        self._p_ref = np.zeros((self.n, 3))
        self._v_ref = np.zeros((self.n, 3))
        self._a_ref = np.zeros((self.n, 3))
        self._yaw = np.zeros(self.n)
        self._integral = np.zeros((self.n, 3))
        self._noise = np.zeros((self.n, 4))
        self._time = np.zeros(self.n)

    def reset(self, index: int, state: np.ndarray, physics: QuadrotorPhysics | None = None) -> None:
        """Start a new episode in slot `index` from `state` (nx,), optionally new physics."""
        if physics is not None:
            self._phys.set(index, physics)
        x = np.asarray(state, dtype=np.float64)
        self._p_ref[index] = x[0:3]
        self._v_ref[index] = x[7:10]
        self._a_ref[index] = 0.0
        self._yaw[index] = yaw_of(x[None, 3:7])[0]
        self._integral[index] = 0.0
        self._noise[index] = 0.0
        self._time[index] = 0.0
        self._draw_goal(index)

    def _draw_goal(self, i: int) -> None:
        """A new goal and yaw for slot `i`, and the time it is held until."""
        c = self.config
        self._goal[i] = self.rng.uniform(c.box_low, c.box_high)
        self._goal_yaw[i] = self.rng.uniform(-c.yaw_range, c.yaw_range)
        self._next_goal[i] = self._time[i] + self.rng.uniform(*c.hold)

    def act_batch(self, states: np.ndarray) -> np.ndarray:
        """Actions (N, 4) in [-1, 1] for states (N, nx); advances every slot by dt."""
        c, dt = self.config, self.dt
        for i in np.nonzero(self._time >= self._next_goal)[0]:
            self._draw_goal(int(i))
        # critically damped reference filter towards the goal (semi-implicit Euler)
        wn = c.ref_bandwidth
        self._a_ref = wn * wn * (self._goal - self._p_ref) - 2.0 * wn * self._v_ref
        self._v_ref = self._v_ref + dt * self._a_ref
        self._p_ref = self._p_ref + dt * self._v_ref
        self._yaw += dt * wn * 0.5 * (self._goal_yaw - self._yaw)
        action, _ = geometric_control(
            states,
            self._p_ref,
            self._v_ref,
            self._a_ref,
            self._yaw,
            self._integral,
            self._phys,
            c.gains,
            dt,
        )
        self._integral += (states[:, 0:3] - self._p_ref) * dt
        # Ornstein–Uhlenbeck excitation of the wrench, in accelerations, mapped to the rotors
        decay = math.exp(-dt / c.noise_tau)
        self._noise = decay * self._noise + math.sqrt(1 - decay * decay) * self.rng.standard_normal(
            self._noise.shape
        )
        phys = self._phys
        wrench = self._noise * np.concatenate(
            [(c.noise_accel * phys.mass)[:, None], np.asarray(c.noise_ang_accel) * phys.inertia], 1
        )  # (N, 4): N, N·m
        d_thrust = np.einsum("nij,nj->ni", phys.mix_inv, wrench)
        self._time += dt
        half_range = 0.5 * (phys.max_thrust - phys.min_thrust)  # (N,) N per unit of action
        return np.clip(action + d_thrust / half_range[:, None], -1.0, 1.0)


def quadrotor_exploration(
    config: ExplorationConfig | None = None,
) -> Callable[[Sequence[SystemParams], int, float], QuadrotorExplorationPolicy]:
    """The quadrotor's exploration policy as a `(chunk, seed, dt)` factory.

    The one place a quadrotor exploration policy is built: the registry's entry (default
    settings), `collect_quadrotor_dataset` and `train --exploration.*` all use it.

    Args:
        config: exploration settings (None: `ExplorationConfig()`).

    Returns:
        `make(chunk, seed, dt)`: `chunk` the slots' true parameters (one
        `QuadrotorParams` each), `seed` of the goals and noise, `dt` the control period, s.
    """

    def make(chunk: Sequence[SystemParams], seed: int, dt: float) -> QuadrotorExplorationPolicy:
        return QuadrotorExplorationPolicy(chunk, config, dt=dt, seed=seed)  # type: ignore[arg-type]

    return make


@dataclass(frozen=True)
class SmoothForcingConfig:
    """Smooth random forcing: an Ornstein–Uhlenbeck process per action, amplitude per episode.

    Attributes:
        sigma: largest stationary std of the normalised action (each episode draws its own
            amplitude uniformly in [0, sigma], so some episodes are nearly unforced and show
            the free, conservative motion).
        tau: correlation time of the forcing, s (slower than the fastest mode: it excites the
            mesh's modes rather than chattering).
    The defaults keep the 5x5 mesh's displacements near the benchmark's start discs (median
    0.13, 95th percentile about 0.55 spacings over 40 s episodes), where MPC flies it.
    """

    sigma: float = 0.15
    tau: float = 1.0


class SmoothForcingPolicy:
    """Batched smooth random forcing on every action (the spring mesh's actuated row).

    Args:
        n: parallel slots.
        action_dim: nu.
        dt: control period, s.
        config: forcing settings.
        seed: seed of the forcing.
    """

    def __init__(
        self,
        n: int,
        action_dim: int,
        dt: float,
        config: SmoothForcingConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config or SmoothForcingConfig()
        self.dt = float(dt)
        self.rng = np.random.default_rng(seed)
        self._ou = np.zeros((n, action_dim))
        self._amp = np.zeros(n)

    def reset(self, index: int, state: np.ndarray, physics: object | None = None) -> None:
        """New episode in slot `index`: a fresh amplitude and a stationary start of the noise."""
        self._amp[index] = self.rng.uniform(0.0, self.config.sigma)
        self._ou[index] = self.rng.standard_normal(self._ou.shape[1])

    def act_batch(self, states: np.ndarray) -> np.ndarray:
        """Actions (N, nu) in [-1, 1]; `states` (N, nx) unused (open loop)."""
        decay = math.exp(-self.dt / self.config.tau)
        self._ou = decay * self._ou + math.sqrt(1 - decay * decay) * self.rng.standard_normal(
            self._ou.shape
        )
        return np.clip(self._amp[:, None] * self._ou, -1.0, 1.0)


@dataclass(frozen=True)
class PiecewiseDriveConfig:
    """Random piecewise-constant drives (the quantum system's exploration).

    Attributes:
        hold_steps: (min, max) control steps a drive is held before the next is drawn.
        zero_probability: chance that a drawn segment is undriven (free decay is data too).
        amplitude: drives are uniform in [-amplitude, amplitude] per quadrature.
    """

    hold_steps: tuple[int, int] = (2, 12)
    zero_probability: float = 0.2
    amplitude: float = 1.0


class PiecewiseDrivePolicy:
    """Batched random piecewise-constant drives, one segment schedule per slot.

    Args:
        n: parallel slots.
        action_dim: nu.
        config: segment settings.
        seed: seed of the drives.
    """

    def __init__(
        self, n: int, action_dim: int, config: PiecewiseDriveConfig | None = None, seed: int = 0
    ) -> None:
        self.config = config or PiecewiseDriveConfig()
        lo, hi = self.config.hold_steps
        if not 1 <= lo <= hi:
            raise ValueError(
                f"PiecewiseDriveConfig.hold_steps must satisfy 1 <= min <= max: {lo, hi}"
            )
        self.rng = np.random.default_rng(seed)
        self._u = np.zeros((n, action_dim))
        self._left = np.zeros(n, dtype=np.int64)

    def reset(self, index: int, state: np.ndarray, physics: object | None = None) -> None:
        """New episode in slot `index`: the next step draws a fresh segment."""
        self._left[index] = 0

    def _draw(self, i: int) -> None:
        c = self.config
        lo, hi = c.hold_steps
        self._left[i] = self.rng.integers(lo, hi + 1)
        if self.rng.random() < c.zero_probability:
            self._u[i] = 0.0
        else:
            self._u[i] = self.rng.uniform(-c.amplitude, c.amplitude, self._u.shape[1])

    def act_batch(self, states: np.ndarray) -> np.ndarray:
        """Actions (N, nu) in [-1, 1]; `states` (N, nx) unused (open loop)."""
        for i in np.nonzero(self._left <= 0)[0]:
            self._draw(int(i))
        self._left -= 1
        return np.clip(self._u.copy(), -1.0, 1.0)


__all__ = [
    "EXPLORATION_GAINS",
    "ExplorationConfig",
    "PiecewiseDriveConfig",
    "PiecewiseDrivePolicy",
    "QuadrotorExplorationPolicy",
    "SmoothForcingConfig",
    "SmoothForcingPolicy",
]
