"""Analytic rigid-body quadrotor model, batched in torch and symbolic in CasADi."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metasym_control.dynamics import AdaptBudget, DynamicsModel, Memory, rollout_by_steps
from metasym_control.envs.quadrotor.params import QuadrotorParams
from metasym_control.models.coordinates import quaternion_rate
from metasym_control.trajectory import Trajectory

if TYPE_CHECKING:
    import casadi as ca

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


@dataclass
class _StepConstants:
    """Quantities held over one control step (shapes broadcast against the state's)."""

    c0: torch.Tensor  # (..., 3) m/s², gravity + F_ext / m
    inv_m: torch.Tensor  # 1/kg
    inertia: torch.Tensor  # (3,) kg·m²
    inv_inertia: torch.Tensor
    t_cmd: torch.Tensor  # (..., 4) N, commanded thrusts
    thrust_over_m: torch.Tensor | None  # (..., 1) without the lag
    tau: torch.Tensor | None  # (..., 3) N·m without the lag


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
    Checked against MuJoCo 4.0's `mj_step` to about 1e-10 per step (the tests assert < 1e-6 of
    the state change; the requirement is 1e-3). `substeps=1` (one 20 ms RK4 step) is a 4×
    cheaper variant for planners, about 7e-6 of the state change off. Gust and sensor noise
    are random and not modelled (gust mean 0).

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
        self._gravity = float(p.gravity)
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
        return rollout_by_steps(self, x0, actions, memory)

    def __call__(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Plain batched dynamics `f(x (K, nx), u (K, 4)) -> (K, nx)` (e.g. for pytorch-mppi)."""
        return self._step(x, u)

    # ------------------------------------------------------------------------------------
    # torch dynamics
    # ------------------------------------------------------------------------------------
    def _step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """RK4 over the whole state vector; terms constant over the step computed once."""
        x = x.to(device=self.device, dtype=self.dtype)
        u = u.to(device=self.device, dtype=self.dtype)
        nx = self.state_dim
        q = x[..., 3:7]
        q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
        s = torch.cat([x[..., 0:3], q, x[..., 7:nx]], -1)  # (..., nx), unit quaternion
        inv_m = 1.0 / self._mass
        t_cmd = self._bias + self._half * u.clamp(-1.0, 1.0)  # (..., 4) N
        # specific force that does not depend on the attitude: gravity and F_ext / m (ZOH)
        c0 = self._gravity_vec(s)
        f_ext = self._external_force(q, x[..., 7:10])
        if f_ext is not None:
            c0 = c0 + f_ext * inv_m
        const = _StepConstants(
            c0=c0,
            inv_m=inv_m,
            inertia=self._inertia,
            inv_inertia=1.0 / self._inertia,
            t_cmd=t_cmd,
            # without lag the thrusts are the commands, constant over the step
            thrust_over_m=None if self.lag else t_cmd.sum(-1, keepdim=True) * inv_m,
            tau=None if self.lag else t_cmd @ self._torque_map,
        )
        h = self.h
        # eager: ṡ as one quadratic form (fewer operations); compiled, the elementwise form
        # below fuses into a few loops, where the form's products would stay separate calls
        quadratic = not self.lag and self._inertia.dim() == 1
        if quadratic and not torch.compiler.is_compiling():
            return self._rk4_quadratic(s, const)
        for _ in range(self.substeps):
            k1 = self._deriv(s, const)
            k2 = self._deriv(torch.add(s, k1, alpha=0.5 * h), const)
            k3 = self._deriv(torch.add(s, k2, alpha=0.5 * h), const)
            k4 = self._deriv(torch.add(s, k3, alpha=h), const)
            incr = torch.add(torch.add(k1, k2 + k3, alpha=2.0), k4)
            s = torch.add(s, incr, alpha=h / 6.0)
            q = s[..., 3:7]
            s = torch.cat(
                [s[..., 0:3], q / torch.linalg.vector_norm(q, dim=-1, keepdim=True), s[..., 7:]],
                -1,
            )
        sign = torch.where(s[..., 3:4] < 0, -1.0, 1.0)
        return torch.cat([s[..., 0:3], s[..., 3:7] * sign, s[..., 7:]], -1)

    def _rk4_quadratic(self, s: torch.Tensor, c: _StepConstants) -> torch.Tensor:
        """The RK4 substeps of `_step` without the motor lag, ṡ written as one quadratic form.

        ṡ = ((s_a ⊙ s_b) @ M) ⊙ S + s @ A + C with the 28 products s_a ⊙ s_b of state
        components that the dynamics use (`_PAIRS`): M (28, 13) holds the quaternion rate
        (q ω products), R(q) e_z − e_z (q q products, scaled per sample by ΣT/m through S)
        and −(ω × Iω)/I (ω ω products); A carries ṗ = v; C the per-sample constants (gravity,
        F_ext/m, e_z ΣT/m, τ/I). Six operations a stage instead of about 20; the same
        arithmetic as `_deriv` up to rounding.

        Args:
            s: (..., 13) state with a unit quaternion; c: the step's constants.

        Returns:
            (..., 13) next state, quaternion renormalised with w >= 0.
        """
        assert c.thrust_over_m is not None and c.tau is not None
        quad, lin = self._quadratic_maps(s.dtype, s.device)
        lead = s.shape[:-1]
        x = s.reshape(-1, 13)
        b = x.shape[0]
        t_m = c.thrust_over_m.expand(*lead, 1).reshape(b, 1)
        e_z = torch.tensor([0.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
        ones = torch.ones(b, 1, dtype=x.dtype, device=x.device)
        scale = torch.cat([ones.expand(b, 7), t_m.expand(b, 3), ones.expand(b, 3)], -1)
        const = torch.cat(
            [
                torch.zeros(b, 7, dtype=x.dtype, device=x.device),
                (c.c0 + e_z * t_m).expand(b, 3),
                (c.tau * c.inv_inertia).expand(*lead, 3).reshape(b, 3),
            ],
            -1,
        )

        ia, ib = self._pair_index(x.device)

        def deriv(y: torch.Tensor) -> torch.Tensor:
            pairs = y.index_select(1, ia) * y.index_select(1, ib)  # (b, 28)
            return torch.addcmul(torch.addmm(const, y, lin), pairs @ quad, scale)

        h = self.h
        for _ in range(self.substeps):
            k1 = deriv(x)
            k2 = deriv(torch.add(x, k1, alpha=0.5 * h))
            k3 = deriv(torch.add(x, k2, alpha=0.5 * h))
            k4 = deriv(torch.add(x, k3, alpha=h))
            x = torch.add(x, torch.add(torch.add(k1, k2 + k3, alpha=2.0), k4), alpha=h / 6.0)
            q = x[:, 3:7]
            x = torch.cat(
                [x[:, 0:3], q / torch.linalg.vector_norm(q, dim=-1, keepdim=True), x[:, 7:]], -1
            )
        sign = torch.where(x[:, 3:4] < 0, -1.0, 1.0)
        x = torch.cat([x[:, 0:3], x[:, 3:7] * sign, x[:, 7:]], -1)
        return x.view(*lead, 13)

    def _quadratic_maps(
        self, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """M (28, 13) and A (13, 13) of `_rk4_quadratic` for this model's inertia (cached)."""
        key = (dtype, device)
        cache: dict[Any, tuple[torch.Tensor, torch.Tensor]] = self.__dict__.setdefault(
            "_quad_cache", {}
        )
        if key not in cache:
            inertia = self._inertia.detach().cpu().double().numpy()
            row = {pair: r for r, pair in enumerate(_PAIRS)}
            quad = np.zeros((len(_PAIRS), 13))
            for qi in range(4):  # ½ q ⊗ (0, ω): state indices q 3..6, ω 10..12
                for wi in range(3):
                    quad[row[(3 + qi, 10 + wi)], 3:7] += _QR[qi * 3 + wi]
            for qa in range(4):  # R(q) e_z − e_z
                for qb in range(4):
                    quad[row[(3 + min(qa, qb), 3 + max(qa, qb))], 7:10] += _ZB[qa * 4 + qb]
            for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):  # −(ω × Iω)_i / I_i
                quad[row[(10 + min(j, k), 10 + max(j, k))], 10 + i] += (
                    inertia[j] - inertia[k]
                ) / inertia[i]
            lin = np.zeros((13, 13))
            lin[7:10, 0:3] = np.eye(3)  # ṗ = v
            cache[key] = (
                torch.as_tensor(quad, dtype=dtype, device=device),
                torch.as_tensor(lin, dtype=dtype, device=device),
            )
        return cache[key]

    def _pair_index(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The state indices a, b of `_PAIRS` as index tensors on `device` (cached)."""
        cache: dict[Any, tuple[torch.Tensor, torch.Tensor]] = self.__dict__.setdefault(
            "_pair_cache", {}
        )
        if device not in cache:
            a, b = zip(*_PAIRS)
            cache[device] = (
                torch.tensor(a, dtype=torch.long, device=device),
                torch.tensor(b, dtype=torch.long, device=device),
            )
        return cache[device]

    def _gravity_vec(self, s: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.0, 0.0, -self._gravity], dtype=s.dtype, device=s.device)

    def _external_force(self, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
        if not self._has_ext:
            return None
        r = _rotation_torch(q)  # (..., 3, 3)
        v_body = (r.transpose(-1, -2) @ v.unsqueeze(-1)).squeeze(-1)
        return self._wind - (r @ (self._drag * v_body).unsqueeze(-1)).squeeze(-1)

    def _deriv(self, s: torch.Tensor, c: _StepConstants) -> torch.Tensor:
        """ṡ (..., nx) of the state s (..., nx) (quaternion as given, not renormalised)."""
        q, v, w = s[..., 3:7], s[..., 7:10], s[..., 10:13]
        if self.lag:
            thrust = s[..., 13:17]
            thrust_over_m = thrust.sum(-1, keepdim=True) * c.inv_m
            tau = thrust @ self._torque_map
        else:
            assert c.thrust_over_m is not None and c.tau is not None
            thrust_over_m, tau = c.thrust_over_m, c.tau
        # compiled, the polynomials written out fuse into the step's loops; eager, one product
        # with a constant matrix each is fewer operations
        fused = torch.compiler.is_compiling()
        zb = _body_z_poly(q) if fused else _body_z_torch(q)  # (..., 3) third column of R(q)
        acc = zb * thrust_over_m + c.c0
        wdot = (tau - torch.linalg.cross(w, c.inertia * w, dim=-1)) * c.inv_inertia
        q_rate = quaternion_rate(q, w) if fused else _quat_rate_torch(q, w)
        parts = [v, q_rate, acc, wdot]
        if self.lag:
            parts.append((c.t_cmd - s[..., 13:17]) * (1.0 / self.params.motor_tau))
        return torch.cat(parts, -1)

    # ------------------------------------------------------------------------------------
    # CasADi
    # ------------------------------------------------------------------------------------
    def casadi_step(self, x: Any, u: Any) -> Any:
        """The same discrete map in CasADi: x (nx, 1), u (4, 1) SX/MX -> x_next (nx, 1).

        Identical integrator (MuJoCo-style RK4, `substeps` per control step) and the same
        quaternion sign normalisation (q → -q where q_w < 0, by `if_else`).
        """
        import casadi as ca  # lazy: the torch model works without CasADi installed

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
        g = ca.DM([0.0, 0.0, self._gravity])

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
        import casadi as ca

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
    import casadi as ca

    w, x, y, z = q[0], q[1], q[2], q[3]
    return ca.vertcat(
        ca.horzcat(1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        ca.horzcat(2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        ca.horzcat(2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )


def _stage(
    q: Any, v: Any, w: Any, thrust: Any, k: tuple, c: float, lag: bool
) -> tuple[Any, Any, Any, Any]:
    """RK stage state (q, v, ω, T) + c · k from the base state (CasADi)."""
    t_stage = thrust + c * k[4] if lag else thrust
    return q + c * k[1], v + c * k[2], w + c * k[3], t_stage


# Bilinear forms on the outer products q qᵀ and q ωᵀ (one matmul instead of many tiny ops).
_ZB = np.zeros((16, 3))  # R(q) e_z = (2(xz + wy), 2(yz − wx), 1 − 2(x² + y²)) − (0, 0, 1)
_ZB[1 * 4 + 3, 0], _ZB[0 * 4 + 2, 0] = 2.0, 2.0
_ZB[2 * 4 + 3, 1], _ZB[0 * 4 + 1, 1] = 2.0, -2.0
_ZB[1 * 4 + 1, 2], _ZB[2 * 4 + 2, 2] = -2.0, -2.0
_QR = np.zeros((12, 4))  # ½ q ⊗ (0, ω), rows indexed by (q index) · 3 + (ω index)
for _qi, _wi, _out, _sgn in (
    (1, 0, 0, -1), (2, 1, 0, -1), (3, 2, 0, -1),
    (0, 0, 1, 1), (2, 2, 1, 1), (3, 1, 1, -1),
    (0, 1, 2, 1), (3, 0, 2, 1), (1, 2, 2, -1),
    (0, 2, 3, 1), (1, 1, 3, 1), (2, 0, 3, -1),
):  # fmt: skip
    _QR[_qi * 3 + _wi, _out] = 0.5 * _sgn
_CONST_CACHE: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}
# The products of state components in ṡ without the motor lag (state indices, a <= b): q q
# (10), q ω (12), ω ω off the diagonal (3).
_PAIRS: tuple[tuple[int, int], ...] = (
    *((a, b) for a in range(3, 7) for b in range(a, 7)),
    *((a, b) for a in range(3, 7) for b in range(10, 13)),
    (10, 11),
    (10, 12),
    (11, 12),
)


def _consts(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    key = (dtype, device)
    if key not in _CONST_CACHE:
        _CONST_CACHE[key] = (
            torch.as_tensor(_ZB, dtype=dtype, device=device),
            torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device),
            torch.as_tensor(_QR, dtype=dtype, device=device),
        )
    return _CONST_CACHE[key]


def _body_z_torch(q: torch.Tensor) -> torch.Tensor:
    """Third column of R(q): q (..., 4) unit -> (..., 3)."""
    zb, e3, _ = _consts(q.dtype, q.device)
    outer = (q.unsqueeze(-1) * q.unsqueeze(-2)).flatten(-2)  # (..., 16)
    return outer @ zb + e3


def _quat_rate_torch(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """q̇ = ½ q ⊗ (0, ω): q (..., 4), body rate ω (..., 3) -> (..., 4)."""
    _, _, qr = _consts(q.dtype, q.device)
    outer = (q.unsqueeze(-1) * w.unsqueeze(-2)).flatten(-2)  # (..., 12)
    return outer @ qr


def _body_z_poly(q: torch.Tensor) -> torch.Tensor:
    """`_body_z_torch` written out elementwise: q (..., 4) -> (..., 3)."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y)], -1
    )


def _quat_rate_casadi(q: Any, w: Any) -> Any:
    """CasADi twin of `_quat_rate_torch`: q (4, 1), ω (3, 1) -> (4, 1)."""
    import casadi as ca

    return 0.5 * _quat_mul_casadi(q, ca.vertcat(0, w))


def _quat_mul_casadi(a: Any, b: Any) -> Any:
    """Hamilton product of CasADi quaternions (4, 1), (4, 1) -> (4, 1)."""
    import casadi as ca

    aw, ax, ay, az = a[0], a[1], a[2], a[3]
    bw, bx, by, bz = b[0], b[1], b[2], b[3]
    return ca.vertcat(
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    )


__all__ = ["IdentificationConfig", "QuadrotorModel"]
