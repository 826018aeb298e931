r"""Building and finding the optional C++ kernel of :mod:`epdo.nn._epdo_kernels` (no torch build machinery).

A build is a directory ``<kernel_dir>/<tag>/`` holding ``epdo_kernels.so``, a copy of the sources it was compiled
from and ``build.json``. The tag is a hash of everything the binary depends on (:func:`build_config`): the
contents of ``csrc/*.cpp`` / ``*.h``, the torch version and commit, the C++ ABI, the compile flags, the GEMM
choice and, with ``-march=native``, the CPU. So a build is found by one ``stat`` (:func:`find_build`), never by
compiling, and a new torch, a changed source or other flags simply have no build yet.

:func:`build` (``epdo build-ext``) compiles with one compiler call (``$CXX``, default ``c++``; no ninja) into a
temporary directory beside the target and publishes it with one atomic ``rename``, so a killed build leaves
no half-written build behind, only a temporary directory that the next build removes. Builds of one tag are
serialised by an epdo lock file ``<tag>.lock`` (``O_CREAT | O_EXCL``, holding ``pid host time``) that is waited
for at most ``lock_timeout`` seconds, with a message naming the file; a lock whose owner process is gone (same
host) or that is older than :data:`STALE_LOCK_AGE` is broken with a warning. The lock only saves duplicate
work: two builds racing past it still publish correctly (the second ``rename`` fails and is discarded).

The generator's float32 GEMMs use oneDNN's matmul (``at::native::mkldnn_matmul``, exported by libtorch_cpu but
not declared in its public headers) only when that exact symbol is found in libtorch_cpu and torch has
oneDNN; otherwise (or with ``$EPDO_KERNEL_GEMM=aten``) the public ``at::mm``, with a warning when the
symbol is missing. The library links with ``--no-undefined``, so a symbol that is not there fails the build,
not a later load. Where it is compiled in, the library still probes it once on a 2x2 product and falls back
to ``at::mm`` if torch refuses it (torch 2.13 does on CPUs without avx512bw/vl/dq or avx_ne_convert, even
for float32: measured on this AMD EPYC); ``CppLibrary.gemm_backend`` says which runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

log = logging.getLogger("epdo.nn._epdo_kernels")

CSRC = Path(__file__).resolve().parent / "csrc"
LIB_FILE = "epdo_kernels.so"
DEFAULT_FLAGS = "-O3 -march=native -fopenmp"
#: ``$EPDO_KERNEL_GEMM``: ``auto`` (oneDNN where its symbol exists, else at::mm), ``mkldnn`` (required), ``aten``.
GEMM_ENV = "EPDO_KERNEL_GEMM"
GEMM_CHOICES = ("auto", "mkldnn", "aten")
#: the mangled name of ``at::native::mkldnn_matmul(const Tensor&, const Tensor&, const Tensor&, float, float)``,
#: the declaration in csrc/epdo_kernels.cpp (Itanium C++ ABI).
MKLDNN_MATMUL_SYMBOL = "_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff"
#: seconds ``epdo build-ext`` waits for another build's lock by default (a build takes 20-35 s here).
LOCK_TIMEOUT = 120.0
#: a lock older than this (seconds) is stale whoever holds it: 30 times the build time measured here.
STALE_LOCK_AGE = 900.0
#: seconds one compiler call may take.
COMPILE_TIMEOUT = 900.0


class KernelBuildError(RuntimeError):
    """The C++ kernel could not be built or loaded."""


class CompilerNotFoundError(KernelBuildError):
    """No C++ compiler: the only build failure ``epdo build-ext --optional`` tolerates."""


class BuildLockTimeout(KernelBuildError):
    """Another live build held the lock for longer than the timeout."""


def kernel_dir() -> Path:
    """Where builds live: ``$EPDO_KERNEL_DIR``, else ``~/.cache/epdo/kernels`` (created by :func:`build` only).

    Not under ``$EPDO_CACHE``: a build belongs to the torch install, not to the data, and tests that redirect
    the data cache must still find the kernel that CI built."""
    env = os.environ.get("EPDO_KERNEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "epdo" / "kernels"


def find_compiler() -> list[str] | None:
    """The compiler command (``$CXX``, default ``c++``) if it is on the PATH, else ``None``."""
    cmd = shlex.split(os.environ.get("CXX") or "c++")
    if not cmd:
        return None
    exe = shutil.which(cmd[0])
    return None if exe is None else [exe, *cmd[1:]]


def _sources() -> list[Path]:
    return sorted(p for p in CSRC.iterdir() if p.suffix in (".cpp", ".h"))


def _flags() -> list[str]:
    return os.environ.get("EPDO_CPP_FLAGS", DEFAULT_FLAGS).split()


def _cpu_id() -> str:
    """A short hash of the CPU model and feature flags (builds with ``-march=native`` are CPU specific)."""
    text = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            lines = [ln for ln in fh.read(1 << 16).splitlines() if ln.startswith(("model name", "flags", "Features"))]
        text += "\n".join(dict.fromkeys(lines))
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _libtorch_cpu() -> Path | None:
    libs = sorted((Path(torch.__file__).resolve().parent / "lib").glob("libtorch_cpu.*"))
    return libs[0] if libs else None


def mkldnn_matmul_status() -> tuple[bool, str]:
    """Whether ``at::native::mkldnn_matmul`` with the declared signature is exported here, and why not."""
    if not torch.backends.mkldnn.is_available():
        return False, "this torch is built without oneDNN (torch.backends.mkldnn.is_available() is False)"
    lib = _libtorch_cpu()
    if lib is None:
        return False, f"libtorch_cpu not found in {Path(torch.__file__).parent / 'lib'}"
    try:
        getattr(ctypes.CDLL(str(lib)), MKLDNN_MATMUL_SYMBOL)
    except (OSError, AttributeError):
        return False, f"{lib.name} does not export at::native::mkldnn_matmul ({MKLDNN_MATMUL_SYMBOL})"
    return True, "at::native::mkldnn_matmul found in " + lib.name


def gemm_choice() -> tuple[str, str]:
    """``("mkldnn" | "aten", reason)`` for the generator's float32 GEMMs, from ``$EPDO_KERNEL_GEMM`` and
    :func:`mkldnn_matmul_status`."""
    req = os.environ.get(GEMM_ENV, "auto") or "auto"
    if req not in GEMM_CHOICES:
        raise ValueError(f"${GEMM_ENV} must be one of {GEMM_CHOICES}, got {req!r}")
    if req == "aten":
        return "aten", f"${GEMM_ENV}=aten"
    ok, why = mkldnn_matmul_status()
    if ok:
        return "mkldnn", why
    if req == "mkldnn":
        raise KernelBuildError(f"${GEMM_ENV}=mkldnn, but {why}")
    return "aten", why


def build_config() -> dict:
    """Everything a build depends on; its hash is the build's tag."""
    h = hashlib.sha256()
    for p in _sources():
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    flags = _flags()
    return {"source": h.hexdigest(), "torch": torch.__version__, "torch_git": torch.version.git_version,
            "cxx11_abi": bool(torch.compiled_with_cxx11_abi()), "flags": flags, "gemm": gemm_choice()[0],
            "platform": f"{sys.platform}-{platform.machine()}",
            "cpu": _cpu_id() if any(f.startswith(("-march=native", "-mcpu=native")) for f in flags) else ""}


