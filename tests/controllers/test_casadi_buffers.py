"""CasADi functions on bound numpy buffers give what plain calls give (the RTI closed loop)."""

from __future__ import annotations

import numpy as np
import pytest
from controller_toy import DoubleIntegrator, QuadraticTask, TorchOnly, simulate

from metasym_control.controllers import casadi_buffers
from metasym_control.controllers.nmpc import NMPC, NMPCConfig

X0 = np.array([1.0, -0.5, 0.0, 0.0])


@pytest.mark.parametrize("linearization", ["casadi", "fd"])
def test_buffered_casadi_calls_equal_plain_calls(
    linearization: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RTI step evaluates its CasADi functions on bound numpy buffers; the plain-call path
    (CasADi without Function.buffer) must give the same closed loop, Lagrangian Hessian and
    backup solver included."""
    model = DoubleIntegrator(drag=3.0)
    task = QuadraticTask(amp=1.0, omega=2.0, v_max=0.6)
    cfg = NMPCConfig(linearization=linearization, hessian="lagrangian")  # type: ignore[arg-type]
    m = model if linearization == "casadi" else TorchOnly(model)
    runs = []
    for use in (True, False):
        monkeypatch.setattr(casadi_buffers, "USE_FUNCTION_BUFFER", use)
        ctrl = NMPC(m, task, cfg)
        assert ctrl.qp.solvers[0][1].uses_buffer == use
        _, us, infos = simulate(ctrl, X0, 30, plant=model)
        assert all(i["fallback"] == "none" for i in infos)
        runs.append(us)
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-10)
