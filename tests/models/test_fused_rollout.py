"""The fused Triton rollout against the torch folded path: Triton's interpreter on a CPU, the
compiled kernel on a CUDA device; clear errors where it cannot run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
import torch

from metasym_control.dynamics import expand_memory
from metasym_control.models import fused_rollout as fr
from metasym_control.models.coordinates import quadrotor_coordinates
from metasym_control.models.metasym import MetaSym, MetaSymConfig

# A random model away from its neutral start, a window with invalid slots, a rollout of B
# samples that is not a multiple of the block; prints the errors of the fused rollout.
_CHECK = """
import json, torch
from metasym_control.dynamics import expand_memory
from metasym_control.models.coordinates import quadrotor_coordinates
from metasym_control.systems import coordinates_for_env
from metasym_control.models.metasym import MetaSym, MetaSymConfig
from metasym_control.envs.toy_oscillator import TOY_ENV_ID
from perturbed import perturb

def build(nx, nu, config, coords, env, device):
    torch.manual_seed(0)
    m = MetaSym(nx, nu, 0.02, config, coords, env, device=device, dtype=torch.float32)
    m = perturb(m, 0.1)
    m.fold_mode = "always"
    return m

def check(device, kernels):
    out = {}
    cases = [
        ("quadrotor own key", 13, 4, MetaSymConfig(), quadrotor_coordinates(),
         "MetaSymQuadrotor-v0"),
        ("quadrotor learned key", 13, 4, MetaSymConfig(attend_self=False),
         quadrotor_coordinates(), "MetaSymQuadrotor-v0"),
        ("oscillator, short window", 2, 1, MetaSymConfig(history_len=3),
         coordinates_for_env(TOY_ENV_ID, 2), TOY_ENV_ID),
    ]
    for name, nx, nu, config, coords, env in cases:
        m = build(nx, nu, config, coords, env, device)
        L = m.history_len
        g = torch.Generator().manual_seed(4)
        hs = torch.randn(L, nx, generator=g).to(device)
        ha = (torch.rand(L, nu, generator=g) * 2 - 1).to(device)
        valid = torch.ones(L, dtype=torch.bool, device=device)
        valid[:2] = False
        B, T = 37, 6
        x = torch.randn(B, nx, generator=g).to(device)
        us = (torch.rand(B, T, nu, generator=g) * 2 - 1).to(device)
        for window in ("partly valid", "empty"):
            v = valid if window == "partly valid" else torch.zeros_like(valid)
            with torch.no_grad():
                m.rollout_kernel = "torch"  # the chain, step by step
                ref = m.rollout(x, us, expand_memory(m.init_memory(hs, ha, v), (B,)))
                for kernel in kernels:
                    m.rollout_kernel = kernel  # the memory gets the kernel's stream form
                    mem = expand_memory(m.init_memory(hs, ha, v), (B,))
                    got = m.rollout(x, us, mem)
                    err = ((got - ref).abs().max() / ref.abs().max()).item()
                    out[f"{name}, {window}, {kernel}"] = err
    return out
