"""Meta-training: learning really happens on oscillators; resume, logs, first/second order."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from metasym_control.dynamics import AdaptBudget
from metasym_control.envs.toy_oscillator import TOY_DT, TOY_ENV_ID, oscillator_family
from metasym_control.generate import split_by_task
from metasym_control.meta_training import MetaTrainConfig, meta_train
from metasym_control.model_error import constant_error, rollout_error
from metasym_control.models.metasym import MetaSym, MetaSymConfig
from metasym_control.systems import coordinates_for_env
from metasym_control.trajectory import Trajectory
from metasym_control.windows import make_windows, to_batch

HORIZON = 20


def _model(config: MetaSymConfig, seed: int = 0) -> MetaSym:
    torch.manual_seed(seed)
    return MetaSym(2, 1, TOY_DT, config, coordinates_for_env(TOY_ENV_ID, 2), TOY_ENV_ID)


def _train_from_scratch(config: MetaSymConfig, support: Trajectory, budget: AdaptBudget) -> MetaSym:
    """The same architecture trained on the support data alone, every parameter, with the
    adaptation budget's steps, optimizer, step size and loss horizon."""
    m = _model(config, seed=1)
    m.fit_normalization(support)
    b = to_batch(make_windows(support, m.history_len, budget.horizon))
    opt = torch.optim.Adam(m.parameters(), lr=budget.lr)
    for _ in range(budget.inner_steps):
        opt.zero_grad()
        m(b).backward()
        opt.step()
    return m


# a tiny meta-training run whose weights tell whether an option changed the training
_TINY_TRAIN = MetaTrainConfig(
    steps=2, meta_batch=2, support_episodes=2, inner_steps=1, batch_windows=8, lr_decay=False
)


def _tiny_trained_weights(cfg: MetaTrainConfig) -> torch.Tensor:
    """All parameters, flattened, of a tiny MetaSym meta-trained with `cfg` on 3 oscillators."""
    tasks = oscillator_family(3, 3, 24, "train", seed=3)
    m = _model(MetaSymConfig(history_len=2, d_model=8, n_heads=1, encoder_width=4))
    m.fit_normalization(tasks)
    meta_train(m, tasks, cfg, progress=False)
    return torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.mark.slow
