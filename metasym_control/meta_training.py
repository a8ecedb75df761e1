"""Meta-training (MAML-style, first or second order), single-process or under torchrun.

Tasks are systems: one `Trajectory` (several episodes of one parameter set) per task. Each
outer step draws a meta-batch of tasks; for each, the episodes are split into support and
query; a functional inner loop (`metasym_control.models.inner_loop.inner_loop`) adapts the fast
weights on the support windows; the query loss with the adapted weights (plus the encoder's
time-reversal losses) is backpropagated to every parameter.

Distributed: under `torchrun`, each rank holds its own disjoint shard of tasks (by global task
index). Every rank draws the same global meta-batch from a seed; each processes the tasks of
its shard; the meta-gradient is summed across ranks with `all_reduce` (the functional inner
loop bypasses DDP's hooks, so the reduction is explicit) and every rank takes the same
optimizer step. Nothing random depends on the rank, so N ranks reproduce one process on the
union of the shards.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.func import functional_call
from tqdm import tqdm

from metasym_control.checkpoint import restore_into, save_checkpoint
from metasym_control.dynamics import AdaptBudget
from metasym_control.models.inner_loop import adapt_model, inner_loop, model_params
from metasym_control.models.learned import LearnedModel, data_statistics
from metasym_control.trajectory import Trajectory
from metasym_control.windows import make_windows, num_windows, to_batch, window_sampler

logger = logging.getLogger(__name__)

__all__ = [
    "MetaTrainConfig",
    "adapt_model",
    "fit_normalization_distributed",
    "meta_train",
]


@dataclass(frozen=True)
class MetaTrainConfig:
    """Meta-training settings.

    Attributes:
        steps: outer steps.
        meta_batch: tasks per outer step (0: every task, every step).
        support_episodes: episodes of a task used as support (the rest are query); a task
            with no more episodes than this splits each episode in time instead.
        inner_steps: gradient steps of the inner loop.
        inner_lr: inner step size.
        inner_optimizer: "sgd" or "adam" (functional, differentiable).
        second_order: differentiate through the inner gradients (else first-order MAML).
        horizon: rollout length of the query loss (control steps); with a curriculum, the
            last stage's.
        horizon_curriculum: query-loss horizons of the earlier stages of a horizon
            curriculum, e.g. (4, 16) with `horizon` 64 trains a third of the outer steps on
            each of 4, 16 and 64 steps (short losses first, while the one-step map is still
            poor and long rollouts only diverge); () trains on `horizon` throughout.
        inner_horizon: rollout length of the support loss.
        batch_windows: windows drawn per support / query set per task (0: all).
        outer_lr: Adam step size of the outer loop.
        lr_decay: cosine decay of the outer step size to 10 % over `steps`.
        grad_clip: max norm of the meta-gradient (0: none).
        aux: add the model's auxiliary (time-reversal) losses to the query loss.
        unadapted_weight: weight of the query loss of the *unadapted* meta-model, added to
            the adapted one, so the meta-model also predicts well before any adaptation (a
            controller flies it until its first adaptation); 0 is plain MAML.
        input_noise: std of Gaussian noise added to the query windows' start state and
            history states, in units of the model's state std; the targets stay clean, so
            the model learns to steer a perturbed state back to the data (the model's own
            errors in a long rollout are such perturbations); 0: none.
        context_gap: largest staleness of the query windows' history, steps: each query
            window's history ends a drawn 0..context_gap steps before its start state (at
            most as far as the episode allows), so the model learns to use the window as a
            description of the system, not of the current state, as it must at step k of a
            long rollout or an MPC plan, where the window is k steps old; 0: the history ends
            at the start state.
        short_context: fraction of the query windows whose history is cut to its last m
            transitions, m drawn uniformly from 0..L-1 (m = 0: an empty window, as at a
            closed loop's first step, where the model must predict before its window has
            seen the system; full windows are otherwise the rule, and a window-reading model
            is then least accurate exactly where a flight starts); 0: none.
        seed: seed of every draw (tasks, episodes, windows).
        checkpoint_every: outer steps between checkpoints (0: only at the end).
        log_every: outer steps between log records.
    """

    steps: int = 300  # a few hundred outer steps fit the CPU budget of the default weights
    meta_batch: int = 8  # tasks per step: enough variety for a stable meta-gradient
    support_episodes: int = 3  # the K of K-shot adaptation
    inner_steps: int = 3  # few inner steps: cheap and what MAML needs to learn an init
    inner_lr: float = 1e-2  # matches the default AdaptBudget
    inner_optimizer: str = "adam"  # the default AdaptBudget optimizer, so training = use
    second_order: bool = False  # first-order is ~2x cheaper and nearly as good here
    horizon: int = 4  # multi-step query loss: long-horizon accuracy is the claim
    horizon_curriculum: tuple[int, ...] = ()  # no curriculum by default (docs/metasym.md)
    inner_horizon: int = 1  # the default AdaptBudget horizon
    batch_windows: int = 64  # windows per set: keeps a step cheap on CPU
    outer_lr: float = 3e-3  # Adam on all parameters
    lr_decay: bool = True  # short runs end far lower with a cosine decay
    grad_clip: float = 1.0  # rare large rollout errors should not derail training
    aux: bool = True  # time-reversal losses of the encoder
    unadapted_weight: float = 0.0  # plain MAML by default; the shipped weights use 0.5
    input_noise: float = 0.0  # clean inputs by default (docs/metasym.md measures it)
    context_gap: int = 0  # fresh windows by default (docs/metasym.md measures stale ones)
    short_context: float = 0.0  # full windows by default (docs/metasym.md measures short ones)
    seed: int = 0  # everything random derives from it
    checkpoint_every: int = 0  # end-only by default
    log_every: int = 10  # log records every 10 steps

    def __post_init__(self) -> None:
        if self.steps < 0 or self.meta_batch < 0 or self.inner_steps < 0:
            raise ValueError("MetaTrainConfig: steps, meta_batch and inner_steps must be >= 0")
        if self.support_episodes < 1 or self.horizon < 1 or self.inner_horizon < 1:
            raise ValueError("MetaTrainConfig: support_episodes, horizons must be >= 1")
        if any(h < 1 for h in self.horizon_curriculum):
            bad = self.horizon_curriculum
            raise ValueError(f"MetaTrainConfig.horizon_curriculum: horizons must be >= 1: {bad}")
        if self.inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam': {self.inner_optimizer}")
        if not self.input_noise >= 0.0:
            raise ValueError(f"MetaTrainConfig.input_noise must be >= 0, got {self.input_noise}")
        if self.context_gap < 0:
            raise ValueError(f"MetaTrainConfig.context_gap must be >= 0, got {self.context_gap}")
        if not 0.0 <= self.short_context <= 1.0:
            frac = self.short_context
            raise ValueError(f"MetaTrainConfig.short_context must be in [0, 1], got {frac}")

    @property
    def query_horizons(self) -> tuple[int, ...]:
        """Every stage's query-loss horizon, in order (the last is `horizon`)."""
        return (*self.horizon_curriculum, self.horizon)

    def horizon_at(self, step: int) -> int:
        """The query-loss horizon (steps) of outer step `step` (0-based): the stages split
        `steps` into equal consecutive parts."""
        stages = self.query_horizons
        return stages[min(len(stages) - 1, step * len(stages) // max(self.steps, 1))]

    def matching(self, budget: AdaptBudget) -> MetaTrainConfig:
        """This config with its inner loop doing what `budget` does at adaptation time.

        The inner loop then minimises the budget's loss (its rollout horizon) with the
        budget's optimizer and step size, so the meta-learned initialisation is the one that
        adaptation starts from under the same rules; only the number of inner steps stays
        this config's (adaptation may run longer than training affords). The two defaults
        agree; a budget with other values (say a 4-step loss) needs this, or the inner
        loop trains on another loss than adaptation minimises.

        Args:
            budget: the adaptation budget the meta-model will be adapted with.

        Returns:
            A new config; `self` is unchanged.
        """
        return replace(
            self,
            inner_lr=budget.lr,
            inner_optimizer=budget.optimizer,
            inner_horizon=budget.horizon,
        )


def validate_train_config(cfg: MetaTrainConfig, prefix: str = "--train.") -> None:
    """Check the meta-training options (`UsageError` naming the flag and its range)."""
    from metasym_control.usage import at_least, positive

    at_least(prefix + "steps", cfg.steps, 1)
    at_least(prefix + "meta-batch", cfg.meta_batch, 0)
    at_least(prefix + "support-episodes", cfg.support_episodes, 1)
    at_least(prefix + "inner-steps", cfg.inner_steps, 0)
    positive(prefix + "inner-lr", cfg.inner_lr)
    at_least(prefix + "horizon", cfg.horizon, 1)
    for h in cfg.horizon_curriculum:
        at_least(prefix + "horizon-curriculum", h, 1)
    at_least(prefix + "inner-horizon", cfg.inner_horizon, 1)
    at_least(prefix + "batch-windows", cfg.batch_windows, 0)
    at_least(prefix + "context-gap", cfg.context_gap, 0)
    if not 0.0 <= cfg.short_context <= 1.0:
        raise ValueError(f"{prefix}short-context must be in [0, 1], got {cfg.short_context}")
    positive(prefix + "outer-lr", cfg.outer_lr)


@dataclass
class _TaskData:
    """Windows of one task, per episode: support windows, and query windows per query-loss
    horizon of the curriculum."""

    support: list[dict[str, np.ndarray]]
    query: dict[int, list[dict[str, np.ndarray]]]
    time_split: bool


def _episode_windows(
    traj: Trajectory, L: int, H: int, gap: int = 0, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    return [make_windows(traj.subset([i]), L, H, gap, seed + i) for i in range(traj.num)]


def _time_split(traj: Trajectory) -> tuple[Trajectory, Trajectory]:
    """First and second half (in time) of every episode."""
    half = max(1, int(traj.lengths.max()) // 2)
    first = traj.window(0, half)
    second = traj.window(half, traj.horizon - half)
    return first, second


def _prepare(task: Trajectory, L: int, cfg: MetaTrainConfig, gid: int = 0) -> _TaskData:
    """Support and query windows of one task (`gid`: its global index, seeds the stale
    contexts of `cfg.context_gap`)."""
    horizons = sorted(set(cfg.query_horizons))
    gap, seed = cfg.context_gap, cfg.seed * 1_000_003 + gid * 1009
    if task.num > cfg.support_episodes:
        return _TaskData(
            _episode_windows(task, L, cfg.inner_horizon),
            {h: _episode_windows(task, L, h, gap, seed) for h in horizons},
            False,
        )
    first, second = _time_split(task)
    return _TaskData(
        [make_windows(first, L, cfg.inner_horizon)],
        {h: [make_windows(second, L, h, gap, seed)] for h in horizons},
        True,
    )


def _concat(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def fit_normalization_distributed(model: LearnedModel, tasks: Sequence[Trajectory]) -> None:
    """Fit the model's normalisation on the union of every rank's tasks (exact pooled sums).

    Single-process: the same as `model.fit_normalization(tasks)`.
    """
    stats = data_statistics(list(tasks))
    _, world = _dist_info()
    if world > 1:
        for k, v in stats.items():
            t = torch.as_tensor(v, dtype=torch.float64)
            op = (
                dist.ReduceOp.MIN
                if k == "x_min"
                else dist.ReduceOp.MAX
                if k == "x_max"
                else dist.ReduceOp.SUM
            )
            dist.all_reduce(t, op=op)
            stats[k] = t.numpy()
    model.set_normalization(stats)


def meta_train(
    model: LearnedModel,
    tasks: Sequence[Trajectory],
    config: MetaTrainConfig,
    task_ids: Sequence[int] | None = None,
    n_tasks_total: int | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
) -> list[dict[str, Any]]:
    """Meta-train `model` in place on `tasks`.

    Args:
        model: a learned model whose normalisation is already fitted (see
            `fit_normalization_distributed`).
        tasks: this rank's tasks, one Trajectory per system.
        config: settings.
        task_ids: global indices of `tasks` (default 0..n-1); shards of different ranks must
            be disjoint.
        n_tasks_total: number of tasks over every rank (default: len(tasks) x world size is
            NOT assumed; it defaults to max(task_ids) + 1 summed over ranks by all_reduce).
        out_dir: where `log.json` and `checkpoint.safetensors/.json` go (rank 0 writes);
            None writes nothing.
        resume: continue from `out_dir/checkpoint` if it exists (weights, optimizer, step).
        progress: show a tqdm bar (rank 0).
        stop_at: stop (with a checkpoint) after this outer step, e.g. to split a run in time
            slices; the schedule stays that of `config.steps`.

    Returns:
        The log: one dict per logged step (step, loss, inner_before, inner_after, seconds).

    Raises:
        ValueError: shards that overlap across ranks, or a task without windows.
    """
    rank, world = _dist_info()
    ids = list(range(len(tasks))) if task_ids is None else [int(i) for i in task_ids]
    if len(ids) != len(tasks) or len(set(ids)) != len(ids):
        raise ValueError("task_ids must be distinct, one per task")
    n_total = _check_shards(ids, n_tasks_total, world)
    local = {g: _prepare(t, model.history_len, config, g) for g, t in zip(ids, tasks)}
    for gid, td in local.items():
        queries = [w for ws in td.query.values() for w in ws]
        if not all(num_windows(w) for w in queries) or not all(num_windows(w) for w in td.support):
            raise ValueError(f"task {gid} has an episode with too few transitions for a window")
    ref = next(iter(model.parameters()))
    dev, dtype = ref.device, ref.dtype
    fast_names = model.fast_weight_names()
    if world > 1:  # identical start on every rank
        with torch.no_grad():
            for p in model.parameters():
                dist.broadcast(p.data, src=0)
    opt = torch.optim.Adam(model.parameters(), lr=config.outer_lr)
    total = max(config.steps, 1)

    def lr_at(step: int) -> float:
        if not config.lr_decay:
            return config.outer_lr
        return config.outer_lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / total)))

    start, log = 0, []
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / "checkpoint" if out is not None else None
    if resume and ckpt is not None and ckpt.with_suffix(".json").exists():
        meta = restore_into(ckpt, model, opt)
        start = int(meta["training"]["step"])
        log = list(meta["training"].get("log", []))
        logger.info("resuming meta-training at step %d", start)
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    bar = tqdm(
        range(start, end),
        disable=not progress or rank != 0,
        desc="meta-train",
        initial=start,
        total=config.steps,
    )
    t0 = time.perf_counter()
    for step in bar:
        # the global meta-batch: the same draw on every rank
        rng = np.random.default_rng([config.seed, step])
        if config.meta_batch and config.meta_batch < n_total:
            chosen = sorted(rng.choice(n_total, config.meta_batch, replace=False).tolist())
        else:
            chosen = list(range(n_total))
        mine = [g for g in chosen if g in local]
        logging_step = (step + 1) % config.log_every == 0 or step + 1 == end
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=False)
        stats = torch.zeros(3, dtype=torch.float64)  # query loss, inner before, inner after
        for gid in mine:
            q, before, after = _task_loss(
                model, local[gid], gid, step, config, fast_names, dev, dtype, logging_step
            )
            (q / len(chosen)).backward()
            stats += torch.tensor([q.item(), before, after], dtype=torch.float64) / len(chosen)
        # the meta-gradient, summed over ranks explicitly
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        if world > 1:
            flat = torch.cat([g.reshape(-1) for g in grads] + [stats.to(dev, dtype)])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            stats = flat[-3:].to(torch.float64).cpu()
            off = 0
            for p, g in zip(model.parameters(), grads):
                n = g.numel()
                p.grad = flat[off : off + n].view_as(p).clone()
                off += n
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        record = {
            "step": step + 1,
            "loss": float(stats[0]),
            "inner_before": float(stats[1]),
            "inner_after": float(stats[2]),
            "seconds": time.perf_counter() - t0,
        }
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"meta-training diverged at step {step + 1}: {record}")
        if logging_step:
            log.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4g}")
            if rank == 0 and out is not None:
                out.mkdir(parents=True, exist_ok=True)
                (out / "log.json").write_text(json.dumps(log, indent=1))
        last = step + 1 == end
        if (
            ckpt is not None
            and rank == 0
            and (last or (config.checkpoint_every and (step + 1) % config.checkpoint_every == 0))
        ):
            training = {"step": step + 1, "config": asdict(config), "log": log, "world": world}
            save_checkpoint(ckpt, model, training=training, optimizer=opt)
    return log


