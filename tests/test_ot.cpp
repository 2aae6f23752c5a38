// The optimal-transport yardstick: gaussian:D's Monge map T*(x) = m + Σ^{1/2} x, and the
// L2-UVP and cosine that evaluate() reports against it (Korotin et al., NeurIPS 2021).
#include <cmath>
#include <memory>
#include <vector>

#include <doctest/doctest.h>

#include "flows/metrics.hpp"

using ad::Array;
using namespace flows;

namespace {

/// The flow x ↦ m + Σ^{1/2} x built from an LU layer (W = L U', Doolittle, no pivoting: Σ^{1/2}
/// is positive definite) and an ActNorm holding the shift m.
std::unique_ptr<Flow<double>> exact_ot_flow(const GaussianDataset& g) {
  const std::size_t d = g.dim();
  std::vector<double> root(d * d, 0.0), e(d * d, 0.0);
  for (std::size_t i = 0; i < d; ++i) e[i * d + i] = 1;
  g.ot_map(e.data(), d, root.data());  // row i = m + Σ^{1/2} e_i
  for (std::size_t i = 0; i < d; ++i)
    for (std::size_t j = 0; j < d; ++j) root[i * d + j] -= g.mean()[j];
  std::vector<double> L(d * d, 0.0), U(d * d, 0.0);
  for (std::size_t i = 0; i < d; ++i) {
    for (std::size_t j = i; j < d; ++j) {
      double s = root[i * d + j];
      for (std::size_t k = 0; k < i; ++k) s -= L[i * d + k] * U[k * d + j];
      U[i * d + j] = s;
    }
    for (std::size_t j = i + 1; j < d; ++j) {
      double s = root[j * d + i];
      for (std::size_t k = 0; k < i; ++k) s -= L[j * d + k] * U[k * d + i];
      L[j * d + i] = s / U[i * d + i];
    }
  }
  auto flow = std::make_unique<Flow<double>>(d, std::make_unique<StandardNormal<double>>(d));
  auto lu = std::make_unique<LULinear<double>>(d);
  for (std::size_t i = 0; i < d; ++i) {
    REQUIRE(U[i * d + i] > 0);
    lu->log_diag.value(0, i) = std::log(U[i * d + i]);
    for (std::size_t j = 0; j < d; ++j) {
      if (j < i) lu->lower.value(i, j) = L[i * d + j];
      if (j > i) lu->upper.value(i, j) = U[i * d + j];
    }
  }
  auto shift = std::make_unique<ActNorm<double>>(d);
  shift->set_initialized(true);
  for (std::size_t j = 0; j < d; ++j) shift->shift.value(0, j) = g.mean()[j];
  flow->add_layer(std::move(lu));
  flow->add_layer(std::move(shift));
  return flow;
}

}  // namespace

TEST_CASE("gaussian:D's OT map pushes N(0, I) to N(m, Σ) at cost W2²") {
  for (std::size_t d : {1, 3, 8}) {
    CAPTURE(d);
    GaussianDataset g(d);
    const std::size_t n = 200000;
    ad::Rng rng(d);
    std::vector<double> x(n * d), y(n * d);
    rng.fill_normal(x.data(), x.size());
    g.ot_map(x.data(), n, y.data());
    const auto sigma = g.covariance();
    double cost = 0;
    for (std::size_t k = 0; k < n * d; ++k) cost += (y[k] - x[k]) * (y[k] - x[k]) / double(n);
    CHECK(cost == doctest::Approx(*g.w2_sq_to_standard_normal()).epsilon(0.02));
    for (std::size_t a = 0; a < d; ++a) {
      double mean = 0;
      for (std::size_t s = 0; s < n; ++s) mean += y[s * d + a] / double(n);
      CHECK(mean == doctest::Approx(g.mean()[a]).scale(1.0).epsilon(0.02));
      for (std::size_t b = 0; b < d; ++b) {
        double c = 0;
        for (std::size_t s = 0; s < n; ++s) c += (y[s * d + a] - g.mean()[a]) * (y[s * d + b] - g.mean()[b]) / double(n);
        CHECK(c == doctest::Approx(sigma(a, b)).scale(1.0).epsilon(0.03));
      }
    }
    double trace = 0;
    for (std::size_t a = 0; a < d; ++a) trace += sigma(a, a);
    CHECK(*g.total_variance() == doctest::Approx(trace).epsilon(1e-12));
  }
}

TEST_CASE("evaluate: L2-UVP is 0 and the cosine 1 for the OT map itself, and 100·W2²/Var(Y) for the identity") {
  GaussianDataset g(4);
  auto exact = exact_ot_flow(g);
  const EvalReport r = evaluate(*exact, g, 5000, 3);
  REQUIRE(r.l2_uvp.has_value());
  REQUIRE(r.ot_cos.has_value());
  CHECK(*r.l2_uvp < 1e-10);
  CHECK(*r.ot_cos == doctest::Approx(1.0).epsilon(1e-10));
  CHECK(r.nll == doctest::Approx(*r.true_nll).epsilon(1e-9));  // and it is the exact density

  // The identity map (a flow with no layer): E‖x − T*(x)‖² = W2², so L2-UVP = 100 W2² / tr Σ.
  Flow<double> identity(4, std::make_unique<StandardNormal<double>>(4));
  const EvalReport id = evaluate(identity, g, 20000, 4);
  CHECK(*id.l2_uvp == doctest::Approx(100.0 * *g.w2_sq_to_standard_normal() / *g.total_variance()).epsilon(0.03));
  CHECK(!id.ot_cos.has_value());  // F(x) − x = 0: the cosine is undefined
  const nlohmann::json j = r.to_json();
  CHECK(j.contains("l2_uvp"));
  CHECK(j.contains("ot_cos"));
  // Targets without a known OT map have neither key.
  auto moons = make_dataset("moons");
  Flow<double> id2(2, std::make_unique<StandardNormal<double>>(2));
  CHECK(!evaluate(id2, *moons, 100, 1).to_json().contains("l2_uvp"));
}

