"""EqPdeNet vs FCNN on MNIST-rot (paper 001, Tables 1 and 2), five sizes, on this CPU.

    nice -n 10 python benchmarks/eqpdenet.py [--epochs 6] [--sizes 16,32,64,128,256] [--jobs 2] [--seed 0]

Protocol (paper 001, "Numerical Experiments", where it says something; ours otherwise):
* data: the real MNIST-rot archive when present (``$EPDO_ROTMNIST_DIR``), else the seeded replica generated
  from MNIST (``epdo.data``); training on all 12,000 training images (train + valid splits), no augmentation.
* models: ``eqpdenet-h{h}`` and ``fcnn-h{h}`` from the registry, with the EqPdeNet registry recipe (Adam,
  lr 1e-3, constant, batch 64; the paper gives none) except the number of epochs (``--epochs``, a CPU budget).
  ``--extra NAME[:KWARGS]`` adds any registered model with keyword arguments (same recipe), e.g. beyond the
  paper ``--extra "eqpdenet-h16:{'backbone': 'pdo'}" --extra "steerable-pdo-fd:{...}"``.
* evaluation: ``--draws`` draws; draw d takes a random subset of ``--n-eval`` test images (seeded, the same
  for every model, so the comparison is paired) and applies ``epdo.data.perturb.apply_scenario`` for
  ``test`` (unchanged), ``iso`` (rotation U(-30, 30) degrees + translation U(-2, 2) px) and ``sca``
  (scaling U(2/3, 1)); mean and std (ddof=1) over the draws. The paper averages over 10 "instances of
  testing" without saying more; its ``test`` column also has a std, hence the subsets.

Writes ``benchmarks/results/eqpdenet.json`` (all per-draw accuracies, per-epoch losses, wall times,
machine) and, with ``--checkpoints DIR`` (default ``runs/eqpdenet-bench``), one checkpoint per model.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("test", "iso", "sca")


def load_data(name: str, data_seed: int):
    from epdo.data import get_dataset
    from epdo.data.errors import DataNotFoundError

    if name == "auto":
        try:
            get_dataset("rotmnist", "test")
            name = "rotmnist"
        except DataNotFoundError:
            name = "rotmnist-replica"
    parts = [get_dataset(name, s, seed=data_seed) for s in ("train", "valid", "test")]
    x_train = torch.cat([parts[0].images, parts[1].images])
    y_train = torch.cat([parts[0].labels, parts[1].labels])
    return name, parts[2].description, x_train, y_train, parts[2].images, parts[2].labels


def make_optimizer(model, recipe):
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                           weight_decay=recipe.weight_decay)


@torch.no_grad()
def accuracy(model, x, y, batch=1000) -> float:
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return 100.0 * correct / len(x)


def evaluate_draws(model, x_test, y_test, draws: int, n_eval: int, seed: int) -> dict[str, list[float]]:
    from epdo.data.perturb import apply_scenario

    out: dict[str, list[float]] = {s: [] for s in SCENARIOS}
    model.eval()
    for d in range(draws):
        g = torch.Generator().manual_seed(1_000_003 * seed + d)
        idx = torch.randperm(len(x_test), generator=g)[:n_eval]
        for k, scenario in enumerate(SCENARIOS):
            xs = apply_scenario(x_test[idx], scenario, torch.Generator().manual_seed(1_000_003 * seed + 1009 * d + k))
            out[scenario].append(accuracy(model, xs, y_test[idx]))
    return out


def run_job(job: dict) -> dict:
    """Train and evaluate one model (in a worker process)."""
    import epdo.models as models
    from epdo.pde import PDEStabilityError

    torch.set_num_threads(job["threads"])
    name, seed = job["model"], job["seed"]
    data_name, data_desc, x_train, y_train, x_test, y_test = load_data(job["data"], job["data_seed"])
    torch.manual_seed(seed)
    model = models.create(name, **job["model_kwargs"])
    from epdo.models.eqpdenet import EQPDENET_TRAIN

    recipe = EQPDENET_TRAIN.replace(epochs=job["epochs"])  # one recipe for every model of the table
    opt = make_optimizer(model, recipe)
    g = torch.Generator().manual_seed(seed)
    result = {"model": name, "label": job.get("label", name), "model_kwargs": job["model_kwargs"], "params": models.count_parameters(model),
              "paper_params": models.get_model_info(name).paper_params, "data": data_name, "data_description": data_desc,
              "n_train": len(x_train), "recipe": recipe.as_dict(), "epochs": recipe.epochs, "seed": seed,
              "epoch_loss": [], "epoch_seconds": [], "error": None}
    t_start = time.time()
    try:
        for epoch in range(recipe.epochs):
            t0 = time.time()
            model.train()
            perm = torch.randperm(len(x_train), generator=g)
            total = 0.0
            for i in range(0, len(perm), recipe.batch_size):
                idx = perm[i:i + recipe.batch_size]
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            result["epoch_loss"].append(total / len(perm))
            result["epoch_seconds"].append(time.time() - t0)
            print(f"[{name}] epoch {epoch + 1}/{recipe.epochs} loss {total / len(perm):.4f} "
                  f"({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    except PDEStabilityError as e:
        result["error"] = str(e)
        print(f"[{name}] {e}", file=sys.stderr, flush=True)
    result["train_seconds"] = time.time() - t_start
    if result["error"] is None:
        t0 = time.time()
        result["accuracy"] = evaluate_draws(model, x_test, y_test, job["draws"], job["n_eval"], seed)
        result["eval_seconds"] = time.time() - t0
        if job.get("checkpoints"):
            path = Path(job["checkpoints"]) / (f"{name}-{job['label']}.pt" if "label" in job else f"{name}.pt")
            models.save_checkpoint(path, model, epoch=recipe.epochs, config={"benchmark": "eqpdenet", **job})
            result["checkpoint"] = str(path)
        print(f"[{name}] " + "  ".join(f"{s} {statistics.mean(v):.1f}" for s, v in result["accuracy"].items()),
              file=sys.stderr, flush=True)
    return result


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(results: list[dict], sizes: list[int], families: list[str]) -> str:
    from epdo.models.eqpdenet import PAPER_TABLES

    main_rows = [r for r in results if r.get("label", r["model"]) == r["model"]]
    by = {(r["model"].rsplit("-h", 1)[0], int(r["model"].rsplit("-h", 1)[1])): r for r in main_rows}
    lines = []
    head = f"{'model':<16}{'#param':>8}{'paper':>8}" + "".join(f"{s + ' ours':>14}{'paper':>11}" for s in SCENARIOS)
    lines += [head, "-" * len(head)]
    for fam in families:
        for h in sizes:
            r = by.get((fam, h))
            if r is None:
                continue
            paper = PAPER_TABLES.get(fam.split("+")[0], {}).get(h)
            row = f"{r['model']:<16}{r['params']:>8}{(paper or {}).get('params', '-'):>8}"
            for s in SCENARIOS:
                if r.get("accuracy"):
                    m, sd = _ms(r["accuracy"][s])
                    row += f"{m:>8.1f} ({sd:.1f})"
                else:
                    row += f"{'unstable':>14}"
                row += f"{'%.1f (%.1f)' % paper[s] if paper else '-':>11}"
            lines.append(row)
        lines.append("")
    extras = [r for r in results if r.get("label", r["model"]) != r["model"]]
    for r in extras:
        row = f"{r['label']:<16}{r['params']:>8}{'':>8}"
        for s in SCENARIOS:
            row += (f"{_ms(r['accuracy'][s])[0]:>8.1f} ({_ms(r['accuracy'][s])[1]:.1f})" if r.get("accuracy") else f"{'unstable':>14}") + f"{'':>11}"
        lines.append(row)
        lines.append(f"    = {r['model']} {r['model_kwargs']}")
    if "eqpdenet" in families and "fcnn" in families:
        lines.append("EqPdeNet - FCNN, paired over draws (mean (std)); paper difference in brackets:")
        for h in sizes:
            a, b = by.get(("eqpdenet", h)), by.get(("fcnn", h))
            if not (a and b and a.get("accuracy") and b.get("accuracy")):
                continue
            row = f"  h={h:<4}"
            for s in SCENARIOS:
                diff = [x - y for x, y in zip(a["accuracy"][s], b["accuracy"][s])]
                m, sd = _ms(diff)
                pp = PAPER_TABLES["eqpdenet"][h][s][0] - PAPER_TABLES["fcnn"][h][s][0]
                row += f"  {s} {m:+5.1f} ({sd:.1f}) [{pp:+.1f}]"
            lines.append(row)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6, help="training epochs of every model (default 6, a CPU budget)")
    p.add_argument("--sizes", default="16,32,64,128,256", help="hidden widths h (default all five)")
    p.add_argument("--families", default="eqpdenet,fcnn", help="model families (default eqpdenet,fcnn)")
    p.add_argument("--model-kw", default="{}", help="extra EqPdeNet kwargs as a Python dict literal, e.g. \"{'dt': 0.1}\"")
    p.add_argument("--extra", action="append", default=[], metavar="NAME[:KWARGS]",
                   help="extra registered model, kwargs as a Python dict literal (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="auto", help="auto (real archive if present, else replica), rotmnist, rotmnist-replica, sample")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--n-eval", type=int, default=2000, help="test images per draw (default 2000)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--checkpoints", default=str(ROOT / "runs" / "eqpdenet-bench"), help="folder for checkpoints ('' for none)")
    p.add_argument("--out", default="eqpdenet.json", help="JSON file name under benchmarks/results/")
    args = p.parse_args(argv)
    import ast

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    extra = ast.literal_eval(args.model_kw)
    jobs = [dict(model=f"{fam}-h{h}", model_kwargs=(extra if fam == "eqpdenet" else {}), epochs=args.epochs,
                 seed=args.seed, data=args.data, data_seed=args.data_seed, draws=args.draws, n_eval=args.n_eval,
                 threads=args.threads, checkpoints=args.checkpoints or None)
            for fam in families for h in sorted(sizes, reverse=True)]
    for k, spec in enumerate(args.extra):
        name, _, kw = spec.partition(":")
        jobs.append(dict(model=name.strip(), model_kwargs=ast.literal_eval(kw) if kw.strip() else {}, epochs=args.epochs,
                         seed=args.seed, data=args.data, data_seed=args.data_seed, draws=args.draws, n_eval=args.n_eval,
                         threads=args.threads, checkpoints=args.checkpoints or None, label=f"extra{k + 1}"))
    jobs.sort(key=lambda j: "label" in j or not j["model"].startswith("eqpdenet"))  # the slow models first
    t0 = time.time()
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(run_job, jobs, chunksize=1)
    else:
        results = [run_job(j) for j in jobs]
    wall = time.time() - t0
    text = table(results, sizes, families)
    print(text)
    print(f"\nwall time {wall / 60:.1f} min, {args.jobs} worker(s) x {args.threads} thread(s)")
    payload = {"benchmark": "eqpdenet", "command": "python benchmarks/eqpdenet.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "args": vars(args), "wall_seconds": wall, "machine": machine(), "results": results, "table": text}
    path = write_json(args.out, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
