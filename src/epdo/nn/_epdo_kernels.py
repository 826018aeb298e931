r"""The per-pixel PDO product of the Neural ePDO layer, with a hand-written backward.

.. math:: \mathrm{out}_c(x) = \sum_{\alpha\in\Gamma_N} w_{\alpha, c \bmod C_0}(x)\, (\partial^\alpha f_c)(x)

for ``f`` of shape ``(B, C, H, W)`` and per-pixel coefficients ``w`` of shape ``(B, C_0, |Gamma_N|, H, W)``
(``C = p C_0``: the ``p`` partitions of the channels share coefficients). The discretised
:math:`\partial^{(a,b)}` is separable: a 1-D pass of the order-``a`` stencil along x, then one of order ``b``
along y (:func:`epdo.diffops.stencils_1d`), zero padding, same-size output.

Nothing of size ``|Gamma_N| x`` the input is kept for backward: only ``f`` and ``w`` are saved and the
derivative maps are recomputed (they cost ~100 multiply-adds per value, far less than the memory traffic
of storing and re-reading them). Two implementations compute the same function:

- ``"torch"`` (default, always available, the tested reference): the image planes are zero padded and
  flattened, so that every stencil tap is a shift of one contiguous 1-D array; each pass is then a single
  long, vectorised ``add_``/``addcmul_`` over a cache-sized chunk of planes (no ``unfold``, no depthwise
  ``conv2d``, whose 1-channel groups run far below peak on CPU).
- ``"cpp"`` (optional): one fused C++ loop per image plane (x pass into a small buffer, y pass and product
  row by row, all in L1/L2), compiled on first use with ``torch.utils.cpp_extension.load_inline``
  (needs a C++ compiler; about a minute on 2 cores, then cached by torch). Tested against ``"torch"``.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BACKENDS", "pdo_product", "cpp_extension_available", "load_cpp_extension", "PDOStencils"]

log = logging.getLogger(__name__)

BACKENDS = ("torch", "cpp")

# Planes per chunk of the pure-torch path: the working set (f, ~2 x (N+1) maps, w, out) stays near L2 size.
_CHUNK_ELEMENTS = 1 << 17


class PDOStencils:
    """The 1-D stencils of a discretisation and the multi-indices, as plain Python floats (hashable key).

    ``sx[a][v]``: correlation weights of d^a/dx^a at column offset ``v - r``; ``sy[b][u]``: of d^b/dy^b at
    row offset ``u - r`` (rows run top to bottom and y points up, so ``sy[b] = sx[b][::-1]``).
    """

    __slots__ = ("order", "k", "r", "sx", "sy", "alphas", "_key")

    def __init__(self, s1d: np.ndarray, alphas: tuple[tuple[int, int], ...]):
        s1d = np.asarray(s1d, dtype=np.float64)
        self.order = s1d.shape[0] - 1
        self.k = s1d.shape[1]
        self.r = self.k // 2
        self.sx = tuple(tuple(float(v) for v in row) for row in s1d)
        self.sy = tuple(tuple(float(v) for v in row[::-1]) for row in s1d)
        self.alphas = tuple((int(a), int(b)) for a, b in alphas)
        self._key = (self.sx, self.alphas)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, PDOStencils) and self._key == other._key

    def stencils_2d(self) -> np.ndarray:
        """``(|Gamma|, k, k)`` correlation kernels (the same as :func:`epdo.diffops.stencils`)."""
        return np.stack([np.outer(self.sy[b], self.sx[a]) for a, b in self.alphas])


# ---------------------------------------------------------------------------------------------------------
# pure torch
# ---------------------------------------------------------------------------------------------------------
# Layout: a chunk of planes is zero padded by r rows above and below (not sideways) and flattened, so
# the row shift of a y-tap is a constant offset and the H x W output of a plane is one contiguous run of
# H*W values starting at (tap row) * W: every pass is a long, contiguous, vectorised elementwise op. The
# x pass (with its exact zero padding at the left and right borders) is a GEMM with a banded W x W matrix.
def _taps(s: tuple[float, ...]) -> list[tuple[int, float]]:
    return [(i, c) for i, c in enumerate(s) if c != 0.0]


@lru_cache(maxsize=64)
def _x_matrices(st: PDOStencils, width: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``X_a^T`` (W x W) with ``(F @ X_a^T)[i, j] = sum_v sx[a][v] F[i, j + v - r]`` (zero outside)."""
    out = []
    for a in range(st.order + 1):
        m = np.zeros((width, width))
        for v, c in enumerate(st.sx[a]):
            off = v - st.r  # F column j + off contributes to output column j
            for j in range(max(0, -off), min(width, width - off)):
                m[j + off, j] = c
        out.append(torch.tensor(m, dtype=dtype, device=device))
    return tuple(out)