TEST_CASE("brenier:D: the inverse of ∇ψ is accurate to 1e-8 in float64, and log p matches the change of variables") {
  for (std::size_t d : {1, 2, 8}) {
    CAPTURE(d);
    BrenierDataset b(d);
    ad::Rng rng(d + 1);
    std::vector<double> x(d), y(d), back(d);
    double worst = 0;
    for (int s = 0; s < 500; ++s) {
      rng.fill_normal(x.data(), d);
      for (double& v : x) v *= 2.0;  // well into the tails of N(0, I) too
      b.gradient(x.data(), y.data());
      b.inverse(y.data(), back.data());
      for (std::size_t j = 0; j < d; ++j) worst = std::max(worst, std::abs(back[j] - x[j]));
    }
    CHECK(worst < 1e-8);
    // log p(y) = log φ(x) − log det ∇²ψ(x): against a finite-difference Jacobian of ∇ψ (the Hessian).
    rng.fill_normal(x.data(), d);
    b.gradient(x.data(), y.data());
    std::vector<double> jac(d * d), up(d), down(d), gu(d), gd(d);
    for (std::size_t c = 0; c < d; ++c) {
      up = x, down = x;
      up[c] += 1e-6, down[c] -= 1e-6;
      b.gradient(up.data(), gu.data());
      b.gradient(down.data(), gd.data());
      for (std::size_t r = 0; r < d; ++r) jac[r * d + c] = (gu[r] - gd[r]) / 2e-6;
    }
    double det = 1;  // Gaussian elimination (the Hessian is positive definite: no pivoting needed)
    for (std::size_t c = 0; c < d; ++c) {
      det *= jac[c * d + c];
      for (std::size_t r = c + 1; r < d; ++r) {
        const double f = jac[r * d + c] / jac[c * d + c];
        for (std::size_t k = c; k < d; ++k) jac[r * d + k] -= f * jac[c * d + k];
      }
    }
    double sq = 0;
    for (double v : x) sq += v * v;
    double lp = 0;
    b.log_prob(y.data(), 1, &lp);
    CHECK(lp == doctest::Approx(-0.5 * sq - 0.5 * double(d) * std::log(2 * M_PI) - std::log(det)).epsilon(1e-7));
  }
}

TEST_CASE("brenier:2: the density integrates to 1 and matches a histogram of its samples") {
  BrenierDataset b(2);
  // Midpoint rule on [−16, 16]² (|∇ψ(x) − x| ≤ a K = 10, and |x| ≤ 6 carries all but 1e-8 of the mass).
  const std::size_t n = 320;
  const double lo = -16, h = 32.0 / double(n);
  std::vector<double> grid(n * n * 2), lp(n * n);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      grid[2 * (i * n + j)] = lo + (double(i) + 0.5) * h;
      grid[2 * (i * n + j) + 1] = lo + (double(j) + 0.5) * h;
    }
  b.log_prob(grid.data(), n * n, lp.data());
  double mass = 0;
  for (double v : lp) mass += std::exp(v) * h * h;
  CHECK(mass == doctest::Approx(1.0).epsilon(0.01));
  // 2×2-cell blocks (0.2 × 0.2 each... coarser: 8×8 blocks of the grid) against 400 000 samples.
  const std::size_t block = 8, nb = n / block, m = 400000;
  std::vector<double> model(nb * nb, 0.0), counts(nb * nb, 0.0), y(m * 2);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) model[(i / block) * nb + j / block] += std::exp(lp[i * n + j]) * h * h;
  ad::Rng rng(5);
  b.sample(m, rng, y.data());
  for (std::size_t s = 0; s < m; ++s) {
    const double u = (y[2 * s] - lo) / (h * double(block)), v = (y[2 * s + 1] - lo) / (h * double(block));
    if (u >= 0 && v >= 0 && u < double(nb) && v < double(nb)) counts[std::size_t(u) * nb + std::size_t(v)] += 1.0 / double(m);
  }
  // Every block with at least 1 % of the mass agrees within 5 standard errors of its count (plus the
  // midpoint rule's own error, a few 1e-4 of the block's mass).
  int compared = 0;
  for (std::size_t k = 0; k < nb * nb; ++k) {
    if (model[k] < 0.01) continue;
    const double se = std::sqrt(model[k] * (1 - model[k]) / double(m));
    CHECK(std::abs(counts[k] - model[k]) <= 5 * se + 2e-3 * model[k]);
    ++compared;
  }
  CHECK(compared >= 10);
  // W2² is E‖∇ψ(X) − X‖², estimated with its standard error.
  const auto [w2, se] = b.w2_estimate();
  CHECK(se > 0);
  CHECK(se < 0.01 * w2);
}
