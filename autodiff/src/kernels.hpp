#pragma once
// SIMD loops over raw pointers. Each loop runs xsimd batches of the widest
// width the build targets, then a scalar tail; the functor is generic so the
// same lambda serves both (xsimd provides the scalar overloads of exp, tanh, …;
// kern::exp below is xsimd's bit for bit, faster on AVX-512, and kern::tanh a cheaper
// approximation for floats).
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <type_traits>

#include <cblas.h>
#include "autodiff/xsimd.hpp"
#include "fma.hpp"
#include "gemm_packed.hpp"
#include "transpose.hpp"

namespace ad::kern {

template <class T> using batch = xsimd::batch<T>;

/// where(c, a, b): c ? a : b, lane by lane for batches.
template <class T> inline T where(bool c, T a, T b) { return c ? a : b; }
template <class T, class A>
inline xsimd::batch<T, A> where(const xsimd::batch_bool<T, A>& c, const xsimd::batch<T, A>& a,
                                const xsimd::batch<T, A>& b) {
  return xsimd::select(c, a, b);
}

/// y[i] = f(x[i])
template <class T, class F> inline void map(const T* x, T* y, std::size_t n, F f) {
  constexpr std::size_t W = batch<T>::size;
  std::size_t i = 0;
  for (; i + W <= n; i += W) f(batch<T>::load_unaligned(x + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = f(x[i]);
}

/// z[i] = f(x[i], y[i])
template <class T, class F> inline void map2(const T* x, const T* y, T* z, std::size_t n, F f) {
  constexpr std::size_t W = batch<T>::size;
  std::size_t i = 0;
  for (; i + W <= n; i += W)
    f(batch<T>::load_unaligned(x + i), batch<T>::load_unaligned(y + i)).store_unaligned(z + i);
  for (; i < n; ++i) z[i] = f(x[i], y[i]);
}

/// g[i] += f(x[i], y[i]): the shape of almost every VJP (g is an input's adjoint).
template <class T, class F> inline void acc2(const T* x, const T* y, T* g, std::size_t n, F f) {
  constexpr std::size_t W = batch<T>::size;
  std::size_t i = 0;
  for (; i + W <= n; i += W) {
    const auto r = batch<T>::load_unaligned(g + i) +
                   f(batch<T>::load_unaligned(x + i), batch<T>::load_unaligned(y + i));
    r.store_unaligned(g + i);
  }
  for (; i < n; ++i) g[i] += f(x[i], y[i]);
}

/// g[i] += f(x[i], y[i], z[i])
template <class T, class F>
inline void acc3(const T* x, const T* y, const T* z, T* g, std::size_t n, F f) {
  constexpr std::size_t W = batch<T>::size;
  std::size_t i = 0;
  for (; i + W <= n; i += W) {
    const auto r = batch<T>::load_unaligned(g + i) + f(batch<T>::load_unaligned(x + i),
                                                       batch<T>::load_unaligned(y + i),
                                                       batch<T>::load_unaligned(z + i));
    r.store_unaligned(g + i);
  }
  for (; i < n; ++i) g[i] += f(x[i], y[i], z[i]);
}

/// V::gather(src, index) through the architecture's gather instruction where it has one:
/// xsimd 8.1's batch::gather calls its kernel with explicit template arguments that the AVX2
/// and AVX-512 overloads do not take, so it always ends in the element-by-element fallback
/// (a chain of 16 inserts on AVX-512: 7 % of an `eval` at D = 1024).
template <class V, class I>
inline V gather(const typename V::value_type* src, const I& index) {
  using A = typename V::arch_type;
  if constexpr (std::is_base_of_v<xsimd::avx512f, A> || std::is_base_of_v<xsimd::avx2, A>)
    return xsimd::kernel::gather(src, index, A{});
  else
    return V::gather(src, index);
}

#if defined(__AVX512F__)
/// The 16 lanes' P values each, lane l's at src + l·P (a spline block's parameters, element-
/// major), as P vectors: out[p] = (src[p], src[P + p], …, src[15P + p]). Per 16 parameters, 16
/// row loads (masked past P) and one transpose16, where P gathers take 16 loads each.
inline void load_lanes16(const float* src, int P, __m512* out) {
  for (int p0 = 0; p0 < P; p0 += 16) {
    const int w = std::min(16, P - p0);
    const __mmask16 mask = __mmask16((1u << w) - 1u);
    __m512 r[16];
    load_transposed16(src + p0, std::size_t(P), 16, mask, r);
    for (int j = 0; j < w; ++j) out[p0 + j] = r[j];
  }
}

/// load_lanes16's converse: dst[l·P + p] = in[p][l] (add: += instead of =), written per 16
/// parameters with one transpose16 and 16 row stores, masked past P.
inline void store_lanes16(const __m512* in, int P, float* dst, bool add) {
  for (int p0 = 0; p0 < P; p0 += 16) {
    const int w = std::min(16, P - p0);
    const __mmask16 mask = __mmask16((1u << w) - 1u);
    __m512 r[16];
    for (int j = 0; j < 16; ++j) r[j] = j < w ? in[p0 + j] : _mm512_setzero_ps();
    transpose16(r);
    for (int l = 0; l < 16; ++l) {
      float* d = dst + std::size_t(l) * P + p0;
      const __m512 v = add ? _mm512_add_ps(_mm512_maskz_loadu_ps(mask, d), r[l]) : r[l];
      _mm512_mask_storeu_ps(d, mask, v);
    }
  }
}
#endif

/// e^x, the same bits as xsimd::exp. On AVX-512 floats: xsimd's own range reduction
/// (k = round(x / ln 2), r = x − k ln 2) and polynomial for e^r, then the scaling by 2^k in
/// one vscalefps with a zero-mask, where xsimd's ldexp (an integer add, a shift and a
/// multiply) and its two range selects take eight instructions. xsimd's ldexp builds 2^k from
/// a biased exponent, which gives 0 at k = −127 (x just above its minlog, −88.376) where
/// vscalefps would give a subnormal, so lanes with k ≤ −127 are zeroed (NaN kept), and
/// x ≥ maxlog gives +inf as in xsimd. Elsewhere (other targets, doubles, scalars) it is
/// xsimd::exp itself. Measured (1 thread, AVX-512, interleaved): the spline op's forward alone
/// (18 exp per element) 3–6 % faster.
template <class V> inline V exp(const V& a) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<V, batch<float>> && batch<float>::size == 16) {
    using R = xsimd::kernel::detail::exp_reduction<float, typename V::arch_type, xsimd::kernel::detail::exp_tag>;
    V r;
    const V k = R::reduce(a, r);  // a = k ln 2 + r, |r| ≤ ln 2 / 2
    const V er = R::approx(r);    // e^r
    const __mmask16 keep = _mm512_cmp_ps_mask(k, _mm512_set1_ps(-127.0f), _CMP_NLE_UQ);  // k > −127, or NaN
    const __m512 scaled = _mm512_maskz_scalef_ps(keep, er, k);                       // e^r · 2^k
    const __mmask16 big = _mm512_cmp_ps_mask(a, R::maxlog(), _CMP_GE_OQ);
    return V(_mm512_mask_mov_ps(scaled, big, _mm512_set1_ps(std::numeric_limits<float>::infinity())));
  } else
#endif
  {
    return xsimd::exp(a);
  }
}

/// tanh x. Floats, batches and scalars alike (an element's value does not depend on whether it
/// falls in a SIMD block or in a loop's scalar tail): the rational minimax approximation Eigen
/// and XLA use for float tanh, x·P(x²)/Q(x²) with P of degree 6 and Q of degree 3 in x², x
/// clamped to ±7.905; ±1 beyond |x| = 9.02 (where the float nearest tanh is ±1) and x itself
/// below 4·10⁻⁴ and for NaN. Measured against a float64 tanh over every float in [4·10⁻⁴, 100):
/// max relative error 2.9·10⁻⁷ (4.9 ulp; xsimd::tanh 1.3 ulp), at half xsimd::tanh's time
/// (1024 × 64 values in L2, AVX-512: 13.6 against 27.1 µs): xsimd computes both a polynomial
/// and an exp branch for every batch that mixes small and large |x|, as hidden layers do.
/// Doubles: xsimd::tanh (the gradient checks run in double precision).
template <class V> inline V tanh(const V& x0) {
  if constexpr (!std::is_same_v<V, float> && !std::is_same_v<V, batch<float>>) {
    return xsimd::tanh(x0);
  } else {  // the same lines for a batch and a scalar; kern::fma rounds once in both
    const V c(7.90531110763549805f), ax = xsimd::abs(x0);
    const V x = xsimd::min(xsimd::max(x0, -c), c), x2 = x * x;
    V p(-2.76076847742355e-16f);
    p = kern::fma(x2, p, V(2.00018790482477e-13f));
    p = kern::fma(x2, p, V(-8.60467152213735e-11f));
    p = kern::fma(x2, p, V(5.12229709037114e-08f));
    p = kern::fma(x2, p, V(1.48572235717979e-05f));
    p = kern::fma(x2, p, V(6.37261928875436e-04f));
    p = kern::fma(x2, p, V(4.89352455891786e-03f));
    V q(1.19825839466702e-06f);
    q = kern::fma(x2, q, V(1.18534705686654e-04f));
    q = kern::fma(x2, q, V(2.26843463243900e-03f));
    q = kern::fma(x2, q, V(4.89352518554385e-03f));
    const V r = kern::where(ax > V(9.02f), xsimd::copysign(V(1.0f), x0), x * p / q);
    return kern::where(!(ax >= V(4e-4f)), x0, r);  // tiny, or NaN
  }
}

/// g[i] += x[i]
template <class T> inline void acc(const T* x, T* g, std::size_t n) {
  acc2(x, x, g, n, [](auto a, auto) { return a; });
}

/// g ⟵ x, g ⟵ f(x, y), g ⟵ f(x, y, z): assigned (g = …) when `assign`, else added (g += …).
/// A VJP assigns when it is the first to write an input's adjoint in a pass (Tape::grad_sink).
template <class T> inline void put(bool assign, const T* x, T* g, std::size_t n) {
  if (assign) std::copy(x, x + n, g);
  else acc(x, g, n);
}

/// z_i = f(x_i, y_i) for the m rows of m×n arrays (row i at i·n), and their column sums into s:
/// s_j ⟵ z_0j + z_1j + … (assign) or s_j + z_0j + z_1j + …, added in row order. The same
/// operations as map2 on each row followed by put(assign && i == 0, z_i, s), so the same bits,
/// but the columns go in blocks of up to four vectors whose sums stay in registers over all
/// the rows: each z is written once and never read back, and s is read and written once.
/// Each z is both stored and added, so a compiler does not fuse f's last product into the add
/// (GCC fuses only a product whose every use is an add; clang not across statements); the row
/// loop added z back from memory. The test compares the bits for an f ending in a product.
/// kern::rounded here to force it measured 8–13 % slower at shape A in four of six noisy pairs
/// (one even, one faster). No rows: an assigned s is the empty sum 0, an added one is left.
/// (A fused linear layer's z̄ = ȳ ⊙ act'(y) and b̄ = Σ_i z̄_i.)
template <class T, class F>
inline void map2_col_sums(bool assign, std::size_t m, std::size_t n, const T* x, const T* y, T* z, T* s, F f) {
  if (m == 0) {
    if (assign) std::fill(s, s + n, T(0));
    return;
  }
  using V = batch<T>;
  constexpr std::size_t W = V::size, kBlock = 4;
  const std::size_t vec_end = n / W * W;
  auto block = [&](std::size_t j0, auto width) {  // columns j0 … j0 + width·W − 1
    constexpr std::size_t NV = decltype(width)::value;
    V sum[NV];
    for (std::size_t v = 0; v < NV; ++v) {
      const std::size_t j = j0 + v * W;
      const V z0 = f(V::load_unaligned(x + j), V::load_unaligned(y + j));
      z0.store_unaligned(z + j);
      sum[v] = assign ? z0 : V::load_unaligned(s + j) + z0;
    }
    for (std::size_t i = 1; i < m; ++i)
      for (std::size_t v = 0; v < NV; ++v) {
        const std::size_t at = i * n + j0 + v * W;
        const V zi = f(V::load_unaligned(x + at), V::load_unaligned(y + at));
        zi.store_unaligned(z + at);
        sum[v] += zi;
      }
    for (std::size_t v = 0; v < NV; ++v) sum[v].store_unaligned(s + j0 + v * W);
  };
  std::size_t j = 0;
  for (; j + kBlock * W <= vec_end; j += kBlock * W) block(j, std::integral_constant<std::size_t, kBlock>{});
  for (; j + 2 * W <= vec_end; j += 2 * W) block(j, std::integral_constant<std::size_t, 2>{});
  for (; j < vec_end; j += W) block(j, std::integral_constant<std::size_t, 1>{});
  for (; j < n; ++j) {  // the scalar tail of each row, as map2's
    T sum = assign ? T(0) : s[j];
    for (std::size_t i = 0; i < m; ++i) {
      const T zi = f(x[i * n + j], y[i * n + j]);
      z[i * n + j] = zi;
      sum = (assign && i == 0) ? zi : sum + zi;
    }
    s[j] = sum;
  }
}
/// A block of k columns of m rows, g[i·ldg + j] ⟵ x[i·ldx + j] (assigned or added, as put): the
/// column ops (slice, concatenation, a single taken column). Plain loops, not put per row: a
/// d = 2 coupling's rows are one or two floats wide, and a std::copy per row, a memmove call
/// each, was most of those ops' time (shape A: ~3 % of a training step). One column is a
/// strided copy.
template <class T>
inline void put_block(bool assign, std::size_t m, std::size_t k, const T* x, std::size_t ldx, T* g, std::size_t ldg) {
  if (k == 1) {
    for (std::size_t i = 0; i < m; ++i) g[i * ldg] = assign ? x[i * ldx] : g[i * ldg] + x[i * ldx];
    return;
  }
  for (std::size_t i = 0; i < m; ++i) {
    const T* xi = x + i * ldx;
    T* gi = g + i * ldg;
    if (assign)
      for (std::size_t j = 0; j < k; ++j) gi[j] = xi[j];
    else
      for (std::size_t j = 0; j < k; ++j) gi[j] += xi[j];
  }
}
template <class T, class F> inline void put2(bool assign, const T* x, const T* y, T* g, std::size_t n, F f) {
  if (assign) map2(x, y, g, n, f);
  else acc2(x, y, g, n, f);
}
template <class T, class F>
inline void put3(bool assign, const T* x, const T* y, const T* z, T* g, std::size_t n, F f);

/// Σ f(x[i], y[i]), accumulated in batches (then xsimd::hadd) for speed, and then the scalar
/// tail: the order of additions of sum() below, whatever f.
template <class T, class F> inline T sum2(const T* x, const T* y, std::size_t n, F f) {
  constexpr std::size_t W = batch<T>::size;
  batch<T> s(T(0));
  std::size_t i = 0;
  for (; i + W <= n; i += W) s += f(batch<T>::load_unaligned(x + i), batch<T>::load_unaligned(y + i));
  T r = xsimd::hadd(s);
  for (; i < n; ++i) r += f(x[i], y[i]);
  return r;
}

/// Σ x[i] (sum2's order).
template <class T> inline T sum(const T* x, std::size_t n) {
  return sum2(x, x, n, [](auto a, auto) { return a; });
}

/// z[i] = f(x[i], y[i], w[i])
template <class T, class F>
inline void map3(const T* x, const T* y, const T* w, T* z, std::size_t n, F f) {
  constexpr std::size_t W = batch<T>::size;
  std::size_t i = 0;
  for (; i + W <= n; i += W)
    f(batch<T>::load_unaligned(x + i), batch<T>::load_unaligned(y + i), batch<T>::load_unaligned(w + i))
        .store_unaligned(z + i);
  for (; i < n; ++i) z[i] = f(x[i], y[i], w[i]);
}

template <class T, class F>
inline void put3(bool assign, const T* x, const T* y, const T* z, T* g, std::size_t n, F f) {
  if (assign) map3(x, y, z, g, n, f);
  else acc3(x, y, z, g, n, f);
}

// ---------------------------------------------------------------- GEMM
// C = α · op(A) · op(B) + β · C in row-major order, op(A) m×k, op(B) k×n, op = identity or
// transpose (ta, tb). As in BLAS, β = 0 means C is not read: it may hold anything, even NaN,
// which lets a VJP write a fresh adjoint without zeroing it first.
//
// OpenBLAS is fast on big blocks, but when one dimension is tiny (a 1-column input layer, a
// 2-column output layer) its packing and dispatch dominate and it reaches 5-25 % of peak. For
// those shapes gemm() below uses one of three small xsimd kernels instead:
//   gemm_small_k:  k ≤ 8         C = β C + Σ_p op(A)(:, p) ⊗ op(B)(p, :), k outer products
//   gemm_small_n:  n ≤ 8, A      C(i, j) = β C + ⟨A(i, :), op(B)(:, j)⟩, dot products (n ≤ 4 without AVX-512)
//   gemm_tn_thin:  Aᵀ B, m or n ≤ 4 (long k: a weight gradient), accumulated in registers
// The limits are where they beat OpenBLAS's Haswell kernels in bench/micro_bench (k = 16 no
// longer does: its 16 broadcasts crowd the registers).
//
// The rest, with n ≥ 64 columns and m ≥ 32 rows (a hidden layer's forward and input gradient, a wide weight
// gradient), goes to trflow's own packed GEMM (gemm_packed.hpp): as fast as OpenBLAS's
// AVX-512 kernels on the square hidden blocks, faster where OpenBLAS's own overheads show
// (β = 0, which OpenBLAS meets with a memset of C before its kernel adds to it, and short k),
// see bench/RESULTS.md. Outputs one vector wide (above kSmallN) take its 8 × 1-vector tile
// (packed::gemm picks it). Narrower outputs of a long, non-transposed A (a layer's forward or x̄
// with a narrow output, such as a 2-D spline coupling's 3K − 1 = 23 bin parameters) go to it
// too where its last NR-wide sliver, padded with zeros, is full enough: see packed_narrow.
// A weight gradient Aᵀ B of small m·n but long k goes back to OpenBLAS, in slices of k that
// its unpacked small-matrix kernels take: see blas_k_split_chunk.
constexpr int kSmallK = 8;  // inner dimensions up to this go to gemm_small_k
constexpr int kThin = 4;    // an outer dimension this small makes a GEMM "skinny"
// Outputs up to this wide take gemm_small_n: with AVX-512's 32 registers N = 8 keeps 16
// accumulators and 8 columns of B in registers; it also keeps OpenBLAS 0.3.21 out of the input
// layer's x̄ = z̄ W (n = 8 at shape B), where OpenBLAS mallocs on every call at some sizes
// (m = 512, k = 128: a lane's half of a 1024-row batch), which broke "no allocation per step".
constexpr int kSmallN = batch<float>::size >= 16 ? 8 : kThin;
constexpr int kPackedMinN = 64;   // outputs at least this wide, with at least
constexpr int kPackedMinM = 32;   // this many rows, go to the packed kernel

/// Whether an output n < kPackedMinN wide (with A not transposed and ≥ kPackedMinM rows) goes
/// to the packed kernel. Measured against OpenBLAS 0.3.21 (m = 1024, k = 64 and 128): on
/// AVX-512 (NR = 32) the packed kernel is faster where the padded last sliver is at least 2/3
/// full (n = 23: 1.7×, 28: 1.5×, 32: 1.6×, 47: 1.4×, 63: 1.7×) and slower below that (n = 16:
/// 0.85×, 33: 0.9×, 40: 0.95×); on AVX2 (NR = 16) its edge tiles cost more, and only whole
/// slivers win (n = 16: 1.4×, 32: 1.2×, 48: 1.1×; 17 … 28: 0.7–1.0×).
template <class T>
constexpr bool packed_narrow(int n) {
  using Tl = packed::Tile<T>;
  const int padded = (n + Tl::NR - 1) / Tl::NR * Tl::NR;
  return Tl::W >= 16 ? 3 * n >= 2 * padded : n == padded;
}

// OpenBLAS, for float and double.
inline void gemm_blas(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                      const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void gemm_blas(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda,
                      const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}

/// β·c, with β = 0 giving 0 whatever c holds.
template <class T> inline T scaled(T beta, T c) { return beta == T(0) ? T(0) : beta * c; }
template <class T> inline batch<T> scaled_load(T beta, const T* c) {
  if (beta == T(0)) return batch<T>(T(0));
  const batch<T> v = batch<T>::load_unaligned(c);
  return beta == T(1) ? v : batch<T>(beta) * v;
}

/// f(v) = v: gemm_small_k's default store.
struct AsIs {
  template <class V> V operator()(V v) const { return v; }
};

/// k = K ≤ 8: row i of C is β C(i, :) + Σ_p α op(A)(i, p) · op(B)(p, :), a few broadcast FMAs
/// per vector of C. op(B)'s rows are read in place, or, for a transposed B, gathered block by
/// block into a stack buffer first. With bias (n values) and f: each vector of C is stored as
/// f(sum + bias), a dense layer's whole forward (gemm_small_k_act).
template <int K, class T, class F = AsIs>
void gemm_small_k(bool ta, bool tb, int m, int n, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
                  T* c, int ldc, const T* bias = nullptr, F f = {}) {
  constexpr int W = int(batch<T>::size), NB = 256;
  T gathered[K > 0 ? K : 1][NB];
  for (int j0 = 0; j0 < n; j0 += NB) {
    const int nb = std::min(NB, n - j0);
    const T* brow[K > 0 ? K : 1];  // brow[p][j] = op(B)(p, j0 + j)
    for (int p = 0; p < K; ++p) {
      if (!tb) {
        brow[p] = b + std::size_t(p) * ldb + j0;
      } else {
        for (int j = 0; j < nb; ++j) gathered[p][j] = b[std::size_t(j0 + j) * ldb + p];
        brow[p] = gathered[p];
      }
    }
    for (int i = 0; i < m; ++i) {
      T ai[K > 0 ? K : 1];  // α · op(A)(i, p)
      for (int p = 0; p < K; ++p) ai[p] = alpha * (ta ? a[std::size_t(p) * lda + i] : a[std::size_t(i) * lda + p]);
      T* ci = c + std::size_t(i) * ldc + j0;
      int j = 0;
      for (; j + W <= nb; j += W) {
        batch<T> s = scaled_load(beta, ci + j);
        for (int p = 0; p < K; ++p) s = kern::fma(batch<T>(ai[p]), batch<T>::load_unaligned(brow[p] + j), s);
        if (bias) s = s + batch<T>::load_unaligned(bias + j0 + j);
        f(s).store_unaligned(ci + j);
      }
      for (; j < nb; ++j) {
        T s = scaled(beta, ci[j]);
        for (int p = 0; p < K; ++p) s += ai[p] * brow[p][j];
        if (bias) s = s + bias[j0 + j];
        ci[j] = f(s);
      }
    }
  }
}

/// n = N ≤ 8, op(A) = A: every C(i, j) is a dot product of row i of A with column j of
/// op(B), summed lane-wise in a vector accumulator and then across lanes (xsimd::hadd; not
/// haddp, whose AVX-512 float version in xsimd 8.1 returns the sums out of order; with
/// AVX-512 floats hadd16, the same sums for the R·N accumulators at once). R rows at a time
/// give 16 independent accumulators. op(B)'s columns are read in place for a
/// transposed B, else gathered into a stack buffer, KB entries of the depth at a time
/// (C = β C + Σ over the blocks).
template <int N, class T>
void gemm_small_n(bool tb, int m, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
                  int ldc) {
  constexpr int W = int(batch<T>::size), R = 16 / N, KB = 512;
  T gathered[N][KB];
  for (int p0 = 0; p0 < k; p0 += KB) {
    const int kb = std::min(KB, k - p0);
    const T beta_block = p0 == 0 ? beta : T(1);
    const T* bcol[N];  // bcol[j][p] = op(B)(p0 + p, j)
    for (int j = 0; j < N; ++j) {
      if (tb) {
        bcol[j] = b + std::size_t(j) * ldb + p0;
      } else {
        for (int p = 0; p < kb; ++p) gathered[j][p] = b[std::size_t(p0 + p) * ldb + j];
        bcol[j] = gathered[j];
      }
    }
    const int p_vec = kb - kb % W;  // the depth covered by full batches
    // C(i, j) = β C(i, j) + α (Σ_lanes acc + the scalar tail of the depth)
    auto finish_dot = [&](int i, int j, T dot) {  // dot: Σ_lanes acc
      const T* ai = a + std::size_t(i) * lda + p0;
      for (int p = p_vec; p < kb; ++p) dot += ai[p] * bcol[j][p];
      T& cij = c[std::size_t(i) * ldc + j];
      cij = scaled(beta_block, cij) + alpha * dot;
    };
    auto finish = [&](int i, int j, const batch<T>& acc) { finish_dot(i, j, xsimd::hadd(acc)); };
    int i = 0;
    for (; i + R <= m; i += R) {
      batch<T> acc[R][N];  // acc[r][j]: lane-wise partial sums of C(i + r, j)
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < N; ++j) acc[r][j] = batch<T>(T(0));
      for (int p = 0; p < p_vec; p += W) {
        batch<T> bv[N];
        for (int j = 0; j < N; ++j) bv[j] = batch<T>::load_unaligned(bcol[j] + p);
        for (int r = 0; r < R; ++r) {
          const batch<T> av = batch<T>::load_unaligned(a + std::size_t(i + r) * lda + p0 + p);
          for (int j = 0; j < N; ++j) acc[r][j] = kern::fma(av, bv[j], acc[r][j]);
        }
      }
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<T, float> && W == 16) {  // the 16 lane sums at once, hadd's bits
        __m512 all[16];
        for (int q = 0; q < 16; ++q) all[q] = q < R * N ? __m512(acc[q / N][q % N]) : _mm512_setzero_ps();
        alignas(64) float dots[16];
        _mm512_store_ps(dots, hadd16(all));
        for (int r = 0; r < R; ++r)
          for (int j = 0; j < N; ++j) finish_dot(i + r, j, dots[r * N + j]);
        continue;
      }
#endif
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < N; ++j) finish(i + r, j, acc[r][j]);
    }
    for (; i < m; ++i)  // the last m % R rows, one at a time
      for (int j = 0; j < N; ++j) {
        batch<T> acc(T(0));
        for (int p = 0; p < p_vec; p += W)
          acc = kern::fma(batch<T>::load_unaligned(a + std::size_t(i) * lda + p0 + p),
                           batch<T>::load_unaligned(bcol[j] + p), acc);
        finish(i, j, acc);
      }
  }
}

