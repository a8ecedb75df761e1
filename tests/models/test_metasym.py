"""MetaSym under the dynamics-model protocol: shapes, purity, memory sharing, adaptation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from perturbed import perturb
from torch.func import jacrev, vmap

from metasym_control.dynamics import AdaptBudget, DynamicsModel, expand_memory, rollout_by_steps
from metasym_control.envs.quadrotor.params import QuadrotorParams
from metasym_control.envs.toy_oscillator import TOY_DT, TOY_ENV_ID, oscillator_family
from metasym_control.models.coordinates import (
    generic_coordinates,
    quadrotor_coordinates,
    quantum_coordinates,
    spring_mesh_coordinates,
)
from metasym_control.models.metasym import FOLD_CPU_BATCH, MetaSym, MetaSymConfig
from metasym_control.models.symplectic import symplectic_form
from metasym_control.systems import coordinates_for_env

CFG = MetaSymConfig(history_len=4, d_model=16, n_heads=2)


@pytest.fixture(scope="module")
def tasks() -> list:
    return oscillator_family(3, 3, 40, "train", seed=2)


def _model(tasks: list, dtype: torch.dtype = torch.float64, config: MetaSymConfig = CFG) -> MetaSym:
    torch.manual_seed(0)
    m = MetaSym(2, 1, TOY_DT, config, coordinates_for_env(TOY_ENV_ID, 2), TOY_ENV_ID, dtype=dtype)
    m.fit_normalization(tasks)
    # a non-zero head, so the decoder really contributes to every check below
    torch.nn.init.normal_(m.decoder.head.weight, std=0.3)
    return m


def _inputs(lead: tuple[int, ...], L: int, T: int, dtype: torch.dtype = torch.float64) -> tuple:
    g = torch.Generator().manual_seed(1)
    hs = torch.randn(*lead, L, 2, generator=g, dtype=dtype)
    ha = torch.rand(*lead, L, 1, generator=g, dtype=dtype) * 2 - 1
    x = torch.randn(*lead, 2, generator=g, dtype=dtype)
    us = torch.rand(*lead, T, 1, generator=g, dtype=dtype) * 2 - 1
    return hs, ha, x, us


@pytest.mark.parametrize("lead", [(), (5,), (2, 3), (2, 1, 3)])
def test_shapes_purity_and_rollout_equals_steps(tasks: list, lead: tuple[int, ...]) -> None:
    m = _model(tasks)
    assert isinstance(m, DynamicsModel)
    hs, ha, x, us = _inputs(lead, 4, 7)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    mem = m.init_memory(hs, ha)
    for v in mem.values():
        assert v.shape[: len(lead)] == lead
    xn, mem2 = m.step(x, us[..., 0, :], mem)
    assert xn.shape == (*lead, 2) and xn.dtype == torch.float64
    assert set(mem2) == set(mem)
    roll = m.rollout(x, us, mem)
    assert roll.shape == (*lead, 7, 2)
    torch.testing.assert_close(roll, rollout_by_steps(m, x, us, mem), rtol=0, atol=1e-12)
    # one history shared by every sample: `rollout` takes its own fast path (the folded
    # chain, the actions' products before the loop); it must equal an independent path,
    # repeated general `step` on the unfolded memory of the same history
    hs1, ha1 = hs.reshape(-1, 4, 2)[0], ha.reshape(-1, 4, 1)[0]
    m.fold_mode = "never"
    general = expand_memory(m.init_memory(hs1, ha1), lead)
    assert not any(k.startswith("fold_") for k in general)
    reference = rollout_by_steps(m, x, us, general)
    m.fold_mode = "always"
    folded = expand_memory(m.init_memory(hs1, ha1), lead)
    assert "fold_b" in folded
    fast = m.rollout(x, us, folded)
    assert fast.shape == (*lead, 7, 2)
    torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-10)
    assert (reference - x.unsqueeze(-2)).abs().max() > 1e-3  # the states do move
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), f"prediction changed {k}"


def test_float32_and_history_masking(tasks: list) -> None:
    m = _model(tasks, torch.float32)
    hs, ha, x, us = _inputs((3,), 4, 5, torch.float32)
    valid = torch.tensor([[False, False, True, True]] * 3)
    mem = m.init_memory(hs, ha, valid)
    out = m.rollout(x, us, mem)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # padding slots do not matter: change them and nothing moves
    hs2 = hs.clone()
    hs2[:, :2] = 1e3
    out2 = m.rollout(x, us, m.init_memory(hs2, ha, valid))
    torch.testing.assert_close(out, out2)
    # a window with no valid slot at all still predicts finite states
    mem0 = m.init_memory(hs, ha, torch.zeros(3, 4, dtype=torch.bool))
    assert torch.isfinite(m.rollout(x, us, mem0)).all()
    with pytest.raises(ValueError, match="history_len"):
        m.init_memory(hs[:, :3], ha[:, :3])


def test_shared_history_broadcast_matches_copies(tasks: list) -> None:
    m = _model(tasks)
    hs, ha, _, _ = _inputs((), 4, 1)
    mem1 = m.init_memory(hs, ha)
    k = 64
    g = torch.Generator().manual_seed(3)
    x = torch.randn(k, 2, generator=g, dtype=torch.float64)
    us = torch.rand(k, 9, 1, generator=g, dtype=torch.float64) * 2 - 1
    shared = m.rollout(x, us, expand_memory(mem1, (k,)))
    copied = m.rollout(x, us, {n: v.expand(k, *v.shape).contiguous() for n, v in mem1.items()})
    torch.testing.assert_close(shared, copied, rtol=1e-12, atol=1e-12)
    single = m.rollout(x[7], us[7], mem1)
    torch.testing.assert_close(shared[7], single, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "config",
    [
        MetaSymConfig(),
        MetaSymConfig(attend_self=False),
        MetaSymConfig(
            encoder_kind="LA",
            encoder_layers=2,
            n_layers=2,
            history_len=5,
            n_heads=4,
            attend_self=False,
        ),
        MetaSymConfig(encoder_layers=2, encoder_linear=False, n_layers=0, attend_self=False),
        MetaSymConfig(
            encoder_kind="LA", encoder_layers=1, n_layers=3, mlp_ratio=1, attend_self=False
        ),
    ],
)
def test_folded_step_equals_general_step(config: MetaSymConfig) -> None:
    """One shared history takes the folded fast path (for own-key decoders on a CPU only at
    small batches by default); it must equal the general path."""
    torch.manual_seed(0)
    coords = quadrotor_coordinates()
    m = perturb(MetaSym(13, 4, 0.02, config, coords, "MetaSymQuadrotor-v0"), 0.3)
    L = m.history_len
    g = torch.Generator().manual_seed(4)
    hs = torch.randn(L, 13, generator=g, dtype=torch.float64)
    ha = torch.rand(L, 4, generator=g, dtype=torch.float64) * 2 - 1
    valid = torch.ones(L, dtype=torch.bool)
    valid[:2] = False
    assert any(k.startswith("fold_") for k in m.init_memory(hs, ha, valid))  # "auto"
    # "auto" on a CPU: an own-key step folds only small batches (its 1.8x arithmetic)
    x1 = hs[-1]
    assert m._use_fold(x1, FOLD_CPU_BATCH)
    assert m._use_fold(x1, FOLD_CPU_BATCH + 1) == (not config.attend_self)
    m.fold_mode = "never"
    assert not any(k.startswith("fold_") for k in m.init_memory(hs, ha, valid))
    m.fold_mode = "always"
    mem = m.init_memory(hs, ha, valid)
    assert any(k.startswith("fold_") for k in mem)
    general = {k: v for k, v in mem.items() if not k.startswith("fold_")}
    x = torch.randn(6, 2, 13, generator=g, dtype=torch.float64)
    us = torch.rand(6, 2, 5, 4, generator=g, dtype=torch.float64) * 2 - 1
    fast = m.rollout(x, us, expand_memory(mem, (6, 2)))
    slow = m.rollout(x, us, expand_memory(general, (6, 2)))
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    # a batch of histories has no fold (per-sample prefixes): same prediction for each
    per = m.init_memory(hs.expand(6, 2, L, 13), ha.expand(6, 2, L, 4), valid.expand(6, 2, L))
    assert not any(k.startswith("fold_") for k in per)
    torch.testing.assert_close(m.rollout(x, us, per), slow, rtol=1e-10, atol=1e-10)
    # a window with no valid slot: finite (the token itself is always seen)
    empty = m.init_memory(hs, ha, torch.zeros(L, dtype=torch.bool))
    assert torch.isfinite(m.rollout(x, us, expand_memory(empty, (6, 2)))).all()


def test_own_context_variant(tasks: list) -> None:
    m = _model(tasks, config=MetaSymConfig(history_len=3, d_model=16, own_context=2))
    hs, ha, x, us = _inputs((4,), 3, 6)
    mem = m.init_memory(hs, ha)
    roll = m.rollout(x, us, mem)
    torch.testing.assert_close(roll, rollout_by_steps(m, x, us, mem), rtol=0, atol=1e-12)
    shared = m.rollout(x[:2], us[:2], expand_memory(m.init_memory(hs[0], ha[0]), (2,)))
    torch.testing.assert_close(shared[0], m.rollout(x[0], us[0], m.init_memory(hs[0], ha[0])))


def test_jacobians_under_torch_func(tasks: list) -> None:
    m = _model(tasks)
    hs, ha, _, us = _inputs((), 4, 1)
    mem = m.init_memory(hs, ha)
    xs = torch.randn(6, 2, dtype=torch.float64)
    u = us[0]

    def f(xx: torch.Tensor, uu: torch.Tensor) -> torch.Tensor:
        return m.step(xx, uu, mem)[0]

    jx, ju = vmap(jacrev(f, argnums=(0, 1)), in_dims=(0, None))(xs, u)
    assert jx.shape == (6, 2, 2) and ju.shape == (6, 2, 1)
    # agrees with finite differences
    eps = 1e-6
    e0 = torch.tensor([eps, 0.0], dtype=torch.float64)
    fd = (f(xs[0] + e0, u) - f(xs[0] - e0, u)) / (2 * eps)
    torch.testing.assert_close(jx[0][:, 0], fd, rtol=1e-5, atol=1e-7)


def test_conservative_part_is_symplectic_in_physical_coordinates(tasks: list) -> None:
    m = _model(tasks)
    coords = m.coords

    assert coords.canonical_index() == [0, 1] and coords.p_scale == 1.0

    def phys_flow(z: torch.Tensor) -> torch.Tensor:  # here the state is (q, p) itself
        _, dx = m._encode(z)
        return z + dx

    for seed in range(3):
        z = torch.randn(2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        j = jacrev(phys_flow)(z)
        om = symplectic_form(1)
        assert (j.T @ om @ j - om).abs().max() / max(1.0, float(j.detach().pow(2).sum())) < 1e-10


def test_adapt_leaves_meta_parameters_and_reduces_error(tasks: list) -> None:
    m = _model(tasks)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    a = m.adapt(tasks[1], AdaptBudget(inner_steps=20, lr=1e-2))
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), f"adapt changed meta-parameter {k}"
    fast = set(m.fast_weight_names())
    assert fast and all(n.startswith("decoder.meta_attn.") for n in fast)
    own, ref = dict(a.named_parameters()), dict(m.named_parameters())
    assert any(not torch.equal(own[n], ref[n]) for n in fast)
    assert all(torch.equal(own[n], ref[n]) for n in ref if n not in fast)
    from metasym_control.windows import make_windows, to_batch

    b = to_batch(make_windows(tasks[1], m.history_len, 1))
    with torch.no_grad():
        assert float(a(b)) < float(m(b))


def test_fast_sets_and_trusted_region(tasks: list) -> None:
    for fs, expect in [("meta_attention", 4), ("meta_attention_head", 6), ("none", 0)]:
        m = MetaSym(2, 1, TOY_DT, MetaSymConfig(fast_set=fs), generic_coordinates(2, [0], [1]))
        assert len(m.fast_weight_names()) == expect
    m = _model(tasks)
    lo, hi = m.trusted_lower, m.trusted_upper
    assert lo is not None and hi is not None and np.all(lo < hi)
    assert MetaSym(2, 1, TOY_DT, coords=generic_coordinates(2, [0], [1])).trusted_lower is None


def test_coordinate_maps() -> None:
    qc = quadrotor_coordinates(13)
    x = torch.randn(4, 13, dtype=torch.float64)
    z = qc.to_canonical(x)
    torch.testing.assert_close(z[:, :3], x[:, :3])
    torch.testing.assert_close(z[:, 3:], x[:, 7:10] * qc.p_scale)
    dx = qc.canonical_delta_to_state(z)
    torch.testing.assert_close(dx[:, 7:10], x[:, 7:10])
    assert torch.all(dx[:, 3:7] == 0) and torch.all(dx[:, 10:] == 0)
    y = qc.postprocess(x)
    torch.testing.assert_close(y[:, 3:7].norm(dim=-1), torch.ones(4, dtype=torch.float64))
    assert torch.all(y[:, 3] >= 0)
    assert quadrotor_coordinates(17).rest_index == (3, 4, 5, 6, *range(10, 17))
    assert spring_mesh_coordinates(8).p_index == (4, 5, 6, 7)
    assert quantum_coordinates(8).q_index == (0, 1, 2, 3)
    assert coordinates_for_env("MetaSymQuadrotor-v0", 17).kind == "quadrotor"
    with pytest.raises(ValueError):
        coordinates_for_env("Pendulum-v1", 3)
    with pytest.raises(ValueError):
        generic_coordinates(4, [0, 1], [1, 2])


def test_the_attitude_map_pairs_the_quaternion_with_angular_momentum() -> None:
    """`quadrotor_coordinates(attitude=True)`: q = (position, quaternion x y z), p = (m v,
    2 J ω) with one factor per pair; it survives `to_dict`, and a MetaSym asked for the
    attitude pair refuses a map without it."""
    from metasym_control.models.coordinates import CoordinateMap

    qc = quadrotor_coordinates(13, attitude=True)
    assert qc.q_index == (0, 1, 2, 4, 5, 6) and qc.p_index == (7, 8, 9, 10, 11, 12)
    assert qc.rest_index == (3,)
    assert quadrotor_coordinates(17, attitude=True).rest_index == (3, 13, 14, 15, 16)
    inertia = QuadrotorParams().inertia
    assert qc.p_scales == pytest.approx((*[QuadrotorParams().mass] * 3, *(2 * j for j in inertia)))
    x = torch.randn(4, 13, dtype=torch.float64)
    z = qc.to_canonical(x)
    momentum = x[:, 10:13] * 2 * torch.tensor(inertia, dtype=torch.float64)
    torch.testing.assert_close(z[:, 9:], momentum)
    torch.testing.assert_close(qc.canonical_delta_to_state(z)[:, 10:13], x[:, 10:13])
    assert CoordinateMap.from_dict(qc.to_dict()) == qc
    plain = quadrotor_coordinates(13)
    assert CoordinateMap.from_dict(plain.to_dict()) == plain
    with pytest.raises(ValueError, match="per-pair"):
        generic_coordinates(4, [0, 1], [2, 3], p_scale=(1.0,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="canonical_attitude"):
        MetaSym(13, 4, 0.02, MetaSymConfig(canonical_attitude=True), plain)


def test_the_attitude_pair_is_symplectic_in_physical_coordinates() -> None:
    """With per-pair momentum factors and each component's own data scale, the encoder's
    flow is exactly symplectic in (position, quaternion xyz; m v, 2 J ω)."""
    torch.manual_seed(0)
    qc = quadrotor_coordinates(13, attitude=True)
    m = perturb(MetaSym(13, 4, 0.02, MetaSymConfig(d_model=16), qc), 0.5)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # unequal scales, as in flight data
        m.state_mean.copy_(torch.randn(13, generator=g, dtype=torch.float64))
        m.state_std.copy_(torch.rand(13, generator=g, dtype=torch.float64) * 3 + 0.01)
    m._on_normalization()
    rest = torch.randn(13, generator=g, dtype=torch.float64)
    rest[list(qc.canonical_index())] = 0.0

    def phys_flow(p: torch.Tensor) -> torch.Tensor:
        x = rest + qc.canonical_delta_to_state(p)
        return qc.to_canonical(x + m._encode(x)[1])

    om = symplectic_form(6)
    for seed in range(3):
        p = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        j = jacrev(phys_flow)(p)
        assert (j - torch.eye(12, dtype=torch.float64)).abs().max() > 1e-3  # not the identity
        assert (j.T @ om @ j - om).abs().max() / max(1.0, float(j.detach().pow(2).sum())) < 1e-10


def test_model_for_data_builds_the_attitude_map_where_asked() -> None:
    from metasym_control.generate import generate_tasks
    from metasym_control.systems import model_for_data

    quad = generate_tasks("quadrotor", 1, 1, 20, "train", 0)[0]
    # the head adapts too: a fresh decoder's zero head leaves the meta-attention no gradient
    cfg = MetaSymConfig(d_model=16, canonical_attitude=True, fast_set="meta_attention_head")
    m = model_for_data("metasym", quad, cfg)
    assert isinstance(m, MetaSym) and m.coords.dim_q == 6
    m.fit_normalization([quad])  # normalisation and adaptation run through the six pairs
    adapted = m.adapt(quad, AdaptBudget(inner_steps=3))
    changed = [not torch.equal(a, b) for a, b in zip(adapted.parameters(), m.parameters())]
    assert any(changed)
    assert model_for_data("metasym", quad, MetaSymConfig(d_model=16)).coords.dim_q == 3
    toy = generate_tasks("toy", 1, 1, 12, "train", 0)[0]
    with pytest.raises(ValueError, match="no attitude"):
        model_for_data("metasym", toy, MetaSymConfig(d_model=16, canonical_attitude=True))


def test_carry_attitude_turns_the_quaternion_by_the_mean_body_rate() -> None:
    """`CoordinateMap.carry_attitude`: a steady yaw rate turns the quaternion by exactly
    ω dt about body z; on flown quadrotor data the carried quaternion matches MuJoCo's to
    1 % of a step's change (the rates are body-frame: the world frame would miss it)."""
    from metasym_control.generate import generate_tasks

    qc = quadrotor_coordinates(13)
    assert qc.rate_index == 10 and quadrotor_coordinates(13, attitude=True).rate_index == 10
    x = torch.zeros(2, 13, dtype=torch.float64)
    x[:, 3] = 1.0
    x[:, 12] = 2.0  # rad/s about z
    turned = qc.carry_attitude(x, x, 0.05)[0, 3:7]
    expected = torch.tensor([np.cos(0.05), 0.0, 0.0, np.sin(0.05)], dtype=torch.float64)
    torch.testing.assert_close(turned, expected)
    rest = x.clone()
    rest[:, 10:] = 0.0
    torch.testing.assert_close(qc.carry_attitude(rest, rest, 0.05), rest)
    task = generate_tasks("quadrotor", 1, 2, 60, "test", 3)[0]
    s = torch.as_tensor(task.states[:, :41])  # (2, 41, 13)
    carried = qc.carry_attitude(s[:, :-1], s[:, 1:], task.dt)[..., 3:7]
    step = (s[:, 1:, 3:7] - s[:, :-1, 3:7]).pow(2).mean().sqrt()
    assert (carried - s[:, 1:, 3:7]).pow(2).mean().sqrt() < 0.01 * step
    with pytest.raises(ValueError, match="body rate"):
        spring_mesh_coordinates(8).carry_attitude(x[:, :8], x[:, :8], 0.05)


