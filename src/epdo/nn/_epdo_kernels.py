r"""The per-pixel PDO product of the Neural ePDO layer, with a hand-written backward.

.. math:: \mathrm{out}_c(x) = \sum_{\alpha\in\Gamma_N} w_{c \bmod C_0, \alpha}(x)\, (\partial^\alpha f_c)(x)

for ``f`` of shape ``(B, C, H, W)`` and per-pixel coefficients ``w`` of shape ``(B, C_0, |Gamma_N|, H, W)``
(``C = p C_0``: the ``p`` partitions of the channels share coefficients). The discretised
:math:`\partial^{(a,b)}` is separable: a 1-D pass of the order-``a`` stencil along x, then one of order ``b``
along y (:func:`epdo.diffops.stencils_1d`), zero padding, same-size output.

Everything runs chunk by chunk over the batch (about :data:`_CHUNK_ELEMENTS` values per buffer) with
buffers allocated once per call, and the ``|Gamma_N|`` derivative maps of the input are never stored:

- the derivative maps are recomputed in backward (~100 multiply-adds per value: far cheaper than the
  memory traffic of storing and re-reading them);
- :func:`generated_pdo_product` also takes the generator's last layer, ``w = W2 h + b2``, and produces
  ``w`` per chunk into a reused buffer while it is still in cache; backward regenerates it (one more GEMM)
  instead of keeping ``C_0 |Gamma_N|`` maps per image alive between forward and backward.

Two implementations of the per-chunk product compute the same function:

- ``"torch"`` (default, always available, the tested reference): planes are zero padded above and below
  and flattened, so each y tap is a constant offset and every pass a long contiguous ``addcmul_``; the x
  pass is a GEMM with a banded W x W matrix. No ``unfold``, no depthwise ``conv2d`` (whose 1-channel groups
  run far below peak on CPU).
- ``"cpp"`` (optional, CPU float32/float64; source ``csrc/epdo_kernels.cpp``): per image plane, the x
  passes from a zero-padded row scratch into an L1-sized buffer, then the y passes fused with the product
  over blocks of 64 values held in registers; backward likewise (the y pass's adjoint scattered into a
  per-plane buffer, the x pass's adjoint row by row). The generator's float32 GEMMs go through oneDNN's
  matmul (``at::native::mkldnn_matmul``, about twice MKL's speed on CPUs where MKL takes its AVX2 path)
  where libtorch_cpu exports it and this torch accepts it on this CPU (torch 2.13 refuses it without
  avx512bw/vl/dq or avx_ne_convert), else the public ``at::mm``. Tested against ``"torch"`` and a conv2d
  reference.

The C++ ops are registered with the dispatcher (``TORCH_LIBRARY(epdo_cpp)``: raw kernels writing into
preallocated chunks) and wrapped in the custom ops ``torch.ops.epdo.pdo_product`` and
``torch.ops.epdo.generated_pdo_product`` (:mod:`torch.library`: fake implementations and autograd through
backward ops), so ``torch.compile`` traces a ``"cpp"`` product as one opaque op (``fullgraph=True`` works).

Building and loading (:mod:`epdo.nn._kernel_build`): ``epdo build-ext`` (or the first use of
``backend="cpp"``) compiles the library with one compiler call (about 20 s on an idle 2-core machine; no
ninja, no torch build lock) into ``$EPDO_KERNEL_DIR/<tag>/`` (default ``~/.cache/epdo/kernels``), the tag
hashing the source, the torch version, the flags and the GEMM choice; the build is made in a temporary
directory and renamed into place, under an epdo lock file waited for with a timeout (stale locks are broken
with a warning). ``backend="auto"`` (the default) is ``"cpp"`` when a build with this tag exists (a ``stat``
and a ``torch.ops.load_library``), else ``"torch"`` (:func:`resolve_backend`): it never compiles and never
waits on a lock.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import _kernel_build

__all__ = ["BACKENDS", "CppLibrary", "PDOStencils", "compiler_available", "cpp_extension_available",
           "cpp_kernel_required", "generated_pdo_product", "load_cpp_extension", "pdo_product", "resolve_backend"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "cpp")

# Images per chunk: about this many values in the largest per-chunk buffer (generated coefficients or x
# passes), 4 MiB in float32, so a chunk's working set stays in the L2/L3 caches between passes.
_CHUNK_ELEMENTS = 1 << 20


class PDOStencils:
    """The 1-D stencils of a discretisation and the multi-indices, as plain Python floats (hashable key).

    ``sx[a][v]``: correlation weights of d^a/dx^a at column offset ``v - r``; ``sy[b][u]``: of d^b/dy^b at
    row offset ``u - r`` (rows run top to bottom and y points up, so ``sy[b] = sx[b][::-1]``). ``sx_flat``,
    ``k`` and ``alphas_flat`` (row-major flattenings) are the arguments of the custom ops.
    """

    __slots__ = ("order", "k", "r", "sx", "sy", "alphas", "sx_flat", "alphas_flat", "_key")

    def __init__(self, s1d: np.ndarray, alphas: tuple[tuple[int, int], ...]):
        s1d = np.asarray(s1d, dtype=np.float64)
        self.order = s1d.shape[0] - 1
        self.k = s1d.shape[1]
        self.r = self.k // 2
        self.sx = tuple(tuple(float(v) for v in row) for row in s1d)
        self.sy = tuple(tuple(float(v) for v in row[::-1]) for row in s1d)
        self.alphas = tuple((int(a), int(b)) for a, b in alphas)
        self.sx_flat = tuple(v for row in self.sx for v in row)  # the custom ops' arguments
        self.alphas_flat = tuple(v for ab in self.alphas for v in ab)
        self._key = (self.sx, self.alphas)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, PDOStencils) and self._key == other._key

    def stencils_2d(self) -> np.ndarray:
        """``(|Gamma|, k, k)`` correlation kernels: the outer products of :func:`epdo.diffops.stencils`."""
        from ..diffops import stencils_from_1d

        return stencils_from_1d(np.array(self.sx), self.alphas)


# ---------------------------------------------------------------------------------------------------------
# pure torch
# ---------------------------------------------------------------------------------------------------------
# Layout: a chunk of planes is zero padded by r rows above and below (not sideways) and flattened, so the
# row shift of a y tap is a constant offset and the H x W result of a plane is one contiguous run of H*W
# values starting at (tap row) * W: every pass is a long, contiguous, vectorised elementwise op. The x pass
# (with its exact zero padding at the left and right borders) is a GEMM with a banded W x W matrix.
def _taps(s: tuple[float, ...]) -> list[tuple[int, float]]:
    return [(i, c) for i, c in enumerate(s) if c != 0.0]


@lru_cache(maxsize=64)
def _x_matrices(st: PDOStencils, width: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``X_a^T`` (W x W) with ``(F @ X_a^T)[i, j] = sum_v sx[a][v] F[i, j + v - r]`` (zero outside)."""
    out = []
    for a in range(st.order + 1):
        m = np.zeros((width, width))
        for v, c in enumerate(st.sx[a]):
            off = v - st.r  # input column j + off feeds output column j
            for j in range(max(0, -off), min(width, width - off)):
                m[j + off, j] = c
        out.append(torch.tensor(m, dtype=dtype, device=device))
    return tuple(out)


