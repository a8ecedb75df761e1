"""Two gloo processes on disjoint task shards reproduce one process on the union."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metasym_control.envs.toy_oscillator import TOY_DT, TOY_ENV_ID, oscillator_family
from metasym_control.meta_training import (
    MetaTrainConfig,
    fit_normalization_distributed,
    meta_train,
)
from metasym_control.models.metasym import MetaSym, MetaSymConfig
from metasym_control.systems import coordinates_for_env

N_TASKS = 5
CFG = MetaTrainConfig(
    steps=3,
    meta_batch=3,
    support_episodes=2,
    inner_steps=2,
    inner_lr=0.1,
    inner_optimizer="sgd",
    second_order=True,
    horizon=2,
    batch_windows=8,
    outer_lr=1e-2,
    log_every=1,
)


def _model() -> MetaSym:
    torch.manual_seed(0)
    return MetaSym(
        2,
        1,
        TOY_DT,
        MetaSymConfig(history_len=2, d_model=8, n_heads=1, encoder_width=4),
        coordinates_for_env(TOY_ENV_ID, 2),
        TOY_ENV_ID,
        dtype=torch.float64,
    )


def _tasks() -> list:
    return oscillator_family(N_TASKS, 3, 12, "train", seed=4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str, overlap: bool) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        everything = _tasks()
        ids = list(range(rank, N_TASKS, world))
        if overlap:
            ids = sorted(set(ids) | {0})
        tasks = [everything[i] for i in ids]  # this rank only ever sees its own shard
        model = _model()
        fit_normalization_distributed(model, tasks)
        meta_train(model, tasks, CFG, task_ids=ids, n_tasks_total=N_TASKS, progress=False)
        if rank == 0:
            torch.save(model.state_dict(), out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _single_process() -> dict[str, torch.Tensor]:
    tasks = _tasks()
    model = _model()
    fit_normalization_distributed(model, tasks)
    meta_train(model, tasks, CFG, progress=False)
    return model.state_dict()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path: Path) -> None:
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(2, _free_port(), out, False), nprocs=2, join=True)
    dist_state = torch.load(out, weights_only=True)
    single = _single_process()
    moved = False
    start = _model().state_dict()
    for k, v in single.items():
        scale = max(1.0, float(v.abs().max()))
        assert float((dist_state[k] - v).abs().max()) <= 1e-10 * scale, k
        if v.is_floating_point() and v.shape == start[k].shape:
            moved |= bool((v - start[k]).abs().max() > 1e-6)
    assert moved, "training did not change the parameters"


def test_overlapping_shards_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="overlap"):
        mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "x.pt"), True), nprocs=2, join=True)


def test_shard_ids_must_be_distinct() -> None:
    with pytest.raises(ValueError, match="distinct"):
        meta_train(_model(), _tasks()[:2], CFG, task_ids=[0, 0], progress=False)
