"""``epdo train``: outputs, the registry's recipe, exact resume (also after a crash or a kill), user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import epdo.models as models
from epdo.cli.train import FAIL_AFTER_EPOCH_ENV, SimulatedFailure, build_optimizer


def _load(path):
    return torch.load(path, weights_only=True)


def _assert_same_final_state(a: Path, b: Path) -> None:
    ca, cb = _load(a / "last.pt"), _load(b / "last.pt")
    assert ca["epoch"] == cb["epoch"]
    for k, v in ca["state_dict"].items():
        assert torch.equal(v, cb["state_dict"][k]), k
    for i, s in ca["optimizer"]["state"].items():
        for k, v in s.items():
            assert torch.equal(v, cb["optimizer"]["state"][i][k]), (i, k)
    assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])
    ra, rb = json.loads((a / "results.json").read_text()), json.loads((b / "results.json").read_text())
    assert (ra["test_error"], ra["test_loss"], ra["best_epoch"]) == (rb["test_error"], rb["test_loss"], rb["best_epoch"])


def test_outputs_and_recipe(trained_run, metrics_of):
    rows = metrics_of(trained_run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "train_acc", "valid_loss", "valid_error"}
    recipe = models.get_model_info("tiny-cnn").train
    assert [r["lr"] for r in rows] == [recipe.lr * recipe.lr_factor(e) for e in (0, 1)] == [0.01, 0.005]
    assert {p.name for p in trained_run.iterdir()} >= {"last.pt", "best.pt", "metrics.jsonl", "results.json", "curves.png"}
    assert not [p for p in trained_run.iterdir() if p.name.endswith(".tmp")]

    res = json.loads((trained_run / "results.json").read_text())
    assert res["command"].startswith("epdo -q train --model tiny-cnn") and res["seed"] == 0 and res["epochs"] == 2
    assert res["dataset"] == {"name": "sample", "dataset_name": "sample", "is_replica": True, "label": "sample (replica)"}
    assert res["params"] == models.count_parameters(models.create("tiny-cnn"))
    assert res["n_train"] == 256 and res["n_valid"] == 200 and res["n_test"] == 200
    assert res["machine"]["cpu_count"] and res["machine"]["torch_threads"] >= 1 and res["machine"]["torch_version"] == torch.__version__
    from epdo.nn._epdo_kernels import resolve_backend

    # the NeuralEPDO implementation the run used, as backend="auto" resolves it on CPU here
    assert res["machine"]["neural_epdo_kernel"] == resolve_backend("auto", torch.zeros(1))
    assert "cpu_model" in res["machine"]
    assert res["train"]["optimizer"] == recipe.optimizer and res["train"]["batch_size"] == recipe.batch_size
    best = min(rows, key=lambda r: r["valid_error"])
    assert res["best_epoch"] == best["epoch"] and res["best_valid_error"] == best["valid_error"]
    assert _load(trained_run / "best.pt")["epoch"] == best["epoch"]
    assert 0.0 <= res["test_error"] <= 100.0 and res["wall_time_s"] > 0

    ckpt = _load(trained_run / "last.pt")  # the full training state, weights_only-loadable
    assert ckpt["epoch"] == 2 and ckpt["model"] == "tiny-cnn" and ckpt["epdo_version"]
    assert {"optimizer", "scheduler", "rng", "history", "config", "metrics"} <= set(ckpt)
    assert isinstance(ckpt["rng"]["torch"], torch.Tensor)


def test_resume_reaches_identical_metrics(cli, fast_args, trained_run, metrics_of, tmp_path):
    out = tmp_path / "run"
    assert cli("-q", "train", *fast_args, "--epochs", "1", "--out", out) == 0
    assert len(metrics_of(out)) == 1
    assert cli("-q", "train", "--resume", "--epochs", "2", "--out", out) == 0  # settings come from last.pt
    assert metrics_of(out) == metrics_of(trained_run)  # bit-for-bit, except wall time
    _assert_same_final_state(out, trained_run)
    assert json.loads((out / "results.json").read_text())["resumed_at_epochs"] == [1]


def test_resume_after_simulated_crash(cli, fast_args, trained_run, metrics_of, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv(FAIL_AFTER_EPOCH_ENV, "1")
    with pytest.raises(SimulatedFailure):
        cli("-q", "train", *fast_args, "--epochs", "2", "--out", out)
    monkeypatch.delenv(FAIL_AFTER_EPOCH_ENV)
    assert len(metrics_of(out)) == 1 and not (out / "results.json").exists()
    # a stray line of an epoch after the checkpoint (killed between the two writes) is dropped on resume
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "partial": true}\n')
    assert cli("-q", "train", *fast_args, "--epochs", "2", "--out", out, "--resume") == 0
    assert metrics_of(out) == metrics_of(trained_run)
    _assert_same_final_state(out, trained_run)


def test_resume_after_kill(cli, fast_args, trained_run, metrics_of, tmp_path):
    """SIGKILL a training subprocess as soon as its first checkpoint exists, then resume."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))  # same float arithmetic as this process
    proc = subprocess.Popen([sys.executable, "-m", "epdo", "-q", "train", *fast_args, "--epochs", "2", "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (out / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and (out / "last.pt").exists(), err.decode()
    _load(out / "last.pt")  # never a half-written file
    assert cli("-q", "train", *fast_args, "--epochs", "2", "--out", out, "--resume") == 0
    assert metrics_of(out) == metrics_of(trained_run)
    _assert_same_final_state(out, trained_run)


def test_options_override_the_recipe(cli, fast_args, tmp_path):
    out = tmp_path / "run"
    argv = [*fast_args, "--limit-train", "64", "--epochs", "1", "--out", out, "--optimizer", "sgd", "--lr", "0.1",
            "--schedule", "cosine", "--batch-size", "16", "--weight-decay", "0", "--augment-rotation", "--seed", "3",
            "--model-kw", "channels=[4, 8, 8]", "--progress"]
    assert cli("-q", "train", *argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["train"]["optimizer"] == "sgd" and res["train"]["lr"] == 0.1 and res["train"]["schedule"] == "cosine"
    assert res["train"]["augment_rotation"] is True and res["seed"] == 3 and res["n_train"] == 64
    assert res["model_kwargs"] == {"channels": [4, 8, 8]}
    assert models.load(out / "best.pt").features[0].out_channels == 4


def test_recalibrate_bn_leaves_the_eval_mode_statistics_in_the_checkpoint(cli, fast_args, tmp_path):
    """--recalibrate-bn N: the checkpoint's running statistics are recalibrate_batchnorm's on the first N training
    samples with the checkpoint's weights (so evaluation normalises what eval mode feeds each layer)."""
    from epdo.cli.common import dataset_arrays
    from epdo.data import get_dataset
    from epdo.nn import FieldBatchNorm, recalibrate_batchnorm

    out = tmp_path / "run"
    assert cli("-q", "train", *fast_args, "--limit-train", "64", "--epochs", "1", "--out", out,
               "--recalibrate-bn", "40", "--eval-batch-size", "16") == 0
    res = json.loads((out / "results.json").read_text())
    assert res["train"]["recalibrate_bn"] == 40
    saved = models.load(out / "last.pt")
    kinds = (FieldBatchNorm, torch.nn.modules.batchnorm._BatchNorm)
    bns = [m for m in saved.modules() if isinstance(m, kinds)]
    assert bns
    x, _ = dataset_arrays(get_dataset("sample", "train"), 40)
    fresh = models.load(out / "last.pt")
    recalibrate_batchnorm(fresh, [x[i:i + 16] for i in range(0, 40, 16)])
    for a, b in zip(bns, [m for m in fresh.modules() if isinstance(m, kinds)], strict=True):
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-6, atol=1e-7)
        assert int(a.num_batches_tracked) == 3  # ceil(40 / 16) recalibration batches, not the training steps


def test_weight_decay_groups():
    model = models.create("tiny-cnn")
    recipe = models.TrainDefaults(weight_decay=0.1, decay_scope="weights")
    opt = build_optimizer(model, recipe)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    assert decayed == {"features.0.weight", "features.4.weight", "features.8.weight"}  # convs; not BN, not the classifier
    assert len(build_optimizer(model, recipe.replace(decay_scope="all")).param_groups) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "vanila-cnn"], "unknown model 'vanila-cnn'. Did you mean: vanilla-cnn"),
        (["--data", "sample"], "--model is required"),
        (["--model", "tiny-cnn", "--data", "mnist", "--data-dir", "/nonexistent/epdo-data"], "/nonexistent/epdo-data"),
        (["--model", "tiny-cnn", "--model-kw", "dropout"], "--model-kw expects KEY=VALUE"),
        (["--model", "tiny-cnn", "--model-kw", "activation='gelu'"], "activation must be one of"),
        (["--model", "tiny-cnn", "--batch-size", "0"], "batch_size must be positive"),
        (["--model", "tiny-cnn", "--data", "sample", "--model-kw", "chanels=[4]"],
         "--model-kw: model 'tiny-cnn' accepts no keyword 'chanels'; accepted: "),
        (["--model", "tiny-cnn", "--epochs", "0"], "epochs must be positive"),
        (["--model", "tiny-cnn", "--dist-timeout", "0"], "--dist-timeout must be a positive number of seconds, got 0"),
    ],
)
def test_user_errors_are_one_line(cli, capsys, tmp_path, argv, message):
    assert cli("train", *argv, "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("epdo train: error: ") and message in err[-1], err
    assert not any("Traceback" in line for line in err)
    assert not (tmp_path / "run").exists()  # a run that never started leaves no empty --out folder


def test_unknown_model_keyword_lists_the_accepted_ones(cli, capsys, tmp_path):
    assert cli("train", "--model", "tiny-cnn", "--data", "sample", "--model-kw", "chanels=[4]", "--out", tmp_path / "r") == 2
    err = capsys.readouterr().err
    accepted = err.split("accepted: ")[1].strip().split(", ")
    assert {"channels", "dropout", "kernel_size", "batch_norm"} <= set(accepted)


def test_metrics_go_to_stdout_and_the_log_file(cli, fast_args, tmp_path, capsys):
    """``epdo train ... > log`` captures the per-epoch lines; progress bars go to stderr only; "1 epoch"."""
    out = tmp_path / "run"
    assert cli("train", *fast_args, "--limit-train", "64", "--epochs", "1", "--out", out, "--progress") == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert any(line.startswith("epoch 1/1  lr ") and "valid loss" in line for line in lines)
    assert any(line.startswith("test error ") for line in lines)
    assert ", 1 epoch, batch" in cap.out and "1 epochs" not in cap.out
    assert "epoch 1/1:" in cap.err and "batch/s" in cap.err  # the tqdm bar
    assert "epoch 1/1:" not in cap.out and "\r" not in cap.out
    log = (out / "train.log").read_text().splitlines()
    assert log == [line for line in lines if not line.startswith("wrote ")]


def test_ctrl_c_says_how_to_resume(cli, fast_args, trained_run, metrics_of, tmp_path, capsys, monkeypatch):
    """Ctrl-C after the first epoch prints the exact command that resumes; running it finishes the run as if it
    had never stopped."""
    import shlex

    import epdo.cli.train as train

    out = tmp_path / "run"
    real = train.append_jsonl

    def interrupt_after_epoch_1(path, row):
        real(path, row)
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "append_jsonl", interrupt_after_epoch_1)
    assert cli("-q", "train", *fast_args, "--epochs", "2", "--out", out) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("epdo train: interrupted; ") and "resume with: epdo " in err, err
    command = err.split("resume with: epdo ", 1)[1]
    argv = shlex.split(command)
    assert argv[-1] == "--resume" and str(out) in argv
    monkeypatch.setattr(train, "append_jsonl", real)
    assert cli(*argv) == 0
    assert metrics_of(out) == metrics_of(trained_run)


