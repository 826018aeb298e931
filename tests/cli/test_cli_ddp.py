"""``torchrun --nproc_per_node=2 -m epdo train``: DDP on CPU (gloo) matches a single process, and a stopped rank
is named within ``--dist-timeout`` (measured: rank 0 exits about 10 s after rank 1 is stopped with a 6 s timeout).

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


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _rank_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError:
        return None
    return int(env[b"RANK"]) if b"RANK" in env else None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank processes through /proc")
def test_a_stopped_rank_is_named_within_the_timeout(tmp_path):
    """SIGSTOP rank 1 after the first epoch: rank 0 gives up after --dist-timeout (not torch's 30 minutes) with a
    one-line error that names rank 1 as the one that stopped responding."""
    import signal
    import time

    out = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    argv = list(ARGS)
    argv[argv.index("--epochs") + 1] = "50"
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "epdo", "-q", "train", *argv, "--dist-timeout", "6", "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    ranks: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = out / "metrics.jsonl"
            if metrics.exists() and metrics.read_text().count("\n") >= 1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        ranks = {r: p for p in _children(proc.pid) if (r := _rank_of(p)) is not None}
        assert set(ranks) == {0, 1}, ranks
        os.kill(ranks[1], signal.SIGSTOP)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120 and os.path.exists(f"/proc/{ranks[0]}") and _state(ranks[0]) != "Z":
            time.sleep(0.2)
        waited = time.monotonic() - t0
        os.kill(ranks[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        for p in ranks.values():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert waited < 60, f"rank 0 waited {waited:.0f} s for the stopped rank"
    lines = [line for line in err.splitlines() if line.startswith("epdo train: error: rank 0:")]
    assert lines, err[-3000:]
    assert "timed out (--dist-timeout 6 s)" in lines[0] and "rank 1 stopped responding" in lines[0], lines[0]
    assert "Traceback" not in err.split(lines[0])[0][-2000:]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


class _Store:
    """The part of torch.distributed.TCPStore that the heartbeats use."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = dict(data)

    def set(self, key: str, value: str) -> None:
        self.data[key] = value

    def check(self, keys: list[str]) -> bool:
        return all(k in self.data for k in keys)

    def get(self, key: str) -> bytes:
        return self.data[key].encode()


def test_stall_report_names_the_ranks_whose_heartbeats_stopped():
    import time

    from epdo.cli.common import DistContext

    now = time.time()
    store = _Store({"epdo/heartbeat/0": f"{now} epoch 3, step 9", "epdo/heartbeat/1": f"{now - 40} epoch 3, step 2",
                    "epdo/heartbeat/2": f"{now - 0.5} epoch 3, validation"})
    ctx = DistContext(device=torch.device("cpu"), rank=0, world_size=4, timeout_s=30.0, store=store)
    msg = ctx.stall_report(RuntimeError("[gloo] Timed out waiting 30000ms for recv operation to complete"))
    assert msg.startswith("rank 0: a collective operation timed out (--dist-timeout 30 s): ranks 1, 3 stopped responding")
    assert "rank 1 40 s ago, during epoch 3, step 2" in msg and "rank 3 sent no heartbeat" in msg
    assert "rank 2" not in msg  # alive: it waits in the collective too
    # no store (or no stale heartbeat): the other ranks are named as the ones waited for
    ctx = DistContext(device=torch.device("cpu"), rank=1, world_size=3, timeout_s=5.0)
    msg = ctx.stall_report(RuntimeError("Connection closed by peer"))
    assert "collective operation failed" in msg and "waiting for ranks 0, 2" in msg
