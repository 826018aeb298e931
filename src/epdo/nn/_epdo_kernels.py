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
- ``"cpp"`` (optional, CPU float32/float64): per image plane, the x passes from a zero-padded row scratch
  into an L1-sized buffer, then the y passes fused with the product over blocks of 64 values held in
  registers; backward likewise (the y pass's adjoint scattered into a per-plane buffer, the x pass's adjoint
  row by row). The generator's GEMMs go through oneDNN's fp32 matmul (``at::native::mkldnn_matmul``), about
  twice MKL's speed on CPUs where MKL takes its AVX2 path. Compiled by ``epdo build-ext`` (or on first use of
  ``backend="cpp"``) with ``torch.utils.cpp_extension.load_inline``: needs a C++ compiler and ninja, about
  20 s on an idle 2-core machine, then cached by torch. Tested against ``"torch"`` and a conv2d reference.

``backend="auto"`` (the default) is ``"cpp"`` when a build of this source is loaded or cached, else ``"torch"``
(:func:`resolve_backend`); it never compiles.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache

import numpy as np
import torch

__all__ = ["BACKENDS", "PDOStencils", "cpp_extension_available", "generated_pdo_product", "load_cpp_extension",
           "pdo_product", "resolve_backend"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "cpp")

# Images per chunk: about this many values in the largest per-chunk buffer (generated coefficients or x
# passes), 4 MiB in float32, so a chunk's working set stays in the L2/L3 caches between passes.
_CHUNK_ELEMENTS = 1 << 20


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
# optional fused C++ kernel
# ---------------------------------------------------------------------------------------------------------
_CPP_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <vector>

