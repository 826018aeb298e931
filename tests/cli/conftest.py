"""Fixtures of the command-line tests: an in-process ``epdo`` runner and one trained tiny-cnn run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from epdo.cli.main import main

#: fast training arguments: the embedded sample, 256 training and 200 validation/test images
FAST = ["--model", "tiny-cnn", "--data", "sample", "--limit-train", "256", "--limit-eval", "200"]


def _run(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture
def cli():
    """``cli("train", "--model", ...) -> exit status`` (in-process)."""
    return _run


@pytest.fixture(scope="session")
def fast_args():
    return list(FAST)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """tiny-cnn trained for 2 epochs (seed 0, registry recipe) on the sample; shared, read-only."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert _run("-q", "train", *FAST, "--epochs", "2", "--out", out) == 0
    return out


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="session")
def metrics_of():
    """``metrics_of(run_dir) -> metrics.jsonl rows without the wall-time field``."""

    def f(run: Path) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in read_jsonl(Path(run) / "metrics.jsonl")]

    return f


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: tiny models run several times faster on a busy 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
