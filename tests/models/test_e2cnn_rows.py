"""The E2CNN rows of He et al. Table 2 (epdo.models.e2cnn_rows): counts against the paper, against a closed-form
formula and against e2cnn's own networks (recorded); invariance to 90-degree rotations; the D16 widths."""

from __future__ import annotations

import pytest
import torch

import epdo.models as models
from epdo.export import export
from epdo.models.e2cnn_rows import E2CNN_R2CONV_COUNTS, PAPER_E2CNN, E2MnistNet


def _closed_form_regular(G_order: int, widths, Js, restrict_after=None, head_in=96) -> int:
    """Regular fields: Hom(P (x) reg, reg) = |G| J, Hom(P, reg) = J per pair; one bias per regular field (its
    trivial component); batch norm 2 per field; the head. Restriction D16 -> C16 doubles the fields and halves
    |G| for the next layer."""
    n, fields_in, order = 0, None, G_order
    for i, (w, J) in enumerate(zip(widths, Js), start=1):
        n += (J * w if fields_in is None else order * J * fields_in * w) + w + 2 * w
        fields_in = w
        if i == restrict_after:
            fields_in, order = 2 * w, order // 2
    return n + (head_in * 96 + 96) + 2 * 96 + (96 * 96 + 96) + 2 * 96 + (96 * 10 + 10)


J9, J7, J5 = 31, 18, 11  # 1 + 5 + 7 + 13 + 5, 1 + 5 + 7 + 5, 1 + 5 + 5 basis functions (e2cnn's cut-off)


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    return {name: models.create(name) for name in PAPER_E2CNN}


def test_counts_against_the_paper_the_formula_and_e2cnn(built):
    counts = {name: models.count_parameters(m) for name, m in built.items()}
    for name, (paper, _) in PAPER_E2CNN.items():
        assert abs(counts[name] / paper - 1) < 0.005, (name, counts[name], paper)
        assert counts[name] == E2CNN_R2CONV_COUNTS[name]  # e2cnn's R2Conv network, measured once
    assert counts["e2cnn-c16"] == _closed_form_regular(16, (24, 32, 36, 36, 64, 96), (J9, J7, J7, J7, J7, J5))
    assert counts["e2cnn-d16c16"] == _closed_form_regular(32, (24, 32, 36, 36, 64, 96), (J9, J7, J7, J7, J7, J5),
                                                          restrict_after=5)
    assert built["e2cnn-c16-quotient"].widths == (52, 65, 78, 78, 143, 208)  # 4, 5, 6, 6, 11, 16 units of 13


def test_fix_params_widths_are_e2cnns():
    m = E2MnistNet(group="D16", restrict_after=5, fix_params=True, width=1.0)
    assert m.widths == (16, 22, 25, 25, 45, 96)  # int(w / sqrt 2), then 96 C16 fields


@pytest.mark.parametrize("kw", [dict(group="C8"), dict(group="C8", fields="quotient"),
                                dict(group="D4", restrict_after=5)])
def test_small_variants_are_invariant_to_rot90_in_float64(kw):
    torch.manual_seed(0)
    m = E2MnistNet(width=0.25, **kw).double().eval()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        a, b = m(x), m(torch.rot90(x, 1, (2, 3)))
        plain = export(m)
        c = plain(x)
    assert (a - b).abs().max() <= 1e-9 * a.abs().max()
    assert (a - c).abs().max() <= 1e-9 * a.abs().max()  # exported through MnistRotNet's exporter


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="quotient unit needs C_N"):
        E2MnistNet(group="C6", fields="quotient")
    with pytest.raises(ValueError, match="restrict_after"):
        E2MnistNet(group="C16", restrict_after=5)
    with pytest.raises(ValueError, match="one entry per layer"):
        E2MnistNet(kernel_sizes=(5, 5))
    with pytest.raises(ValueError, match="fix_params applies to regular"):
        E2MnistNet(fields="quotient", fix_params=True)
