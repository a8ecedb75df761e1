"""Analytic Hooke-spring model of the spring mesh: batched torch, symbolic CasADi, LS adaptation."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import casadi as ca
import numpy as np
import torch

from metasym_control.dynamics import AdaptBudget, Memory, rollout_by_steps
from metasym_control.envs.spring_mesh.params import SpringMeshParams
from metasym_control.envs.spring_mesh.physics import (
    BENCHMARK_TIMESTEP,
    DEFAULT_SUBSTEPS,
    GRAVITY,
    LENGTH_EPS,
    particle_masses,
    spring_stiffnesses,
)
from metasym_control.trajectory import Trajectory

logger = logging.getLogger(__name__)

DEFAULT_DT = DEFAULT_SUBSTEPS * BENCHMARK_TIMESTEP
"""Control period of the default 5×5 environment, s (52 · 2π/805 ≈ 0.4059 s)."""

MODEL_MAX_SUBSTEP = 0.05
"""Largest RK4 substep the model takes by default, s."""

DENSE_MAX_FREE = 40
"""Meshes with at most this many free particles use dense maps (see `SpringMeshModel`)."""

MODEL_MAX_OMEGA_H = 0.2
"""Default substeps keep `h · ω_bound <= 0.2` (ω_bound: `omega_bound`, 4 rad/s for the
default mesh, whose true ω_max is 2.63): 9 substeps of 0.045 s for the default dt instead of
the simulator's 52. One-step error, measured, relative to the state's change: 1.3e-6 (1
substep: 7e-3, 2: 5e-4, 3: 1e-4, 4: 3e-5, 6: 6.5e-6); energy drift of an undamped 100-step
(40 s) rollout 1.7e-5 (4 substeps: 1.6e-3). The default is the accurate reference (it is
also the analytic baseline of long-horizon accuracy tables); sampling MPC may pass fewer."""


def omega_bound(params: SpringMeshParams) -> float:
    """Gershgorin upper bound on the fastest mode's angular frequency, rad/s.

    `ω_max² <= max_n 2 Σ_{s at n} k_s / m_n` (each spring adds a unit-norm projector to the
    stiffness matrix's blocks at both ends); 4.0 rad/s for the default mesh (true: 2.63).
    """
    lay = params.layout
    ksum = np.abs(lay.incidence).T @ spring_stiffnesses(params)  # (nf,) N/m
    return float(np.sqrt(np.max(2.0 * ksum / particle_masses(params))))


@dataclass(frozen=True)
class SpringMeshAdaptConfig:
    """How `SpringMeshModel.adapt` identifies parameters.

    Attributes:
        masses: "each" identifies one mass per free particle, "scale" one common mass scale
            (keeping the model's per-particle ratios): fewer unknowns for large meshes.
        max_iter: Gauss-Newton (Levenberg-Marquardt) iterations at most.
        tol: stop when the relative decrease of the residual sum of squares is below this
            (or a step changes no parameter by more than 1e-10).
        chunk_elems: residual-Jacobian entries evaluated at once (bounds memory).
    """

    masses: Literal["each", "scale"] = "each"
    max_iter: int = 30
    tol: float = 1e-8
    chunk_elems: int = 20_000_000


class SpringMeshModel:
    """Hooke-spring dynamics of a `SpringMeshParams` mesh, the env's discrete map in torch/CasADi.

    State x = [q (2·n_free) m, p (2·n_free) kg·m/s] (canonical; see `SpringMeshEnv`); action
    u (nu = 2·n_act) normalised to [-1, 1], clipped to it and mapped to forces `u · max_force`
    N on the actuated particles. Continuous dynamics:
    `dq/dt = p / m`, `dp/dt = Σ_s k_s (L_s - L0_s) e_s - γ p + F(u) (- m g ŷ)`,
    integrated with classical RK4 over `n_substeps` equal substeps per control period `dt`,
    the control held constant (MuJoCo's RK4 with the same substeps is the same map).

    Implements `metasym_control.dynamics.DynamicsModel` (history_len 0, memory `{}`) and
    `SymbolicModel.casadi_step`.

    Args:
        params: the mesh.
        dt: control period, s (use the env's `dt`; `from_env` does).
        n_substeps: RK4 substeps per control period; None = the fewest with
            `h <= min(0.05 s, 0.2 / omega_bound(params))` (9 for the default mesh and dt),
            6× cheaper than the simulator's step and accurate to ~1e-6 of a step's change
            (see `MODEL_MAX_OMEGA_H` for fewer); pass the env's `n_substeps` (or
            `from_env(env, exact=True)`) for the simulator's exact map.
        device: torch device of the model's tensors.
        dtype: torch dtype (float64 default).
        maps: how spring vectors and forces are gathered: "dense" (one GEMM each way; fastest
            for small meshes), "sparse" (index gather / scatter-add; memory linear in the
            mesh), "auto" = dense up to `DENSE_MAX_FREE` free particles.
    """

    history_len = 0
    trusted_lower: np.ndarray | None = None
    trusted_upper: np.ndarray | None = None

    def __init__(
        self,
        params: SpringMeshParams,
        dt: float = DEFAULT_DT,
        n_substeps: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        maps: Literal["auto", "dense", "sparse"] = "auto",
    ) -> None:
        if maps not in ("auto", "dense", "sparse"):
            raise ValueError(f"SpringMeshModel: maps must be auto, dense or sparse: {maps!r}")
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"SpringMeshModel: dt must be > 0, got {dt}")
        if n_substeps is None:
            h_max = min(MODEL_MAX_SUBSTEP, MODEL_MAX_OMEGA_H / omega_bound(params))
            n_substeps = max(1, math.ceil(dt / h_max - 1e-9))
        if n_substeps < 1:
            raise ValueError(f"SpringMeshModel: n_substeps must be >= 1, got {n_substeps}")
        self.params = params
        self.dt = float(dt)
        self.n_substeps = int(n_substeps)
        self.h = self.dt / self.n_substeps
        self.device = torch.device(device)
        self.dtype = dtype
        lay = params.layout
        self.n_free = lay.n_free
        self.state_dim = 4 * lay.n_free
        self.action_dim = 2 * len(lay.actuated_slot)
        nf, nu = self.n_free, self.action_dim

        # Constant geometry: d_s = x_second - x_first = -(inc @ Q) + d_pin.
        inc = np.asarray(lay.incidence)  # (S, nf)
        rest_all = np.concatenate([lay.rest[lay.free], lay.rest[lay.pinned]])  # (N, 2)
        ps = lay.pair_slots
        pin_part = np.zeros((lay.n_springs, 2))
        for s, (a, b) in enumerate(ps):
            if b >= nf:
                pin_part[s] += rest_all[b]
            if a >= nf:
                pin_part[s] -= rest_all[a]
        act = np.zeros((2 * nf, nu))  # (2nf, nu) force map per unit action, N
        for a, slot in enumerate(lay.actuated_slot):
            act[2 * slot, 2 * a] = params.max_force
            act[2 * slot + 1, 2 * a + 1] = params.max_force
        grav = np.zeros(2 * nf)
        if params.gravity:
            grav[1::2] = -GRAVITY  # acceleration; times mass below
        self._np = {
            "inc": inc,
            "pin": pin_part,
            "L0": np.asarray(lay.rest_length),
            "scale": np.asarray(lay.spring_scale),
            "act": act,
            "grav": grav,
        }
        t = {k: torch.tensor(v, dtype=dtype, device=self.device) for k, v in self._np.items()}
        self._pin, self._L0 = t["pin"], t["L0"]
        # Two equivalent ways to go between particle and spring coordinates: small meshes use
        # one dense GEMM each way over the flattened batch (few kernel launches), large ones
        # gather and scatter (the dense map grows as n_free · S).
        self._dense = maps == "dense" or (maps == "auto" and nf <= DENSE_MAX_FREE)
        self.maps: Literal["dense", "sparse"] = "dense" if self._dense else "sparse"
        if self._dense:
            dmat = np.zeros((2 * nf, 2 * lay.n_springs))  # d_flat = pin_flat + q @ dmat
            for c in range(2):
                dmat[c::2, c::2] = -inc.T
            self._dmat = torch.tensor(dmat, dtype=dtype, device=self.device)
            self._gather_t = (-self._dmat).transpose(0, 1).contiguous()  # (2S, 2nf)
            self._pin_flat = self._pin.reshape(-1)
        else:
            self._ends = torch.as_tensor(ps.T.copy(), device=self.device)  # (2, S) slots
            self._pins = torch.tensor(lay.rest[lay.pinned], dtype=dtype, device=self.device)
        self._act_map_t = t["act"].transpose(0, 1).contiguous()  # (nu, 2nf) N per unit
        self._grav = t["grav"]
        self._stiffness = torch.as_tensor(
            spring_stiffnesses(params), dtype=dtype, device=self.device
        )
        self._m2 = torch.as_tensor(
            np.repeat(particle_masses(params), 2), dtype=dtype, device=self.device
        )
        self._gamma = float(params.damping)
        self._casadi_fn: Any = None

    @classmethod
    def from_env(
        cls, env: Any, n_substeps: int | None = None, exact: bool = False
    ) -> SpringMeshModel:
        """The model of a `SpringMeshEnv` (or a wrapper of one) with its params and dt.

        Args:
            env: the environment (unwrapped or wrapped).
            n_substeps: RK4 substeps; None = the model's default (see the class doc).
            exact: use the env's own substeps (the simulator's exact discrete map).
        """
        base = env.unwrapped
        n = base.n_substeps if exact else n_substeps
        return cls(base.params, dt=base.dt, n_substeps=n)

    # --- torch dynamics --------------------------------------------------------------------

    def _spring_force(self, q: torch.Tensor, k: torch.Tensor, kl0: torch.Tensor) -> torch.Tensor:
        """Net spring force on the free particles.

        Args:
            q: (..., 2nf) positions, m.
            k: (S,) spring constants N/m (or broadcastable, e.g. (P, 1, S) in `adapt`).
            kl0: k times the rest lengths, N (same shape as k).

        Returns:
            (..., 2nf) forces, N.
        """
        d = self._spring_vectors(q)  # (..., S, 2)
        length = self._lengths(d)  # (..., S)
        coef = torch.addcdiv(k, kl0, length, value=-1.0)  # k (1 - L0/L), (..., S)
        return self._spring_to_particles(d * coef.unsqueeze(-1))

    @staticmethod
    def _lengths(d: torch.Tensor) -> torch.Tensor:
        """(..., S) lengths of spring vectors d (..., S, 2), floored at sqrt(LENGTH_EPS) m."""
        return torch.linalg.vector_norm(d, dim=-1).clamp_min(LENGTH_EPS**0.5)

    def _spring_vectors(self, q: torch.Tensor) -> torch.Tensor:
        """Spring vectors, first end to second: q (..., 2nf) m -> (..., S, 2) m."""
        lead = q.shape[:-1]
        if self._dense:
            q2 = q.reshape(-1, 2 * self.n_free)  # (B, 2nf)
            d = torch.addmm(self._pin_flat, q2, self._dmat)  # (B, 2S)
            return d.reshape(*lead, -1, 2)  # (..., S, 2)
        qm = q.reshape(*lead, self.n_free, 2)  # (..., nf, 2)
        pins = self._pins.expand(*lead, -1, 2)  # (..., n_pin, 2)
        pos = torch.cat([qm, pins], dim=-2)  # (..., N, 2) in slot order
        return pos.index_select(-2, self._ends[1]) - pos.index_select(-2, self._ends[0])

    def _spring_to_particles(self, f: torch.Tensor) -> torch.Tensor:
        """Net force on the free particles of spring forces f (..., S, 2) N on each spring's
        first end (the second end feels -f) -> (..., 2nf) N."""
        nf = self.n_free
        lead = f.shape[:-2]
        if self._dense:
            flat = f.reshape(-1, 2 * f.shape[-2])  # (B, 2S)
            return torch.mm(flat, self._gather_t).reshape(*lead, 2 * nf)  # (..., 2nf)
        n_all = self.params.layout.n_particles
        out = f.new_zeros(*lead, n_all, 2)
        out = out.index_add(-2, self._ends[0], f).index_add(-2, self._ends[1], f, alpha=-1.0)
        return out[..., :nf, :].reshape(*lead, 2 * nf)  # (..., 2nf)

    def _step_with(
        self,
        x: torch.Tensor,
        u: torch.Tensor,
        k: torch.Tensor,
        gamma: torch.Tensor | float,
        m2: torch.Tensor,
    ) -> torch.Tensor:
        """RK4 control step with explicit parameters (broadcastable, for identification).

        Args:
            x: (..., nx) states; u: (..., nu) normalised actions.
            k: (S,) spring constants, N/m; gamma: damping rate, 1/s; m2: (2nf,) masses per
                coordinate, kg (or broadcastable batches of them).

        Returns:
            (..., nx) states one control period later.
        """
        nf2 = 2 * self.n_free
        inv_m = 1.0 / m2
        kl0 = k * self._L0
        # Forces constant over the control period: actuators and gravity, (..., 2nf) N.
        const = torch.matmul(u.clamp(-1.0, 1.0), self._act_map_t) + m2 * self._grav
        q, p = x[..., :nf2], x[..., nf2:]

        def acc(qq: torch.Tensor, pp: torch.Tensor) -> torch.Tensor:
            """dp/dt, (..., 2nf) N."""
            f = self._spring_force(qq, k, kl0) + const
            if isinstance(gamma, float):
                return torch.add(f, pp, alpha=-gamma) if gamma else f
            return f - gamma * pp

        # Classical RK4 on (q, p), dq/dt = p / m; fused multiply-adds keep the passes over
        # memory few (the batched model is memory-bound).
        h = self.h
        for _ in range(self.n_substeps):
            a1 = acc(q, p)
            q2 = torch.addcmul(q, p, inv_m, value=0.5 * h)
            p2 = torch.add(p, a1, alpha=0.5 * h)
            a2 = acc(q2, p2)
            q3 = torch.addcmul(q, p2, inv_m, value=0.5 * h)
            p3 = torch.add(p, a2, alpha=0.5 * h)
            a3 = acc(q3, p3)
            q4 = torch.addcmul(q, p3, inv_m, value=h)
            p4 = torch.add(p, a3, alpha=h)
            a4 = acc(q4, p4)
            sp = torch.add(p + p4, p2 + p3, alpha=2.0)  # p1 + 2 p2 + 2 p3 + p4
            sa = torch.add(a1 + a4, a2 + a3, alpha=2.0)
            q = torch.addcmul(q, sp, inv_m, value=h / 6.0)
            p = torch.add(p, sa, alpha=h / 6.0)
        return torch.cat([q, p], dim=-1)

    def _check(self, x: torch.Tensor, u: torch.Tensor) -> None:
        if x.shape[-1] != self.state_dim or u.shape[-1] != self.action_dim:
            raise ValueError(
                f"SpringMeshModel: x (..., {self.state_dim}) and u (..., {self.action_dim}) "
                f"expected, got {tuple(x.shape)} and {tuple(u.shape)}"
            )

    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """Markov model: the memory is empty `{}`."""
        return {}

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """One control step: x (..., nx), u (..., nu) in [-1, 1] -> (x_next (..., nx), {})."""
        self._check(x, u)
        return self._step_with(x, u, self._stiffness, self._gamma, self._m2), memory

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Predict T steps: x0 (..., nx), actions (..., T, nu) -> (..., T, nx), x0 excluded."""
        return rollout_by_steps(self, x0, actions, memory)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Hamiltonian H = Σ p²/(2m) + Σ_s k_s (L_s - L0_s)²/2 (+ Σ m g y), J.

        Args:
            x: (..., nx) states.

        Returns:
            (...) energy, J.
        """
        nf = self.n_free
        q, p = x[..., : 2 * nf], x[..., 2 * nf :]
        d = self._spring_vectors(q)  # (..., S, 2)
        length = self._lengths(d)  # (..., S)
        pot = 0.5 * (self._stiffness * (length - self._L0) ** 2).sum(-1)
        kin = 0.5 * (p * p / self._m2).sum(-1)
        grav = -(self._m2 * self._grav * q).sum(-1)  # m g y with grav_y = -g
        return kin + pot + grav

    # --- CasADi ----------------------------------------------------------------------------

    def _build_casadi(self) -> ca.Function:
        nf, nx, nu = self.n_free, self.state_dim, self.action_dim
        c = self._np
        inc = ca.DM(c["inc"])  # (S, nf)
        pin_t = ca.DM(c["pin"].T)  # (2, S)
        l0 = ca.DM(c["L0"].reshape(1, -1))  # (1, S)
        k = ca.DM(spring_stiffnesses(self.params).reshape(1, -1))  # (1, S)
        m2 = ca.DM(np.repeat(particle_masses(self.params), 2))  # (2nf, 1)
        act = ca.DM(c["act"])  # (2nf, nu)
        grav = ca.DM(c["grav"])  # (2nf, 1)
        gamma = float(self.params.damping)

        def deriv(x: ca.SX, force: ca.SX) -> ca.SX:
            q, p = x[: 2 * nf], x[2 * nf :]
            qm = ca.reshape(q, 2, nf)  # (2, nf): column n = (x_n, y_n)
            d = pin_t - ca.mtimes(qm, inc.T)  # (2, S)
            length = ca.sqrt(ca.sum1(d * d) + LENGTH_EPS)  # (1, S)
            coef = k * (length - l0) / length  # (1, S)
            f = d * ca.repmat(coef, 2, 1)  # (2, S)
            fs = ca.reshape(ca.mtimes(f, inc), 2 * nf, 1)  # (2nf, 1)
            dp = fs + force - gamma * p + m2 * grav
            return ca.vertcat(p / m2, dp)

        xs = ca.SX.sym("x", nx)
        us = ca.SX.sym("u", nu)
        force = ca.mtimes(act, ca.fmin(ca.fmax(us, -1.0), 1.0))
        h = self.h
        k1 = deriv(xs, force)
        k2 = deriv(xs + 0.5 * h * k1, force)
        k3 = deriv(xs + 0.5 * h * k2, force)
        k4 = deriv(xs + h * k3, force)
        sub = ca.Function(
            "spring_mesh_substep", [xs, us], [xs + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)]
        )
        xm = ca.MX.sym("x", nx)
        um = ca.MX.sym("u", nu)
        x = xm
        for _ in range(self.n_substeps):
            x = sub(x, um)
        return ca.Function("spring_mesh_step", [xm, um], [x])

    def casadi_step(self, x: Any, u: Any) -> Any:
        """Symbolic step: CasADi (nx, 1) state and (nu, 1) action -> (nx, 1) next state.

        The same RK4 map as `step` (same substeps, same clipping of u to [-1, 1]).
        """
        if self._casadi_fn is None:
            self._casadi_fn = self._build_casadi()
        return self._casadi_fn(x, u)

    # --- identification --------------------------------------------------------------------

    def with_params(self, params: SpringMeshParams) -> SpringMeshModel:
        """A model of the same dt, substeps, device and dtype for other `params`."""
        return SpringMeshModel(
            params, self.dt, self.n_substeps, self.device, self.dtype, maps=self.maps
        )

    def adapt(
        self,
        support: Trajectory,
        budget: AdaptBudget | None = None,
        config: SpringMeshAdaptConfig | None = None,
    ) -> SpringMeshModel:
        """Identify stiffness scale, damping and masses from `support` by least squares.

        Levenberg-Marquardt (Gauss-Newton) on the one-step prediction residuals of every
        valid transition, each state component weighted by the inverse RMS of its change,
        over θ = (log k, γ, log m_n) starting from this model's parameters, with the
        Jacobian by central differences in θ (one batched forward pass); spring-scale
        ratios, geometry and the force bound are kept. `budget` is accepted for the common
        interface; an analytic model needs no inner steps or learning rate.

        Args:
            support: trajectories of one system, with `support.dt == self.dt`.
            budget: ignored (see above).
            config: identification options.

        Returns:
            A new `SpringMeshModel`; `self` is untouched.

        Raises:
            ValueError: mismatched dt or state/action size, or no valid transition.
        """
        cfg = config or SpringMeshAdaptConfig()
        if abs(support.dt - self.dt) > 1e-9 * self.dt:
            raise ValueError(
                f"SpringMeshModel.adapt: support dt {support.dt} != model dt {self.dt}"
            )
        if support.state_dim != self.state_dim or support.action_dim != self.action_dim:
            raise ValueError("SpringMeshModel.adapt: support of another state or action size")
        mask = support.valid_mask()
        if not mask.any():
            raise ValueError("SpringMeshModel.adapt: no valid transition in the support data")
        kw: dict[str, Any] = {"dtype": self.dtype, "device": self.device}
        x0 = torch.as_tensor(support.states[:, :-1][mask], **kw)  # (B, nx)
        x1 = torch.as_tensor(support.states[:, 1:][mask], **kw)  # (B, nx)
        u = torch.as_tensor(support.actions[mask], **kw)  # (B, nu)
        w = 1.0 / torch.sqrt(((x1 - x0) ** 2).mean(0) + 1e-24)  # (nx,) residual weights

        p0 = self.params
        m_base = torch.as_tensor(particle_masses(p0), **kw)  # (nf,)
        k_ratio = torch.tensor(p0.layout.spring_scale, **kw)  # (S,)
        each = cfg.masses == "each"
        n_m = self.n_free if each else 1
        theta = torch.cat(
            [
                torch.tensor([math.log(p0.stiffness), p0.damping], **kw),
                torch.log(m_base) if each else torch.zeros(1, **kw),
            ]
        )

        n_theta = 2 + n_m

        def predict(th: torch.Tensor, xa: torch.Tensor, ua: torch.Tensor) -> torch.Tensor:
            """th (P, n_theta), xa (B, nx), ua (B, nu) -> weighted predictions (P, B, nx)."""
            k = torch.exp(th[:, :1, None]) * k_ratio  # (P, 1, S)
            g = th[:, 1:2, None]  # (P, 1, 1)
            m = torch.exp(th[:, 2:]) if each else m_base * torch.exp(th[:, 2:3])  # (P, nf)
            m2 = torch.repeat_interleave(m, 2, dim=-1)[:, None, :]  # (P, 1, 2nf)
            return self._step_with(xa[None], ua[None], k, g, m2) * w

        # Central differences in θ, all 2·n_theta + 1 parameter sets in one batched forward
        # pass (much cheaper than forward-mode AD here); the residual itself is exact.
        eps = 1e-6
        shifts = torch.cat([torch.zeros(1, n_theta, **kw), eps * torch.eye(n_theta, **kw)])
        shifts = torch.cat([shifts, -shifts[1:]])  # (2 n_theta + 1, n_theta)
        chunk = max(1, cfg.chunk_elems // (self.state_dim * shifts.shape[0]))
        target = x1 * w  # (B, nx)

        def normal_eq(th: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
            jtj = torch.zeros(n_theta, n_theta, **kw)
            jtr = torch.zeros(n_theta, **kw)
            sse = 0.0
            with torch.no_grad():
                for s in range(0, x0.shape[0], chunk):
                    sl = slice(s, s + chunk)
                    pred = predict(th + shifts, x0[sl], u[sl])  # (2n+1, b, nx)
                    r = (pred[0] - target[sl]).reshape(-1)  # (b·nx,)
                    j = (pred[1 : n_theta + 1] - pred[n_theta + 1 :]) / (2 * eps)  # (n, b, nx)
                    j = j.reshape(n_theta, -1).T  # (b·nx, n_theta)
                    jtj += j.T @ j
                    jtr += j.T @ r
                    sse += float((r * r).sum())
            return jtj, jtr, sse

        def sse_of(th: torch.Tensor) -> float:
            total = 0.0
            big = max(1, cfg.chunk_elems // self.state_dim)
            with torch.no_grad():
                for s in range(0, x0.shape[0], big):
                    sl = slice(s, s + big)
                    total += float(((predict(th[None], x0[sl], u[sl])[0] - target[sl]) ** 2).sum())
            return total

        lam = 1e-3
        jtj, jtr, sse = normal_eq(theta)
        for it in range(cfg.max_iter):
            diag = torch.diag(torch.diagonal(jtj)).clamp_min(1e-30)
            step = torch.linalg.solve(jtj + lam * diag + 1e-30 * torch.eye(n_theta, **kw), -jtr)
            trial = theta + step
            trial[1] = trial[1].clamp_min(0.0)
            new_sse = sse_of(trial)
            if math.isfinite(new_sse) and new_sse < sse:
                rel = (sse - new_sse) / max(sse, 1e-300)
                theta = trial
                lam = max(lam / 10.0, 1e-12)
                logger.debug("adapt iter %d: sse %.3e (lambda %.1e)", it, new_sse, lam)
                if rel < cfg.tol or float(step.abs().max()) < 1e-10:
                    break
                jtj, jtr, sse = normal_eq(theta)
            else:
                lam *= 10.0
                if lam > 1e4:  # no descent even along the scaled gradient: converged
                    break

        g = theta[1]
        stiffness = float(torch.exp(theta[0]))
        masses = (torch.exp(theta[2:]) if each else m_base * torch.exp(theta[2])).cpu().numpy()
        scale = float(masses.mean())
        new = p0.replace(
            stiffness=stiffness,
            damping=max(float(g), 0.0),
            mass=scale,
            mass_scales=tuple(float(v) for v in masses / scale),
        )
        logger.info(
            "SpringMeshModel.adapt: k %.4g -> %.4g N/m, gamma %.4g -> %.4g 1/s, mean mass "
            "%.4g -> %.4g kg",
            p0.stiffness,
            new.stiffness,
            p0.damping,
            new.damping,
            float(m_base.mean()),
            scale,
        )
        return self.with_params(new)
