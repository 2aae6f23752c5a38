#pragma once
// SIMD loops over raw pointers. Each loop runs xsimd batches of the widest
// width the build targets, then a scalar tail; the functor is generic so the
// same lambda serves both (xsimd provides the scalar overloads of exp, tanh, …).
#include <cstddef>

#include <cblas.h>
#include <xsimd/xsimd.hpp>

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

/// g[i] += x[i]
template <class T> inline void acc(const T* x, T* g, std::size_t n) {
  acc2(x, x, g, n, [](auto a, auto) { return a; });
}

/// Σ x[i], accumulated in batches (then xsimd::hadd) for speed.
template <class T> inline T sum(const T* x, std::size_t n) {
  constexpr std::size_t W = batch<T>::size;
  batch<T> s(T(0));
  std::size_t i = 0;
  for (; i + W <= n; i += W) s += batch<T>::load_unaligned(x + i);
  T r = xsimd::hadd(s);
  for (; i < n; ++i) r += x[i];
  return r;
}

// cblas gemm in row-major order, for float and double:
// C = alpha · op(A) · op(B) + beta · C, with op(A) m×k and op(B) k×n.
inline void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda,
                 const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace ad::kern
