"""Model registry: names, errors, metadata, every registered model (forward, gradients), checkpoints."""

from __future__ import annotations

import math
import zipfile

import pytest
import torch

import epdo.models as models
from epdo.models import registry
from epdo.models.cnn import PlainCNN


@pytest.fixture
def scratch_registry():
    """Register test models and remove them afterwards."""
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


# ---------------------------------------------------------------------------------------------- names


def test_list_and_pattern():
    names = models.list()
    assert names == sorted(names)
    assert {"vanilla-cnn", "tiny-cnn"} <= set(names)
    assert models.list("tiny-*") == ["tiny-cnn"]
    assert models.list("no-such-*") == []
    assert models.list_models is models.list and models.create_model is models.create


def test_unknown_model_lists_known_and_close_matches():
    with pytest.raises(ValueError) as ei:
        models.create("vanila-cnn")
    msg = str(ei.value)
    assert "'vanila-cnn'" in msg and "Did you mean: vanilla-cnn" in msg
    assert "Known models:" in msg and "tiny-cnn" in msg
    assert isinstance(ei.value, models.UnknownModelError) and isinstance(ei.value, KeyError)


def test_duplicate_name_raises(scratch_registry):
    @models.register_model(name="test-dup")
    def a():
        return torch.nn.Linear(1, 1)

    with pytest.raises(ValueError, match="already registered"):

        @models.register_model(name="test-dup")
        def b():
            return torch.nn.Linear(1, 1)

    with pytest.raises(ValueError, match="already registered"):
        models.register_model(name="vanilla-cnn")(lambda: torch.nn.Linear(1, 1))


def test_bare_decorator_and_default_name(scratch_registry):
    @models.register_model
    def my_test_model():
        """A one-line description."""
        return torch.nn.Linear(1, 1)

    info = models.get_model_info("my-test-model")
    assert info.description == "A one-line description." and info.paper_params is None
    assert info.train == models.TrainDefaults()


def test_create_records_name_and_kwargs_and_checks_them():
    m = models.create("tiny-cnn", dropout=0.0)
    assert m.epdo_model_name == "tiny-cnn" and m.epdo_model_kwargs == {"dropout": 0.0}
    with pytest.raises(TypeError, match="model kwargs"):
        models.create("tiny-cnn", mean=torch.tensor(0.5))
    with pytest.raises(ValueError, match="activation"):
        models.create("tiny-cnn", activation="gelu")


# ---------------------------------------------------------------------------------------------- metadata


def test_vanilla_cnn_matches_paper_count():
    info = models.get_model_info("vanilla-cnn")
    n = models.count_parameters(models.create("vanilla-cnn"))
    print(f"vanilla-cnn: {n:,} parameters (paper 000, Table 2: {info.paper_params:,})")
    assert n == 1_073_098
    assert abs(n / info.paper_params - 1) < 0.05  # the paper rounds to 1.1M
    assert "Table 2" in info.paper and info.train.optimizer == "adam" and info.train.epochs == 30


def test_tiny_cnn_is_tiny():
    assert 1_000 < models.count_parameters(models.create("tiny-cnn")) < 10_000


def test_train_defaults_validation_and_schedules():
    with pytest.raises(ValueError, match="optimizer"):
        models.TrainDefaults(optimizer="lion")
    with pytest.raises(ValueError, match="schedule"):
        models.TrainDefaults(schedule="poly")
    t = models.TrainDefaults(schedule="exponential", lr_decay=0.5, burn_in=2)
    assert [t.lr_factor(e) for e in range(4)] == [1.0, 1.0, 0.5, 0.25]
    t = models.TrainDefaults(schedule="step", lr_decay=0.1, milestones=(1, 3))
    assert [t.lr_factor(e) for e in range(4)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    t = models.TrainDefaults(schedule="cosine", epochs=4)
    assert t.lr_factor(0) == 1.0 and t.lr_factor(2) == pytest.approx(0.5) and t.lr_factor(4) == pytest.approx(0.0)
    assert t.replace(lr=None, epochs=7).epochs == 7 and t.replace(lr=None).lr == t.lr
    assert models.TrainDefaults(**{**t.as_dict(), "milestones": ()}) == t


def test_registered_models_declare_metadata():
    for name in models.list():
        info = models.get_model_info(name)
        assert isinstance(info.train, models.TrainDefaults), name
        assert info.paper, f"{name}: no paper reference"
        assert info.paper_params is None or info.paper_params > 0, name


# ---------------------------------------------------------------------------------------------- every model


@pytest.mark.parametrize("name", models.list())
def test_model_forward_and_gradients(name):
    info = models.get_model_info(name)
    torch.manual_seed(0)
    model = models.create(name, **info.test_kwargs)
    model.train()
    x = info.example_inputs(2, generator=torch.Generator().manual_seed(0))
    out = model(*x)
    if info.task == "classification":
        assert out.shape == (2, info.num_classes), f"{name}: output {tuple(out.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite output"
    # a random linear functional of the logits (a plain sum is blind behind batch norm)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: parameter {pname} gets no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient of {pname}"
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(*x)).all(), f"{name}: non-finite output in eval mode"


