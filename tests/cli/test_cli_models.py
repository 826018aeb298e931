"""``epdo models`` and the ``python -m epdo`` entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

import epdo.models as models


def test_models_table(cli, capsys):
    assert cli("models") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["model", "params", "paper", "ratio"]
    assert len(lines) == 2 + len(models.list())
    row = next(line for line in lines if line.startswith("vanilla-cnn "))
    assert "1,073,098" in row and "1,100,000" in row and "0.976" in row and "Table 2" in row


def test_models_pattern(cli, capsys):
    assert cli("models", "tiny-*") == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert cli("models", "nothing-*") == 2


def test_help(cli, capsys):
    with pytest.raises(SystemExit) as ei:
        cli("--help")
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("train", "evaluate", "equivariance", "models"))


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "epdo", "train", "--model", "nope", "--out", "unused"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("epdo train: error: unknown model 'nope'")
    assert "Traceback" not in r.stderr


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
