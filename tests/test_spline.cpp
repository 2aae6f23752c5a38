// The rational-quadratic spline op (ad::rq_spline): gradients where the spline is smooth and
// where it is only once differentiable (knots, ±B), round trips in float32 on a million points
// including far tails, log-determinants against finite-difference Jacobians, and bad arguments.
// The op table in test_autodiff.cpp also checks it against a float64 reference, float32
// against float64, and adjoint accumulation, at six shapes.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <doctest/doctest.h>

#include "autodiff/autodiff.hpp"
#include "compare.hpp"
#include "spline_reference.hpp"

using ad::Array;
using ad::Rng;
using ad::Tape;
using ad::Var;

namespace {

constexpr double kB = 3.0;

Array<double> params(Rng& rng, std::size_t m, std::size_t n, int K, double scale) {
  Array<double> th({m, n * std::size_t(3 * K - 1)});
  rng.fill_normal(th.data(), th.size(), 0.0, scale);
  return th;
}

/// The knots of element (i, j) of theta, from the float64 reference.
spline_ref::Spline knots_of(const Array<double>& th, std::size_t i, std::size_t j, int K) {
  return spline_ref::knots(&th(i, j * std::size_t(3 * K - 1)), K, kB);
}

/// Row i of theta's element j is given; x(i, j) is set to the value `pick` chooses from its knots.
template <class Pick>
Array<double> inputs_at(const Array<double>& th, std::size_t m, std::size_t n, int K, Pick pick) {
  Array<double> x({m, n});
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) x(i, j) = pick(knots_of(th, i, j, K), i, j);
  return x;
}

ad::GradcheckResult check(const Array<double>& x, const Array<double>& th, int K, bool inverse, bool values_only,
                          ad::GradcheckOptions opt) {
  const std::size_t n = x.shape()[1];
  return ad::gradcheck(
      [=](Tape<double>&, const std::vector<Var<double>>& v) {
        const Var<double> r = ad::rq_spline(v[0], v[1], K, kB, inverse);
        return values_only ? ad::slice_cols(r, 0, n) : r;
      },
      {x, th}, opt);
}

/// ∂(Σ_j log y'_j)/∂x from the op's VJP (seed 1 on the log-determinant column only).
Array<double> dlogdet_dx(const Array<double>& x, const Array<double>& th, int K) {
  Tape<double> t;
  const Var<double> xv = t.variable(x), tv = t.variable(th);
  const Var<double> r = ad::rq_spline(xv, tv, K, kB);
  Array<double> seed({x.shape()[0], x.shape()[1] + 1}, 0.0);
  for (std::size_t i = 0; i < x.shape()[0]; ++i) seed(i, x.shape()[1]) = 1.0;
  t.backward(r, seed);
  return xv.grad();
}

double logdet_of(const Array<double>& x, const Array<double>& th, int K) {
  Tape<double> t;
  const Var<double> r = ad::rq_spline(t.constant(x), t.constant(th), K, kB);
  return r.value()(0, x.shape()[1]);
}

double ulp(float v) {
  const float a = std::abs(v);
  return double(std::nextafter(a, std::numeric_limits<float>::infinity()) - a);
}

}  // namespace