"""


def _build(config: MetaSymConfig, dtype: torch.dtype = torch.float32) -> MetaSym:
    model = MetaSym(13, 4, 0.02, config, quadrotor_coordinates(), dtype=dtype)
    model.fold_mode = "always"
    return model


def _fold_memory(model: MetaSym, samples: int) -> dict[str, torch.Tensor]:
    L = model.history_len
    dtype = model.state_mean.dtype
    mem = model.init_memory(torch.zeros(L, 13, dtype=dtype), torch.zeros(L, 4, dtype=dtype))
    return expand_memory(mem, (samples,))


def test_bad_rollout_kernel_name_is_rejected() -> None:
    model = _build(MetaSymConfig())
    model.rollout_kernel = "cuda"
    with pytest.raises(ValueError, match="rollout_kernel must be"):
        model.rollout(torch.zeros(3, 13), torch.zeros(3, 5, 4), _fold_memory(model, 3))


def test_auto_is_the_torch_path_on_a_cpu() -> None:
    """The default "auto" keeps CPU models on the torch path and its chain form."""
    model = _build(MetaSymConfig())
    assert model.rollout_kernel == "auto"
    mem = _fold_memory(model, 3)
    assert "fold_b" in mem and "fold_s_b" not in mem
    model.rollout_kernel = "torch"
    want = model.rollout(torch.zeros(3, 13), torch.ones(3, 5, 4) * 0.1, mem)
    model.rollout_kernel = "auto"
    got = model.rollout(torch.zeros(3, 13), torch.ones(3, 5, 4) * 0.1, mem)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_unsupported_models_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    x32 = torch.zeros(2, 13)
    other = _build(MetaSymConfig(n_layers=2))
    if not fr.available():
        assert "Triton is not installed" in str(fr.unsupported_reason(other, x32))
        return
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # a CPU tensor, no interpreter
    assert "CUDA device" in str(fr.unsupported_reason(_build(MetaSymConfig()), x32))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    double = _build(MetaSymConfig(), torch.float64)
    assert "float32" in str(fr.unsupported_reason(double, x32.double()))
    assert "tanh, tanh, attn_qk, gelu, attn_qk" in str(fr.unsupported_reason(other, x32))
    assert fr.unsupported_reason(_build(MetaSymConfig()), x32) is None
    other.rollout_kernel = "triton"  # no stream form: init_memory makes the chain
    with pytest.raises(ValueError, match="fused_rollout: the fused rollout supports"):
        other.rollout(x32, torch.zeros(2, 5, 4), _fold_memory(other, 2))
    model = _build(MetaSymConfig())
    stale = _fold_memory(model, 2)  # made before the kernel was asked for
    model.rollout_kernel = "triton"
    with pytest.raises(ValueError, match="no stream form"):
        model.rollout(x32, torch.zeros(2, 5, 4), stale)


def test_a_stream_form_memory_runs_the_general_path_in_torch() -> None:
    """A memory made for the kernel holds the stream form, not the chain; the torch path then
    takes the general step (same predictions), and so does `step`."""
    torch.manual_seed(0)
    model = _build(MetaSymConfig(), torch.float64)
    torch.nn.init.normal_(model.decoder.head.weight, std=0.3)
    g = torch.Generator().manual_seed(2)
    hs, ha = torch.randn(8, 13, generator=g, dtype=torch.float64), torch.zeros(8, 4).double()
    model.rollout_kernel = "triton"
    stream = model.init_memory(hs, ha)
    assert "fold_s_b" in stream and "fold_b" not in stream
    model.rollout_kernel = "torch"
    chain = model.init_memory(hs, ha)
    assert "fold_b" in chain and "fold_s_b" not in chain
    general = {k: v for k, v in chain.items() if not k.startswith("fold_")}
    x = torch.randn(5, 13, generator=g, dtype=torch.float64)
    us = torch.rand(5, 7, 4, generator=g, dtype=torch.float64) * 2 - 1
    want = model.rollout(x, us, expand_memory(general, (5,)))
    got = model.rollout(x, us, expand_memory(stream, (5,)))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        model.step(x, us[:, 0], expand_memory(stream, (5,)))[0], want[:, 0], rtol=1e-12, atol=1e-12
    )


@pytest.mark.skipif(not fr.available(), reason="needs Triton (pip install triton)")
def test_fused_rollout_equals_the_torch_path_in_the_interpreter() -> None:
    """The kernel's program, run by Triton's interpreter on the CPU (the env variable is read
    when the kernel is defined, hence a fresh process)."""
    here = os.path.dirname(os.path.abspath(__file__))  # for `perturbed`
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    code = textwrap.dedent(_CHECK) + "\nprint(json.dumps(check('cpu', ['triton'])))\n"
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    errors = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(errors) == 6
    # float32 rounding only (measured: below 1e-6 of the largest state)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.skipif(not fr.available(), reason="needs Triton (pip install triton)")
def test_fused_rollout_compiles_for_hopper_within_its_limits() -> None:
    """The real compiler path (Triton to PTX to sm_90a with ptxas), no GPU needed: the kernel
    must fit a Hopper SM's shared memory (227 kB a block) and registers, and spill little.
    Measured with Triton 3.9: 8 kB shared, 255 registers, 636 B of spill stores. Before:
    Triton's pipelining staged the next step's weight tiles in 392 kB of shared memory (the
    launch would fail), and the chain form of the step spilled 6 kB."""
    model = _build(MetaSymConfig())
    report = fr.compile_report(model, "tf32x3", block=32, num_warps=4)
    assert report["shared_bytes"] <= 227 * 1024, report
    assert 0 < report["registers"] <= 255, report
    assert report["spill_store_bytes"] < 4096, report
    with pytest.raises(ValueError, match="block must be a power of two"):
        fr.compile_report(model, "tf32", block=24)
    with pytest.raises(ValueError, match="faulted"):  # an illegal address on an H100
        fr.compile_report(model, "tf32x3", block=64, num_warps=8)


@pytest.mark.gpu
@pytest.mark.skipif(
    not (torch.cuda.is_available() and fr.available()), reason="needs a CUDA device and Triton"
)
def test_fused_rollout_equals_the_torch_path_on_cuda() -> None:
    scope: dict[str, Any] = {}
    exec(textwrap.dedent(_CHECK), scope)
    errors = scope["check"]("cuda", ["triton", "triton-tf32"])
    exact = {k: v for k, v in errors.items() if k.endswith("triton")}
    tf32 = {k: v for k, v in errors.items() if k.endswith("tf32")}
    # summation order only (the interpreter's: below 2e-6, H100: 1e-6); a wrong tile is O(1)
    assert max(exact.values()) < 1e-4, errors
    # one tf32 product (10-bit mantissas) a node compounds over the steps: 4e-3 to 0.11 on
    # an H100 for these perturbed models, 4e-2 for the shipped one at T 30
    assert max(tf32.values()) < 0.25, errors


@pytest.mark.gpu
@pytest.mark.skipif(
    not (torch.cuda.is_available() and fr.available()), reason="needs a CUDA device and Triton"
)
def test_auto_runs_the_float32_accurate_kernel_on_cuda() -> None:
    """The default "auto" picks the kernel (tf32x3) for a float32 CUDA model, the torch path
    for float64, and the predictions are the explicit kernel's."""
    torch.manual_seed(0)
    coords = quadrotor_coordinates()
    model = MetaSym(13, 4, 0.02, coords=coords, device="cuda", dtype=torch.float32)
    torch.nn.init.normal_(model.decoder.head.weight, std=0.3)
    assert model.rollout_kernel == "auto"
    L = model.history_len
    hs, ha = torch.randn(L, 13, device="cuda"), torch.zeros(L, 4, device="cuda")
    x, us = torch.randn(9, 13, device="cuda"), torch.rand(9, 5, 4, device="cuda") * 2 - 1
    with torch.no_grad():
        mem = model.init_memory(hs, ha)
        assert "fold_s_b" in mem
        got = model.rollout(x, us, expand_memory(mem, (9,)))
        model.rollout_kernel = "triton"
        want = model.rollout(x, us, expand_memory(model.init_memory(hs, ha), (9,)))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    model = model.double()
    model.rollout_kernel = "auto"
    assert "fold_b" in model.init_memory(hs.double(), ha.double())  # the torch path's chain


