"""Model registry (timm-style) and checkpoint files.

A model family registers small builder functions with :func:`register_model`; each entry carries
the paper's parameter count and the paper's training recipe (:class:`TrainDefaults`), which
``epdo train`` uses unless overridden on the command line.

Checkpoints are plain dicts of tensors and primitive containers, written atomically and read
with ``torch.load(weights_only=True)``; :func:`load` rebuilds a model from the registry name and
keyword arguments stored in the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .._io import atomic_write_bytes

__all__ = [
    "TrainDefaults",
    "ModelInfo",
    "UnknownModelError",
    "CheckpointError",
    "register_model",
    "list_models",
    "create_model",
    "get_model_info",
    "count_parameters",
    "save_checkpoint",
    "read_checkpoint",
    "load",
    "atomic_write_bytes",
    "CHECKPOINT_FORMAT",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "epdo-checkpoint/1"

_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = ("constant", "exponential", "step", "cosine")
_DECAY_SCOPES = ("all", "weights")


@dataclass(frozen=True)
class TrainDefaults:
    """The training recipe of a registered model (what ``epdo train`` uses by default).

    Args:
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (SGD uses ``momentum`` and ``nesterov``).
        lr: initial learning rate.
        weight_decay: L2 penalty (decoupled for ``adamw``).
        decay_scope: ``"all"`` applies ``weight_decay`` to every parameter; ``"weights"`` only to
            conv/linear weights except the final classifier (no decay on biases, norms, last layer),
            the SFCNN recipe used by e2cnn and the steerable-PDO experiments.
        schedule: per-epoch learning-rate schedule, the factor at (0-based) epoch ``e`` being
            ``constant``: 1; ``exponential``: ``lr_decay ** max(0, e - burn_in + 1)``;
            ``step``: ``lr_decay ** (number of milestones <= e)``;
            ``cosine``: ``0.5 (1 + cos(pi e / epochs))`` (depends on the run's total epochs).
        lr_decay, burn_in, milestones: schedule parameters (see above).
        epochs, batch_size: the paper's budget; ``batch_size`` is the global batch size.
        momentum, nesterov: SGD only.
        augment_rotation: train with random rotations of the inputs.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    decay_scope: str = "all"
    schedule: str = "constant"
    lr_decay: float = 1.0
    burn_in: int = 0
    milestones: tuple[int, ...] = ()
    epochs: int = 30
    batch_size: int = 64
    momentum: float = 0.9
    nesterov: bool = False
    augment_rotation: bool = False

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, _OPTIMIZERS)
        _check_choice("schedule", self.schedule, _SCHEDULES)
        _check_choice("decay_scope", self.decay_scope, _DECAY_SCOPES)
        for key, ok in (("lr", self.lr > 0), ("epochs", self.epochs >= 1), ("batch_size", self.batch_size >= 1),
                        ("weight_decay", self.weight_decay >= 0), ("lr_decay", self.lr_decay > 0), ("burn_in", self.burn_in >= 0)):
            if not ok:
                need = "must be >= 0" if key in ("weight_decay", "burn_in") else "must be positive"
                raise ValueError(f"{key} {need}, got {getattr(self, key)!r}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    def as_dict(self) -> dict[str, Any]:
        """Primitive dict (JSON- and checkpoint-safe)."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def replace(self, **changes: Any) -> "TrainDefaults":
        """A copy with ``changes`` applied; ``None`` values are ignored."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "milestones" in changes:
            changes["milestones"] = tuple(changes["milestones"])
        return dataclasses.replace(self, **changes)

    def lr_factor(self, epoch: int, epochs: int | None = None) -> float:
        """Multiplier of ``lr`` during 0-based ``epoch`` (``epochs``: total, for ``cosine``)."""
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "exponential":
            return float(self.lr_decay ** max(0, epoch - self.burn_in + 1))
        if self.schedule == "step":
            return float(self.lr_decay ** sum(1 for m in self.milestones if m <= epoch))
        total = epochs if epochs is not None else self.epochs
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, total) / total))


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class ModelInfo:
    """A registry entry: the builder and its metadata.

    ``paper_params`` is the parameter count the paper reports (``None`` if it gives none),
    ``paper`` the paper/table/row it comes from, ``paper_error`` the reported test error (text, in %).
    ``input_shape`` is the per-sample input shape (images in [0, 1]); ``num_classes`` the logits width.
    """

    name: str
    builder: Callable[..., nn.Module]
    paper_params: int | None = None
    paper: str = ""
    paper_error: str = ""
    train: TrainDefaults = field(default_factory=TrainDefaults)
    input_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    description: str = ""