TEST_CASE("rq_spline: float64 gradients at interior points, in the tails and for the inverse (rtol 1e-6)") {
  Rng rng(31);
  for (int K : {2, 8, 16}) {
    CAPTURE(K);
    const std::size_t m = 5, n = 7;  // 35 elements: a SIMD body and a scalar tail
    const Array<double> th = params(rng, m, n, K, 0.7);
    // Interior: a random point strictly inside a bin (ξ in [0.05, 0.95]); tails: |x| in (B, 1e4].
    const Array<double> inner = inputs_at(th, m, n, K, [&](const spline_ref::Spline& s, std::size_t, std::size_t) {
      const std::size_t k = rng.below(std::size_t(K));
      return s.x[k] + rng.uniform(0.05, 0.95) * (s.x[k + 1] - s.x[k]);
    });
    Array<double> tails({m, n});
    for (double& v : tails) v = (rng.uniform() < 0.5 ? -1 : 1) * std::exp(rng.uniform(std::log(kB * 1.01), std::log(1e4)));
    ad::GradcheckOptions opt;
    opt.seed = 5;
    for (bool inverse : {false, true}) {
      CAPTURE(inverse);
      // For the inverse, interior points of the *output* box: y at the same relative positions.
      Array<double> at = inner;
      if (inverse)
        at = inputs_at(th, m, n, K, [&](const spline_ref::Spline& s, std::size_t i, std::size_t j) {
          double unused;
          return spline_ref::forward(s, inner(i, j), unused);
        });
      ad::GradcheckOptions opt_in = opt;
      // The inverse's slopes reach ~40 here, its third derivative far more: the central
      // difference's O(ε²) error reaches 2e-6 of the value, so it gets rtol 1e-5.
      if (inverse) opt_in.rtol = 1e-5;
      const auto r_in = check(at, th, K, inverse, false, opt_in);
      CHECK_MESSAGE(r_in.ok, r_in.report);
      const auto r_tail = check(tails, th, K, inverse, false, opt);
      CHECK_MESSAGE(r_tail.ok, r_tail.report);
    }
  }
}

TEST_CASE("rq_spline: on knots and at ±B, y is C¹ (central differences) and log y' takes its bin's one-sided derivative") {
  Rng rng(37);
  const int K = 6;
  const std::size_t m = 3, n = K + 1;  // element j of each row sits on knot j (0 = −B, K = +B)
  const Array<double> th = params(rng, m, n, K, 0.7);
  const Array<double> x = inputs_at(th, m, n, K, [](const spline_ref::Spline& s, std::size_t, std::size_t j) { return s.x[j]; });
  ad::GradcheckOptions opt;
  opt.eps = 1e-7;  // y'' jumps at a knot: a central difference is off by ~ε·|jump|/4
  opt.rtol = 1e-5;
  opt.atol = 1e-8;
  opt.seed = 9;
  const auto r = check(x, th, K, false, /*values_only=*/true, opt);
  CHECK_MESSAGE(r.ok, r.report);
  // log y' has a kink at a knot: the op takes the derivative of the bin the point falls in,
  // the right-hand one at an exact knot (X_k ≤ x) and the left-hand one at +B (the last bin's
  // end). The reference's knots may round to the other side of the op's by an ulp, so either
  // one-sided derivative is accepted at interior knots; ±B are exact (−B, B are set, not summed).
  const Array<double> g = dlogdet_dx(x, th, K);
  const double h = 1e-7;
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      CAPTURE(i);
      CAPTURE(j);
      Array<double> row({1, n});
      for (std::size_t c = 0; c < n; ++c) row(0, c) = x(i, c);
      Array<double> th_row({1, th.shape()[1]});
      for (std::size_t c = 0; c < th.shape()[1]; ++c) th_row(0, c) = th(i, c);
      const double base = logdet_of(row, th_row, K);
      auto side = [&](double sign) {
        Array<double> moved = row;
        moved(0, j) += sign * h;
        return (logdet_of(moved, th_row, K) - base) / (sign * h);
      };
      const double right = side(1.0), left = side(-1.0);
      auto near = [&](double v) { return std::abs(g(i, j) - v) <= 1e-5 * std::max(1.0, std::abs(v)); };
      if (j == 0) CHECK(near(right));
      else if (j == n - 1) CHECK(near(left));
      else CHECK((near(right) || near(left)));
      CHECK(std::abs(right - left) > 1e-3);  // there really is a kink to tell apart
    }
}