class _TorchKernel:
    """The product on chunks of at most ``n_max`` images, with buffers allocated once (fresh large
    allocations cost page faults on every chunk)."""

    def __init__(self, f: torch.Tensor, c0: int, n_max: int, st: PDOStencils, backward: bool):
        _, c, h, w = f.shape
        self.st, self.c, self.c0, self.p, self.h, self.w, self.r = st, c, c0, c // c0, h, w, st.r
        self.hp, self.hw = h + 2 * st.r, h * w
        self.xt = _x_matrices(st, w, f.dtype, f.device)
        self.fp = f.new_zeros(n_max * c, self.hp, w)  # pad rows stay zero
        self.g = f.new_empty(st.order + 1, n_max * c * self.hp, w)
        if backward:
            self.acc = f.new_empty(n_max * c * self.hw)
            self.z = f.new_empty(st.order + 1, n_max * c * self.hp * w)
            self.gfp = f.new_empty(n_max * c * self.hp, w)

    @staticmethod
    def gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, accumulate: bool) -> None:
        """``c = a b`` (``+ c`` if ``accumulate``), 2-D."""
        if accumulate:
            c.addmm_(a, b)
        else:
            torch.mm(a, b, out=c)

    def _x_pass(self, fc: torch.Tensor) -> list[torch.Tensor]:
        n = fc.shape[0]
        rows = n * self.c * self.hp
        fp = self.fp[: n * self.c]
        fp[:, self.r: self.r + self.h] = fc.reshape(n * self.c, self.h, self.w)
        fp2 = fp.view(rows, self.w)
        return [torch.mm(fp2, m, out=self.g[a, :rows]).view(n, self.p, self.c0, self.hp * self.w)
                for a, m in enumerate(self.xt)]

    def forward(self, fc: torch.Tensor, wc: torch.Tensor, out: torch.Tensor) -> None:
        n, wd, hw = fc.shape[0], self.w, self.hw
        gs = self._x_pass(fc)
        wc = wc.reshape(n, 1, self.c0, -1, hw)
        o = out.view(n, self.p, self.c0, hw)
        first = True
        for t, (a, b) in enumerate(self.st.alphas):
            wt = wc[:, :, :, t]
            for u, coef in _taps(self.st.sy[b]):
                src = gs[a][..., u * wd: u * wd + hw]
                if first:
                    torch.mul(src, wt, out=o)
                    if coef != 1.0:
                        o.mul_(coef)
                    first = False
                else:
                    o.addcmul_(src, wt, value=coef)
        if first:
            o.zero_()

    def backward(self, fc: torch.Tensor, wc: torch.Tensor, gc: torch.Tensor, gf: torch.Tensor | None,
                 gw: torch.Tensor | None) -> None:
        n, wd, hw, st = fc.shape[0], self.w, self.hw, self.st
        gc = gc.reshape(n, self.p, self.c0, hw)
        wc = wc.reshape(n, 1, self.c0, -1, hw)
        if gw is not None:
            gs = self._x_pass(fc)
            gwc = gw.view(n, self.c0, -1, hw)
            acc = self.acc[: n * self.c * hw].view(n, self.p, self.c0, hw)
            for t, (a, b) in enumerate(st.alphas):
                taps = _taps(st.sy[b])
                if not taps:
                    gwc[:, :, t].zero_()
                    continue
                for k, (u, coef) in enumerate(taps):
                    src = gs[a][..., u * wd: u * wd + hw]
                    if k == 0:
                        torch.mul(src, gc, out=acc)
                        if coef != 1.0:
                            acc.mul_(coef)
                    else:
                        acc.addcmul_(src, gc, value=coef)
                torch.sum(acc, 1, out=gwc[:, :, t])
        if gf is not None:
            zs = self.z[:, : n * self.c * self.hp * wd]
            zs.zero_()
            zs = zs.view(st.order + 1, n, self.p, self.c0, self.hp * wd)
            v = self.acc[: n * self.c * hw].view(n, self.p, self.c0, hw)
            for t, (a, b) in enumerate(st.alphas):
                taps = _taps(st.sy[b])
                if not taps:
                    continue
                torch.mul(wc[:, :, :, t], gc, out=v)
                for u, coef in taps:
                    zs[a][..., u * wd: u * wd + hw].add_(v, alpha=coef)
            acc = self.gfp[: n * self.c * self.hp]
            for a in range(st.order + 1):
                z = zs[a].view(-1, wd)
                if a == 0:
                    torch.mm(z, self.xt[a].T, out=acc)
                else:
                    acc.addmm_(z, self.xt[a].T)
            gf.copy_(acc.view(n, self.c, self.hp, wd)[:, :, self.r: self.r + self.h])