def _chunk_bounds(batch: int, per_item: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_ELEMENTS // max(per_item, 1))
    return [(i, min(batch, i + step)) for i in range(0, batch, step)]


class _XPass:
    """x passes of chunks of ``(n, C, H, W)`` into reused buffers (allocated once per call: large fresh
    allocations cost page faults on every chunk). For each order a: ``(n, C, (H + 2r) * W)`` with zero rows."""

    def __init__(self, like: torch.Tensor, n_max: int, st: PDOStencils):
        _, c, h, w = like.shape
        self.r, self.c, self.h, self.w = st.r, c, h, w
        self.hp = h + 2 * st.r
        self.xt = _x_matrices(st, w, like.dtype, like.device)
        self.fp = like.new_zeros(n_max * c, self.hp, w)  # pad rows stay zero
        self.g = like.new_empty(st.order + 1, n_max * c * self.hp, w)

    def __call__(self, fc: torch.Tensor) -> list[torch.Tensor]:
        n = fc.shape[0]
        rows = n * self.c * self.hp
        fp = self.fp[: n * self.c]
        fp[:, self.r: self.r + self.h] = fc.reshape(n * self.c, self.h, self.w)
        fp2 = fp.view(rows, self.w)
        return [torch.mm(fp2, m, out=self.g[a, :rows]).view(n, self.c, self.hp * self.w)
                for a, m in enumerate(self.xt)]


def _torch_forward(f: torch.Tensor, w: torch.Tensor, st: PDOStencils) -> torch.Tensor:
    b_, c, h, wd = f.shape
    c0, n_alpha = w.shape[1], w.shape[2]
    p, hw = c // c0, h * wd
    out = torch.empty_like(f)
    bounds = _chunk_bounds(b_, c * (h + 2 * st.r) * wd * (st.order + 1))
    xp = _XPass(f, bounds[0][1] - bounds[0][0], st)
    for i0, i1 in bounds:
        n = i1 - i0
        gs = [g.view(n, p, c0, -1) for g in xp(f[i0:i1])]
        wc = w[i0:i1].reshape(n, 1, c0, n_alpha, hw)
        o = out[i0:i1].view(n, p, c0, hw)
        first = True
        for t, (a, b) in enumerate(st.alphas):
            wt = wc[:, :, :, t]
            for u, coef in _taps(st.sy[b]):
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
    return out


def _torch_backward(f: torch.Tensor, w: torch.Tensor, g: torch.Tensor, st: PDOStencils,
                    need_f: bool, need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    b_, c, h, wd = f.shape
    c0, n_alpha = w.shape[1], w.shape[2]
    p, hw, r = c // c0, h * wd, st.r
    hp = h + 2 * r
    gf = torch.empty_like(f) if need_f else None
    gw = torch.empty_like(w) if need_w else None
    bounds = _chunk_bounds(b_, 2 * c * hp * wd * (st.order + 1))
    n_max = bounds[0][1] - bounds[0][0]
    if need_w:
        xp = _XPass(f, n_max, st)
        acc_buf = f.new_empty(n_max * c * hw)
    if need_f:
        xt = _x_matrices(st, wd, f.dtype, f.device)
        z_buf = f.new_empty(st.order + 1, n_max * c * hp * wd)
        v_buf = f.new_empty(n_max * c * hw)
        gf_buf = f.new_empty(n_max * c * hp, wd)
    for i0, i1 in bounds:
        n = i1 - i0
        gc = g[i0:i1].reshape(n, p, c0, hw)
        wc = w[i0:i1].reshape(n, 1, c0, n_alpha, hw)
        if need_w:
            gs = [x.view(n, p, c0, -1) for x in xp(f[i0:i1])]
            gwc = gw[i0:i1].view(n, c0, n_alpha, hw)
            acc = acc_buf[: n * c * hw].view(n, p, c0, hw)
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
                if p == 1:
                    gwc[:, :, t] = acc[:, 0]
                else:
                    torch.sum(acc, 1, out=gwc[:, :, t])
        if need_f:
            zs = z_buf[:, : n * c * hp * wd]
            zs.zero_()
            zs = zs.view(st.order + 1, n, p, c0, hp * wd)
            v = v_buf[: n * c * hw].view(n, p, c0, hw)
            for t, (a, b) in enumerate(st.alphas):
                taps = _taps(st.sy[b])
                if not taps:
                    continue
                torch.mul(wc[:, :, :, t], gc, out=v)
                for u, coef in taps:
                    zs[a][..., u * wd: u * wd + hw].add_(v, alpha=coef)
            acc = gf_buf[: n * c * hp]
            for a in range(st.order + 1):
                z = zs[a].view(-1, wd)
                if a == 0:
                    torch.mm(z, xt[a].T, out=acc)
                else:
                    acc.addmm_(z, xt[a].T)
            gf[i0:i1] = acc.view(n, c, hp, wd)[:, :, r: r + h]
    return gf, gw


class _TorchPDOProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, w, st):
        ctx.save_for_backward(f, w)
        ctx.st = st
        return _torch_forward(f, w, st)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        f, w = ctx.saved_tensors
        gf, gw = _torch_backward(f, w, g.contiguous(), ctx.st, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return gf, gw, None


# ---------------------------------------------------------------------------------------------------------
# optional fused C++ kernel
# ---------------------------------------------------------------------------------------------------------
_CPP_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <vector>

namespace {

struct Taps {
  std::vector<std::vector<int>> idx;     // nonzero taps per order
  std::vector<std::vector<double>> val;
};

Taps make_taps(const at::Tensor& s) {  // s: (N+1, k) float64 on CPU
  Taps t;
  auto a = s.accessor<double, 2>();
  for (int64_t o = 0; o < s.size(0); ++o) {
    std::vector<int> i; std::vector<double> v;
    for (int64_t u = 0; u < s.size(1); ++u) if (a[o][u] != 0.0) { i.push_back((int)u); v.push_back(a[o][u]); }
    t.idx.push_back(i); t.val.push_back(v);
  }
  return t;
}

// x pass of one plane f (H x W) into g (N+1 buffers of (H + 2r) x W, rows r..r+H-1; pad rows stay 0)
template <typename T>
void x_pass(const T* __restrict f, T* __restrict g, T* __restrict row, int64_t H, int64_t W, int r,
            const Taps& sx) {
  const int64_t Wp = W + 2 * r, plane = (H + 2 * r) * W;
  for (int64_t i = 0; i < H; ++i) {
    for (int q = 0; q < r; ++q) { row[q] = 0; row[r + W + q] = 0; }
    for (int64_t j = 0; j < W; ++j) row[r + j] = f[i * W + j];
    for (size_t a = 0; a < sx.idx.size(); ++a) {
      T* __restrict dst = g + a * plane + (i + r) * W;
      for (int64_t j = 0; j < W; ++j) dst[j] = 0;
      for (size_t k = 0; k < sx.idx[a].size(); ++k) {
        const T c = (T)sx.val[a][k];
        const T* __restrict src = row + sx.idx[a][k];
        for (int64_t j = 0; j < W; ++j) dst[j] += c * src[j];
      }
    }
  }
  (void)Wp;
}

template <typename T>
void forward_impl(const T* f, const T* w, T* out, int64_t B, int64_t C, int64_t C0, int64_t A, int64_t H,
                  int64_t W, int r, const Taps& sx, const Taps& sy, const std::vector<int>& aa,
                  const std::vector<int>& bb) {
  const int64_t P = C / C0, HW = H * W, plane = (H + 2 * r) * W, n_ord = (int64_t)sx.idx.size();
  at::parallel_for(0, B * C0, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> g(n_ord * plane, T(0)), row(W + 2 * r), d(W);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / C0, c0 = task % C0;
      const T* wp = w + (b * C0 + c0) * A * HW;
      for (int64_t k = 0; k < P; ++k) {
        const int64_t c = k * C0 + c0;
        const T* fp = f + (b * C + c) * HW;
        T* op = out + (b * C + c) * HW;
        x_pass(fp, g.data(), row.data(), H, W, r, sx);
        for (int64_t i = 0; i < H; ++i) {
          T* __restrict o = op + i * W;
          for (int64_t j = 0; j < W; ++j) o[j] = 0;
          for (int64_t t = 0; t < A; ++t) {
            const int a = aa[t], bo = bb[t];
            const T* __restrict wt = wp + t * HW + i * W;
            for (int64_t j = 0; j < W; ++j) d[j] = 0;
            for (size_t q = 0; q < sy.idx[bo].size(); ++q) {
              const T cc = (T)sy.val[bo][q];
              const T* __restrict src = g.data() + a * plane + (i + sy.idx[bo][q]) * W;
              for (int64_t j = 0; j < W; ++j) d[j] += cc * src[j];
            }
            for (int64_t j = 0; j < W; ++j) o[j] += wt[j] * d[j];
          }
        }
      }
    }
  });
}

template <typename T>
void backward_impl(const T* f, const T* w, const T* go, T* gf, T* gw, int64_t B, int64_t C, int64_t C0,
                   int64_t A, int64_t H, int64_t W, int r, const Taps& sx, const Taps& sy,
                   const std::vector<int>& aa, const std::vector<int>& bb) {
  const int64_t P = C / C0, HW = H * W, plane = (H + 2 * r) * W, n_ord = (int64_t)sx.idx.size();
  const int64_t Wp = W + 2 * r, zplane = H * Wp;
  at::parallel_for(0, B * C0, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> g(n_ord * plane, T(0)), row(W + 2 * r), d(W), v(W), z(n_ord * (H + 2 * r) * Wp);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / C0, c0 = task % C0;
      const T* wp = w + (b * C0 + c0) * A * HW;
      T* gwp = gw ? gw + (b * C0 + c0) * A * HW : nullptr;
      for (int64_t k = 0; k < P; ++k) {
        const int64_t c = k * C0 + c0;
        const T* fp = f + (b * C + c) * HW;
        const T* gp = go + (b * C + c) * HW;
        if (gwp) x_pass(fp, g.data(), row.data(), H, W, r, sx);
        if (gf) std::fill(z.begin(), z.end(), T(0));
        for (int64_t i = 0; i < H; ++i) {
          const T* __restrict gr = gp + i * W;
          for (int64_t t = 0; t < A; ++t) {
            const int a = aa[t], bo = bb[t];
            const size_t nt = sy.idx[bo].size();
            if (gwp) {
              for (int64_t j = 0; j < W; ++j) d[j] = 0;
              for (size_t q = 0; q < nt; ++q) {
                const T cc = (T)sy.val[bo][q];
                const T* __restrict src = g.data() + a * plane + (i + sy.idx[bo][q]) * W;
                for (int64_t j = 0; j < W; ++j) d[j] += cc * src[j];
              }
              T* __restrict dst = gwp + t * HW + i * W;
              if (k == 0) for (int64_t j = 0; j < W; ++j) dst[j] = gr[j] * d[j];
              else for (int64_t j = 0; j < W; ++j) dst[j] += gr[j] * d[j];
            }
            if (gf && nt) {
              const T* __restrict wt = wp + t * HW + i * W;
              for (int64_t j = 0; j < W; ++j) v[j] = wt[j] * gr[j];
              for (size_t q = 0; q < nt; ++q) {
                const T cc = (T)sy.val[bo][q];
                // row i + u - r of the (H + 2r)-row z buffer, columns r .. r + W - 1
                T* __restrict zr = z.data() + a * (H + 2 * r) * Wp + (i + sy.idx[bo][q]) * Wp + r;
                for (int64_t j = 0; j < W; ++j) zr[j] += cc * v[j];
              }
            }
          }
        }
        if (gf) {
          T* gfp = gf + (b * C + c) * HW;
          for (int64_t i = 0; i < H; ++i) {
            T* __restrict o = gfp + i * W;
            for (int64_t j = 0; j < W; ++j) o[j] = 0;
            for (int64_t a = 0; a < n_ord; ++a) {
              const T* zr = z.data() + a * (H + 2 * r) * Wp + (i + r) * Wp;
              // adjoint of the x pass: o[j] += sx[a][v] * z[j - (v - r)] (padded column index j - v + 2r)
              for (size_t q = 0; q < sx.idx[a].size(); ++q) {
                const T cc = (T)sx.val[a][q];
                const T* __restrict src = zr + 2 * r - sx.idx[a][q];
                for (int64_t j = 0; j < W; ++j) o[j] += cc * src[j];
              }
            }
          }
        }
      }
    }
  });
  (void)zplane;
}

