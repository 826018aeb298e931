"""ResNet-26 vs its C8 steerable-PDO and Neural-ePDO versions at 224 x 224 (paper 000, Sec. 7.2; issue 14).

For each model: FLOPs per image (``epdo.flops.count_flops``, eval forward), parameters, and one training step
(forward, cross-entropy, backward, SGD step) at batch ``--batch`` on ``--device``: images/s (median over
``--reps`` steps after one warm-up step) and peak memory (CPU: growth of the process's peak RSS over the steps;
CUDA: ``torch.cuda.max_memory_allocated``). Each model runs in its own subprocess, rounds interleaved
(``--rounds``). The summary puts the Neural ePDO / steerable PDO ratio of images/s next to the FLOP ratio
(paper: 24.1G / 56.6G = 0.43).

On CUDA the step runs under ``--amp bf16`` and ``channels_last`` by default (``--amp none`` to disable), the
NeuralEPDO layers with the torch backend (the only one on GPUs).

    python benchmarks/imagenet.py [--device cpu|cuda] [--batch 2] [--reps 3] [--rounds 1] [--models ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, max_rss_mb, print_table, write_json  # noqa: E402

MODELS = ("res26", "res26-spdo-fd", "res26-nepdo-fd")
PAPER_GFLOPS = {"res26-spdo-fd": 56.6, "res26-nepdo-fd": 24.1, "res26-spdo-gauss": 56.6, "res26-nepdo-gauss": 24.1}


def one(name: str, device: str, batch: int, reps: int, amp: str, size: int) -> dict:
    import epdo.models as models
    from epdo.flops import count_flops

    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = models.create(name, num_classes=1000)
    build_s = time.perf_counter() - t0
    flops = count_flops(model, torch.rand(1, 3, size, size)).per_sample
    dev = torch.device(device)
    cl = dev.type == "cuda"
    model.to(dev)
    if cl:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, size, size, device=dev)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)
    use_amp = amp != "none"

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    rss0 = max_rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else max_rss_mb() - rss0
    med = statistics.median(times)
    from epdo.nn._epdo_kernels import resolve_backend

    backend = resolve_backend("auto", x) if "nepdo" in name else None
    return dict(model=name, neural_epdo_backend=backend, params=sum(p.numel() for p in model.parameters()), gflops=flops / 1e9,
                paper_gflops=PAPER_GFLOPS.get(name), build_s=build_s, step_s=med, step_s_all=times,
                images_per_s=batch / med, peak_mb=peak, batch=batch, device=device, amp=amp, channels_last=cl,
                size=size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", choices=("bf16", "none"), default=None, help="default: bf16 on CUDA, none on CPU")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="results file name (default imagenet-<device>.json)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    amp = a.amp or ("bf16" if a.device.startswith("cuda") else "none")
    if a.one:
        print(json.dumps(one(a.one, a.device, a.batch, a.reps, amp, a.size)))
        return
    load0 = os.getloadavg()
    runs: dict[str, list[dict]] = {}
    for r in range(a.rounds):
        for name in a.models:
            cmd = [sys.executable, __file__, "--one", name, "--device", a.device, "--batch", str(a.batch), "--reps",
                   str(a.reps), "--threads", str(a.threads), "--amp", amp, "--size", str(a.size)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(f"{name}: failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            runs.setdefault(name, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}: {name} done", flush=True)
    load1 = os.getloadavg()
    rows = []
    for name, rs in runs.items():
        row = dict(rs[0])
        for k in ("step_s", "images_per_s", "peak_mb", "build_s"):
            row[k] = statistics.median(x[k] for x in rs)
            row[k + "_rounds"] = [x[k] for x in rs]
        rows.append(row)
    print_table(rows, [("model", "model", ""), ("params", "params", ","), ("gflops", "GFLOPs/img", ".2f"),
                       ("paper_gflops", "paper", ".1f"), ("images_per_s", "train img/s", ".3f"),
                       ("step_s", "step s", ".2f"), ("peak_mb", "peak MB", ".0f")])
    by = {r["model"]: r for r in rows}
    summary = {}
    for disc in ("fd", "gauss"):
        s, n = by.get(f"res26-spdo-{disc}"), by.get(f"res26-nepdo-{disc}")
        if s and n:
            summary[disc] = dict(speed_ratio=n["images_per_s"] / s["images_per_s"], flop_ratio=n["gflops"] / s["gflops"],
                                 paper_flop_ratio=24.1 / 56.6, faster=n["images_per_s"] > s["images_per_s"])
            print(f"Neural ePDO / steerable PDO ({disc}): images/s x{summary[disc]['speed_ratio']:.2f}, FLOPs "
                  f"x{summary[disc]['flop_ratio']:.2f} (paper x{24.1 / 56.6:.2f})")
    shared = max(load0[0], load1[0]) > 0.5 * (os.cpu_count() or 1)
    note = (f"load average {load0[0]:.1f} before, {load1[0]:.1f} after on {os.cpu_count()} CPUs"
            + (": the machine was shared, compare rows of this run only" if shared else ""))
    print(note)
    write_json(a.out or f"imagenet-{a.device.split(':')[0]}.json",
               dict(rows=rows, summary=summary, machine=machine(), load=note, shared=shared,
                    command=" ".join(["python", "benchmarks/imagenet.py", *sys.argv[1:]])))


if __name__ == "__main__":
    main()
