"""NeuralEPDO side by side with the formulations it replaces, a dense Conv2d and e2cnn R2Diffop (issue 4).

C16, 8 -> 8 regular fields (128 channels), batch 64, 28x28, order 4, kernel 5, CPU, forward+backward.

- ``epdo-NeuralEPDO[...]``: this layer (``backend`` torch = pure torch, cpp = the fused C++ kernel that
  ``epdo build-ext`` compiles and ``backend="auto"`` then uses; its generator GEMMs go through oneDNN), for
  (reduction r, partition p) = (1, 1) and (2, 2).
- ``unfold-baseline``: the published reference code's formulation, written here: the same generator, then a
  per-pixel k x k filter ``K_x = sum_alpha w_alpha(x) s_alpha`` applied to ``F.unfold`` patches.
- ``derivconv-baseline``: the same generator, all ``|Gamma_N|`` derivative maps by one depthwise ``conv2d``,
  then the product-sum, plain autograd (stores the derivative maps).
- ``conv2d``: a dense 5x5 ``nn.Conv2d`` 128 -> 128 (what a steerable PDO / R2Diffop costs after expansion).
- ``e2cnn-R2Diffop-fd``: when e2cnn is installed (``pip install e2cnn``), else skipped with a message.

Each layer runs in its own subprocess; "peak MB" is the growth of the process's maximum resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over the training steps, after building the layer and the
input: torch's CPU allocations are not seen by tracemalloc. Rounds are interleaved (each round runs every
layer once), and the table shows the median over rounds of each round's median over ``--reps`` steps: on a
shared machine, compare rows of the same run only.

    python benchmarks/neural_epdo.py [--reps 10] [--rounds 3] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import arg_parser, machine, run_interleaved, time_layer, print_table, write_json  # noqa: E402

N_GROUP, FIELDS, BATCH, SIZE, ORDER, KERNEL = 16, 8, 64, 28, 4, 5


def _field_type():
    from epdo import fields, groups

    G = groups.cyclic(N_GROUP)
    return G, fields.FieldType(G, [G.regular] * FIELDS)


class UnfoldBaseline(torch.nn.Module):
    """The per-pixel dynamic filter of the reference code: patches by ``unfold``, one k x k filter per pixel."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        st = torch.tensor(layer._stencils.stencils_2d(), dtype=torch.float32)
        self.register_buffer("st", st.reshape(st.shape[0], -1))  # (|Gamma|, k*k)

    def forward(self, x):
        b, c, h, w = x.shape
        coef = self.layer.coefficients(x)  # (B, C0, |Gamma|, H, W)
        c0 = coef.shape[1]
        kern = torch.einsum("bcahw,at->bcthw", coef, self.st).reshape(b, 1, c0, -1, h * w)
        patches = F.unfold(x, KERNEL, padding=KERNEL // 2).view(b, c // c0, c0, -1, h * w)
        return (patches * kern).sum(3).reshape(b, c, h, w)


class DerivConvBaseline(torch.nn.Module):
    """All derivative maps by a depthwise conv2d, then the product-sum; plain autograd."""

    def __init__(self, layer, channels):
        super().__init__()
        self.layer = layer
        st = torch.tensor(layer._stencils.stencils_2d(), dtype=torch.float32)[:, None]
        self.register_buffer("st", st.repeat(channels, 1, 1, 1))
        self.channels = channels

    def forward(self, x):
        b, c, h, w = x.shape
        coef = self.layer.coefficients(x)
        c0, n_alpha = coef.shape[1], coef.shape[2]
        d = F.conv2d(x, self.st, padding=KERNEL // 2, groups=c).view(b, c // c0, c0, n_alpha, h, w)
        return (d * coef[:, None]).sum(3).reshape(b, c, h, w)


def build(name: str):
    """name: 'epdo-NeuralEPDO-<backend>-r<r>p<p>', 'unfold-baseline', 'derivconv-baseline', 'conv2d',
    'e2cnn-R2Diffop-fd'. Returns (module, forward_fn, params)."""
    from epdo.nn import NeuralEPDO

    G, t = _field_type()
    if name.startswith("epdo-NeuralEPDO"):
        _, _, backend, rp = name.split("-")
        r, p = (int(v) for v in rp[1:].split("p"))
        m = NeuralEPDO(t, order=ORDER, kernel_size=KERNEL, reduction=r, partition=p, backend=backend)
        return m, m, m.num_params
    if name in ("unfold-baseline", "derivconv-baseline"):
        layer = NeuralEPDO(t, order=ORDER, kernel_size=KERNEL, reduction=1, partition=1)
        m = UnfoldBaseline(layer) if name == "unfold-baseline" else DerivConvBaseline(layer, t.size)
        return m, m, layer.num_params
    if name == "conv2d":
        m = torch.nn.Conv2d(t.size, t.size, KERNEL, padding=KERNEL // 2)
        return m, m, sum(p.numel() for p in m.parameters())
    from e2cnn import gspaces
    from e2cnn import nn as enn

    gs = gspaces.Rot2dOnR2(N_GROUP)
    et = enn.FieldType(gs, [gs.regular_repr] * FIELDS)
    m = enn.R2Diffop(et, et, kernel_size=KERNEL, maximum_order=ORDER, padding=KERNEL // 2)

    def fwd(x):
        return m(enn.GeometricTensor(x, et)).tensor

    return m, fwd, sum(p.numel() for p in m.parameters() if p.requires_grad)


def run_one(name: str, reps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if "cpp" in name:
        from epdo.nn._epdo_kernels import load_cpp_extension

        load_cpp_extension()  # compiled once and cached by torch; not part of the build time
    t0 = time.perf_counter()
    module, fwd, params = build(name)
    build_s = time.perf_counter() - t0
    x = torch.randn(BATCH, N_GROUP * FIELDS, SIZE, SIZE, requires_grad=True)
    timing = time_layer(module, fwd, x, reps)
    err90 = None
    if name.startswith("epdo"):
        import epdo

        err90 = epdo.check_equivariance(module, size=SIZE, batch=1, dtype=torch.float32,
                                        elements=[module.in_type.group.rotation(np.pi / 2)]).max_error()
    return dict(layer=name, params=params, build_s=build_s, **timing,
                err90=err90, threads=torch.get_num_threads())


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--no-cpp", action="store_true", help="skip the optional C++ backend")
    ap.add_argument("--output", default="neural_epdo.json", help="file name under benchmarks/results/")
    ap.add_argument("--one", metavar="NAME", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.reps, args.threads)))
        return
    backends = ["torch"]
    if not args.no_cpp:
        from epdo.nn._epdo_kernels import cpp_extension_available

        if cpp_extension_available(build=True):
            backends.append("cpp")
        else:
            print("the optional C++ kernel could not be built here: skipping backend=cpp")
    configs = [f"epdo-NeuralEPDO-{b}-r{r}p{p}" for r, p in ((1, 1), (2, 2)) for b in backends]
    configs += ["unfold-baseline", "derivconv-baseline", "conv2d"]
    try:
        import e2cnn  # noqa: F401

        configs.append("e2cnn-R2Diffop-fd")
    except ImportError:
        print("e2cnn not installed (pip install e2cnn): skipping e2cnn R2Diffop")
    jobs = {name: ["--one", name, "--reps", str(args.reps), "--threads", str(args.threads)] for name in configs}
    rows = run_interleaved(__file__, jobs, args.rounds)
    ref = {r["layer"]: r for r in rows}
    for r in rows:
        for key, base in (("vs_unfold", "unfold-baseline"), ("vs_conv2d", "conv2d"), ("vs_r2diffop", "e2cnn-R2Diffop-fd")):
            b = ref.get(base)
            r[key] = r["train_s"] / b["train_s"] if b else None
        b = ref.get("unfold-baseline")
        r["mem_vs_unfold"] = r["peak_mb"] / b["peak_mb"] if b and b["peak_mb"] > 0 else None
    cols = [("layer", "layer", ""), ("params", "params", "d"), ("train_s", "train fwd+bwd s", ".3f"),
            ("eval_s", "eval fwd s", ".3f"), ("peak_mb", "peak MB", ".0f"), ("vs_unfold", "time/unfold", ".2f"),
            ("mem_vs_unfold", "mem/unfold", ".2f"), ("vs_conv2d", "time/conv2d", ".2f"),
            ("vs_r2diffop", "time/R2Diffop", ".2f"), ("err90", "err 90deg", ".1e")]
    print(f"\nC{N_GROUP}, {FIELDS}->{FIELDS} regular fields, batch {BATCH}, {SIZE}x{SIZE}, order {ORDER}, kernel {KERNEL}; "
          f"median over {args.rounds} rounds of medians of {args.reps} steps; {args.threads} torch threads; "
          f"peak MB = max-RSS growth (getrusage) in a fresh subprocess")
    print_table(rows, cols)
    path = write_json(args.output, {"command": " ".join(sys.argv), "config": dict(
        group=f"C{N_GROUP}", fields=FIELDS, batch=BATCH, size=SIZE, order=ORDER, kernel=KERNEL, reps=args.reps,
        rounds=args.rounds, memory="max RSS growth (resource.getrusage) over the training steps, own subprocess"),
        "machine": machine() | {"threads_used": args.threads}, "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
