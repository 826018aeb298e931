"""The optional C++ kernel's life cycle: found by a stat (never compiled by backend="auto"), built atomically
under a lock that never hangs, the oneDNN GEMM guarded with a tested fallback, the ops registered with
torch.library (opcheck, torch.compile, gradients against the torch backend)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import epdo.nn._epdo_kernels as K
import epdo.nn._kernel_build as B
from epdo import diffops

SRC = str(Path(K.__file__).resolve().parents[2])


def _need_cpp() -> None:
    """Skip without the kernel, but fail under CI when a compiler is present (the build is then broken)."""
    if not K.cpp_extension_available(build=os.environ.get("EPDO_BUILD_CPP") == "1"):
        if K.cpp_kernel_required():
            pytest.fail("C++ kernel not available under CI although a compiler is present (epdo build-ext failed?)")
        pytest.skip("C++ kernel not built (epdo build-ext, or EPDO_BUILD_CPP=1 to compile it here)")


def _stencils(order=2, k=3):
    disc = diffops.Discretization("fd", k)
    return K.PDOStencils(diffops.stencils_1d(order, disc), diffops.multi_indices(order))


def _env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CXX"}  # flags and GEMM as here: the same build tag
    env.update(PYTHONPATH=SRC + os.pathsep + env.get("PYTHONPATH", ""), EPDO_KERNEL_DIR=str(tmp_path / "kernels"),
               TORCH_EXTENSIONS_DIR=str(tmp_path / "torch_extensions"), OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _python(code: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _write_lock(path: Path, pid: int, age: float = 0.0, host: str | None = None) -> None:
    import socket

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {host or socket.gethostname()} {time.time() - age:.3f}\n")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """This process as if nothing were loaded, with an empty kernel directory."""
    monkeypatch.setattr(K, "_CPP_STATE", {})
    monkeypatch.setenv("EPDO_KERNEL_DIR", str(tmp_path / "kernels"))
    for var in ("EPDO_CPP_FLAGS", B.GEMM_ENV, "CXX"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "kernels"


# --- finding a build: a stat, never a compile ----------------------------------------------------------------
def test_build_tag_depends_on_source_torch_flags_and_gemm(monkeypatch, tmp_path):
    tag = B.build_tag()
    assert B.build_tag() == tag  # deterministic
    monkeypatch.setenv("EPDO_CPP_FLAGS", "-O2 -fopenmp")
    assert B.build_tag() != tag
    monkeypatch.delenv("EPDO_CPP_FLAGS")
    monkeypatch.setenv(B.GEMM_ENV, "aten")
    assert B.build_config()["gemm"] == "aten"
    if B.mkldnn_matmul_status()[0]:
        assert B.build_tag() != tag
    monkeypatch.delenv(B.GEMM_ENV)
    monkeypatch.setattr(torch, "__version__", "9.9.9+cpu")
    assert B.build_tag() != tag and B.build_tag().startswith("torch9.9.9-")
    monkeypatch.undo()
    csrc = tmp_path / "csrc"
    csrc.mkdir()
    for p in B.CSRC.iterdir():
        (csrc / p.name).write_bytes(p.read_bytes())
    monkeypatch.setattr(B, "CSRC", csrc)
    assert B.build_tag() == tag
    (csrc / "epdo_kernels.cpp").write_text((csrc / "epdo_kernels.cpp").read_text() + "\n// changed\n")
    assert B.build_tag() != tag


def test_sources_are_real_files_shipped_with_the_package():
    names = sorted(p.name for p in B.CSRC.iterdir() if p.suffix in (".cpp", ".h"))
    assert "epdo_kernels.cpp" in names
    text = (B.CSRC / "epdo_kernels.cpp").read_text()
    assert "TORCH_LIBRARY(epdo_cpp" in text and "#ifdef EPDO_USE_MKLDNN_MATMUL" in text
    assert "_CPP_SOURCE" not in Path(K.__file__).read_text()  # no C++ in a Python string


def test_auto_with_an_empty_cache_never_compiles_and_is_quick(fresh_state, monkeypatch):
    def no(*a, **k):
        pytest.fail("backend='auto' must not compile")

    monkeypatch.setattr(B, "build", no)
    monkeypatch.setattr(B.subprocess, "run", no)
    t0 = time.perf_counter()
    assert K.resolve_backend("auto", torch.zeros(1, 2, 3, 3)) == "torch"
    assert time.perf_counter() - t0 < 2.0
    assert not fresh_state.exists()  # nothing written, no build directory
    assert not K.cpp_extension_available()  # build=False: a stat only


def test_auto_ignores_a_build_that_does_not_load(fresh_state, caplog):
    so = fresh_state / B.build_tag() / B.LIB_FILE
    so.parent.mkdir(parents=True)
    so.write_bytes(b"not a shared library")
    assert B.find_build() == so
    with caplog.at_level("WARNING", logger="epdo.nn._epdo_kernels"):
        assert K.resolve_backend("auto", torch.zeros(1, 2, 3, 3)) == "torch"
    assert "could not be loaded" in caplog.text and str(so) in caplog.text


def test_auto_forward_with_stale_locks_does_not_hang(tmp_path):
    """A fresh process (empty cache, as in a new venv), torch's extension lock and epdo's build lock both left
    behind (the latter by a live process: the worst case): the default backend runs torch at once, builds
    nothing; with a matching build present it loads it, lock or not."""
    env = _env(tmp_path)
    kdir = Path(env["EPDO_KERNEL_DIR"])
    torch_lock = Path(env["TORCH_EXTENSIONS_DIR"]) / "epdo_neural_epdo_kernels" / "lock"
    torch_lock.parent.mkdir(parents=True)
    torch_lock.write_text("")
    _write_lock(kdir / f"{B.build_tag()}.lock", os.getpid())
    code = """
        import time, torch
        from epdo import fields, groups
        from epdo.nn import NeuralEPDO
        from epdo.nn._epdo_kernels import resolve_backend
        t = fields.FieldType(groups.cyclic(4), [groups.cyclic(4).regular])
        layer = NeuralEPDO(t, order=2, kernel_size=3)
        t0 = time.perf_counter()
        layer(torch.randn(1, 4, 6, 6)).sum().backward()
        print(resolve_backend("auto", torch.zeros(1)), round(time.perf_counter() - t0, 3))
    """
    r = _python(code, env)
    assert r.returncode == 0, r.stderr
    backend, seconds = r.stdout.split()
    assert backend == "torch" and float(seconds) < 20
    assert sorted(p.name for p in kdir.iterdir()) == [f"{B.build_tag()}.lock"]  # no build directory appeared
    real = B.find_build()
    if real is not None:  # the same situation with a matching build in the cache
        (kdir / B.build_tag()).symlink_to(real.parent, target_is_directory=True)
        r = _python(code, env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] == "cpp"


# --- epdo build-ext: lock with timeout, stale locks broken, atomic publish, --optional ----------------------
def _fake_compiler(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "fake-c++"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)
    return str(exe)


def _build_ext(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "epdo", "build-ext", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("stale", ["dead-pid", "old"])
def test_build_ext_breaks_a_stale_lock_with_a_warning(tmp_path, stale):
    """A stale epdo lock (its owner gone, or older than the stale age) is broken with a warning; the build then
    runs (here a compiler that fails at once: 'build-ext --optional' must report it as an error, status 2) and
    leaves no lock and no temporary directory behind."""
    env = _env(tmp_path, CXX=_fake_compiler(tmp_path, 'echo "fake: error: expected unqualified-id" >&2; exit 1'))
    kdir = Path(env["EPDO_KERNEL_DIR"])
    lock = kdir / f"{B.build_tag()}.lock"
    if stale == "dead-pid":
        _write_lock(lock, _dead_pid())
    else:
        _write_lock(lock, os.getpid(), age=B.STALE_LOCK_AGE + 60)
    (kdir / f"{B.build_tag()}.tmp-killed").mkdir()  # left by a killed build
    t0 = time.perf_counter()
    r = _build_ext(env, "--optional")
    assert time.perf_counter() - t0 < 60
    assert r.returncode == 2, r.stderr
    assert "breaking the stale lock" in r.stderr and str(lock) in r.stderr
    assert ("is not running" if stale == "dead-pid" else "s old") in r.stderr
    assert "error: the compiler failed (exit status 1): fake: error: expected unqualified-id" in r.stderr
    assert sorted(kdir.iterdir()) == []  # lock released, temporaries removed, nothing published


def test_build_ext_waits_for_a_live_lock_then_names_it(tmp_path):
    env = _env(tmp_path, CXX=_fake_compiler(tmp_path, "exit 1"))
    lock = Path(env["EPDO_KERNEL_DIR"]) / f"{B.build_tag()}.lock"
    _write_lock(lock, os.getpid())  # this test process: alive
    t0 = time.perf_counter()
    r = _build_ext(env, "--lock-timeout", "1")
    assert time.perf_counter() - t0 < 60
    assert r.returncode == 2
    assert f"holds the lock {lock} (pid {os.getpid()}" in r.stderr and "delete that file" in r.stderr
    assert "waiting up to 1 s" in r.stderr
    assert lock.exists()  # not ours to remove


def test_build_ext_publishes_atomically_and_is_found_afterwards(tmp_path):
    """The whole pipeline with a stand-in compiler that copies an existing build to its -o path: the build is
    validated (loaded) in its temporary directory, renamed into place with build.json, and then found by
    backend="auto" in a new process; a second build-ext only loads it."""
    real = B.find_build()
    if real is None:
        pytest.skip("needs one real build to stand in for the compiler's output (epdo build-ext)")
    cxx = _fake_compiler(tmp_path, f'while [ $# -gt 0 ]; do [ "$1" = -o ] && cp "{real}" "$2"; shift; done')
    env = _env(tmp_path, CXX=cxx)
    kdir = Path(env["EPDO_KERNEL_DIR"])
    r = _build_ext(env)
    assert r.returncode == 0, r.stderr
    final = kdir / B.build_tag() / B.LIB_FILE
    assert f"C++ kernel ready in" in r.stdout and str(final) in r.stdout
    assert sorted(p.name for p in kdir.iterdir()) == [B.build_tag()]
    info = json.loads((final.parent / "build.json").read_text())
    assert info["tag"] == B.build_tag() and info["compiler"] == [cxx] and info["torch"] == torch.__version__
    assert (final.parent / "epdo_kernels.cpp").read_bytes() == (B.CSRC / "epdo_kernels.cpp").read_bytes()
    r = _python("import torch, epdo.nn._epdo_kernels as K; print(K.resolve_backend('auto', torch.zeros(1)))",
                dict(env, CXX="/nonexistent/c++"))
    assert r.stdout.split() == ["cpp"], r.stderr
    r = _build_ext(dict(env, CXX="/nonexistent/c++"))  # found: no compiler needed
    assert r.returncode == 0 and str(final) in r.stdout, r.stderr


def cli(*argv) -> int:
    from epdo.cli.main import main

    return main(list(argv))


def test_build_ext_optional_tolerates_only_a_missing_compiler(capsys, fresh_state, monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    assert cli("build-ext", "--optional") == 0
    err = capsys.readouterr().err
    assert "warning: no C++ compiler found" in err and "pure-torch backend" in err
    assert cli("build-ext") == 2
    assert "error: no C++ compiler found" in capsys.readouterr().err
    monkeypatch.setattr(K, "_CPP_STATE", {})
    monkeypatch.setenv("CXX", _fake_compiler(tmp_path, 'echo "broken source" >&2; exit 3'))
    assert cli("build-ext", "--optional") == 2
    assert "error: the compiler failed (exit status 3): broken source" in capsys.readouterr().err
    assert cli("build-ext", "--lock-timeout", "-1") == 2
    assert "--lock-timeout must be >= 0" in capsys.readouterr().err


def test_lock_is_released_and_never_waited_on_without_timeout(tmp_path):
    lock = tmp_path / "x.lock"
    with B.build_lock(lock, timeout=0.5):
        assert lock.read_text().split()[0] == str(os.getpid())
        t0 = time.perf_counter()
        with pytest.raises(B.BuildLockTimeout, match="wait for it to finish, or delete that file"):
            with B.build_lock(lock, timeout=0.3):
                pass
        assert 0.3 <= time.perf_counter() - t0 < 5
    assert not lock.exists()
    lock.write_text("")  # killed between creating and writing: stale once older than a few seconds
    os.utime(lock, (time.time() - 60, time.time() - 60))
    with B.build_lock(lock, timeout=0.1):
        pass
    assert not lock.exists()


# --- the oneDNN GEMM: detected, never assumed -------------------------------------------------------------
def test_mkldnn_detection_and_fallback_choice(monkeypatch):
    monkeypatch.delenv(B.GEMM_ENV, raising=False)
    ok, why = B.mkldnn_matmul_status()
    assert B.gemm_choice()[0] == ("mkldnn" if ok else "aten")
    monkeypatch.setattr(B, "MKLDNN_MATMUL_SYMBOL", "_ZN2at6native20no_such_epdo_symbolEv")
    ok, why = B.mkldnn_matmul_status()
    assert not ok and "does not export at::native::mkldnn_matmul" in why or "oneDNN" in why
    assert B.gemm_choice() == ("aten", why)
    monkeypatch.setenv(B.GEMM_ENV, "mkldnn")
    with pytest.raises(B.KernelBuildError, match="EPDO_KERNEL_GEMM=mkldnn, but"):
        B.gemm_choice()
    monkeypatch.setenv(B.GEMM_ENV, "blas")
    with pytest.raises(ValueError, match=r"must be one of \('auto', 'mkldnn', 'aten'\), got 'blas'"):
        B.gemm_choice()


def test_compiled_fallback_gemm_build_is_correct(tmp_path):
    """A real compile (about 20-60 s) with the public at::mm forced: the build is published, reports 'aten',
    and its float32 / float64 products and gradients match the torch backend."""
    if not K.compiler_available():
        if K.cpp_kernel_required():
            pytest.fail("unreachable: cpp_kernel_required implies a compiler")
        pytest.skip("no C++ compiler")
    env = _env(tmp_path, **{B.GEMM_ENV: "aten"})
    r = _build_ext(env, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "float32 GEMMs: at::mm" in r.stdout
    code = """
        import torch
        import epdo.nn._epdo_kernels as K
        from epdo import diffops
        lib = K.load_cpp_extension()
        assert lib.gemm_backend == "aten" and lib.info["gemm"] == "aten", (lib.gemm_backend, lib.info)
        disc = diffops.Discretization("fd", 5)
        st = K.PDOStencils(diffops.stencils_1d(4, disc), diffops.multi_indices(4))
        torch.manual_seed(0)
        for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
            args = [torch.randn(2, 4, 9, 7, dtype=dtype), torch.randn(2, 3, 9, 7, dtype=dtype),
                    torch.randn(2 * 15, 3, dtype=dtype), torch.randn(2 * 15, dtype=dtype)]
            args = [a.requires_grad_() for a in args]
            outs = [K.generated_pdo_product(*args, st, b) for b in ("torch", "cpp")]
            g = torch.randn_like(outs[0])
            grads = [torch.autograd.grad(o, args, g) for o in outs]
            torch.testing.assert_close(outs[1], outs[0], rtol=tol, atol=tol)
            for a, e in zip(grads[1], grads[0]):
                torch.testing.assert_close(a, e, rtol=tol, atol=tol * max(1.0, e.abs().max().item()))
        print("fallback ok", lib)
    """
    r = _python(code, env, timeout=300)
    assert r.returncode == 0 and "fallback ok" in r.stdout, r.stderr


# --- torch.library registration ------------------------------------------------------------------------------
def test_registered_ops_pass_opcheck():
    _need_cpp()
    st = _stencils(2, 3)
    torch.manual_seed(3)
    f = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, len(st.alphas), 5, 6, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.epdo.pdo_product, (f, w, st.sx_flat, st.k, st.alphas_flat))
    h = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(2 * len(st.alphas), 3, dtype=torch.float64, requires_grad=True)
    for b2 in (torch.randn(2 * len(st.alphas), dtype=torch.float64, requires_grad=True), None):
        torch.library.opcheck(torch.ops.epdo.generated_pdo_product, (f, h, w2, b2, st.sx_flat, st.k, st.alphas_flat))


def test_registered_ops_gradcheck_and_match_torch_backend():
    _need_cpp()
    st = _stencils(3, 5)
    torch.manual_seed(4)
    f = torch.randn(2, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, len(st.alphas), 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: K.pdo_product(a, b, st, "cpp"), (f, w))
    g = torch.randn(2, 4, 5, 4, dtype=torch.float64)
    outs = [K.pdo_product(f, w, st, b) for b in ("torch", "cpp")]
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-12)
    for a, e in zip(*(torch.autograd.grad(o, (f, w), g) for o in (outs[1], outs[0]))):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-12)
    h = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(2 * len(st.alphas), 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: K.generated_pdo_product(a, b, c, None, st, "cpp"), (f, h, w2))
    # only some inputs need a gradient
    out = K.generated_pdo_product(f.detach(), h, w2.detach(), None, st, "cpp")
    (gh,) = torch.autograd.grad(out, (h,), g)
    ref = K.generated_pdo_product(f.detach(), h, w2.detach(), None, st, "torch")
    torch.testing.assert_close(gh, torch.autograd.grad(ref, (h,), g)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_compile_fullgraph_of_the_cpp_ops(dtype):
    """fullgraph torch.compile (aot_eager: dynamo, the fake implementations and AOT autograd, no inductor code
    generation) of both products with backend="cpp": outputs and gradients equal to eager."""
    _need_cpp()
    st = _stencils(4, 5)
    torch.manual_seed(5)
    tol = 1e-12 if dtype == torch.float64 else 1e-5

    def fn(f, w, h, w2, b2):
        return K.pdo_product(f, w, st, "cpp") * 2 + K.generated_pdo_product(f, h, w2, b2, st, "cpp")

    args = [torch.randn(3, 4, 7, 6, dtype=dtype), torch.randn(3, 2, 15, 7, 6, dtype=dtype),
            torch.randn(3, 5, 7, 6, dtype=dtype), torch.randn(2 * 15, 5, dtype=dtype), torch.randn(2 * 15, dtype=dtype)]
    args = [a.requires_grad_() for a in args]
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    ye, yc = fn(*args), compiled(*args)
    torch.testing.assert_close(yc, ye, rtol=tol, atol=tol)
    g = torch.randn_like(ye)
    for a, e in zip(torch.autograd.grad(yc, args, g), torch.autograd.grad(ye, args, g)):
        torch.testing.assert_close(a, e, rtol=tol, atol=tol * max(1.0, e.abs().max().item()))


def test_torch_compile_of_neural_epdo_with_cpp_backend():
    """torch.compile of a whole NeuralEPDO with backend="cpp" (graph breaks allowed: the generator's weight
    expansion is not traceable as one graph): output and gradients equal to eager."""
    _need_cpp()
    from epdo import fields, groups
    from epdo.nn import NeuralEPDO

    torch.manual_seed(5)
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.regular] * 2)
    layer = NeuralEPDO(t, order=2, kernel_size=3, reduction=2, backend="cpp", dtype=torch.float64)
    x = torch.randn(3, t.size, 7, 6, dtype=torch.float64, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager")
    ye, yc = layer(x), compiled(x)
    torch.testing.assert_close(yc, ye, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ye)
    params = [p for p in layer.parameters() if p.requires_grad]
    for a, e in zip(torch.autograd.grad(yc, [x, *params], g), torch.autograd.grad(ye, [x, *params], g)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12 * max(1.0, e.abs().max().item()))


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_empty_batch(backend):
    """Batch size 0: empty output and gradients (no chunk to run), like every other layer."""
    if backend == "cpp":
        _need_cpp()
    st = _stencils(2, 3)
    f = torch.randn(0, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    h = torch.randn(0, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(2 * len(st.alphas), 3, dtype=torch.float64, requires_grad=True)
    b2 = torch.randn(2 * len(st.alphas), dtype=torch.float64, requires_grad=True)
    out = K.generated_pdo_product(f, h, w2, b2, st, backend)
    assert out.shape == f.shape
    grads = torch.autograd.grad(out.sum(), (f, h, w2, b2))
    assert [g.shape for g in grads] == [f.shape, h.shape, w2.shape, b2.shape]
    assert all(g.abs().sum() == 0 for g in grads[2:])
    w = torch.randn(0, 2, len(st.alphas), 5, 6, dtype=torch.float64, requires_grad=True)
    assert K.pdo_product(f, w, st, backend).shape == f.shape


def test_auto_backend_is_a_compile_constant_without_importing_dynamo():
    """backend='auto' is marked constant for torch.compile the way torch.compiler.assume_constant_result marks
    functions, without importing torch._dynamo at `import epdo` (which doubled the import time)."""
    import subprocess
    import sys

    code = "import sys, epdo.nn; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr

    def f():
        return True

    torch.compiler.assume_constant_result(f)
    assert f._dynamo_marked_constant is True
    assert K._auto_cpp._dynamo_marked_constant is True