# ---------------------------------------------------------------------------------------------------------
# optional fused C++ kernel (csrc/epdo_kernels.cpp; built, found and locked by _kernel_build)
# ---------------------------------------------------------------------------------------------------------
_CPP_LOCK = threading.Lock()  # in-process only: guards loading, never waits on another process
_CPP_STATE: dict = {}  # "module": the loaded CppLibrary; "error": why it cannot be; "auto": _auto_cpp's answer


class CppLibrary:
    """A loaded build of the C++ kernel: ``__file__`` (its path), the raw ops ``pdo_forward``, ``pdo_backward``
    and ``gemm`` (``torch.ops.epdo_cpp``), ``gemm_backend`` (``"mkldnn"`` or ``"aten"``) and its ``info``
    (``build.json``)."""

    def __init__(self, path: Path):
        ops = torch.ops.epdo_cpp
        self.__file__ = str(path)
        self.pdo_forward, self.pdo_backward, self.gemm = ops.pdo_forward, ops.pdo_backward, ops.gemm
        self.gemm_backend = "mkldnn" if ops.gemm_backend() == 1 else "aten"
        self.info = _kernel_build.read_build_info(path)

    @property
    def gemm_note(self) -> str:
        """Why the float32 GEMMs use ``at::mm``, or ``""`` when they use oneDNN's matmul."""
        if self.gemm_backend == "mkldnn":
            return ""
        if self.info.get("gemm") == "mkldnn":
            return ("oneDNN's matmul is compiled in but this torch refuses it on this CPU (torch 2.13 wants "
                    "avx512bw/vl/dq or avx_ne_convert, even for float32)")
        return self.info.get("gemm_reason", "built without oneDNN's matmul")

    def __repr__(self) -> str:
        gemm = "oneDNN matmul" if self.gemm_backend == "mkldnn" else f"at::mm, since {self.gemm_note}"
        return f"{self.__file__} (float32 GEMMs: {gemm})"


