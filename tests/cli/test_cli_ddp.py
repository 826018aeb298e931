"""``torchrun --nproc_per_node=2 -m epdo train``: DDP on CPU (gloo) matches a single process.

Same global batch size (64 = 2 x 32) and the same DistributedSampler permutation, so each global batch
holds the same images in both runs and DDP's averaged gradient equals the single-process mean-loss
gradient. The model has no batch norm (per-process batch statistics would differ: SyncBatchNorm, which
epdo uses on GPUs, has no CPU kernels) and no dropout (masks are drawn per process). What remains is
float32 summation order (gradient all-reduce of two half-batch means vs one mean; metric all-reduce),
about 1e-7 relative per step, so losses must agree to rtol 1e-5 over the 8 Adam steps and error rates
to one image (0.5% of 200).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")

ARGS = ["--model", "tiny-cnn", "--model-kw", "batch_norm=False", "--model-kw", "dropout=0.0", "--data", "sample",
        "--limit-train", "256", "--limit-eval", "200", "--epochs", "2", "--batch-size", "64", "--seed", "0"]


def test_two_process_gloo_matches_single_process(cli, metrics_of, tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "epdo", "-q", "train", *ARGS, "--out", str(ddp)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert cli("-q", "train", *ARGS, "--out", single) == 0

    a, b = metrics_of(ddp), metrics_of(single)
    assert len(a) == len(b) == 2  # only rank 0 writes
    for ra, rb in zip(a, b):
        assert ra["epoch"] == rb["epoch"] and ra["lr"] == rb["lr"]
        for key in ("train_loss", "valid_loss"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5), key
        for key in ("train_acc", "valid_error"):
            assert abs(ra[key] - rb[key]) <= 100 / 200 + 1e-9, key
    res_a = json.loads((ddp / "results.json").read_text())
    res_b = json.loads((single / "results.json").read_text())
    assert res_a["machine"]["world_size"] == 2 and res_b["machine"]["world_size"] == 1
    assert abs(res_a["test_error"] - res_b["test_error"]) <= 100 / 200 + 1e-9
    wa = torch.load(ddp / "last.pt", weights_only=True)["state_dict"]
    wb = torch.load(single / "last.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith("module.") for k in wa)
    for k in wb:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