def build_tag(config: dict | None = None) -> str:
    config = build_config() if config is None else config
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:20]
    return f"torch{config['torch'].split('+')[0]}-{digest}"


def find_build() -> Path | None:
    """The library of a complete build matching :func:`build_config`, or ``None``: never compiles, never waits."""
    so = kernel_dir() / build_tag() / LIB_FILE
    return so if so.is_file() else None


# --- the build lock ---------------------------------------------------------------------------------------
def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) holds nothing
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _read_lock(path: Path) -> tuple[int | None, str, float]:
    """``(pid, host, created)`` of a lock file (pid ``None`` if unreadable or still being written)."""
    try:
        text = path.read_text()
        created = path.stat().st_mtime
    except FileNotFoundError:
        raise
    except OSError:
        return None, "", time.time()
    parts = text.split()
    try:
        return int(parts[0]), parts[1], float(parts[2])
    except (IndexError, ValueError):
        return None, "", created


def _stale_reason(pid: int | None, host: str, created: float, stale_after: float) -> str | None:
    age = time.time() - created
    if age > stale_after:
        return f"it is {age:.0f} s old (more than {stale_after:.0f} s)"
    if pid is None:
        return "it is empty or unreadable" if age > 10.0 else None
    if host == socket.gethostname() and not _pid_running(pid):
        return f"its owner, pid {pid}, is not running"
    return None


@contextmanager
def build_lock(path: Path, timeout: float = LOCK_TIMEOUT, stale_after: float = STALE_LOCK_AGE):
    """Hold the lock file ``path`` (waiting at most ``timeout`` s; stale locks are broken with a warning)."""
    token = f"{os.getpid()} {socket.gethostname()} {time.time():.3f}\n"
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid, host, created = _read_lock(path)
            except FileNotFoundError:
                continue  # released meanwhile
            reason = _stale_reason(pid, host, created, stale_after)
            if reason is not None:
                log.warning("epdo build-ext: breaking the stale lock %s (%s)", path, reason)
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                continue
            owner = f"pid {pid} on {host}" if pid is not None else "a process that is still writing it"
            if time.monotonic() >= deadline:
                raise BuildLockTimeout(
                    f"another build of the epdo C++ kernel holds the lock {path} ({owner}, for "
                    f"{time.time() - created:.0f} s); wait for it to finish, or delete that file if no build is "
                    f"running") from None
            if not announced:
                log.warning("epdo build-ext: waiting up to %.0f s for another build (%s) holding %s; delete that "
                            "file if no build is running", timeout, owner, path)
                announced = True
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
        break
    try:
        yield
    finally:
        try:
            if path.read_text() == token:
                path.unlink()
        except OSError:
            pass


