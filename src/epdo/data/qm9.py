r"""A reader for QM9's standard files (Ramakrishnan et al. 2014, ``dsgdb9nsd_*.xyz``, as a folder or a
``.tar`` / ``.tar.bz2`` archive); QM9 itself is not shipped (offline), the reader is tested on synthetic files.

One file per molecule::

    na                                   number of atoms
    gdb <id> A B C mu alpha homo lumo gap r2 zpve U0 U H G Cv      (15 properties)
    <element> x y z q                    na lines, positions in Angstrom, Mulliken charge q
    <harmonic frequencies>
    <SMILES GDB> <SMILES relaxed>
    <InChI GDB> <InChI relaxed>

Numbers may be written in Mathematica's ``1.5*^-6`` form. :class:`QM9Dataset` items are
``(z (N,) int64, pos (N, 3) float32, target (float32 scalar))`` of variable N, so it is not registered for
``epdo train`` (whose batches are stacked tensors); use it with a collate function of your own.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataFormatError, DataNotFoundError

__all__ = ["QM9_PROPERTIES", "QM9Molecule", "read_qm9_xyz", "parse_qm9_xyz", "QM9Dataset"]

QM9_PROPERTIES = ("A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


@dataclass(frozen=True)
class QM9Molecule:
    """One molecule: ``index`` (gdb id), atomic numbers ``z`` (N,), ``pos`` (N, 3) in Angstrom, Mulliken
    ``charges`` (N,), the 15 ``properties`` (in :data:`QM9_PROPERTIES` order) and the relaxed ``smiles``."""

    index: int
    z: np.ndarray
    pos: np.ndarray
    charges: np.ndarray
    properties: np.ndarray
    smiles: str


def _float(tok: str, where: str) -> float:
    try:
        return float(tok.replace("*^", "e"))
    except ValueError:
        raise DataFormatError(f"{where}: expected a number, got {tok!r}") from None


def parse_qm9_xyz(text: str, name: str = "<string>") -> QM9Molecule:
    """Parse one QM9 ``.xyz`` file's text (``name`` is used in error messages)."""
    lines = text.splitlines()
    if not lines or not lines[0].strip().isdigit():
        got = lines[0][:40] if lines else "an empty file"
        raise DataFormatError(f"{name} line 1: expected the number of atoms, got {got!r}")
    na = int(lines[0])
    if na < 1 or len(lines) < na + 5:
        raise DataFormatError(f"{name}: expected {na + 5} lines for {na} atoms, got {len(lines)}")
    head = lines[1].split()
    if len(head) != 17 or head[0] != "gdb":
        raise DataFormatError(f"{name} line 2: expected 'gdb <id>' and 15 properties, got {len(head)} fields "
                              f"starting {head[:2]}")
    props = np.array([_float(t, f"{name} line 2") for t in head[2:]])
    z, pos, q = [], [], []
    for k in range(na):
        where = f"{name} line {k + 3}"
        tok = lines[k + 2].split()
        if len(tok) != 5 or tok[0] not in _Z:
            raise DataFormatError(f"{where}: expected '<H|C|N|O|F> x y z charge', got {lines[k + 2][:60]!r}")
        z.append(_Z[tok[0]])
        pos.append([_float(t, where) for t in tok[1:4]])
        q.append(_float(tok[4], where))
    smiles = lines[na + 3].split()
    return QM9Molecule(int(head[1]), np.array(z, dtype=np.int64), np.array(pos), np.array(q), props,
                       smiles[-1] if smiles else "")


def read_qm9_xyz(path: str | os.PathLike) -> list[QM9Molecule]:
    """All molecules of a folder of ``.xyz`` files, a ``.tar`` / ``.tar.bz2`` / ``.tar.gz`` archive of them,
    or one ``.xyz`` file, sorted by gdb id."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"QM9: {path} does not exist (expected a folder or archive of dsgdb9nsd_*.xyz files)")
    mols = []
    if path.is_dir():
        for f in sorted(path.glob("*.xyz")):
            mols.append(parse_qm9_xyz(f.read_text(), str(f)))
    elif path.suffix == ".xyz":
        mols.append(parse_qm9_xyz(path.read_text(), str(path)))
    else:
        try:
            with tarfile.open(path) as tar:
                for m in tar.getmembers():
                    if m.isfile() and m.name.endswith(".xyz"):
                        mols.append(parse_qm9_xyz(tar.extractfile(m).read().decode(), f"{path}:{m.name}"))
        except tarfile.TarError as e:
            raise DataFormatError(f"QM9: {path} is not a folder, .xyz file or tar archive ({e})") from None
    if not mols:
        raise DataNotFoundError(f"QM9: no .xyz files in {path}")
    return sorted(mols, key=lambda m: m.index)


class QM9Dataset(Dataset):
    """Molecules of :func:`read_qm9_xyz` with one target property: ``ds[i] = (z, pos, target)``."""

    task = "regression"

    def __init__(self, path: str | os.PathLike, target: str = "U0"):
        if target not in QM9_PROPERTIES:
            raise ValueError(f"QM9Dataset: target must be one of {QM9_PROPERTIES}, got {target!r}")
        self.molecules = read_qm9_xyz(path)
        self.target, self._col = target, QM9_PROPERTIES.index(target)
        self.name, self.is_replica = "qm9", False

    def __len__(self) -> int:
        return len(self.molecules)

    def __getitem__(self, i):
        m = self.molecules[i]
        return (torch.as_tensor(m.z), torch.as_tensor(m.pos, dtype=torch.float32),
                torch.tensor(m.properties[self._col], dtype=torch.float32))