def _check_shards(ids: list[int], n_tasks_total: int | None, world: int) -> int:
    """Check that the ranks' shards are disjoint; return the global number of tasks."""
    n_local = max(ids) + 1 if ids else 0
    if world == 1:
        return n_tasks_total or n_local
    size = torch.tensor([n_local], dtype=torch.int64)
    dist.all_reduce(size, op=dist.ReduceOp.MAX)
    n_total = int(n_tasks_total or size.item())
    owned = torch.zeros(n_total, dtype=torch.int64)
    owned[ids] = 1
    dist.all_reduce(owned, op=dist.ReduceOp.SUM)
    if int(owned.max()) > 1:
        dup = torch.nonzero(owned > 1).flatten().tolist()
        raise ValueError(f"task shards overlap across ranks: tasks {dup[:10]} are on several")
    return n_total


def _task_loss(
    model: LearnedModel,
    td: _TaskData,
    gid: int,
    step: int,
    config: MetaTrainConfig,
    fast_names: list[str],
    dev: torch.device,
    dtype: torch.dtype,
    diagnostics: bool = True,
) -> tuple[torch.Tensor, float, float]:
    """Query loss after the inner loop on one task; also the inner loss before and after
    (NaN unless `diagnostics`)."""
    rng = np.random.default_rng([config.seed, step, gid, 1])
    query = td.query[config.horizon_at(step)]
    if td.time_split:
        sup, qry = td.support[0], query[0]
    else:
        perm = rng.permutation(len(td.support))
        k = config.support_episodes
        sup = _concat([td.support[i] for i in perm[:k]])
        qry = _concat([query[i] for i in perm[k:]])
    seed = int(rng.integers(2**31))
    sup_fn = window_sampler(sup, config.batch_windows, seed, dev, dtype)
    nq = num_windows(qry)
    qidx = None
    if config.batch_windows and config.batch_windows < nq:
        qidx = rng.choice(nq, config.batch_windows, replace=False)
    qbatch = to_batch(qry, qidx, dev, dtype)
    if config.input_noise > 0:
        qbatch = _perturbed(qbatch, model.state_std, config.input_noise, rng)
    if config.short_context > 0:
        qbatch = _shortened(qbatch, config.short_context, rng)
    params = model_params(model, detach=False)  # meta-gradients flow into every parameter
    fast = inner_loop(
        model,
        params,
        fast_names,
        sup_fn,
        config.inner_steps,
        config.inner_lr,
        config.inner_optimizer,
        create_graph=config.second_order,
    )
    before = after = math.nan
    if diagnostics:
        with torch.no_grad():
            b0, base = sup_fn(0), model_params(model)
            before = float(functional_call(model, base, (b0,)))
            adapted = {**base, **{n: w.detach() for n, w in fast.items()}}
            after = float(functional_call(model, adapted, (b0,)))
    q = functional_call(model, {**params, **fast}, (qbatch,), {"aux": config.aux})
    if config.unadapted_weight > 0:
        q = q + config.unadapted_weight * functional_call(model, params, (qbatch,))
    return q, before, after


