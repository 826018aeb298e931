"""MNIST6-180: test error against the distance of each image's rotation angle to the class boundary.

The label is "6" for a rotation in [-90, 90) degrees and "9" otherwise, so a digit turned by 89 or 91 degrees
differs only by 2 degrees while its label flips: near +-90 degrees the task is ambiguous up to the
handwriting's own slant. This script splits a checkpoint's test errors by that distance.

    python scripts/mnist6_boundary.py runs/p8-10ep/best.pt [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import epdo.models as M
from epdo.data import get_dataset

BINS = ((0, 5), (5, 10), (10, 15), (15, 20), (20, 30), (30, 45), (45, 90))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", help="also write the table here")
    args = ap.parse_args()
    model = M.load(args.checkpoint).eval()
    ds = get_dataset("mnist6-180", args.split)
    x, y = ds.tensors
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 100]).argmax(1) for i in range(0, len(x), 100)])
    err = (pred != y).numpy()
    deg = np.degrees(np.asarray(ds.angles, dtype=np.float64)) % 360.0
    dist = np.minimum(np.abs(deg - 90.0), np.abs(deg - 270.0))  # degrees to the nearest boundary, in [0, 90]
    rows = []
    for lo, hi in BINS:
        m = (dist >= lo) & ((dist < hi) if hi < 90 else (dist <= hi))
        rows.append({"from": lo, "to": hi, "images": int(m.sum()), "errors": int(err[m].sum()),
                     "error_pct": float(100 * err[m].mean()) if m.any() else None})
    print(f"{args.checkpoint}: {args.split} error {100 * err.mean():.2f} % ({int(err.sum())} / {len(err)})")
    print("| degrees to the nearest boundary | images | errors | error % |")
    print("|---|---|---|---|")
    for r in rows:
        pct = "-" if r["error_pct"] is None else f"{r['error_pct']:.1f}"
        print(f"| {r['from']}-{r['to']} | {r['images']} | {r['errors']} | {pct} |")
    if args.json:
        from epdo._io import atomic_write_bytes

        text = json.dumps({"checkpoint": args.checkpoint, "split": args.split, "error_pct": float(100 * err.mean()),
                           "bins": rows}, indent=1)
        atomic_write_bytes(args.json, lambda f: f.write(text.encode()))


if __name__ == "__main__":
    main()
