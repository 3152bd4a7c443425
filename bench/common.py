"""Timing, peak memory and data helpers shared by the benchmark sections."""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedding_assets.samplegen import _ticket


@dataclass
class Timed:
    seconds: float
    value: Any = None


def timed(fn: Callable[[], Any]) -> Timed:
    started = time.perf_counter()
    value = fn()
    return Timed(time.perf_counter() - started, value)


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` runs: the least disturbed by a noisy machine."""
    return min(timed(fn).seconds for _ in range(repeats))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values)


def _child(target: Callable[..., Any], args: tuple[Any, ...], queue: Any) -> None:
    started = time.perf_counter()
    value = target(*args)
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((elapsed, peak_kib, value))


def in_subprocess(target: Callable[..., Any], *args: Any) -> tuple[float, float, Any]:
    """Run ``target(*args)`` in a fresh process: (seconds, peak RSS in MiB, return value).

    A fresh process per measurement, so each one's peak memory is its own (polars and Delta
    allocate outside Python's heap, which tracemalloc cannot see)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, queue))
    proc.start()
    elapsed, peak_kib, value = queue.get()
    proc.join()
    return elapsed, peak_kib / 1024, value


def ticket_rows(
    n: int, batch: str = "2026-11-01", seed: int = 11, start: int = 100_000
) -> list[dict[str, Any]]:
    """``n`` help-desk tickets from the sample generator, each with a distinct id and number in
    its text (so exact-duplicate removal does not shrink the corpus)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = _ticket(rng, start + i, batch)
        row["ticket_id"] = f"T-{start + i}"
        row["body"] = f"Ticket {start + i}. {row['body']}"
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def machine() -> dict[str, Any]:
    import os
    import platform

    import polars as pl

    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        torch_version = torch.__version__
    except ImportError:  # pragma: no cover
        gpu, torch_version = None, None
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch_version,
        "polars": pl.__version__,
    }