# ---------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = models.create("tiny-cnn", channels=[4, 8, 8])
    m.train()
    m(torch.rand(4, 1, 28, 28))  # move the batch-norm statistics
    path = tmp_path / "m.pt"
    models.save_checkpoint(path, m, epoch=3, metrics={"valid_error": 1.5}, rng=torch.get_rng_state())
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["model"] == "tiny-cnn" and raw["model_kwargs"] == {"channels": [4, 8, 8]} and raw["epoch"] == 3
    assert raw["epdo_version"] and raw["format"] == registry.CHECKPOINT_FORMAT
    m2 = models.load(path)
    assert not m2.training and isinstance(m2, PlainCNN)
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(m.eval()(x), m2(x))


def test_checkpoint_of_ddp_style_prefixes_loads(tmp_path):
    m = models.create("tiny-cnn")
    path = tmp_path / "m.pt"
    models.save_checkpoint(path, m)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"] = {f"module.{k}": v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, path)
    models.load(path)


def test_save_rejects_unsafe_objects(tmp_path):
    m = models.create("tiny-cnn")
    with pytest.raises(TypeError, match="weights_only"):
        models.save_checkpoint(tmp_path / "x.pt", m, extra=object())
    with pytest.raises(ValueError, match="not built by"):
        models.save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(1, 1))
    assert not any(tmp_path.iterdir())


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_tampered_corrupt_and_foreign_files_name_the_file(tmp_path):
    good = tmp_path / "good.pt"
    models.save_checkpoint(good, models.create("tiny-cnn"))

    evil = tmp_path / "evil.pt"
    ckpt = torch.load(good, weights_only=True)
    ckpt["payload"] = _Evil()
    torch.save(ckpt, evil)
    with pytest.raises(models.CheckpointError, match="evil.pt: not a readable checkpoint"):
        models.load(evil)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(models.CheckpointError, match="truncated.pt"):
        models.load(truncated)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(models.CheckpointError, match="garbage.pt"):
        models.load(garbage)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(models.CheckpointError, match="foreign.pt: not an epdo checkpoint"):
        models.load(foreign)

    with pytest.raises(models.CheckpointError, match="good.pt: checkpoint of model 'tiny-cnn', expected 'vanilla-cnn'"):
        models.load(good, expected_model="vanilla-cnn")

    # a file whose recorded name was changed: the weights do not fit
    swapped = tmp_path / "swapped.pt"
    ckpt = torch.load(good, weights_only=True)
    ckpt["model"] = "vanilla-cnn"
    torch.save(ckpt, swapped)
    with pytest.raises(models.CheckpointError, match="swapped.pt: weights do not fit model 'vanilla-cnn'"):
        models.load(swapped)

    unknown = tmp_path / "unknown.pt"
    ckpt["model"] = "no-such-model"
    torch.save(ckpt, unknown)
    with pytest.raises(models.CheckpointError, match="unknown.pt: unknown model 'no-such-model'"):
        models.load(unknown)

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        models.load(tmp_path / "missing.pt")
    assert zipfile.is_zipfile(good)


def test_plain_cnn_rejects_wrong_input():
    m = models.create("tiny-cnn")
    with pytest.raises(ValueError, match=r"expected images \(B, 1, H, W\), got \(2, 3, 28, 28\)"):
        m(torch.rand(2, 3, 28, 28))


def test_normalisation_is_inside_the_model():
    m = models.create("tiny-cnn")
    assert "mean" not in m.state_dict() and "std" not in m.state_dict()
    assert math.isclose(float(m.mean), 0.1307, rel_tol=1e-6) and math.isclose(float(m.std), 0.3081, rel_tol=1e-6)
