"""Analytic rigid-body quadrotor model, batched in torch and symbolic in CasADi."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import casadi as ca
import numpy as np
import torch

from metasym_control.dynamics import AdaptBudget, DynamicsModel, Memory
from metasym_control.envs.quadrotor import QuadrotorParams
from metasym_control.trajectory import Trajectory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdentificationConfig:
    """How `QuadrotorModel.adapt` identifies parameters.

    Attributes:
        gauss_newton_steps: Gauss–Newton refinements of the one-step prediction error after
            the linear least-squares estimate (0: linear estimate only).
        ridge: relative Tikhonov weight pulling the estimate towards the model's current
            parameters (keeps poorly excited directions at their prior).
        min_fraction: identified mass and inertias are clamped to at least this fraction of
            the prior values (guards against non-physical estimates from bad data).
    """

    gauss_newton_steps: int = 1
    ridge: float = 1e-6
    min_fraction: float = 0.2


class QuadrotorModel:
    """Rigid-body quadrotor `x_{k+1} = f(x_k, u_k)` matching `MetaSymQuadrotor-v0`.

    State x = [p (3, world, m), q (4, w x y z, body→world, w ≥ 0), v (3, world, m/s),
    ω (3, body, rad/s), (T (4, N) with the motor lag)], action u (4,) normalised in [-1, 1]
    with rotor thrust `T = min + (u + 1)/2 · (max - min)`.

    Continuous dynamics: ṗ = v; q̇ = ½ q ⊗ (0, ω); m v̇ = R e_z ΣT + F_ext - m g e_z;
    I ω̇ = τ(T) - ω × Iω with τ = (Σ y_i T_i, -Σ x_i T_i, yaw_coeff Σ s_i T_i);
    Ṫ = (T_cmd - T)/τ_m with the lag. The external force F_ext = wind - R diag(drag) Rᵀ v_k is
    held over the control step (evaluated at its start), as the environment does.

    Integrator: the same as the environment's MuJoCo `RK4` (the env's default physics step
    5 ms = `substeps` 4 per 20 ms control step): classical RK4 on the whole state
    (p, q, v, ω, T) with q̇ = ½ q ⊗ (0, ω), the quaternion renormalised after each substep.
    Checked against MuJoCo 4.0's `mj_step` to about 1e-10 per step (the tests assert < 1e-3 of
    the state change). Gust and sensor noise are random and not modelled (gust mean 0).

    Args:
        params: physical parameters (default X2).
        dt: control period, s.
        substeps: integrator steps per control step (physics step dt / substeps).
        device: torch device of the model's tensors.
        dtype: torch dtype (float64 recommended).
        ident: identification settings for `adapt`.

    Attributes:
        state_dim: 13, or 17 with the motor lag; action_dim: 4; history_len: 0.
        trusted_lower / trusted_upper: None (the model is valid everywhere).
    """

    history_len = 0
    action_dim = 4
    trusted_lower: np.ndarray | None = None
    trusted_upper: np.ndarray | None = None

    def __init__(
        self,
        params: QuadrotorParams | None = None,
        dt: float = 0.02,
        substeps: int = 4,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        ident: IdentificationConfig | None = None,
    ) -> None:
        if not (dt > 0 and substeps >= 1):
            raise ValueError(
                f"QuadrotorModel: dt > 0 and substeps >= 1 required ({dt}, {substeps})"
            )
        self.params = params or QuadrotorParams()
        self.dt = float(dt)
        self.substeps = int(substeps)
        self.h = self.dt / self.substeps
        self.device = torch.device(device)
        self.dtype = dtype
        self.ident = ident or IdentificationConfig()
        self.state_dim = self.params.state_dim
        self.lag = self.params.has_lag
        p = self.params
        kw: dict[str, Any] = {"device": self.device, "dtype": dtype}
        self._mass = torch.tensor(p.mass, **kw)
        self._inertia = torch.tensor(p.inertia, **kw)
        mix = p.mixer_matrix()  # (4, 4): [ΣT, τx, τy, τz] = mix @ T
        self._torque_map = torch.tensor(mix[1:].T, **kw)  # (4, 3): τ = T @ map
        self._half = 0.5 * (p.max_thrust - p.min_thrust)
        self._bias = p.min_thrust + self._half
        self._drag = torch.tensor(p.drag, **kw)
        self._wind = torch.tensor(p.wind, **kw)
        self._has_ext = bool(any(p.drag) or any(p.wind))
        self._g = float(p.gravity)
        self._casadi_fn: ca.Function | None = None

    # ------------------------------------------------------------------------------------
    # protocol
    # ------------------------------------------------------------------------------------
    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """A Markov model keeps no memory: returns `{}` whatever the window (..., 0, nx)."""
        return {}

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """One 20 ms control step: x (..., nx), u (..., 4) -> x_next (..., nx), memory `{}`."""
        return self._step(x, u), memory

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Predict T steps: x0 (..., nx), actions (..., T, 4) -> states (..., T, nx)."""
        xs = []
        x = x0
        for k in range(actions.shape[-2]):
            x = self._step(x, actions[..., k, :])
            xs.append(x)
        return torch.stack(xs, dim=-2)

    def __call__(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Plain batched dynamics `f(x (K, nx), u (K, 4)) -> (K, nx)` (e.g. for pytorch-mppi)."""
        return self._step(x, u)

    # ------------------------------------------------------------------------------------
    # torch dynamics
    # ------------------------------------------------------------------------------------
    def _step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        x = x.to(device=self.device, dtype=self.dtype)
        u = u.to(device=self.device, dtype=self.dtype)
        p, q, v, w = x[..., 0:3], x[..., 3:7], x[..., 7:10], x[..., 10:13]
        q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
        t_cmd = self._bias + self._half * u.clamp(-1.0, 1.0)  # (..., 4) N
        thrust = x[..., 13:17] if self.lag else t_cmd
        f_ext = self._external_force(q, v)  # (..., 3) N, held over the step
        for _ in range(self.substeps):
            p, q, v, w, thrust = self._rk4(p, q, v, w, thrust, t_cmd, f_ext)
        q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)
        parts = [p, q, v, w] + ([thrust] if self.lag else [])
        return torch.cat(parts, dim=-1)

    def _external_force(self, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
        if not self._has_ext:
            return None
        r = _rotation_torch(q)  # (..., 3, 3)
        v_body = (r.transpose(-1, -2) @ v.unsqueeze(-1)).squeeze(-1)
        return self._wind - (r @ (self._drag * v_body).unsqueeze(-1)).squeeze(-1)

    def _derivative(
        self,
        q: torch.Tensor,
        w: torch.Tensor,
        thrust: torch.Tensor,
        t_cmd: torch.Tensor,
        f_ext: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(v̇ (..., 3), ω̇ (..., 3), Ṫ (..., 4) or None) at orientation q and rates w."""
        qw, qx, qy, qz = q.unbind(-1)
        zb = torch.stack(
            (2 * (qx * qz + qw * qy), 2 * (qy * qz - qw * qx), 1 - 2 * (qx * qx + qy * qy)), -1
        )
        acc = zb * (thrust.sum(-1, keepdim=True) / self._mass)
        if f_ext is not None:
            acc = acc + f_ext / self._mass
        acc = acc - torch.tensor([0.0, 0.0, self._g], dtype=acc.dtype, device=acc.device)
        tau = thrust @ self._torque_map
        wdot = (tau - torch.linalg.cross(w, self._inertia * w, dim=-1)) / self._inertia
        tdot = (t_cmd - thrust) / self.params.motor_tau if self.lag else None
        return acc, wdot, tdot

    def _rk4(
        self,
        p: torch.Tensor,
        q: torch.Tensor,
        v: torch.Tensor,
        w: torch.Tensor,
        thrust: torch.Tensor,
        t_cmd: torch.Tensor,
        f_ext: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        """One classical RK4 step of length h on (p, q, v, ω, T); q renormalised at the end."""
        h = self.h

        def f(qs: torch.Tensor, vs: torch.Tensor, ws: torch.Tensor, ts: torch.Tensor) -> tuple:
            acc, wdot, tdot = self._derivative(qs, ws, ts, t_cmd, f_ext)
            return vs, _quat_rate_torch(qs, ws), acc, wdot, tdot

        k1 = f(q, v, w, thrust)
        k2 = f(*_stage(q, v, w, thrust, k1, 0.5 * h, self.lag))
        k3 = f(*_stage(q, v, w, thrust, k2, 0.5 * h, self.lag))
        k4 = f(*_stage(q, v, w, thrust, k3, h, self.lag))
        c = h / 6.0

        def comb(i: int) -> torch.Tensor:
            return k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]

        p_new = p + c * comb(0)
        q_new = q + c * comb(1)
        q_new = q_new / torch.linalg.vector_norm(q_new, dim=-1, keepdim=True)
        v_new = v + c * comb(2)
        w_new = w + c * comb(3)
        t_new = thrust + c * comb(4) if self.lag else thrust
        return p_new, q_new, v_new, w_new, t_new

    # ------------------------------------------------------------------------------------
    # CasADi
    # ------------------------------------------------------------------------------------
    def casadi_step(self, x: Any, u: Any) -> Any:
        """The same discrete map in CasADi: x (nx, 1), u (4, 1) SX/MX -> x_next (nx, 1).

        Identical integrator (MuJoCo-style RK4, `substeps` per control step) and the same
        quaternion sign normalisation (written smoothly as q · sign(q_w)).
        """
        p = self.params
        nx = self.state_dim
        pos, q, v, w = x[0:3], x[3:7], x[7:10], x[10:13]
        q = q / ca.norm_2(q)
        t_cmd = self._bias + self._half * ca.fmin(ca.fmax(u, -1.0), 1.0)
        thrust = x[13:17] if self.lag else t_cmd
        mix = p.mixer_matrix()
        tmap = ca.DM(mix[1:])  # (3, 4)
        inertia = ca.DM(list(p.inertia))
        f_ext = None
        if self._has_ext:
            r = _rotation_casadi(q)
            f_ext = ca.DM(list(p.wind)) - r @ (ca.DM(list(p.drag)) * (r.T @ v))
        h = self.h
        g = ca.DM([0.0, 0.0, self._g])

        def deriv(qs: Any, ws: Any, ts: Any) -> tuple[Any, Any, Any]:
            zb = _rotation_casadi(qs)[:, 2]
            acc = zb * (ca.sum1(ts) / p.mass) - g
            if f_ext is not None:
                acc = acc + f_ext / p.mass
            wdot = (tmap @ ts - ca.cross(ws, inertia * ws)) / inertia
            tdot = (t_cmd - ts) / p.motor_tau if self.lag else None
            return acc, wdot, tdot

        def f(qs: Any, vs: Any, ws: Any, ts: Any) -> tuple:
            acc, wdot, tdot = deriv(qs, ws, ts)
            return vs, _quat_rate_casadi(qs, ws), acc, wdot, tdot

        for _ in range(self.substeps):
            k1 = f(q, v, w, thrust)
            k2 = f(*_stage(q, v, w, thrust, k1, 0.5 * h, self.lag))
            k3 = f(*_stage(q, v, w, thrust, k2, 0.5 * h, self.lag))
            k4 = f(*_stage(q, v, w, thrust, k3, h, self.lag))
            c = h / 6.0
            pos = pos + c * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            q = q + c * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
            q = q / ca.norm_2(q)
            v = v + c * (k1[2] + 2 * k2[2] + 2 * k3[2] + k4[2])
            w = w + c * (k1[3] + 2 * k2[3] + 2 * k3[3] + k4[3])
            if self.lag:
                thrust = thrust + c * (k1[4] + 2 * k2[4] + 2 * k3[4] + k4[4])
        q = ca.if_else(q[0] < 0, -q, q)
        parts = [pos, q, v, w] + ([thrust] if self.lag else [])
        out = ca.vertcat(*parts)
        assert out.shape == (nx, 1)
        return out

    def casadi_function(self) -> ca.Function:
        """A cached `ca.Function('f', [x (nx,1), u (4,1)], [x_next (nx,1)])` of `casadi_step`."""
        if self._casadi_fn is None:
            x = ca.SX.sym("x", self.state_dim)
            u = ca.SX.sym("u", 4)
            self._casadi_fn = ca.Function("quadrotor_step", [x, u], [self.casadi_step(x, u)])
        return self._casadi_fn

    # ------------------------------------------------------------------------------------
    # identification
    # ------------------------------------------------------------------------------------
    def with_params(self, params: QuadrotorParams) -> QuadrotorModel:
        """A new model with `params`, same dt, substeps, device and dtype."""
        return QuadrotorModel(params, self.dt, self.substeps, self.device, self.dtype, self.ident)

    def adapt(self, support: Trajectory, budget: AdaptBudget) -> DynamicsModel:
        """Identify mass, inertia, drag and constant wind from `support` by least squares.

        Geometry, thrust map, yaw coefficient and motor lag are taken as known (this model's
        values). Step 1, linear least squares on the equations of motion with finite
        differences over each control step: translational
        `m (Δv/dt + g e_z) + R̄ diag(drag) R̄ᵀ v - wind = mean(R e_z ΣT)` (trapezoid over the
        step) and rotational `I ω̇ + ω × Iω = τ(T)` (diagonal I, rates at the step's
        midpoint); a small ridge pulls towards this model's values. Step 2
        (`ident.gauss_newton_steps`), Gauss–Newton on the one-step prediction error of the
        exact discrete model, which removes the finite-difference bias.

        Args:
            support: trajectories of one system (states (N, T+1, nx), actions (N, T, 4)).
            budget: ignored beyond its presence (a closed-form solve; same budget for every
                model compared).

        Returns:
            A new `QuadrotorModel`; `self` is untouched.
        """
        del budget
        if support.state_dim != self.state_dim:
            raise ValueError(
                f"QuadrotorModel.adapt: support has nx={support.state_dim}, model {self.state_dim}"
            )
        mask = support.valid_mask()  # (N, T)
        x0 = support.states[:, :-1][mask]  # (M, nx)
        x1 = support.states[:, 1:][mask]
        u = support.actions[mask]  # (M, 4)
        if x0.shape[0] < 4:
            logger.warning("QuadrotorModel.adapt: %d transitions, too few; unchanged", len(x0))
            return self.with_params(self.params)
        if abs(support.dt - self.dt) > 1e-12:
            raise ValueError(f"QuadrotorModel.adapt: support dt {support.dt} != model {self.dt}")
        theta = self._linear_identification(x0, x1, u)
        params = self._params_from_theta(theta)
        for _ in range(self.ident.gauss_newton_steps):
            theta = self._gauss_newton(params, x0, x1, u)
            params = self._params_from_theta(theta)
        return self.with_params(params)

    def _theta(self) -> np.ndarray:
        p = self.params
        return np.array([p.mass, *p.inertia, *p.drag, *p.wind])

    def _params_from_theta(self, theta: np.ndarray) -> QuadrotorParams:
        prior = self._theta()
        lo = self.ident.min_fraction
        mass = max(float(theta[0]), lo * prior[0])
        inertia = np.maximum(theta[1:4], lo * prior[1:4])
        # keep the rigid-body triangle inequality
        inertia[2] = min(inertia[2], inertia[0] + inertia[1])
        inertia[0] = min(inertia[0], inertia[1] + inertia[2])
        inertia[1] = min(inertia[1], inertia[0] + inertia[2])
        drag = np.maximum(theta[4:7], 0.0)
        return self.params.replace(
            mass=mass,
            inertia=tuple(float(i) for i in inertia),
            drag=tuple(float(c) for c in drag),
            wind=tuple(float(c) for c in theta[7:10]),
        )

    def _linear_identification(self, x0: np.ndarray, x1: np.ndarray, u: np.ndarray) -> np.ndarray:
        p, dt = self.params, self.dt
        m_rows = x0.shape[0]
        r0 = _rotation_np(x0[:, 3:7])  # (M, 3, 3)
        r1 = _rotation_np(x1[:, 3:7])
        t_cmd = p.thrust(np.clip(u, -1, 1))
        if self.lag:
            t0, t1 = x0[:, 13:17], x1[:, 13:17]
        else:
            t0 = t1 = t_cmd
        # translational: unknowns (m, drag xyz, wind xyz)
        f_thr = 0.5 * (
            r0[:, :, 2] * t0.sum(-1, keepdims=True) + r1[:, :, 2] * t1.sum(-1, keepdims=True)
        )
        dv = (x1[:, 7:10] - x0[:, 7:10]) / dt + np.array([0.0, 0.0, p.gravity])
        v_body = np.einsum("mji,mj->mi", r0, x0[:, 7:10])  # Rᵀ v
        a_tr = np.zeros((m_rows, 3, 10))
        a_tr[:, :, 0] = dv
        a_tr[:, :, 4:7] = r0 * v_body[:, None, :]  # column j: R[:, j] (Rᵀv)_j
        a_tr[:, :, 7:10] = -np.eye(3)
        b_tr = f_thr
        # rotational: unknowns (Ixx, Iyy, Izz)
        w0, w1 = x0[:, 10:13], x1[:, 10:13]
        wd = (w1 - w0) / dt
        wm = 0.5 * (w0 + w1)
        tmap = p.mixer_matrix()[1:]  # (3, 4)
        tau = 0.5 * (t0 + t1) @ tmap.T  # (M, 3)
        a_rot = np.zeros((m_rows, 3, 10))
        wx, wy, wz = wm[:, 0], wm[:, 1], wm[:, 2]
        a_rot[:, 0, 1], a_rot[:, 0, 2], a_rot[:, 0, 3] = wd[:, 0], -wy * wz, wy * wz
        a_rot[:, 1, 1], a_rot[:, 1, 2], a_rot[:, 1, 3] = wz * wx, wd[:, 1], -wz * wx
        a_rot[:, 2, 1], a_rot[:, 2, 2], a_rot[:, 2, 3] = -wx * wy, wx * wy, wd[:, 2]
        a = np.concatenate([a_tr.reshape(-1, 10), a_rot.reshape(-1, 10)])
        b = np.concatenate([b_tr.reshape(-1), tau.reshape(-1)])
        # rows of the rotational block are small (N·m); weight both blocks to unit scale
        n_tr = 3 * m_rows
        scale = np.ones(len(b))
        scale[:n_tr] = 1.0 / max(np.std(b_tr), 1e-9)
        scale[n_tr:] = 1.0 / max(np.std(tau), 1e-9)
        return _ridge_solve(a * scale[:, None], b * scale, self._theta(), self.ident.ridge)

    def _gauss_newton(
        self, params: QuadrotorParams, x0: np.ndarray, x1: np.ndarray, u: np.ndarray
    ) -> np.ndarray:
        """One Gauss–Newton step on the one-step prediction error over θ (10,).

        The Jacobian comes from central differences of θ evaluated in one batched pass of
        the exact discrete model (21 parameter sets × M transitions), much faster than
        forward-mode autodiff through the Python-level RK4 loop.
        """
        kw: dict[str, Any] = {"device": self.device, "dtype": torch.float64}
        xs, xt, us = (torch.as_tensor(a, **kw) for a in (x0, x1, u))
        theta0 = np.array([params.mass, *params.inertia, *params.drag, *params.wind])
        step = 1e-5 * np.maximum(
            np.abs(theta0), np.r_[0.01 * theta0[:4], 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]
        )
        thetas = np.tile(theta0, (21, 1))
        for j in range(10):
            thetas[1 + 2 * j, j] += step[j]
            thetas[2 + 2 * j, j] -= step[j]
        template = self.with_params(params)
        template.dtype = torch.float64
        pred = _step_with_theta(template, torch.as_tensor(thetas, **kw), xs, us)  # (21, M, nx)
        res = (pred[0] - xt).reshape(-1)
        jac = torch.stack(
            [(pred[1 + 2 * j] - pred[2 + 2 * j]).reshape(-1) / (2 * step[j]) for j in range(10)],
            1,
        )  # (M·nx, 10)
        # weight each state component by the spread of its change (unitless residuals)
        wts = (1.0 / (xt - xs).std(0).clamp_min(1e-9)).repeat(xs.shape[0])
        delta = _ridge_solve(
            (jac * wts[:, None]).cpu().numpy(),
            (-res * wts).cpu().numpy(),
            np.zeros(10),
            self.ident.ridge,
        )
        return theta0 + delta


def _step_with_theta(
    model: QuadrotorModel, theta: torch.Tensor, x: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """`model`'s step for P parameter sets at once.

    Args:
        model: template (geometry, thrust map, integrator).
        theta: (P, 10) rows of (mass, inertia 3, drag 3, wind 3).
        x: (M, nx) states; u: (M, 4) actions.

    Returns:
        (P, M, nx) next states.
    """
    m = QuadrotorModel.__new__(QuadrotorModel)
    m.__dict__.update(model.__dict__)
    m._mass = theta[:, None, 0:1]  # (P, 1, 1)
    m._inertia = theta[:, None, 1:4]  # (P, 1, 3)
    m._drag = theta[:, None, 4:7]
    m._wind = theta[:, None, 7:10]
    m._has_ext = True
    p = theta.shape[0]
    return m._step(x.expand(p, *x.shape), u.expand(p, *u.shape))


def _ridge_solve(a: np.ndarray, b: np.ndarray, prior: np.ndarray, ridge: float) -> np.ndarray:
    """argmin |A θ - b|² + ridge · Σ_j (AᵀA)_jj (θ_j - prior_j)² (scale-free ridge)."""
    ata = a.T @ a
    d = np.diag(np.maximum(np.diag(ata), 1e-300))
    return np.linalg.solve(ata + ridge * d, a.T @ b + ridge * d @ prior)


def _rotation_torch(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of unit quaternions (..., 4) (w, x, y, z)."""
    w, x, y, z = q.unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, -1).reshape(*q.shape[:-1], 3, 3)


def _rotation_np(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (M, 3, 3) of quaternions (M, 4) (normalised here)."""
    return _rotation_torch(torch.from_numpy(np.ascontiguousarray(q))).numpy() / (
        np.linalg.norm(q, axis=-1)[:, None, None] ** 2
    )


def _rotation_casadi(q: Any) -> Any:
    """Rotation matrix (3, 3) of a CasADi unit quaternion (4, 1)."""
    w, x, y, z = q[0], q[1], q[2], q[3]
    return ca.vertcat(
        ca.horzcat(1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        ca.horzcat(2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        ca.horzcat(2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )


def _stage(
    q: Any, v: Any, w: Any, thrust: Any, k: tuple, c: float, lag: bool
) -> tuple[Any, Any, Any, Any]:
    """RK stage state (q, v, ω, T) + c · k from the base state (torch or CasADi alike)."""
    t_stage = thrust + c * k[4] if lag else thrust
    return q + c * k[1], v + c * k[2], w + c * k[3], t_stage


def _quat_rate_torch(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """q̇ = ½ q ⊗ (0, ω): q (..., 4), body rate ω (..., 3) -> (..., 4)."""
    zero = torch.zeros_like(w[..., :1])
    return 0.5 * _quat_mul_torch(q, torch.cat([zero, w], -1))


def _quat_rate_casadi(q: Any, w: Any) -> Any:
    """CasADi twin of `_quat_rate_torch`: q (4, 1), ω (3, 1) -> (4, 1)."""
    return 0.5 * _quat_mul_casadi(q, ca.vertcat(0, w))


def _quat_mul_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        -1,
    )


def _quat_mul_casadi(a: Any, b: Any) -> Any:
    aw, ax, ay, az = a[0], a[1], a[2], a[3]
    bw, bx, by, bz = b[0], b[1], b[2], b[3]
    return ca.vertcat(
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    )


__all__ = ["IdentificationConfig", "QuadrotorModel"]
