"""Settings of the whole test session.

Every test uses a temporary data cache: ``$EPDO_CACHE`` points to a fresh folder for the session (removed at the
end), so the suite never writes the 15 MB MNIST-rot replica (or anything else) into ``~/.cache/epdo`` and never
reads a stale one from there. Set ``EPDO_TEST_CACHE=<folder>`` to reuse a cache across sessions instead (it is
then kept). Subprocesses started by tests inherit the variable. The compiled C++ kernel lives elsewhere
(``$EPDO_KERNEL_DIR`` / torch's extension cache) and is not affected.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_KEY = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    reuse = os.environ.get("EPDO_TEST_CACHE")
    if reuse:
        os.makedirs(reuse, exist_ok=True)
        os.environ["EPDO_CACHE"] = reuse
    else:
        path = tempfile.mkdtemp(prefix="epdo-test-cache-")
        config.stash[_KEY] = path
        os.environ["EPDO_CACHE"] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_KEY, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    return f"epdo data cache of this session: EPDO_CACHE={os.environ.get('EPDO_CACHE')}"
