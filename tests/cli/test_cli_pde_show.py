"""``epdo pde-show``: the three PNGs of a trained EqPdeNet, one-line errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

PNGS = ("pde_evolution.png", "pde_trajectory.png", "pde_coefficients.png")


@pytest.fixture(scope="module")
def eqpdenet_run(tmp_path_factory) -> Path:
    """eqpdenet-h16 trained for one epoch on 256 images of the embedded sample."""
    from epdo.cli.main import main

    out = tmp_path_factory.mktemp("eqpdenet") / "run"
    argv = ["-q", "train", "--model", "eqpdenet-h16", "--data", "sample", "--limit-train", "256", "--limit-eval", "100",
            "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    return out


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pde_show_writes_three_pngs(cli, eqpdenet_run, tmp_path, capsys):
    out = tmp_path / "pictures"
    assert cli("-q", "pde-show", "--checkpoint", eqpdenet_run / "best.pt", "--out", out) == 0
    for name in PNGS:
        assert _is_png(out / name), name
    printed = capsys.readouterr().out
    assert all(str(out / name) in printed for name in PNGS)


def test_pde_show_defaults_to_a_run_folder_and_takes_indices(cli, eqpdenet_run, tmp_path, monkeypatch):
    import shutil

    ckpt = tmp_path / "ckpt" / "copy.pt"
    ckpt.parent.mkdir()
    shutil.copy(eqpdenet_run / "best.pt", ckpt)
    monkeypatch.chdir(tmp_path)
    assert cli("-q", "pde-show", "--checkpoint", ckpt, "--indices", "0", "3", "--data", "sample") == 0
    assert all(_is_png(tmp_path / "runs" / "pde-show-eqpdenet-h16" / name) for name in PNGS)
    assert [p.name for p in ckpt.parent.iterdir()] == ["copy.pt"]  # nothing beside the checkpoint


def test_pde_show_without_a_pde_layer(cli, trained_run, tmp_path, capsys):
    assert cli("pde-show", "--checkpoint", trained_run / "best.pt", "--out", tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("epdo pde-show: error:") and len(err.splitlines()) == 1
    assert "tiny-cnn" in err and "no PDE layer" in err
    assert not any((tmp_path / name).exists() for name in PNGS)


def test_pde_show_user_errors(cli, eqpdenet_run, tmp_path, capsys):
    assert cli("pde-show", "--checkpoint", tmp_path / "missing.pt") == 2
    err = capsys.readouterr().err
    assert "not found" in err and "missing.pt" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert cli("pde-show", "--checkpoint", bad) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert cli("pde-show", "--checkpoint", eqpdenet_run / "best.pt", "--out", tmp_path, "--indices", "100000") == 2
    assert "out of range" in capsys.readouterr().err
    assert cli("pde-show", "--checkpoint", eqpdenet_run / "best.pt", "--n-digits", "0") == 2
    assert "--n-digits" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("pde-show")  # --checkpoint is required
