"""``epdo train`` on a streaming image folder (epdo.cli.stream) and ``epdo models --flops``: training lowers the
loss, bit-exact mid-epoch resume on the CPU, two gloo ranks equal one process with the same global batch
(``--accumulate 2``: the same micro-batches), a killed rank ends the run within a bounded time, unreadable images
skipped and counted, bf16 / fp16 autocast with channels_last, and the clear errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("PIL", reason="the image pipeline decodes with Pillow (pip install 'epdo[images]')")

from epdo.cli.stream import FAIL_AFTER_STEP_ENV, SimulatedStepFailure, global_batch_parts  # noqa: E402
from epdo.data.imagefolder import write_synthetic_folder  # noqa: E402

from .conftest import read_jsonl  # noqa: E402

MODEL = ["--model", "res26", "--model-kw", "widths=(4,4,4,4)", "--model-kw", "stem_width=4",
         "--model-kw", "num_classes=3"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("folder"), classes=3, per_class=8, size=(36, 36))


def _args(folder, out, *extra):
    return [*MODEL, "--data", "imagefolder", "--data-dir", str(folder), "--setting", "augment-33", "--out", str(out),
            "--optimizer", "sgd", "--lr", "0.05", "--batch-size", "8", "--seed", "0", "--log-every", "1", *extra]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT", FAIL_AFTER_STEP_ENV)}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_global_batches_split_into_equal_parts():
    plan = global_batch_parts(10, 4, 2, seed=0, epoch=0)
    assert len(plan) == 2 and all(len(p) == 2 for b in plan for p in b)
    flat = [i for b in plan for p in b for i in p]
    assert len(set(flat)) == 8  # the incomplete last batch is dropped, nothing repeats
    assert plan == global_batch_parts(10, 4, 2, seed=0, epoch=0) != global_batch_parts(10, 4, 2, seed=0, epoch=1)


def test_training_lowers_the_loss_and_writes_metrics(cli, folder, tmp_path):
    out = tmp_path / "run"
    assert cli("-q", "train", *_args(folder, out, "--epochs", "3", "--warmup-epochs", "0.5", "--num-workers", "2",
                                     "--label-smoothing", "0.1")) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["images_per_s"] > 0 for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    steps = read_jsonl(out / "steps.jsonl")
    assert [s["step"] for s in steps] == list(range(1, 10)) and steps[0]["lr"] < steps[1]["lr"]  # warmup
    res = json.loads((out / "results.json").read_text())
    assert res["steps"] == 9 and res["stream"]["label_smoothing"] == 0.1 and 0 <= res["test_error"] <= 100
    # epdo evaluate streams the folder too and finds the best epoch's validation error again
    assert cli("-q", "evaluate", "--checkpoint", out / "best.pt", "--data-dir", folder, "--split", "valid",
               "--num-workers", "2", "--out", tmp_path / "ev") == 0
    ev = json.loads((tmp_path / "ev" / "eval-imagefolder-valid.json").read_text())
    assert ev["n"] == 24 and ev["error"] == pytest.approx(res["best_valid_error"], abs=1e-9)


def test_resume_mid_epoch_is_bit_exact(cli, folder, tmp_path, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    extra = ("--epochs", "2", "--checkpoint-every", "1")
    assert cli("-q", "train", *_args(folder, full, *extra)) == 0
    monkeypatch.setenv(FAIL_AFTER_STEP_ENV, "4")  # epoch 2, after its first of 3 steps
    with pytest.raises(SimulatedStepFailure):
        cli("-q", "train", *_args(folder, cut, *extra))
    monkeypatch.delenv(FAIL_AFTER_STEP_ENV)
    ck = torch.load(cut / "last.pt", weights_only=True)
    assert ck["step"] == 4 and ck["epoch"] == 1 and ck["batch_in_epoch"] == 1
    assert cli("-q", "train", *_args(folder, cut, *extra), "--resume") == 0
    a = torch.load(full / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(cut / "last.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = read_jsonl(full / "metrics.jsonl"), read_jsonl(cut / "metrics.jsonl")
    assert [r["valid_loss"] for r in ra] == [r["valid_loss"] for r in rb]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_on_shards_is_bit_exact(cli, folder, tmp_path, monkeypatch, workers):
    """Webdataset shards (shuffled shard order and sample buffer, per-sample augmentation seeds, DataLoader
    workers taking turns): a run cut after a mid-epoch step and resumed ends with the same weights."""
    from epdo.data.imagefolder import ImageFolder, ImageTransform, write_shards

    data = tmp_path / "shards"
    for split in ("train", "val"):
        write_shards(ImageFolder(folder / split, ImageTransform(train=False)), data / split, per_shard=5)
    full, cut = tmp_path / "full", tmp_path / "cut"
    batch = 8 if workers == 0 else 4  # 24 images: 3 steps per epoch, or 6 (each worker 3 turns of 4)
    steps = 24 // batch
    args = ["--epochs", "2", "--checkpoint-every", "1", "--num-workers", str(workers), "--batch-size", str(batch)]

    def run(out, *more):
        return cli("-q", "train", *_args(data, out, *args, *more))

    assert run(full) == 0
    done = 1 if workers == 0 else 3  # steps of epoch 2 before the cut (with workers: odd, worker 1 goes next)
    monkeypatch.setenv(FAIL_AFTER_STEP_ENV, str(steps + done))
    with pytest.raises(SimulatedStepFailure):
        run(cut)
    monkeypatch.delenv(FAIL_AFTER_STEP_ENV)
    ck = torch.load(cut / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["batch_in_epoch"] == done
    assert run(cut, "--resume") == 0
    a = torch.load(full / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(cut / "last.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # fails if the skip were wrong
    ra, rb = read_jsonl(full / "metrics.jsonl"), read_jsonl(cut / "metrics.jsonl")
    assert [r["valid_loss"] for r in ra] == [r["valid_loss"] for r in rb]


def test_shard_skip_follows_the_dataloader_round_robin(folder, tmp_path):
    """set_start(b, size) leaves exactly the batches a DataLoader yields after its first b (0 and 2 workers)."""
    from torch.utils.data import DataLoader

    from epdo.data.imagefolder import ImageFolder, ImageShards, ImageTransform, collate_skip, write_shards

    write_shards(ImageFolder(folder / "train", ImageTransform(train=False)), tmp_path / "train", per_shard=5)
    classes = ImageFolder(folder / "train", ImageTransform(train=False)).classes
    for workers in (0, 2):
        def batches(skip):
            ds = ImageShards(tmp_path / "train", ImageTransform(16, train=True), classes, seed=3)
            ds.set_start(skip, 3)
            dl = DataLoader(ds, batch_size=3, drop_last=True, num_workers=workers, collate_fn=collate_skip)
            return [b[0] for b in dl]

        everything = batches(0)
        assert len(everything) == 8
        for skip in (1, 3, 5):
            rest = batches(skip)
            assert len(rest) == len(everything) - skip
            assert all(torch.equal(a, b) for a, b in zip(rest, everything[skip:]))


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(cli, folder, tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                        "epdo", "-q", "train", *_args(folder, ddp, "--epochs", "2")],
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert cli("-q", "train", *_args(folder, single, "--epochs", "2", "--accumulate", "2")) == 0
    a, b = read_jsonl(ddp / "metrics.jsonl"), read_jsonl(single / "metrics.jsonl")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
        assert ra["train_acc"] == pytest.approx(rb["train_acc"], abs=1e-9)
    wa = torch.load(ddp / "last.pt", weights_only=True)["state_dict"]
    wb = torch.load(single / "last.pt", weights_only=True)["state_dict"]
    for k in wb:  # running statistics differ (rank 0 sees half of the micro-batches); the weights do not
        if not any(s in k for s in ("running_", "num_batches")):
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    assert json.loads((ddp / "results.json").read_text())["world_size"] == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank processes through /proc")
def test_a_killed_rank_ends_the_run_within_bounded_time(folder, tmp_path):
    from .test_cli_ddp import _children, _rank_of

    out = tmp_path / "ddp"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "epdo", "-q", "train", *_args(folder, out, "--epochs", "200"),
                             "--dist-timeout", "6"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    ranks: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "steps.jsonl").exists() and (out / "steps.jsonl").read_text().count("\n") >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        ranks = {r: p for p in _children(proc.pid) if (r := _rank_of(p)) is not None}
        assert set(ranks) == {0, 1}, ranks
        os.kill(ranks[1], signal.SIGKILL)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=120)
        waited = time.monotonic() - t0
    finally:
        for p in ranks.values():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0 and waited < 60, (proc.returncode, waited)
    # rank 0's own one-line report, or torchrun's naming the killed rank (it tears the group down)
    named = "epdo train: error: rank 0:" in err or ("rank: 1" in err and "Signal 9" in err)
    assert named, err[-3000:]


def test_unreadable_images_are_skipped_and_counted(cli, folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "train" / "c0" / "0.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*c0/0\.jpg"):
        assert cli("-q", "train", *_args(bad, out, "--epochs", "1")) == 0
    row = read_jsonl(out / "metrics.jsonl")[0]
    assert row["skipped_images"] == 1  # 24 images, 3 full batches of 8: every file is read once
    assert [s["skipped_images"] for s in read_jsonl(out / "steps.jsonl")][-1] == 1


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_and_channels_last_run_on_cpu(cli, folder, tmp_path, amp):
    out = tmp_path / amp
    assert cli("-q", "train", *_args(folder, out, "--epochs", "1", "--amp", amp, "--channels-last")) == 0
    row = read_jsonl(out / "metrics.jsonl")[0]
    assert torch.isfinite(torch.tensor(row["train_loss"])) and row["train_loss"] < 5
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["scaler"] if amp == "fp16" else True


def test_clear_errors(cli, folder, tmp_path, capsys):
    assert cli("-q", "train", *_args(folder, tmp_path / "a", "--epochs", "1", "--accumulate", "3")) == 2
    assert "--batch-size 8 is not divisible by 1 process x --accumulate 3 = 3" in capsys.readouterr().err
    assert cli("-q", "train", *_args(folder, tmp_path / "b", "--epochs", "1", "--sync-bn")) == 2
    assert "torch's SyncBatchNorm runs on GPUs only" in capsys.readouterr().err
    assert cli("-q", "train", "--model", "tiny-cnn", "--data", "sample", "--limit-train", "64", "--epochs", "1",
               "--amp", "bf16", "--out", tmp_path / "c") == 2
    assert "--amp is implemented for streaming datasets" in capsys.readouterr().err


def test_sync_bn_converts_field_batch_norms_on_cpu():
    """--sync-bn on the CPU: the equivariant model's FieldBatchNorms synchronise (no torch batch norm to refuse)."""
    from epdo import models
    from epdo.cli.common import DistContext
    from epdo.cli.stream import _check_bn
    from epdo.nn import FieldBatchNorm

    model = _check_bn(models.create("res26-spdo-fd", width_factor=0.1, num_classes=3), True,
                      DistContext(device=torch.device("cpu")))
    bns = [m for m in model.modules() if isinstance(m, FieldBatchNorm)]
    assert bns and all(m.sync for m in bns)