def _perturbed(
    batch: dict[str, torch.Tensor], std: torch.Tensor, scale: float, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """`batch` with N(0, (scale * std)^2) noise on `x0` (B, nx) and the history states `hs`
    (B, L, nx); std (nx,) in state units. Drawn from `rng` (seeded per task and step)."""
    out = dict(batch)
    for key in ("x0", "hs"):
        x = batch[key]
        eps = torch.as_tensor(rng.standard_normal(tuple(x.shape)), device=x.device, dtype=x.dtype)
        out[key] = x + eps * (scale * std.to(x.dtype))
    return out


def _shortened(
    batch: dict[str, torch.Tensor], fraction: float, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """`batch` with a drawn `fraction` of its windows' histories (hv (B, L)) cut to their last
    m transitions, m uniform in 0..L-1; cut slots are marked invalid, their actions zeroed as
    `make_windows` pads. Drawn from `rng` (seeded per task and step)."""
    hv = batch["hv"]
    n, length = int(hv.shape[0]), int(hv.shape[1])
    if length == 0 or n == 0:
        return batch
    picked = rng.random(n) < fraction
    kept = rng.integers(0, length, size=n)
    cut = np.where(picked, length - kept, 0)  # invalid slots at the front
    keep = torch.as_tensor(np.arange(length)[None, :] >= cut[:, None], device=hv.device)
    out = dict(batch)
    out["hv"] = hv & keep
    out["ha"] = torch.where(out["hv"][..., None], batch["ha"], torch.zeros_like(batch["ha"]))
    return out


def init_distributed(device: str = "cpu") -> tuple[int, int]:
    """Join the process group that `torchrun` describes (env RANK/WORLD_SIZE), if any.

    gloo on CPU, NCCL on CUDA. Returns (rank, world size); (0, 1) when not under torchrun.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def shutdown_distributed() -> None:
    """Barrier, then destroy the process group (teardown without a barrier aborts at times)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
