"""Analytic model of the monitored open quantum system: Lindblad flow in torch and CasADi."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from metasym_control.dynamics import AdaptBudget, Memory, rollout_by_steps
from metasym_control.envs.open_quantum.params import OpenQuantumParams
from metasym_control.envs.open_quantum.physics import system_operators
from metasym_control.trajectory import Trajectory

logger = logging.getLogger(__name__)

# RK4 is accurate to (hλ)^5 / 120 per substep; hλ <= 0.2 keeps that below 3e-6.
_RK4_STEP_NORM = 0.2


def _superop_commutator(h: np.ndarray) -> np.ndarray:
    """(N², N²) complex superoperator of ρ -> −i[H, ρ] on row-major vec ρ."""
    n = h.shape[0]
    eye = np.eye(n)
    return -1j * (np.kron(h, eye) - np.kron(eye, h.T))


def _superop_dissipator(c: np.ndarray) -> np.ndarray:
    """(N², N²) complex superoperator of ρ -> D[c]ρ = cρc† − ½{c†c, ρ} on row-major vec ρ."""
    n = c.shape[0]
    eye = np.eye(n)
    cdc = c.conj().T @ c
    return np.kron(c, c.conj()) - 0.5 * np.kron(cdc, eye) - 0.5 * np.kron(eye, cdc.T)


def _realify(s: np.ndarray) -> np.ndarray:
    """(N², N²) complex linear map of vec ρ -> (2N², 2N²) real map of [Re vec ρ, Im vec ρ]."""
    return np.block([[s.real, -s.imag], [s.imag, s.real]])


def lindblad_generators(system: str, n: int) -> dict[str, np.ndarray]:
    """Unit-coefficient real generators G of the Lindblad equation dx/dt = A x.

    A(u) = Δ G_detuning + Ω_max (u_x G_drive_x + u_y G_drive_y) + γ1 G_damping
    + γφ G_dephasing + Γm G_measured, acting on x = [Re vec ρ, Im vec ρ] (row-major).

    Returns:
        dict of (2N², 2N²) float64 arrays keyed by the names above (without the G_).
    """
    ops = system_operators(system, n)
    return {
        "detuning": _realify(_superop_commutator(ops.detuning_op)),
        "drive_x": _realify(_superop_commutator(ops.drive_x)),
        "drive_y": _realify(_superop_commutator(ops.drive_y)),
        "damping": _realify(_superop_dissipator(ops.damping_op)),
        "dephasing": _realify(_superop_dissipator(ops.dephasing_op)),
        "measured": _realify(_superop_dissipator(ops.measured_op)),
    }


def _rk4(f: Any, x: Any, h: float, n: int) -> Any:
    """n classical RK4 steps of size h of the autonomous field f (torch or CasADi)."""
    for _ in range(n):
        k1 = f(x)
        k2 = f(x + (0.5 * h) * k1)
        k3 = f(x + (0.5 * h) * k2)
        k4 = f(x + h * k3)
        x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return x


class OpenQuantumModel:
    """Ensemble-mean (Lindblad) dynamics of `OpenQuantumEnv`, plus its conditional update.

    `step` is the *unconditional* map over one control period: the expectation of the next
    conditional state over the measurement noise, i.e. the Lindblad flow
    dρ/dt = −i[H(u), ρ] + Σ_k D[L_k]ρ (every channel at full rate, the monitored one too),
    integrated by `substeps` classical RK4 steps with the drive held. The generator is
    affine in the drive, A(u) = A0 + u_x A_x + u_y A_y, on the real state
    x = [Re vec ρ, Im vec ρ] (2N², row-major); `casadi_step` evaluates exactly the same
    arithmetic on CasADi symbols (same matrices, same substeps). Actions are clipped to
    [−1, 1] like the env does. `conditional_step` is the env's Kraus-map SME update given
    the measurement increments, in torch.

    The env's conditional state fluctuates around this mean: an MPC that predicts with
    `step` from the current conditional state plans on the best prediction of its future.

    Args:
        params: the system (`OpenQuantumParams`).
        dt: control period (μs); None uses `params.dt`.
        substeps: RK4 steps per period; None picks the fewest with h·‖A‖ <= 0.2.
        device: torch device of the tensors.
        dtype: torch dtype (float64 recommended: fidelities near 1 need the digits).

    Attributes:
        state_dim: 2N². action_dim: 2. history_len: 0.
        trusted_lower / trusted_upper: (2N²,) ∓1, the range of density-matrix entries.
    """

    history_len = 0
    action_dim = 2

    def __init__(
        self,
        params: OpenQuantumParams,
        dt: float | None = None,
        substeps: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.params = params
        self.dt = float(dt if dt is not None else params.dt)
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"OpenQuantumModel: dt must be > 0, got {dt!r}")
        self.n = params.dim
        self.state_dim = 2 * self.n * self.n
        self.device = torch.device(device)
        self.dtype = dtype
        gens = lindblad_generators(params.system, self.n)
        self._gens = gens
        a0 = (
            params.detuning * gens["detuning"]
            + params.damping * gens["damping"]
            + params.dephasing * gens["dephasing"]
            + params.measurement_rate * gens["measured"]
        )
        ax = params.max_rabi * gens["drive_x"]
        ay = params.max_rabi * gens["drive_y"]
        self.A0, self.Ax, self.Ay = a0, ax, ay
        if substeps is None:
            norm = sum(float(np.linalg.norm(m, 2)) for m in (a0, ax, ay))
            substeps = max(1, math.ceil(self.dt * norm / _RK4_STEP_NORM))
        if substeps < 1:
            raise ValueError(f"OpenQuantumModel: substeps must be >= 1, got {substeps}")
        self.substeps = int(substeps)
        self.h = self.dt / self.substeps
        # the generators transposed, as torch tensors: the step computes z @ A^T
        self._generators_t = {
            k: torch.as_tensor(v.T.copy(), device=self.device, dtype=dtype)
            for k, v in (("A0", a0), ("Ax", ax), ("Ay", ay))
        }
        self.trusted_lower = -np.ones(self.state_dim)
        self.trusted_upper = np.ones(self.state_dim)
        self._cas: dict[str, Any] | None = None

    # ----- the protocol
    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """Markov model: the empty memory `{}`."""
        return {}

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """Ensemble-mean step: x (..., 2N²), u (..., 2) in [-1, 1] -> x_next (..., 2N²), {}."""
        gens_t = self._generators_t
        a0, ax, ay = gens_t["A0"], gens_t["Ax"], gens_t["Ay"]
        u = torch.clamp(u, -1.0, 1.0)
        ux, uy = u[..., 0:1], u[..., 1:2]  # (..., 1) each

        def f(z: torch.Tensor) -> torch.Tensor:
            return z @ a0 + ux * (z @ ax) + uy * (z @ ay)

        return _rk4(f, x, self.h, self.substeps), {}

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor, memory: Memory) -> torch.Tensor:
        """x0 (..., 2N²), actions (..., T, 2) -> states (..., T, 2N²), x0 excluded."""
        return rollout_by_steps(self, x0, actions, memory)

    def casadi_step(self, x: Any, u: Any) -> Any:
        """The same map as `step` on CasADi (2N², 1) state and (2, 1) action."""
        import casadi as ca

        if self._cas is None:
            # sparse constants: Lindblad superoperators are sparse, so CasADi's products are
            # small expressions even for the N = 10 oscillator
            self._cas = {
                k: ca.sparsify(ca.DM(v))
                for k, v in (("A0", self.A0), ("Ax", self.Ax), ("Ay", self.Ay))
            }
        a0, ax, ay = self._cas["A0"], self._cas["Ax"], self._cas["Ay"]
        ux = ca.fmin(ca.fmax(u[0], -1.0), 1.0)
        uy = ca.fmin(ca.fmax(u[1], -1.0), 1.0)

        def f(z: Any) -> Any:
            return ca.mtimes(a0, z) + ux * ca.mtimes(ax, z) + uy * ca.mtimes(ay, z)

        return _rk4(f, x, self.h, self.substeps)

    # ----- the conditional update
    def conditional_step(self, x: torch.Tensor, u: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        """The env's conditional (SME) update given the measurement record, in torch.

        The same Kraus-map step as `metasym_control.envs.open_quantum.SMEBatch`, driven by
        the observed increments instead of fresh noise; with the env's per-substep record
        (`env.measurement_record(per_substep=True)`) it reproduces the env's states.

        Args:
            x: (..., 2N²) conditional states.
            u: (..., 2) normalised drive held over the period (clipped to [-1, 1]).
            dy: (..., S) record increments dY of S equal integration steps of dt / S (√μs).

        Returns:
            (..., 2N²) conditional states after dt.
        """
        p = self.params
        n = self.n
        cdt = torch.complex128 if self.dtype == torch.float64 else torch.complex64
        ops = system_operators(p.system, n)

        def c(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=cdt, device=self.device)

        batch = x.shape[:-1]
        n2 = n * n
        rho = torch.complex(x[..., :n2], x[..., n2:]).reshape(*batch, n, n).to(cdt)
        u = torch.clamp(u, -1.0, 1.0).to(cdt)
        s_count = dy.shape[-1]
        h = self.dt / s_count
        eta, gm = p.efficiency, p.measurement_rate
        H = c(p.detuning * ops.detuning_op) + p.max_rabi * (
            u[..., 0, None, None] * c(ops.drive_x) + u[..., 1, None, None] * c(ops.drive_y)
        )

        def dag(a: torch.Tensor) -> torch.Tensor:
            return a.conj().transpose(-1, -2)

        kd = 0.5 * (
            p.damping * ops.damping_op.conj().T @ ops.damping_op
            + p.dephasing * ops.dephasing_op.conj().T @ ops.dephasing_op
            + gm * ops.measured_op.conj().T @ ops.measured_op
        )
        K = 1j * H + c(kd)
        S = c(math.sqrt(eta * gm) * ops.measured_op)
        S2 = S @ S
        if p.system == "qubit":
            jl = [
                math.sqrt(p.damping) * ops.damping_op,
                math.sqrt(p.dephasing + (1 - eta) * gm) * ops.dephasing_op,
            ]
        else:
            jl = [
                math.sqrt(p.damping + (1 - eta) * gm) * ops.damping_op,
                math.sqrt(p.dephasing) * ops.dephasing_op,
            ]
        J = [c(j) for j in jl]
        P = [J[a] @ J[b] for a in range(len(J)) for b in range(len(J))]
        eye = torch.eye(n, dtype=cdt, device=self.device)
        M0 = eye - h * K + 0.5 * h * h * (K @ K)
        C = S - 0.5 * h * (K @ S + S @ K)
        JB = [j - 0.5 * h * (K @ j + j @ K) for j in J]
        dyc = dy.to(cdt)
        for i in range(s_count):
            d = dyc[..., i, None, None]
            M = M0 + C * d + 0.5 * S2 * (d * d - h)
            new = M @ rho @ dag(M)
            for jb in JB:
                new = new + h * (jb @ rho @ dag(jb))
            for pp in P:
                new = new + 0.5 * h * h * (pp @ rho @ dag(pp))
            tr = torch.diagonal(new, dim1=-2, dim2=-1).sum(-1).real
            new = new / tr[..., None, None]
            rho = 0.5 * (new + dag(new))
        v = rho.reshape(*batch, n2)
        return torch.cat([v.real, v.imag], dim=-1).to(self.dtype)

    # ----- identification
    def adapt(self, support: Trajectory, budget: AdaptBudget) -> OpenQuantumModel:
        """Identify the rates from support trajectories by least squares; `self` is untouched.

        Two least-squares problems over every valid transition (x_k, u_k) -> x_{k+1}:
        1. Gauss–Newton on the one-step residual x_{k+1} − step(x_k, u_k; θ) for the drift
           parameters θ = (Δ, Ω_max, γ_L, γ_Z): γ_L and γ_Z are the total rates of the
           damping-like and dephasing-like channels (qubit: γ_L = γ1, γ_Z = γφ + Γm;
           oscillator: γ_L = γ1 + Γm, γ_Z = γφ). The conditional states' innovations have
           zero mean, so the fit of the ensemble map is unbiased.
        2. The innovations' size gives ηΓm: residual r_k ≈ √(ηΓm) g_k ΔW with
           g_k = vec(H[C]ρ_k), so ηΓm = Σ (r_k·g_k)² / (dt Σ |g_k|⁴).
        The efficiency η is not identifiable from states alone and is kept from `self`;
        Γm = ηΓm / η is split off the matching total rate.

        Args:
            support: trajectories of this env (states (M, T+1, 2N²), actions (M, T, 2)).
            budget: `inner_steps` caps the Gauss–Newton iterations (at least 3 are run).

        Returns:
            A new `OpenQuantumModel` with the identified parameters.
        """
        if support.state_dim != self.state_dim or support.action_dim != 2:
            raise ValueError(
                f"OpenQuantumModel.adapt: support has nx={support.state_dim}, "
                f"nu={support.action_dim}; expected {self.state_dim}, 2"
            )
        mask = support.valid_mask()
        if not mask.any():
            return OpenQuantumModel(self.params, self.dt, self.substeps, self.device, self.dtype)
        xs = torch.as_tensor(support.states[:, :-1][mask], dtype=torch.float64)
        xn = torch.as_tensor(support.states[:, 1:][mask], dtype=torch.float64)
        us = torch.clamp(torch.as_tensor(support.actions[mask], dtype=torch.float64), -1, 1)
        p = self.params
        g = {k: torch.as_tensor(v.T.copy(), dtype=torch.float64) for k, v in self._gens.items()}
        qubit = p.system == "qubit"
        if qubit:
            gl, gz = g["damping"], g["dephasing"]  # σz/√2 is both channels
            theta = torch.tensor(
                [p.detuning, p.max_rabi, p.damping, p.dephasing + p.measurement_rate],
                dtype=torch.float64,
            )
        else:
            gl, gz = g["damping"], g["dephasing"]
            theta = torch.tensor(
                [p.detuning, p.max_rabi, p.damping + p.measurement_rate, p.dephasing],
                dtype=torch.float64,
            )
        h, ns = self.h, self.substeps
        ux, uy = us[:, 0:1], us[:, 1:2]
        nx = self.state_dim
        # the five generators side by side, transposed and sparse: one product per stage
        gcat_t = (
            torch.cat([g["detuning"], g["drive_x"], g["drive_y"], gl, gz], dim=1)
            .T.contiguous()
            .to_sparse()
        )  # (5 nx, nx)

        def predict_with_sensitivities(th: torch.Tensor) -> torch.Tensor:
            """RK4 on [x, ∂x/∂θ_1..4]: exactly the derivative of the discrete RK4 map.

            Returns (5, M, nx): the prediction and its four sensitivities.
            """

            def f(z: torch.Tensor) -> torch.Tensor:  # z (5, M, nx)
                y = torch.sparse.mm(gcat_t, z.reshape(-1, nx).T).T  # (5M, 5nx)
                y = y.reshape(5, -1, 5, nx)
                yd, yx, yy, yl, yz = (y[:, :, i] for i in range(5))  # (5, M, nx) each
                ydrive = ux * yx + uy * yy
                az = th[0] * yd + th[1] * ydrive + th[2] * yl + th[3] * yz
                forcing = torch.stack([torch.zeros_like(yd[0]), yd[0], ydrive[0], yl[0], yz[0]])
                return az + forcing

            z0 = torch.cat([xs[None], torch.zeros(4, *xs.shape, dtype=xs.dtype)])
            return _rk4(f, z0, h, ns)

        # the innovation of a conditional state lies along g_k = vec(H[C]ρ_k); projecting
        # it out of the residuals removes the measurement noise from the drift fit
        gv_np = self._innovation_directions(xs.numpy())
        gv = torch.as_tensor(gv_np, dtype=torch.float64)
        gn = gv / torch.clamp(gv.norm(dim=1, keepdim=True), min=1e-12)

        def project(v: torch.Tensor) -> torch.Tensor:
            return v - (v * gn).sum(-1, keepdim=True) * gn

        iters = max(3, min(budget.inner_steps, 20))
        for _ in range(iters):
            z = predict_with_sensitivities(theta)
            r = project(xn - z[0]).reshape(-1)  # (R,)
            jac = -project(z[1:]).reshape(4, -1).T  # (R, 4)
            jtj = jac.T @ jac
            lam = 1e-9 * torch.trace(jtj)
            delta = torch.linalg.solve(jtj + lam * torch.eye(4, dtype=jtj.dtype), -jac.T @ r)
            theta = theta + delta
            if bool(torch.all(delta.abs() <= 1e-7 * (1.0 + theta.abs()))):
                break
        det, rabi, gam_l, gam_z = (float(v) for v in theta)
        rabi, gam_l, gam_z = max(rabi, 0.0), max(gam_l, 0.0), max(gam_z, 0.0)
        # innovation size -> η Γm
        with torch.no_grad():
            res = (xn - predict_with_sensitivities(theta)[0]).numpy()
        proj = np.sum(res * gv_np, axis=1)
        g2 = np.sum(gv_np * gv_np, axis=1)
        denom = self.dt * float(np.sum(g2 * g2))
        eta = p.efficiency
        total_m = gam_z if qubit else gam_l
        if denom > 1e-300 and eta > 0:
            gm = min(float(np.sum(proj**2)) / denom / eta, total_m)
        else:
            gm = min(p.measurement_rate, total_m)
        rest = total_m - gm
        if qubit:
            new = p.replace(
                detuning=det, max_rabi=rabi, damping=gam_l, dephasing=rest, measurement_rate=gm
            )
        else:
            new = p.replace(
                detuning=det, max_rabi=rabi, damping=rest, dephasing=gam_z, measurement_rate=gm
            )
        logger.info("OpenQuantumModel.adapt: %s", new)
        return OpenQuantumModel(new, self.dt, self.substeps, self.device, self.dtype)

    def _innovation_directions(self, xs: np.ndarray) -> np.ndarray:
        """(M, 2N²) real vec(H[C]ρ) of each state (M, 2N²), C the unit-rate monitored operator."""
        cm = system_operators(self.params.system, self.n).measured_op
        n2 = self.n * self.n
        rho = (xs[:, :n2] + 1j * xs[:, n2:]).reshape(-1, self.n, self.n)
        mean = np.einsum("ij,bji->b", cm + cm.conj().T, rho).real
        hc = cm @ rho + rho @ cm.conj().T - mean[:, None, None] * rho
        return np.concatenate([hc.reshape(-1, n2).real, hc.reshape(-1, n2).imag], axis=1)
