"""PDOConv side by side with e2cnn R2Diffop (FD, Gauss, RBF-FD), R2Conv and a plain Conv2d (core benchmark);
SteerableConv (epdo's R2Conv: Gaussian rings x circular harmonics, e2cnn's default basis) beside e2cnn's R2Conv.

C16, 8 -> 8 regular fields (128 channels), batch 64, 28x28, order 4, kernel 5, CPU. Each layer runs in its own
subprocess so peak memory (max RSS growth over the process after building the layer) is its own.

    python benchmarks/pdoconv.py [--reps 10] [--rounds 3] [--threads 2] [--sigmas 1.25,1.0,0.8,0.6]
                                 [--layers rbf,fd]      # only the layers whose name contains one of these
    python benchmarks/pdoconv.py --e2cnn-counts         # Table 2's E2CNN networks: e2cnn R2Conv vs SteerableConv

SteerableConv rows: ``epdo-SteerableConv`` (default ``expansion="auto"``: regular outputs by rotating one
orientation) and ``epdo-SteerableConv-hom`` (the Hom solver on P (x) rho_in for every field); same basis
dimension as ``e2cnn-R2Conv`` (kernel 5: 3 rings, frequencies 0, 2, 2; 176 per pair of C16 regular fields).

Equivariance errors: relative error ||f(g.x) - g.f(x)|| / ||f(x)|| inside a centred disc, on a smooth input
(Gaussian-blurred noise, sigma 2 px, in a soft disc), rotations by bicubic interpolation, median over three
random initialisations. e2cnn's Gaussian and RBF-FD discretisations need the ``rbf`` package (PyPI source
distribution ``treverhines-rbf``); e2cnn 0.2.3 calls ``rbf.basis.set_symbolic_to_numeric_method``, which that
release lacks, so :func:`import_e2cnn` puts a no-op in its place before importing e2cnn. Without ``rbf``
those rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import arg_parser, machine, run_interleaved, time_layer, print_table, write_json  # noqa: E402

N_GROUP, FIELDS, BATCH, SIZE, ORDER, KERNEL = 16, 8, 64, 28, 4, 5


def smooth_input(channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Band-limited random fields in a soft disc: Gaussian-blurred noise (sigma 2 px) times a smooth window."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, size, size, generator=g, dtype=torch.float64)
    t = torch.arange(-8, 9, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / 2.0) ** 2)
    k = k / k.sum()
    x = F.conv2d(x.reshape(-1, 1, size, size), k.view(1, 1, 1, -1), padding=(0, 8))
    x = F.conv2d(x, k.view(1, 1, -1, 1), padding=(8, 0)).reshape(2, channels, size, size)
    c = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    r = torch.sqrt(xx**2 + yy**2).double()
    window = torch.clamp((size / 2 - 3 - r) / 3, 0, 1) ** 2
    return (x / x.std() * window).float()


def import_e2cnn() -> tuple[bool, bool]:
    """(e2cnn importable, e2cnn's RBF package usable), with the one-line stand-in described in the module doc."""
    try:
        import rbf.basis

        if not hasattr(rbf.basis, "set_symbolic_to_numeric_method"):
            rbf.basis.set_symbolic_to_numeric_method = lambda method: None  # absent in treverhines-rbf 2025.x
    except ImportError:
        pass
    try:
        import e2cnn.diffops.utils as e2u
    except ImportError:
        return False, False
    return True, bool(getattr(e2u, "_RBF_AVAILABLE", False))


def build(name: str, sigma: float | None):
    """Return (module, forward_fn(x), transform(x, k, angle) acting on the layer's fields)."""
    from epdo import fields, groups

    G = groups.cyclic(N_GROUP)
    t = fields.FieldType(G, [G.regular] * FIELDS)

    def ours_transform(x, angle):
        return t.transform(x, G.rotation(angle))

    if name.startswith("epdo-SteerableConv"):
        from epdo.nn import SteerableConv

        m = SteerableConv(t, t, KERNEL, expansion="hom" if name.endswith("-hom") else "auto")
        return m, m, ours_transform
    if name.startswith("epdo"):
        from epdo.nn import PDOConv

        disc = name.rsplit("-", 1)[-1]  # epdo-PDOConv-{fd,gauss,rbf}
        m = PDOConv(t, t, order=ORDER, kernel_size=KERNEL, discretization=disc, sigma=sigma)
        return m, m, ours_transform
    if name == "conv2d":
        m = torch.nn.Conv2d(t.size, t.size, KERNEL, padding=KERNEL // 2)
        return m, m, None
    import_e2cnn()
    from e2cnn import gspaces
    from e2cnn import nn as enn

    gs = gspaces.Rot2dOnR2(N_GROUP)
    et = enn.FieldType(gs, [gs.regular_repr] * FIELDS)
    if name == "e2cnn-R2Conv":
        m = enn.R2Conv(et, et, KERNEL, padding=KERNEL // 2)
    else:
        m = enn.R2Diffop(et, et, kernel_size=KERNEL, maximum_order=ORDER, padding=KERNEL // 2,
                         smoothing=sigma if sigma else None, rbffd=name.endswith("-rbf"))

    def fwd(x):
        return m(enn.GeometricTensor(x, et)).tensor

    return m, fwd, ours_transform


def e2cnn_mnist_counts(names: list[str]) -> dict[str, dict]:
    """Parameters of Weiler & Cesa's MNIST-rot networks built with e2cnn's R2Conv + InnerBatchNorm (+ the head),
    beside epdo's registered ``e2cnn-*`` models (SteerableConv) of the same architecture."""
    import_e2cnn()
    from e2cnn import gspaces
    from e2cnn import nn as enn

    import epdo.models as models
    from epdo.models.e2cnn_rows import E2_KERNELS, E2_PADDING, E2_WIDTHS, patch_e2cnn_for_numpy2

    patch_e2cnn_for_numpy2()
    out = {}
    for name in names:
        cfg = dict(group="C16", fields="regular", restrict_after=None)
        cfg.update({"e2cnn-c16-quotient": dict(fields="quotient"),
                    "e2cnn-d16c16": dict(group="D16", restrict_after=5)}.get(name, {}))
        t0 = time.perf_counter()
        gs = gspaces.FlipRot2dOnR2(16) if cfg["group"] == "D16" else gspaces.Rot2dOnR2(16)

        def unit(g):  # E2SFCNN_QUOT.build_quotient_feature_type for Rot2dOnR2(16)
            return [g.regular_repr] * 5 + [g.quotient_repr(8)] * 2 + [g.quotient_repr(4)] * 2 + [g.trivial_repr] * 4

        in_t = enn.FieldType(gs, [gs.trivial_repr])
        n = 0
        for i, (w, k, p) in enumerate(zip(E2_WIDTHS, E2_KERNELS, E2_PADDING), start=1):
            g = in_t.gspace
            reps = unit(g) * int(round(w / 6)) if cfg["fields"] == "quotient" else [g.regular_repr] * w
            out_t = enn.FieldType(g, reps)
            conv = enn.R2Conv(in_t, out_t, k, padding=p)
            n += sum(q.numel() for q in conv.parameters())
            if i == cfg["restrict_after"]:
                r = enn.RestrictionModule(out_t, (None, 16))
                out_t = enn.DisentangleModule(r.out_type).out_type
            bn_t = enn.GroupPooling(out_t).out_type if cfg["fields"] == "quotient" and i == 6 else out_t
            n += sum(q.numel() for q in enn.InnerBatchNorm(bn_t).parameters())
            in_t = out_t
        c = len(in_t)  # group pooling: one channel per field
        n += (c * 96 + 96) + 2 * 96 + (96 * 96 + 96) + 2 * 96 + (96 * 10 + 10)
        ours = models.count_parameters(models.create(name))
        out[name] = dict(e2cnn=n, epdo=ours, build_s=time.perf_counter() - t0)
        print(name, out[name], flush=True)
    return out


def equivariance_error(fwd, transform, angle: float) -> float:
    if transform is None:
        return float("nan")
    x = smooth_input(N_GROUP * FIELDS, SIZE)
    with torch.no_grad():
        y = fwd(x)  # eval mode, no graph
        y_g = fwd(transform(x, angle))
        g_y = transform(y, angle)
    c = (SIZE - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(SIZE) - c, torch.arange(SIZE) - c, indexing="ij")
    mask = ((xx**2 + yy**2) <= (SIZE / 2 - 3) ** 2).float()
    return ((y_g - g_y) * mask).norm().item() / (y * mask).norm().item()


def run_one(name: str, sigma: float | None, reps: int, threads: int, errors: bool = True) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    module, fwd, transform = build(name, sigma)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    x = torch.randn(BATCH, N_GROUP * FIELDS, SIZE, SIZE)
    timing = time_layer(module, fwd, x, reps)
    # The error at non-grid angles depends on the random weights: median over 3 initialisations.
    err90, err22 = [], []
    for seed in range(3 if errors else 0):
        torch.manual_seed(seed)
        module, fwd, transform = build(name, sigma)
        module.eval()
        err90.append(equivariance_error(fwd, transform, math.pi / 2))
        err22.append(equivariance_error(fwd, transform, 2 * math.pi / 16))
    err90 = float(np.median(err90)) if err90 else None
    err22 = float(np.median(err22)) if err22 else None
    return dict(layer=name + (f"(sigma={sigma})" if sigma else ""), params=params, build_s=build_s,
                **timing, err90=err90, err22_5=err22)


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--sigmas", default="1.25,1.0,0.8,0.6", help="Gaussian sigmas for both libraries")
    ap.add_argument("--layers", default="", help="comma-separated name parts: run only the matching layers")
    ap.add_argument("--no-errors", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--one", nargs=2, metavar=("NAME", "SIGMA"), help=argparse.SUPPRESS)
    ap.add_argument("--json", default="pdoconv.json", help="results file name in benchmarks/results/")
    ap.add_argument("--e2cnn-counts", action="store_true",
                    help="parameter counts of Table 2's E2CNN networks, e2cnn R2Conv vs epdo SteerableConv")
    args = ap.parse_args()
    if args.e2cnn_counts:
        counts = e2cnn_mnist_counts(["e2cnn-c16", "e2cnn-c16-quotient", "e2cnn-d16c16"])
        path = write_json("pdoconv-e2cnn-counts.json", {"command": " ".join(sys.argv), "counts": counts,
                                                          "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")})
        print(f"wrote {path}")
        return
    if args.one:
        name, s = args.one
        print(json.dumps(run_one(name, float(s) if s != "none" else None, args.reps, args.threads,
                                 errors=not args.no_errors)))
        return
    sigmas = [float(s) for s in args.sigmas.split(",") if s]
    have_e2cnn, have_rbf = import_e2cnn()
    if not have_e2cnn:
        print("e2cnn not installed (pip install e2cnn): skipping the e2cnn peers")
    elif not have_rbf:
        print("rbf not installed (pip install treverhines-rbf): skipping e2cnn's Gaussian and RBF-FD R2Diffop")
    configs = [("epdo-PDOConv-fd", None)] + [("epdo-PDOConv-gauss", s) for s in sigmas] + [("epdo-PDOConv-rbf", None)]
    if have_e2cnn:
        configs += [("e2cnn-R2Diffop-fd", None)]
        if have_rbf:
            configs += [("e2cnn-R2Diffop-gauss", s) for s in sigmas] + [("e2cnn-R2Diffop-rbf", None)]
        configs += [("e2cnn-R2Conv", None)]
    configs += [("epdo-SteerableConv", None), ("epdo-SteerableConv-hom", None), ("conv2d", None)]
    if args.layers:
        keep = [p for p in args.layers.split(",") if p]
        configs = [c for c in configs if any(p in c[0] for p in keep)]
    # The errors do not depend on the round: computed in the first round only.
    jobs = {name + ("" if sig is None else f"(sigma={sig})"):
            ["--one", name, "none" if sig is None else str(sig), "--reps", str(args.reps), "--threads", str(args.threads)]
            for name, sig in configs}
    rows = run_interleaved(__file__, jobs, args.rounds, later_rounds_args=("--no-errors",))
    ref = {r["layer"]: r for r in rows}
    for r in rows:
        base = ref.get("e2cnn-R2Diffop-fd")
        r["train_vs_r2diffop_fd"] = r["train_s"] / base["train_s"] if base else None
        conv = ref.get("e2cnn-R2Conv")
        r["train_vs_r2conv"] = r["train_s"] / conv["train_s"] if conv else None
    cols = [("layer", "layer", ""), ("params", "params", "d"), ("build_s", "build s", ".3f"),
            ("train_s", "train fwd+bwd s", ".3f"), ("eval_s", "eval fwd s", ".3f"), ("peak_mb", "peak MB", ".0f"),
            ("err90", "err 90deg", ".1e"), ("err22_5", "err 22.5deg", ".4f"),
            ("train_vs_r2diffop_fd", "train / R2Diffop-fd", ".2f"), ("train_vs_r2conv", "train / R2Conv", ".2f")]
    print(f"\nC16, {FIELDS}->{FIELDS} regular fields, batch {BATCH}, {SIZE}x{SIZE}, order {ORDER}, kernel {KERNEL}; "
          f"medians of {args.reps}; {args.threads} threads")
    print_table(rows, cols)
    load = os.getloadavg()
    print(f"load average before the table (1, 5, 15 min): {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} "
          f"on {os.cpu_count()} CPUs" + (" (shared machine)" if load[0] > 1.5 else ""))
    path = write_json(args.json, {"command": " ".join(sys.argv), "load_avg": load, "config": dict(
        group=f"C{N_GROUP}", fields=FIELDS, batch=BATCH, size=SIZE, order=ORDER, kernel=KERNEL, reps=args.reps),
        "machine": machine() | {"threads_used": args.threads}, "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
