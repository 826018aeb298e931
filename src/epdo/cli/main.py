"""Entry point of the ``epdo`` command: argparse subcommands and one-line user errors.

Subcommands: ``train``, ``evaluate``, ``equivariance``, ``pde-show``, ``models``, ``build-ext``. User errors (unknown model,
missing or corrupt files, bad option values) print ``epdo <cmd>: error: <message>`` and exit with
status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from typing import Sequence

from . import equivariance, evaluate, pde_show, train
from .common import CLIError, HelpFormatter, format_table, setup_logging


def _user_errors() -> tuple[type[BaseException], ...]:
    from epdo.data.errors import DataError
    from epdo.models import CheckpointError, UnknownModelError

    return (CLIError, UnknownModelError, CheckpointError, DataError, FileNotFoundError, IsADirectoryError,
            NotADirectoryError, PermissionError)


def _models(args: argparse.Namespace) -> int:
    """The registry as a table of at most 100 columns: parameters here and in the paper, the paper's test error
    and where both come from; the training recipe with ``--recipes``."""
    import epdo.models as models

    names = models.list(args.pattern)
    if not names:
        raise CLIError(f"no model matches {args.pattern!r}; known: {', '.join(models.list())}")
    rows = []
    for name in names:
        info = models.get_model_info(name)
        n = models.count_parameters(models.create(name))
        paper_n = info.paper_params
        row = [name, f"{n:,}", f"{paper_n:,}" if paper_n else "-", f"{n / paper_n:.3f}" if paper_n else "-",
               _short_error(getattr(info, "paper_error", "")), _short_source(info.paper)]
        if args.recipes:
            t = info.train
            row[4:] = [t.optimizer, f"{t.lr:g}", t.schedule, str(t.epochs), str(t.batch_size)]
        elif args.flops:
            row[4:] = _flops_cells(name, info, args.size)
        rows.append(row)
    if args.flops and not args.recipes:
        print(format_table(["model", "params", "paper params", "ratio", "input", "GFLOPs"], rows, max_width=100))
        print()
        print(textwrap.fill(
            "GFLOPs: FLOPs of one eval-mode forward per input (2 per multiply-add; convolutions, matrix products and "
            "epdo's Neural ePDO product counted by epdo.flops; batch norm, activations and the once-per-batch "
            "weight expansions not counted).", 100))
        return 0
    if args.recipes:
        header = ["model", "params", "paper params", "ratio", "optimizer", "lr", "schedule", "epochs", "batch"]
    else:
        header = ["model", "params", "paper params", "ratio", "paper err %", "source"]
    print(format_table(header, rows, max_width=100))
    if not args.recipes:
        print()
        print(textwrap.fill(
            "params: this implementation's parameter count; paper params and paper err %: the count and the test "
            "error (mean +- std over runs, clean test set) that the source reports; ratio = params / paper params. "
            "He 2023: He et al., Neural ePDOs (ICLR 2023); Lagrave 2021: Lagrave & Riou, EqPdeNet; Shen 2021: "
            "Shen et al., PDO-eS2CNNs (AAAI 2021); Romero 2022: Romero & Lohit, Partial G-CNNs (NeurIPS 2022); "
            "SEGNN 2022: Brandstetter et al., SEGNN (ICLR 2022); Bekkers 2024: Bekkers et al., PONITA (ICLR "
            "2024) (see the README's References). Training recipes: epdo models --recipes.", 100))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _flops_cells(name: str, info, size: int | None) -> list[str]:
    """``[input shape, GFLOPs]`` of one sample of ``name`` (its ``input_shape``, or ``size`` x ``size``)."""
    import torch

    import epdo.models as models
    from epdo.flops import count_flops

    shape = tuple(info.input_shape)
    if size is not None:
        if len(shape) != 3:
            raise CLIError(f"--size needs image models (C, H, W); {name} takes inputs of shape {shape}")
        shape = (shape[0], size, size)
    torch.manual_seed(0)
    flops = count_flops(models.create(name), torch.rand(1, *shape))
    return ["x".join(str(s) for s in shape), f"{flops.per_sample / 1e9:.3f}"]


#: how ``epdo models`` abbreviates the papers (the README's References give the full titles)
_PAPERS = (
    (re.compile(r"^\s*000\b|He et al", re.I), "He 2023"),
    (re.compile(r"^\s*001\b|Lagrave", re.I), "Lagrave 2021"),
    (re.compile(r"^\s*002\b|Shen", re.I), "Shen 2021"),
    (re.compile(r"^\s*004\b|Romero", re.I), "Romero 2022"),
    (re.compile(r"Brandstetter|SEGNN", re.I), "SEGNN 2022"),
    (re.compile(r"Bekkers|PONITA", re.I), "Bekkers 2024"),
)


def _short_error(text: str) -> str:
    """The paper's clean test error as ``"1.41 +- 0.04"`` (the first ``a +- b`` of the text), or the text."""
    text = " ".join(str(text or "").split()).replace("%", "")
    m = re.search(r"\d+(?:\.\d+)?\s*(?:\+-|\u00b1)\s*\d+(?:\.\d+)?", text)
    return m.group(0) if m else (text.strip() or "-")


