"""``epdo equivariance``: how invariant a whole model's logits are to rotations of the input image.

The model is measured by :func:`epdo.check_invariance` on one scalar field on the plane (the image, masked to
its centre disc so that rotating it loses no content), for the rotations by ``360 k / K`` degrees (the elements
of C_K). Per angle: the relative error ``||f(R x) - f(x)|| / ||f(x)||`` over the ``--n`` input images (0 for an
invariant model), the same error normalised by ``||f(x') - f(x)||`` for other inputs x', and the share of
inputs whose predicted class is unchanged; a non-invariant reference row gives the scale. Multiples of 90
degrees are exact grid rotations, other angles bicubic interpolation, whose error an equivariant model also
sees. Inputs: smooth random fields (default; the meaningful input at non-grid angles), i.i.d. noise, or test
images (``--input data``).

Results go to stdout, the JSON and PNG to ``--out`` (default ``runs/equivariance-<model>`` in the working
directory, never beside the checkpoint).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

import epdo.models as models
from epdo import check_invariance, fields, groups
from epdo.data import DATASETS

from .common import (
    CLIError,
    build_model,
    dataset_tensors,
    default_run_dir,
    format_table,
    load_split,
    new_figure,
    out_dir,
    parse_model_kwargs,
    resolve_device,
    save_figure,
    write_json,
)

logger = logging.getLogger("epdo.cli.equivariance")

INPUTS = ("smooth", "random", "data")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="registered model name (untrained, seeded initialisation)")
    src.add_argument("--checkpoint", help="checkpoint file")
    p.add_argument("--model-kw", action="append", metavar="KEY=VALUE", help="model keyword argument (with --model)")
    p.add_argument("--angles", type=int, default=16, help="number of angles in [0, 360) (default 16)")
    p.add_argument("--input", choices=INPUTS, default="smooth",
                   help="smooth random fields, i.i.d. noise, or --data test images (default smooth)")
    p.add_argument("--data", choices=DATASETS, default="sample", help="dataset for --input data (default sample)")
    p.add_argument("--n", type=int, default=16, help="number of input images (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model initialisation and the inputs (default 0)")
    p.add_argument("--out", help="folder for the JSON/PNG (default runs/equivariance-MODEL in the working directory)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data-dir", help="folder with the raw data files")
    p.add_argument("--cache-dir", help="folder for cached/generated datasets")


def run(args: argparse.Namespace) -> int:
    if args.angles < 1 or args.n < 1:
        raise CLIError(f"--angles and --n must be positive, got {args.angles} and {args.n}")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    if args.checkpoint is not None:
        if args.model_kw:
            raise CLIError("--model-kw goes with --model, not --checkpoint")
        model = models.load(args.checkpoint)
        name, source = model.epdo_model_name, str(args.checkpoint)
    else:
        model = build_model(args.model, parse_model_kwargs(args.model_kw))
        name, source = args.model, f"{args.model} (untrained, seed {args.seed})"
    info = models.get_model_info(name)
    model.eval().to(device=device, dtype=torch.float64)
    c, h, w = info.input_shape
    if c != 1 or h != w:
        raise CLIError(f"epdo equivariance measures models of one square image channel, {name} takes {info.input_shape}")
    G = groups.cyclic(args.angles)
    in_type = fields.FieldType(G, [G.trivial])
    logger.info("measuring %s at %d angles on %d %s inputs (float64)", source, args.angles, args.n, args.input)
    x = None
    if args.input == "data":
        ds = load_split(args.data, "test", args.data_dir, args.cache_dir, 0)
        x, _ = dataset_tensors(ds, args.n)
        x = x.to(device=device, dtype=torch.float64)
    # the library's checker: input masked to the centre disc, x' = another input for the normalisation,
    # a non-invariant reference (the model after a fixed random unconstrained filter) for scale
    report = check_invariance(model, in_type, input="auto" if args.input == "data" else args.input, size=h,
                              batch=args.n, seed=args.seed, dtype=torch.float64, x=x)

    def row(r) -> dict[str, Any]:
        return {"angle_deg": r.angle, "rel_error": r.error, "normalized_error": r.normalized,
                "agreement": r.agreement, "exact": r.exact}

    rows = [row(r) for r in report]
    ref = None if report.reference is None else row(report.reference)
    print(f"invariance of the logits of {source} to input rotations ({args.input} inputs, n={args.n}, centre disc)")
    print("rel. error = ||f(rotated x) - f(x)|| / ||f(x)||; norm. error = the same over ||f(x') - f(x)|| for other\n"
          "inputs x' (0: invariant, ~1: no better than an unrelated input); agreement = share of inputs whose\n"
          "predicted class is unchanged; grid-exact angles show round-off only, the others also interpolation error")
    table = [[f"{r['angle_deg']:.2f}", f"{r['rel_error']:.3e}", f"{r['normalized_error']:.3e}",
              f"{r['agreement']:.2f}", "yes" if r["exact"] else "no"] for r in rows]
    if ref is not None:
        table.append([f"ref {ref['angle_deg']:.2f}", f"{ref['rel_error']:.3e}", f"{ref['normalized_error']:.3e}",
                      f"{ref['agreement']:.2f}", "non-invariant reference"])
    print(format_table(["angle(deg)", "rel. error", "norm. error", "agreement", "grid-exact"], table))
    dest = Path(args.out) if args.out else default_run_dir("equivariance", name)
    out_dir(dest)
    result: dict[str, Any] = {"source": source, "model": name, "input": args.input, "n": args.n, "seed": args.seed,
                              "angles": rows, "reference": ref,
                              "definition": "rel_error = ||f(R x) - f(x)|| / ||f(x)||, normalized_error = "
                                            "||f(R x) - f(x)|| / ||f(x') - f(x)|| over the n inputs (x' = x rolled "
                                            "by one in the batch); agreement = share of unchanged argmax",
                              "interpolation": "epdo.fields.FieldType.transform: rot90 at multiples of 90, else bicubic",
                              "domain": "centre disc"}
    write_json(dest / f"equivariance-{name}.json", result)
    label = source if args.checkpoint is None else f"{name} ({args.checkpoint})"
    _plot(rows, dest / f"equivariance-{name}.png", f"{label}\nlogits vs input rotation ({args.input} inputs, n={args.n})")
    print(f"wrote {dest / f'equivariance-{name}.json'}")
    return 0


def _plot(rows: list[dict], path: Path, title: str) -> None:
    """Error vs angle on a log axis; the identity (error 0 by definition) is left out, grid-exact angles are
    squares, interpolated ones circles."""
    fig = new_figure()
    if fig is None:
        return
    ax = fig.axes[0]
    errs = [max(r["rel_error"], 1e-16) for r in rows if r["angle_deg"] != 0.0]
    log = bool(errs) and max(errs) > 10 * min(errs)  # a log axis only when the errors span more than a decade
    for exact, marker, label in ((True, "s", "grid-exact rotation"), (False, "o", "interpolated rotation")):
        pts = [(r["angle_deg"], max(r["rel_error"], 1e-16)) for r in rows if r["exact"] == exact and r["angle_deg"] != 0.0]
        if pts:
            ax.plot(*zip(*pts), marker=marker, ls="none", ms=5, label=label)
    ax.set(xlabel="input rotation (degrees)", ylabel="||f(Rx) - f(x)|| / ||f(x)||", yscale="log" if log else "linear",
           xlim=(0, 360))
    if not log:
        ax.set_ylim(0, 1.1 * max(errs, default=1.0))
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(0, 361, 45))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
