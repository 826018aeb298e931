"""Registered spherical models: contract, parameter counts, invariance of the network vs N and level."""

from __future__ import annotations

import pytest
import torch

import epdo
import epdo.models as models
from epdo.models.sphere import MeshCNN, SpherePDONet, rotation_invariance_error


def _pdo_count(channels, n, convs=1, classes=10):
    c = [1] + list(channels)
    total = 6 * c[1] + c[1]  # lifting: 6 weights per (out, in) pair, one bias per field
    for i in range(2, len(c)):
        for k in range(convs):
            cin = c[i - 1] if k == 0 else c[i]
            total += 6 * n * cin * c[i] + c[i]
    bn = 2 * (channels[0] + convs * sum(channels[1:]))  # weight and bias per field after every PDO layer
    return total + bn + channels[-1] * classes + classes


def _mesh_count(channels, classes=10):
    c = [1] + list(channels)
    return sum(7 * a * b + 3 * b for a, b in zip(c, c[1:])) + c[-1] * classes + classes


def test_registry_entries_and_parameter_counts():
    expected = {"pdo-es2cnn": _pdo_count((8, 16, 32), 8), "pdo-es2cnn-large": _pdo_count((16, 32, 64), 8, convs=2),
                "mesh-cnn": _mesh_count((16, 48, 80))}
    assert expected == {"pdo-es2cnn": 31_266, "pdo-es2cnn-large": 370_010, "mesh-cnn": 33_610}
    for name, count in expected.items():
        info = models.get_model_info(name)
        assert info.inputs == "sphere" and info.input_shape == (1, 2562) and info.task == "classification"
        m = models.create(name)
        assert models.count_parameters(m) == count and m.mesh.level == 4 and m.mesh.num_vertices == 2562
        x, = info.example_inputs(batch=2)
        assert m(x).shape == (2, 10)


def test_start_level_restricts_to_the_nested_vertices():
    torch.manual_seed(0)
    a = SpherePDONet(level=3, channels=(2, 3), orientations=4, start_level=2).eval()
    torch.manual_seed(0)
    b = SpherePDONet(level=2, channels=(2, 3), orientations=4).eval()
    x = torch.rand(2, 1, 642)
    assert torch.allclose(a(x), b(x[..., :162]), atol=1e-6)
    with pytest.raises(ValueError, match="start_level must be in 0..3"):
        SpherePDONet(level=3, start_level=4)


def test_bad_input():
    m = models.create("mesh-cnn")
    with pytest.raises(ValueError, match=r"expected float signals of shape \(B, 1, 2562\) on the level-4 icosphere, got \(2, 1, 642\)"):
        m(torch.rand(2, 1, 642))
    with pytest.raises(TypeError, match="got dtype torch.uint8"):
        m(torch.zeros(2, 1, 2562, dtype=torch.uint8))
    x = torch.rand(2, 1, 2562)
    x[0, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="holds 1 NaN/inf"):
        m(x)


def test_network_invariance_vs_orientations_and_against_the_mesh_baseline():
    """Normalised invariance error of the logits (rotation_invariance_error: exact rotated band-limited input),
    level 3, random init, float64. Measured (seed 0): PDO N = 4 / 8 / 16 under icosahedral rotations
    0.43 / 0.098 / 0.013, under random SO(3) 0.40 / 0.16 / 0.093; mesh-cnn 0.47 / 0.41. (Level 4, the
    registered widths: PDO N = 8: 0.018 / 0.018, mesh-cnn 0.56 / 0.51: docs/results.md.)"""
    ico = epdo.groups.icosahedral().elements[1::6]
    so3 = epdo.groups.so3(1).sample_elements(4, seed=0)
    err = {}
    for n in (4, 16):
        torch.manual_seed(0)
        m = SpherePDONet(level=3, channels=(4, 8, 8), orientations=n).double()
        err[n] = (rotation_invariance_error(m, ico), rotation_invariance_error(m, so3))
    torch.manual_seed(0)
    mesh = MeshCNN(level=3, channels=(8, 16, 16)).double()
    base = (rotation_invariance_error(mesh, ico), rotation_invariance_error(mesh, so3))
    assert err[16][0] < 0.03 and err[16][1] < 0.15  # measured 0.013, 0.093
    assert err[16][0] < err[4][0] / 10 and err[16][1] < err[4][1] / 2
    assert base[0] > 0.3 and base[1] > 0.3  # measured 0.47, 0.41
    assert err[16][0] < base[0] / 10 and err[16][1] < base[1] / 3