def test_models_flops_table(cli, capsys):
    assert cli("models", "--flops", "res26", "--size", "64") == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[-2:] == ["input", "GFLOPs"]
    row = next(line for line in out.splitlines() if line.startswith("res26 "))
    assert "3x64x64" in row and "13,696,552" in row


def test_recalibrate_bn_on_the_streaming_path(cli, folder, tmp_path):
    """Map-style streaming data (an image folder, no augmentation): --recalibrate-bn N leaves in the checkpoint
    the statistics recalibrate_batchnorm gives on the first N training images."""
    from epdo import models
    from epdo.cli.common import dataset_arrays
    from epdo.data import get_dataset
    from epdo.nn import recalibrate_batchnorm

    out = tmp_path / "r"
    args = _args(folder, out, "--epochs", "1", "--recalibrate-bn", "10", "--eval-batch-size", "4")
    args[args.index("augment-33")] = "none-33"
    assert cli("-q", "train", *args) == 0
    kinds = (torch.nn.modules.batchnorm._BatchNorm,)
    saved = [m for m in models.load(out / "last.pt").modules() if isinstance(m, kinds)]
    fresh = models.load(out / "last.pt")
    x, _ = dataset_arrays(get_dataset("imagefolder", "train", data_dir=folder, setting="none-33"), 10)
    recalibrate_batchnorm(fresh, [x[i:i + 4] for i in range(0, 10, 4)])
    for a, b in zip(saved, [m for m in fresh.modules() if isinstance(m, kinds)], strict=True):
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-5, atol=1e-6)
        assert int(a.num_batches_tracked) == 3
