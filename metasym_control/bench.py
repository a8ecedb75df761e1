"""Benchmark helpers: robust timing and writing sections of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

BENCHMARKS_FILE = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
_HEADER = (
    "# Benchmarks\n\nEvery table below is written by a command in this repository "
    "(named in its section); rerun it to refresh the section. Machine and date are recorded "
    "per section.\n"
)


def machine_description() -> str:
    """One line naming the CPU, core count, and GPU if torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    desc = f"{cpu}, {cores} cores"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f", GPU {torch.cuda.get_device_name(0)}"
        desc += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        pass
    return desc


def time_call(
    fn: Callable[[], object],
    repeat: int = 50,
    warmup: int = 5,
    sync: Callable[[], None] | None = None,
) -> np.ndarray:
    """Seconds taken by each of `repeat` calls of `fn` after `warmup` untimed calls.

    Args:
        fn: the work to time.
        repeat: timed calls.
        warmup: untimed calls first (caches, JIT, allocator).
        sync: called after each call before the clock stops (e.g. torch.cuda.synchronize).

    Returns:
        (repeat,) seconds.
    """
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    out = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        out[i] = time.perf_counter() - t0
    return out


def write_section(name: str, markdown: str, path: Path | None = None) -> Path:
    """Replace (or append) the section `name` of BENCHMARKS.md with `markdown`.

    Sections are delimited by HTML comments, so each benchmark command owns its section and
    rerunning one leaves the others in place.
    """
    path = path or BENCHMARKS_FILE
    text = path.read_text() if path.exists() else _HEADER
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table from a header and rows (cells formatted with str)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def bootstrap_median_interval(
    values: Sequence[float], seed: int = 0, n_boot: int = 2000
) -> tuple[float, float]:
    """95% bootstrap interval of the median."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(v, size=(n_boot, v.size), replace=True), axis=1)
    # with infinite values (a settle time never reached) interpolation would give nan
    if np.all(np.isfinite(meds)):
        lo, hi = np.quantile(meds, [0.025, 0.975])
    else:
        lo, hi = np.quantile(meds, [0.025, 0.975], method="nearest")
    return float(lo), float(hi)
