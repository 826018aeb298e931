"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``, verified before use.

A checkpoint is a plain dict of tensors and primitive containers (:data:`CHECKPOINT_FORMAT`). Besides the
model's registry name, keyword arguments and ``state_dict``, it records ``state_dict_sha256``: the sha256 of
the state dict (:func:`state_dict_sha256`, over every entry's name, dtype, shape and bytes, in sorted name
order). :func:`read_checkpoint` recomputes it and refuses a file whose weights do not match (flipped bytes
that torch itself does not notice), refuses NaN / inf weights naming the tensor, and refuses foreign or
malicious pickles naming what was found, without running any of it.

Checkpoints written before the checksum existed still load, with a :class:`CheckpointWarning`: their weights
cannot be verified (re-save them with :func:`save_checkpoint` to add the checksum).

A checkpoint also records ``function_check``: one example input (the registry's ``example_inputs``, seeded) and
the saved model's eval-mode output on it. :func:`load` reruns the rebuilt model on that input and refuses the
checkpoint when the output differs (relative error above :data:`FUNCTION_CHECK_RTOL`): weights whose names and
shapes still fit a model whose code has changed since would otherwise load silently and compute another
function. Models whose example input does not fit their keyword arguments record no check.

Pretrained weights ship inside the package (``epdo/models/checkpoints/<model>.pt``, with ``SHA256SUMS``):
``load("neural-epdo-small", pretrained=True)``; a path ``checkpoints/<model>.pt`` that does not exist (the
location in the source tree before the weights moved into the package) resolves to the same file. Shipped
files are also checked against ``SHA256SUMS``.

>>> "neural-epdo-small" in list_pretrained()
True
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .._io import atomic_write_bytes
from .registry import CheckpointError, UnknownModelError, create_model, get_model_info, list_models

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointWarning",
    "state_dict_sha256",
    "save_checkpoint",
    "read_checkpoint",
    "load_state",
    "load",
    "list_pretrained",
    "pretrained_path",
    "resolve_checkpoint",
    "clean_state_dict",
]

CHECKPOINT_FORMAT = "epdo-checkpoint/1"
#: relative error (output norm) above which :func:`load` refuses a checkpoint's ``function_check``: far above
#: rounding across machines and devices (TF32 included), far below what a changed layer does
FUNCTION_CHECK_RTOL = 1e-2
#: Folder of the shipped pretrained checkpoints, inside the ``epdo.models`` package.
PRETRAINED_FOLDER = "checkpoints"
_SUMS = "SHA256SUMS"


class CheckpointWarning(UserWarning):
    """A checkpoint loaded without a full check (it carries no ``state_dict_sha256``)."""


