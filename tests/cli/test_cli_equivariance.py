"""``epdo equivariance`` and the image rotation it is built on."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from epdo.cli.common import disk_mask, rotate
from epdo.cli.equivariance import invariance_errors, make_inputs


def test_rotate_conventions():
    x = torch.rand(3, 2, 28, 28)
    # counter-clockwise in the (x right, y up) frame: the top-right corner goes to the top-left
    e = torch.zeros(1, 1, 5, 5)
    e[0, 0, 0, 4] = 1.0
    assert rotate(e, 90.0)[0, 0, 0, 0] == 1.0
    assert torch.equal(rotate(x, 360.0), x) and torch.equal(rotate(x, -90.0), rotate(x, 270.0))
    # the interpolating path agrees with rot90 at multiples of 90 degrees (pixel centres map to pixel centres)
    for a in (90.0, 180.0, 270.0):
        per_image = torch.full((3,), a)
        torch.testing.assert_close(rotate(x, per_image), rotate(x, a), atol=1e-5, rtol=0)


def test_rotate_composes_on_smooth_images():
    x = make_inputs("smooth", 2, (1, 28, 28), seed=0)
    two_steps = rotate(rotate(x, 30.0), 60.0)
    i = torch.arange(28).view(-1, 1) - 13.5
    j = torch.arange(28).view(1, -1) - 13.5
    inner = ((i**2 + j**2).sqrt() <= 11).float()  # away from the corners that rotate out of the image
    assert ((two_steps - rotate(x, 90.0)).abs() * inner).max() < 0.03  # bilinear interpolation error only (measured 0.015)


class _RadialPool(nn.Module):
    """Logits that are exactly invariant under grid rotations: means over rings."""

    def forward(self, x):
        h, w = x.shape[-2:]
        i = torch.arange(h).view(-1, 1) - (h - 1) / 2
        j = torch.arange(w).view(1, -1) - (w - 1) / 2
        ring = (i**2 + j**2).sqrt().round().long().clamp(max=9)
        return torch.stack([(x[:, 0] * (ring == r)).sum((-2, -1)) for r in range(10)], 1) + 1.0


def test_invariance_errors_of_an_invariant_model():
    x = make_inputs("smooth", 4, (1, 28, 28), seed=1)
    rows = invariance_errors(_RadialPool(), x, [0.0, 45.0, 90.0, 180.0, 270.0])
    exact = [r["max_rel_error"] for r in rows if r["angle_deg"] % 90 == 0]
    assert max(exact) < 1e-6
    assert 0 < rows[1]["max_rel_error"] < 0.1  # interpolation only


def test_equivariance_command(cli, tmp_path, capsys):
    assert cli("-q", "equivariance", "--model", "tiny-cnn", "--angles", "4", "--n", "4", "--out", tmp_path) == 0
    out = capsys.readouterr().out
    assert "angle(deg)" in out and "90.00" in out
    res = json.loads((tmp_path / "equivariance-tiny-cnn.json").read_text())
    assert [r["angle_deg"] for r in res["angles"]] == [0.0, 90.0, 180.0, 270.0]
    assert res["angles"][0]["max_rel_error"] == 0.0
    assert res["angles"][1]["mean_rel_error"] > 1e-4  # a plain CNN is not invariant
    assert (tmp_path / "equivariance-tiny-cnn.png").exists()


def test_equivariance_of_a_checkpoint_on_data(cli, trained_run, tmp_path):
    assert cli("-q", "equivariance", "--checkpoint", trained_run / "best.pt", "--input", "data", "--n", "8",
               "--angles", "3", "--out", tmp_path) == 0
    res = json.loads((tmp_path / "equivariance-tiny-cnn.json").read_text())
    assert res["n"] == 8 and len(res["angles"]) == 3 and res["source"].endswith("best.pt")


def test_equivariance_errors(cli, capsys):
    with pytest.raises(SystemExit):
        cli("equivariance", "--angles", "4")  # --model or --checkpoint required
    assert cli("equivariance", "--model", "tiny-cnm") == 2
    assert "Did you mean: tiny-cnn" in capsys.readouterr().err
