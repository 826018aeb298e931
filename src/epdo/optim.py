"""The optimisers and learning-rate schedules of the training recipes, in one registry each.

:data:`OPTIMIZERS` maps a name to a factory ``(param_groups, recipe) -> torch.optim.Optimizer``;
:data:`SCHEDULES` names the schedules of :meth:`epdo.models.TrainDefaults.lr_factor`. The command line
(``epdo train --optimizer/--schedule``) offers exactly these names.

* ``adam``: Adam (Kingma & Ba 2015), weight decay as an L2 term in the gradient;
* ``adamw``: AdamW (Loshchilov & Hutter 2019), decoupled weight decay;
* ``sgd``: SGD with the recipe's ``momentum`` and ``nesterov``.

>>> import torch
>>> from epdo.models import TrainDefaults
>>> sorted(OPTIMIZERS)
['adam', 'adamw', 'sgd']
>>> opt = build_optimizer(torch.nn.Linear(3, 2), TrainDefaults(optimizer="sgd", lr=0.1, weight_decay=1e-4))
>>> type(opt).__name__, [g["weight_decay"] for g in opt.param_groups]
('SGD', [0.0001])
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer"]

OptimizerFactory = Callable[[list[dict[str, Any]], Any], torch.optim.Optimizer]

OPTIMIZERS: Mapping[str, OptimizerFactory] = {
    "adam": lambda groups, recipe: torch.optim.Adam(groups, lr=recipe.lr),
    "adamw": lambda groups, recipe: torch.optim.AdamW(groups, lr=recipe.lr),
    "sgd": lambda groups, recipe: torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov),
}

#: schedules of ``TrainDefaults.lr_factor``: constant, exponential (after a burn-in), step (at milestones), cosine
SCHEDULES: tuple[str, ...] = ("constant", "exponential", "step", "cosine")


def build_optimizer(model: nn.Module, recipe: Any) -> torch.optim.Optimizer:
    """The optimiser ``recipe.optimizer`` (a key of :data:`OPTIMIZERS`) over the trainable parameters of ``model``.

    ``recipe.decay_scope == "weights"`` exempts biases, normalisation layers, the last linear layer and the
    names in ``model.no_weight_decay()`` (timm convention) from weight decay; otherwise every parameter decays.
    """
    factory = OPTIMIZERS.get(recipe.optimizer)
    if factory is None:
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if recipe.weight_decay > 0 and getattr(recipe, "decay_scope", "all") == "weights":
        exempt = set(getattr(model, "no_weight_decay", lambda: set())())
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        last_linear = linears[-1] if linears else None
        for mname, m in model.named_modules():
            is_norm = isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) or "Norm" in type(m).__name__
            if is_norm or mname == last_linear:
                exempt.update(f"{mname}.{pn}" if mname else pn for pn, _ in m.named_parameters(recurse=False))
        decay = [p for n, p in params if n not in exempt and not n.endswith("bias")]
        no_decay = [p for n, p in params if n in exempt or n.endswith("bias")]
        groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        groups = [{"params": [p for _, p in params], "weight_decay": recipe.weight_decay}]
    return factory(groups, recipe)
