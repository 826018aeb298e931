r"""FLOP counting for every epdo model: torch's :class:`~torch.utils.flop_counter.FlopCounterMode`, with formulas
for epdo's custom ops.

Convention (torch's): one multiply-accumulate is 2 FLOPs; ``conv2d`` of ``C_in -> C_out`` channels with a
``k x k`` filter on an ``H' x W'`` output costs :math:`2 B C_{in} C_{out} k^2 H' W'`, a linear map
:math:`2 B\,in\,out`; biases, batch norm, activations, pooling and other elementwise ops are not counted (as in
torch's counter).

PDOConv (the expanded filter, one ``conv2d``) and PointwiseLinear (a 1x1 ``conv2d``) need no formula.
:class:`~epdo.nn.NeuralEPDO`'s diag-mode product does: through its pure-torch backend FlopCounterMode would
count the banded row passes as dense ``W x W`` matrix products and miss the per-pixel products, and through
the C++ backend (the custom op ``torch.ops.epdo.generated_pdo_product``) it would see nothing. So while
counting, the product runs as the custom op ``epdo_flops::generated_pdo_product`` (the torch backend inside;
the counter sees one op) whose cost is :func:`generated_pdo_product_flops`: the operations of the separable
kernel. The same formulas are registered for ``torch.ops.epdo.*`` (the C++ backend's ops).

The count runs the model once in eval mode under ``torch.no_grad`` after one uncounted warm-up call, so the
expanded PDO filters (cached in eval mode) are not charged per image. It computes for real (a 224 x 224
steerable-PDO ResNet-26 takes seconds on a CPU).

>>> import torch
>>> count_flops(torch.nn.Linear(10, 20), torch.rand(3, 10)).total
1200
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .nn import _epdo_kernels as _kernels  # noqa: F401  (registers torch.ops.epdo.*)

__all__ = ["FlopCount", "count_flops", "generated_pdo_product_flops", "pdo_product_flops", "EPDO_FLOP_FORMULAS"]


def _taps(sx: Sequence[float], k: int) -> list[int]:
    """Nonzero taps of each 1-D stencil row (order 0..N)."""
    rows = [list(sx[i: i + k]) for i in range(0, len(sx), k)]
    return [sum(1 for v in r if v != 0.0) for r in rows]


def pdo_product_flops(f_shape: Sequence[int], w_shape: Sequence[int], sx: Sequence[float], k: int,
                      alphas: Sequence[int]) -> int:
    r"""FLOPs of :math:`\mathrm{out}_c = \sum_\alpha w_{c,\alpha} \circ \partial^\alpha f_c` by separable stencils.

    Row pass: every channel of the row-padded map ``(H + k - 1) x W`` is correlated with each 1-D stencil
    :math:`s_a` (``a = 0..N``), nnz(:math:`s_a`) MACs per value. Column pass and product: for each
    :math:`\alpha = (a, b)`, nnz(:math:`s_b`) MACs per output value plus one multiply-add by the coefficient.
    """
    b, c, h, w = (int(s) for s in f_shape)
    taps = _taps(sx, k)
    pairs = list(zip(alphas[::2], alphas[1::2]))
    row_macs = b * c * (h + k - 1) * w * sum(taps)
    col_macs = b * c * h * w * sum(taps[bb] + 1 for _, bb in pairs)
    return 2 * (row_macs + col_macs)


def generated_pdo_product_flops(f_shape, h_shape, w2_shape, b2_shape, sx, k, alphas, out_shape=None) -> int:
    r"""FLOPs of ``torch.ops.epdo.generated_pdo_product``: the 1x1 generation :math:`w = W^2 h` (``2 B H W
    C_0|\Gamma| K``) plus :func:`pdo_product_flops`."""
    b, kk, hh, ww = (int(s) for s in h_shape)
    gen = 2 * b * hh * ww * int(w2_shape[0]) * kk
    return gen + pdo_product_flops(f_shape, (b, int(w2_shape[0]) // max(len(alphas) // 2, 1), len(alphas) // 2),
                                   sx, k, alphas)


def _generated_backward_flops(g_shape, f_shape, h_shape, w2_shape, b2_shape, sx, k, alphas, need_f, need_h,
                              need_w2, need_b2, out_shape=None) -> int:
    """Backward: the coefficients regenerated (one generation GEMM), the product's two adjoints (to ``f`` and to
    ``w``, each the cost of the forward product), and the GEMMs to ``h`` and ``W2``."""
    b, kk, hh, ww = (int(s) for s in h_shape)
    gen = 2 * b * hh * ww * int(w2_shape[0]) * kk
    prod = generated_pdo_product_flops(f_shape, h_shape, w2_shape, b2_shape, sx, k, alphas) - gen
    need_w = need_h or need_w2 or need_b2
    return gen + prod * (int(need_f) + int(need_w)) + gen * (int(need_h) + int(need_w2))


def _pdo_product_flops(f_shape, w_shape, sx, k, alphas, out_shape=None) -> int:
    return pdo_product_flops(f_shape, w_shape, sx, k, alphas)


def _pdo_product_backward_flops(g_shape, f_shape, w_shape, sx, k, alphas, need_f, need_w, out_shape=None) -> int:
    return pdo_product_flops(f_shape, w_shape, sx, k, alphas) * (int(need_f) + int(need_w))


#: the formulas registered with FlopCounterMode (``custom_mapping``) for epdo's custom ops
EPDO_FLOP_FORMULAS = {
    torch.ops.epdo.generated_pdo_product: generated_pdo_product_flops,
    torch.ops.epdo.generated_pdo_product_backward: _generated_backward_flops,
    torch.ops.epdo.pdo_product: _pdo_product_flops,
    torch.ops.epdo.pdo_product_backward: _pdo_product_backward_flops,
}


@dataclass(frozen=True)
class FlopCount:
    """``total`` FLOPs of one call, of which ``weights`` are weight expansions (epdo's basis expansions
    :class:`~epdo.nn.HomExpansion` etc.: once per call, not per sample), and ``by_op`` (op name -> FLOPs).
    ``per_sample`` = (total - weights) / batch: the figure papers report per image."""

    total: int
    batch: int
    weights: int = 0
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def per_sample(self) -> float:
        return (self.total - self.weights) / max(self.batch, 1)


def _expansion_flops(model: nn.Module, counts: dict[str, dict]) -> int:
    """FLOPs inside the outermost weight-expansion modules of ``model`` (FlopCounterMode's per-module counts)."""
    from .nn import FieldBias, HomExpansion, RotatedPDOExpansion

    root = type(model).__name__
    names = [n for n, m in model.named_modules() if isinstance(m, (HomExpansion, RotatedPDOExpansion, FieldBias))]
    outer = [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]
    return sum(sum(counts.get(f"{root}.{n}", {}).values()) for n in outer)


@torch.library.custom_op("epdo_flops::generated_pdo_product", mutates_args=(),
                         schema="(Tensor f, Tensor h, Tensor w2, Tensor? b2, float[] sx, int k, int[] alphas) -> Tensor")
def _counted_generated(f, h, w2, b2, sx, k, alphas):
    st = _kernels._st(sx, k, alphas)
    return _kernels._generated_forward(f.contiguous(), h.contiguous(), w2.contiguous(),
                                       None if b2 is None else b2.contiguous(), st, "torch")


@_counted_generated.register_fake
def _(f, h, w2, b2, sx, k, alphas):
    return torch.empty_like(f, memory_format=torch.contiguous_format)


EPDO_FLOP_FORMULAS[torch.ops.epdo_flops.generated_pdo_product] = generated_pdo_product_flops


def _generated_as_one_op(f, h, w2, b2, st, backend="auto"):
    return torch.ops.epdo_flops.generated_pdo_product(f, h, w2, b2, st.sx_flat, st.k, st.alphas_flat)


@contextlib.contextmanager
def _counted_neural_epdo():
    """NeuralEPDO's diag-mode product as the one custom op ``epdo_flops::generated_pdo_product``."""
    from .nn import neural_epdo

    saved = neural_epdo.generated_pdo_product
    neural_epdo.generated_pdo_product = _generated_as_one_op
    try:
        yield
    finally:
        neural_epdo.generated_pdo_product = saved


def count_flops(model: nn.Module, *inputs: torch.Tensor) -> FlopCount:
    """FLOPs of one eval-mode call ``model(*inputs)`` (see the module docstring for the convention); the weight
    expansions that run on every call (e.g. :class:`~epdo.nn.PointwiseLinear`'s) are counted apart in ``weights``.

    ``model`` is put in eval mode for the count and back in its mode afterwards; its parameters are not changed.

    >>> conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    >>> count_flops(conv, torch.rand(2, 3, 5, 5)).total == 2 * 2 * 3 * 8 * 9 * 25
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_flops: expected a torch.nn.Module, got {type(model).__name__}")
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise TypeError(f"count_flops: expected one or more input tensors, got {[type(x).__name__ for x in inputs]}")
    batch = int(inputs[0].shape[0]) if inputs[0].dim() else 1
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _counted_neural_epdo():
            model(*inputs)  # fills the eval-mode caches (expanded filters), not counted
            counter = FlopCounterMode(display=False, custom_mapping=EPDO_FLOP_FORMULAS)
            with counter:
                model(*inputs)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    by_op = {str(op): int(v) for op, v in counts["Global"].items()}
    return FlopCount(total=int(counter.get_total_flops()), batch=batch, weights=_expansion_flops(model, counts),
                     by_op=by_op)