def test_curves_have_markers_integer_epochs_linear_error_and_a_title(fast_args, tmp_path, monkeypatch):
    import epdo.cli.train as train

    figs = []
    monkeypatch.setattr(train, "save_figure", lambda fig, path: figs.append(fig))
    row = {"epoch": 1, "train_loss": 2.2, "valid_loss": 2.3, "train_acc": 19.0, "valid_error": 86.0}
    train._plot_curves([row], tmp_path / "c.png", "tiny-cnn on sample (replica)", "epdo train --model tiny-cnn")
    fig = figs[-1]
    assert "tiny-cnn on sample (replica)" in fig._suptitle.get_text() and "epdo train" in fig._suptitle.get_text()
    for ax in fig.axes:
        assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0.0
        assert list(ax.get_xticks()) == [1.0]  # no fractional epochs
        assert all(line.get_marker() == "o" for line in ax.get_lines())  # one epoch still shows points
    rows = [dict(row, epoch=e) for e in range(1, 31)]
    train._plot_curves(rows, tmp_path / "c.png", "t")
    assert all(float(t).is_integer() for t in figs[-1].axes[1].get_xticks())


def test_resume_errors(cli, capsys, fast_args, trained_run, tmp_path):
    # an existing run is never overwritten without --resume
    assert cli("train", *fast_args, "--out", trained_run) == 2
    assert "already holds a run" in capsys.readouterr().err
    # resuming with other settings names the checkpoint
    assert cli("train", "--resume", "--lr", "0.5", "--out", trained_run) == 2
    assert f"{trained_run / 'last.pt'}: --lr 0.5 differs" in capsys.readouterr().err
    assert cli("train", "--resume", "--model", "vanilla-cnn", "--out", trained_run) == 2
    assert "--model vanilla-cnn differs from the checkpoint's 'tiny-cnn'" in capsys.readouterr().err
    # a corrupt last.pt
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "last.pt").write_bytes(b"\x00" * 100)
    assert cli("train", "--resume", "--out", bad) == 2
    assert f"{bad / 'last.pt'}: not a readable checkpoint" in capsys.readouterr().err


