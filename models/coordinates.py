"""Canonical-coordinate maps: environment state <-> (q, p, rest) for the symplectic encoder."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from metasym_control.envs.quadrotor.params import QuadrotorParams

# Nominal mass (kg) of the reference quadrotor (the Skydio X2): the environment's default.
QUADROTOR_NOMINAL_MASS = QuadrotorParams().mass


@dataclass(frozen=True)
class CoordinateMap:
    """Which state components form the canonical pair (q, p) and which are left over.

    The encoder sees `q = x[q_index]` and `p = p_scale * x[p_index]` (e.g. the quadrotor's
    linear momentum `m v` from its velocity `v`); the remaining components `rest` are carried
    by the decoder alone. A quadrotor map also renormalises the quaternion after each step,
    a quantum map projects each predicted state onto the density matrices (`project_density`).

    Attributes:
        kind: "quadrotor", "spring_mesh", "quantum" or "generic" (for the docs and checks).
        state_dim: nx.
        q_index: indices of the generalised coordinates (d of them).
        p_index: indices of the conjugate momenta (d of them, paired with `q_index`).
        p_scale: factor from the stored component to the momentum (a nominal mass, kg), one
            for every pair or one per pair (d of them: a mass for a velocity, a moment of
            inertia for a body rate); 1 if the state already holds momenta.
        quaternion_index: start of a unit quaternion (w, x, y, z) renormalised after each
            predicted step with w >= 0, or -1 for none.
        rate_index: start of the body-frame angular velocity (3,), rad/s, that turns the
            quaternion (q̇ = ½ q ⊗ (0, ω)), or -1 for none (see `carry_attitude`).
        velocity_index: start of the world-frame linear velocity (3,), m/s, that a
            body-frame force changes (see `body_to_world`), or -1 for none.
    """

    kind: str
    state_dim: int
    q_index: tuple[int, ...]
    p_index: tuple[int, ...]
    p_scale: float | tuple[float, ...] = 1.0
    quaternion_index: int = -1
    rate_index: int = -1
    velocity_index: int = -1
    rest_index: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.q_index) != len(self.p_index) or not self.q_index:
            raise ValueError(
                f"CoordinateMap: q_index ({len(self.q_index)}) and p_index "
                f"({len(self.p_index)}) must be non-empty and of equal length"
            )
        used = list(self.q_index) + list(self.p_index)
        if len(set(used)) != len(used) or min(used) < 0 or max(used) >= self.state_dim:
            raise ValueError(
                f"CoordinateMap: indices must be distinct and in [0, {self.state_dim})"
            )
        if isinstance(self.p_scale, tuple) and len(self.p_scale) != len(self.q_index):
            raise ValueError(
                f"CoordinateMap.p_scale: {len(self.q_index)} per-pair factors expected, got "
                f"{len(self.p_scale)}"
            )
        if not all(s > 0 for s in self.p_scales):
            raise ValueError(f"CoordinateMap.p_scale must be > 0, got {self.p_scale}")
        if self.quaternion_index >= 0 and self.quaternion_index + 4 > self.state_dim:
            raise ValueError("CoordinateMap.quaternion_index out of range")
        rates_fit = self.quaternion_index >= 0 and self.rate_index + 3 <= self.state_dim
        if self.rate_index >= 0 and not rates_fit:
            raise ValueError("CoordinateMap.rate_index needs a quaternion and 3 rates in range")
        velocity_fits = self.quaternion_index >= 0 and self.velocity_index + 3 <= self.state_dim
        if self.velocity_index >= 0 and not velocity_fits:
            raise ValueError(
                "CoordinateMap.velocity_index needs a quaternion and 3 velocities in range"
            )
        rest = tuple(i for i in range(self.state_dim) if i not in set(used))
        object.__setattr__(self, "rest_index", rest)

    @property
    def p_scales(self) -> tuple[float, ...]:
        """The momentum factor of every pair, (d,): `p_scale` spread over the pairs."""
        if isinstance(self.p_scale, tuple):
            return self.p_scale
        return (float(self.p_scale),) * len(self.q_index)

    @property
    def dim_q(self) -> int:
        """d, the number of canonical pairs (the encoder works on 2d coordinates)."""
        return len(self.q_index)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (inverse: `from_dict`)."""
        return {
            "kind": self.kind,
            "state_dim": self.state_dim,
            "q_index": list(self.q_index),
            "p_index": list(self.p_index),
            "p_scale": list(self.p_scale) if isinstance(self.p_scale, tuple) else self.p_scale,
            "quaternion_index": self.quaternion_index,
            "rate_index": self.rate_index,
            "velocity_index": self.velocity_index,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CoordinateMap:
        """Rebuild a map written by `to_dict`."""
        scale = data["p_scale"]
        return cls(
            kind=str(data["kind"]),
            state_dim=int(data["state_dim"]),
            q_index=tuple(int(i) for i in data["q_index"]),
            p_index=tuple(int(i) for i in data["p_index"]),
            p_scale=tuple(float(v) for v in scale) if isinstance(scale, list) else float(scale),
            quaternion_index=int(data["quaternion_index"]),
            # maps written before these existed had neither
            rate_index=int(data.get("rate_index", -1)),
            velocity_index=int(data.get("velocity_index", -1)),
        )

    def canonical_index(self) -> list[int]:
        """Indices of (q, p) in the state, q first: the gather that `to_canonical` applies."""
        return list(self.q_index) + list(self.p_index)

    def to_canonical(self, x: torch.Tensor) -> torch.Tensor:
        """State (..., nx) -> canonical coordinates (..., 2d) = (q, p), p in momentum units."""
        idx = torch.as_tensor(self.canonical_index(), device=x.device)
        z = x.index_select(-1, idx)
        if self.p_scale != 1.0:
            d = self.dim_q
            z = torch.cat([z[..., :d], z[..., d:] * self._p_tensor(z)], dim=-1)
        return z

    def _p_tensor(self, like: torch.Tensor) -> torch.Tensor:
        """`p_scales` as a (d,) tensor of `like`'s dtype and device."""
        return torch.tensor(self.p_scales, dtype=like.dtype, device=like.device)

    def canonical_delta_to_state(self, dz: torch.Tensor) -> torch.Tensor:
        """A change of (q, p) (..., 2d) as a change of the state (..., nx), zero on `rest`."""
        d = self.dim_q
        if self.p_scale != 1.0:
            dz = torch.cat([dz[..., :d], dz[..., d:] / self._p_tensor(dz)], dim=-1)
        out = dz.new_zeros(*dz.shape[:-1], self.state_dim)
        idx = torch.as_tensor(self.canonical_index(), device=dz.device)
        return out.index_copy(-1, idx, dz)

    def carry_attitude(self, x: torch.Tensor, x_next: torch.Tensor, dt: float) -> torch.Tensor:
        """`x_next` (..., nx) with its quaternion replaced by x's turned through the step's
        mean body rate: q' = q ⊗ exp(½ dt (ω + ω') / 2), the exact rotation kinematics
        (second order in the step; 1e-4 of a quadrotor step's quaternion change at 50 Hz).

        Args:
            x: (..., nx) the state at the start of the step.
            x_next: (..., nx) a predicted next state (its body rate ω' is used).
            dt: the step, s.

        Raises:
            ValueError: the map has no quaternion or no body rate.
        """
        i, j = self.quaternion_index, self.rate_index
        if i < 0 or j < 0:
            raise ValueError(f"CoordinateMap {self.kind!r} has no quaternion and body rate")
        half = (0.25 * dt) * (x[..., j : j + 3] + x_next[..., j : j + 3])  # (..., 3) rad
        # the angle's square root is kept off zero so its gradient stays finite at rest
        angle = torch.sqrt(half.pow(2).sum(-1, keepdim=True) + 1e-30)
        q = x[..., i : i + 4]
        turned = torch.cos(angle) * q + (2.0 * torch.sin(angle) / angle) * quaternion_rate(q, half)
        return torch.cat([x_next[..., :i], turned, x_next[..., i + 4 :]], dim=-1)

    def body_to_world(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        """A body-frame vector in the world frame at x's attitude: R(q) vec.

        Args:
            x: (..., nx) states holding a unit quaternion (w, x, y, z) at `quaternion_index`.
            vec: (..., 3) body-frame vectors (any unit).

        Returns:
            (..., 3) the same vectors in the world frame (same unit).

        Raises:
            ValueError: the map has no quaternion.
        """
        i = self.quaternion_index
        if i < 0:
            raise ValueError(f"CoordinateMap {self.kind!r} has no quaternion")
        w, u = x[..., i : i + 1], x[..., i + 1 : i + 4]
        u, vec = torch.broadcast_tensors(u, vec)
        t = 2.0 * torch.linalg.cross(u, vec)  # v' = v + w t + u x t (Rodrigues, unit q)
        return vec + w * t + torch.linalg.cross(u, t)

    @property
    def density_levels(self) -> int:
        """N of a quantum map's N x N density matrix (state 2 N^2), else 0."""
        return math.isqrt(self.state_dim // 2) if self.kind == "quantum" else 0

    def postprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Project a predicted state (..., nx) back onto the state manifold.

        Quadrotor: the quaternion is renormalised to unit length and its sign chosen so that
        w >= 0 (q and -q are the same rotation). Quantum: the nearest-to-physical density
        matrix (`project_density`). Other maps: identity.
        """
        if self.density_levels:
            return project_density(x, self.density_levels)
        if self.quaternion_index < 0:
            return x
        i = self.quaternion_index
        quat = x[..., i : i + 4]
        quat = quat / quat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        quat = torch.where(quat[..., :1] < 0, -quat, quat)
        return torch.cat([x[..., :i], quat, x[..., i + 4 :]], dim=-1)


def project_density(x: torch.Tensor, levels: int) -> torch.Tensor:
    """A quantum state [Re vec rho, Im vec rho] (..., 2 N^2) made a density matrix.

    The Hermitian part is taken and its trace set to 1 (both orthogonal projections in the
    Frobenius norm), then the traceless part A = rho - I/N is shrunk toward the maximally
    mixed state, rho = I/N + s A with the largest s <= 1 that leaves no eigenvalue negative.
    A physical state is returned unchanged (to round-off); for a qubit this is the nearest
    density matrix in the Frobenius norm (the Bloch vector clipped to the unit ball). The map
    is continuous and differentiable almost everywhere (MPC linearisations pass through it).

    Args:
        x: (..., 2 N^2) states, row-major vec (entry j N + k is rho_jk).
        levels: N.

    Returns:
        (..., 2 N^2) states with trace 1, Hermitian, eigenvalues >= 0.
    """
    n, nn2 = levels, levels * levels
    if x.shape[-1] != 2 * nn2:
        raise ValueError(f"project_density: state of {2 * nn2} expected, got {x.shape[-1]}")
    lead = x.shape[:-1]
    re = x[..., :nn2].reshape(*lead, n, n)
    im = x[..., nn2:].reshape(*lead, n, n)
    re = 0.5 * (re + re.transpose(-1, -2))
    im = 0.5 * (im - im.transpose(-1, -2))
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    trace = re.diagonal(dim1=-2, dim2=-1).sum(-1)
    a_re = re - (trace / n)[..., None, None] * eye  # the traceless part A
    if n == 2:
        # a traceless Hermitian 2 x 2 has eigenvalues ±|A|_F / sqrt 2 (the tiny term keeps
        # the gradient finite at A = 0)
        sq = a_re.pow(2).sum((-1, -2)) + im.pow(2).sum((-1, -2))
        neg = torch.sqrt(0.5 * sq + 1e-30)
    else:
        neg = -torch.linalg.eigvalsh(torch.complex(a_re, im))[..., 0]
    # 1/N + s lambda_min(A) >= 0: s = 1 / max(N (-lambda_min), 1), no branch (finite gradients)
    s = 1.0 / torch.clamp(n * neg, min=1.0)
    re_out = eye / n + s[..., None, None] * a_re
    im_out = s[..., None, None] * im
    return torch.cat([re_out.reshape(*lead, nn2), im_out.reshape(*lead, nn2)], dim=-1)


def quadrotor_coordinates(
    state_dim: int = 13, mass: float = QUADROTOR_NOMINAL_MASS, attitude: bool = False
) -> CoordinateMap:
    """Quadrotor: q = position (m), p = nominal mass x linear velocity (kg m/s).

    Rigid-body rotation has no global canonical pair, so by default the encoder takes the
    translation and the decoder the rotation (quaternion, body rates) and rotor thrusts.
    With `attitude`, the encoder also takes a local chart of the rotation: q = the
    quaternion's vector part (x, y, z), p = 2 J ω with J the nominal X2's diagonal inertia
    (kg m²) and ω the body rates (rad/s). For small tilts (q ≈ θ / 2, θ the rotation vector)
    that pair is canonical (the Lagrangian ½ θ'ᵀ J θ' = 2 q'ᵀ J q' gives p = 4 J q' = 2 J ω); the
    quaternion's w, the gyroscopic coupling and the torques stay with the decoder.

    Args:
        state_dim: 13, or 17 with the motor-lag thrust states.
        mass: nominal mass (kg) turning velocity into momentum.
        attitude: also pair the attitude chart with the angular momentum.
    """
    if state_dim not in (13, 17):
        raise ValueError(f"quadrotor state_dim must be 13 or 17, got {state_dim}")
    if not attitude:
        return CoordinateMap(
            kind="quadrotor",
            state_dim=state_dim,
            q_index=(0, 1, 2),
            p_index=(7, 8, 9),
            p_scale=mass,
            quaternion_index=3,
            rate_index=10,
            velocity_index=7,
        )
    inertia = tuple(2.0 * j for j in QuadrotorParams().inertia)
    return CoordinateMap(
        kind="quadrotor",
        state_dim=state_dim,
        q_index=(0, 1, 2, 4, 5, 6),
        p_index=(7, 8, 9, 10, 11, 12),
        p_scale=(mass, mass, mass, *inertia),
        quaternion_index=3,
        rate_index=10,
        velocity_index=7,
    )


def quaternion_rate(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """q̇ = ½ q ⊗ (0, ω) written out elementwise: unit quaternion q (..., 4) (w, x, y, z),
    body rate ω (..., 3) rad/s -> (..., 4) 1/s."""
    qw, qx, qy, qz = q.unbind(-1)
    a, b, c = w.unbind(-1)
    return 0.5 * torch.stack(
        [
            -qx * a - qy * b - qz * c,
            qw * a + qy * c - qz * b,
            qw * b + qz * a - qx * c,
            qw * c + qx * b - qy * a,
        ],
        -1,
    )


def _halves(kind: str, state_dim: int) -> CoordinateMap:
    """A state [q (d), p (d)] that is canonical as it stands."""
    d = state_dim // 2
    return CoordinateMap(
        kind=kind, state_dim=state_dim, q_index=tuple(range(d)), p_index=tuple(range(d, 2 * d))
    )


def spring_mesh_coordinates(state_dim: int) -> CoordinateMap:
    """Spring mesh: the state [q (2n), p (2n)] is canonical as it stands."""
    if state_dim % 2:
        raise ValueError(f"spring mesh state_dim must be even, got {state_dim}")
    return _halves("spring_mesh", state_dim)


def quantum_coordinates(state_dim: int) -> CoordinateMap:
    """Open quantum system: q = Re vec(rho), p = Im vec(rho) (N^2 each).

    The unitary part of the evolution is a Schrödinger flow with a Hermitian generator, which
    is Hamiltonian in these coordinates; dissipation and measurement backaction go to the
    decoder. Every predicted step is projected onto the density matrices (`postprocess`).
    """
    if state_dim % 2:
        raise ValueError(f"quantum state_dim must be even (2 N^2), got {state_dim}")
    return _halves("quantum", state_dim)


def generic_coordinates(
    state_dim: int, q_index: Sequence[int], p_index: Sequence[int], p_scale: float = 1.0
) -> CoordinateMap:
    """A user-given split of the state into (q, p, rest)."""
    return CoordinateMap(
        kind="generic",
        state_dim=state_dim,
        q_index=tuple(q_index),
        p_index=tuple(p_index),
        p_scale=p_scale,
    )
