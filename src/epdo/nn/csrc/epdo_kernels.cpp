// The fused per-pixel PDO product of epdo's Neural ePDO layer (epdo/nn/_epdo_kernels.py documents the maths):
//   out_c(x) = sum_{alpha in Gamma_N} w_{c mod C0, alpha}(x) (d^alpha f_c)(x),
// d^(a,b) separable (an x pass of order a, then a y pass of order b, zero padding), and its backward.
//
// Built by `epdo build-ext` (epdo.nn._kernel_build.build) into a plain shared library (no Python
// module): the ops are registered with the dispatcher under the namespace `epdo_cpp` and loaded with
// torch.ops.load_library. Python wraps them in the custom ops epdo::pdo_product / epdo::generated_pdo_product
// (fake implementations and autograd there), so torch.compile sees one opaque op.
//
// Compile-time options (chosen by the build, part of the build's tag):
//   EPDO_USE_MKLDNN_MATMUL  the generator's float32 GEMMs through oneDNN (at::native::mkldnn_matmul: exported
//                           by libtorch_cpu but not in its public headers; the build checks the symbol exists
//                           first); otherwise the public at::mm / addmm_.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
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

#ifdef EPDO_USE_MKLDNN_MATMUL
// oneDNN's fp32 matmul, exported by libtorch_cpu but not declared in the public headers (declared here; the build
// defines EPDO_USE_MKLDNN_MATMUL only after finding this exact symbol in libtorch_cpu, and links with
// --no-undefined): on CPUs where MKL takes its AVX2 path (AMD), about twice MKL's speed for the generator's
// K = C/r GEMMs. result = beta * result + alpha * mat1 @ mat2.
namespace at { namespace native {
TORCH_API void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result, float beta,
                             float alpha);
} }
#endif

namespace {

// Whether the float32 GEMMs go through oneDNN: compiled in, and accepted by this torch on this CPU. torch 2.13
// refuses mkldnn_matmul (its argument checks, before any write) on CPUs without avx512bw/vl/dq or
// avx_ne_convert, even for float32: probed once on a 2x2 product, else the public at::mm.
bool mkldnn_usable() {
#ifdef EPDO_USE_MKLDNN_MATMUL
  static const bool ok = [] {
    try {
      auto a = at::ones({2, 2}, at::kFloat), c = at::empty({2, 2}, at::kFloat);
      at::native::mkldnn_matmul(a, a, c, 0.0f, 1.0f);
      return at::allclose(c, at::full({2, 2}, 2.0f, at::kFloat));
    } catch (const c10::Error&) {  // reported by the Python side (gemm_backend() == 0), not on every load
      return false;
    }
  }();
  return ok;
#else
  return false;
#endif
}

// c = a b (+ c if accumulate), 2-D, c contiguous.
void gemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2 && a.size(1) == b.size(0) && c.size(0) == a.size(0) &&
              c.size(1) == b.size(1) && c.is_contiguous(), "epdo cpp gemm: bad shapes");
#ifdef EPDO_USE_MKLDNN_MATMUL
  if (c.scalar_type() == at::kFloat && a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat &&
      mkldnn_usable()) {
    at::native::mkldnn_matmul(a, b, c, accumulate ? 1.0f : 0.0f, 1.0f);
    return;
  }
#endif
  at::Tensor out = c;  // a handle: the ops below write into c's storage
  if (accumulate) {
    out.addmm_(a, b);
  } else {
    at::mm_out(out, a, b);
  }
}

// 1: the float32 GEMMs run through oneDNN's matmul; 0: through at::mm (not compiled in, or refused here).
int64_t gemm_backend() { return mkldnn_usable() ? 1 : 0; }

void pdo_forward(const at::Tensor& f, const at::Tensor& w, const at::Tensor& out, const at::Tensor& sx,
                 const at::Tensor& sy, at::IntArrayRef alphas) {
  Problem p = make_problem(f, w, sx, sy, alphas.vec());
  TORCH_CHECK(out.is_contiguous() && out.sizes() == f.sizes() && out.scalar_type() == f.scalar_type(),
              "epdo cpp kernel: bad out");
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pdo_forward", [&] {
    forward_impl<scalar_t>(f.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), p);
  });
}

// gf / gw: empty (numel 0) when that gradient is not needed.
void pdo_backward(const at::Tensor& f, const at::Tensor& w, const at::Tensor& go, const at::Tensor& gf,
                  const at::Tensor& gw, const at::Tensor& sx, const at::Tensor& sy, at::IntArrayRef alphas) {
  Problem p = make_problem(f, w, sx, sy, alphas.vec());
  TORCH_CHECK(go.is_contiguous() && go.sizes() == f.sizes() && go.scalar_type() == f.scalar_type(),
              "epdo cpp kernel: bad grad_output");
  const bool need_f = gf.numel() > 0, need_w = gw.numel() > 0;
  TORCH_CHECK(!need_f || (gf.is_contiguous() && gf.sizes() == f.sizes() && gf.scalar_type() == f.scalar_type()),
              "epdo cpp kernel: bad grad_f");
  TORCH_CHECK(!need_w || (gw.is_contiguous() && gw.sizes() == w.sizes() && gw.scalar_type() == f.scalar_type()),
              "epdo cpp kernel: bad grad_w");
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pdo_backward", [&] {
    backward_impl<scalar_t>(f.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(),
                            need_f ? gf.data_ptr<scalar_t>() : nullptr, need_w ? gw.data_ptr<scalar_t>() : nullptr, p);
  });
}

}  // namespace

// The raw kernels write into preallocated outputs (the Python side allocates buffers once per call and runs
// them chunk by chunk); the schemas declare those writes (Tensor(a!)).
TORCH_LIBRARY(epdo_cpp, m) {
  m.def("pdo_forward(Tensor f, Tensor w, Tensor(a!) out, Tensor sx, Tensor sy, int[] alphas) -> ()");
  m.def("pdo_backward(Tensor f, Tensor w, Tensor go, Tensor(a!) gf, Tensor(b!) gw, Tensor sx, Tensor sy, "
        "int[] alphas) -> ()");
  m.def("gemm(Tensor a, Tensor b, Tensor(a!) c, bool accumulate) -> ()");
  m.def("gemm_backend() -> int", &gemm_backend);
}

TORCH_LIBRARY_IMPL(epdo_cpp, CPU, m) {
  m.impl("pdo_forward", &pdo_forward);
  m.impl("pdo_backward", &pdo_backward);
  m.impl("gemm", &gemm);
}
