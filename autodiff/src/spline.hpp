#pragma once
// The monotonic rational-quadratic spline of Durkan, Bekasov, Murray and Papamakarios,
// "Neural Spline Flows" (NeurIPS 2019), Sec. 3, as scalar/SIMD-generic code: every
// function is a template on V, which is either a scalar T or an xsimd batch of T, so the
// SIMD body and the scalar tail of the op run the same lines.
//
// One spline per element, K bins on [−B, B], from 3K − 1 unnormalized numbers
// u = [u^w_0 … u^w_{K−1} | u^h_0 … u^h_{K−1} | u^d_1 … u^d_{K−1}]:
//   bin widths   w_i = m_w + (1 − K m_w) softmax(u^w)_i,  knots X_0 = −B, X_i = −B + 2B Σ_{j<i} w_j, X_K = B
//   bin heights  the same with u^h, m_h:                  knots Y_i
//   derivatives  δ_0 = δ_K = 1 (the identity tails join with slope 1),
//                δ_i = m_δ + softplus(u^d_i + c),  c = log(e^{1 − m_δ} − 1), so u^d = 0 gives δ = 1
// and u = 0 everywhere is the identity map. In bin k, with ξ = (x − X_k)/Δx, s = Δy/Δx,
//   y  = Y_k + Δy (s ξ² + δ_k ξ(1−ξ)) / (s + (δ_{k+1} + δ_k − 2s) ξ(1−ξ))
//   y' = s² (δ_{k+1} ξ² + 2s ξ(1−ξ) + δ_k (1−ξ)²) / (s + (δ_{k+1} + δ_k − 2s) ξ(1−ξ))²
// Outside [−B, B] the map is the identity (y = x, log y' = 0).
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "autodiff/xsimd.hpp"

#include "kernels.hpp"

