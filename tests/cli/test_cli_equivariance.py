"""``epdo equivariance`` and the image rotation it is built on."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import epdo
import epdo.models
from epdo import fields, groups
from epdo.cli.common import rotation
from epdo.data import rotate_images


@pytest.mark.parametrize("shape", [(21, 41), (41, 21), (28, 28)])
def test_cli_rotation_moves_a_pixel_where_the_maths_says(shape):
    """Counter-clockwise about the centre ((H-1)/2, (W-1)/2) in the (x right, y up) frame: (x, y) goes to (-y, x)
    under 90 degrees, on non-square images too (the command line's old copy put the pixel 2 rows off on 21 x 41)."""
    h, w = shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    r, c = int(cy) - 3, int(cx) + 5
    x = torch.zeros(1, 1, h, w)
    x[0, 0, r, c] = 1.0
    px, py = c - cx, cy - r  # the pixel in the (x right, y up) frame about the centre
    for angle, (qx, qy) in ((90.0, (-py, px)), (180.0, (-px, -py)), (270.0, (py, -px))):
        row, col = cy - qy, cx + qx
        assert row == int(row) and col == int(col)
        for a in (angle, torch.tensor([angle])):  # a number, or one angle per image (training augmentation)
            y = rotation(a)(x)
            assert y[0, 0, int(row), int(col)] == pytest.approx(1.0, abs=1e-5), (angle, row, col)
            assert y.sum() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(rotation(37.0)(x), rotate_images(x, torch.pi * 37.0 / 180.0), rtol=0, atol=0)


def test_the_cli_has_no_rotation_of_its_own():
    import epdo.cli.common as common

    assert not hasattr(common, "rotate")


class _RadialPool(nn.Module):
    """Logits that are exactly invariant under grid rotations: means over rings."""

    def forward(self, x):
        h, w = x.shape[-2:]
        i = torch.arange(h).view(-1, 1) - (h - 1) / 2
        j = torch.arange(w).view(1, -1) - (w - 1) / 2
        ring = (i**2 + j**2).sqrt().round().long().clamp(max=9)
        return torch.stack([(x[:, 0] * (ring == r)).sum((-2, -1)) for r in range(10)], 1) + 1.0


def test_logits_through_check_invariance():
    """The command line measures with epdo.check_invariance: an exactly grid-invariant model has zero error at
    multiples of 90 degrees, small interpolation error at 45 degrees; a plain CNN is visibly not invariant."""
    G = groups.cyclic(8)
    report = epdo.check_invariance(_RadialPool(), fields.FieldType(G, [G.trivial]), input="smooth", size=28, batch=4)
    assert [r.angle for r in report] == [45.0 * k for k in range(8)]
    assert report.max_error(exact_only=True) < 1e-12
    # bicubic interpolation at the input disc's edge only: measured 0.042-0.110 over seeds 0-5 (0.110 at seed 0)
    assert 0 < max(r.error for r in report if not r.exact) < 0.15
    G4 = groups.cyclic(4)
    cnn = epdo.models.create("tiny-cnn").double().eval()
    assert epdo.check_invariance(cnn, fields.FieldType(G4, [G4.trivial]), input="smooth", size=28,
                                 batch=4).max_error(exact_only=True) > 1e-3


def test_equivariance_command(cli, tmp_path, capsys):
    assert cli("-q", "equivariance", "--model", "tiny-cnn", "--angles", "4", "--n", "4", "--out", tmp_path) == 0
    out = capsys.readouterr().out
    assert "angle(deg)" in out and "90.00" in out
    res = json.loads((tmp_path / "equivariance-tiny-cnn.json").read_text())
    assert [r["angle_deg"] for r in res["angles"]] == [0.0, 90.0, 180.0, 270.0]
    assert res["angles"][0]["rel_error"] == 0.0 and all(r["exact"] for r in res["angles"])
    assert res["angles"][1]["rel_error"] > 1e-4  # a plain CNN is not invariant
    # the library's checker: normalised errors, prediction agreement and a non-invariant reference row
    assert res["angles"][0]["normalized_error"] == 0.0 and res["angles"][0]["agreement"] == 1.0
    assert res["reference"]["normalized_error"] > 0.1 and "norm. error" in out and "reference" in out
    assert (tmp_path / "equivariance-tiny-cnn.png").exists()


def test_equivariance_of_a_checkpoint_on_data(cli, trained_run, tmp_path):
    assert cli("-q", "equivariance", "--checkpoint", trained_run / "best.pt", "--input", "data", "--n", "8",
               "--angles", "3", "--out", tmp_path) == 0
    res = json.loads((tmp_path / "equivariance-tiny-cnn.json").read_text())
    assert res["n"] == 8 and len(res["angles"]) == 3 and res["source"].endswith("best.pt")
    assert res["angles"][0]["rel_error"] == 0.0 and 0.0 <= res["angles"][1]["agreement"] <= 1.0


def test_equivariance_errors(cli, capsys):
    with pytest.raises(SystemExit):
        cli("equivariance", "--angles", "4")  # --model or --checkpoint required
    assert cli("equivariance", "--model", "tiny-cnm") == 2
    assert "Did you mean: tiny-cnn" in capsys.readouterr().err
    assert cli("equivariance", "--model", "tiny-cnn", "--model-kw", "widht=3") == 2
    err = capsys.readouterr().err
    assert "accepts no keyword 'widht'; accepted:" in err and "channels" in err


def test_equivariance_default_output_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("-q", "equivariance", "--model", "tiny-cnn", "--angles", "2", "--n", "2") == 0
    assert (tmp_path / "runs" / "equivariance-tiny-cnn" / "equivariance-tiny-cnn.json").is_file()
