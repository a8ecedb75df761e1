"""The symplectic encoder is exactly symplectic, invertible and Φ_0 = identity."""

from __future__ import annotations

import pytest
import torch
from torch.func import jacrev, vmap

from metasym_control.models.symplectic import (
    ActivationShear,
    GradientShear,
    LinearShear,
    SymplecticConfig,
    SymplecticEncoder,
    symplectic_form,
)

DT = 0.1


def _symplectic_error(enc: SymplecticEncoder, x: torch.Tensor, dt: float) -> torch.Tensor:
    """max |J^T Ω J - Ω| / max(1, ||J||^2) over a batch x (B, 2d)."""
    jac = vmap(jacrev(lambda y: enc(y, dt)))(x)  # (B, 2d, 2d)
    omega = symplectic_form(enc.dim_q, x.dtype)
    err = (jac.transpose(-1, -2) @ omega @ jac - omega).abs().amax(dim=(-1, -2))
    scale = jac.pow(2).sum(dim=(-1, -2)).clamp_min(1.0)
    return (err / scale).max()


@pytest.mark.parametrize("dim_q", [1, 2, 7, 100])
@pytest.mark.parametrize(("kind", "linear_pairs"), [("G", 1), ("LA", 1), ("G", 3)])
def test_symplectic_at_init(dim_q: int, kind: str, linear_pairs: int) -> None:
    torch.manual_seed(dim_q)
    cfg = SymplecticConfig(kind=kind, dt_ref=DT, init_scale=0.5, linear_pairs=linear_pairs)
    enc = SymplecticEncoder(dim_q, cfg)
    assert len(enc.shears) == 2 * linear_pairs + (4 if kind == "LA" else 2) * cfg.layers
    x = torch.randn(4, 2 * dim_q, dtype=torch.float64) * 3
    jac = jacrev(lambda y: enc(y, DT))(x[0])
    # a real, non-trivial map (not the identity)
    assert (jac - torch.eye(2 * dim_q, dtype=torch.float64)).abs().max() > 1e-3
    assert _symplectic_error(enc, x, DT) < 1e-10
    assert _symplectic_error(enc, x, -DT) < 1e-10
    assert _symplectic_error(enc, x, 3.7 * DT) < 1e-10


def test_symplectic_after_training() -> None:
    torch.manual_seed(0)
    d = 5
    enc = SymplecticEncoder(d, SymplecticConfig(dt_ref=DT))
    opt = torch.optim.Adam(enc.parameters(), lr=3e-2)
    x = torch.randn(64, 2 * d, dtype=torch.float64)
    target = torch.tanh(x @ torch.randn(2 * d, 2 * d, dtype=torch.float64))  # not symplectic
    before = [p.detach().clone() for p in enc.parameters()]
    for _ in range(60):
        opt.zero_grad()
        loss = (enc(x, DT) - target).pow(2).mean()
        loss.backward()
        opt.step()
    moved = max((p - b).abs().max().item() for p, b in zip(enc.parameters(), before))
    assert moved > 0.05
    assert _symplectic_error(enc, torch.randn(8, 2 * d, dtype=torch.float64) * 2, DT) < 1e-10


def test_symplectic_dimension_200() -> None:
    torch.manual_seed(1)
    enc = SymplecticEncoder(100, SymplecticConfig(kind="G", layers=2, width=32, dt_ref=DT))
    x = torch.randn(2, 200, dtype=torch.float64)
    assert _symplectic_error(enc, x, DT) < 1e-10


@pytest.mark.parametrize("kind", ["G", "LA"])
def test_inverse_and_identity_at_zero_step(kind: str) -> None:
    torch.manual_seed(2)
    for d in (1, 3, 100):
        enc = SymplecticEncoder(d, SymplecticConfig(kind=kind, dt_ref=DT, init_scale=0.5))
        x = torch.randn(6, 2 * d, dtype=torch.float64) * 2
        y = enc(x, DT)
        assert (y - x).abs().max() > 1e-3
        scale = max(1.0, x.abs().max().item())
        assert (enc.inverse(y, DT) - x).abs().max() < 1e-10 * scale
        assert (enc(enc.inverse(x, DT), DT) - x).abs().max() < 1e-10 * scale
        assert torch.equal(enc(x, 0.0), x)
        # the backward flow of a composition is not its inverse (hence the reversal losses)
        assert (enc(y, -DT) - x).abs().max() > 1e-8


def test_single_shears_are_their_own_backward_flow() -> None:
    torch.manual_seed(3)
    x = torch.randn(5, 8, dtype=torch.float64)
    for m in (LinearShear(4, True), ActivationShear(4, False), GradientShear(4, True, 6)):
        m = m.double()
        torch.testing.assert_close(m(m(x, 0.3), -0.3), x, rtol=0, atol=1e-12)
        torch.testing.assert_close(m.inverse(m(x, 0.3), 0.3), x, rtol=0, atol=1e-12)


def test_shapes_dtype_and_per_sample_steps() -> None:
    enc32 = SymplecticEncoder(3, SymplecticConfig(dt_ref=DT), dtype=torch.float32)
    x = torch.randn(2, 3, 4, 6)
    y = enc32(x, DT)
    assert y.shape == (2, 3, 4, 6) and y.dtype == torch.float32
    # per-sample steps: dt tensor of the leading shape equals the scalar step per sample
    enc = SymplecticEncoder(3, SymplecticConfig(dt_ref=DT))
    xd = torch.randn(5, 6, dtype=torch.float64)
    dts = torch.tensor([0.0, 0.05, 0.1, -0.1, 0.2], dtype=torch.float64)
    yd = enc(xd, dts)
    for i in range(5):
        torch.testing.assert_close(yd[i], enc(xd[i : i + 1], float(dts[i]))[0])
    torch.testing.assert_close(enc.inverse(yd, dts), xd)
    with pytest.raises(ValueError, match="coordinates"):
        enc(torch.randn(4, 5, dtype=torch.float64), DT)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    enc = SymplecticEncoder(4, SymplecticConfig(dt_ref=DT))
    x = torch.randn(10, 8, dtype=torch.float64)
    y = enc(x, DT)
    enc_gpu = SymplecticEncoder(4, SymplecticConfig(dt_ref=DT), device="cuda")
    enc_gpu.load_state_dict(enc.state_dict())
    torch.testing.assert_close(enc_gpu(x.cuda(), DT).cpu(), y)
