"""``epdo equivariance``: how invariant a whole model's logits are to rotations of the input image.

For each angle ``theta`` the relative error ``|f(R_theta x) - f(x)| / |f(x)|`` (Euclidean norm over
the logits of each image) is reported, mean and max over the images. Inputs are restricted to the
centre disk so that rotating them loses no content; multiples of 90 degrees are exact grid
rotations (``torch.rot90``), other angles bilinear interpolation, whose error an equivariant model
also sees.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import epdo.models as models

from .common import (
    DATA_NAMES,
    CLIError,
    dataset_tensors,
    disk_mask,
    format_table,
    load_split,
    new_figure,
    out_dir,
    parse_model_kwargs,
    resolve_device,
    rotate,
    save_figure,
    write_json,
)

logger = logging.getLogger("epdo.cli.equivariance")

INPUTS = ("random", "smooth", "data")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="registered model name (untrained, seeded initialisation)")
    src.add_argument("--checkpoint", help="checkpoint file")
    p.add_argument("--model-kw", action="append", metavar="KEY=VALUE", help="model keyword argument (with --model)")
    p.add_argument("--angles", type=int, default=16, help="number of angles in [0, 360) (default 16)")
    p.add_argument("--input", choices=INPUTS, default="smooth", help="random noise, smoothed noise or --data test images (default smooth)")
    p.add_argument("--data", choices=DATA_NAMES, default="sample", help="dataset for --input data (default sample)")
    p.add_argument("--n", type=int, default=16, help="number of input images (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model initialisation and the inputs (default 0)")
    p.add_argument("--out", help="folder for the JSON/PNG (default: the checkpoint's folder, else no files)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data-dir", help="folder with the raw data files")
    p.add_argument("--cache-dir", help="folder for cached/generated datasets")


def make_inputs(kind: str, n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """``n`` images of ``shape`` in [0, 1]: uniform noise or noise smoothed by a Gaussian (sigma 2 px)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=g, dtype=torch.float64)
    if kind == "smooth":
        r = torch.arange(-6, 7, dtype=torch.float64)
        k = torch.exp(-0.5 * (r / 2.0) ** 2)
        k = k / k.sum()
        c = shape[0]
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, 6), groups=c)
        x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(6, 0), groups=c)
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo)
    return x.to(torch.float32)


@torch.no_grad()
def invariance_errors(model: nn.Module, x: torch.Tensor, angles_deg: list[float]) -> list[dict[str, float]]:
    """Per angle: mean and max over images of ``|f(R x) - f(x)| / |f(x)|``; ``x`` is masked to the centre disk."""
    model.eval()
    x = x * disk_mask(x.shape[-2], x.shape[-1], x.device, x.dtype)
    ref = model(x)
    ref_norm = ref.norm(dim=1).clamp_min(1e-12)
    rows = []
    for a in angles_deg:
        rel = (model(rotate(x, a)) - ref).norm(dim=1) / ref_norm
        rows.append({"angle_deg": a, "mean_rel_error": float(rel.mean()), "max_rel_error": float(rel.max())})
    return rows


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
        default_out: Path | None = Path(args.checkpoint).resolve().parent
    else:
        kw = parse_model_kwargs(args.model_kw)
        try:
            model = models.create(args.model, **kw)
        except TypeError as e:
            raise CLIError(f"cannot build model {args.model!r} with {kw}: {e}") from None
        name, source, default_out = args.model, f"{args.model} (untrained, seed {args.seed})", None
    model.to(device)
    info = models.get_model_info(name)
    if args.input == "data":
        ds = load_split(args.data, "test", args.data_dir, args.cache_dir, 0)
        x, _ = dataset_tensors(ds, args.n)
    else:
        x = make_inputs(args.input, args.n, info.input_shape, args.seed)
    angles = [360.0 * k / args.angles for k in range(args.angles)]
    rows = invariance_errors(model, x.to(device), angles)

    print(f"invariance of {source} logits to input rotations ({args.input} inputs, n={len(x)}, centre disk)")
    print(format_table(["angle(deg)", "mean rel. error", "max rel. error"],
                       [[f"{r['angle_deg']:.2f}", f"{r['mean_rel_error']:.3e}", f"{r['max_rel_error']:.3e}"] for r in rows]))
    dest = out_dir(args.out) if args.out else default_out
    if dest is not None:
        result: dict[str, Any] = {"source": source, "model": name, "input": args.input, "n": len(x), "seed": args.seed, "angles": rows,
                                  "interpolation": "rot90 for multiples of 90, else bilinear", "domain": "centre disk"}
        write_json(dest / f"equivariance-{name}.json", result)
        logger.info("wrote %s", dest / f"equivariance-{name}.json")
        _plot(rows, dest / f"equivariance-{name}.png", source)
    return 0


def _plot(rows: list[dict], path: Path, title: str) -> None:
    fig = new_figure()
    if fig is None:
        return
    ax = fig.axes[0]
    a = [r["angle_deg"] for r in rows]
    ax.plot(a, [max(r["mean_rel_error"], 1e-16) for r in rows], marker="o", ms=3, label="mean")
    ax.plot(a, [max(r["max_rel_error"], 1e-16) for r in rows], marker="x", ms=3, label="max")
    ax.set(xlabel="input rotation (degrees)", ylabel="relative logit error", yscale="log", title=title, xlim=(0, 360))
    ax.set_xticks(range(0, 361, 45))
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)
