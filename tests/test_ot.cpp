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