namespace {

// Per image plane, everything in thread-local buffers that stay in L1/L2:
//  - row: one image row with r zero columns on each side (W + 2r values), for the x passes;
//  - g[a]: the x pass of order a, (H + 2r) x W values, image rows at r .. r + H - 1, pad rows zero, so the
//    y tap u (row offset u - r) of output value q reads g[a][q + u W]: long unit-stride loops.
// The y passes and the product are fused over blocks of BQ values held in registers / L1.

constexpr int BQ = 64;

struct Taps {
  std::vector<std::vector<int>> idx;  // nonzero taps of each 1-D stencil (offset u = idx - r)
  std::vector<std::vector<double>> val;
};

Taps make_taps(const at::Tensor& s) {  // s: (N+1, k) float64
  Taps t;
  auto a = s.accessor<double, 2>();
  for (int64_t o = 0; o < s.size(0); ++o) {
    std::vector<int> i;
    std::vector<double> v;
    for (int64_t u = 0; u < s.size(1); ++u)
      if (a[o][u] != 0.0) { i.push_back((int)u); v.push_back(a[o][u]); }
    t.idx.push_back(i);
    t.val.push_back(v);
  }
  return t;
}

struct Problem {
  int64_t B, C, C0, A, H, W;
  int r;
  Taps sx, sy;
  std::vector<int> aa, bb;
  int64_t HW() const { return H * W; }
  int64_t plane() const { return (H + 2 * r) * W; }
  int64_t n_ord() const { return (int64_t)sx.idx.size(); }
};

Problem make_problem(const at::Tensor& f, const at::Tensor& w, const at::Tensor& sx, const at::Tensor& sy,
                     const std::vector<int64_t>& alphas) {
  TORCH_CHECK(f.device().is_cpu() && w.device().is_cpu(), "epdo cpp kernel: CPU tensors only");
  TORCH_CHECK(f.is_contiguous() && w.is_contiguous(), "epdo cpp kernel: contiguous tensors expected");
  TORCH_CHECK(f.dim() == 4 && w.dim() == 5 && f.size(0) == w.size(0) && f.size(1) % w.size(1) == 0 &&
              f.size(2) == w.size(3) && f.size(3) == w.size(4), "epdo cpp kernel: bad shapes");
  TORCH_CHECK(f.scalar_type() == w.scalar_type(), "epdo cpp kernel: dtype mismatch");
  Problem p{f.size(0), f.size(1), w.size(1), w.size(2), f.size(2), f.size(3), (int)(sx.size(1) / 2),
            make_taps(sx), make_taps(sy), {}, {}};
  TORCH_CHECK((int64_t)alphas.size() == 2 * p.A, "epdo cpp kernel: alphas do not match w");
  for (int64_t t = 0; t < p.A; ++t) { p.aa.push_back((int)alphas[2 * t]); p.bb.push_back((int)alphas[2 * t + 1]); }
  return p;
}

// x passes of one plane f into the image rows of g: g[a][(i + r) W + j] = sum_v sx[a][v] f[i][j + v - r].
// row: scratch of W + 2r values whose r values on each side are zero.
template <typename T>
void x_pass(const T* __restrict f, T* __restrict g, T* __restrict row, const Problem& p) {
  const int64_t H = p.H, W = p.W, plane = p.plane();
  for (int64_t i = 0; i < H; ++i) {
    std::copy(f + i * W, f + (i + 1) * W, row + p.r);
    for (int64_t a = 0; a < p.n_ord(); ++a) {
      T* __restrict dst = g + a * plane + (i + p.r) * W;
      const auto& ix = p.sx.idx[a];
      const auto& vx = p.sx.val[a];
      if (ix.empty()) { std::fill(dst, dst + W, T(0)); continue; }
      {
        const T c = (T)vx[0];
        const T* __restrict s = row + ix[0];
        for (int64_t j = 0; j < W; ++j) dst[j] = c * s[j];
      }
      for (size_t k = 1; k < ix.size(); ++k) {
        const T c = (T)vx[k];
        const T* __restrict s = row + ix[k];
        for (int64_t j = 0; j < W; ++j) dst[j] += c * s[j];
      }
    }
  }
}

// d[0 .. n) = y pass (order b) of g_a from value q0 on; returns false if the stencil is zero.
template <typename T, int N>
inline bool y_block(const T* __restrict ga, T* __restrict d, const Problem& p, int b, int64_t n) {
  const auto& iy = p.sy.idx[b];
  if (iy.empty()) return false;
  const auto& vy = p.sy.val[b];
  const int64_t nn = N > 0 ? N : n;
  {
    const T c = (T)vy[0];
    const T* __restrict s = ga + iy[0] * p.W;
    for (int64_t q = 0; q < nn; ++q) d[q] = c * s[q];
  }
  for (size_t k = 1; k < iy.size(); ++k) {
    const T c = (T)vy[k];
    const T* __restrict s = ga + iy[k] * p.W;
    for (int64_t q = 0; q < nn; ++q) d[q] += c * s[q];
  }
  return true;
}

// o[q0 .. q0 + n) = sum_t w_t * d_t for one plane (N = BQ: full block, N = 0: tail of n values)
template <typename T, int N>
inline void product_block(const T* g, const T* wp, T* o, const Problem& p, int64_t q0, int64_t n) {
  const int64_t HW = p.HW(), plane = p.plane(), nn = N > 0 ? N : n;
  T acc[BQ], d[BQ];
  for (int64_t q = 0; q < nn; ++q) acc[q] = 0;
  for (int64_t t = 0; t < p.A; ++t) {
    if (!y_block<T, N>(g + p.aa[t] * plane + q0, d, p, p.bb[t], n)) continue;
    const T* __restrict wt = wp + t * HW + q0;
    for (int64_t q = 0; q < nn; ++q) acc[q] += wt[q] * d[q];
  }
  for (int64_t q = 0; q < nn; ++q) o[q0 + q] = acc[q];
}

// backward of one block: gw_t (+)= go * d_t; z[a][q + u W] += sy_b[u] w_t go (adjoint of the y pass)
template <typename T, int N>
inline void backward_block(const T* g, const T* wp, const T* gr, T* gwp, T* z, bool first, const Problem& p,
                           int64_t q0, int64_t n) {
  const int64_t HW = p.HW(), plane = p.plane(), nn = N > 0 ? N : n, W = p.W;
  T d[BQ], v[BQ];
  const T* __restrict go = gr + q0;
  for (int64_t t = 0; t < p.A; ++t) {
    const int a = p.aa[t], b = p.bb[t];
    if (gwp) {
      T* __restrict dst = gwp + t * HW + q0;
      if (y_block<T, N>(g + a * plane + q0, d, p, b, n)) {
        if (first) for (int64_t q = 0; q < nn; ++q) dst[q] = go[q] * d[q];
        else for (int64_t q = 0; q < nn; ++q) dst[q] += go[q] * d[q];
      } else if (first) {
        for (int64_t q = 0; q < nn; ++q) dst[q] = 0;
      }
    }
    if (z) {
      const auto& iy = p.sy.idx[b];
      if (iy.empty()) continue;
      const T* __restrict wt = wp + t * HW + q0;
      for (int64_t q = 0; q < nn; ++q) v[q] = wt[q] * go[q];
      for (size_t k = 0; k < iy.size(); ++k) {
        const T c = (T)p.sy.val[b][k];
        T* __restrict zr = z + a * plane + iy[k] * W + q0;
        for (int64_t q = 0; q < nn; ++q) zr[q] += c * v[q];
      }
    }
  }
}

// adjoint of the x pass: o[i][j] = sum_a sum_v sx[a][v] z[a][(i + r) W + j - (v - r)] (zero outside the row)
template <typename T>
void x_adjoint(const T* z, T* __restrict o, T* __restrict row, const Problem& p) {
  const int64_t H = p.H, W = p.W, plane = p.plane();
  const int r = p.r;
  for (int64_t i = 0; i < H; ++i) {
    T* __restrict dst = o + i * W;
    std::fill(dst, dst + W, T(0));
    for (int64_t a = 0; a < p.n_ord(); ++a) {
      const auto& ix = p.sx.idx[a];
      if (ix.empty()) continue;
      std::copy(z + a * plane + (i + r) * W, z + a * plane + (i + r + 1) * W, row + r);
      for (size_t k = 0; k < ix.size(); ++k) {  // z[.., j - (v - r)] = row[j + 2r - v]
        const T c = (T)p.sx.val[a][k];
        const T* __restrict s = row + 2 * r - ix[k];
        for (int64_t j = 0; j < W; ++j) dst[j] += c * s[j];
      }
    }
  }
}

template <typename T>
void forward_impl(const T* f, const T* w, T* out, const Problem& p) {
  const int64_t P = p.C / p.C0, HW = p.HW(), plane = p.plane();
  at::parallel_for(0, p.B * p.C0, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> g(p.n_ord() * plane, T(0)), row(p.W + 2 * p.r, T(0));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / p.C0, c0 = task % p.C0;
      const T* wp = w + (b * p.C0 + c0) * p.A * HW;
      for (int64_t k = 0; k < P; ++k) {
        const int64_t c = k * p.C0 + c0;
        x_pass(f + (b * p.C + c) * HW, g.data(), row.data(), p);
        T* o = out + (b * p.C + c) * HW;
        int64_t q0 = 0;
        for (; q0 + BQ <= HW; q0 += BQ) product_block<T, BQ>(g.data(), wp, o, p, q0, BQ);
        if (q0 < HW) product_block<T, 0>(g.data(), wp, o, p, q0, HW - q0);
      }
    }
  });
}