@pytest.mark.gpu
@pytest.mark.skipif(
    not (torch.cuda.is_available() and fr.available()), reason="needs a CUDA device and Triton"
)
def test_mppi_with_the_fused_rollout_matches_the_torch_path_on_cuda() -> None:
    """Same seed, same noise: the fused rollout flies the same plan, eager, graphed, and
    compiled inside the graph (the fastest mode measured; Triton kernels are opaque to
    torch.compile's tracing but run in its graph)."""
    from metasym_control.controller import History
    from metasym_control.controllers.mppi import MPPI, MPPIConfig
    from metasym_control.envs.quadrotor import Figure8Task

    torch.manual_seed(0)
    coords = quadrotor_coordinates()
    model = MetaSym(13, 4, 0.02, coords=coords, device="cuda", dtype=torch.float32)
    torch.nn.init.normal_(model.decoder.head.weight, std=0.05)
    task = Figure8Task()
    x_ref, _ = task.reference(np.arange(12) * 0.02)
    actions = {}
    modes = [("torch", False, False), ("triton", False, False), ("triton", True, False)]
    modes.append(("triton", True, True))
    for kernel, graph, compiled in modes:
        model.rollout_kernel = kernel
        hist = History(model.history_len, 13, 4)
        cfg = MPPIConfig(
            horizon=12, num_samples=512, noise_beta=1.0, cuda_graph=graph, compile=compiled
        )
        ctrl = MPPI(model, task, cfg, device="cuda", dtype=torch.float32)
        out = []
        for i in range(6):
            u = ctrl.act(x_ref[i], i * 0.02, hist)
            hist.push(x_ref[i], u)
            out.append(u)
        actions[(kernel, graph, compiled)] = np.asarray(out)
    ref, fused = actions[("torch", False, False)], actions[("triton", False, False)]
    np.testing.assert_allclose(fused, ref, rtol=0, atol=1e-3)
    np.testing.assert_allclose(actions[("triton", True, False)], fused, atol=1e-6)
    # compiled: float32 element-wise work fused in another order around the same kernel
    np.testing.assert_allclose(actions[("triton", True, True)], fused, atol=1e-3)
