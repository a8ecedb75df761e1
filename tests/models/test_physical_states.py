"""Learned models predict physical quantum states: the density-matrix projection."""

from __future__ import annotations

import pytest
import torch
from perturbed import perturb

from metasym_control.envs.open_quantum.params import ENV_ID
from metasym_control.models.coordinates import project_density, quantum_coordinates
from metasym_control.models.metasym import MetaSymConfig
from metasym_control.models.registry import make_model


def _rho(x: torch.Tensor, n: int) -> torch.Tensor:
    """States (..., 2 N^2) -> complex density matrices (..., N, N)."""
    nn2 = n * n
    lead = x.shape[:-1]
    return torch.complex(x[..., :nn2].reshape(*lead, n, n), x[..., nn2:].reshape(*lead, n, n))


def _state(rho: torch.Tensor) -> torch.Tensor:
    lead = rho.shape[:-2]
    return torch.cat([rho.real.reshape(*lead, -1), rho.imag.reshape(*lead, -1)], dim=-1)


def _physical_defects(x: torch.Tensor, n: int) -> tuple[float, float, float]:
    """(max |tr rho - 1|, max |rho - rho^H|, min eigenvalue) over the batch."""
    rho = _rho(x, n)
    trace = rho.diagonal(dim1=-2, dim2=-1).sum(-1)
    herm = (rho - rho.mH).abs().amax()
    eig = torch.linalg.eigvalsh(0.5 * (rho + rho.mH))
    return float((trace - 1).abs().max()), float(herm), float(eig.min())


def _random_density(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(batch, n, n, dtype=torch.complex128, generator=gen)
    rho = a @ a.mH
    return rho / rho.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]


@pytest.mark.parametrize("n", [2, 3])
def test_projection_gives_density_matrices_and_keeps_physical_ones(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    x = 2.0 * torch.randn(256, 2 * n * n, dtype=torch.float64, generator=gen)
    trace_err, herm, eig_min = _physical_defects(project_density(x, n), n)
    assert trace_err < 1e-12 and herm == 0.0 and eig_min > -1e-12
    # most random states are unphysical: the projection does move them
    assert _physical_defects(x, n)[2] < -0.1
    phys = _state(_random_density(64, n, gen))
    torch.testing.assert_close(project_density(phys, n), phys, atol=1e-14, rtol=0)


def test_qubit_projection_clips_the_bloch_vector() -> None:
    # rho = (I + r . sigma) / 2: the nearest density matrix has r / max(1, |r|)
    gen = torch.Generator().manual_seed(0)
    r = 1.5 * torch.randn(128, 3, dtype=torch.float64, generator=gen)
    sx = torch.tensor([[0, 1], [1, 0]], dtype=torch.complex128)
    sy = torch.tensor([[0, -1j], [1j, 0]], dtype=torch.complex128)
    sz = torch.tensor([[1, 0], [0, -1]], dtype=torch.complex128)
    eye = torch.eye(2, dtype=torch.complex128)

    def rho_of(bloch: torch.Tensor) -> torch.Tensor:
        b = bloch.to(torch.complex128)
        return 0.5 * (
            eye + b[:, 0, None, None] * sx + b[:, 1, None, None] * sy + b[:, 2, None, None] * sz
        )

    clipped = r / r.norm(dim=-1, keepdim=True).clamp_min(1.0)
    torch.testing.assert_close(project_density(_state(rho_of(r)), 2), _state(rho_of(clipped)))


@pytest.mark.parametrize("n", [2, 3])
def test_projection_has_finite_gradients(n: int) -> None:
    # the maximally mixed state (A = 0) and states beyond the boundary
    x = torch.cat(
        [
            _state(torch.eye(n, dtype=torch.complex128)[None] / n),
            3.0 * torch.randn(8, 2 * n * n, dtype=torch.float64),
        ]
    )
    x.requires_grad_(True)
    project_density(x, n).square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("kind", ["metasym", "mlp", "transformer", "symplectic", "hnn"])
def test_every_learned_model_predicts_physical_qubit_states(kind: str) -> None:
    n, nu, steps = 2, 2, 60
    torch.manual_seed(0)
    cfg = MetaSymConfig(history_len=4, d_model=16, n_heads=2)
    model = make_model(
        kind, ENV_ID, 2 * n * n, nu, 0.05, quantum_coordinates(2 * n * n), cfg, dtype=torch.float64
    )
    perturb(model, 0.3)  # type: ignore[arg-type]  # any learned model has its buffers
    gen = torch.Generator().manual_seed(1)
    L = model.history_len
    states = _state(_random_density(3 * (L + 1), n, gen)).reshape(3, L + 1, -1)
    actions = torch.rand(3, max(L, 1) + steps, nu, dtype=torch.float64, generator=gen) * 2 - 1
    with torch.no_grad():
        memory = model.init_memory(states[:, :L], actions[:, :L]) if L else {}
    with torch.no_grad():
        pred = model.rollout(states[:, L], actions[:, L : L + steps], memory)
    assert pred.shape == (3, steps, 2 * n * n) and bool(torch.isfinite(pred).all())
    trace_err, herm, eig_min = _physical_defects(pred, n)
    assert trace_err < 1e-9 and herm < 1e-12 and eig_min > -1e-9
    # the model really moves the state (the checks are not met by standing still)
    assert float((pred[:, -1] - states[:, L]).abs().max()) > 1e-3