template <typename T>
void backward_impl(const T* f, const T* w, const T* go, T* gf, T* gw, const Problem& p) {
  const int64_t P = p.C / p.C0, HW = p.HW(), plane = p.plane();
  at::parallel_for(0, p.B * p.C0, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> g(p.n_ord() * plane, T(0)), row(p.W + 2 * p.r, T(0)), z(gf ? p.n_ord() * plane : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / p.C0, c0 = task % p.C0;
      const T* wp = w + (b * p.C0 + c0) * p.A * HW;
      T* gwp = gw ? gw + (b * p.C0 + c0) * p.A * HW : nullptr;
      for (int64_t k = 0; k < P; ++k) {
        const int64_t c = k * p.C0 + c0;
        const T* gr = go + (b * p.C + c) * HW;
        if (gwp) x_pass(f + (b * p.C + c) * HW, g.data(), row.data(), p);
        T* zp = gf ? z.data() : nullptr;
        if (zp) std::fill(z.begin(), z.end(), T(0));
        int64_t q0 = 0;
        for (; q0 + BQ <= HW; q0 += BQ) backward_block<T, BQ>(g.data(), wp, gr, gwp, zp, k == 0, p, q0, BQ);
        if (q0 < HW) backward_block<T, 0>(g.data(), wp, gr, gwp, zp, k == 0, p, q0, HW - q0);
        if (gf) x_adjoint(z.data(), gf + (b * p.C + c) * HW, row.data(), p);
      }
    }
  });
}

}  // namespace

// oneDNN's matmul (exported by libtorch_cpu, not in the public headers): on CPUs where MKL takes its AVX2
// path (AMD), about twice MKL's speed for the generator's K = C/r GEMMs. float32 only; else at::mm.
namespace at { namespace native {
TORCH_API void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result, float beta,
                             float alpha);
} }