/// gemm_small_k<K> for a run-time k: K = k, or MaxK where k is larger.
template <int MaxK, int K = 0, class T, class F = AsIs>
inline void gemm_small_k_upto(int k, bool ta, bool tb, int m, int n, T alpha, const T* a, int lda, const T* b,
                              int ldb, T beta, T* c, int ldc, const T* bias = nullptr, F f = {}) {
  if constexpr (K < MaxK)
    if (k != K) return gemm_small_k_upto<MaxK, K + 1>(k, ta, tb, m, n, alpha, a, lda, b, ldb, beta, c, ldc, bias, f);
  gemm_small_k<K>(ta, tb, m, n, alpha, a, lda, b, ldb, beta, c, ldc, bias, f);
}

/// The sum of k outer products of a short vector (S ≤ 4 entries, u_p = U[p·ldu + s]) and a long
/// one (v_p = V[p·ldv + l], contiguous): R(s, l) = Σ_p u_p[s] v_p[l], written to
/// C[s·csu + l·csl] = β C + α R. Columns l0 … l0 + NV·W − 1 here; the accumulators (S·NV
/// batches) stay in registers for the whole sum over p.
template <int S, int NV, class T>
void outer_sum_block(int l0, int k, const T* u, int ldu, const T* v, int ldv, T alpha, T beta, T* c, int csu,
                     int csl) {
  constexpr int W = int(batch<T>::size);
  batch<T> acc[S][NV];
  for (int s = 0; s < S; ++s)
    for (int q = 0; q < NV; ++q) acc[s][q] = batch<T>(T(0));
  for (int p = 0; p < k; ++p) {
    const T* vp = v + std::size_t(p) * ldv + l0;
    batch<T> vb[NV];
    for (int q = 0; q < NV; ++q) vb[q] = batch<T>::load_unaligned(vp + q * W);
    for (int s = 0; s < S; ++s) {
      const batch<T> us(u[std::size_t(p) * ldu + s]);
      for (int q = 0; q < NV; ++q) acc[s][q] = kern::fma(us, vb[q], acc[s][q]);
    }
  }
  for (int s = 0; s < S; ++s)
    for (int q = 0; q < NV; ++q) {
      T* cs = c + std::size_t(s) * csu + std::size_t(l0 + q * W) * csl;
      const batch<T> r = batch<T>(alpha) * acc[s][q];
      if (csl == 1) {
        (scaled_load(beta, cs) + r).store_unaligned(cs);
      } else {  // C holds the transpose: scatter the lanes down a column
        alignas(64) T lanes[W];
        r.store_aligned(lanes);
        for (int x = 0; x < W; ++x) cs[std::size_t(x) * csl] = scaled(beta, cs[std::size_t(x) * csl]) + lanes[x];
      }
    }
}

