"""SpherePDOConv (epdo.sphere, issue 11): forward+backward time and peak memory vs icosphere level, sparse vs
dense derivative operators, the fitted exponent of time vs vertex count, and the level-5 target against a plain
Conv2d 3x3 on a 101 x 101 image (10,201 pixels vs 10,242 vertices).

    python benchmarks/sphere.py [--reps 3] [--rounds 2] [--threads 2] [--levels 3,4,5,6,7]
    python benchmarks/sphere.py --pictures PDO_CKPT MESH_CKPT     # docs/figures/sphere-*.png

``--pictures`` draws a test digit on the level-4 sphere (and rotated by 90 degrees about x), the first four
lifting response maps of the PDO checkpoint (max over orientations) for both, and the test error of both
checkpoints (trained unrotated) on the first 500 MNIST test digits against the rotation angle about x.

Scaling rows: 16 -> 16 fields, N = 8 orientations, batch 1 (level 7 has 163,842 vertices). The dense variant
holds the stacked (5 N V x N V) orientation operator as a dense matrix; it is run where it fits in 2 GB
(level 3) and reported as the memory it would need elsewhere. Target rows: level 5, 16 -> 16, N = 8, batch 16,
against Conv2d 16 -> 16 and Conv2d 128 -> 128 (16 fields x 8 orientations = 128 channels) on 16 x 101 x 101.
The breakdown times the parts of one level-5 forward (Fourier analysis of the orientation axis, the sparse
product, back to orientations, the dense weight product). Each row runs in its own subprocess (peak RSS growth
is its own); rounds are interleaved and medians taken. Results: benchmarks/results/sphere.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import arg_parser, machine, median_time, print_table, run_interleaved, time_layer, write_json  # noqa: E402

FIELDS, N = 16, 8


def _conv(level: int, dense: bool):
    import epdo
    from epdo.sphere import SpherePDOConv, sphere_type

    G = epdo.groups.icosahedral()
    t = sphere_type(G, FIELDS, N)
    conv = SpherePDOConv(t, t, level)
    if dense:
        op = conv.stacked_operator().to_dense().to(torch.get_default_dtype())
        n, v = conv.orientations, conv.mesh.num_vertices
        # the same layer with the dense stacked (5NV x NV) operator in place of the per-band sparse products
        def dense_derivatives(xf):  # (N, B, V, C) -> (B, V, N, 6, C), as the layer's band products
            b, c = xf.shape[1], xf.shape[3]
            d = (op @ xf.permute(0, 2, 1, 3).reshape(n * v, b * c)).view(5, n, v, b, c).permute(3, 2, 1, 0, 4)
            return torch.cat([xf.permute(1, 2, 0, 3)[:, :, :, None], d], 3)

        conv._derivatives = dense_derivatives
    return conv


def job(kind: str, level: int, batch: int, reps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if kind.startswith("conv2d"):
        c = int(kind[6:])
        layer = torch.nn.Conv2d(c, c, 3, padding=1)
        x = torch.randn(batch, c, 101, 101, requires_grad=True)
        points = 101 * 101
    else:
        layer = _conv(level, kind == "dense")
        from epdo.sphere import icosphere

        points = icosphere(level).num_vertices
        x = torch.randn(batch, FIELDS, N, points, requires_grad=True)
    build = time.perf_counter() - t0
    row = dict(kind=kind, level=level, batch=batch, points=points, build_s=build)
    row.update(time_layer(layer, layer, x, reps))
    return row


def breakdown(level: int = 5, batch: int = 16, reps: int = 3, threads: int = 2) -> dict:
    """Median seconds of the parts of one SpherePDOConv forward (no grad), in the layer's order."""
    from epdo.sphere.layers import _BandProducts

    torch.set_num_threads(threads)
    conv = _conv(level, False).eval()
    b, c, n, v = batch, FIELDS, N, conv.mesh.num_vertices
    x = torch.randn(b, c, n, v)
    bufs = conv._band_buffers()
    with torch.no_grad():
        def fourier():
            return (conv._F @ x.permute(2, 0, 3, 1).reshape(n, -1)).view(n, b, v, c)

        xf = fourier()
        e = _BandProducts.apply(xf, *bufs).reshape(b * v, n * 6 * c)
        w2 = torch.randn(c * n, n * 6 * c)
        y = e @ w2.t()
        parts = {
            "permute_and_fourier": median_time(fourier, reps, 1),
            "band_products_into_operand": median_time(lambda: _BandProducts.apply(xf, *bufs), reps, 1),
            "weight_gemm": median_time(lambda: e @ w2.t(), reps, 1),
            "output_transpose": median_time(lambda: y.view(b, v, -1).transpose(1, 2).contiguous(), reps, 1),
            "whole_forward": median_time(lambda: conv(x), reps, 1),
        }
    nnz = int(conv._val.numel())  # the (6V x V) vertex-major pattern (value row + five derivatives)
    columns = c * b * (1 + 4 * ((n - 1) // 2) + (n % 2 == 0))  # band 0, four products per pair, Nyquist
    return dict(level=level, batch=batch, nnz=nnz, gemm_gflop=2 * (c * n) * (c * n * 6) * v * b / 1e9,
                sparse_gflop=2 * nnz * columns / 1e9, **parts)


def pictures(pdo_ckpt: str, mesh_ckpt: str, out: Path = Path(__file__).resolve().parents[1] / "docs" / "figures",
             mnist: str | None = None) -> dict:
    import epdo.models as M
    from epdo.data import resolve_mnist_dir
    from epdo.data.idx import MNIST_FILES, load_idx_dataset
    from epdo.data.spherical_mnist import project
    from epdo.sphere import icosphere
    from epdo.sphere.plot import plot_error_vs_angle, plot_sphere_signals

    mn = load_idx_dataset(resolve_mnist_dir(mnist), MNIST_FILES, dataset="MNIST")
    imgs, labels = mn["test_images"][:500], torch.as_tensor(mn["test_labels"][:500].astype(np.int64))
    mesh = icosphere(4)

    def rot_x(deg):
        a = np.radians(deg)
        return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])

    def signals(images, deg):
        r = np.broadcast_to(rot_x(deg), (len(images), 3, 3))
        return torch.as_tensor(project(images, mesh.vertices, r), dtype=torch.float32)[:, None] / 255

    pdo, base = M.load(pdo_ckpt).eval(), M.load(mesh_ckpt).eval()
    x0, x1 = signals(imgs[:1], 0), signals(imgs[:1], 90)
    lift = torch.nn.Sequential(*list(pdo.features.children())[:4])  # (restriction,) lifting, batch norm, ReLU
    with torch.no_grad():
        r0, r1 = lift(x0).amax(2)[0], lift(x1).amax(2)[0]
    level = int(np.log((r0.shape[-1] - 2) / 10) / np.log(4) + 0.5)
    out.mkdir(parents=True, exist_ok=True)
    plot_sphere_signals([x0[0, 0].numpy(), x1[0, 0].numpy()], mesh, str(out / "sphere-digit.png"),
                        ["digit (level 4)", "rotated 90 deg about x"], cols=2)
    plot_sphere_signals([r[k].numpy() for r in (r0, r1) for k in range(4)], icosphere(level),
                        str(out / "sphere-responses.png"),
                        [f"field {k}{', rotated input' if i else ''}" for i in range(2) for k in range(4)], cols=4)
    angles = [0, 30, 60, 90, 120, 150, 180]
    errs: dict[str, list[float]] = {"pdo-es2cnn": [], "mesh-cnn": []}
    for a in angles:
        x = signals(imgs, a)
        with torch.no_grad():
            for name, m in (("pdo-es2cnn", pdo), ("mesh-cnn", base)):
                pred = torch.cat([m(c).argmax(1) for c in x.split(100)])
                errs[name].append(100 * float((pred != labels).float().mean()))
        print(a, {k: round(v[-1], 1) for k, v in errs.items()}, flush=True)
    plot_error_vs_angle(angles, errs, str(out / "sphere-error-vs-angle.png"),
                        "trained unrotated (CPU preset), 500 test digits")
    return {"angles": angles, "errors": errs}


