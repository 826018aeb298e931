"""The README works when pasted: every ```python block runs (fresh namespace, a temporary working directory),
every ``epdo`` command it shows parses with the command line's own parser (a renamed flag fails here), the
quickstart's ``epdo train ... && epdo evaluate ...`` runs (one short epoch), and the test command runs the
docstring examples of the package. Also: the test session's data cache is temporary (tests/conftest.py)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"^```python\n(.*?)^```", TEXT, flags=re.S | re.M)
BASH_BLOCKS = re.findall(r"^```bash\n(.*?)^```", TEXT, flags=re.S | re.M)
SETUP = ("python3 -m venv", ". ", "source ", "pip ", "python -m pip")


def _commands(block: str) -> list[str]:
    """The commands of a bash block: every line, split at ``&&``, without the venv / pip setup."""
    cmds = []
    for line in block.splitlines():
        for part in line.split("&&"):
            part = part.strip()
            if part and not part.startswith("#") and not part.startswith(SETUP):
                cmds.append(part)
    return cmds


def _epdo_commands() -> list[str]:
    """Every ``epdo ...`` command of the bash blocks and of the inline code spans (``...`` ones excepted)."""
    cmds = [c for b in BASH_BLOCKS for c in _commands(b) if c.startswith("epdo ")]
    inline = re.findall(r"`(epdo [^`]+)`", TEXT)
    cmds += [" ".join(c.split()) for c in inline if " --" in c and "..." not in c and "|" not in c]
    return cmds


def test_the_readme_has_code():
    assert len(PYTHON_BLOCKS) >= 2 and len(BASH_BLOCKS) >= 2 and len(_epdo_commands()) >= 5


@pytest.mark.parametrize(
    "block",
    [pytest.param(b, id=f"python-{i}") for i, b in enumerate(PYTHON_BLOCKS)],
)
def test_python_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("command", _epdo_commands())
def test_epdo_command_parses(command):
    from epdo.cli.main import build_parser

    argv = shlex.split(command)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse printed the reason to stderr
        pytest.fail(f"README command does not parse (exit {e.code}): {command}")
    assert callable(args.func)


def test_the_test_command_runs_the_doctests():
    (block,) = [b for b in BASH_BLOCKS if "pytest" in b]
    (cmd,) = [c for c in _commands(block) if "pytest" in c]
    argv = shlex.split(cmd)
    assert argv[:4] == ["python", "-m", "pytest", "-q"] and "tests" in argv
    assert "--doctest-modules" in argv and "src/epdo" in argv


def test_quickstart_runs(tmp_path, monkeypatch, capsys):
    """The first block's ``epdo train ... && epdo evaluate ...``, one short epoch on 64 images: both succeed and
    write where the README says (the evaluation into runs/evaluate-<model>, nothing beside the checkpoint)."""
    from epdo.cli.main import main

    cmds = [shlex.split(c)[1:] for c in _commands(BASH_BLOCKS[0]) if c.startswith("epdo ")]
    train = next(a for a in cmds if a[0] == "train")
    evaluate = next(a for a in cmds if a[0] == "evaluate")
    train[train.index("--epochs") + 1] = "1"
    train += ["--limit-train", "64", "--limit-eval", "50"]
    evaluate += ["--limit", "50"]
    monkeypatch.chdir(tmp_path)
    assert main(train) == 0
    run = tmp_path / train[train.index("--out") + 1]
    assert {"best.pt", "last.pt", "metrics.jsonl", "results.json", "train.log"} <= {p.name for p in run.iterdir()}
    before = sorted(p.name for p in run.iterdir())
    assert main(evaluate) == 0
    assert sorted(p.name for p in run.iterdir()) == before
    model = train[train.index("--model") + 1]
    assert (tmp_path / "runs" / f"evaluate-{model}" / "eval-sample-test.json").is_file()
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "test error" in out and "error" in out.splitlines()[-2]


def test_the_session_uses_a_temporary_data_cache():
    from epdo.data import resolve_cache_dir

    cache = resolve_cache_dir()
    assert os.environ.get("EPDO_TEST_CACHE") or "epdo-test-cache-" in cache.name
    assert Path.home() / ".cache" / "epdo" != cache