void gemm(at::Tensor a, at::Tensor b, at::Tensor c, bool accumulate) {  // c = a b (+ c)
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2 && a.size(1) == b.size(0) && c.size(0) == a.size(0) &&
              c.size(1) == b.size(1) && c.is_contiguous(), "epdo cpp gemm: bad shapes");
  if (c.scalar_type() == at::kFloat && a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat) {
    at::native::mkldnn_matmul(a, b, c, accumulate ? 1.0f : 0.0f, 1.0f);
  } else if (accumulate) {
    c.addmm_(a, b);
  } else {
    at::mm_out(c, a, b);
  }
}

void pdo_forward(at::Tensor f, at::Tensor w, at::Tensor out, at::Tensor sx, at::Tensor sy,
                 std::vector<int64_t> alphas) {
  Problem p = make_problem(f, w, sx, sy, alphas);
  TORCH_CHECK(out.is_contiguous() && out.sizes() == f.sizes() && out.scalar_type() == f.scalar_type(),
              "epdo cpp kernel: bad out");
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pdo_forward", [&] {
    forward_impl<scalar_t>(f.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), p);
  });
}

void pdo_backward(at::Tensor f, at::Tensor w, at::Tensor go, at::Tensor gf, at::Tensor gw, at::Tensor sx,
                  at::Tensor sy, std::vector<int64_t> alphas) {
  Problem p = make_problem(f, w, sx, sy, alphas);
  TORCH_CHECK(go.is_contiguous() && go.sizes() == f.sizes(), "epdo cpp kernel: bad grad_output");
  const bool need_f = gf.numel() > 0, need_w = gw.numel() > 0;
  TORCH_CHECK(!need_f || (gf.is_contiguous() && gf.sizes() == f.sizes()), "epdo cpp kernel: bad grad_f");
  TORCH_CHECK(!need_w || (gw.is_contiguous() && gw.sizes() == w.sizes()), "epdo cpp kernel: bad grad_w");
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pdo_backward", [&] {
    backward_impl<scalar_t>(f.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(),
                            need_f ? gf.data_ptr<scalar_t>() : nullptr, need_w ? gw.data_ptr<scalar_t>() : nullptr, p);
  });
}
"""

_CPP_NAME = "epdo_neural_epdo_kernels"
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
            mod = load_inline(_CPP_NAME, cpp_sources=[_CPP_SOURCE],
                              functions=["pdo_forward", "pdo_backward", "gemm"], extra_cflags=flags,
                              extra_ldflags=["-fopenmp"] if "-fopenmp" in flags else [], verbose=verbose)
        except Exception as e:  # compiler missing, headers missing, build error
            _CPP_STATE["error"] = f"the epdo C++ kernel could not be built: {type(e).__name__}: {e}"
            raise RuntimeError(_CPP_STATE["error"]) from e
        _CPP_STATE["module"] = mod
        return mod


def _cpp_is_built() -> bool:
    """True if torch's extension cache holds a build of the current source (loading it is then quick)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        d = _get_build_directory(_CPP_NAME, False)
        src = os.path.join(d, "main.cpp")
        so = os.path.join(d, f"{_CPP_NAME}.so")
        if not (os.path.exists(so) and os.path.exists(src)):
            return False
        with open(src) as fh:
            return _CPP_SOURCE.strip() in fh.read()
    except Exception:  # pragma: no cover - private torch API moved
        return False


def cpp_extension_available(build: bool = False) -> bool:
    """True if the C++ kernel is loaded or can be loaded without compiling (a cached build of this source);
    ``build=True``: compile it now if needed (about 20 s on an idle 2-core machine)."""
    if "module" in _CPP_STATE:
        return True
    if not build and not _cpp_is_built():
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
    """``backend="auto"``: the C++ kernel if it is loaded or a build of this source is in torch's extension
    cache (``epdo build-ext``); never compiles. Decided once per process."""
    if "module" in _CPP_STATE:
        return True
    if "auto" not in _CPP_STATE:
        _CPP_STATE["auto"] = cpp_extension_available(build=False)
        if _CPP_STATE["auto"]:
            log.debug("NeuralEPDO backend 'auto': using the cached C++ kernel")
    return _CPP_STATE["auto"]


def resolve_backend(backend: str, f: torch.Tensor) -> str:
    """The implementation that runs for ``backend`` on ``f``: ``"cpp"`` only on CPU float32/float64 (other
    devices and dtypes use torch); ``"auto"`` picks ``"cpp"`` when a build is cached, else ``"torch"``."""
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
    n_max = bounds[0][1] - bounds[0][0]
    kern = _CppKernel(st) if _use_cpp(backend, f) else _TorchKernel(f, c0, n_max, st, backward)
    return bounds, n_max, kern