def test_choices_come_from_the_registries():
    """--data, --optimizer and --schedule offer exactly the names of epdo.data, epdo.optim (one registry each)."""
    import argparse

    import epdo.data
    import epdo.optim
    from epdo.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for cmd in ("train", "evaluate", "equivariance", "pde-show"):
        opts = {a.dest: a for a in sub.choices[cmd]._actions}
        assert tuple(opts["data"].choices) == epdo.data.DATASETS, cmd
    opts = {a.dest: a for a in sub.choices["train"]._actions}
    assert tuple(opts["optimizer"].choices) == tuple(epdo.optim.OPTIMIZERS)
    assert tuple(opts["schedule"].choices) == epdo.optim.SCHEDULES
    # every optimizer the registry offers builds, with the recipe's learning rate
    for name in epdo.optim.OPTIMIZERS:
        opt = epdo.optim.build_optimizer(models.create("tiny-cnn"), models.TrainDefaults(optimizer=name, lr=0.25))
        assert all(g["lr"] == 0.25 for g in opt.param_groups)


def test_help_has_no_rest_markup(cli, capsys):
    for cmd in ("train", "evaluate", "equivariance", "pde-show", "models", "build-ext"):
        with pytest.raises(SystemExit):
            cli(cmd, "--help")
        out = capsys.readouterr().out
        assert "``" not in out and ":func:" not in out and ":mod:" not in out, cmd


def test_bad_choice_exits_2(cli):
    with pytest.raises(SystemExit) as ei:
        cli("train", "--model", "tiny-cnn", "--data", "not-a-dataset", "--out", "x")
    assert ei.value.code == 2
