"""Atomic file writes shared by every part of epdo that writes files (datasets, checkpoints, JSON, PNGs).

A write goes to a temporary file ``.<name>.<host>.<pid>.<random>.tmp`` in the target's folder and is renamed
over the target. A writer killed (SIGKILL) mid-write leaves its temporary behind; the next write of the same
target removes such orphans: temporaries of that target (by the name pattern above, or the older
``.<name>.<8 random chars>.tmp`` of earlier versions) whose writer process on this host is gone, or that are
older than :data:`STALE_AFTER_S` (a writer on another host, a reused pid, an old-style name older than
:data:`LEGACY_STALE_AFTER_S`). Temporaries of other targets and of live writers are never touched.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["atomic_write_bytes", "clean_stale_temporaries", "STALE_AFTER_S", "LEGACY_STALE_AFTER_S"]

#: A temporary whose writer may still be alive is removed only after this long (no epdo write takes a day).
STALE_AFTER_S = 24 * 3600.0
#: Old-style temporaries (no pid in the name) are removed after this long.
LEGACY_STALE_AFTER_S = 60.0


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _tmp_pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"^\.{re.escape(name)}\.(?:(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[a-z0-9_]+|(?P<legacy>[a-z0-9_]{{8}}))\.tmp$"
    )


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove orphaned temporaries of ``path`` left by killed writers (see the module doc); returns them."""
    path = Path(path)
    pattern, host, now = _tmp_pattern(path.name), _host(), time.time()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if m.group("legacy"):
            stale = age > LEGACY_STALE_AFTER_S
        elif m.group("host") == host and int(m.group("pid")) != os.getpid():
            stale = not _pid_alive(int(m.group("pid"))) or age > STALE_AFTER_S
        else:  # another host's writer (cannot be asked), or a concurrent write of this process
            stale = age > STALE_AFTER_S
        if stale:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def atomic_write_bytes(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file atomically: ``write(fileobj)`` into a temp file in the same folder (mode 0o644), fsync,
    then ``os.replace``; a reader never sees a half-written file, a failed write leaves no temp file, and
    temporaries orphaned by earlier killed writes of the same target are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
