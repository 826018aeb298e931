"""``epdo evaluate``: test error of a checkpoint, accuracy vs rotation, perturbation scenarios."""

from __future__ import annotations

import json

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

    import epdo.cli.evaluate

    monkeypatch.setattr(epdo.cli.evaluate, "apply_scenario", apply_scenario)
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
    for scenario in ("test", "sca"):
        assert cli("-q", "evaluate", "--checkpoint", trained_run / "best.pt", "--limit", "100", "--scenario", scenario,
                   "--draws", "2", "--out", tmp_path) == 0
    test = json.loads((tmp_path / "eval-sample-test-test.json").read_text())
    assert test["scenario"]["errors"][0] == test["scenario"]["errors"][1] == test["error"]  # "test" is unperturbed


def test_default_output_is_a_run_folder_not_the_checkpoint_folder(cli, trained_run, tmp_path, monkeypatch, capsys):
    """Without --out the JSON/PNG go to runs/evaluate-<model> under the working directory; the checkpoint's
    folder (which may be the source tree or the installed package) gets nothing."""
    before = sorted(p.name for p in trained_run.iterdir())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli("-q", "evaluate", "--checkpoint", trained_run / "best.pt", "--limit", "50", "--rotations", "2") == 0
    assert sorted(p.name for p in trained_run.iterdir()) == before
    dest = work / "runs" / "evaluate-tiny-cnn"
    assert sorted(p.name for p in dest.iterdir()) == ["eval-sample-test-rot2.json", "eval-sample-test-rot2.png"]
    out = capsys.readouterr().out
    assert "eval-sample-test-rot2.json" in out


def test_progress_and_results_streams(cli, trained_run, tmp_path, capsys):
    """Results (the rotation table, row by row) on stdout; progress bars on stderr."""
    assert cli("evaluate", "--checkpoint", trained_run / "best.pt", "--limit", "60", "--batch-size", "20",
               "--rotations", "3", "--progress", "--out", tmp_path) == 0
    cap = capsys.readouterr()
    assert "angle(deg)  accuracy(%)" in cap.out and "120.00" in cap.out
    assert "angle 3/3:" in cap.err and "/60 [" in cap.err and "angle 3/3" not in cap.out
    assert "evaluating tiny-cnn on sample (replica) (test, 60 images; 4 passes)" in cap.err


def test_rotated_accuracy_uses_the_library_rotation(cli, trained_run, tmp_path, monkeypatch):
    """The accuracy at angle a is the accuracy on epdo.data.rotate_images(x, a) (one rotation in the library)."""
    import math

    import epdo.models as models
    from epdo.data import get_dataset, rotate_images

    assert cli("-q", "evaluate", "--checkpoint", trained_run / "best.pt", "--limit", "100", "--rotations", "8",
               "--out", tmp_path) == 0
    rot = json.loads((tmp_path / "eval-sample-test-rot8.json").read_text())["rotations"]
    model = models.load(trained_run / "best.pt")
    ds = get_dataset("sample", "test")
    x, y = ds.images[:100], ds.labels[:100]
    with torch.no_grad():
        acc = 100.0 * (model(rotate_images(x, math.radians(135.0))).argmax(1) == y).double().mean().item()
    assert rot["angles_deg"][3] == 135.0 and rot["accuracy"][3] == pytest.approx(acc, abs=1e-9)


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


def test_rotation_plot_has_a_sensible_floor(monkeypatch, tmp_path):
    """98.2-98.3 % accuracies on an axis from 50 to 100 %, not autoscaled to look like a cliff; low accuracies on
    an axis from 0 with the chance level drawn."""
    import epdo.cli.evaluate as ev

    figs = []
    monkeypatch.setattr(ev, "save_figure", lambda fig, path: figs.append(fig))
    ev._plot_rotations([0.0, 90.0, 180.0, 270.0], [98.2, 98.3, 98.25, 98.22], tmp_path / "a.png", "m on d", 10)
    ax = figs[-1].axes[0]
    assert ax.get_ylim()[0] == 50.0 and ax.get_ylim()[1] >= 100.0 and ax.get_title() == "m on d"
    ev._plot_rotations([0.0, 180.0], [11.0, 8.0], tmp_path / "b.png", "m on d", 10)
    ax = figs[-1].axes[0]
    assert ax.get_ylim()[0] == 0.0
    assert any(list(line.get_ydata()) == [10.0, 10.0] for line in ax.get_lines())  # chance level


def test_recalibrate_bn_evaluates_with_the_recalibrated_statistics(cli, trained_run, tmp_path):
    """--recalibrate-bn N: the reported error is that of the checkpoint after recalibrate_batchnorm on the first N
    training samples (computed here independently), and the JSON says so."""
    from epdo import models
    from epdo.cli.common import dataset_arrays
    from epdo.data import get_dataset
    from epdo.nn import recalibrate_batchnorm

    out = tmp_path / "ev"
    assert cli("-q", "evaluate", "--checkpoint", trained_run / "best.pt", "--limit", "200", "--recalibrate-bn", "100",
               "--batch-size", "64", "--out", out) == 0
    res = json.loads(next(out.glob("eval-*.json")).read_text())
    assert res["recalibrate_bn"] == 100
    model = models.load(trained_run / "best.pt")
    x, _ = dataset_arrays(get_dataset("sample", "train"), 100)
    recalibrate_batchnorm(model, [x[i:i + 64] for i in range(0, 100, 64)])
    xt, yt = dataset_arrays(get_dataset("sample", "test"), 200)
    with torch.no_grad():
        err = 100.0 * float((model(xt).argmax(1) != yt).float().mean())
    assert abs(res["error"] - err) < 1e-6
