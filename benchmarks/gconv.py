"""Group convolutions (epdo.gconv): lifting + group conv on C8 / C16, Monte Carlo SE(2) with 8 / 16 samples and the
partial layer at several theta, side by side with a plain Conv2d pair of the same widths (32 x |G| channels).

Forward+backward (train) and eval-forward times (medians over --reps steps, then over --rounds interleaved rounds),
peak RSS growth per layer (each layer in its own subprocess), 32 channels, 28 x 28, SIREN kernels (evaluated once
per forward pass), CPU. The issue's size is batch 64; ``--batch`` lowers it on small machines (the JSON records it).
Then the Monte Carlo equivariance error vs the sample count (lifting -> tanh -> projection, 90-degree rotation,
training-mode draws, mean of 16 draws) with the fitted rate.

    python benchmarks/gconv.py [--batch 64] [--reps 10] [--rounds 3] [--threads 2] [--note "machine shared"]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import arg_parser, machine, print_table, run_interleaved, time_layer, write_json  # noqa: E402

CHANNELS, SIZE, KERNEL = 32, 28, 5
#: label -> (kind, group elements / samples, theta)
JOBS = {
    "conv2d x8": ("conv2d", 8, None), "conv2d x16": ("conv2d", 16, None),
    "C8": ("finite", 8, None), "C16": ("finite", 16, None),
    "MC SE(2) 8": ("mc", 8, None), "MC SE(2) 16": ("mc", 16, None),
    "partial 16, theta=pi": ("partial", 16, 1.0), "partial 16, theta=pi/2": ("partial", 16, 0.5),
    "partial 16, theta=pi/4": ("partial", 16, 0.25),
}


def build(kind: str, n: int, theta: float | None) -> torch.nn.Module:
    from epdo import gconv, groups

    if kind == "conv2d":
        return torch.nn.Sequential(torch.nn.Conv2d(1, CHANNELS * n, KERNEL, padding=2),
                                   torch.nn.Conv2d(CHANNELS * n, CHANNELS * n, KERNEL, padding=2))
    if kind == "finite":
        G = groups.cyclic(n)
        return torch.nn.Sequential(gconv.LiftingConv(G, 1, CHANNELS, KERNEL), gconv.GroupConv(G, CHANNELS, CHANNELS, KERNEL))
    G = groups.se2()
    kw = dict(partial=True, theta=theta) if kind == "partial" else {}
    lift = gconv.LiftingConv(G, 1, CHANNELS, KERNEL, samples=n, **kw)
    return torch.nn.Sequential(lift, gconv.GroupConv(G, CHANNELS, CHANNELS, KERNEL, in_elements=lift.sampler, samples=n,
                                                     **kw))


def one(label: str, batch: int, reps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    kind, n, theta = JOBS[label]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    m = build(kind, n, theta)
    build_s = time.perf_counter() - t0
    x = torch.rand(batch, 1, SIZE, SIZE)
    row = time_layer(m, m, x, reps)
    with torch.no_grad():
        out_elements = m.train()(x).shape[1] // CHANNELS
    return dict(layer=label, build_s=build_s, elements=out_elements, params=sum(p.numel() for p in m.parameters()),
                **row)


def mc_rate() -> dict:
    from epdo import gconv, groups

    x = torch.randn(1, 1, 13, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ns, errs = [4, 8, 16, 32, 64, 128], []
    for n in ns:
        torch.manual_seed(0)
        lift = gconv.LiftingConv(groups.se2(), 1, 3, 5, samples=n, dtype=torch.float64)
        net = torch.nn.Sequential(lift, torch.nn.Tanh(), gconv.GroupProjection(groups.se2(), 3, in_elements=lift.sampler))
        net.train().requires_grad_(False)
        e = [float((net(torch.rot90(x, 1, (-2, -1))) - torch.rot90(net(x), 1, (-2, -1))).norm() / net(x).norm())
             for _ in range(16)]
        errs.append(float(np.mean(e)))
    slope = float(np.polyfit(np.log(ns), np.log(errs), 1)[0])
    return dict(samples=ns, mean_relative_error=errs, fitted_rate=slope)


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--one", help="(internal) run one layer and print its JSON row")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. 'machine shared, load 8')")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.batch, args.reps, args.threads)))
        return
    script = str(Path(__file__).resolve())
    jobs = {label: ["--one", label, "--batch", str(args.batch), "--reps", str(args.reps), "--threads", str(args.threads)]
            for label in JOBS}
    rows = run_interleaved(script, jobs, args.rounds)
    base = {r["layer"]: r for r in rows if r["layer"].startswith("conv2d")}
    for r in rows:
        ref = base.get(f"conv2d x{JOBS[r['layer']][1]}")
        r["train_vs_conv2d"] = r["train_s"] / ref["train_s"] if ref else None
    print(f"\nlifting + group conv, {CHANNELS} channels, batch {args.batch}, {SIZE}x{SIZE}, k={KERNEL}, "
          f"{args.threads} threads; medians over {args.reps} steps x {args.rounds} rounds")
    print_table(rows, [("layer", "layer", ""), ("elements", "|S|", "d"), ("params", "params", ",d"),
                       ("train_s", "fwd+bwd s", ".3f"), ("eval_s", "eval s", ".3f"), ("peak_mb", "peak MB", ".0f"),
                       ("train_vs_conv2d", "x conv2d", ".2f")])
    rate = mc_rate()
    print(f"\nMonte Carlo error vs samples: " + ", ".join(f"{n}: {e:.4f}" for n, e in
                                                      zip(rate["samples"], rate["mean_relative_error"]))
          + f"; fitted rate n^{rate['fitted_rate']:.2f}")
    path = write_json("gconv.json", dict(machine=machine(), note=args.note, batch=args.batch, reps=args.reps,
                                         rounds=args.rounds, threads=args.threads, rows=rows, monte_carlo=rate))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