template <int S, class T>
void outer_sum(int L, int k, const T* u, int ldu, const T* v, int ldv, T alpha, T beta, T* c, int csu, int csl) {
  constexpr int W = int(batch<T>::size);
  int l0 = 0;
  for (; l0 + 4 * W <= L; l0 += 4 * W) outer_sum_block<S, 4>(l0, k, u, ldu, v, ldv, alpha, beta, c, csu, csl);
  switch ((L - l0) / W) {
    case 3: outer_sum_block<S, 3>(l0, k, u, ldu, v, ldv, alpha, beta, c, csu, csl); break;
    case 2: outer_sum_block<S, 2>(l0, k, u, ldu, v, ldv, alpha, beta, c, csu, csl); break;
    case 1: outer_sum_block<S, 1>(l0, k, u, ldu, v, ldv, alpha, beta, c, csu, csl); break;
    default: break;
  }
  for (int l = l0 + (L - l0) / W * W; l < L; ++l)  // the last L % W columns, scalar
    for (int s = 0; s < S; ++s) {
      T r = T(0);
      for (int p = 0; p < k; ++p) r += u[std::size_t(p) * ldu + s] * v[std::size_t(p) * ldv + l];
      T& cs = c[std::size_t(s) * csu + std::size_t(l) * csl];
      cs = scaled(beta, cs) + alpha * r;
    }
}