def test_learning_happens_on_oscillators() -> None:
    """Issue 5's claims on held-out (test-range) oscillators, 3-shot, 20-step rollouts:
    adaptation cuts the unadapted meta-model's error >= 2x, beats the same architecture
    trained from scratch on the support data with the same budget by a clear margin (< 0.7x),
    and stays below a tenth of the "next state = state" predictor's error.

    Measured with the default decoder (own-key self score; 20-step RMS error in state-std
    units; unadapted / adapted / scratch / hold, then the ratios adapted / unadapted,
    / scratch, / hold):
      seed 0 (this test): 0.216 / 0.038 / 0.130 / 0.755, ratios 0.17 / 0.29 / 0.050
      seed 1:             0.440 / 0.090 / 0.152 / 1.400, ratios 0.21 / 0.60 / 0.065
      seed 2:             0.334 / 0.082 / 0.416 / 1.303, ratios 0.25 / 0.20 / 0.063
    (seed s: training systems from seed s, held-out ones from s + 1, initial weights and
    meta-training draws from s). Other self-slot variants of the decoder, adapted error on
    seeds 0 / 1 / 2: fixed score 0.034 / 0.083 / 0.081, learned self key 0.039 / 0.084 /
    0.098, null slot 0.030 / 0.088 / 0.083; every claim held in each.

    Why the whole decoder is the fast set, not the paper's meta-attention + head: with that
    set (30 Adam steps at 1e-2, its best budget) the claims held on seeds 0-2 only with the
    fixed self score (ratios to scratch 0.45 / 0.60 / 0.29); on seed 1 it fails the
    scratch margin with the default own key (0.113 vs 0.144 from scratch, 0.78) and with
    the learned self key (0.79).

    The advantage over scratch is one of speed, not of the end result: scratch given 4x the
    steps (200) reaches 0.030 / 0.083 / 0.158 on seeds 0 / 1 / 2: the adapted model's error
    on seeds 0 and 1 (120 transitions pin down a linear 2-D system), worse on seed 2.
    About 60 s on one free core (110 s on a loaded one).
    """
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    seed = 0
    train = oscillator_family(24, 5, 40, "train", seed=seed)
    test = oscillator_family(4, 4, 40, "test", seed=seed + 1)
    # the time-reversal losses are off (with forcing and damping in the data,
    # Φ_-dt(x_{k+1}) = x_k only holds approximately)
    config = MetaSymConfig(
        d_model=16, fast_set="decoder", reversal_weight=0.0, roundtrip_weight=0.0
    )
    meta = _model(config, seed)
    meta.fit_normalization(train)
    budget = AdaptBudget(inner_steps=50, lr=3e-3, optimizer="adam", horizon=4)
    # the recipe, and why (seed 0, one change at a time from plain MAML, which left the
    # unadapted model as bad as holding the state, 0.76, and adapted only to 0.12):
    # - `matching(budget)`: the inner loop runs on the budget's loss (optimizer, step size,
    #   4-step horizon, where plain MAML had a 1-step one): adapted 0.12 -> 0.11;
    # - unadapted_weight 0.5: the meta-model is also trained to predict before adapting,
    #   so adaptation starts from a good average model: 0.11 -> 0.053;
    # - outer lr 1e-2 (with the cosine decay): -> 0.030 (null slot), 0.038 (own key).
    cfg = MetaTrainConfig(
        steps=300,
        meta_batch=4,
        support_episodes=3,
        inner_steps=5,
        horizon=4,
        batch_windows=32,
        outer_lr=1e-2,
        unadapted_weight=0.5,
        seed=seed,
        log_every=50,
    ).matching(budget)
    log = meta_train(meta, train, cfg, progress=False)
    assert log[-1]["inner_after"] < log[-1]["inner_before"]
    unadapted, adapted, scratch, const = [], [], [], []
    for task in test:
        support, query = task.subset([0, 1, 2]), task.subset([3])
        a = meta.adapt(support, budget)
        assert isinstance(a, MetaSym)
        unadapted.append(rollout_error(meta, query, HORIZON))
        adapted.append(rollout_error(a, query, HORIZON))
        const.append(constant_error(meta, query, HORIZON))
        scratch.append(rollout_error(_train_from_scratch(config, support, budget), query, HORIZON))
    u, a_, s, c = (float(np.mean(v)) for v in (unadapted, adapted, scratch, const))
    print(f"20-step error: unadapted {u:.4f} adapted {a_:.4f} scratch {s:.4f} constant {c:.4f}")
    assert a_ <= 0.5 * u, "3-shot adaptation must cut the error at least 2x"
    assert a_ < 0.7 * s, "adapting must clearly beat training on the support data alone"
    assert a_ < 0.1 * c, "adapted error must stay below a tenth of holding the state"
    # and on every held-out system, not only on average
    assert all(x < y for x, y in zip(adapted, unadapted))


def test_matching_config_takes_the_budgets_inner_loop() -> None:
    base = MetaTrainConfig(inner_steps=5, inner_lr=1e-2, inner_optimizer="adam", horizon=8)
    budget = AdaptBudget(inner_steps=50, lr=3e-3, optimizer="sgd", horizon=4)
    m = base.matching(budget)
    assert (m.inner_lr, m.inner_optimizer, m.inner_horizon) == (3e-3, "sgd", 4)
    # the rest is this config's own: training may afford fewer inner steps than adaptation
    assert (m.inner_steps, m.horizon, m.steps) == (5, 8, base.steps)
    assert base.inner_horizon == 1