namespace ad::spline {

constexpr int kMaxBins = 64;
constexpr double kMinWidth = 1e-3;       // m_w, as a fraction of the box 2B
constexpr double kMinHeight = 1e-3;      // m_h
constexpr double kMinDerivative = 1e-3;  // m_δ

/// c = log(e^{1 − m_δ} − 1): softplus(c) + m_δ = 1.
inline double derivative_offset() { return std::log(std::expm1(1.0 - kMinDerivative)); }

using kern::where;

/// The element type of V: V itself for a scalar, V::value_type for a batch.
template <class V, bool = std::is_arithmetic_v<V>>
struct Scalar {
  using type = V;
};
template <class V>
struct Scalar<V, false> {
  using type = typename V::value_type;
};
template <class V>
using scalar_t = typename Scalar<V>::type;

/// The knots of one spline (per lane when V is a batch) and what the reverse pass needs. The
/// derivatives stay as their softplus arguments z_i = u^d_i + c: an element's map reads only
/// its bin's δ_k and δ_{k+1}, so find_bin computes those two, not all K − 1 (at K = 8 that was
/// 7 exp and 7 log1p per element, most of the op's time, for 2 values used).
/// N: the most bins they hold (the op's K itself where it is a compile-time constant).
template <class V, int N = kMaxBins>
struct Knots {
  V x[N + 1], y[N + 1], z[N + 1];  // X_i, Y_i, z_i (z_0 = z_K = 0: unused)
  V pw[N], ph[N];                  // softmax(u^w), softmax(u^h)
};

/// p = softmax(u), knots[i] = −B + 2B Σ_{j<i} (m + (1 − K m) p_j), knots[0] = −B, knots[K] = B.
template <class V, class T>
inline void make_knots(const V* u, int K, T B, T min_frac, V* p, V* knots) {
  V mx = u[0];
  for (int i = 1; i < K; ++i) mx = xsimd::max(mx, u[i]);
  V total(T(0));
  for (int i = 0; i < K; ++i) p[i] = kern::exp(u[i] - mx), total += p[i];
  const V inv = V(T(1)) / total;
  const T scale = T(1) - T(K) * min_frac;
  V cum(T(0));
  knots[0] = V(-B);
  for (int i = 0; i < K; ++i) {
    p[i] *= inv;
    if (i + 1 < K) {
      cum += V(min_frac) + V(scale) * p[i];
      knots[i + 1] = V(-B) + V(T(2) * B) * cum;
    }
  }
  knots[K] = V(B);
}

/// All knots of the spline whose parameters are u (3K − 1 values, laid out as above).
template <class V, int N, class T>
inline void make_spline(const V* u, int K, T B, Knots<V, N>& kn) {
  make_knots(u, K, B, T(kMinWidth), kn.pw, kn.x);
  make_knots(u + K, K, B, T(kMinHeight), kn.ph, kn.y);
  const T c = T(derivative_offset());
  kn.z[0] = kn.z[K] = V(T(0));
  for (int i = 1; i < K; ++i) kn.z[i] = u[2 * K + i - 1] + V(c);
}

/// δ = m_δ + softplus(z), and with slope: dδ/dz = sigmoid(z). With e = e^{−|z|}: softplus(z) =
/// max(z, 0) + log1p(e), sigmoid(z) = 1/(1 + e) for z ≥ 0 and e/(1 + e) for z < 0; finite for any z.
template <class V>
inline V derivative(V z, V* slope) {
  using T = scalar_t<V>;
  const V e = kern::exp(-xsimd::abs(z));
  if (slope) *slope = where(z >= V(T(0)), V(T(1)), e) / (V(T(1)) + e);
  return V(T(kMinDerivative)) + xsimd::max(z, V(T(0))) + xsimd::log1p(e);
}

/// One bin's numbers: k, X_k, Δx, Y_k, Δy, δ_k, δ_{k+1}, and (with_slopes) dδ/du^d of δ_k and
/// δ_{k+1} (0 at the fixed end derivatives δ_0 = δ_K = 1).
template <class V>
struct Bin {
  V k, x0, w, y0, h, d0, d1, s0, s1;
};

/// The bin holding v: the last k with knots[k] ≤ v (k ≤ K − 1, so v = B falls in the last
/// bin), found branch-free over the K − 1 interior knots; then its two derivatives. by_y:
/// search the Y knots (inverse). with_slopes: also dδ/du^d, which only the reverse pass needs.
template <class V, int N>
inline Bin<V> find_bin(const Knots<V, N>& kn, int K, V v, bool by_y, bool with_slopes = false) {
  using T = scalar_t<V>;
  const V* at = by_y ? kn.y : kn.x;
  V k(0), x0 = kn.x[0], x1 = kn.x[1], y0 = kn.y[0], y1 = kn.y[1], z0 = kn.z[0], z1 = kn.z[1];
  for (int i = 1; i < K; ++i) {
    const auto m = v >= at[i];
    k = where(m, V(i), k);
    x0 = where(m, kn.x[i], x0), x1 = where(m, kn.x[i + 1], x1);
    y0 = where(m, kn.y[i], y0), y1 = where(m, kn.y[i + 1], y1);
    z0 = where(m, kn.z[i], z0), z1 = where(m, kn.z[i + 1], z1);
  }
  Bin<V> b{k, x0, x1 - x0, y0, y1 - y0, V(T(1)), V(T(1)), V(T(0)), V(T(0))};
  const auto first = k == V(T(0)), last = k == V(T(K - 1));
  b.d0 = where(first, V(T(1)), derivative(z0, with_slopes ? &b.s0 : nullptr));
  b.d1 = where(last, V(T(1)), derivative(z1, with_slopes ? &b.s1 : nullptr));
  if (with_slopes) b.s0 = where(first, V(T(0)), b.s0), b.s1 = where(last, V(T(0)), b.s1);
  return b;
}

/// y and the slope y' = dy/dx at relative position ξ ∈ [0, 1] of bin b, written as
///   y = Y_k + Δy · num/den,   y' = s² P / den²
/// with s = Δy/Δx, t = ξ(1−ξ), num = s ξ² + δ_k t, den = s + (δ_{k+1} + δ_k − 2s) t,
/// P = δ_{k+1} ξ² + 2 s t + δ_k (1−ξ)².
template <class V>
inline void eval_bin_slope(const Bin<V>& b, V xi, V& y, V& slope) {
  const V s = b.h / b.w, t = xi * (V(1) - xi), om = V(1) - xi;
  const V num = s * xi * xi + b.d0 * t;
  const V den = s + (b.d1 + b.d0 - V(2) * s) * t;
  const V P = b.d1 * xi * xi + V(2) * s * t + b.d0 * om * om;
  y = b.y0 + b.h * num / den;
  const V r = s / den;
  slope = r * r * P;  // y' = s² P / den² > 0, within float range (s, P, den ≥ ~1e-6)
}
/// y and log y' (the log-determinant's term) at ξ.
template <class V>
inline void eval_bin(const Bin<V>& b, V xi, V& y, V& logd) {
  eval_bin_slope(b, xi, y, logd);
  logd = xsimd::log(logd);
}

/// The adjoints of one bin's inputs (x, X_k, Δx, Y_k, Δy, δ_k, δ_{k+1}) given ȳ and the
/// adjoint ℓ̄ of log y', by reverse mode through eval_bin's lines (ξ = (x − X_k)/Δx):
///   num̄ = ȳ Δy/den, den̄ = −ȳ Δy num/den² − 2ℓ̄/den, s̄ = 2ℓ̄/s, P̄ = ℓ̄/P, t̄, ξ̄ by the chain rule,
///   x̄ = ξ̄/Δx, X̄_k = −ξ̄/Δx, Δx̄ = −ξ̄ ξ/Δx − s̄ s/Δx, Δȳ = s̄/Δx + ȳ num/den, Ȳ_k = ȳ.
template <class V>
struct BinGrad {
  V x, x0, w, y0, h, d0, d1;
};
template <class V>
inline BinGrad<V> reverse_bin(const Bin<V>& b, V x, V gy, V gl) {
  // Four divisions: the reciprocals 1/Δx and 1/den, which every quotient by Δx or den below
  // multiplies by, and the two quotients by P and by Δy
  const V rw = V(1) / b.w;
  const V xi = (x - b.x0) * rw;
  const V s = b.h * rw, t = xi * (V(1) - xi), om = V(1) - xi, q = b.d1 + b.d0 - V(2) * s;
  const V num = s * xi * xi + b.d0 * t;
  const V den = s + q * t, rden = V(1) / den;
  const V P = b.d1 * xi * xi + V(2) * s * t + b.d0 * om * om;
  const V ratio = num * rden;
  const V g_num = gy * b.h * rden;                         // y = Y_k + Δy·num/den
  const V g_den = -(gy * b.h * ratio + V(2) * gl) * rden;
  const V g_P = gl / P;                                    // log y' = 2 log s + log P − 2 log den
  V g_s = V(2) * gl * b.w / b.h + g_P * V(2) * t + g_den * (V(1) - V(2) * t) + g_num * xi * xi;
  const V g_t = g_P * V(2) * s + g_den * q + g_num * b.d0;
  const V g_xi = g_P * (V(2) * b.d1 * xi - V(2) * b.d0 * om) + g_num * V(2) * s * xi + g_t * (V(1) - V(2) * xi);
  BinGrad<V> g;
  g.d1 = g_P * xi * xi + g_den * t;
  g.d0 = g_P * om * om + g_den * t + g_num * t;
  g.y0 = gy;
  g.h = gy * ratio + g_s * rw;                             // s = Δy/Δx
  g.x = g_xi * rw;                                         // ξ = (x − X_k)/Δx
  g.x0 = -g.x;
  g.w = -(g_s * s + g_xi * xi) * rw;
  return g;
}

/// ∂ log y'/∂x in bin b at relative position ξ: (P_ξ/P − 2 den_ξ/den) / Δx.
template <class V>
inline V dlogd_dx(const Bin<V>& b, V xi) {
  const V s = b.h / b.w, t = xi * (V(1) - xi), om = V(1) - xi, q = b.d1 + b.d0 - V(2) * s;
  const V den = s + q * t;
  const V P = b.d1 * xi * xi + V(2) * s * t + b.d0 * om * om;
  const V P_xi = V(2) * b.d1 * xi - V(2) * b.d0 * om + V(2) * s * (V(1) - V(2) * xi);
  const V den_xi = q * (V(1) - V(2) * xi);
  return (P_xi / P - V(2) * den_xi / den) / b.w;
}

/// The inverse in bin b (found by y): ξ is the root in [0, 1] of the quadratic
/// a ξ² + b ξ + c = 0 with Δ = y − Y_k, q = δ_{k+1} + δ_k − 2s,
///   a = Δy (s − δ_k) + Δ q,  b = Δy δ_k − Δ q,  c = −s Δ,
/// taken in the form ξ = 2c / (−b − √(b² − 4ac)), which does not cancel (Durkan et al., App. A).
/// a, b and c themselves can cancel, in a bin whose slope varies steeply, so one Newton step
/// on y(ξ) = y follows, kept only where it lowers the residual: the result is then as accurate
/// as the forward map allows. logd receives log y' at the returned ξ (one log, of the slope
/// kept).
template <class V>
inline V inverse_xi(const Bin<V>& b, V y, V& logd) {
  const V s = b.h / b.w, q = b.d1 + b.d0 - V(2) * s, dy = y - b.y0;
  const V qa = b.h * (s - b.d0) + dy * q;
  const V qb = b.h * b.d0 - dy * q;
  const V qc = -s * dy;
  const V disc = xsimd::max(qb * qb - V(4) * qa * qc, V(0));
  const V xi0 = xsimd::min(xsimd::max(V(2) * qc / (-qb - xsimd::sqrt(disc)), V(0)), V(1));
  V y0, d0, y1, d1;
  eval_bin_slope(b, xi0, y0, d0);
  const V xi1 = xsimd::min(xsimd::max(xi0 - (y0 - y) / (d0 * b.w), V(0)), V(1));  // dy/dξ = y' Δx
  eval_bin_slope(b, xi1, y1, d1);
  const auto better = xsimd::abs(y1 - y) < xsimd::abs(y0 - y);
  logd = xsimd::log(where(better, d1, d0));
  return where(better, xi1, xi0);
}

/// The adjoints of u (3K − 1 values, written to gu) from the adjoints of one bin's X_k, Δx,
/// Y_k, Δy, δ_k, δ_{k+1}. X_i (0 < i < K) = −B + 2B Σ_{j<i} w_j, so with the bin's two knots
/// X_k (adjoint X̄_k − Δx̄) and X_{k+1} (adjoint Δx̄) the only ones that move,
///   w̄_j = 2B ([j < k] (X̄_k − Δx̄) + [j ≤ k][k + 1 < K] Δx̄),
///   p̄ = (1 − K m) w̄,   ū^w_j = p_j (p̄_j − Σ_i p_i p̄_i)        (softmax),
/// the same for the heights, and ū^d_i = [k = i] δ̄_k σ_i + [k + 1 = i] δ̄_{k+1} σ_i (σ: the
/// bin's slopes b.s0, b.s1 from find_bin).
template <class V, int N, class T>
inline void reverse_knots(const Knots<V, N>& kn, int K, T B, const Bin<V>& b, const BinGrad<V>& g, V* gu) {
  const V two_b(T(2) * B);
  const auto right_moves = b.k + V(T(1)) < V(T(K));  // X_{k+1} is an interior knot
  for (int part = 0; part < 2; ++part) {
    const V* p = part == 0 ? kn.pw : kn.ph;
    const T scale = T(1) - T(K) * T(part == 0 ? kMinWidth : kMinHeight);
    const V g_left = part == 0 ? g.x0 - g.w : g.y0 - g.h;
    const V g_right = where(right_moves, part == 0 ? g.w : g.h, V(T(0)));
    V* out = gu + part * K;
    V dot(T(0));
    for (int j = 0; j < K; ++j) {
      const V jj = V(T(j));
      const V gw = two_b * V(scale) *
                   (where(jj < b.k, g_left, V(T(0))) + where(jj <= b.k, g_right, V(T(0))));
      out[j] = gw;  // p̄_j for now
      dot += p[j] * gw;
    }
    for (int j = 0; j < K; ++j) out[j] = p[j] * (out[j] - dot);
  }
  for (int i = 1; i < K; ++i) {
    const V ii = V(T(i));
    gu[2 * K + i - 1] = where(b.k == ii, b.s0 * g.d0, V(T(0))) + where(b.k + V(T(1)) == ii, b.s1 * g.d1, V(T(0)));
  }
}

}  // namespace ad::spline