def main() -> None:
    ap = arg_parser(__doc__)
    ap.set_defaults(reps=3, rounds=2)
    ap.add_argument("--levels", default="3,4,5,6,7")
    ap.add_argument("--job", help="internal: run one row (kind,level,batch) and print it as JSON")
    ap.add_argument("--pictures", nargs=2, metavar=("PDO_CKPT", "MESH_CKPT"), help="draw docs/figures/sphere-*.png")
    args = ap.parse_args()
    if args.pictures:
        torch.set_num_threads(args.threads)
        print(json.dumps(pictures(*args.pictures)))
        return
    if args.job:
        kind, level, batch = args.job.split(",")
        print(json.dumps(job(kind, int(level), int(batch), args.reps, args.threads)))
        return
    levels = [int(s) for s in args.levels.split(",")]
    jobs = {f"sparse L{L}": ["--job", f"sparse,{L},1"] for L in levels}
    jobs["dense L3"] = ["--job", "dense,3,1"]
    jobs["target sparse L5 b16"] = ["--job", "sparse,5,16"]
    jobs["conv2d16 101x101 b16"] = ["--job", "conv2d16,0,16"]
    jobs["conv2d128 101x101 b16"] = ["--job", "conv2d128,0,16"]
    common = ["--reps", str(args.reps), "--threads", str(args.threads)]
    rows = run_interleaved(__file__, {k: v + common for k, v in jobs.items()}, args.rounds)
    for r in rows:
        r["label"] = next(k for k, v in jobs.items() if v[1] == f"{r['kind']},{r['level'] if r['kind'] in ('sparse', 'dense') else 0},{r['batch']}")
    scaling = [r for r in rows if r["kind"] == "sparse" and r["batch"] == 1]
    fit = np.polyfit(np.log([r["points"] for r in scaling]), np.log([r["train_s"] for r in scaling]), 1)[0] if len(scaling) > 1 else None
    # dense operators that were not run: the memory the stacked dense matrix alone would take (float32)
    dense_needs = {L: 4 * (5 * N * (10 * 4 ** L + 2)) * (N * (10 * 4 ** L + 2)) / 2 ** 30 for L in levels}
    parts = breakdown(threads=args.threads)
    print_table(rows, [("label", "row", ""), ("points", "points", "d"), ("build_s", "build s", ".2f"),
                       ("train_s", "fwd+bwd s", ".4f"), ("eval_s", "fwd s", ".4f"), ("peak_mb", "peak MB", ".0f")])
    print(f"\nfitted exponent of fwd+bwd time vs vertex count (sparse, batch 1, levels {levels}): {fit:.3f}")
    print("dense stacked operator would need (GiB, float32): " + ", ".join(f"L{L} {g:.1f}" for L, g in dense_needs.items()))
    tgt = next((r for r in rows if r["label"] == "target sparse L5 b16"), None)
    for c in (16, 128):
        ref = next((r for r in rows if r["label"] == f"conv2d{c} 101x101 b16"), None)
        if tgt and ref:
            print(f"level 5 target vs Conv2d {c}->{c} 3x3 on 16x101x101: {tgt['train_s'] / ref['train_s']:.2f}x (fwd+bwd)")
    print("\nlevel-5 forward breakdown (batch 16, no grad), median s:")
    for k, val in parts.items():
        print(f"  {k:22s} {val if isinstance(val, int) else round(val, 4)}")
    load = os.getloadavg()
    write_json("sphere.json", {"machine": machine(), "load_average": load,
                               "note": "shared machine: the load average is the 1/5/15-minute average at the end",
                               "fields": FIELDS, "orientations": N, "rows": rows, "fitted_exponent": fit,
                               "dense_needs_gib": dense_needs, "breakdown_level5": parts})
    print(f"\nload average {load}: a shared machine; wrote benchmarks/results/sphere.json")


if __name__ == "__main__":
    main()