TEST_CASE("rq_spline: inverse(forward(x)) = x in float32 on 10⁶ points, far tails and box edges included") {
  Rng rng(41);
  const int K = 8;
  const std::size_t m = 1000000;
  const float B = float(kB);
  Array<float> th({m, std::size_t(3 * K - 1)});
  rng.fill_normal(th.data(), th.size(), 0.0, 1.0);
  Array<float> x({m, 1});
  for (std::size_t i = 0; i < m; ++i) {
    const double u = rng.uniform();
    float v;
    if (u < 0.6) v = float(rng.uniform(-kB, kB));                                                  // inside
    else if (u < 0.8) v = float((rng.uniform() < 0.5 ? -1 : 1) * std::exp(rng.uniform(std::log(kB), std::log(1e4))));  // tails
    else if (u < 0.9) {  // ±B and their float neighbours
      const float e = rng.uniform() < 0.5 ? -B : B;
      const double w = rng.uniform();
      v = w < 1.0 / 3 ? e : w < 2.0 / 3 ? std::nextafter(e, 0.0f) : std::nextafter(e, 2 * e);
    } else {  // interior knots, as float32 computes them (a knot is where the bin changes)
      Array<double> row({1, std::size_t(3 * K - 1)});
      for (std::size_t c = 0; c < row.size(); ++c) row.data()[c] = th(i, c);
      v = float(spline_ref::knots(row.data(), K, kB).x[1 + rng.below(std::size_t(K - 1))]);
    }
    x(i, 0) = v;
  }
  Tape<float> t;
  const Var<float> th_v = t.constant(th), x_v = t.variable(x);
  const Var<float> y = ad::rq_spline(x_v, th_v, K, B);
  const Var<float> back = ad::rq_spline(ad::slice_cols(y, 0, 1), th_v, K, B, /*inverse=*/true);
  {  // ∂ log y'/∂x, to tell how far log y' moves between x and the round trip's x'
    Array<float> seed({m, 2}, 0.0f);
    for (std::size_t i = 0; i < m; ++i) seed(i, 1) = 1.0f;
    t.backward(y, seed);
  }
  const Array<float>& dlog = x_v.grad();
  Tape<float> t2;  // the same at the round trip's x'
  const Var<float> xb_v = t2.variable(Array<float>(ad::slice_cols(back, 0, 1).value()));
  {
    Array<float> seed({m, 2}, 0.0f);
    for (std::size_t i = 0; i < m; ++i) seed(i, 1) = 1.0f;
    t2.backward(ad::rq_spline(xb_v, t2.constant(th), K, B), seed);
  }
  const Array<float>& dlog_back = xb_v.grad();
  double worst_steep = 0, worst_cond = 0, worst_logdet = 0;
  std::size_t steep = 0, tails_exact = 0, tails = 0;
  for (std::size_t i = 0; i < m; ++i) {
    const float xi = x(i, 0), yi = y.value()(i, 0), bi = back.value()(i, 0);
    const double ld = y.value()(i, 1), ld_back = back.value()(i, 1);
    REQUIRE(std::isfinite(yi));
    REQUIRE(std::isfinite(bi));
    if (std::abs(xi) > B) {  // identity tails, to the bit
      ++tails;
      tails_exact += yi == xi && bi == xi && ld == 0 && ld_back == 0;
      continue;
    }
    const double err = std::abs(double(bi) - double(xi)), slope = std::exp(ld);
    // float32 y is known to ulp(B) (the knots' scale); x then to ulp(B) / y'.
    worst_cond = std::max(worst_cond, err / (ulp(B) / slope + ulp(xi)));
    if (slope >= 0.05) {  // well conditioned: an ulp of y moves x by < 5e-6
      ++steep;
      worst_steep = std::max(worst_steep, err / std::max(1.0, double(std::abs(xi))));
      // log x' at y = −log y'(x'), which moves from −log y'(x) by at most max|∂ log y'/∂x| · |x' − x|
      // (x' is itself only known to an ulp; near a narrow bin |∂ log y'/∂x| reaches thousands).
      const double curvature = std::max(std::abs(double(dlog(i, 0))), std::abs(double(dlog_back(i, 0))));
      const double lerr = std::abs(ld + ld_back) - curvature * (err + 2 * ulp(xi));
      worst_logdet = std::max(worst_logdet, lerr);
    }
  }
  MESSAGE("round trip: worst relative error where y' ≥ 0.05: ", worst_steep, " (", steep, " points); worst error / "
          "conditioning bound: ", worst_cond, "; worst |log y' + log x'| beyond what |x' − x| explains, where y' ≥ 0.05: ", worst_logdet);
  CHECK(tails == tails_exact);
  CHECK(tails > 150000);
  CHECK(steep > 500000);
  CHECK(worst_steep <= 1e-5);
  CHECK(worst_cond <= 8.0);
  CHECK(worst_logdet <= 1e-4);
}

