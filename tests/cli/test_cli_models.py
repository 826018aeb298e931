"""``epdo models`` and the ``python -m epdo`` entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

import epdo.models as models


def _table(out: str) -> list[str]:
    return out.split("\n\n")[0].splitlines()


def test_models_table(cli, capsys):
    """At most 100 columns, every column named, the papers' test errors next to their parameter counts."""
    assert cli("models") == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    lines = _table(out)
    header = [h.strip() for h in lines[0].split("  ") if h.strip()]
    assert header == ["model", "params", "paper params", "ratio", "paper err %", "source"]
    assert len(lines) == 2 + len(models.list())
    rule = lines[1].split()
    assert len(rule) == len(header)  # one named column per rule segment
    row = next(line for line in lines if line.startswith("vanilla-cnn "))
    info = models.get_model_info("vanilla-cnn")
    assert "1,073,098" in row and f"{info.paper_params:,}" in row and "0.976" in row and "Table 2" in row
    assert "1.96 +- 0.06" in row and "1.96" in info.paper_error  # the paper's error, next to its count
    eq = next(line for line in lines if line.startswith("eqpdenet-h64 "))
    assert "17.3 +- 0.7" in eq and "Lagrave 2021" in eq
    assert "He 2023: He et al." in out.replace("\n", " ")


def test_models_recipes(cli, capsys):
    assert cli("models", "--recipes", "tiny-*") == 0
    lines = _table(capsys.readouterr().out)
    assert lines[0].split()[-5:] == ["optimizer", "lr", "schedule", "epochs", "batch"]
    t = models.get_model_info("tiny-cnn").train
    assert lines[2].split()[-5:] == [t.optimizer, f"{t.lr:g}", t.schedule, str(t.epochs), str(t.batch_size)]


def test_models_pattern(cli, capsys):
    assert cli("models", "tiny-*") == 0
    assert len(_table(capsys.readouterr().out)) == 3
    assert cli("models", "nothing-*") == 2


def test_help(cli, capsys):
    with pytest.raises(SystemExit) as ei:
        cli("--help")
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("train", "evaluate", "equivariance", "models"))


def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "epdo", "train", "--model", "nope", "--out", "unused"], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().startswith("epdo train: error: unknown model 'nope'")
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # no empty --out folder


def test_build_ext_reports_failure(cli, capsys, monkeypatch):
    """``epdo build-ext``: a failed build is a one-line error (status 2) even with ``--optional``; only a missing
    compiler is a warning with ``--optional``."""
    import epdo.nn._epdo_kernels as K
    from epdo.nn._kernel_build import CompilerNotFoundError, KernelBuildError

    def no_compiler(verbose=False, **kw):
        raise CompilerNotFoundError("no C++ compiler found")

    def broken(verbose=False, **kw):
        raise KernelBuildError("the compiler failed (exit status 1): error: expected ';'")

    monkeypatch.setattr(K, "load_cpp_extension", no_compiler)
    assert cli("build-ext") == 2
    assert "no C++ compiler found" in capsys.readouterr().err
    assert cli("build-ext", "--optional") == 0
    err = capsys.readouterr().err
    assert "warning" in err and "pure-torch backend" in err
    monkeypatch.setattr(K, "load_cpp_extension", broken)
    for argv in (("build-ext",), ("build-ext", "--optional")):
        assert cli(*argv) == 2
        assert "error: the compiler failed" in capsys.readouterr().err


def test_build_ext_success(cli, capsys, monkeypatch):
    import epdo.nn._epdo_kernels as K

    class Mod:
        __file__ = "/cache/epdo_neural_epdo_kernels.so"

    monkeypatch.setattr(K, "load_cpp_extension", lambda verbose=False, **kw: Mod())
    assert cli("build-ext") == 0
    assert "C++ kernel ready" in capsys.readouterr().out