/// C = β C + α Aᵀ B with A k×m, B k×n and m ≤ 4 or n ≤ 4: Σ_p (row p of A) ⊗ (row p of B).
/// The thin side is broadcast, the wide side vectorized; with n thin, C is written transposed.
template <class T>
void gemm_tn_thin(int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c, int ldc) {
  const bool thin_m = m <= n;  // broadcast the shorter side
  const int S = thin_m ? m : n, L = thin_m ? n : m;
  const T* u = thin_m ? a : b;
  const T* v = thin_m ? b : a;
  const int ldu = thin_m ? lda : ldb, ldv = thin_m ? ldb : lda;
  const int csu = thin_m ? ldc : 1, csl = thin_m ? 1 : ldc;
  switch (S) {
    case 1: outer_sum<1>(L, k, u, ldu, v, ldv, alpha, beta, c, csu, csl); return;
    case 2: outer_sum<2>(L, k, u, ldu, v, ldv, alpha, beta, c, csu, csl); return;
    case 3: outer_sum<3>(L, k, u, ldu, v, ldv, alpha, beta, c, csu, csl); return;
    case 4: outer_sum<4>(L, k, u, ldu, v, ldv, alpha, beta, c, csu, csl); return;
    default: return;  // S = 0: C is empty
  }
}

