"""Message passing on point clouds: speed, and a plain training loop for the N-body models.

    python benchmarks/graph.py bench [--repeats 11] [--threads 1] [--nodes 100 300 1000 3000 10000]
        forward+backward per batch of 100 N-body systems for EGNN and SEGNN, the library's models side by
        side with the same networks written directly in plain torch / e3nn (``EGNNNBodyPlain``,
        ``SEGNNNBodyPlain``: what epdo.export produces, untraced; ratio = library / direct), and
        time vs number of nodes in one radius graph (radius 1, 2 nodes per unit volume: ~8 neighbours;
        graph construction and one EGNNLayer(16, 16) forward+backward timed apart; fitted exponents); table to stdout, JSON to
        benchmarks/results/graph.json.
    python benchmarks/graph.py train --model egnn-nbody --minutes 30 --seed 0 --log runs/egnn.jsonl
        Adam, MSE, batch 100 on the nbody data set (3,000 / 2,000 / 2,000), validation and test MSE every
        ``--eval-every`` epochs as JSON lines; the same loop as ``epdo train`` for regression, usable where
        the command line has no regression task.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import epdo  # noqa: E402
from epdo import graph  # noqa: E402
from epdo.data import nbody  # noqa: E402
from epdo.models import nbody as nbody_models  # noqa: E402

MODELS = {"egnn-nbody": nbody_models.EGNNNBody, "segnn-nbody": nbody_models.SEGNNNBody,
          "ponita-nbody": nbody_models.LiftedNBody}


# --- training ---------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model, tensors, batch=500) -> float:
    model.eval()
    se, n = 0.0, 0
    for i in range(0, tensors[0].shape[0], batch):
        pos, vel, q, tgt = (t[i:i + batch] for t in tensors)
        se += float(((model(pos, vel, q) - tgt) ** 2).sum())
        n += tgt.numel()
    model.train()
    return se / n


def train(args) -> None:
    torch.manual_seed(args.seed)
    data = {s: nbody.load(s, seed=0).tensors for s in ("train", "valid", "test")}
    model = MODELS[args.model]()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    n = data["train"][0].shape[0]
    gen = torch.Generator().manual_seed(args.seed)
    log = open(args.log, "a") if args.log else None
    start = time.time()
    best = (math.inf, math.nan, 0)
    head = {"model": args.model, "seed": args.seed, "lr": args.lr, "batch": args.batch, "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters()), "machine": platform.node(),
            "load": os.getloadavg()[0]}
    print(json.dumps(head), flush=True)
    if log:
        log.write(json.dumps(head) + "\n")
    epoch = 0
    while time.time() - start < 60 * args.minutes and epoch < args.epochs:
        t0 = time.time()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, args.batch):
            idx = perm[i:i + args.batch]
            pos, vel, q, tgt = (t[idx] for t in data["train"])
            loss = ((model(pos, vel, q) - tgt) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        epoch += 1
        row = {"epoch": epoch, "train_mse": total / n, "epoch_s": round(time.time() - t0, 2),
               "wall_s": round(time.time() - start, 1), "load": round(os.getloadavg()[0], 2)}
        if epoch % args.eval_every == 0 or epoch == 1:
            row["valid_mse"] = evaluate(model, data["valid"])
            row["test_mse"] = evaluate(model, data["test"])
            if row["valid_mse"] < best[0]:
                best = (row["valid_mse"], row["test_mse"], epoch)
            row["best"] = {"valid_mse": best[0], "test_mse": best[1], "epoch": best[2]}
        print(json.dumps(row), flush=True)
        if log:
            log.write(json.dumps(row) + "\n")
            log.flush()


# --- benchmarks -------------------------------------------------------------------------------------

def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(args) -> None:
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    torch.manual_seed(0)
    pos, vel, q = nbody_models.nbody_example_inputs(100, torch.Generator().manual_seed(0))
    rows = []
    # "direct": the same function written in plain torch / calling e3nn's modules directly (the models'
    # export classes: no field types, input checks or epdo graph helpers), with the same weights
    for name, cls, direct in (("egnn-nbody", nbody_models.EGNNNBody, nbody_models.EGNNNBodyPlain),
                              ("segnn-nbody", nbody_models.SEGNNNBody, nbody_models.SEGNNNBodyPlain)):
        lib = cls()
        ref = direct(lib)
        with torch.no_grad():
            err = float((lib(pos, vel, q) - ref(pos, vel, q)).abs().max())

        def step(m):
            m.zero_grad()
            m(pos, vel, q).square().mean().backward()
        t_lib, t_dir = [], []
        step(lib), step(ref)  # warm-up
        for _ in range(args.repeats):  # interleaved, so that load changes hit both
            t_lib.append(_median_time(lambda: step(lib), 1, 0))
            t_dir.append(_median_time(lambda: step(ref), 1, 0))
        row = {"model": name, "batch": 100, "library_s": statistics.median(t_lib), "direct_s": statistics.median(t_dir),
               "max_abs_diff": err}
        row["ratio"] = row["library_s"] / row["direct_s"]
        rows.append(row)
    scaling = []
    torch.manual_seed(0)
    layer = graph.EGNNLayer(16, 16, hidden=32)
    for n in args.nodes:
        side = (n / 2.0) ** (1 / 3)  # density 2 nodes per unit volume, radius 1: ~8 neighbours
        p = torch.rand(n, 3, generator=torch.Generator().manual_seed(n)) * side
        h = torch.randn(n, 16)

        ei = graph.radius_graph(p, 1.0)

        def fb():
            layer.zero_grad()
            out, x, _ = layer(h, p, ei)
            (out.square().mean() + x.square().mean()).backward()
        reps = max(1, args.repeats // 3 if n > 3000 else args.repeats)
        t_layer = _median_time(fb, reps)
        t_graph = _median_time(lambda: graph.radius_graph(p, 1.0), reps)
        scaling.append({"nodes": n, "edges": int(ei.shape[1]), "total_s": t_graph + t_layer, "graph_s": t_graph,
                        "layer_s": t_layer})
    import numpy as np

    lx = np.log([s["nodes"] for s in scaling])
    fit = {k: float(np.polyfit(lx, np.log([max(s[k], 1e-9) for s in scaling]), 1)[0]) for k in ("total_s", "graph_s", "layer_s")}
    meta = {"machine": platform.node(), "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_1min_start": load_start, "shared": True,
            "note": "2-core machine shared by 5 sessions: timings are medians under load"}
    print(f"machine {meta['machine']} ({meta['cpu']}), torch {meta['torch']}, {meta['threads']} threads, "
          f"load {meta['load_1min_start']:.1f} (shared)")
    print(f"{'model':<14}{'library s':>11}{'direct s':>10}{'ratio':>7}{'max |diff|':>12}")
    for r in rows:
        print(f"{r['model']:<14}{r['library_s']:>11.4f}{r['direct_s']:>10.4f}{r['ratio']:>7.2f}{r['max_abs_diff']:>12.1e}")
    print(f"\n{'nodes':>7}{'edges':>9}{'total s':>10}{'graph s':>10}{'layer s':>10}")
    for s in scaling:
        print(f"{s['nodes']:>7}{s['edges']:>9}{s['total_s']:>10.4f}{s['graph_s']:>10.4f}{s['layer_s']:>10.4f}")
    print("fitted exponents (time ~ nodes^k): " + ", ".join(f"{k} {v:.2f}" for k, v in fit.items()))
    meta["load_1min_end"] = os.getloadavg()[0]
    out = {"meta": meta, "per_batch": rows, "scaling": scaling, "exponents": fit}
    from epdo._io import atomic_write_bytes

    atomic_write_bytes(ROOT / "benchmarks" / "results" / "graph.json", lambda f: f.write(json.dumps(out, indent=1).encode()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--repeats", type=int, default=11)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--nodes", type=int, nargs="+", default=[100, 300, 1000, 3000, 10000])
    t = sub.add_parser("train")
    t.add_argument("--model", choices=sorted(MODELS), required=True)
    t.add_argument("--minutes", type=float, default=30)
    t.add_argument("--epochs", type=int, default=10**6)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--weight-decay", type=float, default=1e-12)
    t.add_argument("--batch", type=int, default=100)
    t.add_argument("--eval-every", type=int, default=5)
    t.add_argument("--log", default="")
    args = p.parse_args()
    bench(args) if args.cmd == "bench" else train(args)


if __name__ == "__main__":
    main()
