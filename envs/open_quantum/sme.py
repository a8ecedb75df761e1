"""The batched stochastic-master-equation integrator (a Kraus-map step, physical at every step)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metasym_control.envs.open_quantum.params import OpenQuantumParams
from metasym_control.envs.open_quantum.physics import system_operators


class SMEBatch:
    """A batch of B conditional density matrices under homodyne detection (numpy, complex128).

    Every trajectory has its own parameters (same system kind, N, dt and substeps). One
    integration step of length h from ρ with drive held over the control period:

        K   = iH + ½ Σ_all rates·L†L                      (H includes the drive)
        dY  = √η <c + c†>_ρ h + ΔW,        ΔW ~ N(0, h),  c = √Γm·C (monitored)
        M   = I − hK + ½h²K² + √η·(c − ½h(Kc + cK))·dY + ½η·c²·(dY² − h)
        ρ̃   = MρM† + h Σ_j B_j ρ B_j† + ½h² Σ_jk (J_j J_k) ρ (J_j J_k)†
        ρ'  = ρ̃ / Tr ρ̃,  then Hermitised

    with J_j the unmonitored channels (√γ1 L, √γφ Z and √(1−η) c) and their midpoint
    ("sandwich") corrections B_j = J_j − ½h(K J_j + J_j K). Every term is of Kraus form
    AρA†, so ρ' is Hermitian, positive semi-definite and of unit trace at every step. With
    the measurement off (Γm = 0 or η = 0) the map is the Le Bris–Rouchon second-order CPTP
    scheme for the Lindblad equation (global error O(h²)); with the measurement on, the
    stochastic part is the Rouchon–Ralph (2015) scheme, whose ½ηc²(dY² − h) term gives
    strong order 1 (measured in tests/envs/test_open_quantum.py and docs/open_quantum.md).

    Args:
        params: B parameter sets of one system kind and dimension, with equal `dt`,
            `substeps`.
        evaluation: "operator" (products of N × N matrices), "superoperator" (the same map
            as a polynomial in dY of (N², N²) matrices, see `superoperators`) or "auto"
            (superoperator for N <= 4). Both give the same states to round-off.
    """

    def __init__(self, params: Sequence[OpenQuantumParams], evaluation: str = "auto") -> None:
        if evaluation not in ("auto", "operator", "superoperator"):
            raise ValueError(
                f"SMEBatch.evaluation must be auto/operator/superoperator: {evaluation}"
            )
        if not params:
            raise ValueError("SMEBatch needs at least one parameter set")
        p0 = params[0]
        for p in params:
            if (p.system, p.dim, p.dt, p.substeps) != (p0.system, p0.dim, p0.dt, p0.substeps):
                raise ValueError("SMEBatch: all parameter sets must share system, N, dt, substeps")
        self.params = list(params)
        self.system = p0.system
        self.n = p0.dim
        self.dt = p0.dt
        self.substeps = p0.substeps
        self.h = p0.h
        ops = system_operators(p0.system, self.n)
        b = len(params)

        def col(name: str) -> np.ndarray:
            return np.array([getattr(p, name) for p in params], dtype=np.float64)[:, None, None]

        det, rabi = col("detuning"), col("max_rabi")
        g1, gphi, gm, eta = (
            col("damping"),
            col("dephasing"),
            col("measurement_rate"),
            col("efficiency"),
        )
        self.H0 = det * ops.detuning_op  # (B, N, N)
        self.HX = rabi * ops.drive_x  # (B, N, N), per unit u_x
        self.HY = rabi * ops.drive_y  # (B, N, N), per unit u_y

        def dag(a: np.ndarray) -> np.ndarray:
            return a.conj().T

        self.Kd = 0.5 * (
            g1 * (dag(ops.damping_op) @ ops.damping_op)
            + gphi * (dag(ops.dephasing_op) @ ops.dephasing_op)
            + gm * (dag(ops.measured_op) @ ops.measured_op)
        )  # (B, N, N)
        # the monitored operator with its detection factor: s = √η c = √(ηΓm) C
        self.S = np.sqrt(eta * gm) * ops.measured_op  # (B, N, N)
        self.S2 = self.S @ self.S
        self.measured = bool(np.any(eta * gm > 0))
        # unmonitored channels, merged where they share an operator
        jumps: list[np.ndarray] = []
        if self.system == "qubit":
            jumps.append(np.sqrt(g1) * ops.damping_op)
            # √γφ σz/√2 and √((1-η)Γm) σz/√2 add in quadrature
            jumps.append(np.sqrt(gphi + (1.0 - eta) * gm) * ops.dephasing_op)
        else:
            jumps.append(np.sqrt(g1 + (1.0 - eta) * gm) * ops.damping_op)
            jumps.append(np.sqrt(gphi) * ops.dephasing_op)
        # (B, N, N) each; kept as separate contiguous arrays: numpy's broadcast batched
        # matmul over an extra channel axis is an order of magnitude slower
        self.J = [np.ascontiguousarray(j) for j in jumps]
        self.JH = [np.ascontiguousarray(np.conj(np.swapaxes(j, -1, -2))) for j in jumps]
        self.eye = np.eye(self.n, dtype=np.complex128)
        self.batch = b
        # the superoperator form (5 (N², N²) matrices per trajectory, built once per control
        # period) needs fewer numpy calls per substep: faster for small N only (measured:
        # qubit about 2× faster, N = 10 several times slower)
        if evaluation == "auto":
            small = self.n <= 4 and b * 5 * self.n**4 <= 2_000_000
            evaluation = "superoperator" if small else "operator"
        self.evaluation = evaluation
        n2 = self.n * self.n
        # w: Tr(s ρ) = vec(ρ) · vec(sᵀ), so √η<c + c†> = 2 Re(vec(ρ) · w)
        self._w = np.ascontiguousarray(np.swapaxes(self.S, -1, -2).reshape(b, n2))
        self._diag = np.arange(self.n) * (self.n + 1)

    def prepare(self, u: np.ndarray) -> dict[str, np.ndarray]:
        """The drive-dependent operators held over one control period.

        Args:
            u: (B, 2) normalised drive quadratures (already validated and clipped).

        Returns:
            A dict of (B, N, N) complex arrays used by `substep`.
        """
        h = self.h
        H = self.H0 + u[:, 0, None, None] * self.HX + u[:, 1, None, None] * self.HY
        K = 1j * H + self.Kd  # (B, N, N)
        M0 = self.eye - h * K + 0.5 * h * h * (K @ K)
        C = self.S - 0.5 * h * (K @ self.S + self.S @ K)
        jb = [j - 0.5 * h * (K @ j + j @ K) for j in self.J]
        out = {"M0": M0, "C": C}
        for i, b in enumerate(jb):
            out[f"JB{i}"] = b
            out[f"JBH{i}"] = np.conj(np.swapaxes(b, -1, -2))
        return out

    def substep(
        self, rho: np.ndarray, pre: dict[str, np.ndarray], dw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One integration step of length h.

        Args:
            rho: (B, N, N) density matrices.
            pre: output of `prepare` for the current drive.
            dw: (B,) Wiener increments ΔW ~ N(0, h), in √μs.

        Returns:
            The new (B, N, N) density matrices and the (B,) record increments dY (√μs).
        """
        h = self.h
        S = self.S
        # <c + c†> √η = Tr[(s + s†) ρ]
        mean = 2.0 * np.einsum("bij,bji->b", S, rho).real
        dy = mean * h + dw
        dyb = dy[:, None, None]
        M = pre["M0"] + pre["C"] * dyb + 0.5 * self.S2 * (dyb * dyb - h)
        new = M @ rho @ np.conj(np.swapaxes(M, -1, -2))
        # midpoint-corrected jumps, then the pair terms Σ_jk (J_j J_k) ρ (J_j J_k)†
        # computed as E(E(ρ)) with E(ρ) = Σ_j J_j ρ J_j†
        once = np.zeros_like(rho)
        for i, (j, jh) in enumerate(zip(self.J, self.JH)):
            new = new + h * (pre[f"JB{i}"] @ rho @ pre[f"JBH{i}"])
            once = once + j @ rho @ jh
        for j, jh in zip(self.J, self.JH):
            new = new + 0.5 * h * h * (j @ once @ jh)
        tr = np.einsum("bii->b", new).real
        new = new / tr[:, None, None]
        new = 0.5 * (new + np.conj(np.swapaxes(new, -1, -2)))
        return new, dy

    def step(self, rho: np.ndarray, u: np.ndarray, dw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One control period: `substeps` integration steps with the drive held.

        Args:
            rho: (B, N, N) density matrices.
            u: (B, 2) normalised drive quadratures in [-1, 1].
            dw: (B, substeps) Wiener increments, each ~ N(0, h).

        Returns:
            (B, N, N) density matrices after dt and the (B, substeps) record increments dY.
        """
        dys = np.empty((self.batch, self.substeps))
        if self.evaluation == "superoperator":
            return self._step_superoperator(rho, u, dw)
        pre = self.prepare(u)
        for i in range(self.substeps):
            rho, dys[:, i] = self.substep(rho, pre, dw[:, i])
        return rho, dys

    def superoperators(self, u: np.ndarray) -> np.ndarray:
        """The same Kraus map as a polynomial in dY on row-major vec ρ (superoperator form).

        With M = A + dY·C + dY²·D (A = M0 − ½h s², D = ½ s²) and vec(XρZ†) = (X ⊗ Z̄) vec ρ,
        vec ρ̃ = Σ_p dY^p S_p vec ρ with S_0 = A⊗Ā + jumps + pairs, S_1 = C⊗Ā + A⊗C̄,
        S_2 = D⊗Ā + C⊗C̄ + A⊗D̄, S_3 = D⊗C̄ + C⊗D̄, S_4 = D⊗D̄.

        Args:
            u: (B, 2) normalised drive.

        Returns:
            (B, 5, N², N²) complex S_0..S_4.
        """
        b, n, h = self.batch, self.n, self.h
        pre = self.prepare(u)

        def kron(x: np.ndarray, z: np.ndarray) -> np.ndarray:
            # (B, N, N) ⊗ conj (B, N, N) -> (B, N², N²), row-major
            return (x[:, :, None, :, None] * z.conj()[:, None, :, None, :]).reshape(b, n * n, n * n)

        d = 0.5 * self.S2
        a = pre["M0"] - h * d
        c = pre["C"]
        once = np.sum([kron(j, j) for j in self.J], axis=0)  # (B, N², N²)
        s0 = kron(a, a) + 0.5 * h * h * (once @ once)
        for i in range(len(self.J)):
            s0 = s0 + h * kron(pre[f"JB{i}"], pre[f"JB{i}"])
        s1 = kron(c, a) + kron(a, c)
        s2 = kron(d, a) + kron(c, c) + kron(a, d)
        s3 = kron(d, c) + kron(c, d)
        s4 = kron(d, d)
        return np.stack([s0, s1, s2, s3, s4], axis=1)

    def _step_superoperator(
        self, rho: np.ndarray, u: np.ndarray, dw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        b, n = self.batch, self.n
        n2 = n * n
        # (B, 5N², N²): one plain batched product per substep (no broadcasting: numpy's
        # broadcast matmul falls off its BLAS path)
        sup = np.ascontiguousarray(self.superoperators(u).reshape(b, 5 * n2, n2))
        v = rho.reshape(b, n2, 1)
        dys = np.empty((b, self.substeps))
        for i in range(self.substeps):
            mean = 2.0 * np.einsum("bk,bk->b", v[:, :, 0], self._w).real
            dy = mean * self.h + dw[:, i]
            dys[:, i] = dy
            pows = dy[:, None] ** np.arange(5)  # (B, 5)
            y = (sup @ v).reshape(b, 5, n2)
            v = np.einsum("bp,bpk->bk", pows.astype(np.complex128), y)[..., None]
            v = v / v[:, self._diag, 0].sum(axis=1).real[:, None, None]
        new = v.reshape(b, n, n)
        return 0.5 * (new + np.conj(np.swapaxes(new, -1, -2))), dys