def test_input_noise_perturbs_inputs_only_at_the_stated_scale_and_is_seeded() -> None:
    from metasym_control.meta_training import _perturbed

    x0 = torch.zeros(4000, 2, dtype=torch.float64)
    batch = {"x0": x0, "hs": torch.zeros(4000, 3, 2, dtype=torch.float64), "y": x0[:, None]}
    std = torch.tensor([2.0, 0.5], dtype=torch.float64)
    out = _perturbed(batch, std, 0.1, np.random.default_rng(0))
    torch.testing.assert_close(out["x0"].std(0), 0.1 * std, rtol=0.05, atol=0)
    torch.testing.assert_close(out["hs"].std((0, 1)), 0.1 * std, rtol=0.05, atol=0)
    assert out["y"] is batch["y"]  # the targets stay clean
    again = _perturbed(batch, std, 0.1, np.random.default_rng(0))
    assert torch.equal(out["x0"], again["x0"])
    with pytest.raises(ValueError, match="input_noise"):
        MetaTrainConfig(input_noise=-0.1)
    # in meta-training: seeded, and not the clean run
    tasks = oscillator_family(3, 3, 12, "train", seed=3)
    config = MetaSymConfig(history_len=2, d_model=8, n_heads=1, encoder_width=4)
    weights = []
    for noise in (0.05, 0.05, 0.0):
        cfg = MetaTrainConfig(
            steps=2, meta_batch=2, support_episodes=2, inner_steps=1, batch_windows=8,
            input_noise=noise,
        )  # fmt: skip
        m = _model(config)
        m.fit_normalization(tasks)
        meta_train(m, tasks, cfg, progress=False)
        weights.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_horizon_curriculum_trains_each_stage_on_its_horizon() -> None:
    """A curriculum (2 then 4 steps) trains its first half exactly as a plain 2-step run
    and its second half otherwise; stages split the outer steps evenly."""
    cfg = MetaTrainConfig(steps=6, horizon=64, horizon_curriculum=(4, 16))
    assert [cfg.horizon_at(s) for s in range(6)] == [4, 4, 16, 16, 64, 64]
    assert MetaTrainConfig(horizon=8).horizon_at(299) == 8
    with pytest.raises(ValueError, match="horizon_curriculum"):
        MetaTrainConfig(horizon_curriculum=(0, 4))
    tasks = oscillator_family(3, 3, 12, "train", seed=3)
    config = MetaSymConfig(history_len=2, d_model=8, n_heads=1, encoder_width=4)
    base = MetaTrainConfig(
        steps=4, meta_batch=2, support_episodes=2, inner_steps=1, batch_windows=8, lr_decay=False
    )

    def weights(cfg: MetaTrainConfig, stop_at: int) -> torch.Tensor:
        m = _model(config)
        m.fit_normalization(tasks)
        meta_train(m, tasks, cfg, progress=False, stop_at=stop_at)
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    curriculum = replace(base, horizon=4, horizon_curriculum=(2,))
    short = replace(base, horizon=2)
    assert torch.equal(weights(curriculum, 2), weights(short, 2))
    assert not torch.equal(weights(curriculum, 4), weights(short, 4))


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    tasks = oscillator_family(3, 3, 12, "train", seed=3)
    config = MetaSymConfig(history_len=2, d_model=8, n_heads=1, encoder_width=4)
    cfg = MetaTrainConfig(
        steps=4, meta_batch=2, support_episodes=2, inner_steps=1, batch_windows=8, log_every=1
    )
    full = _model(config)
    full.fit_normalization(tasks)
    meta_train(full, tasks, cfg, progress=False, out_dir=tmp_path / "full")
    part = _model(config)
    part.fit_normalization(tasks)
    meta_train(part, tasks, cfg, progress=False, out_dir=tmp_path / "part", stop_at=2)
    resumed = _model(config, seed=5)  # other initial weights: the checkpoint must win
    resumed.fit_normalization(tasks)
    log = meta_train(resumed, tasks, cfg, progress=False, out_dir=tmp_path / "part", resume=True)
    for (k, v), w in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=0, atol=1e-12, msg=k)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    saved = json.loads((tmp_path / "part" / "log.json").read_text())
    assert len(saved) == 4 and all(np.isfinite(r["loss"]) for r in saved)
    assert (tmp_path / "part" / "checkpoint.safetensors").exists()


