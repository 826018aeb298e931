"""Entry point of the ``epdo`` command: argparse subcommands and one-line user errors.

Subcommands: ``train``, ``evaluate``, ``equivariance``, ``pde-show``, ``models``, ``build-ext``. User errors (unknown model,
missing or corrupt files, bad option values) print ``epdo <cmd>: error: <message>`` and exit with
status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import equivariance, evaluate, pde_show, train
from .common import CLIError, format_count, format_table, setup_logging


def _user_errors() -> tuple[type[BaseException], ...]:
    from epdo.models import CheckpointError, UnknownModelError

    errors: list[type[BaseException]] = [CLIError, UnknownModelError, CheckpointError, FileNotFoundError,
                                         IsADirectoryError, NotADirectoryError, PermissionError]
    try:
        from epdo.data.errors import DataError

        errors.append(DataError)
    except ImportError:
        pass
    return tuple(errors)


def _models(args: argparse.Namespace) -> int:
    import epdo.models as models

    names = models.list(args.pattern)
    if not names:
        raise CLIError(f"no model matches {args.pattern!r}; known: {', '.join(models.list())}")
    rows = []
    for name in names:
        info = models.get_model_info(name)
        n = models.count_parameters(models.create(name))
        ratio = f"{n / info.paper_params:.3f}" if info.paper_params else "-"
        rows.append([name, f"{n:,}", format_count(n), f"{info.paper_params:,}" if info.paper_params else "-", ratio,
                     f"{info.train.optimizer} lr={info.train.lr:g} {info.train.schedule} {info.train.epochs}ep bs{info.train.batch_size}",
                     info.paper])
    print(format_table(["model", "params", "", "paper", "ratio", "recipe", "source"], rows))
    return 0


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
    parser = argparse.ArgumentParser(prog="epdo", description="Equivariant networks from partial differential operators.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a registered model", description=train.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_arguments(p)
    p.set_defaults(func=train.run)

    p = sub.add_parser("evaluate", help="test error of a checkpoint (vs rotation, under perturbations)", description=evaluate.__doc__)
    evaluate.add_arguments(p)
    p.set_defaults(func=evaluate.run)

    p = sub.add_parser("equivariance", help="per-angle invariance error of a model's logits", description=equivariance.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    equivariance.add_arguments(p)
    p.set_defaults(func=equivariance.run)

    p = sub.add_parser("pde-show", help="PNGs of a trained PDE layer: evolved digits, trajectories, F_theta",
                       description=pde_show.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pde_show.add_arguments(p)
    p.set_defaults(func=pde_show.run)

    p = sub.add_parser("models", help="registered models: parameters vs the paper's")
    p.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. '*cnn*'")
    p.set_defaults(func=_models)

    p = sub.add_parser("build-ext", help="compile NeuralEPDO's optional fused C++ kernel (used automatically afterwards)",
                       description=_build_ext.__doc__)
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
    except KeyboardInterrupt:
        print(f"epdo {args.command}: interrupted", file=sys.stderr)
        return 130
