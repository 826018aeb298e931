"""``epdo evaluate``: test error of a checkpoint, accuracy vs rotation, perturbation scenarios."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch


def test_test_error_matches_training_results(cli, trained_run, tmp_path, capsys):
    assert cli("evaluate", "--checkpoint", trained_run / "best.pt", "--limit", "200", "--out", tmp_path) == 0
    res = json.loads((tmp_path / "eval-sample-test.json").read_text())  # data set taken from the checkpoint
    train_res = json.loads((trained_run / "results.json").read_text())
    assert res["error"] == train_res["test_error"] and res["n"] == 200 and res["dataset"]["is_replica"]
    assert "error" in capsys.readouterr().out


def test_rotations(cli, trained_run, tmp_path):
    assert cli("-q", "evaluate", "--checkpoint", trained_run / "best.pt", "--data", "sample", "--split", "valid",
               "--limit", "100", "--rotations", "6", "--out", tmp_path) == 0
    res = json.loads((tmp_path / "eval-sample-valid-rot6.json").read_text())
    rot = res["rotations"]
    assert rot["angles_deg"] == [0.0, 60.0, 120.0, 180.0, 240.0, 300.0]
    assert rot["accuracy"][0] == pytest.approx(100.0 - res["error"])
    assert all(0.0 <= a <= 100.0 for a in rot["accuracy"])
    assert (tmp_path / "eval-sample-valid-rot6.png").stat().st_size > 1000


def _fake_perturb(monkeypatch):
    calls = []

    def apply_scenario(images, scenario, generator):
        noise = torch.rand(images.shape, generator=generator)
        calls.append((scenario, float(noise[0, 0, 0, 0])))
        return (images + 0.2 * noise).clamp(0, 1)

    mod = types.ModuleType("epdo.data.perturb")
    mod.apply_scenario = apply_scenario
    monkeypatch.setitem(sys.modules, "epdo.data.perturb", mod)
    return calls


def test_scenario_mean_and_std_over_draws(cli, trained_run, tmp_path, monkeypatch):
    calls = _fake_perturb(monkeypatch)
    argv = ["-q", "evaluate", "--checkpoint", trained_run / "best.pt", "--limit", "200", "--scenario", "iso", "--draws", "4", "--seed", "5"]
    assert cli(*argv, "--out", tmp_path / "a") == 0
    assert cli(*argv, "--out", tmp_path / "b") == 0
    assert [c[0] for c in calls] == ["iso"] * 8
    assert calls[:4] == calls[4:] and len({c[1] for c in calls[:4]}) == 4  # seeded; each draw new random numbers
    a = json.loads((tmp_path / "a" / "eval-sample-test-iso.json").read_text())["scenario"]
    b = json.loads((tmp_path / "b" / "eval-sample-test-iso.json").read_text())["scenario"]
    assert a == b and a["draws"] == 4 and a["std_ddof"] == 1
    errs = a["errors"]
    assert len(errs) == 4
    mean = sum(errs) / 4
    assert a["mean_error"] == pytest.approx(mean)
    assert a["std_error"] == pytest.approx((sum((e - mean) ** 2 for e in errs) / 3) ** 0.5)


def test_scenario_with_the_real_perturbations(cli, trained_run, tmp_path):
    pytest.importorskip("epdo.data.perturb")
    for scenario in ("test", "sca"):
        assert cli("-q", "evaluate", "--checkpoint", trained_run / "best.pt", "--limit", "100", "--scenario", scenario,
                   "--draws", "2", "--out", tmp_path) == 0
    test = json.loads((tmp_path / "eval-sample-test-test.json").read_text())
    assert test["scenario"]["errors"][0] == test["scenario"]["errors"][1] == test["error"]  # "test" is unperturbed


def test_missing_perturb_module_is_a_user_error(cli, trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "epdo.data.perturb", None)  # import fails
    assert cli("evaluate", "--checkpoint", trained_run / "best.pt", "--scenario", "iso", "--out", tmp_path) == 2
    assert "--scenario needs epdo.data.perturb" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"garbage", None])
def test_bad_checkpoints(cli, tmp_path, capsys, content):
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    assert cli("evaluate", "--checkpoint", path, "--data", "sample") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("epdo evaluate: error: ") and str(path) in err and "\n" not in err


def test_bad_options(cli, trained_run, capsys):
    assert cli("evaluate", "--checkpoint", trained_run / "best.pt", "--rotations", "0") == 2
    assert cli("evaluate", "--checkpoint", trained_run / "best.pt", "--rotations", "4", "--scenario", "iso") == 2
    assert cli("evaluate", "--checkpoint", trained_run / "best.pt", "--device", "cuda:7" if not torch.cuda.is_available() else "tpu") == 2
    assert capsys.readouterr().err.count("error:") == 3