def test_first_and_second_order_differ_and_train() -> None:
    tasks = oscillator_family(2, 3, 12, "train", seed=5)
    config = MetaSymConfig(history_len=2, d_model=8, n_heads=1, encoder_width=4)
    grads = {}

    def fresh() -> MetaSym:
        m = _model(config)
        m.fit_normalization(tasks)
        torch.nn.init.normal_(m.decoder.head.weight, std=0.3)
        return m

    for second in (False, True):
        m = fresh()
        before = {k: v.clone() for k, v in m.state_dict().items()}
        cfg = MetaTrainConfig(
            steps=1,
            meta_batch=0,
            support_episodes=2,
            inner_steps=2,
            inner_lr=0.5,
            inner_optimizer="sgd",
            second_order=second,
            batch_windows=0,
            grad_clip=0.0,
            log_every=1,
        )
        meta_train(m, tasks, cfg, progress=False)
        grads[second] = torch.cat(
            [(m.state_dict()[k] - before[k]).flatten() for k in before if "meta_attn" in k]
        )
        assert grads[second].abs().max() > 0
        # and training lowers the meta-loss: 20 outer steps on a fixed time split (support
        # the first half of each episode, query the second; every window each step, so the
        # logged loss is a deterministic function of the weights). Measured: query loss
        # 4.79 -> 0.19 (second order) / 0.21 (first), 0.033x / 0.039x; the inner loop cuts
        # the support loss 3.26 -> 0.61 at the start
        m = fresh()
        long = replace(cfg, steps=20, support_episodes=3, inner_lr=0.1, outer_lr=1e-2)
        log = meta_train(m, tasks, long, progress=False)
        assert [r["step"] for r in log] == list(range(1, 21))
        assert log[-1]["loss"] < 0.1 * log[0]["loss"], "meta-training must lower the loss 10x"
        assert log[0]["inner_after"] < 0.4 * log[0]["inner_before"]
    assert not torch.allclose(grads[False], grads[True], rtol=1e-6, atol=1e-12)


def test_split_by_task_groups_systems() -> None:
    fam = oscillator_family(3, 2, 5, "train", seed=0)
    merged = Trajectory.concatenate(fam)
    groups = split_by_task(merged)
    assert [g.num for g in groups] == [2, 2, 2]
    for g, f in zip(groups, fam):
        np.testing.assert_array_equal(g.states, f.states)


def test_cli_train_then_adapt_on_toy(tmp_path: Path) -> None:
    from metasym_control.checkpoint import load_checkpoint
    from metasym_control.training import AdaptArgs, TrainArgs, adapt_main, run_training

    small = MetaSymConfig(history_len=2, d_model=8, n_heads=1, encoder_width=4)
    args = TrainArgs(
        env="toy",
        out=tmp_path / "run",
        n_tasks=3,
        episodes=3,
        steps_per_episode=15,
        dtype="float64",
        progress=False,
        metasym=small,
        train=MetaTrainConfig(steps=2, meta_batch=2, support_episodes=2, batch_windows=8),
    )
    model = run_training(args)
    assert (tmp_path / "run" / "checkpoint.safetensors").exists()
    oscillator_family(1, 3, 15, "test", seed=9)[0].save(tmp_path / "support")
    adapt_main(
        AdaptArgs(
            checkpoint=tmp_path / "run" / "checkpoint",
            data=tmp_path / "support.npz",
            out=tmp_path / "adapted",
            budget=AdaptBudget(inner_steps=3),
        )
    )
    adapted, _ = load_checkpoint(tmp_path / "adapted", expect_class="MetaSym", env_id=TOY_ENV_ID)
    assert adapted.config == model.config
    changed = [
        n
        for n, p in adapted.named_parameters()
        if not torch.equal(p, dict(model.named_parameters())[n])
    ]
    assert changed and set(changed) <= set(model.fast_weight_names())


