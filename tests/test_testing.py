"""epdo.testing.assert_equivariant: passes equivariant layers, fails others with the table of errors."""

from __future__ import annotations

import pytest
import torch

import epdo
import epdo.testing
from epdo import fields, groups, nn
from epdo.testing import assert_equivariant, default_tolerances


class Typed(torch.nn.Module):
    def __init__(self, fn, in_type, out_type=None):
        super().__init__()
        self.fn, self.in_type, self.out_type = fn, in_type, out_type or in_type

    def forward(self, x):
        return self.fn(x)


def test_passes_equivariant_layers_and_returns_the_report():
    D4 = groups.dihedral(4)
    t = fields.FieldType(D4, [D4.regular, D4.trivial])
    report = assert_equivariant(nn.PDOConv(t, t, order=2, kernel_size=3, dtype=torch.float64))
    assert len(report) == 8 and report.max_error() <= 1e-9
    ring = t.on(fields.Ring(8))
    assert_equivariant(nn.RingPDOConv(ring, ring, order=1, dtype=torch.float64))
    assert_equivariant(nn.ReLU(t), dtype=torch.float32)
    assert default_tolerances(torch.float64) == (1e-12, 1e-9) and default_tolerances(torch.float32) == (1e-6, 1e-5)


def test_fails_with_a_table():
    C4 = groups.cyclic(4)
    t = fields.FieldType(C4, [C4.regular])
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, dtype=torch.float64)
    with pytest.raises(AssertionError, match=r"Typed is not equivariant: 3 of 4 elements exceed atol=1e-12, rtol=1e-09") as e:
        assert_equivariant(Typed(conv, t), size=9)
    text = str(e.value)
    assert "rel. error" in text and "norm. error" in text and "reference" in text and text.count("\n") >= 6
    swap = Typed(lambda x: x[:, [1, 0, 2, 3]], t)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(swap)


def test_tolerances_and_non_exact_elements():
    C8 = groups.cyclic(8)
    t = fields.FieldType(C8, [C8.regular])
    relu = nn.ReLU(t)
    assert_equivariant(relu, size=15)  # 45 degrees is interpolated: not asserted by default
    with pytest.raises(AssertionError, match="non-exact rtol=1e-06"):
        assert_equivariant(relu, size=15, non_exact_rtol=1e-6)
    assert_equivariant(relu, size=15, non_exact_rtol=0.1)  # smooth input: ~0.03 (measured)
    noisy = Typed(lambda x: x + 1e-7 * torch.roll(x, 1, dims=-1), t)  # slightly non-equivariant
    with pytest.raises(AssertionError):
        assert_equivariant(noisy, size=9)
    assert_equivariant(noisy, size=9, rtol=1e-6)
    assert_equivariant(noisy, size=9, atol=1e-3)
    S = groups.so2(1)
    s = fields.FieldType(S, [S.irrep(0, 1)])
    with pytest.raises(ValueError, match="none of the 2 elements is exact"):
        assert_equivariant(nn.PointwiseLinear(s, s), elements=[S.rotation(0.3), S.rotation(1.0)], size=9)
    assert_equivariant(nn.PointwiseLinear(s, s), elements=[S.rotation(0.3)], size=9, non_exact_rtol=1e-9)