def test_kinematic_attitude_leaves_the_quaternion_to_the_body_rates() -> None:
    """With `kinematic_attitude` MetaSym's predicted quaternion is the carried one, on the
    general and the folded step alike: the decoder's quaternion outputs change nothing, its
    body-rate outputs do; a map without body rates is refused."""
    torch.manual_seed(0)
    cfg = MetaSymConfig(d_model=16, kinematic_attitude=True)
    m = MetaSym(13, 4, 0.02, cfg, quadrotor_coordinates(13))
    torch.nn.init.normal_(m.decoder.head.weight, std=0.3)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 13, generator=g, dtype=torch.float64)
    x[:, 3:7] = torch.nn.functional.normalize(x[:, 3:7], dim=-1).abs()
    u = torch.rand(5, 4, generator=g, dtype=torch.float64) * 2 - 1
    hs = torch.randn(8, 13, generator=g, dtype=torch.float64)
    ha = torch.rand(8, 4, generator=g, dtype=torch.float64) * 2 - 1
    steps = []
    for mode in ("never", "always"):
        m.fold_mode = mode
        y, _ = m.step(x, u, m.init_memory(hs, ha))
        torch.testing.assert_close(y[:, 3:7], m.coords.carry_attitude(x, y, 0.02)[:, 3:7])
        steps.append(y)
    torch.testing.assert_close(steps[0], steps[1])
    m.fold_mode = "never"
    with torch.no_grad():
        m.decoder.head.weight[3:7] += 1.0  # the quaternion rows
    y_q, _ = m.step(x, u, m.init_memory(hs, ha))
    torch.testing.assert_close(y_q, steps[0])
    with torch.no_grad():
        m.decoder.head.weight[10:13] += 1.0  # the body-rate rows turn the attitude
    y_w, _ = m.step(x, u, m.init_memory(hs, ha))
    assert (y_w[:, 3:7] - steps[0][:, 3:7]).abs().max() > 1e-6
    with pytest.raises(ValueError, match="body rates"):
        MetaSym(8, 4, 0.1, cfg, spring_mesh_coordinates(8))
    attitude_pair = MetaSymConfig(kinematic_attitude=True, canonical_attitude=True)
    with pytest.raises(ValueError, match="choose one"):
        MetaSym(13, 4, 0.02, attitude_pair, quadrotor_coordinates(13, attitude=True))