TEST_CASE("rq_spline: the log-determinant column equals log|det| of a finite-difference Jacobian (float64)") {
  Rng rng(43);
  const int K = 5;
  const std::size_t m = 6, n = 3;
  const Array<double> th = params(rng, m, n, K, 0.8);
  for (bool inverse : {false, true}) {
    CAPTURE(inverse);
    Array<double> x({m, n});
    for (double& v : x) v = rng.uniform(-3.5, 3.5);  // some coordinates in the tails
    auto map = [&](const Array<double>& in) {
      Tape<double> t;
      return Array<double>(ad::rq_spline(t.constant(in), t.constant(th), K, kB, inverse).value());
    };
    const Array<double> out = map(x);
    const double h = 1e-6;
    for (std::size_t i = 0; i < m; ++i) {
      // J(a, b) = ∂y_a/∂x_b for row i, by central differences; det by Gaussian elimination.
      double J[n][n];
      for (std::size_t b = 0; b < n; ++b) {
        Array<double> up = x, down = x;
        up(i, b) += h;
        down(i, b) -= h;
        const Array<double> fu = map(up), fd = map(down);
        for (std::size_t a = 0; a < n; ++a) J[a][b] = (fu(i, a) - fd(i, a)) / (2 * h);
      }
      double det = 1;
      for (std::size_t c = 0; c < n; ++c) {
        std::size_t p = c;
        for (std::size_t r = c + 1; r < n; ++r)
          if (std::abs(J[r][c]) > std::abs(J[p][c])) p = r;
        if (p != c) {
          for (std::size_t k = 0; k < n; ++k) std::swap(J[c][k], J[p][k]);
          det = -det;
        }
        det *= J[c][c];
        for (std::size_t r = c + 1; r < n; ++r) {
          const double f = J[r][c] / J[c][c];
          for (std::size_t k = c; k < n; ++k) J[r][k] -= f * J[c][k];
        }
      }
      CHECK(out(i, n) == doctest::Approx(std::log(std::abs(det))).epsilon(1e-6).scale(1.0));
    }
  }
}

TEST_CASE("rq_spline: zero parameters are the identity map, and the output has n + 1 columns") {
  Tape<float> t;
  Array<float> x({4, 9});
  Rng rng(3);
  rng.fill_normal(x.data(), x.size(), 0.0, 2.0);
  const Var<float> r = ad::rq_spline(t.constant(x), t.constant(4, 9 * 23, 0.0f), 8, 2.5f);
  REQUIRE(r.rows() == 4);
  REQUIRE(r.cols() == 10);
  for (std::size_t i = 0; i < 4; ++i) {
    for (std::size_t j = 0; j < 9; ++j) CHECK(r.value()(i, j) == doctest::Approx(x(i, j)).epsilon(1e-6).scale(1.0));
    CHECK(std::abs(r.value()(i, 9)) < 1e-5);
  }
}

TEST_CASE("rq_spline: bad bin counts, bounds and parameter shapes are refused with the op named") {
  Tape<double> t;
  const Var<double> x = t.constant(3, 2, 0.5);
  CHECK_THROWS_WITH_AS(ad::rq_spline(x, t.constant(3, 2 * 2, 0.0), 1, 3.0), "rq_spline: 1 bins (expected 2 to 64)",
                       std::invalid_argument);
  CHECK_THROWS_AS(ad::rq_spline(x, t.constant(3, 2 * 194, 0.0), 65, 3.0), std::invalid_argument);
  CHECK_THROWS_AS(ad::rq_spline(x, t.constant(3, 2 * 23, 0.0), 8, 0.0), std::invalid_argument);
  CHECK_THROWS_AS(ad::rq_spline(x, t.constant(3, 2 * 23, 0.0), 8, std::nan("")), std::invalid_argument);
  CHECK_THROWS_WITH_AS(ad::rq_spline(x, t.constant(3, 23, 0.0), 8, 3.0),
                       "rq_spline: the spline parameters must be m×(n·(3K − 1)) = 3×46 for K = 8 bins (input shapes "
                       "3×2 and 3×23)",
                       ad::ShapeError);
  CHECK_THROWS_AS(ad::rq_spline(x, t.constant(2, 2 * 23, 0.0), 8, 3.0), ad::ShapeError);
}