def _load_library(path: Path, published: Path | None = None) -> CppLibrary:
    """Load a built library into this process (``torch.ops.load_library``: a dlopen, no compiler, no lock)."""
    try:
        torch.ops.load_library(str(path))
        mod = CppLibrary(path)
    except Exception as e:  # wrong torch, missing symbol, corrupt file
        raise _kernel_build.KernelBuildError(f"the epdo C++ kernel {path} could not be loaded: "
                                             f"{type(e).__name__}: {e}") from e
    if published is not None:
        mod.__file__ = str(published)
    _CPP_STATE["module"] = mod
    return mod


def load_cpp_extension(verbose: bool = False, lock_timeout: float = _kernel_build.LOCK_TIMEOUT) -> CppLibrary:
    """The fused C++ kernel, compiled first if no build matches (:func:`epdo.nn._kernel_build.build`: about 20 s
    on an idle 2-core machine, under a lock waited for at most ``lock_timeout`` s).

    Raises :class:`~epdo.nn._kernel_build.CompilerNotFoundError` without a compiler, else
    :class:`~epdo.nn._kernel_build.KernelBuildError` (a RuntimeError) with the compiler's complaint.
    ``$EPDO_CPP_FLAGS`` replaces the default flags ``-O3 -march=native -fopenmp``; ``$EPDO_KERNEL_GEMM=aten``
    forces the public ``at::mm`` for the GEMMs; builds live in ``$EPDO_KERNEL_DIR`` (default
    ``~/.cache/epdo/kernels``)."""
    with _CPP_LOCK:
        if "module" in _CPP_STATE:
            return _CPP_STATE["module"]
        if "error" in _CPP_STATE:
            raise _CPP_STATE["error"]
        try:
            path = _kernel_build.find_build()
            if path is not None:
                return _load_library(path)
            path, _ = _kernel_build.build(verbose=verbose, lock_timeout=lock_timeout,
                                          validate=lambda p: _load_library(p))
            if "module" in _CPP_STATE:  # loaded from the temporary directory before publishing
                _CPP_STATE["module"].__file__ = str(path)
                _CPP_STATE["module"].info = _kernel_build.read_build_info(path)
                return _CPP_STATE["module"]
            return _load_library(path)  # built meanwhile by another process
        except _kernel_build.BuildLockTimeout:
            raise  # not remembered: the other build may finish
        except _kernel_build.KernelBuildError as e:
            _CPP_STATE["error"] = e
            raise


def _load_existing_build() -> bool | None:
    """Load a build matching this source, torch and flags if one exists: a stat and a dlopen, nothing else.
    ``None`` (undecided) if another thread of this process is loading or building the kernel right now: this
    never waits for it."""
    if not _CPP_LOCK.acquire(blocking=False):
        return True if "module" in _CPP_STATE else None
    try:
        if "module" in _CPP_STATE:
            return True
        try:
            path = _kernel_build.find_build()
            if path is None:
                return False
            _load_library(path)
        except (_kernel_build.KernelBuildError, OSError, ValueError) as e:
            log.warning("NeuralEPDO backend 'auto': %s; using the pure-torch backend", e)
            return False
        log.debug("NeuralEPDO backend 'auto': using the C++ kernel %s", path)
        return True
    finally:
        _CPP_LOCK.release()


