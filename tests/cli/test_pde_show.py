"""epdo.cli.pde_show.pde_show: the three PNGs from a checkpoint (untrained, tiny data), and its errors; the PDE
package does not depend on the models (it moved out of epdo.pde)."""

import subprocess
import sys

import pytest
import torch

pytest.importorskip("matplotlib")

import epdo.models as models
from epdo.cli.pde_show import find_pde_layer, pde_show


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


def test_dependencies_point_one_way():
    """theory -> layers -> models -> cli: importing epdo.pde loads neither the models nor the command line, and
    epdo.pde.show is gone."""
    code = ("import sys, epdo.pde, importlib.util; "
            "print(sorted(m for m in sys.modules if m.startswith(('epdo.models', 'epdo.cli', 'epdo.data')))); "
            "print(importlib.util.find_spec('epdo.pde.show'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "None"]
