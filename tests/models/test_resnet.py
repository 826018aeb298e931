"""ResNet-26 and its C8 steerable-PDO / Neural-ePDO versions (paper 000, Sec. 7.2): parameter counts against
independent formulas (built at reduced width) and, by the same formulas at full width, against Tables 3-4;
exact invariance of the logits to 90-degree rotations (float64, odd sizes) and its expected failure on even
sizes; the registry entries."""

from __future__ import annotations

import pytest
import torch

import epdo.models as models
from epdo.models import resnet
from epdo.models.resnet import EXPANSION, RESNET26_BLOCKS, RESNET26_WIDTHS, EquivariantResNet26, ResNet26

N_ALPHA = 15  # |Gamma_4| = (4 + 1)(4 + 2) / 2
N = 8  # C8 regular fields


def plain_count(num_classes: int, widths=RESNET26_WIDTHS, blocks=RESNET26_BLOCKS, stem: int = 64) -> int:
    """torchvision's bottleneck ResNet: convs without bias, BN (2 per channel), stride on the 3x3."""
    total = 3 * stem * 49 + 2 * stem
    c = stem
    for w, nb in zip(widths, blocks):
        for b in range(nb):
            out = w * EXPANSION
            total += c * w + 2 * w + 9 * w * w + 2 * w + w * out + 2 * out
            if b == 0:  # stride or width change: projection shortcut
                total += c * out + 2 * out
            c = out
    return total + c * num_classes + num_classes


def equivariant_count(layer: str, num_classes: int, width_factor: float, r: int = 1, p: int = 8,
                      widths=RESNET26_WIDTHS, blocks=RESNET26_BLOCKS, stem: int = 64) -> int:
    """dim Hom_G(V, rho_reg) = dim V for C_N: a 1x1 map between regular fields has N parameters per pair, a PDO of
    order 4 N |Gamma| (dim of rho_hat (x) rho_reg), trivial -> regular |Gamma|; a batch norm 2 per regular field
    (weight, bias on the trivial part); a diag Neural ePDO (Table 1) c^2 N / r + c^2 |Gamma| N / (r p) weights and
    c / r + |Gamma| c / p biases."""
    def f(w):
        return max(1, round(width_factor * w / N))

    def div(c, v):
        v = min(v, c)
        while c % v:
            v -= 1
        return v

    c = f(stem)
    total = 3 * c * N_ALPHA + 2 * c
    for w, nb in zip(widths, blocks):
        m, out = f(w), f(w * EXPANSION)
        rr, pp = div(m, r), div(m, p)
        for b in range(nb):
            if layer == "pdo":
                mid = m * m * N * N_ALPHA
            else:
                mid = m * m * N // rr + m * m * N_ALPHA * N // (rr * pp) + m // rr + N_ALPHA * m // pp
            total += c * m * N + 2 * m + mid + 2 * m + m * out * N + 2 * out
            if b == 0:
                total += c * out * N + 2 * out
            c = out
    return total + c * num_classes + num_classes


def _n(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_plain_count_and_paper():
    for nc in (100, 1000):
        assert _n(ResNet26(num_classes=nc)) == plain_count(nc)
    # Table 4: 13.7M for ImageNet-1k (Ramachandran et al.'s ResNet-26); Table 3's 13.12M for 100 classes is not
    # reachable by a 2048-wide classifier (1000 -> 100 classes removes 1.84M, the paper's figures differ by 0.58M)
    assert abs(plain_count(1000) / 13.7e6 - 1) < 0.003
    assert plain_count(1000) - plain_count(100) == 900 * 2049


@pytest.mark.parametrize("layer", ["pdo", "neural-epdo"])
def test_equivariant_counts_match_formula(layer):
    kw = dict(width_factor=0.4, reduction=2, partition=4)
    m = EquivariantResNet26(layer, num_classes=7, **kw)
    assert _n(m) == equivariant_count(layer, 7, 0.4, 2, 4)


def test_full_width_counts_beside_the_papers():
    """The registered configuration (width factor 2.75, r = 1, p = 8), by the formula checked above."""
    wf = resnet.WIDTH_FACTOR
    spdo = {nc: equivariant_count("pdo", nc, wf) for nc in (100, 1000)}
    nepdo = {nc: equivariant_count("neural-epdo", nc, wf) for nc in (100, 1000)}
    assert abs(spdo[100] / 14.4e6 - 1) < 0.03 and abs(spdo[1000] / 15.02e6 - 1) < 0.03
    # Neural ePDOs: r and p are not given for ImageNet; r = 1, p = 8 is the closest admissible choice, 4-5 % under
    assert abs(nepdo[100] / 8.24e6 - 1) < 0.05 and abs(nepdo[1000] / 8.82e6 - 1) < 0.05
    assert spdo[100] == 14_237_862 and nepdo[100] == 7_887_969  # as built (docs/results.md)


def _rot_err(model, size: int) -> float:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, size, size, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        errs = [(model(torch.rot90(x, k, (2, 3))) - y).abs().max() / y.abs().max() for k in (1, 2, 3)]
    return float(max(errs))


def _trained_bn(model):
    """Batch-norm running statistics away from their initial values (one training-mode pass), then eval."""
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 33, 33, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    return model.eval()


@pytest.mark.parametrize("name", ["res26-spdo-fd", "res26-spdo-gauss", "res26-nepdo-fd", "res26-nepdo-gauss"])
def test_logits_invariant_to_rot90_on_odd_sizes(name):
    torch.manual_seed(0)
    kw = {"backend": "torch"} if "nepdo" in name else {}
    if name != "res26-spdo-fd":  # one at full depth; the others with one block per stage (every layer kind)
        kw["blocks"] = (1, 1, 1, 1)
    model = _trained_bn(models.create(name, num_classes=10, width_factor=0.25, **kw).double())
    assert _rot_err(model, 33) < 1e-9, name


def test_invariance_is_lost_on_even_sizes_and_in_the_plain_model():
    """The check above can fail: stride 2 on an even size keeps an asymmetric grid; the plain ResNet is not invariant."""
    torch.manual_seed(0)
    eq = _trained_bn(EquivariantResNet26("pdo", num_classes=10, width_factor=0.25, blocks=(1, 1, 1, 1)).double())
    assert _rot_err(eq, 32) > 1e-4
    plain = _trained_bn(ResNet26(num_classes=10, widths=(8, 8, 8, 8)).double())
    assert _rot_err(plain, 33) > 1e-4


def test_registry_entries():
    for name in ("res26", "res26-spdo-fd", "res26-spdo-gauss", "res26-nepdo-fd", "res26-nepdo-gauss"):
        info = models.get_model_info(name)
        assert info.input_shape[0] == 3 and info.num_classes == 1000 and info.paper_params
        assert "Tables 3-4" in info.paper
    m = models.create("res26-nepdo-gauss", num_classes=100, width_factor=0.25)
    assert m(torch.rand(2, 3, 33, 33)).shape == (2, 100)
    assert m.config["discretization"] == "gauss" and m.config["sigma"] == 1.3 and m.epdo_rp


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="layer must be one of"):
        EquivariantResNet26("conv")
    with pytest.raises(ValueError, match="num_classes"):
        ResNet26(num_classes=0)
    with pytest.raises(ValueError, match="group must be 'C<N>'"):
        EquivariantResNet26("pdo", group="D8")
    m = ResNet26(num_classes=3, widths=(8, 8, 8, 8))
    with pytest.raises(ValueError, match=r"expected images \(B, 3, H, W\)"):
        m(torch.rand(2, 1, 33, 33))
