"""The convexification of NMPC's QP Hessians: the blockwise PSD projection."""

from __future__ import annotations

import numpy as np

from metasym_control.controllers.nmpc_cost import PSDProjection


def test_blockwise_psd_projection_equals_the_full_one() -> None:
    """The projection works on the Hessian's structurally decoupled blocks; on a matrix with
    that structure it must equal the eigendecomposition of the whole matrix."""
    rng = np.random.default_rng(0)
    m = 7
    pattern = np.eye(m, dtype=bool)
    pattern[1:4, 1:4] = True  # one coupled 3-block, one coupled 2-block, two singletons
    pattern[5, 6] = True
    plan = PSDProjection(pattern)
    assert [b.tolist() for b in plan.blocks] == [[1, 2, 3], [5, 6]]
    sym = pattern | pattern.T
    h = rng.normal(size=(5, m, m)) * sym
    h = h + np.swapaxes(h, 1, 2)  # symmetric, indefinite
    got = plan(h, 1e-3)
    lam, vec = np.linalg.eigh(h)
    ref = np.einsum("bij,bj,bkj->bik", vec, np.maximum(lam, 1e-3), vec)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert np.linalg.eigvalsh(got).min() >= 1e-3 - 1e-12
    assert np.any(np.linalg.eigvalsh(h) < 0)  # the projection had work to do
