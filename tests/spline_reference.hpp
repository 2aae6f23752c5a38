#pragma once
// A plain float64 rational-quadratic spline, written from Durkan et al. (2019) without the
// engine's code: knots by explicit cumulative sums, the bin by a linear search, and the
// inverse by bisection on the forward map (not by the closed form the op uses). The tests
// compare the op against it.
#include <algorithm>
#include <cmath>
#include <vector>

#include "autodiff/tape.hpp"

namespace spline_ref {

struct Spline {
  std::vector<double> x, y, d;  // K + 1 knots and derivatives
};

/// u: 3K − 1 unnormalized parameters [widths K | heights K | interior derivatives K − 1].
inline Spline knots(const double* u, int K, double B) {
  const double min_w = 1e-3, min_h = 1e-3, min_d = 1e-3;
  Spline s;
  auto cum = [&](const double* v, double min_frac, std::vector<double>& out) {
    double mx = v[0], total = 0;
    for (int i = 1; i < K; ++i) mx = std::max(mx, v[i]);
    std::vector<double> p(K);
    for (int i = 0; i < K; ++i) total += p[i] = std::exp(v[i] - mx);
    out.assign(K + 1, 0.0);
    out[0] = -B;
    double c = 0;
    for (int i = 0; i + 1 < K; ++i) {
      c += min_frac + (1 - K * min_frac) * p[i] / total;
      out[i + 1] = -B + 2 * B * c;
    }
    out[K] = B;
  };
  cum(u, min_w, s.x);
  cum(u + K, min_h, s.y);
  s.d.assign(K + 1, 1.0);
  const double c = std::log(std::exp(1.0 - min_d) - 1.0);
  for (int i = 1; i < K; ++i) s.d[i] = min_d + std::log1p(std::exp(u[2 * K + i - 1] + c));
  return s;
}

/// y = s(x) and log s'(x).
inline double forward(const Spline& s, double x, double& logd) {
  const int K = int(s.x.size()) - 1;
  const double B = s.x[K];
  if (x < -B || x > B) return logd = 0, x;
  int k = 0;
  while (k + 1 < K && x >= s.x[k + 1]) ++k;
  const double w = s.x[k + 1] - s.x[k], h = s.y[k + 1] - s.y[k], sl = h / w;
  const double xi = (x - s.x[k]) / w, t = xi * (1 - xi);
  const double den = sl + (s.d[k + 1] + s.d[k] - 2 * sl) * t;
  logd = std::log(sl * sl * (s.d[k + 1] * xi * xi + 2 * sl * t + s.d[k] * (1 - xi) * (1 - xi)) / (den * den));
  return s.y[k] + h * (sl * xi * xi + s.d[k] * t) / den;
}

/// x = s⁻¹(y) by bisection (s is increasing), and log s'(x).
inline double inverse(const Spline& s, double y, double& logd) {
  const double B = s.x.back();
  if (y < -B || y > B) return logd = 0, y;
  double lo = -B, hi = B, unused;
  for (int it = 0; it < 200 && hi - lo > 0; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) break;
    (forward(s, mid, unused) < y ? lo : hi) = mid;
  }
  const double x = std::abs(forward(s, lo, unused) - y) <= std::abs(forward(s, hi, unused) - y) ? lo : hi;
  forward(s, x, logd);
  return x;
}

/// The op's output for x (m×n) and theta (m × n(3K−1)): [y | Σ_j log y'_j], or the inverse.
inline ad::Array<double> apply(const ad::Array<double>& x, const ad::Array<double>& theta, int K, double B,
                               bool inv) {
  const std::size_t m = x.shape()[0], n = x.shape()[1], P = std::size_t(3 * K - 1);
  ad::Array<double> out(ad::Array<double>::shape_type{m, n + 1}, 0.0);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      const Spline s = knots(&theta(i, j * P), K, B);
      double logd = 0;
      out(i, j) = inv ? inverse(s, x(i, j), logd) : forward(s, x(i, j), logd);
      out(i, n) += inv ? -logd : logd;
    }
  return out;
}

}  // namespace spline_ref