class _PDOProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, w, st, backend):
        ctx.save_for_backward(f, w)
        ctx.st, ctx.backend = st, backend
        bounds, _, kern = _plan(f, w.shape[1], w.shape[2], st, backend, False)
        out = torch.empty_like(f)
        for i0, i1 in bounds:
            kern.forward(f[i0:i1], w[i0:i1], out[i0:i1])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        f, w = ctx.saved_tensors
        g = g.contiguous()
        need_f, need_w = ctx.needs_input_grad[:2]
        gf = torch.empty_like(f) if need_f else None
        gw = torch.empty_like(w) if need_w else None
        bounds, _, kern = _plan(f, w.shape[1], w.shape[2], ctx.st, ctx.backend, True)
        for i0, i1 in bounds:
            kern.backward(f[i0:i1], w[i0:i1], g[i0:i1], None if gf is None else gf[i0:i1],
                          None if gw is None else gw[i0:i1])
        return gf, gw, None, None


class _GeneratedPDOProduct(torch.autograd.Function):
    """``w = W2 h + b2`` generated chunk by chunk into a reused buffer, never stored (recomputed in backward)."""

    @staticmethod
    def forward(ctx, f, h, w2, b2, st, backend):
        b_, _, hh, ww = f.shape
        c0, n_alpha = w2.shape[0] // len(st.alphas), len(st.alphas)
        bounds, n_max, kern = _plan(f, c0, n_alpha, st, backend, False)
        wbuf = f.new_empty(n_max, w2.shape[0], hh * ww)
        out = torch.empty_like(f)
        for i0, i1 in bounds:
            wc = _generate(kern, h[i0:i1], w2, b2, wbuf[: i1 - i0])
            kern.forward(f[i0:i1], wc.view(i1 - i0, c0, n_alpha, hh, ww), out[i0:i1])
        ctx.save_for_backward(f, h, w2, b2)
        ctx.st, ctx.backend = st, backend
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        f, h, w2, b2 = ctx.saved_tensors
        st = ctx.st
        g = g.contiguous()
        need_f, need_h, need_w2, need_b2 = ctx.needs_input_grad[:4]
        b_, _, hh, ww = f.shape
        n_alpha = len(st.alphas)
        c0 = w2.shape[0] // n_alpha
        bounds, n_max, kern = _plan(f, c0, n_alpha, st, ctx.backend, True)
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
        return gf, gh, gw2, gb2, None, None


def _generate(kern, h: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    n = h.shape[0]
    h = h.reshape(n, w2.shape[1], -1)
    for j in range(n):
        kern.gemm(w2, h[j], out[j], False)
    if b2 is not None:
        out.add_(b2[:, None])
    return out


def pdo_product(f: torch.Tensor, w: torch.Tensor, st: PDOStencils, backend: str = "auto") -> torch.Tensor:
    r"""``out[:, c] = sum_alpha w[:, c % C0, alpha] * d^alpha f[:, c]`` (see the module docstring).

    Args:
        f: ``(B, C, H, W)``.
        w: ``(B, C0, |Gamma_N|, H, W)`` with ``C0`` dividing ``C``.
        st: the 1-D stencils and multi-indices (:class:`PDOStencils`).
        backend: ``"auto"``, ``"torch"`` or ``"cpp"`` (:func:`resolve_backend`).
    """
    backend = resolve_backend(backend, f)
    return _PDOProduct.apply(f.contiguous(), w.contiguous(), st, backend)


def generated_pdo_product(f: torch.Tensor, h: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor | None,
                          st: PDOStencils, backend: str = "auto") -> torch.Tensor:
    r""":func:`pdo_product` with ``w = W2 h + b2`` (a 1x1 map of the hidden features ``h``, ``(B, K, H, W)``;
    ``W2``: ``(C0 |Gamma_N|, K)`` with rows ``(c, alpha)``). ``w`` is generated chunk by chunk and never stored:
    backward regenerates it (one extra GEMM) instead of keeping ``C0 |Gamma_N|`` maps per image alive (keeping
    it was measured no faster on CPU: the saved GEMM is lost to first-touch page faults of the large buffer)."""
    backend = resolve_backend(backend, f)
    return _GeneratedPDOProduct.apply(f.contiguous(), h.contiguous(), w2.contiguous(),
                                      None if b2 is None else b2.contiguous(), st, backend)
