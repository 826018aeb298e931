"""Model registry (timm-style).

A model family registers small builder functions with :func:`register_model`; each entry carries
the paper's parameter count and the paper's training recipe (:class:`TrainDefaults`), which
``epdo train`` uses unless overridden on the command line. Checkpoint files (save, verify, load,
shipped pretrained weights) live in :mod:`epdo.models._checkpoint` and are re-exported here.

Papers cited by the registry entries (``ModelInfo.paper``):

* He, Chen, Shen, Yang, Lin (ICLR 2023), "Neural ePDOs: Spatially Adaptive Equivariant Partial
  Differential Operator Based Networks": Table 2 (MNIST-rot).
* Lagrave, Riou (2021), "Toward Geometrical Robustness with Hybrid Deep Learning and Differential
  Invariants Theory": EqPdeNet, Tables 1-2.
* Jenner, Weiler (2021, arXiv:2106.10163), "Steerable Partial Differential Operators for Equivariant
  Neural Networks": the MNIST-rot architecture and training recipe.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from ..optim import OPTIMIZERS, SCHEDULES

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
    "list_pretrained",
    "pretrained_path",
    "resolve_checkpoint",
    "state_dict_sha256",
    "CHECKPOINT_FORMAT",
    "CheckpointWarning",
]

logger = logging.getLogger(__name__)

_OPTIMIZERS = tuple(OPTIMIZERS)  # one registry each: epdo.optim
_SCHEDULES = tuple(SCHEDULES)
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
        recalibrate_bn: before each validation, re-estimate the batch-norm statistics layer by layer in eval
            mode on the first this many training samples (:func:`epdo.nn.recalibrate_batchnorm`); 0: off.
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
    recalibrate_bn: int = 0

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, _OPTIMIZERS)
        _check_choice("schedule", self.schedule, _SCHEDULES)
        _check_choice("decay_scope", self.decay_scope, _DECAY_SCOPES)
        for key, ok in (("lr", self.lr > 0), ("epochs", self.epochs >= 1), ("batch_size", self.batch_size >= 1),
                        ("weight_decay", self.weight_decay >= 0), ("lr_decay", self.lr_decay > 0), ("burn_in", self.burn_in >= 0),
                        ("recalibrate_bn", self.recalibrate_bn >= 0)):
            if not ok:
                need = "must be >= 0" if key in ("weight_decay", "burn_in", "recalibrate_bn") else "must be positive"
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
    ``inputs`` names the input contract (``"image"``, float images in [0, 1] of shape
    ``(B, *input_shape)``; ``"sphere"``, signals ``(B, *input_shape)`` on a mesh; ``"nbody"``,
    ``model(pos, vel, charge)``; ...), ``task`` what the output is (``"classification"``: logits,
    ``"regression"``: values), and :meth:`example_inputs` a batch to call the model with.
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
    inputs: str = "image"
    task: str = "classification"
    example_inputs_fn: Callable[..., tuple[torch.Tensor, ...]] | None = None
    test_kwargs_items: tuple[tuple[str, Any], ...] = ()

    @property
    def test_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a reduced build (fewer / narrower layers, the same layer types and input
        contract) that the generic model tests use for models too large to build, run, export and
        checkpoint in CI at full size; ``{}``: the full model. The full size is checked by the family's own
        parameter-count tests."""
        return dict(self.test_kwargs_items)

    def example_inputs(self, batch: int = 2, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        """A batch of valid inputs, ``model(*info.example_inputs(...))``: the registered ``example_inputs``
        function, else ``(torch.rand(batch, *input_shape),)``."""
        if self.example_inputs_fn is not None:
            return tuple(self.example_inputs_fn(batch=batch, generator=generator, dtype=dtype))
        return (torch.rand(batch, *self.input_shape, generator=generator, dtype=dtype),)


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
    inputs: str = "image",
    task: str = "classification",
    example_inputs: Callable[..., tuple[torch.Tensor, ...]] | None = None,
    test_kwargs: dict[str, Any] | None = None,
):
    """Register a model builder ``fn(**kwargs) -> nn.Module`` under ``name``.

    ``name`` defaults to the function name with ``_`` replaced by ``-``. Raises ``ValueError`` if
    the name is already registered (names are never overwritten, also not by a closure or a lambda
    of the same qualified name). Usable bare (``@register_model``) or with metadata::

        @register_model(paper_params=1_100_000, paper="He et al. (ICLR 2023), Table 2, 'Vanilla CNN'",
                        train=TrainDefaults(optimizer="adam", lr=0.05, epochs=30))
        def vanilla_cnn(**kwargs):
            return VanillaCNN(**kwargs)
    """

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(f):
            raise TypeError(f"register_model: expected a callable, got {f!r}")
        key = name if name is not None else getattr(f, "__name__", "").replace("_", "-")
        if not isinstance(key, str) or not key or key == "<lambda>" or any(c.isspace() for c in key):
            raise ValueError(f"register_model: invalid model name {key!r} (a lambda needs name=...)")
        if task not in ("classification", "regression"):
            raise ValueError(f"register_model {key!r}: task must be 'classification' or 'regression', got {task!r}")
        if example_inputs is not None and not callable(example_inputs):
            raise TypeError(f"register_model {key!r}: example_inputs must be callable, got {example_inputs!r}")
        old = _REGISTRY.get(key)
        if old is not None:  # any other builder, also a closure or lambda of the same qualified name
            where = f"{getattr(old.builder, '__module__', '?')}.{getattr(old.builder, '__qualname__', repr(old.builder))}"
            raise ValueError(f"register_model: model name {key!r} is already registered by {where}")
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
            inputs=str(inputs),
            task=str(task),
            example_inputs_fn=example_inputs,
            test_kwargs_items=tuple(sorted((test_kwargs or {}).items())),
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




# checkpoint files: defined in _checkpoint (which imports this module), importable from here as before
from .._io import atomic_write_bytes  # noqa: E402,F401  (re-exported, as before)
from ._checkpoint import (  # noqa: E402
    CHECKPOINT_FORMAT,
    CheckpointWarning,
    _epdo_version,
    _plain,
    _unwrap,
    clean_state_dict,
    list_pretrained,
    load,
    load_state,
    pretrained_path,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    state_dict_sha256,
)
