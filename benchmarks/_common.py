"""Shared benchmark plumbing: timing medians, peak memory in a subprocess, machine facts, atomic JSON."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": sys.version.split()[0]}


def median_time(fn, reps: int = 10, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_layer(module, fwd, x: torch.Tensor, reps: int) -> dict:
    """Median train-mode forward+backward and eval-mode forward times of ``fwd(x)`` over ``reps`` steps, and
    the growth of this process's peak RSS over the training steps (torch's CPU allocations are invisible to
    tracemalloc). Run each layer in a fresh subprocess so the RSS growth is its own."""
    module.train()
    rss0 = max_rss_mb()

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        fwd(x).square().mean().backward()

    train_s = median_time(step, reps)
    peak = max_rss_mb() - rss0
    module.eval()
    with torch.no_grad():
        eval_s = median_time(lambda: fwd(x), reps)
    return dict(train_s=train_s, eval_s=eval_s, peak_mb=peak)


def max_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_json(name: str, payload: dict) -> Path:
    """``payload`` as indented JSON in ``benchmarks/results/<name>``, written atomically."""
    from epdo._io import atomic_write_bytes

    return atomic_write_bytes(RESULTS / name, lambda f: f.write(json.dumps(payload, indent=2).encode()))


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("-" if r.get(k) is None else format(r[k], f)) if not isinstance(r.get(k), str) else r[k]
                      for k, _, f in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for j, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
