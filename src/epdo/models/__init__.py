"""Registered models: ``epdo.models.list()``, ``create(name, **kw)``, ``load(checkpoint)``.

``load("neural-epdo-small", pretrained=True)`` loads the weights shipped with epdo (:func:`list_pretrained`).
Every model takes float images in [0, 1] of shape ``(B, 1, 28, 28)`` (``ModelInfo.input_shape``).

>>> import epdo.models
>>> "vanilla-cnn" in epdo.models.list()
True
>>> epdo.models.list("tiny-*")
['tiny-cnn']
"""

import importlib as _importlib

from .registry import (
    CheckpointError,
    CheckpointWarning,
    ModelInfo,
    TrainDefaults,
    UnknownModelError,
    count_parameters,
    create_model,
    get_model_info,
    list_models,
    list_pretrained,
    load,
    pretrained_path,
    read_checkpoint,
    register_model,
    resolve_checkpoint,
    save_checkpoint,
)

list = list_models  # noqa: A001  (epdo.models.list(), as timm's list_models)
create = create_model

__all__ = [
    "register_model",
    "list",
    "list_models",
    "create",
    "create_model",
    "load",
    "list_pretrained",
    "pretrained_path",
    "resolve_checkpoint",
    "get_model_info",
    "count_parameters",
    "save_checkpoint",
    "read_checkpoint",
    "ModelInfo",
    "TrainDefaults",
    "UnknownModelError",
    "CheckpointError",
    "CheckpointWarning",
]

# Modules that register models with @register_model, imported in this order.
# To add a model family: write src/epdo/models/<module>.py whose builders are decorated with
# @register_model(paper_params=..., paper=..., train=TrainDefaults(...)), then append "<module>"
# here. Every registered model is then built, run and gradient-checked by
# tests/models/test_registry.py and listed by `epdo models`.
_MODEL_MODULES = ("cnn", "eqpdenet", "mnist_rot", "sphere", "gcnn", "e2cnn_rows", "nbody", "resnet")

for _module in _MODEL_MODULES:
    _importlib.import_module(f"{__name__}.{_module}")
del _module, _importlib