/// Which of the kernels gemm() uses for a shape.
enum class GemmKernel { blas, small_k, small_n, tn_thin, packed, tn_tall, blas_k_split };

/// OpenBLAS 0.3.21 runs a product of m·n·k ≤ 100³ through its small-matrix kernels (its
/// SMALL_MATRIX_OPT, on SkylakeX): no packing, and for a weight gradient Aᵀ B they beat both
/// its own packed path and trflow's, which pack the operands (measured, AVX-512, 1 thread,
/// µs, one call / blas_k_split / packed: m 64, n 64, k 1024 (shape A's hidden layer) 83 / 59 /
/// 70; m 128, n 8, k 1024 (B's input layer) 45 / 25 / 47 (blas); m 16, n 128, k 1024 (B's
/// output layer) 64 / 45 / 50; m 512, n 32, k 2048 (C's input layer) 742 / 626 / 758 (blas);
/// m 128, n 128, k 1024 (B's hidden layer) 293 / 268 / 275). A longer weight gradient is summed over
/// slices of k that each fit that limit, C = β C + A₁ᵀ B₁, then C += A₂ᵀ B₂, …: the same
/// kernels, which read A and B in place. blas_k_split_chunk gives the slice (0: not this way):
/// at least 32 deep, so that C's reads and writes per slice stay small next to the work; with
/// narrower slices (m 512, n 64, k 2048: 16) there was no gain. Only AVX-512 floats, where it
/// was measured, and only with the OpenBLAS cores that have those kernels (SkylakeX and its
/// successors; not where OPENBLAS_CORETYPE picks, say, Haswell's).
constexpr double kBlasSmallProduct = 1e6;
inline bool blas_has_small_kernels() {
  static const bool has = [] {  // the core OpenBLAS picked (or OPENBLAS_CORETYPE named), as it spells it
    const char* core = openblas_get_corename();
    for (const char* c : {"SkylakeX", "Cooperlake", "Sapphirerapids"})
      if (core && std::strcmp(core, c) == 0) return true;
    return false;
  }();
  return has;
}
template <class T>
inline int blas_k_split_chunk(int m, int n, int k) {
  if (!std::is_same_v<T, float> || batch<T>::size < 16 || !blas_has_small_kernels()) return 0;
  const double mn = double(m) * double(n);
  if (mn * k <= kBlasSmallProduct) return 0;
  int kc = k;
  while (kc >= 64 && mn * kc > kBlasSmallProduct) kc = (kc + 1) / 2;
  return mn * kc <= kBlasSmallProduct && kc >= 32 ? kc : 0;
}