def test_quadrotor_model_keeps_unit_quaternion() -> None:
    m = MetaSym(13, 4, 0.02, MetaSymConfig(d_model=16), quadrotor_coordinates(13))
    torch.nn.init.normal_(m.decoder.head.weight, std=0.5)
    x = torch.zeros(3, 13, dtype=torch.float64)
    x[:, 3] = 1.0
    mem = m.init_memory(x[:, None].expand(3, 8, 13), torch.zeros(3, 8, 4, dtype=torch.float64))
    out = m.rollout(x, torch.zeros(3, 5, 4, dtype=torch.float64), mem)
    torch.testing.assert_close(out[..., 3:7].norm(dim=-1), torch.ones(3, 5, dtype=torch.float64))
    assert torch.all(out[..., 3] >= 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tasks: list) -> None:
    m = _model(tasks)
    g = MetaSym(2, 1, TOY_DT, CFG, m.coords, device="cuda")
    g.load_state_dict(m.state_dict())
    hs, ha, x, us = _inputs((3,), 4, 5)
    ref = m.rollout(x, us, m.init_memory(hs, ha))
    out = g.rollout(x.cuda(), us.cuda(), g.init_memory(hs.cuda(), ha.cuda()))
    torch.testing.assert_close(out.cpu(), ref)
    # one shared history: the folded step on CUDA ("auto") against the general path on CPU
    mem1 = g.init_memory(hs[0].cuda(), ha[0].cuda())
    assert any(k.startswith("fold_") for k in mem1)
    out1 = g.rollout(x.cuda(), us.cuda(), expand_memory(mem1, (3,)))
    ref1 = m.rollout(x, us, expand_memory(m.init_memory(hs[0], ha[0]), (3,)))
    torch.testing.assert_close(out1.cpu(), ref1)