def clean_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _epdo_version() -> str:
    from .. import __version__

    return __version__


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """sha256 (hex) of a state dict: for every entry in sorted order of its name (``module.`` /
    ``_orig_mod.`` prefixes stripped), the name, dtype, shape and raw bytes (C order, CPU) of the tensor,
    each field length-prefixed. Independent of the device and of the entries' order.

    >>> sd = {"w": torch.arange(3.0)}
    >>> state_dict_sha256(sd) == state_dict_sha256({"module.w": torch.arange(3.0)})
    True
    >>> state_dict_sha256(sd) == state_dict_sha256({"w": torch.tensor([0.0, 1.0, 2.5])})
    False
    """
    h = hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    sd = clean_state_dict(state_dict)
    for name in sorted(sd):
        v = sd[name]
        put(name.encode("utf-8"))
        if isinstance(v, torch.Tensor):
            t = v.detach().to("cpu").contiguous().reshape(-1)
            put(str(t.dtype).encode())
            put(repr(tuple(v.shape)).encode())
            put(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:  # a non-tensor entry (e.g. an _extra_state): its repr
            put(b"repr:" + repr(v).encode("utf-8"))
    return h.hexdigest()


def _plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` with str/int/float subclasses made plain; ``TypeError`` for what ``weights_only`` cannot load."""
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, (torch.Tensor, torch.dtype, torch.Size)):
        return obj
    if isinstance(obj, bool):
        return bool(obj)
    for t in (str, int, float):
        if isinstance(obj, t):
            return t(obj)
    if isinstance(obj, dict):
        return type(obj)((k if type(k) in (str, int) else _plain(k, where), _plain(v, f"{where}[{k!r}]")) for k, v in obj.items()) \
            if type(obj) in (dict, OrderedDict) else {k: _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__qualname__} cannot be stored in a weights_only checkpoint")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Atomically write ``model`` (built by :func:`create_model`) and ``extra`` entries to ``path``.

    ``extra`` holds tensors and primitive containers only (``optimizer``, ``scheduler``, ``rng``,
    ``epoch``, ``metrics``, ...), so that the file loads with ``weights_only=True``. The file records
    ``state_dict_sha256`` (:func:`state_dict_sha256`), which :func:`read_checkpoint` verifies.
    """
    inner = _unwrap(model)
    name = getattr(inner, "epdo_model_name", None)
    if name is None:
        raise ValueError("save_checkpoint: the model was not built by epdo.models.create (no epdo_model_name)")
    state_dict = clean_state_dict(inner.state_dict())
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "epdo_version": _epdo_version(),
        "torch_version": str(torch.__version__),
        "model": name,
        "model_kwargs": dict(getattr(inner, "epdo_model_kwargs", {})),
        "state_dict": state_dict,
        "state_dict_sha256": state_dict_sha256(state_dict),
    }
    check = _function_check(inner, name)
    if check is not None:
        ckpt["function_check"] = check
    clash = set(ckpt) & set(extra)
    if clash:
        raise ValueError(f"save_checkpoint: reserved keys {sorted(clash)}")
    ckpt.update(extra)
    ckpt = _plain(ckpt)
    atomic_write_bytes(path, lambda f: torch.save(ckpt, f))


def _outputs(y: Any) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        return [y.detach().to("cpu")]
    if isinstance(y, (tuple, list)):
        return [t for v in y for t in _outputs(v)]
    if isinstance(y, Mapping):
        return [t for k in sorted(y) for t in _outputs(y[k])]
    return []


def _run_check(model: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The eval-mode outputs of ``model`` on ``inputs`` (its train mode and the global RNG restored)."""
    p = next(iter(model.parameters()), None)
    p = next(iter(model.buffers()), None) if p is None else p
    device = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            model.eval()
            return _outputs(model(*(x.to(device) for x in inputs)))
    finally:
        model.train(was_training)


def _function_check(model: nn.Module, name: str) -> dict[str, Any] | None:
    """``{"inputs", "outputs"}``: one seeded example input of the registered model and its outputs, or None where
    the example does not fit the model's keyword arguments."""
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    try:
        inputs = list(get_model_info(name).example_inputs(1, torch.Generator().manual_seed(0), dtype))
        outputs = _run_check(model, inputs)
    except Exception:  # an example input of the default build that does not fit this one: no check recorded
        return None
    if not outputs or not all(bool(torch.isfinite(t).all()) for t in outputs if t.is_floating_point()):
        return None
    return {"inputs": [x.detach().to("cpu") for x in inputs], "outputs": outputs}


def _verify_function(model: nn.Module, ckpt: Mapping[str, Any], path: Path) -> None:
    check = ckpt.get("function_check")
    if check is None:
        return
    try:
        got = _run_check(model, list(check["inputs"]))
        want = list(check["outputs"])
    except Exception as e:
        raise CheckpointError(f"{path}: the rebuilt model {ckpt['model']!r} fails on the checkpoint's recorded "
                              f"example input ({type(e).__name__}: {e})") from e
    if len(got) != len(want) or any(a.shape != b.shape for a, b in zip(got, want)):
        raise CheckpointError(f"{path}: the rebuilt model {ckpt['model']!r} returns outputs of shapes "
                              f"{[tuple(a.shape) for a in got]} on the recorded example input, the saved one "
                              f"returned {[tuple(b.shape) for b in want]}")
    num = sum(float((a.double() - b.double()).norm() ** 2) for a, b in zip(got, want)) ** 0.5
    den = sum(float(b.double().norm() ** 2) for b in want) ** 0.5
    err = num / den if den > 0 else num
    if err > FUNCTION_CHECK_RTOL:
        raise CheckpointError(
            f"{path}: the weights load into model {ckpt['model']!r}, but it computes a different function than "
            f"the model that saved them (relative error {err:.3g} on the recorded example input, tolerance "
            f"{FUNCTION_CHECK_RTOL:g}): the model's code changed since (saved by epdo {ckpt.get('epdo_version')}, "
            f"this is {_epdo_version()}). Retrain, or load it with the epdo version that wrote it")


# ---------------------------------------------------------------------------------------------- shipped weights


def _pretrained_dir() -> Any:
    return resources.files("epdo.models").joinpath(PRETRAINED_FOLDER)


def _shipped_sums() -> dict[str, str]:
    """``{file name: sha256}`` from the package's ``SHA256SUMS`` (empty if none ships)."""
    ref = _pretrained_dir().joinpath(_SUMS)
    if not ref.is_file():
        return {}
    sums = {}
    for line in ref.read_text().splitlines():
        if line.strip():
            digest, fname = line.split(maxsplit=1)
            sums[fname.strip().lstrip("*")] = digest.lower()
    return sums


def list_pretrained() -> list[str]:
    """Registered models whose pretrained weights ship with epdo (``load(name, pretrained=True)``)."""
    known = set(list_models())
    return sorted(f[:-3] for f in _shipped_sums() if f.endswith(".pt") and f[:-3] in known)


def pretrained_path(name: str) -> Path:
    """Path of the shipped checkpoint of model ``name`` (inside the installed package).

    Raises :class:`UnknownModelError` for an unknown name and :class:`CheckpointError` if the model has no
    shipped weights (the message lists those that do).
    """
    get_model_info(name)
    if name not in list_pretrained():
        raise CheckpointError(
            f"model {name!r} has no pretrained weights shipped with epdo; models with pretrained weights: "
            f"{', '.join(list_pretrained()) or '(none)'}"
        )
    ref = _pretrained_dir().joinpath(f"{name}.pt")
    if isinstance(ref, Path):
        return ref
    # a zipped install (not how wheels install): a verified copy in the temp folder, keyed by its sha256
    digest = _shipped_sums()[f"{name}.pt"]
    dest = Path(tempfile.gettempdir()) / f"epdo-pretrained-{digest[:16]}" / f"{name}.pt"
    if not dest.is_file() or hashlib.sha256(dest.read_bytes()).hexdigest() != digest:
        data = ref.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise CheckpointError(f"{ref}: sha256 does not match {digest} in {_SUMS}: the shipped checkpoint is corrupt; reinstall epdo")
        atomic_write_bytes(dest, lambda f: f.write(data))
    return dest


def _is_shipped(path: Path) -> bool:
    folder = _pretrained_dir()
    return isinstance(folder, Path) and path.resolve().parent == folder.resolve() and path.name in _shipped_sums()


def _check_shipped(path: Path) -> None:
    """A shipped file must match ``SHA256SUMS`` byte for byte."""
    expected = _shipped_sums()[path.name]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise CheckpointError(
            f"{path}: sha256 {h.hexdigest()} does not match {expected} in {path.parent / _SUMS}: the shipped "
            "checkpoint is corrupt; reinstall epdo"
        )


def resolve_checkpoint(spec: str | os.PathLike, pretrained: bool = False) -> Path:
    """The file that ``spec`` names: with ``pretrained=True`` a model name of :func:`list_pretrained`; else an
    existing path, or ``checkpoints/<model>.pt`` / ``<model>.pt`` of a shipped checkpoint that is not a file
    here (the package's copy). ``FileNotFoundError`` otherwise (for a model name: says to pass
    ``pretrained=True``). What :func:`read_checkpoint` and :func:`load` open; for messages and output paths."""
    if pretrained:
        if not isinstance(spec, str):
            raise TypeError(f"pretrained=True takes a registered model name, got {type(spec).__name__} {spec!r}")
        return pretrained_path(spec)
    path = Path(spec)
    if path.exists():
        return path
    if path.name in _shipped_sums() and (len(path.parts) == 1 or path.parent.name == PRETRAINED_FOLDER):
        return pretrained_path(path.name[:-3])
    if isinstance(spec, str) and spec in list_models():
        hint = "pass pretrained=True for its shipped weights" if spec in list_pretrained() else "it has no shipped weights"
        raise FileNotFoundError(
            f"checkpoint not found: {spec!r} is a model name, not a file ({hint}; "
            f"epdo.models.create({spec!r}) builds it untrained)"
        )
    raise FileNotFoundError(f"checkpoint not found: {path}")


# ---------------------------------------------------------------------------------------------- reading


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _unreadable(path: Path, e: Exception) -> CheckpointError:
    """The reason ``torch.load`` failed, without torch's advice to load unsafely."""
    text = str(e)
    found = _GLOBAL.search(text)
    if found:
        return CheckpointError(
            f"{path}: not a readable checkpoint: it contains a pickled reference to {found.group(1)!r}, which an "
            "epdo checkpoint never holds (only tensors, numbers, strings and containers); it was refused and "
            "nothing from it was run. The file was not written by epdo.models.save_checkpoint or was tampered with"
        )
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    noise = ("weights only load failed", "weights_only", "check the documentation", "trust", "do it only if")
    useful = [ln for ln in lines if not any(n in ln.lower() for n in noise)]
    detail = (useful or [type(e).__name__])[0].replace("WeightsUnpickler error: ", "")
    return CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {detail[:300]}); the file is corrupt, "
                           "truncated or not a checkpoint")


def _verify_weights(path: Path, ckpt: Mapping[str, Any]) -> None:
    sd = ckpt["state_dict"]
    recorded = ckpt.get("state_dict_sha256")
    if recorded is None:
        warnings.warn(
            f"{path}: no state_dict_sha256 (written by an older epdo), so its weights cannot be verified; "
            "re-save it with epdo.models.save_checkpoint to add the checksum",
            CheckpointWarning,
            stacklevel=4,
        )
    else:
        actual = state_dict_sha256(sd)
        if recorded != actual:
            raise CheckpointError(
                f"{path}: checksum does not match: the weights hash to sha256 {actual}, the checkpoint records "
                f"{recorded!s:.64}; the file is corrupt or was modified. Do not use it"
            )
    for name, t in clean_state_dict(sd).items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"{path}: tensor {name!r} holds {bad} NaN/inf value(s) of {t.numel()}; refusing the checkpoint "
                "(the training run that wrote it diverged, or the file was modified)"
            )


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, pretrained: bool = False) -> dict[str, Any]:
    """Read and verify an epdo checkpoint with ``torch.load(weights_only=True)``.

    ``path``: a file, or with ``pretrained=True`` a model name of :func:`list_pretrained`; a missing
    ``checkpoints/<model>.pt`` of a shipped checkpoint resolves to the package's copy.
    Raises ``FileNotFoundError`` if missing, ``IsADirectoryError`` for a directory, and
    :class:`CheckpointError` (naming the file) if the file is corrupt or truncated, holds pickled objects
    other than tensors and containers (nothing of it is run), is not an epdo checkpoint, fails its
    ``state_dict_sha256`` (or, when shipped, ``SHA256SUMS``) or holds NaN/inf weights.
    """
    path = resolve_checkpoint(path, pretrained)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a directory, not a checkpoint file (e.g. {path / 'best.pt'})")
    if _is_shipped(path):
        _check_shipped(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt zip, truncated file, disallowed pickle globals, ...
        raise _unreadable(path, e) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an epdo checkpoint (no format marker {CHECKPOINT_FORMAT!r})")
    for key, typ in (("model", str), ("model_kwargs", dict), ("state_dict", dict)):
        if not isinstance(ckpt.get(key), typ):
            raise CheckpointError(f"{path}: malformed epdo checkpoint (entry {key!r} missing or not a {typ.__name__})")
    _verify_weights(path, ckpt)
    return ckpt


def load_state(model: nn.Module, ckpt: Mapping[str, Any], path: str | os.PathLike, expected_model: str | None = None) -> None:
    """Load ``ckpt['state_dict']`` into ``model`` strictly and rerun its ``function_check``; errors name ``path``
    and the models involved."""
    if expected_model is not None and ckpt["model"] != expected_model:
        raise CheckpointError(f"{path}: checkpoint of model {ckpt['model']!r}, expected {expected_model!r}")
    try:
        _unwrap(model).load_state_dict(clean_state_dict(ckpt["state_dict"]), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"{path}: weights do not fit model {ckpt['model']!r} with kwargs {ckpt['model_kwargs']} "
            f"({' '.join(first[:3])[:300]})"
        ) from e
    _verify_function(_unwrap(model), ckpt, Path(path))


def load(
    checkpoint_path: str | os.PathLike,
    map_location: Any = "cpu",
    expected_model: str | None = None,
    *,
    pretrained: bool = False,
) -> nn.Module:
    """Rebuild the model stored in a checkpoint (name + kwargs) and load its verified weights.

    ``checkpoint_path``: a file (see :func:`read_checkpoint`), or with ``pretrained=True`` a registered model
    name with shipped weights: ``load("neural-epdo-small", pretrained=True)``. Returns the model in eval mode
    on ``map_location``. ``expected_model``: raise :class:`CheckpointError` if the checkpoint holds another
    model (with ``pretrained=True`` the name itself is expected).
    """
    ckpt = read_checkpoint(checkpoint_path, map_location=map_location, pretrained=pretrained)
    where = resolve_checkpoint(checkpoint_path, pretrained)
    if pretrained and expected_model is None:
        expected_model = str(checkpoint_path)
    try:
        model = create_model(ckpt["model"], **ckpt["model_kwargs"])
    except UnknownModelError as e:
        raise CheckpointError(f"{where}: {e}") from e
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: cannot rebuild model {ckpt['model']!r} from kwargs {ckpt['model_kwargs']}: {e}") from e
    load_state(model, ckpt, where, expected_model=expected_model)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    return model.eval()
