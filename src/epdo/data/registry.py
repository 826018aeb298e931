"""The dataset registry: one :class:`DatasetSpec` per name, the seam through which every domain's data
(images, signals on a sphere, point clouds, image folders) reaches :func:`epdo.data.get_dataset` and
``epdo train --data``.

The item contract: ``ds[i]`` is a tuple whose **last** element is the target and whose other elements
are the model's inputs in order, ``model(*item[:-1])``. Classification targets are int64 classes (the
dataset has ``num_classes``), regression targets float tensors. In-memory datasets expose
``.tensors`` (a tuple of tensors with the samples on their first axis, in item order), which the
training command batches by indexing; other datasets are read through a DataLoader.

>>> from epdo.data import DATASETS, dataset_spec
>>> "sample" in DATASETS and dataset_spec("sample").task
'classification'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from torch.utils.data import Dataset

__all__ = ["DatasetSpec", "TASKS", "DATASETS", "register_dataset", "dataset_spec"]

#: what a dataset's targets are: int64 classes (cross-entropy, error in %) or float values (MSE)
TASKS: tuple[str, ...] = ("classification", "regression")


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    ``load(split, *, data_dir=None, cache_dir=None, seed=0, **options) -> Dataset`` builds one split
    (``"train"``, ``"valid"`` or ``"test"``); ``task`` is one of :data:`TASKS`; ``options`` the extra
    keyword options ``load`` accepts (e.g. ``("setting",)``; ``epdo train --setting`` passes
    ``setting``); ``description`` one line for listings.
    """

    name: str
    load: Callable[..., Dataset]
    task: str = "classification"
    options: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"DatasetSpec: invalid dataset name {self.name!r}")
        if not callable(self.load):
            raise TypeError(f"DatasetSpec {self.name!r}: load must be callable, got {self.load!r}")
        if self.task not in TASKS:
            raise ValueError(f"DatasetSpec {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        object.__setattr__(self, "options", tuple(str(o) for o in self.options))

    def check_options(self, options: dict) -> None:
        """A clear error for keyword options ``load`` does not take."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            takes = ", ".join(self.options) if self.options else "none"
            raise ValueError(f"dataset {self.name!r} takes no option {', '.join(map(repr, unknown))} "
                             f"(its options: {takes})")


_SPECS: dict[str, DatasetSpec] = {}


class _Names(Sequence):
    """A live, read-only view of the registered names, in registration order (``choices=`` of argparse)."""

    def __getitem__(self, i):
        return tuple(_SPECS)[i]

    def __len__(self) -> int:
        return len(_SPECS)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in _SPECS

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


#: the registered dataset names (a live sequence: registrations after import show up)
DATASETS: Sequence[str] = _Names()


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry; a name is never overwritten (``ValueError``)."""
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register_dataset: expected a DatasetSpec, got {type(spec).__name__}")
    if spec.name in _SPECS:
        raise ValueError(f"register_dataset: dataset name {spec.name!r} is already registered")
    _SPECS[spec.name] = spec
    return spec


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; ``ValueError`` naming the valid names otherwise."""
    spec = _SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(_SPECS)}")
    return spec