def test_the_empty_fast_set_adapts_nothing_and_meta_trains() -> None:
    """fast_set "none" (the ablation's no-adaptation arm): adapt returns the same predictions
    and meta-training runs (it used to fail on an empty gradient)."""
    import dataclasses as dc

    from metasym_control.generate import generate_tasks
    from metasym_control.meta_training import MetaTrainConfig, meta_train
    from metasym_control.models.metasym import MetaSymConfig
    from metasym_control.systems import model_for_data

    tasks = generate_tasks("toy", 3, 3, 20, "train", 0)
    model = model_for_data("metasym", tasks[0], dc.replace(MetaSymConfig(), fast_set="none"))
    assert model.fast_weight_names() == []
    model.fit_normalization(tasks)
    meta_train(
        model, tasks, MetaTrainConfig(steps=2, meta_batch=2, support_episodes=1), progress=False
    )
    from metasym_control.dynamics import AdaptBudget

    adapted = model.adapt(tasks[0], AdaptBudget(inner_steps=3))
    x = torch.as_tensor(tasks[0].states[:, 0], dtype=torch.float32)
    u = torch.as_tensor(tasks[0].actions[:, :5], dtype=torch.float32)
    hs = torch.zeros(x.shape[0], model.history_len, model.state_dim)
    ha = torch.zeros(x.shape[0], model.history_len, model.action_dim)
    hv = torch.zeros(x.shape[0], model.history_len, dtype=torch.bool)
    with torch.no_grad():
        a = model.rollout(x, u, model.init_memory(hs, ha, hv))
        b = adapted.rollout(x, u, adapted.init_memory(hs, ha, hv))
    torch.testing.assert_close(a, b)


