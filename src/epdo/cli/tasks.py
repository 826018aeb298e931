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

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean loss of a batch (what is back-propagated)."""
        if self.name == "classification":
            return F.cross_entropy(output, target)
        return F.mse_loss(output, target.to(output.dtype))

    @torch.no_grad()
    def batch_sums(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(loss sum, metric sum, count)``, float64 on the CPU: loss = sum / count, metric = scale * sum / count."""
        if self.name == "classification":
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
