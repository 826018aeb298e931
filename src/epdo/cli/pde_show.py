"""``epdo pde-show``: pictures of a trained PDE layer (EqPdeNet checkpoints).

Writes three PNGs (:func:`epdo.pde.show.pde_show`):

* ``pde_evolution.png``: a few test digits, the solution u_T of every PDE and the layer's combined output;
* ``pde_trajectory.png``: the Euler states u_0, ..., u_T of every PDE for the first digit;
* ``pde_coefficients.png``: the learned coefficients of every F_theta and of the final linear combination.

The digits come from the test split of ``--data`` (default the embedded ``sample``, which needs no files);
by default the first digit of each of ``--n-digits`` classes, or the images ``--indices``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import epdo.models as models

from .common import DATA_NAMES, CLIError, out_dir

logger = logging.getLogger("epdo.cli.pde_show")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint of a model with a PDE layer (e.g. eqpdenet-h64)")
    p.add_argument("--out", help="folder for the PNGs (default: the checkpoint's folder)")
    p.add_argument("--data", choices=DATA_NAMES, default="sample", help="dataset of the digits, test split (default sample)")
    p.add_argument("--indices", type=int, nargs="+", metavar="I", help="test images to show (default: one per class)")
    p.add_argument("--n-digits", type=int, default=4, help="number of digits without --indices (default 4)")
    p.add_argument("--data-dir", help="folder with the raw data files")
    p.add_argument("--cache-dir", help="folder for cached/generated datasets")


def run(args: argparse.Namespace) -> int:
    from epdo.pde.show import find_pde_layer, pde_show

    if args.n_digits < 1:
        raise CLIError(f"--n-digits must be positive, got {args.n_digits}")
    ckpt = Path(args.checkpoint)
    model = models.load(ckpt)  # missing or corrupt file: FileNotFoundError / CheckpointError (user errors)
    try:
        find_pde_layer(model)
    except ValueError as e:
        raise CLIError(f"{ckpt}: {e}") from None
    dest = out_dir(args.out) if args.out else ckpt.resolve().parent
    try:
        paths = pde_show(ckpt, dest, args.data, indices=args.indices, n_digits=args.n_digits,
                         data_dir=args.data_dir, cache_dir=args.cache_dir)
    except ImportError as e:
        raise CLIError(str(e)) from None
    except ValueError as e:
        if str(e).startswith("pde_show:"):  # bad --indices, images of the wrong shape
            raise CLIError(str(e).removeprefix("pde_show:").strip()) from None
        raise
    for kind, path in paths.items():
        print(f"{kind:<13}{path}")
    return 0