/// A kernel's name, as benchmarks label it.
inline const char* gemm_kernel_name(GemmKernel kind) {
  switch (kind) {
    case GemmKernel::blas: return "cblas_sgemm";
    case GemmKernel::small_k: return "xsimd small_k";
    case GemmKernel::small_n: return "xsimd small_n";
    case GemmKernel::tn_thin: return "xsimd tn_thin";
    case GemmKernel::packed: return "xsimd packed";
    case GemmKernel::tn_tall: return "xsimd packed, tall Aᵀ B as (Bᵀ A)ᵀ";
    case GemmKernel::blas_k_split: return "cblas_sgemm small, k in slices";
  }
  return "?";
}

/// (blas_k_split: *k_chunk, where given, receives the slice of k.)
template <class T>
inline GemmKernel gemm_kernel(bool ta, bool tb, int m, int n, int k, int* k_chunk = nullptr) {
  if (k <= kSmallK) return GemmKernel::small_k;
  if (!ta && n <= kSmallN) return GemmKernel::small_n;
  if (!ta && n <= int(batch<T>::size) && m >= kPackedMinM) return GemmKernel::packed;  // its one-vector tile
  if (ta && !tb && (m <= kThin || n <= kThin)) return GemmKernel::tn_thin;
  if (ta && !tb)
    if (const int kc = blas_k_split_chunk<T>(m, n, k); kc > 0) {
      if (k_chunk) *k_chunk = kc;
      return GemmKernel::blas_k_split;
    }
  // A tall, narrow weight gradient (Aᵀ B with m ≥ 8n, n ≤ 128: a spline conditioner's output
  // layer, 23·⌈D/2⌉ outputs from 64 hidden): run directly, the packed kernel re-reads a long
  // strided A for only n/32 slivers of B, and OpenBLAS beat it (% of peak, blas / packed:
  // m 11 776, n 64, k 512: 62 / 43; m 1024, n 64: 64 / 61; m 2048, n 128: 68 / 66). As
  // Cᵀ = Bᵀ A, the long operand packed as B (packed::gemm_tn_tall), it beats OpenBLAS where m
  // and k are long (operands not in cache, CPU time, tall / blas: m 11 776, n 64, k 512: 1.15×;
  // k 256: 1.09×; m 2048, n 128, k 1024: 1.06×) and ties or loses below (m 736 … 1472, n 64,
  // k 512: 0.99–1.00×; m 200, n 20, k 500: 0.95×; m 520, n 64, k 40: 0.69×). That was with
  // AVX-512 floats; an AVX2 build (8 floats) lost to OpenBLAS's Haswell kernel on the first of
  // them (86–87 against 90–100 GFLOP/s), so narrower vectors keep OpenBLAS for these shapes.
  if (ta && !tb && n <= 128 && m >= 8 * n)
    return batch<T>::size >= 16 && m >= 2048 && k >= 256 ? GemmKernel::tn_tall : GemmKernel::blas;
  if (n >= kPackedMinN && m >= kPackedMinM) return GemmKernel::packed;
  // A weight gradient with 16 … 31 output features (Aᵀ B, long k): the packed kernel's 8-row
  // tile, unless the product is small enough (m·n·k ≤ 10⁶) for OpenBLAS's small-matrix kernels,
  // which win there (m = 16, n = 128, k = 1024: 113 against 95 GFLOP/s; m = 24, n = 64, k = 512:
  // 123 against 173).
  if (ta && !tb && n >= kPackedMinN && m >= kPackedMinM / 2 && double(m) * n * k > 1e6) return GemmKernel::packed;
  if (!ta && m >= kPackedMinM && packed_narrow<T>(n)) return GemmKernel::packed;
  return GemmKernel::blas;
}

