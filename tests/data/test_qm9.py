"""The QM9 reader on synthetic files in the standard format (QM9 itself is not available offline)."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from epdo.data import qm9
from epdo.data.errors import DataFormatError, DataNotFoundError

METHANE = """5
gdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t-40.47893\t-40.476062\t-40.475117\t-40.498597\t6.469\t
C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689
H\t 0.002150416\t-0.0060313176\t 0.0019761204\t 0.133921
H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922
H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923
H\t-0.5238136345\t 1.4379326443\t 0.9063972942\t 1.5*^-6
1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078
C\tC
InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4
"""


def _renumbered(index):
    return METHANE.replace("gdb 1", f"gdb {index}")


def test_parse_and_read_folder_and_archive(tmp_path):
    m = qm9.parse_qm9_xyz(METHANE, "m.xyz")
    assert m.index == 1 and m.z.tolist() == [6, 1, 1, 1, 1] and m.pos.shape == (5, 3)
    assert m.charges[-1] == pytest.approx(1.5e-6) and m.smiles == "C"
    assert m.properties[qm9.QM9_PROPERTIES.index("U0")] == pytest.approx(-40.47893)
    assert np.linalg.norm(m.pos[1] - m.pos[0]) == pytest.approx(1.09, abs=0.01)  # a C-H bond
    folder = tmp_path / "xyz"
    folder.mkdir()
    for i in (3, 2):
        (folder / f"dsgdb9nsd_{i:06d}.xyz").write_text(_renumbered(i))
    assert [m.index for m in qm9.read_qm9_xyz(folder)] == [2, 3]
    archive = tmp_path / "qm9.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(folder, arcname="xyz")
    ds = qm9.QM9Dataset(archive, target="gap")
    z, pos, y = ds[0]
    assert len(ds) == 2 and z.tolist() == [6, 1, 1, 1, 1] and pos.shape == (5, 3) and float(y) == pytest.approx(0.5048)


def test_bad_files_name_file_line_expected_and_received(tmp_path):
    with pytest.raises(DataFormatError, match=r"m.xyz line 1: expected the number of atoms, got 'five'"):
        qm9.parse_qm9_xyz("five\n" + METHANE.split("\n", 1)[1], "m.xyz")
    with pytest.raises(DataFormatError, match=r"m.xyz line 4: expected '<H\|C\|N\|O\|F> x y z charge', got 'X"):
        qm9.parse_qm9_xyz(METHANE.replace("H\t 0.002150416", "X\t 0.002150416"), "m.xyz")
    with pytest.raises(DataFormatError, match=r"m.xyz line 3: expected a number, got '1.0858x'"):
        qm9.parse_qm9_xyz(METHANE.replace("1.0858041578", "1.0858x"), "m.xyz")
    with pytest.raises(DataFormatError, match=r"expected 10 lines for 5 atoms, got 4"):
        qm9.parse_qm9_xyz("\n".join(METHANE.splitlines()[:4]), "m.xyz")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        qm9.read_qm9_xyz(tmp_path / "missing")
    (tmp_path / "bad.tar").write_bytes(b"not a tar")
    with pytest.raises(DataFormatError, match="not a folder, .xyz file or tar archive"):
        qm9.read_qm9_xyz(tmp_path / "bad.tar")
    with pytest.raises(ValueError, match="target must be one of"):
        (tmp_path / "one.xyz").write_text(METHANE)
        qm9.QM9Dataset(tmp_path / "one.xyz", target="energy")