class UnknownModelError(ValueError, KeyError):
    """An unknown model name; the message lists the known names and close matches."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit; the message names the file."""


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    paper_params: int | None = None,
    paper: str = "",
    paper_error: str = "",
    train: TrainDefaults | None = None,
    input_shape: tuple[int, ...] = (1, 28, 28),
    num_classes: int = 10,
):
    """Register a model builder ``fn(**kwargs) -> nn.Module`` under ``name``.

    ``name`` defaults to the function name with ``_`` replaced by ``-``. Raises ``ValueError`` if
    the name is already taken by another builder. Usable bare (``@register_model``) or with
    metadata::

        @register_model(paper_params=1_100_000, paper="000 Table 2, 'Vanilla CNN'",
                        train=TrainDefaults(optimizer="adam", lr=0.05, epochs=30))
        def vanilla_cnn(**kwargs):
            return VanillaCNN(**kwargs)
    """

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(f):
            raise TypeError(f"register_model: expected a callable, got {f!r}")
        key = name if name is not None else f.__name__.replace("_", "-")
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"register_model: invalid model name {key!r}")
        old = _REGISTRY.get(key)
        if old is not None and (old.builder.__module__, old.builder.__qualname__) != (f.__module__, f.__qualname__):
            raise ValueError(
                f"register_model: model name {key!r} is already registered by "
                f"{old.builder.__module__}.{old.builder.__qualname__}"
            )
        doc = (f.__doc__ or "").strip().splitlines()
        _REGISTRY[key] = ModelInfo(
            name=key,
            builder=f,
            paper_params=None if paper_params is None else int(paper_params),
            paper=paper,
            paper_error=paper_error,
            train=train if train is not None else TrainDefaults(),
            input_shape=tuple(int(s) for s in input_shape),
            num_classes=int(num_classes),
            description=doc[0] if doc else "",
        )
        return f

    return deco(fn) if fn is not None else deco


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by an ``fnmatch`` pattern (``"*cnn*"``)."""
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; :class:`UnknownModelError` (a ``ValueError``) otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    known = list_models()
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}.{hint} Known models: {', '.join(known) or '(none)'}")


def _check_primitive(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_primitive(v, where)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: dict keys must be str, got {k!r}")
            _check_primitive(v, where)
        return
    raise TypeError(f"{where}: model kwargs must be None/bool/int/float/str or lists/tuples/dicts of those, got {type(value).__name__}")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs``.

    The kwargs must be primitive values (they are stored in checkpoints). The returned module has
    attributes ``epdo_model_name`` and ``epdo_model_kwargs`` so that :func:`save_checkpoint` can
    record how to rebuild it.

    >>> import epdo.models
    >>> m = epdo.models.create("tiny-cnn")
    >>> m(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    info = get_model_info(name)
    _check_primitive(kwargs, f"create_model({name!r})")
    model = info.builder(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model builder for {name!r} returned {type(model).__name__}, not an nn.Module")
    model.epdo_model_name = name
    model.epdo_model_kwargs = dict(kwargs)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameter entries."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# checkpoints


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
    try:
        from importlib.metadata import version

        return version("epdo")
    except Exception:  # not installed (e.g. PYTHONPATH=src)
        import epdo

        return str(getattr(epdo, "__version__", "unknown"))


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
    ``epoch``, ``metrics``, ...), so that the file loads with ``weights_only=True``.
    """
    inner = _unwrap(model)
    name = getattr(inner, "epdo_model_name", None)
    if name is None:
        raise ValueError("save_checkpoint: the model was not built by epdo.models.create (no epdo_model_name)")
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "epdo_version": _epdo_version(),
        "torch_version": str(torch.__version__),
        "model": name,
        "model_kwargs": dict(getattr(inner, "epdo_model_kwargs", {})),
        "state_dict": clean_state_dict(inner.state_dict()),
    }
    clash = set(ckpt) & set(extra)
    if clash:
        raise ValueError(f"save_checkpoint: reserved keys {sorted(clash)}")
    ckpt.update(extra)
    ckpt = _plain(ckpt)
    atomic_write_bytes(path, lambda f: torch.save(ckpt, f))


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and validate an epdo checkpoint with ``torch.load(weights_only=True)``.

    Raises ``FileNotFoundError`` if missing and :class:`CheckpointError` (naming the file) if the file
    is corrupt, was tampered with (contains arbitrary pickled objects) or is not an epdo checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt zip, truncated file, disallowed pickle globals, ...
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else "")
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {detail[:300]})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an epdo checkpoint (no format marker {CHECKPOINT_FORMAT!r})")
    for key, typ in (("model", str), ("model_kwargs", dict), ("state_dict", dict)):
        if not isinstance(ckpt.get(key), typ):
            raise CheckpointError(f"{path}: malformed epdo checkpoint (entry {key!r} missing or not a {typ.__name__})")
    return ckpt


def load_state(model: nn.Module, ckpt: Mapping[str, Any], path: str | os.PathLike, expected_model: str | None = None) -> None:
    """Load ``ckpt['state_dict']`` into ``model`` strictly; errors name ``path`` and the models involved."""
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


def load(checkpoint_path: str | os.PathLike, map_location: Any = "cpu", expected_model: str | None = None) -> nn.Module:
    """Rebuild the model stored in ``checkpoint_path`` (name + kwargs) and load its weights.

    Returns the model in eval mode on ``map_location``. ``expected_model``: raise
    :class:`CheckpointError` if the checkpoint holds another model.
    """
    ckpt = read_checkpoint(checkpoint_path, map_location=map_location)
    try:
        model = create_model(ckpt["model"], **ckpt["model_kwargs"])
    except UnknownModelError as e:
        raise CheckpointError(f"{checkpoint_path}: {e}") from e
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{checkpoint_path}: cannot rebuild model {ckpt['model']!r} from kwargs {ckpt['model_kwargs']}: {e}") from e
    load_state(model, ckpt, checkpoint_path, expected_model=expected_model)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    return model.eval()
