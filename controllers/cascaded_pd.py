"""Cascaded PD (PID position, geometric attitude) quadrotor controller: the MPC baseline."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from metasym_control.controller import History
from metasym_control.dynamics import DynamicsModel
from metasym_control.task import Task

logger = logging.getLogger(__name__)


@runtime_checkable
class QuadrotorPhysics(Protocol):
    """The physical facts the cascaded controller reads (`QuadrotorParams` has them all).

    Attributes:
        mass: kg. inertia: (Ixx, Iyy, Izz) kg·m², body frame. gravity: m/s².
        min_thrust / max_thrust: rotor thrust at action -1 / +1, N.
    """

    @property
    def mass(self) -> float: ...

    @property
    def inertia(self) -> tuple[float, float, float]: ...

    @property
    def gravity(self) -> float: ...

    @property
    def min_thrust(self) -> float: ...

    @property
    def max_thrust(self) -> float: ...

    def mixer_matrix(self) -> np.ndarray:
        """(4, 4) map rotor thrusts (N) -> [collective N, τx, τy, τz N·m] (body frame)."""
        ...


@dataclass(frozen=True)
class CascadedPDConfig:
    """Gains of the cascaded controller (per axis x, y, z; units after the unit mass/inertia).

    Attributes:
        kp: position stiffness, 1/s².
        kd: velocity damping, 1/s.
        ki: integral of the position error, 1/s³ (absorbs mass, wind and drag errors).
        integral_limit: bound of the integral term's acceleration, m/s².
        k_att: attitude stiffness per unit inertia, 1/s².
        k_rate: body-rate damping per unit inertia, 1/s.
        max_tilt: tilt the position loop may ask for, rad.
        max_accel: bound of the commanded specific thrust's norm, m/s².
        thrust_margin: fraction of the rotors' total maximum thrust the position loop may ask
            for (the rest stays for the attitude moments); the vertical axis has priority.
        ff_delta: time step of the finite difference giving the reference acceleration, s.
        lag_horizon: with a motor lag, the time in which the command should bring the rotor
            thrusts to their targets, s (shorter = more aggressive lag inversion).
    """

    kp: tuple[float, float, float] = (6.0, 6.0, 8.0)
    kd: tuple[float, float, float] = (4.0, 4.0, 5.0)
    ki: tuple[float, float, float] = (1.5, 1.5, 2.0)
    integral_limit: float = 3.0
    k_att: tuple[float, float, float] = (150.0, 150.0, 40.0)
    k_rate: tuple[float, float, float] = (20.0, 20.0, 10.0)
    max_tilt: float = 0.7
    max_accel: float = 20.0
    thrust_margin: float = 0.85
    ff_delta: float = 1e-3
    lag_horizon: float = 0.04


class PhysicsArrays:
    """Per-slot physics as arrays (N, ...), so one numpy call serves N quadrotors.

    Beyond `QuadrotorPhysics`, optional attributes are used when present (`getattr`):
    `wind` (3,) N and `drag` (3,) N·s/m as feed-forward of the known external force, and
    `motor_tau` s to pre-compensate the motor lag.
    """

    def __init__(self, physics: Sequence[QuadrotorPhysics]) -> None:
        n = len(physics)
        self.mass = np.zeros(n)  # (N,) kg
        self.inertia = np.zeros((n, 3))  # (N, 3) kg·m²
        self.gravity = np.zeros(n)  # (N,) m/s²
        self.min_thrust = np.zeros(n)  # (N,) N per rotor
        self.max_thrust = np.zeros(n)  # (N,) N per rotor
        self.mix_inv = np.zeros((n, 4, 4))  # wrench [f, τx, τy, τz] -> rotor thrusts
        self.wind = np.zeros((n, 3))  # (N, 3) N
        self.drag = np.zeros((n, 3))  # (N, 3) N·s/m
        self.motor_tau = np.zeros(n)  # (N,) s
        for i, p in enumerate(physics):
            self.set(i, p)

    def set(self, i: int, p: QuadrotorPhysics) -> None:
        """Put the physics `p` into slot `i`."""
        self.mass[i] = p.mass
        self.inertia[i] = p.inertia
        self.gravity[i] = p.gravity
        self.min_thrust[i] = p.min_thrust
        self.max_thrust[i] = p.max_thrust
        self.mix_inv[i] = np.linalg.inv(p.mixer_matrix())
        self.wind[i] = getattr(p, "wind", (0.0, 0.0, 0.0))
        self.drag[i] = getattr(p, "drag", (0.0, 0.0, 0.0))
        self.motor_tau[i] = getattr(p, "motor_tau", 0.0)


def _rotation_matrices(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) of quaternions (N, 4) (w, x, y, z), normalised here."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    r = np.empty((q.shape[0], 3, 3))
    r[:, 0, 0] = 1 - 2 * (y * y + z * z)
    r[:, 0, 1] = 2 * (x * y - w * z)
    r[:, 0, 2] = 2 * (x * z + w * y)
    r[:, 1, 0] = 2 * (x * y + w * z)
    r[:, 1, 1] = 1 - 2 * (x * x + z * z)
    r[:, 1, 2] = 2 * (y * z - w * x)
    r[:, 2, 0] = 2 * (x * z - w * y)
    r[:, 2, 1] = 2 * (y * z + w * x)
    r[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def geometric_control(
    x: np.ndarray,
    p_ref: np.ndarray,
    v_ref: np.ndarray,
    a_ref: np.ndarray,
    yaw_ref: np.ndarray,
    integral: np.ndarray,
    phys: PhysicsArrays,
    cfg: CascadedPDConfig,
    dt: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """Cascaded PID position loop + geometric (SO(3)) attitude loop, batched over N.

    Position loop: a = a_ref - kp e_p - kd e_v - ki ∫e_p, tilt- and norm-limited;
    F = m (a + g e_z); collective f = F · R e_z; desired attitude R_d with b3 = F/|F| and the
    reference yaw (Lee, Leok & McClamroch 2010). Attitude loop: τ = I (-k_att e_R - k_rate ω)
    + ω × Iω with e_R = ½ vee(R_dᵀR - RᵀR_d). Thrusts = mixer⁻¹ [f, τ], clipped to the limits.
    A known wind / drag (optional physics attributes) is fed forward; with the motor lag
    (state of 17 and `motor_tau` > 0) the command inverts the lag over `cfg.lag_horizon`.
    When the rotors saturate, the yaw moment is scaled down first (roll, pitch and collective
    keep priority).

    Args:
        x: (N, nx) states [p, q, v, ω, ...].
        p_ref, v_ref, a_ref: (N, 3) reference position m, velocity m/s, acceleration m/s².
        yaw_ref: (N,) reference yaw, rad.
        integral: (N, 3) integral of the position error, m·s.
        phys: per-slot physics.
        cfg: gains.
        dt: control period, s (motor-lag compensation).

    Returns:
        Normalised actions (N, 4) in [-1, 1] and the unclipped rotor thrusts (N, 4), N.
    """
    n = x.shape[0]
    kp, kd, ki = np.asarray(cfg.kp), np.asarray(cfg.kd), np.asarray(cfg.ki)
    p, q, v, w = x[:, 0:3], x[:, 3:7], x[:, 7:10], x[:, 10:13]
    r = _rotation_matrices(q)  # (N, 3, 3) body→world
    g = phys.gravity

    # position loop: commanded acceleration, integral term bounded
    i_term = np.clip(ki * integral, -cfg.integral_limit, cfg.integral_limit)
    acc = a_ref - kp * (p - p_ref) - kd * (v - v_ref) - i_term  # (N, 3)
    # feed-forward of the known external force (wind, drag at the current velocity)
    v_body = np.einsum("nji,nj->ni", r, v)
    f_ext = phys.wind - np.einsum("nij,nj->ni", r, phys.drag * v_body)  # (N, 3) N
    acc = acc - f_ext / phys.mass[:, None]
    # the specific thrust the rotors can give, keeping a margin for the attitude moments
    a_max = np.minimum(cfg.max_accel, cfg.thrust_margin * 4.0 * phys.max_thrust / phys.mass)  # (N,)
    # vertical first (never less than 0.2 g upward), then what is left for the horizontal
    acc_z = np.clip(acc[:, 2] + g, 0.2 * g, np.maximum(a_max, 0.2 * g))
    horiz = acc[:, 0:2]
    h_max = np.minimum(
        acc_z * math.tan(cfg.max_tilt), np.sqrt(np.maximum(a_max * a_max - acc_z * acc_z, 0.0))
    )
    h_norm = np.sqrt((horiz * horiz).sum(1))
    horiz = horiz * np.minimum(1.0, h_max / np.maximum(h_norm, 1e-9))[:, None]
    force = np.concatenate([horiz, acc_z[:, None]], 1) * phys.mass[:, None]  # (N, 3) N

    # desired attitude from the force direction and the reference yaw
    b3 = force / np.sqrt((force * force).sum(1, keepdims=True))
    b1c = np.stack([np.cos(yaw_ref), np.sin(yaw_ref), np.zeros(n)], 1)
    b2 = _cross_rows(b3, b1c)
    b2 /= np.maximum(np.sqrt((b2 * b2).sum(1, keepdims=True)), 1e-9)
    b1 = _cross_rows(b2, b3)
    rd = np.stack([b1, b2, b3], 2)  # columns b1, b2, b3
    collective = np.einsum("ni,ni->n", force, r[:, :, 2])

    # attitude loop
    m_err = np.einsum("nji,njk->nik", rd, r) - np.einsum("nji,njk->nik", r, rd)  # RdᵀR - RᵀRd
    e_r = 0.5 * np.stack([m_err[:, 2, 1], m_err[:, 0, 2], m_err[:, 1, 0]], 1)
    inertia = phys.inertia
    tau = inertia * (-np.asarray(cfg.k_att) * e_r - np.asarray(cfg.k_rate) * w)
    tau += _cross_rows(w, inertia * w)

    # thrusts of collective + roll/pitch, and of yaw alone (yaw gives way when saturating)
    main = np.einsum("nij,nj->ni", phys.mix_inv[:, :, :3], _wrench_part(collective, tau))
    yaw = phys.mix_inv[:, :, 3] * tau[:, 2:3]  # (N, 4)
    # motor lag: command what brings the rotor thrusts (state 13-16) to the target within
    # `lag_horizon` seconds (first-order lag inverted; linear, so it splits like the wrench)
    if x.shape[1] >= 17 and np.any(phys.motor_tau > 0):
        e = np.exp(-cfg.lag_horizon / np.maximum(phys.motor_tau, 1e-9))[:, None]
        on = phys.motor_tau[:, None] > 0
        main = np.where(on, (main - e * x[:, 13:17]) / (1.0 - e), main)
        yaw = np.where(on, yaw / (1.0 - e), yaw)
    lo, hi = phys.min_thrust[:, None], phys.max_thrust[:, None]
    main_c = np.clip(main, lo, hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(
            yaw > 0, (hi - main_c) / yaw, np.where(yaw < 0, (lo - main_c) / yaw, np.inf)
        )
    scale = np.clip(room.min(axis=1, keepdims=True), 0.0, 1.0)
    thrust = main + yaw
    action = 2.0 * (np.clip(main_c + scale * yaw, lo, hi) - lo) / (hi - lo) - 1.0
    return action, thrust


def _wrench_part(collective: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """[collective (N,), τx, τy] -> (N, 3), the wrench without the yaw moment."""
    return np.concatenate([collective[:, None], tau[:, 0:2]], 1)


def _cross_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross products (N, 3) × (N, 3) (np.cross is slow for small arrays)."""
    out = np.empty_like(a)
    out[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    out[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    out[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return out


def yaw_of(q: np.ndarray) -> np.ndarray:
    """Yaw angles (N,) of quaternions (N, 4) (w, x, y, z), rad."""
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class CascadedPD:
    """Cascaded PD controller that follows a task's reference (the MPC baseline).

    A PID position loop feeds a geometric (SO(3)) attitude loop with PD moments
    (`geometric_control`).

    Implements `metasym_control.controller.Controller`. It reads only physical parameters
    (`QuadrotorPhysics`), never a concrete model; `set_model` adopts the model's `params`
    when they satisfy `QuadrotorPhysics` (so online identification improves it).

    Args:
        physics: mass, inertia, thrust limits and mixer of the quadrotor it believes it flies.
        task: supplies the reference (positions, velocities, yaw from the reference
            quaternion; acceleration by a central finite difference of the velocity).
        config: gains.
        dt: control period, s (integral term).
        model: optional dynamics model (only its `params` are used).
    """

    def __init__(
        self,
        physics: QuadrotorPhysics,
        task: Task,
        config: CascadedPDConfig | None = None,
        dt: float = 0.02,
        model: DynamicsModel | None = None,
    ) -> None:
        self.config = config or CascadedPDConfig()
        self.task = task
        self.dt = float(dt)
        self._phys = PhysicsArrays([physics])
        self.physics = physics
        self.model: DynamicsModel | None = None
        self.last_plan: np.ndarray | None = None
        self.last_info: dict[str, Any] = {}
        self._integral = np.zeros((1, 3))
        if model is not None:
            self.set_model(model)

    def reset(self) -> None:
        """Clear the integral term (a new episode)."""
        self._integral[:] = 0.0
        self.last_plan = None
        self.last_info = {}

    def set_model(self, model: DynamicsModel) -> None:
        """Use `model`; its `params` replace the physics when they fit `QuadrotorPhysics`."""
        self.model = model
        params = getattr(model, "params", None)
        if params is not None and isinstance(params, QuadrotorPhysics):
            self.physics = params
            self._phys.set(0, params)

    def act(self, state: np.ndarray, t: float, history: History | None = None) -> np.ndarray:
        """Action (4,) in [-1, 1] for `state` (nx,) at time `t` s; `history` is not used."""
        x = np.asarray(state, dtype=np.float64).reshape(1, -1)
        d = self.config.ff_delta
        x_ref, _ = self.task.reference(np.array([t - d, t, t + d]))
        p_ref, v_ref = x_ref[1:2, 0:3], x_ref[1:2, 7:10]
        a_ref = (x_ref[2:3, 7:10] - x_ref[0:1, 7:10]) / (2 * d)
        yaw = yaw_of(x_ref[1:2, 3:7])
        action, thrust = geometric_control(
            x, p_ref, v_ref, a_ref, yaw, self._integral, self._phys, self.config, self.dt
        )
        self._integral += (x[:, 0:3] - p_ref) * self.dt
        lo, hi = self._phys.min_thrust[0], self._phys.max_thrust[0]
        self.last_info = {
            "saturated": bool(np.any(thrust < lo) or np.any(thrust > hi)),
            "collective_thrust": float(thrust.sum()),
        }
        return action[0]


__all__ = [
    "CascadedPD",
    "CascadedPDConfig",
    "PhysicsArrays",
    "QuadrotorPhysics",
    "geometric_control",
    "yaw_of",
]
