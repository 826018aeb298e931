"""What ``epdo train`` / ``epdo evaluate`` optimise and report, per dataset task (:data:`epdo.data.TASKS`).

- ``classification``: cross-entropy loss; metric: error in % (wrong / samples).
- ``regression``: mean squared error loss; metric: the same MSE, a mean over all target elements.

Batch sums (:meth:`Task.batch_sums`) are float64 and add up over batches and ranks, so a distributed
evaluation equals the single-process one up to summation order.

>>> import torch
>>> t = get_task("regression")
>>> float(t.loss(torch.zeros(2, 3), torch.ones(2, 3)))
1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Task", "get_task", "TASK_OBJECTS"]


@dataclass(frozen=True)
class Task:
    """A training objective and its reported metric (``metric`` names the key: ``valid_error``, ``test_mse``)."""

    name: str
    metric: str
    unit: str

    def check(self, output: torch.Tensor, target: torch.Tensor) -> None:
        """Classification: ``output`` must be ``(B, classes)`` logits with every target in ``[0, classes)``; a
        :class:`~epdo.cli.common.CLIError` names both sizes otherwise (not torch's "Target 8 is out of bounds")."""
        if self.name != "classification":
            return
        from .common import CLIError  # common imports this module

        if output.dim() != 2 or output.shape[0] != target.shape[0]:
            raise CLIError(f"classification: expected logits of shape ({target.shape[0]}, classes) from the model, "
                           f"got {tuple(output.shape)}")
        if target.numel():
            lo, hi = int(target.min()), int(target.max())
            if lo < 0 or hi >= output.shape[1]:
                raise CLIError(f"the model returns {output.shape[1]} logits per sample but the data have class "
                               f"{hi if hi >= output.shape[1] else lo}: build it with one logit per class (e.g. "
                               f"--model-kw num_classes=N for the data's N classes)")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean loss of a batch (what is back-propagated); classification outputs are checked first."""
        if self.name == "classification":
            self.check(output, target)
            return F.cross_entropy(output, target)
        return F.mse_loss(output, target.to(output.dtype))

    @torch.no_grad()
    def batch_sums(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(loss sum, metric sum, count)``, float64 on the CPU: loss = sum / count, metric = scale * sum / count."""
        if self.name == "classification":
            self.check(output, target)
            loss_sum = F.cross_entropy(output.float(), target, reduction="sum").double().cpu()
            wrong = (output.argmax(dim=1) != target).sum().double().cpu()
            return loss_sum, wrong, int(target.shape[0])
        se = F.mse_loss(output.double(), target.double(), reduction="sum").cpu()
        return se, se, int(target.numel())

    @property
    def scale(self) -> float:
        return 100.0 if self.name == "classification" else 1.0

    def format(self, value: float) -> str:
        return f"{value:.2f}%" if self.name == "classification" else f"{value:.5g}"


TASK_OBJECTS: dict[str, Task] = {
    "classification": Task("classification", "error", "%"),
    "regression": Task("regression", "mse", ""),
}


def get_task(name: str) -> Task:
    try:
        return TASK_OBJECTS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASK_OBJECTS)}") from None