def test_stale_contexts_end_the_history_before_the_start() -> None:
    """`make_windows(gap=G)`: each history ends 0..G steps before its start state, whole
    histories stay whole, the futures are untouched, and G = 0 is the plain window; meta-
    training with `context_gap` trains otherwise than without."""
    traj = oscillator_family(1, 2, 40, "train", seed=5)[0]
    clock = np.broadcast_to(np.arange(41.0)[None, :, None], traj.states.shape)
    traj = replace(traj, states=np.ascontiguousarray(clock))  # a state is its time index
    L, H, G = 3, 2, 10
    plain = make_windows(traj, L, H)
    assert all(np.array_equal(plain[k], make_windows(traj, L, H, 0, 7)[k]) for k in plain)
    stale = make_windows(traj, L, H, G, seed=7)
    for k in ("x0", "ua", "y"):
        assert np.array_equal(stale[k], plain[k])
    c = stale["x0"][:, 0].astype(int)
    end = stale["hs"][:, -1, 0].astype(int) + 1  # the step after the history's last state
    gap = c - end
    assert np.array_equal(stale["hs"][c < L], plain["hs"][c < L])  # no room: fresh window
    assert stale["hv"][c >= L].all()  # a full history stays full
    assert np.all(gap[c >= L] >= 0) and np.all(gap[c >= L] <= np.minimum(G, c - L)[c >= L])
    assert np.array_equal(
        np.diff(stale["hs"][..., 0], axis=1)[c >= L], np.ones((int((c >= L).sum()), L - 1))
    )
    assert len(set(gap[c >= L].tolist())) > 5  # drawn, not one fixed offset
    with pytest.raises(ValueError, match="context_gap"):
        MetaTrainConfig(context_gap=-1)
    base = _TINY_TRAIN
    weights = _tiny_trained_weights
    assert torch.equal(weights(base), weights(replace(base, context_gap=0)))
    assert not torch.equal(weights(base), weights(replace(base, context_gap=8)))


def test_short_contexts_keep_a_drawn_suffix_of_the_history() -> None:
    """`short_context`: the drawn windows keep only their last 0..L-1 transitions (valid slots
    a suffix, cut actions zero), the rest and every future are untouched, the draw is seeded,
    and meta-training with it trains otherwise than without."""
    from metasym_control.meta_training import _shortened

    n, length = 4000, 4
    batch = {
        "hv": torch.ones(n, length, dtype=torch.bool),
        "ha": torch.ones(n, length, 2, dtype=torch.float64),
        "hs": torch.ones(n, length, 3, dtype=torch.float64),
        "x0": torch.zeros(n, 3, dtype=torch.float64),
    }
    out = _shortened(batch, 0.25, np.random.default_rng(0))
    kept = out["hv"].sum(1)
    cut = kept < length
    assert 0.2 < float(cut.double().mean()) < 0.3  # the stated fraction, drawn
    assert set(kept[cut].tolist()) == set(range(length))  # 0..L-1 transitions kept
    assert torch.equal(out["hv"], out["hv"].flip(1).cummin(1).values.flip(1))  # a suffix
    assert torch.equal(out["ha"].sum(-1) > 0, out["hv"])  # cut actions zeroed
    assert out["x0"] is batch["x0"] and out["hs"] is batch["hs"]
    assert torch.equal(out["hv"], _shortened(batch, 0.25, np.random.default_rng(0))["hv"])
    with pytest.raises(ValueError, match="short_context"):
        MetaTrainConfig(short_context=1.5)
    base = _TINY_TRAIN
    weights = _tiny_trained_weights
    assert torch.equal(weights(base), weights(replace(base, short_context=0.0)))
    short = weights(replace(base, short_context=1.0))
    assert torch.isfinite(short).all() and not torch.equal(weights(base), short)
