"""Checkpoint integrity: the embedded tensor checksum, NaN/inf weights, old files without a checksum,
malicious pickles (nothing runs, the message names what was found), directories; registry hygiene."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import epdo.models as models
from epdo.models import registry
from epdo.models._checkpoint import load_state


@pytest.fixture
def scratch_registry():
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def _saved(tmp_path, name="m.pt", **kw):
    torch.manual_seed(0)
    m = models.create("tiny-cnn", **kw)
    path = tmp_path / name
    models.save_checkpoint(path, m)
    return m, path


def test_checksum_is_over_names_dtypes_shapes_and_bytes():
    sd = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(3)}
    digest = registry.state_dict_sha256(sd)
    assert digest == registry.state_dict_sha256(dict(reversed(list(sd.items()))))  # order-independent
    changed = [
        {"a2": sd["a"], "b": sd["b"]},  # name
        {"a": sd["a"].double(), "b": sd["b"]},  # dtype
        {"a": sd["a"].reshape(3, 2), "b": sd["b"]},  # shape, same bytes
        {"a": sd["a"].clone().index_put_((torch.tensor(1), torch.tensor(2)), torch.tensor(5.0 + 2**-20)), "b": sd["b"]},
        {"a": sd["a"]},  # a missing entry
    ]
    assert len({digest, *(registry.state_dict_sha256(c) for c in changed)}) == len(changed) + 1
    assert digest == registry.state_dict_sha256({"a": sd["a"].t().contiguous().t(), "b": sd["b"]})  # layout-independent


def test_flipped_bytes_in_the_weights_are_refused(tmp_path):
    """16 flipped bytes inside a tensor record: torch loads the file without complaint, epdo refuses it."""
    m, path = _saved(tmp_path, "flipped.pt")
    raw = bytearray(path.read_bytes())
    weight = max(m.state_dict().values(), key=lambda t: t.numel())
    at = bytes(raw).find(weight.numpy().tobytes())
    assert at > 0
    for i in range(at + 100, at + 116):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    torch.load(path, weights_only=True)  # torch itself does not notice
    with pytest.raises(models.CheckpointError, match=r"flipped\.pt: checksum does not match"):
        models.load(path)
    with pytest.raises(models.CheckpointError, match="checksum does not match"):
        models.read_checkpoint(path)


def test_nan_and_inf_weights_are_refused_naming_the_tensor(tmp_path):
    m = models.create("tiny-cnn")
    with torch.no_grad():
        m.head[-1].weight[0, 0] = float("nan")
    models.save_checkpoint(tmp_path / "nan.pt", m)
    with pytest.raises(models.CheckpointError, match=r"nan\.pt: tensor 'head\.\d+\.weight' holds 1 NaN/inf"):
        models.load(tmp_path / "nan.pt")
    m = models.create("tiny-cnn")
    m.features[1].running_var.fill_(float("inf"))
    models.save_checkpoint(tmp_path / "inf.pt", m)
    with pytest.raises(models.CheckpointError, match=r"'features\.1\.running_var' holds \d+ NaN/inf"):
        models.load(tmp_path / "inf.pt")


def test_old_checkpoint_without_checksum_loads_with_a_warning(tmp_path):
    m, path = _saved(tmp_path, "old.pt")
    raw = torch.load(path, weights_only=True)
    del raw["state_dict_sha256"]
    torch.save(raw, path)
    with pytest.warns(models.CheckpointWarning, match=r"old\.pt: no state_dict_sha256"):
        back = models.load(path)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(back(x), m.eval()(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checkpoint with a checksum loads silently
        models.load(_saved(tmp_path, "new.pt")[1])


class _System:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_naming_the_global_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    _, good = _saved(tmp_path, "good.pt")
    ckpt = torch.load(good, weights_only=True)
    ckpt["payload"] = _System(marker)
    evil = tmp_path / "evil.pt"
    torch.save(ckpt, evil)
    with pytest.raises(models.CheckpointError) as info:
        models.load(evil)
    msg = str(info.value)
    assert not marker.exists()
    assert msg.startswith(f"{evil}: not a readable checkpoint")
    assert f"{os.system.__module__}.system" in msg and "nothing from it was run" in msg
    assert "weights_only" not in msg and "trust" not in msg  # never suggests loading unsafely
    with pytest.raises(models.CheckpointError):
        models.read_checkpoint(evil)
    assert not marker.exists()


def test_directory_is_not_reported_as_missing(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        models.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        models.load(tmp_path / "absent.pt")


def test_resaving_a_loaded_checkpoint_keeps_the_weights_and_checksum(tmp_path):
    m, path = _saved(tmp_path)
    back = models.load(path)
    models.save_checkpoint(tmp_path / "again.pt", back)
    a, b = torch.load(path, weights_only=True), torch.load(tmp_path / "again.pt", weights_only=True)
    assert a["state_dict_sha256"] == b["state_dict_sha256"] == registry.state_dict_sha256(m.state_dict())


# ---------------------------------------------------------------------------------------------- registry hygiene


def test_duplicate_closures_and_lambdas_raise(scratch_registry):
    def family(width):
        def build(**kw):
            return torch.nn.Linear(1, width)

        return build

    models.register_model(family(1), name="test-closure")
    with pytest.raises(ValueError, match="'test-closure' is already registered"):
        models.register_model(family(2), name="test-closure")  # same module and qualname, another builder
    assert models.create("test-closure").out_features == 1
    models.register_model(name="test-lambda")(lambda: torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="already registered"):
        models.register_model(name="test-lambda")(lambda: torch.nn.Linear(1, 2))
    with pytest.raises(ValueError, match="a lambda needs name="):
        models.register_model(lambda: torch.nn.Linear(1, 1))
    build = family(3)
    models.register_model(build, name="test-same")
    with pytest.raises(ValueError, match="already registered"):
        models.register_model(build, name="test-same")  # even the same function object


def test_models_namespace_is_clean():
    public = {n for n in dir(models) if not n.startswith("_")}
    assert not {"annotations", "importlib"} & public
    assert set(models.__all__) <= public
    assert models.list is models.list_models  # the documented timm-style alias stays


def test_registered_papers_are_named_not_numbered():
    for name in models.list():
        info = models.get_model_info(name)
        assert not any(tok in info.paper for tok in ("000", "001")), (name, info.paper)


# ---------------------------------------------------------------------------------------------- function check


def test_function_check_is_recorded_without_side_effects(tmp_path):
    for name in ("tiny-cnn", "egnn-nbody", "neural-epdo-small"):
        torch.manual_seed(1)
        m = models.create(name).train()
        rng = torch.get_rng_state()
        models.save_checkpoint(tmp_path / f"{name}.pt", m)
        assert m.training and torch.equal(torch.get_rng_state(), rng)  # resume stays bit-exact
        check = models.read_checkpoint(tmp_path / f"{name}.pt")["function_check"]
        x = models.get_model_info(name).example_inputs(1, torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = m.eval()(*x)
        assert all(torch.equal(a, b) for a, b in zip(check["inputs"], x)) and torch.equal(check["outputs"][0], want)
        models.load(tmp_path / f"{name}.pt")


def test_weights_that_fit_a_changed_model_are_refused(tmp_path, monkeypatch):
    """Same names and shapes, another function (the model's code changed after saving): refused by load and by
    load_state (resume), with the relative error; a change within rounding passes."""
    m, path = _saved(tmp_path, "changed.pt")
    cls, forward = type(m), type(m).forward
    monkeypatch.setattr(cls, "forward", lambda self, x: forward(self, x) * (1 + 1e-6))
    models.load(path)
    monkeypatch.setattr(cls, "forward", lambda self, x: forward(self, x) * 1.1)
    with pytest.raises(models.CheckpointError, match=r"changed\.pt: .*computes a different function.*relative error 0\.1"):
        models.load(path)
    with pytest.raises(models.CheckpointError, match="computes a different function"):
        load_state(models.create("tiny-cnn"), models.read_checkpoint(path), path)
    monkeypatch.setattr(cls, "forward", lambda self, x: forward(self, x)[:, :3])
    with pytest.raises(models.CheckpointError, match=r"outputs of shapes \[\(1, 3\)\]"):
        models.load(path)


def test_checkpoint_without_function_check_still_loads(tmp_path):
    m, path = _saved(tmp_path, "old.pt")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["function_check"]
    torch.save(ckpt, tmp_path / "old2.pt")
    back = models.load(tmp_path / "old2.pt")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(back(x), m.eval()(x))