def _short_source(text: str) -> str:
    """``"He 2023, Table 2"`` from a ModelInfo.paper text such as ``"000 (He et al. 2023, ...), Table 2, ..."``."""
    text = " ".join(str(text or "").split())
    if text.startswith("(none"):
        return "none (an epdo preset)"
    paper = next((short for pattern, short in _PAPERS if pattern.search(text)), None)
    table = re.search(r"Table \d+", text)
    parts = [p for p in (paper, table.group(0) if table else None) if p]
    return ", ".join(parts) if parts else (text or "-")


def _build_ext(args: argparse.Namespace) -> int:
    """Compile the optional fused C++ kernel of NeuralEPDO (a one-off, about 20 s on an idle 2-core machine) into
    the kernel cache ($EPDO_KERNEL_DIR, default ~/.cache/epdo/kernels), one build per source, torch version and
    flags; afterwards backend="auto" (the default) loads it in every process, and a build that is already
    there is only loaded. Concurrent builds wait for each other at most --lock-timeout seconds; a stale lock
    (its process gone) is broken with a warning."""
    import time

    import epdo.nn._epdo_kernels as K
    from epdo.nn._kernel_build import CompilerNotFoundError

    if not args.lock_timeout >= 0:
        raise CLIError(f"--lock-timeout must be >= 0 seconds, got {args.lock_timeout}")
    t0 = time.perf_counter()
    try:
        mod = K.load_cpp_extension(verbose=args.verbose, lock_timeout=args.lock_timeout)
    except CompilerNotFoundError as e:
        if args.optional:
            print(f"epdo build-ext: warning: {e}; NeuralEPDO uses its pure-torch backend", file=sys.stderr)
            return 0
        raise CLIError(f"{e} (NeuralEPDO keeps working with its pure-torch backend)") from e
    except RuntimeError as e:  # a compiler is there and the build failed: an error even with --optional
        raise CLIError(f"{' '.join(str(e).split())[:3000]} (NeuralEPDO keeps working with its pure-torch "
                       "backend)") from e
    print(f"NeuralEPDO C++ kernel ready in {time.perf_counter() - t0:.1f} s: {mod}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="epdo", description="Equivariant networks from partial differential operators.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a registered model", description=train.__doc__, formatter_class=HelpFormatter)
    train.add_arguments(p)
    p.set_defaults(func=train.run)

    p = sub.add_parser("evaluate", help="test error of a checkpoint (vs rotation, under perturbations)",
                       description=evaluate.__doc__, formatter_class=HelpFormatter)
    evaluate.add_arguments(p)
    p.set_defaults(func=evaluate.run)

    p = sub.add_parser("equivariance", help="per-angle invariance error of a model's logits", description=equivariance.__doc__,
                       formatter_class=HelpFormatter)
    equivariance.add_arguments(p)
    p.set_defaults(func=equivariance.run)

    p = sub.add_parser("pde-show", help="PNGs of a trained PDE layer: evolved digits, trajectories, F_theta",
                       description=pde_show.__doc__, formatter_class=HelpFormatter)
    pde_show.add_arguments(p)
    p.set_defaults(func=pde_show.run)

    p = sub.add_parser("models", help="registered models: parameters and test errors vs the papers'",
                       description=_models.__doc__, formatter_class=HelpFormatter)
    p.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. '*cnn*'")
    p.add_argument("--recipes", action="store_true", help="show the training recipes instead of the papers' errors")
    p.add_argument("--flops", action="store_true",
                   help="show FLOPs per input (epdo.flops) instead of the papers' errors; e.g. 'res26*' --size 224")
    p.add_argument("--size", type=_positive_int, default=None,
                   help="with --flops: square image size H = W (default: each model's input_shape)")
    p.set_defaults(func=_models)

    p = sub.add_parser("build-ext", help="compile NeuralEPDO's optional fused C++ kernel (used automatically afterwards)",
                       description=_build_ext.__doc__, formatter_class=HelpFormatter)
    p.add_argument("--verbose", action="store_true", help="show the compiler's output")
    p.add_argument("--optional", action="store_true",
                   help="no C++ compiler is a warning and exit status 0, not an error (a failed build stays an error)")
    p.add_argument("--lock-timeout", type=float, default=120.0, metavar="S",
                   help="seconds to wait for another build of the same kernel (default: 120)")
    p.set_defaults(func=_build_ext)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``epdo`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    setup_logging(verbose=not args.quiet)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as e:
        if args.debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"epdo {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        hint = " ".join(str(e).split())
        print(f"epdo {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