TEST_CASE("rq_spline in float32 with 8, 11 and 12 bins (23, 32, 35 parameters per element): values and both "
          "adjoints against float64, and a second use of θ adds its adjoint") {
  // More parameters per element than one AVX-512 register of floats holds: the op's float32
  // blocks move them in transposed parts of 16. Well-conditioned splines (θ ~ N(0, 0.3²), so no
  // bin is narrow) keep float32 within ~1e-6 of float64; a parameter moved to the wrong lane or
  // slot would be off by far more than the 1e-4 allowed.
  for (int K : {8, 11, 12}) {
    for (bool inverse : {false, true}) {
      CAPTURE(K);
      CAPTURE(inverse);
      Rng rng(900 + std::uint64_t(K) + (inverse ? 50 : 0));
      const std::size_t m = 5, n = 33;  // 165 elements: blocks of 16 that cross rows, then a tail
      const Array<double> th = params(rng, m, n, K, 0.3);
      Array<double> x({m, n});
      for (double& v : x) v = rng.uniform(-3.5, 3.5);  // a few outside the box [−3, 3]
      Array<double> seed({m, n + 1});
      rng.fill_normal(seed.data(), seed.size(), 0.0, 1.0);
      for (Array<double>* a : {&x, &seed}) for (double& v : *a) v = double(float(v));
      Array<double> th32v = th;
      for (double& v : th32v) v = double(float(v));

      Tape<double> t64;
      const Var<double> x64 = t64.variable(x), th64 = t64.variable(th32v);
      const Var<double> y64 = ad::rq_spline(x64, th64, K, kB, inverse);
      t64.backward(y64, seed);

      Tape<float> t32;
      const Var<float> x32 = t32.variable(Array<float>(xt::cast<float>(x)));
      const Var<float> th32 = t32.variable(Array<float>(xt::cast<float>(th32v)));
      const Var<float> y32 = ad::rq_spline(x32, th32, K, float(kB), inverse);
      t32.backward(y32, Array<float>(xt::cast<float>(seed)));

      // (test_compare::compare: within 1e-4, relative or absolute below 1; a NaN fails)
      CHECK(test_compare::compare(y32.value(), y64.value(), 1e-4).ratio < 1);
      CHECK(test_compare::compare(x32.grad(), x64.grad(), 1e-4).ratio < 1);
      CHECK(test_compare::compare(th32.grad(), th64.grad(), 1e-4).ratio < 1);

      // θ used twice, by two ops on equal inputs: the second VJP adds an equal adjoint.
      Tape<float> t2;
      const Var<float> th2 = t2.variable(Array<float>(xt::cast<float>(th32v)));
      const Var<float> xa = t2.constant(Array<float>(xt::cast<float>(x))), xb = t2.constant(Array<float>(xt::cast<float>(x)));
      const Var<float> ya = ad::rq_spline(xa, th2, K, float(kB), inverse);
      const Var<float> yb = ad::rq_spline(xb, th2, K, float(kB), inverse);
      t2.backward(ad::concat_cols(ya, yb), Array<float>(xt::cast<float>(xt::concatenate(xt::xtuple(seed, seed), 1))));
      std::size_t differ = 0;
      for (std::size_t k = 0; k < th2.grad().size(); ++k) differ += th2.grad().data()[k] != 2.0f * th32.grad().data()[k];
      CHECK(differ == 0);
    }
  }
}
