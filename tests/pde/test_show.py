"""pde_show: the three PNGs from a checkpoint (untrained, tiny data), and its errors."""

import pytest
import torch

pytest.importorskip("matplotlib")

import epdo.models as models
from epdo.pde.show import find_pde_layer, pde_show


@pytest.mark.parametrize("function", ["linear", "mlp"])
def test_pde_show_writes_three_pngs(tmp_path, function):
    m = models.create("eqpdenet-h16", function=function, T=0.4, dt=0.2)
    ckpt = tmp_path / "m.pt"
    models.save_checkpoint(ckpt, m)
    images = torch.zeros(2, 1, 28, 28)
    images[:, 0, 8:20, 12:15] = 1.0
    paths = pde_show(ckpt, tmp_path / "show", data=images)
    assert set(paths) == {"evolution", "trajectory", "coefficients"}
    for p in paths.values():
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pde_show_errors(tmp_path):
    fc = models.create("fcnn-h16")
    with pytest.raises(ValueError, match="has no PDE layer"):
        find_pde_layer(fc)
    models.save_checkpoint(tmp_path / "fc.pt", fc)
    with pytest.raises(ValueError, match="has no PDE layer"):
        pde_show(tmp_path / "fc.pt", tmp_path / "out", data=torch.rand(1, 1, 28, 28))
    models.save_checkpoint(tmp_path / "eq.pt", models.create("eqpdenet-h16"))
    with pytest.raises(ValueError, match=r"expected images \(N, 1, H, W\), got \(1, 28, 28\)"):
        pde_show(tmp_path / "eq.pt", tmp_path / "out", data=torch.rand(1, 28, 28))
    with pytest.raises(FileNotFoundError):
        pde_show(tmp_path / "missing.pt", tmp_path / "out")