def cpp_extension_available(build: bool = False) -> bool:
    """True if the C++ kernel is loaded or a matching build exists (then it is loaded, without compiling);
    ``build=True``: compile it now if needed (about 20 s on an idle 2-core machine)."""
    if "module" in _CPP_STATE:
        return True
    if not build:
        return bool(_load_existing_build())
    try:
        load_cpp_extension()
    except RuntimeError:
        return False
    return True


def compiler_available() -> bool:
    """True if a C++ compiler for :func:`load_cpp_extension` is on the PATH (``$CXX``, else ``c++``)."""
    return _kernel_build.find_compiler() is not None


def cpp_kernel_required() -> bool:
    """True under CI (``$CI`` is ``true`` or ``1``) when a C++ compiler is present: a missing kernel is then a
    broken build, and tests that need it fail instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1") and compiler_available()


@lru_cache(maxsize=64)
def _cpp_stencil_tensors(st: PDOStencils) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    sx = torch.tensor(st.sx, dtype=torch.float64)
    sy = torch.tensor(st.sy, dtype=torch.float64)
    return sx, sy, list(st.alphas_flat)


class _CppKernel:
    """The same interface as :class:`_TorchKernel`, on the fused C++ loops (no buffers: all per plane)."""

    def __init__(self, st: PDOStencils):
        self.mod = load_cpp_extension()
        self.sx, self.sy, self.alphas = _cpp_stencil_tensors(st)

    def gemm(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, accumulate: bool) -> None:
        self.mod.gemm(a, b, c, accumulate)

    def forward(self, fc, wc, out) -> None:
        self.mod.pdo_forward(fc, wc, out, self.sx, self.sy, self.alphas)

    def backward(self, fc, wc, gc, gf, gw) -> None:
        empty = fc.new_empty(0)
        self.mod.pdo_backward(fc, wc, gc.contiguous(), empty if gf is None else gf, empty if gw is None else gw,
                              self.sx, self.sy, self.alphas)


def _auto_cpp() -> bool:
    """``backend="auto"``: the C++ kernel if it is loaded or a matching build exists (``epdo build-ext``); never
    compiles, never waits on a lock. Decided once per process (a constant for ``torch.compile``)."""
    if "module" in _CPP_STATE:
        return True
    if "auto" not in _CPP_STATE:
        found = _load_existing_build()
        if found is None:  # another thread is building: torch for now, decide later
            return False
        _CPP_STATE["auto"] = found
    return _CPP_STATE["auto"]


# torch.compile treats ``backend="auto"`` as a constant. ``torch.compiler.assume_constant_result`` would do this,
# but calling it imports torch._dynamo (about 2 s, doubling ``import epdo``); it only sets this attribute, which
# is what we set here (tests/nn/test_kernels.py checks that torch's decorator still sets the same one).
_auto_cpp._dynamo_marked_constant = True


def resolve_backend(backend: str, f: torch.Tensor) -> str:
    """The implementation that runs for ``backend`` on ``f``: ``"cpp"`` only on CPU float32/float64 (other
    devices and dtypes use torch); ``"auto"`` picks ``"cpp"`` when a build exists, else ``"torch"``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "torch" or f.device.type != "cpu" or f.dtype not in (torch.float32, torch.float64):
        return "torch"
    if backend == "auto":
        return "cpp" if _auto_cpp() else "torch"
    return "cpp"


def _use_cpp(backend: str, f: torch.Tensor) -> bool:
    return resolve_backend(backend, f) == "cpp"