/// C = α op(A) op(B) + β C (row-major; β = 0: C is not read), through the fastest kernel for the shape.
template <class T>
inline void gemm(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
                 T* c, int ldc) {
  int kc = 0;  // blas_k_split's slice of k
  switch (gemm_kernel<T>(ta, tb, m, n, k, &kc)) {
    case GemmKernel::small_k: return gemm_small_k_upto<kSmallK>(k, ta, tb, m, n, alpha, a, lda, b, ldb, beta, c, ldc);
    case GemmKernel::small_n:
      switch (n) {
        case 0: return;
        case 1: return gemm_small_n<1>(tb, m, k, alpha, a, lda, b, ldb, beta, c, ldc);
        case 2: return gemm_small_n<2>(tb, m, k, alpha, a, lda, b, ldb, beta, c, ldc);
        case 3: return gemm_small_n<3>(tb, m, k, alpha, a, lda, b, ldb, beta, c, ldc);
        case 4: return gemm_small_n<4>(tb, m, k, alpha, a, lda, b, ldb, beta, c, ldc);
        case 5: return gemm_small_n<5>(tb, m, k, alpha, a, lda, b, ldb, beta, c, ldc);
        case 6: return gemm_small_n<6>(tb, m, k, alpha, a, lda, b, ldb, beta, c, ldc);
        case 7: return gemm_small_n<7>(tb, m, k, alpha, a, lda, b, ldb, beta, c, ldc);
        default: return gemm_small_n<8>(tb, m, k, alpha, a, lda, b, ldb, beta, c, ldc);
      }
    case GemmKernel::tn_thin: return gemm_tn_thin(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    case GemmKernel::packed: return packed::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    case GemmKernel::tn_tall: return packed::gemm_tn_tall(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    case GemmKernel::blas_k_split: {
      for (int p = 0; p < k; p += kc)  // C = β C + A₁ᵀ B₁, then C += A₂ᵀ B₂, …
        gemm_blas(ta, tb, m, n, std::min(kc, k - p), alpha, a + std::size_t(p) * lda, lda, b + std::size_t(p) * ldb, ldb,
                  p == 0 ? beta : T(1), c, ldc);
      return;
    }
    case GemmKernel::blas: break;
  }
  gemm_blas(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/// A weight gradient and a bias gradient from one adjoint, where the shape runs as
/// packed::gemm_tn_tall (a spline conditioner's output layer at large D: A is 512 × 11 776 at
/// D = 1024, 24 MB, not in cache): C = α Aᵀ B + β C (gemm(true, false, …)) and sums[i] ⟵
/// Σ_p A(p, i), assigned where assign, else added, the rows in order, summed as the kernel
/// packs A: one read of A instead of two (sums and C must not overlap). Returns false, C and
/// sums untouched, for any other shape: the caller runs gemm() and then its own pass over A.
template <class T>
inline bool gemm_tn_col_sums(int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
                             int ldc, T* sums, bool assign) {
  if (gemm_kernel<T>(true, false, m, n, k) != GemmKernel::tn_tall || m <= 0 || n <= 0 || k <= 0) return false;
  packed::gemm_tn_tall(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, packed::ColSums<T>{sums, assign});
  return true;
}

/// Inner dimensions up to this take gemm_small_k_act's fused stores. Measured on the AVX-512
/// machine, m = 1024, tanh, µs, GEMM and then a pass / fused: k = 1, n = 64 22.9 / 17.0; k = 2
/// 24.5 / 18.9; k = 4 25.1 / 22.1 (n = 128: 46.8 / 41.0); k = 6 26.2 / 26.4; k = 8, n = 128
/// 51.0 / 54.2 (shape B's first layer: a chain of eight FMAs and then the activation's per
/// vector, where the two loops apart each keep the FMA units busier).
constexpr int kSmallKFused = 4;

/// C = f(op(A) op(B) + 1·biasᵀ) (bias may be null: f(op(A) op(B))) where gemm() runs the shape
/// as gemm_small_k and k ≤ kSmallKFused (a dense layer with 1 … 4 inputs: shape A's first
/// layer, a 2-D coupling's conditioner): the bias and f (an activation, for batches and
/// scalars) applied to each vector of C as it is stored, the same operations in the same order
/// as gemm() and then a pass C = f(C + bias), without that pass's store and reload of C.
/// Returns false, C untouched, for any other shape.
template <class T, class F>
inline bool gemm_small_k_act(bool ta, bool tb, int m, int n, int k, const T* a, int lda, const T* b, int ldb, T* c,
                             int ldc, const T* bias, F f) {
  if (k > kSmallKFused || gemm_kernel<T>(ta, tb, m, n, k) != GemmKernel::small_k) return false;
  gemm_small_k_upto<kSmallKFused>(k, ta, tb, m, n, T(1), a, lda, b, ldb, T(0), c, ldc, bias, f);
  return true;
}

/// gemm() and then each row of C plus bias (n values) where the packed kernel runs the shape:
/// it adds them as it stores its tiles, not in a pass over C afterwards. Returns whether C
/// holds the bias now (true without one); if not, the caller adds it (with its activation, in
/// one pass).
template <class T>
inline bool gemm_add_bias(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb,
                          T beta, T* c, int ldc, const T* bias) {
  if (!bias || gemm_kernel<T>(ta, tb, m, n, k) != GemmKernel::packed) {
    gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return !bias;
  }
  packed::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias);
  return true;
}

}  // namespace ad::kern
