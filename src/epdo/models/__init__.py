"""Registered models: ``epdo.models.list()``, ``create(name, **kw)``, ``load(checkpoint)``.

>>> import epdo.models
>>> "vanilla-cnn" in epdo.models.list()
True
>>> epdo.models.list("tiny-*")
['tiny-cnn']
"""

from __future__ import annotations

import importlib

from .registry import (
    CheckpointError,
    ModelInfo,
    TrainDefaults,
    UnknownModelError,
    count_parameters,
    create_model,
    get_model_info,
    list_models,
    load,
    read_checkpoint,
    register_model,
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
    "get_model_info",
    "count_parameters",
    "save_checkpoint",
    "read_checkpoint",
    "ModelInfo",
    "TrainDefaults",
    "UnknownModelError",
    "CheckpointError",
]

# Modules that register models with @register_model, imported in this order.
# To add a model family: write src/epdo/models/<module>.py whose builders are decorated with
# @register_model(paper_params=..., paper=..., train=TrainDefaults(...)), then append "<module>"
# here. Every registered model is then built, run and gradient-checked by
# tests/models/test_registry.py and listed by `epdo models`.
_MODEL_MODULES = ["cnn", "eqpdenet", "mnist_rot"]

for _module in _MODEL_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
del _module