def _chunk_bounds(batch: int, per_item: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_ELEMENTS // max(per_item, 1))
    return [(i, min(batch, i + step)) for i in range(0, batch, step)]


def _plan(f: torch.Tensor, c0: int, n_alpha: int, st: PDOStencils, backend: str, backward: bool):
    b_, c, h, w = f.shape
    per_item = max(c0 * n_alpha * h * w, (st.order + 1) * c * (h + 2 * st.r) * w)
    bounds = _chunk_bounds(b_, per_item)
    n_max = bounds[0][1] - bounds[0][0] if bounds else 0  # batch size 0: nothing to run, empty results
    kern = _CppKernel(st) if backend == "cpp" else _TorchKernel(f, c0, n_max, st, backward)
    return bounds, n_max, kern


# --- the two products, forward and backward, for either kernel (backend: "torch" or "cpp", resolved) -----------
def _product_forward(f, w, st: PDOStencils, backend: str) -> torch.Tensor:
    bounds, _, kern = _plan(f, w.shape[1], w.shape[2], st, backend, False)
    out = torch.empty_like(f)
    for i0, i1 in bounds:
        kern.forward(f[i0:i1], w[i0:i1], out[i0:i1])
    return out


def _product_backward(g, f, w, st: PDOStencils, backend: str, need_f: bool, need_w: bool):
    g = g.contiguous()
    gf = torch.empty_like(f) if need_f else None
    gw = torch.empty_like(w) if need_w else None
    bounds, _, kern = _plan(f, w.shape[1], w.shape[2], st, backend, True)
    for i0, i1 in bounds:
        kern.backward(f[i0:i1], w[i0:i1], g[i0:i1], None if gf is None else gf[i0:i1],
                      None if gw is None else gw[i0:i1])
    return gf, gw


def _generated_forward(f, h, w2, b2, st: PDOStencils, backend: str) -> torch.Tensor:
    """``w = W2 h + b2`` generated chunk by chunk into a reused buffer, never stored (recomputed in backward)."""
    b_, _, hh, ww = f.shape
    c0, n_alpha = w2.shape[0] // len(st.alphas), len(st.alphas)
    bounds, n_max, kern = _plan(f, c0, n_alpha, st, backend, False)
    wbuf = f.new_empty(n_max, w2.shape[0], hh * ww)
    out = torch.empty_like(f)
    for i0, i1 in bounds:
        wc = _generate(kern, h[i0:i1], w2, b2, wbuf[: i1 - i0])
        kern.forward(f[i0:i1], wc.view(i1 - i0, c0, n_alpha, hh, ww), out[i0:i1])
    return out


def _generated_backward(g, f, h, w2, b2, st: PDOStencils, backend: str, need_f: bool, need_h: bool, need_w2: bool,
                        need_b2: bool):
    g = g.contiguous()
    b_, _, hh, ww = f.shape
    n_alpha = len(st.alphas)
    c0 = w2.shape[0] // n_alpha
    need_b2 = need_b2 and b2 is not None
    bounds, n_max, kern = _plan(f, c0, n_alpha, st, backend, True)
    need_gw = need_h or need_w2 or need_b2
    gf = torch.empty_like(f) if need_f else None
    gh = torch.empty_like(h) if need_h else None
    gw2 = torch.zeros_like(w2) if need_w2 else None
    gb2 = torch.zeros_like(b2) if need_b2 else None
    wbuf = f.new_empty(n_max, w2.shape[0], hh * ww)
    gwbuf = f.new_empty(n_max, w2.shape[0], hh * ww) if need_gw else None
    for i0, i1 in bounds:
        n = i1 - i0
        hc = h[i0:i1].reshape(n, -1, hh * ww)
        wc = _generate(kern, hc, w2, b2, wbuf[:n])
        gwc = gwbuf[:n] if need_gw else None
        kern.backward(f[i0:i1], wc.view(n, c0, n_alpha, hh, ww), g[i0:i1],
                      None if gf is None else gf[i0:i1],
                      None if gwc is None else gwc.view(n, c0, n_alpha, hh, ww))
        if need_h:
            ghc = gh[i0:i1].view(n, -1, hh * ww)
            for j in range(n):
                kern.gemm(w2.T, gwc[j], ghc[j], False)
        if need_w2:
            for j in range(n):
                kern.gemm(gwc[j], hc[j].T, gw2, True)
        if need_b2:
            gb2 += gwc.sum((0, 2))
    return gf, gh, gw2, gb2


def _generate(kern, h: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    n = h.shape[0]
    h = h.reshape(n, w2.shape[1], -1)
    for j in range(n):
        kern.gemm(w2, h[j], out[j], False)
    if b2 is not None:
        out.add_(b2[:, None])
    return out


# --- the torch backend: autograd Functions ----------------------------------------------------------------------
class _PDOProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, w, st, backend):
        ctx.save_for_backward(f, w)
        ctx.st, ctx.backend = st, backend
        return _product_forward(f, w, st, backend)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        f, w = ctx.saved_tensors
        gf, gw = _product_backward(g, f, w, ctx.st, ctx.backend, *ctx.needs_input_grad[:2])
        return gf, gw, None, None


class _GeneratedPDOProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, h, w2, b2, st, backend):
        ctx.save_for_backward(f, h, w2, b2)
        ctx.st, ctx.backend = st, backend
        return _generated_forward(f, h, w2, b2, st, backend)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        f, h, w2, b2 = ctx.saved_tensors
        grads = _generated_backward(g, f, h, w2, b2, ctx.st, ctx.backend, *ctx.needs_input_grad[:4])
        return (*grads, None, None)