# --- compiling --------------------------------------------------------------------------------------------
def _command(cxx: list[str], config: dict, source: Path, out: Path) -> list[str]:
    from torch.utils.cpp_extension import include_paths, library_paths

    cmd = [*cxx, *config["flags"], "-shared", "-fPIC", "-std=c++20",
           f"-D_GLIBCXX_USE_CXX11_ABI={int(config['cxx11_abi'])}"]
    if config["gemm"] == "mkldnn":
        cmd.append("-DEPDO_USE_MKLDNN_MATMUL")
    for p in include_paths():
        cmd += ["-isystem", p]
    cmd += [str(source), "-o", str(out)]
    for p in library_paths():
        cmd += [f"-L{p}", f"-Wl,-rpath,{p}"]
    if sys.platform.startswith("linux"):
        cmd.append("-Wl,--no-undefined")
    return cmd + ["-lc10", "-ltorch_cpu"]


def _remove_stale_temporaries(kdir: Path, tag: str) -> None:
    """Temporary build directories of ``tag`` left by killed builds (called with the tag's lock held)."""
    for p in kdir.glob(f"{tag}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def build(verbose: bool = False, lock_timeout: float = LOCK_TIMEOUT, compile_timeout: float = COMPILE_TIMEOUT,
          validate=None) -> tuple[Path, bool]:
    """Compile the kernel into ``kernel_dir()/<tag>/`` unless it is there; returns ``(library, built_now)``.

    ``validate(path)``, if given, is called on the freshly compiled library before it is published (e.g. to
    load it); an exception there discards the build. Raises :class:`CompilerNotFoundError`,
    :class:`BuildLockTimeout` or :class:`KernelBuildError` (with the compiler's output)."""
    cxx = find_compiler()
    if cxx is None:
        raise CompilerNotFoundError(f"no C++ compiler found ($CXX={os.environ.get('CXX', '')!r}, else 'c++' on "
                                    "the PATH); install g++ or clang++ to build the epdo C++ kernel")
    config = build_config()
    choice, why = gemm_choice()
    if choice == "aten" and not os.environ.get(GEMM_ENV):
        log.warning("epdo C++ kernel: %s; its float32 GEMMs use the public at::mm instead of oneDNN's matmul "
                    "(correct, up to about 2x slower generator GEMMs on AMD CPUs)", why)
    tag = build_tag(config)
    kdir = kernel_dir()
    final = kdir / tag
    if (final / LIB_FILE).is_file():
        return final / LIB_FILE, False
    kdir.mkdir(parents=True, exist_ok=True)
    with build_lock(kdir / f"{tag}.lock", lock_timeout):
        if (final / LIB_FILE).is_file():
            return final / LIB_FILE, False  # built by the lock's previous holder
        _remove_stale_temporaries(kdir, tag)
        tmp = Path(tempfile.mkdtemp(prefix=f"{tag}.tmp-", dir=kdir))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a published build is readable like any cache
            for p in _sources():
                shutil.copy2(p, tmp / p.name)
            cmd = _command(cxx, config, tmp / "epdo_kernels.cpp", tmp / LIB_FILE)
            if verbose:
                print(" ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
            t0 = time.perf_counter()
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=compile_timeout,
                                   stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as e:
                raise KernelBuildError(f"the compiler ran past {compile_timeout:.0f} s: {' '.join(cmd[:3])} ...") from e
            except OSError as e:
                raise KernelBuildError(f"could not run the compiler {cxx[0]}: {e}") from e
            if verbose and (r.stdout or r.stderr):
                print(r.stdout + r.stderr, file=sys.stderr)
            if r.returncode != 0 or not (tmp / LIB_FILE).is_file():
                raise KernelBuildError(f"the compiler failed (exit status {r.returncode}): {(r.stderr or r.stdout)[-3000:]}"
                                       f"\ncommand: {' '.join(shlex.quote(c) for c in cmd)}")
            info = dict(config, tag=tag, gemm_reason=why, compiler=cxx, seconds=round(time.perf_counter() - t0, 1),
                        built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), command=cmd)
            (tmp / "build.json").write_text(json.dumps(info, indent=1) + "\n")
            if validate is not None:
                validate(tmp / LIB_FILE)
            try:
                os.rename(tmp, final)  # atomic publish
            except OSError:
                if not (final / LIB_FILE).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # a racing build published first: keep that one
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final / LIB_FILE, True


def read_build_info(lib: Path) -> dict:
    """``build.json`` of the build holding ``lib`` (empty if missing)."""
    try:
        return json.loads((Path(lib).parent / "build.json").read_text())
    except (OSError, ValueError):
        return {}