void check(const at::Tensor& f, const at::Tensor& w) {
  TORCH_CHECK(f.device().is_cpu() && w.device().is_cpu(), "epdo cpp kernel: CPU tensors only");
  TORCH_CHECK(f.is_contiguous() && w.is_contiguous(), "epdo cpp kernel: contiguous tensors expected");
  TORCH_CHECK(f.dim() == 4 && w.dim() == 5 && f.size(0) == w.size(0) && f.size(1) % w.size(1) == 0 &&
              f.size(2) == w.size(3) && f.size(3) == w.size(4), "epdo cpp kernel: bad shapes");
  TORCH_CHECK(f.scalar_type() == w.scalar_type(), "epdo cpp kernel: dtype mismatch");
}

}  // namespace

at::Tensor pdo_forward(at::Tensor f, at::Tensor w, at::Tensor sx, at::Tensor sy, std::vector<int64_t> alphas) {
  check(f, w);
  Taps tx = make_taps(sx), ty = make_taps(sy);
  std::vector<int> aa, bb;
  for (size_t t = 0; t < alphas.size() / 2; ++t) { aa.push_back((int)alphas[2 * t]); bb.push_back((int)alphas[2 * t + 1]); }
  auto out = at::empty_like(f);
  const int r = (int)(sx.size(1) / 2);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pdo_forward", [&] {
    forward_impl<scalar_t>(f.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), f.size(0),
                           f.size(1), w.size(1), w.size(2), f.size(2), f.size(3), r, tx, ty, aa, bb);
  });
  return out;
}