# --- the cpp backend: custom ops (torch.library), so torch.compile sees one opaque op with a fake --------------
# The stencils travel as plain numbers (flattened sx, k, flattened alphas): constants for torch.compile.
@lru_cache(maxsize=64)
def _stencils_from(sx: tuple[float, ...], k: int, alphas: tuple[int, ...]) -> PDOStencils:
    return PDOStencils(np.asarray(sx, dtype=np.float64).reshape(-1, k), tuple(zip(alphas[::2], alphas[1::2])))


def _st(sx, k, alphas) -> PDOStencils:
    return _stencils_from(tuple(sx), int(k), tuple(alphas))


_ST_ARGS = "float[] sx, int k, int[] alphas"


def _empty_unless(need: bool, like: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(like) if need and like is not None else ref.new_empty(0)


@torch.library.custom_op("epdo::pdo_product", mutates_args=(), device_types="cpu",
                         schema=f"(Tensor f, Tensor w, {_ST_ARGS}) -> Tensor")
def _pdo_product_op(f, w, sx, k, alphas):
    return _product_forward(f.contiguous(), w.contiguous(), _st(sx, k, alphas), "cpp")


@_pdo_product_op.register_fake
def _(f, w, sx, k, alphas):
    return torch.empty_like(f, memory_format=torch.contiguous_format)


@torch.library.custom_op("epdo::pdo_product_backward", mutates_args=(), device_types="cpu",
                         schema=f"(Tensor g, Tensor f, Tensor w, {_ST_ARGS}, bool need_f, bool need_w) -> (Tensor, Tensor)")
def _pdo_product_backward_op(g, f, w, sx, k, alphas, need_f, need_w):
    gf, gw = _product_backward(g, f.contiguous(), w.contiguous(), _st(sx, k, alphas), "cpp", need_f, need_w)
    return (f.new_empty(0) if gf is None else gf), (w.new_empty(0) if gw is None else gw)


@_pdo_product_backward_op.register_fake
def _(g, f, w, sx, k, alphas, need_f, need_w):
    return _empty_unless(need_f, f, f), _empty_unless(need_w, w, w)


def _pdo_product_setup(ctx, inputs, output):
    f, w, *ctx.st_args = inputs
    ctx.save_for_backward(f, w)


def _pdo_product_grad(ctx, g):
    f, w = ctx.saved_tensors
    need_f, need_w = ctx.needs_input_grad[:2]
    gf, gw = torch.ops.epdo.pdo_product_backward(g, f, w, *ctx.st_args, need_f, need_w)
    return (gf if need_f else None), (gw if need_w else None), None, None, None


torch.library.register_autograd("epdo::pdo_product", _pdo_product_grad, setup_context=_pdo_product_setup)


@torch.library.custom_op("epdo::generated_pdo_product", mutates_args=(), device_types="cpu",
                         schema=f"(Tensor f, Tensor h, Tensor w2, Tensor? b2, {_ST_ARGS}) -> Tensor")
def _generated_op(f, h, w2, b2, sx, k, alphas):
    return _generated_forward(f.contiguous(), h.contiguous(), w2.contiguous(),
                              None if b2 is None else b2.contiguous(), _st(sx, k, alphas), "cpp")


@_generated_op.register_fake
def _(f, h, w2, b2, sx, k, alphas):
    return torch.empty_like(f, memory_format=torch.contiguous_format)


@torch.library.custom_op("epdo::generated_pdo_product_backward", mutates_args=(), device_types="cpu",
                         schema=f"(Tensor g, Tensor f, Tensor h, Tensor w2, Tensor? b2, {_ST_ARGS}, bool need_f, "
                                "bool need_h, bool need_w2, bool need_b2) -> (Tensor, Tensor, Tensor, Tensor)")
def _generated_backward_op(g, f, h, w2, b2, sx, k, alphas, need_f, need_h, need_w2, need_b2):
    grads = _generated_backward(g, f.contiguous(), h.contiguous(), w2.contiguous(),
                                None if b2 is None else b2.contiguous(), _st(sx, k, alphas), "cpp",
                                need_f, need_h, need_w2, need_b2)
    return tuple(f.new_empty(0) if x is None else x for x in grads)


@_generated_backward_op.register_fake
def _(g, f, h, w2, b2, sx, k, alphas, need_f, need_h, need_w2, need_b2):
    return (_empty_unless(need_f, f, f), _empty_unless(need_h, h, f), _empty_unless(need_w2, w2, f),
            _empty_unless(need_b2, b2, f))


def _generated_setup(ctx, inputs, output):
    f, h, w2, b2, *ctx.st_args = inputs
    ctx.save_for_backward(f, h, w2, b2)


def _generated_grad(ctx, g):
    f, h, w2, b2 = ctx.saved_tensors
    need = ctx.needs_input_grad[:4]
    grads = torch.ops.epdo.generated_pdo_product_backward(g, f, h, w2, b2, *ctx.st_args, *need)
    return (*(x if n else None for x, n in zip(grads, need)), None, None, None)


torch.library.register_autograd("epdo::generated_pdo_product", _generated_grad, setup_context=_generated_setup)


# --- public entry points ----------------------------------------------------------------------------------------
def pdo_product(f: torch.Tensor, w: torch.Tensor, st: PDOStencils, backend: str = "auto") -> torch.Tensor:
    r"""``out[:, c] = sum_alpha w[:, c % C0, alpha] * d^alpha f[:, c]`` (see the module docstring).

    Args:
        f: ``(B, C, H, W)``.
        w: ``(B, C0, |Gamma_N|, H, W)`` with ``C0`` dividing ``C``.
        st: the 1-D stencils and multi-indices (:class:`PDOStencils`).
        backend: ``"auto"``, ``"torch"`` or ``"cpp"`` (:func:`resolve_backend`); ``"cpp"`` runs the custom op
            ``torch.ops.epdo.pdo_product``.
    """
    backend = resolve_backend(backend, f)
    if backend == "cpp":
        return torch.ops.epdo.pdo_product(f, w, st.sx_flat, st.k, st.alphas_flat)
    return _PDOProduct.apply(f.contiguous(), w.contiguous(), st, backend)


def generated_pdo_product(f: torch.Tensor, h: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor | None,
                          st: PDOStencils, backend: str = "auto") -> torch.Tensor:
    r""":func:`pdo_product` with ``w = W2 h + b2`` (a 1x1 map of the hidden features ``h``, ``(B, K, H, W)``;
    ``W2``: ``(C0 |Gamma_N|, K)`` with rows ``(c, alpha)``). ``w`` is generated chunk by chunk and never stored:
    backward regenerates it (one extra GEMM) instead of keeping ``C0 |Gamma_N|`` maps per image alive (keeping
    it was measured no faster on CPU: the saved GEMM is lost to first-touch page faults of the large buffer).
    ``"cpp"`` runs the custom op ``torch.ops.epdo.generated_pdo_product``."""
    backend = resolve_backend(backend, f)
    if backend == "cpp":
        return torch.ops.epdo.generated_pdo_product(f, h, w2, b2, st.sx_flat, st.k, st.alphas_flat)
    return _GeneratedPDOProduct.apply(f.contiguous(), h.contiguous(), w2.contiguous(),
                                      None if b2 is None else b2.contiguous(), st, backend)
