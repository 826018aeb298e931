"""epdo._io: atomic writes, and orphaned temporaries of killed writers removed on the next write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from epdo import _io

SRC = str(Path(_io.__file__).resolve().parents[1])


def _tmps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_sigkill_during_a_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "data.npz"
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from epdo._io import atomic_write_bytes\n"
        "def slow(f):\n    f.write(b'x' * 1000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        "atomic_write_bytes(sys.argv[2], slow)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, SRC, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        orphan = _tmps(tmp_path)
        assert len(orphan) == 1 and orphan[0].startswith(".data.npz.") and f".{proc.pid}." in orphan[0]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _tmps(tmp_path) == orphan and not target.exists()  # what SIGKILL leaves
    _io.atomic_write_bytes(target, lambda f: f.write(b"ok"))
    assert target.read_bytes() == b"ok" and _tmps(tmp_path) == []


def test_only_stale_temporaries_of_the_same_target_are_removed(tmp_path):
    host = _io._host()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = [
            f".data.npz.{host}.{live.pid}.abcd1234.tmp",  # a live writer
            f".data.npz.{host}.{os.getpid()}.abcd1234.tmp",  # a concurrent write of this process
            f".data.npz.otherhost.1.abcd1234.tmp",  # another host's writer, recent
            ".data.npz.abcd1234.tmp",  # old-style name, recent
            ".data.npz.x.tmp.tmp",  # not our pattern
            f".other.npz.{host}.999999999.abcd1234.tmp",  # another target
            f".data.npz.b.{host}.999999999.abcd1234.tmp",  # the target "data.npz.b", not "data.npz"
            "data.npz.tmp",
        ]
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        drop = [
            f".data.npz.{host}.{int(dead.stdout)}.abcd1234.tmp",  # writer gone
            ".data.npz.zz_99yyy.tmp",  # old-style, old
            f".data.npz.otherhost.1.zzzz9999.tmp",  # another host's, older than a day
        ]
        for name in keep + drop:
            (tmp_path / name).write_bytes(b"partial")
        old = time.time() - 2 * _io.STALE_AFTER_S
        for name in drop[1:]:
            os.utime(tmp_path / name, (old, old))
        removed = _io.clean_stale_temporaries(tmp_path / "data.npz")
        assert sorted(p.name for p in removed) == sorted(drop)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    finally:
        live.kill()
        live.wait(timeout=30)


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ZeroDivisionError):
        _io.atomic_write_bytes(tmp_path / "x.bin", lambda f: 1 / 0)
    assert list(tmp_path.iterdir()) == []
