"""epdo.flops: FlopCounterMode with epdo's formulas. Known costs of a conv and a linear map, a whole plain ResNet
against the sum of its convolutions, the Neural ePDO product against a hand count of the separable kernel's
multiply-adds (and the counter without the formula getting it wrong), weight expansions counted apart."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from epdo import fields, groups
from epdo import nn as enn
from epdo.flops import count_flops
from epdo.models.resnet import ResNet26


def test_conv_and_linear_of_known_cost():
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)
    assert count_flops(conv, torch.rand(3, 4, 9, 9)).total == 2 * 3 * 4 * 6 * 9 * 5 * 5
    lin = torch.nn.Linear(7, 5)
    f = count_flops(lin, torch.rand(2, 7))
    assert f.total == 2 * 2 * 7 * 5 and f.per_sample == 7 * 5 * 2


def test_plain_resnet_is_the_sum_of_its_convolutions():
    m = ResNet26(num_classes=10, widths=(8, 8, 16, 16))
    size = 65
    expected = 0

    def hook(mod, inp, out):
        nonlocal expected
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            expected += 2 * out.shape[0] * mod.in_channels * mod.out_channels * k * out.shape[2] * out.shape[3]
        else:
            expected += 2 * out.shape[0] * mod.in_features * mod.out_features

    hs = [x.register_forward_hook(hook) for x in m.modules() if isinstance(x, (torch.nn.Conv2d, torch.nn.Linear))]
    m.eval()
    with torch.no_grad():
        m(torch.rand(1, 3, size, size))
    for h in hs:
        h.remove()
    assert count_flops(m, torch.rand(1, 3, size, size)).total == expected


def test_neural_epdo_product_by_hand():
    """C4, 2 regular fields (8 channels), order 2, 3x3 FD, 5x5 input, r = 1, p = 2.

    1-D FD stencils: order 0 [0 1 0], 1 [-1/2 0 1/2], 2 [1 -2 1]: 1, 2, 3 nonzero taps. Row pass over the
    row-padded 7 x 5 map: 8 channels x 35 x (1 + 2 + 3) MACs. Column pass + product, alpha = (a, b) over
    (0,0) (1,0) (0,1) (2,0) (1,1) (0,2): taps of s_b + 1 = 2 2 3 2 3 4 (16) per output value, 8 x 25 values.
    Generator: W1 8 -> 8 hidden channels, W2 8 -> C0 |Gamma| = 4 x 6 = 24, per pixel.
    """
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.regular] * 2)
    layer = enn.NeuralEPDO(t, order=2, kernel_size=3, reduction=1, partition=2, backend="torch")
    x = torch.rand(1, 8, 5, 5)
    macs = 8 * 35 * 6 + 8 * 25 * 16 + 25 * (8 * 8 + 8 * 24)
    f = count_flops(layer, x)
    assert f.total - f.weights == 2 * macs
    assert f.by_op["epdo_flops.generated_pdo_product"] == 2 * (8 * 35 * 6 + 8 * 25 * 16 + 25 * 8 * 24)
    # without the formula, torch's counter sees the pure-torch kernel's banded row passes as dense 5 x 5 products
    # and none of the per-pixel products
    layer.eval()
    with torch.no_grad():
        layer(x)
        raw = FlopCounterMode(display=False)
        with raw:
            layer(x)
    assert raw.get_total_flops() - f.weights != 2 * macs


def test_weight_expansions_are_counted_apart():
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.regular] * 2)
    lin = enn.PointwiseLinear(t, t, bias=False)
    f1, f4 = count_flops(lin, torch.rand(1, 8, 3, 3)), count_flops(lin, torch.rand(4, 8, 3, 3))
    assert f1.weights > 0 and f1.weights == f4.weights  # once per call
    assert f1.per_sample == f4.per_sample == 2 * 8 * 8 * 9
