"""Quadrotor parameters (one meta-learning task each) and their train / test sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metasym_control.envs.quadrotor.physics import (
    GRAVITY,
    ROTOR_SIGNS_X,
    ROTOR_SIGNS_Y,
    ROTOR_YAW_SIGNS,
)
from metasym_control.params import (
    Split,
    SplitRange,
    SystemParams,
    require_in_range,
    require_nonnegative,
    require_positive,
)

ENV_ID = "MetaSymQuadrotor-v0"


def _x2_inertia() -> tuple[float, float, float]:
    """Diagonal inertia of the X2 from its geometry (kg·m²).

    A 0.325 kg solid box body of 0.20 × 0.10 × 0.08 m plus four 0.25 kg rotors as point
    masses at (±0.14, ±0.18, 0) m.
    """
    mb, (a, b, c) = 0.325, (0.20, 0.10, 0.08)
    mr, x, y = 0.25, 0.14, 0.18
    ixx = mb / 12 * (b * b + c * c) + 4 * mr * y * y
    iyy = mb / 12 * (a * a + c * c) + 4 * mr * x * x
    izz = mb / 12 * (a * a + b * b) + 4 * mr * (x * x + y * y)
    return (ixx, iyy, izz)


@dataclass(frozen=True)
class QuadrotorParams(SystemParams):
    """Physical parameters of one quadrotor (one meta-learning task).

    Defaults are the Skydio X2 (public MuJoCo model facts) with wind, drag, motor lag and
    sensor noise off. Rotor i sits at `(sx_i·arm_x, sy_i·arm_y, 0)` in the body frame with
    `sx = (-1, -1, 1, 1)`, `sy = (-1, 1, 1, -1)` and yaw-moment signs `(-1, 1, -1, 1)`.

    Attributes:
        mass: total mass, kg (X2: 0.325 body + 4 × 0.25 rotors).
        inertia: diagonal inertia (Ixx, Iyy, Izz) about the centre of mass in the body
            frame, kg·m² (X2: computed from the geometry, see `_x2_inertia`).
        arm_x: rotor offset along body x, m.
        arm_y: rotor offset along body y, m.
        min_thrust: thrust of a rotor at action -1, N.
        max_thrust: thrust of a rotor at action +1, N.
        yaw_coeff: rotor drag moment per unit thrust, m (moment = yaw_coeff · T, N·m).
        motor_tau: first-order motor lag time constant, s; 0 = no lag (state has 13 entries,
            17 with lag).
        drag: linear drag coefficients along the body axes, N·s/m (force
            -R diag(drag) Rᵀ v).
        wind: constant wind force in the world frame, N.
        gust_std: stationary standard deviation of the gust force (per world axis), N.
        gust_tau: correlation time of the gust (Ornstein–Uhlenbeck) process, s.
        sensor_noise: standard deviation of the Gaussian noise added to the observation only
            (m, rad, m/s, rad/s, N per component; the state stays exact).
        gravity: gravitational acceleration, m/s² (acts along world -z).
    """

    mass: float = 1.325
    inertia: tuple[float, float, float] = field(default_factory=_x2_inertia)
    arm_x: float = 0.14
    arm_y: float = 0.18
    min_thrust: float = 0.0
    max_thrust: float = 13.0
    yaw_coeff: float = 0.0201
    motor_tau: float = 0.0
    drag: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wind: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gust_std: float = 0.0
    gust_tau: float = 1.0
    sensor_noise: float = 0.0
    gravity: float = GRAVITY

    def validate(self) -> None:
        """Raise `ValueError` naming the field if the parameters are not physical."""
        own = "QuadrotorParams"
        require_positive(own, "mass", self.mass)
        if len(self.inertia) != 3:
            raise ValueError(f"{own}.inertia must be (Ixx, Iyy, Izz), got {self.inertia!r}")
        ixx, iyy, izz = (float(v) for v in self.inertia)
        if not all(math.isfinite(v) and v > 0 for v in (ixx, iyy, izz)):
            raise ValueError(f"{own}.inertia must be positive-definite (all > 0): {self.inertia}")
        if ixx + iyy < izz or iyy + izz < ixx or izz + ixx < iyy:
            raise ValueError(
                f"{own}.inertia violates the triangle inequality of a rigid body: {self.inertia}"
            )
        require_positive(own, "arm_x", self.arm_x)
        require_positive(own, "arm_y", self.arm_y)
        require_nonnegative(own, "min_thrust", self.min_thrust)
        require_positive(own, "max_thrust", self.max_thrust)
        if not self.min_thrust < self.max_thrust:
            raise ValueError(
                f"{own}.max_thrust ({self.max_thrust}) must exceed min_thrust "
                f"({self.min_thrust}): rotor limits reversed"
            )
        require_nonnegative(own, "yaw_coeff", self.yaw_coeff)
        require_nonnegative(own, "motor_tau", self.motor_tau)
        if len(self.drag) != 3:
            raise ValueError(f"{own}.drag must have 3 entries, got {self.drag!r}")
        for i, c in enumerate(self.drag):
            require_nonnegative(own, f"drag[{i}]", float(c))
        if len(self.wind) != 3 or not all(math.isfinite(float(w)) for w in self.wind):
            raise ValueError(f"{own}.wind must be 3 finite forces (N), got {self.wind!r}")
        require_nonnegative(own, "gust_std", self.gust_std)
        require_positive(own, "gust_tau", self.gust_tau)
        require_nonnegative(own, "sensor_noise", self.sensor_noise)
        require_in_range(own, "gravity", self.gravity, 0.0, 100.0)

    @classmethod
    def crazyflie(cls, **changes: Any) -> QuadrotorParams:
        """Crazyflie 2 preset: 0.027 kg, inertia (2.3951e-5, 2.3951e-5, 3.2347e-5) kg·m².

        Rotors at (±0.0325, ±0.0325) m (0.046 m motor-to-centre), 0–0.16 N each (thrust to
        weight ≈ 2.4), yaw coefficient 0.006 m.
        """
        base = cls(
            mass=0.027,
            inertia=(2.3951e-5, 2.3951e-5, 3.2347e-5),
            arm_x=0.0325,
            arm_y=0.0325,
            min_thrust=0.0,
            max_thrust=0.16,
            yaw_coeff=0.006,
        )
        return base.replace(**changes) if changes else base

    @property
    def has_lag(self) -> bool:
        """Whether the motor lag (and so the 4 thrust states) is on."""
        return self.motor_tau > 0.0

    @property
    def state_dim(self) -> int:
        """nx: 13, or 17 with the motor lag."""
        return 17 if self.has_lag else 13

    def thrust(self, action: np.ndarray) -> np.ndarray:
        """Rotor thrusts (N) of normalised actions (..., 4) in [-1, 1] (affine map)."""
        half = 0.5 * (self.max_thrust - self.min_thrust)
        return self.min_thrust + (np.asarray(action, dtype=np.float64) + 1.0) * half

    def action_of_thrust(self, thrust: np.ndarray) -> np.ndarray:
        """Normalised actions of rotor thrusts (..., 4) in N (inverse of `thrust`)."""
        half = 0.5 * (self.max_thrust - self.min_thrust)
        return (np.asarray(thrust, dtype=np.float64) - self.min_thrust) / half - 1.0

    def hover_thrust(self) -> float:
        """Per-rotor thrust that balances gravity, N (m g / 4)."""
        return self.mass * self.gravity / 4.0

    def hover_action(self) -> float:
        """The documented hover command: the action of every rotor that balances gravity.

        X2 defaults: 2 · (1.325 · 9.81 / 4) / 13 - 1 ≈ -0.50007.
        """
        return float(self.action_of_thrust(np.array(self.hover_thrust())))

    def rotor_positions(self) -> np.ndarray:
        """(4, 3) rotor positions in the body frame, m."""
        return np.array(
            [
                [sx * self.arm_x, sy * self.arm_y, 0.0]
                for sx, sy in zip(ROTOR_SIGNS_X, ROTOR_SIGNS_Y)
            ]
        )

    def mixer_matrix(self) -> np.ndarray:
        """(4, 4) map from rotor thrusts (N) to [collective thrust N, τx, τy, τz N·m].

        Body-frame moments: τx = Σ y_i T_i, τy = -Σ x_i T_i, τz = yaw_coeff · Σ s_i T_i.
        """
        r = self.rotor_positions()
        return np.stack(
            [
                np.ones(4),
                r[:, 1],
                -r[:, 0],
                self.yaw_coeff * np.asarray(ROTOR_YAW_SIGNS),
            ]
        )


# Sampling ranges. Test masses, inertias and winds lie outside the training range.
MASS_RANGE = SplitRange(train=(1.0, 1.6), test=((0.75, 0.9), (1.75, 2.0)))
INERTIA_SCALE_RANGE = SplitRange(train=(0.8, 1.25), test=((0.55, 0.7), (1.45, 1.8)))
INERTIA_Z_RATIO = (0.9, 0.99)  # Izz / (Ixx + Iyy): planar-ish frame, triangle inequality kept
WIND_RANGE = SplitRange(train=(0.0, 1.0), test=((1.5, 2.5),))  # horizontal force magnitude, N
WIND_Z_RANGE = (-0.2, 0.2)  # vertical wind force, N (both splits)
DRAG_RANGE = SplitRange(train=(0.0, 0.4), test=())  # N·s/m per body axis, same in both
GUST_RANGE = SplitRange(train=(0.0, 0.3), test=())  # N
MOTOR_TAU_RANGE = SplitRange(train=(0.02, 0.05), test=())  # s, only with the lag on


def sample_quadrotor_params(
    rng: np.random.Generator,
    split: Split = "train",
    *,
    base: QuadrotorParams | None = None,
    motor_lag: bool = False,
    sensor_noise: float = 0.0,
) -> QuadrotorParams:
    """Draw one quadrotor (a meta-learning task) from the `split` range.

    Mass, the Ixx / Iyy scales (of the base inertia) and the horizontal wind magnitude come
    from disjoint train / test ranges (`MASS_RANGE`, `INERTIA_SCALE_RANGE`, `WIND_RANGE`);
    Izz is a fraction `INERTIA_Z_RATIO` of Ixx + Iyy; drag, gusts and the motor lag share
    one range. Geometry and thrust limits are those of `base` (default X2).

    Args:
        rng: numpy generator (the only source of randomness).
        split: "train" or "test".
        base: parameters to perturb (default `QuadrotorParams()`); mass and wind ranges are
            scaled by base.mass / 1.325 so a Crazyflie base gets proportionate ranges.
        motor_lag: draw a motor time constant (state of 17) instead of none (13).
        sensor_noise: observation noise standard deviation to set (not sampled).

    Returns:
        A validated `QuadrotorParams`.
    """
    base = base or QuadrotorParams()
    scale = base.mass / 1.325
    mass = MASS_RANGE.sample(rng, split) * scale
    sx = INERTIA_SCALE_RANGE.sample(rng, split)
    sy = INERTIA_SCALE_RANGE.sample(rng, split)
    ixx, iyy = base.inertia[0] * sx, base.inertia[1] * sy
    izz = float(rng.uniform(*INERTIA_Z_RATIO)) * (ixx + iyy)
    wind_mag = WIND_RANGE.sample(rng, split) * scale
    heading = float(rng.uniform(-math.pi, math.pi))
    wind = (
        wind_mag * math.cos(heading),
        wind_mag * math.sin(heading),
        float(rng.uniform(*WIND_Z_RANGE)) * scale,
    )
    drag = tuple(DRAG_RANGE.sample(rng, split) * scale for _ in range(3))
    gust = GUST_RANGE.sample(rng, split) * scale
    tau = MOTOR_TAU_RANGE.sample(rng, split) if motor_lag else 0.0
    return base.replace(
        mass=mass,
        inertia=(ixx, iyy, izz),
        wind=wind,
        drag=drag,  # type: ignore[arg-type]
        gust_std=gust,
        motor_tau=tau,
        sensor_noise=sensor_noise,
    )
