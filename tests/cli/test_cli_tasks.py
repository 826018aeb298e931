"""The task seam: a registered regression dataset with tuple inputs trains and evaluates through the same
``epdo train`` / ``epdo evaluate`` (MSE metric), dataset options (``--setting``) reach the loader, and a
model / dataset task mismatch is a clear error."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import epdo.models as models
from epdo.data import DATASETS, DatasetSpec, dataset_spec, get_dataset, register_dataset

_N = {"train": 96, "valid": 32, "test": 32}
_SEEN_SETTINGS: list[str | None] = []


class _Pairs(torch.utils.data.Dataset):
    """y = a * u + b * v (per sample scalars times vectors): items (u, v, y)."""

    def __init__(self, split: str, seed: int, setting: str | None):
        g = torch.Generator().manual_seed({"train": 0, "valid": 1, "test": 2}[split] + 10 * seed)
        n = _N[split]
        self.name, self.is_replica = "toy-pairs", False
        u, v = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
        self.tensors = (u, v, 0.5 * u - 2.0 * v + (0.0 if setting != "shifted" else 1.0))

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i):
        return tuple(t[i] for t in self.tensors)


def _load(split, *, data_dir=None, cache_dir=None, seed=0, setting=None):
    _SEEN_SETTINGS.append(setting)
    return _Pairs(split, seed, setting)


class _TwoInputLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4, bias=False)

    def forward(self, u, v):
        return self.a(u) + self.b(v)


if "test-toy-pairs" not in DATASETS:
    register_dataset(DatasetSpec("test-toy-pairs", _load, task="regression", options=("setting",),
                                 description="test: linear regression on two inputs"))
    models.register_model(
        name="test-two-input-linear", paper="test model (no paper)", task="regression", inputs="pairs",
        train=models.TrainDefaults(optimizer="adam", lr=0.05, epochs=3, batch_size=32, schedule="constant"),
        example_inputs=lambda batch=2, generator=None, dtype=torch.float32: (
            torch.randn(batch, 4, generator=generator, dtype=dtype), torch.randn(batch, 4, generator=generator, dtype=dtype)),
    )(_TwoInputLinear)


def test_registry_contract():
    spec = dataset_spec("test-toy-pairs")
    assert spec.task == "regression" and "test-toy-pairs" in DATASETS and "test-toy-pairs" in tuple(DATASETS)
    ds = get_dataset("test-toy-pairs", "valid", setting="shifted")
    u, v, y = ds[0]
    assert u.shape == v.shape == y.shape == (4,)
    with pytest.raises(ValueError, match=r"takes no option 'n_train' \(its options: setting\)"):
        get_dataset("test-toy-pairs", "train", n_train=3)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(DatasetSpec("test-toy-pairs", _load))
    with pytest.raises(ValueError, match="task must be one of"):
        DatasetSpec("x", _load, task="ranking")
    info = models.get_model_info("test-two-input-linear")
    x = info.example_inputs(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert [t.shape for t in x] == [(3, 4), (3, 4)] and x[0].dtype == torch.float64


def test_regression_trains_and_evaluates(cli, tmp_path, capsys):
    out = tmp_path / "run"
    _SEEN_SETTINGS.clear()
    assert cli("-q", "train", "--model", "test-two-input-linear", "--data", "test-toy-pairs", "--setting", "shifted",
               "--epochs", "3", "--out", out) == 0
    assert set(_SEEN_SETTINGS) == {"shifted"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"train_mse", "valid_mse"} <= set(rows[0]) and "valid_error" not in rows[0]
    assert rows[-1]["valid_mse"] < rows[0]["valid_mse"]  # it learns
    res = json.loads((out / "results.json").read_text())
    assert res["task"] == "regression" and res["setting"] == "shifted"
    # the reported MSE is the mean over all target elements, recomputed here from the best checkpoint
    model = models.load(out / "best.pt")
    u, v, y = get_dataset("test-toy-pairs", "test", setting="shifted").tensors
    with torch.no_grad():
        mse = float(((model(u, v).double() - y.double()) ** 2).mean())
    assert res["test_mse"] == pytest.approx(mse, rel=1e-6)
    capsys.readouterr()
    assert cli("evaluate", "--checkpoint", out / "best.pt", "--out", tmp_path / "ev") == 0
    printed = capsys.readouterr().out
    assert f"mse {mse:.5g}" in printed  # the checkpoint's setting is used by default
    ev = json.loads(next((tmp_path / "ev").glob("*.json")).read_text())
    assert ev["mse"] == pytest.approx(mse, rel=1e-6) and ev["setting"] == "shifted"
    assert cli("evaluate", "--checkpoint", out / "best.pt", "--rotations", "4", "--out", tmp_path / "ev2") == 2
    assert "perturb images of classification data" in capsys.readouterr().err


def test_task_mismatch_and_unknown_setting(cli, tmp_path, capsys, fast_args):
    assert cli("train", "--model", "tiny-cnn", "--data", "test-toy-pairs", "--out", tmp_path / "a") == 2
    assert "tiny-cnn is a classification model, dataset test-toy-pairs is a regression dataset" in capsys.readouterr().err
    assert cli("train", *fast_args, "--setting", "N/R", "--epochs", "1", "--out", tmp_path / "b") == 2
    assert "dataset 'sample' takes no option 'setting'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_too_few_logits_for_the_data_is_a_clear_error(cli, tmp_path, capsys, fast_args):
    # the sample has 10 classes; a 2-logit model used to die inside cross_entropy ("Target 8 is out of bounds")
    assert cli("train", *fast_args, "--model-kw", "num_classes=2", "--epochs", "1", "--out", tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert "the model returns 2 logits per sample but the data have class" in err and "num_classes" in err
    assert not (tmp_path / "a" / "best.pt").exists()


def test_classification_check_names_shapes_and_classes():
    from epdo.cli.common import CLIError
    from epdo.cli.tasks import get_task

    task = get_task("classification")
    task.check(torch.zeros(3, 4), torch.tensor([0, 3, 1]))  # fine
    with pytest.raises(CLIError, match=r"expected logits of shape \(3, classes\).*got \(3, 4, 1\)"):
        task.check(torch.zeros(3, 4, 1), torch.tensor([0, 3, 1]))
    with pytest.raises(CLIError, match="returns 4 logits per sample but the data have class 4"):
        task.loss(torch.zeros(3, 4), torch.tensor([0, 4, 1]))
    with pytest.raises(CLIError, match="have class -1"):
        task.batch_sums(torch.zeros(3, 4), torch.tensor([0, -1, 1]))
    get_task("regression").check(torch.zeros(3, 4, 1), torch.zeros(2))  # regression: nothing to check