std::vector<at::Tensor> pdo_backward(at::Tensor f, at::Tensor w, at::Tensor go, at::Tensor sx, at::Tensor sy,
                                     std::vector<int64_t> alphas, bool need_f, bool need_w) {
  check(f, w);
  TORCH_CHECK(go.is_contiguous() && go.sizes() == f.sizes(), "epdo cpp kernel: bad grad_output");
  Taps tx = make_taps(sx), ty = make_taps(sy);
  std::vector<int> aa, bb;
  for (size_t t = 0; t < alphas.size() / 2; ++t) { aa.push_back((int)alphas[2 * t]); bb.push_back((int)alphas[2 * t + 1]); }
  at::Tensor gf = need_f ? at::empty_like(f) : at::Tensor();
  at::Tensor gw = need_w ? at::empty_like(w) : at::Tensor();
  const int r = (int)(sx.size(1) / 2);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pdo_backward", [&] {
    backward_impl<scalar_t>(f.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(),
                            need_f ? gf.data_ptr<scalar_t>() : nullptr, need_w ? gw.data_ptr<scalar_t>() : nullptr,
                            f.size(0), f.size(1), w.size(1), w.size(2), f.size(2), f.size(3), r, tx, ty, aa, bb);
  });
  return {gf, gw};
}
"""

_CPP_LOCK = threading.Lock()
_CPP_STATE: dict = {}


def load_cpp_extension(verbose: bool = False):
    """Compile (first call; cached by torch afterwards) and return the fused C++ kernel module.

    Raises RuntimeError with the compiler's complaint if it cannot be built. ``EPDO_CPP_FLAGS`` (environment)
    replaces the default optimisation flags ``-O3 -march=native -fopenmp``.
    """
    with _CPP_LOCK:
        if "module" in _CPP_STATE:
            return _CPP_STATE["module"]
        if "error" in _CPP_STATE:
            raise RuntimeError(_CPP_STATE["error"])
        try:
            from torch.utils.cpp_extension import load_inline

            flags = os.environ.get("EPDO_CPP_FLAGS", "-O3 -march=native -fopenmp").split()
            mod = load_inline("epdo_neural_epdo_kernels", cpp_sources=[_CPP_SOURCE],
                              functions=["pdo_forward", "pdo_backward"], extra_cflags=flags,
                              extra_ldflags=["-fopenmp"] if "-fopenmp" in flags else [], verbose=verbose)
        except Exception as e:  # compiler missing, headers missing, build error
            _CPP_STATE["error"] = f"the epdo C++ kernel could not be built: {type(e).__name__}: {e}"
            raise RuntimeError(_CPP_STATE["error"]) from e
        _CPP_STATE["module"] = mod
        return mod


def cpp_extension_available(build: bool = False) -> bool:
    """True if the C++ kernel is loaded (``build=True``: try to compile it now)."""
    if "module" in _CPP_STATE:
        return True
    if not build:
        return False
    try:
        load_cpp_extension()
    except RuntimeError:
        return False
    return True


@lru_cache(maxsize=64)
def _cpp_stencil_tensors(st: PDOStencils) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    sx = torch.tensor(st.sx, dtype=torch.float64)
    sy = torch.tensor(st.sy, dtype=torch.float64)
    return sx, sy, [v for ab in st.alphas for v in ab]


class _CppPDOProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, w, st):
        f, w = f.contiguous(), w.contiguous()
        ctx.save_for_backward(f, w)
        ctx.st = st
        sx, sy, al = _cpp_stencil_tensors(st)
        return load_cpp_extension().pdo_forward(f, w, sx, sy, al)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        f, w = ctx.saved_tensors
        sx, sy, al = _cpp_stencil_tensors(ctx.st)
        gf, gw = load_cpp_extension().pdo_backward(f, w, g.contiguous(), sx, sy, al, ctx.needs_input_grad[0],
                                                   ctx.needs_input_grad[1])
        return (gf if ctx.needs_input_grad[0] else None), (gw if ctx.needs_input_grad[1] else None), None


def pdo_product(f: torch.Tensor, w: torch.Tensor, st: PDOStencils, backend: str = "torch") -> torch.Tensor:
    r"""``out[:, c] = sum_alpha w[:, c % C0, alpha] * d^alpha f[:, c]`` (see the module docstring).

    Args:
        f: ``(B, C, H, W)``.
        w: ``(B, C0, |Gamma_N|, H, W)`` with ``C0`` dividing ``C``.
        st: the 1-D stencils and multi-indices (:class:`PDOStencils`).
        backend: ``"torch"`` or ``"cpp"`` (CPU only; compiled on first use).
    """
    if backend == "cpp" and f.device.type == "cpu":
        return _CppPDOProduct.apply(f, w, st)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    return _TorchPDOProduct.apply(f.contiguous(), w.contiguous(), st)