def _rotation_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) of unit quaternions (..., 4) (w, x, y, z), the textbook formula."""
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def test_body_to_world_is_the_quaternions_rotation() -> None:
    qc = quadrotor_coordinates(13)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 13, generator=g, dtype=torch.float64)
    x[:, 3:7] = torch.nn.functional.normalize(x[:, 3:7], dim=-1)
    v = torch.randn(6, 3, generator=g, dtype=torch.float64)
    expected = (_rotation_matrix(x[:, 3:7]) @ v[..., None])[..., 0]
    torch.testing.assert_close(qc.body_to_world(x, v), expected)
    with pytest.raises(ValueError, match="no quaternion"):
        spring_mesh_coordinates(8).body_to_world(x[:, :8], v)
    # a map written before the velocity index existed reads as none
    old = {k: val for k, val in qc.to_dict().items() if k != "velocity_index"}
    assert type(qc).from_dict(old).velocity_index == -1


def test_body_force_turns_with_the_vehicle() -> None:
    """With `body_force` the decoder's three extra outputs are a velocity change in the body
    frame: a tilted vehicle gets the level one's change turned by its tilt (a thrust turns
    with the vehicle), the world-frame outputs stay as they are; the step is never folded,
    the rollout is repeated steps, and a map without a velocity is refused."""
    torch.manual_seed(0)
    cfg = MetaSymConfig(d_model=16, body_force=True)
    m = MetaSym(13, 4, 0.02, cfg, quadrotor_coordinates(13))
    assert m.decoder.head.weight.shape[0] == 16
    with torch.no_grad():
        m.decoder.head.weight.zero_()
        m.decoder.head.bias.zero_()
        m.decoder.head.bias[13:] = torch.tensor([0.0, 0.0, 1.0])  # along the body's z axis
    angle = 0.7  # about the body's x axis, beyond any training tilt
    x = torch.zeros(2, 13, dtype=torch.float64)
    x[0, 3] = 1.0
    x[1, 3], x[1, 4] = np.cos(angle / 2), np.sin(angle / 2)
    hs, ha = torch.zeros(8, 13, dtype=torch.float64), torch.zeros(8, 4, dtype=torch.float64)
    u = torch.zeros(2, 4, dtype=torch.float64)
    y, _ = m.step(x, u, m.init_memory(hs, ha))
    scale = m.delta_std[7:10].pow(2).mean().sqrt()
    turned = scale * torch.tensor([0.0, -np.sin(angle), np.cos(angle) - 1.0], dtype=torch.float64)
    torch.testing.assert_close(y[1, 7:10] - y[0, 7:10], turned)  # the encoder's part is alike
    torch.testing.assert_close(y[1, :3], y[0, :3])
    # the general path everywhere: no folded memory, the rollout equals repeated steps
    torch.nn.init.normal_(m.decoder.head.weight, std=0.3)
    m.fold_mode = "always"
    memory = m.init_memory(hs, ha)
    assert "fold_b" not in memory
    us = torch.rand(2, 5, 4, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(m.rollout(x, us, memory), rollout_by_steps(m, x, us, memory))
    with pytest.raises(ValueError, match="velocity"):
        MetaSym(8, 4, 0.1, cfg, spring_mesh_coordinates(8))
