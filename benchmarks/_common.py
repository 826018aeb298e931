"""Shared benchmark plumbing: timing medians, peak memory in a subprocess, machine facts, atomic JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    from epdo._machine import cpu_model

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": sys.version.split()[0]}


def arg_parser(doc: str) -> argparse.ArgumentParser:
    """The options every layer benchmark takes: steps per measurement, torch threads, interleaved rounds."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all layers")
    return ap


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


def run_interleaved(script: str, jobs: dict[str, list[str]], rounds: int,
                    later_rounds_args: tuple[str, ...] = ()) -> list[dict]:
    """Run ``python script *argv`` for every ``label -> argv`` of ``jobs``, once per round, each in a fresh
    subprocess that prints one JSON row as its last line. Rounds are interleaved (every job runs once per round),
    so a load change on the machine hits all jobs alike; a job that fails is reported and dropped. Returns one
    row per job: the first round's row with the timing keys replaced by their median over rounds (the per-round
    values kept under ``<key>_rounds``)."""
    results: dict[str, list[dict]] = {}
    for rnd in range(rounds):
        for label, argv in jobs.items():
            if rnd and label not in results:
                continue
            cmd = [sys.executable, script, *argv, *(later_rounds_args if rnd else ())]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(f"{label}: skipped: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            results.setdefault(label, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {rnd + 1}/{rounds} done", flush=True)
    rows = []
    for runs in results.values():
        row = dict(runs[0])
        for key in ("build_s", "train_s", "eval_s", "peak_mb"):
            row[key] = statistics.median(r[key] for r in runs)
            row[key + "_rounds"] = [r[key] for r in runs]
        row["rounds"] = len(runs)
        rows.append(row)
    return rows


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
