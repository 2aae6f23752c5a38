// flows: invertibility, log-determinants, normalization, transport cost, objective gradients, training.
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <vector>

#include <doctest/doctest.h>

#include "flows/flow.hpp"
#include "flows/train.hpp"
#include "nn/optim.hpp"

using ad::Array;
using ad::Tape;
using ad::Var;
using namespace flows;

namespace {

/// Moves every parameter away from its initial value so no layer is the identity.
template <class T>
void randomize(nn::Module<T>& m, std::uint64_t seed, double scale = 0.3) {
  ad::Rng rng(seed);
  for (auto* p : m.parameters()) rng.fill_normal(p->value.data(), p->value.size(), 0.0, scale);
}

/// One layer of each kind, as a factory on (dim, rng).
template <class T>
std::vector<std::pair<const char*, std::function<std::unique_ptr<Bijector<T>>(std::size_t, ad::Rng&)>>> layer_kinds() {
  using Make = std::function<std::unique_ptr<Bijector<T>>(std::size_t, ad::Rng&)>;
  auto coupling = [](CouplingKind kind, double clamp, ConditionerKind cond = ConditionerKind::mlp) -> Make {
    return [=](std::size_t d, ad::Rng& rng) {
      std::vector<int> a, b;
      coupling_split(d, 0, Permutation::random, rng, a, b);
      CouplingConfig cfg;
      cfg.kind = kind;
      cfg.conditioner = cond;
      cfg.hidden = 8;
      cfg.depth = 2;
      cfg.scale_clamp = clamp;
      cfg.bins = 5;
      cfg.tail_bound = 2.5;  // randomized layers send some points outside: both regimes are tested
      return std::unique_ptr<Bijector<T>>(make_coupling<T>(d, a, b, cfg, rng));
    };
  };
  return {{"affine_coupling", coupling(CouplingKind::affine, 0.0)},
          {"affine_coupling_clamped", coupling(CouplingKind::affine, 1.5)},
          {"affine_coupling_resnet", coupling(CouplingKind::affine, 0.0, ConditionerKind::resnet)},
          {"additive_coupling", coupling(CouplingKind::additive, 0.0)},
          {"rqs_coupling", coupling(CouplingKind::rqs, 0.0)},
          {"rqs_coupling_resnet", coupling(CouplingKind::rqs, 0.0, ConditionerKind::resnet)},
          {"actnorm", [](std::size_t d, ad::Rng&) { return std::unique_ptr<Bijector<T>>(std::make_unique<ActNorm<T>>(d)); }},
          {"lu_linear", [](std::size_t d, ad::Rng&) { return std::unique_ptr<Bijector<T>>(std::make_unique<LULinear<T>>(d)); }}};
}

template <class T>
std::unique_ptr<Flow<T>> random_flow(std::size_t d, std::uint64_t seed, bool actnorm = true, bool lu = true,
                                     std::size_t layers = 4) {
  FlowSpec spec;
  spec.layers = layers;
  spec.coupling.hidden = 8;
  spec.actnorm = actnorm;
  spec.lu = lu;
  spec.seed = seed;
  spec.base = "diagonal_gaussian";
  auto flow = make_flow<T>(d, spec);
  randomize(*flow, seed + 1);
  return flow;
}

double max_abs_diff(const Array<float>& a, const Array<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::abs(a.data()[i] - b.data()[i])));
  return m;
}

/// det of a small matrix by Gaussian elimination with partial pivoting.
double determinant(std::vector<double> a, std::size_t n) {
  double det = 1;
  for (std::size_t c = 0; c < n; ++c) {
    std::size_t p = c;
    for (std::size_t r = c + 1; r < n; ++r)
      if (std::abs(a[r * n + c]) > std::abs(a[p * n + c])) p = r;
    if (a[p * n + c] == 0) return 0;
    if (p != c) {
      for (std::size_t k = 0; k < n; ++k) std::swap(a[p * n + k], a[c * n + k]);
      det = -det;
    }
    det *= a[c * n + c];
    for (std::size_t r = c + 1; r < n; ++r) {
      const double f = a[r * n + c] / a[c * n + c];
      for (std::size_t k = c; k < n; ++k) a[r * n + k] -= f * a[c * n + k];
    }
  }
  return det;
}

/// The Jacobian ∂map(x)/∂x of a single row x by central differences (float64).
std::vector<double> jacobian_fd(const std::function<Array<double>(const Array<double>&)>& map, const Array<double>& x) {
  const std::size_t d = x.shape()[1];
  std::vector<double> j(d * d);
  const double h = 1e-6;
  for (std::size_t k = 0; k < d; ++k) {
    Array<double> up = x, down = x;
    up(0, k) += h;
    down(0, k) -= h;
    const Array<double> fu = map(up), fd = map(down);
    for (std::size_t i = 0; i < d; ++i) j[i * d + k] = (fu(0, i) - fd(0, i)) / (2 * h);
  }
  return j;
}

}  // namespace

TEST_CASE("every layer kind inverts its forward map within 1e-5 (float32), d = 1, 2, 3, 7, 64") {
  for (auto& kind : layer_kinds<float>()) {
    const char* name = kind.first;
    auto& make = kind.second;
    for (std::size_t d : {1, 2, 3, 7, 64}) {
      CAPTURE(name);
      CAPTURE(d);
      ad::Rng rng(d);
      auto layer = make(d, rng);
      randomize(*layer, 100 + d, d == 64 ? 0.05 : 0.3);
      Array<float> x({16, d});
      rng.fill_normal(x.data(), x.size());
      Tape<float> t;
      const Mapped<float> y = layer->forward(t.constant(x));
      const Mapped<float> back = layer->inverse(y.out);
      // A float32 y pins x down to ulp(y) / |∂y/∂x|: where a layer is nearly flat (a spline
      // can reach slopes of 1e-3 and below) that is coarser than 1e-5, so the bound widens by
      // the row's largest 1/slope (1 for volume-preserving rows); test_spline.cpp has the details.
      double worst = 0;
      for (std::size_t i = 0; i < 16; ++i) {
        const double flat = y.logdet.tape ? std::max(1.0, std::exp(-double(y.logdet.value()(i, 0)))) : 1.0;
        for (std::size_t j = 0; j < d; ++j)
          worst = std::max(worst, std::abs(double(back.out.value()(i, j)) - double(x(i, j))) / flat);
      }
      CHECK(worst < 1e-5);
      CHECK(max_abs_diff(y.out.value(), x) > 1e-3);  // really not the identity
      if (y.logdet.tape) {
        // log|det ∂f⁻¹| at y = −log|det ∂f| at x
        for (std::size_t i = 0; i < 16; ++i)
          CHECK(back.logdet.value()(i, 0) == doctest::Approx(-y.logdet.value()(i, 0)).epsilon(1e-4));
      }
    }
  }
}

TEST_CASE("whole flows invert within 1e-5 (float32), d = 1, 2, 3, 7, 64") {
  for (std::size_t d : {1, 2, 3, 7, 64}) {
    CAPTURE(d);
    // Twelve layers compound scales: moderate random weights keep the outputs O(1),
    // where float32 resolves 1e-5.
    auto flow = random_flow<float>(d, 7 * d);
    randomize(*flow, 5 + d, d == 64 ? 0.02 : 0.1);
    ad::Rng rng(d);
    Array<float> x({32, d});
    rng.fill_normal(x.data(), x.size());
    Tape<float> t;
    const Mapped<float> y = flow->forward(t.constant(x));
    const Mapped<float> back = flow->inverse(y.out);
    CHECK(max_abs_diff(back.out.value(), x) < 1e-5);
    CHECK(max_abs_diff(y.out.value(), x) > 1e-3);
  }
}

TEST_CASE("each layer's log-determinant equals log|det J| of its finite-difference Jacobian (float64, d ≤ 6)") {
  for (auto& kind : layer_kinds<double>()) {
    const char* name = kind.first;
    auto& make = kind.second;
    for (std::size_t d : {1, 2, 3, 6}) {
      CAPTURE(name);
      CAPTURE(d);
      ad::Rng rng(d + 40);
      auto layer = make(d, rng);
      randomize(*layer, 200 + d);
      Array<double> x({1, d});
      rng.fill_normal(x.data(), x.size());
      for (const bool inverse : {false, true}) {
        CAPTURE(inverse);
        auto map = [&](const Array<double>& in) {
          Tape<double> t;
          const Var<double> v = t.constant(in);
          return Array<double>((inverse ? layer->inverse(v) : layer->forward(v)).out.value());
        };
        const double expected = std::log(std::abs(determinant(jacobian_fd(map, x), d)));
        Tape<double> t;
        const Mapped<double> m = inverse ? layer->inverse(t.constant(x)) : layer->forward(t.constant(x));
        const double logdet = m.logdet.tape ? m.logdet.value()(0, 0) : 0.0;
        CHECK(logdet == doctest::Approx(expected).epsilon(1e-6));
      }
    }
  }
}

namespace {
/// log|det ∇G(y)| as the flow computes it, against log|det| of G's finite-difference Jacobian at y (1×d).
void check_inverse_logdet(Flow<double>& flow, const Array<double>& y) {
  auto map = [&](const Array<double>& in) {
    Tape<double> t;
    return Array<double>(flow.inverse(t.constant(in)).out.value());
  };
  Tape<double> t;
  const Mapped<double> g = flow.inverse(t.constant(y));
  const double want = std::log(std::abs(determinant(jacobian_fd(map, y), y.shape()[1])));
  CHECK(g.logdet.value()(0, 0) == doctest::Approx(want).epsilon(1e-6));
}
}  // namespace

TEST_CASE("a whole flow's log-determinant equals log|det J| of G (float64, d = 5)") {
  auto flow = random_flow<double>(5, 3);
  ad::Rng rng(9);
  Array<double> y({1, 5});
  rng.fill_normal(y.data(), y.size());
  check_inverse_logdet(*flow, y);
}

namespace {
/// The midpoint grid of [−12, 12]² with n² cells (n·n × 2), and its cell area.
Array<double> grid_2d(std::size_t n, double& area) {
  const double lo = -12, hi = 12, h = (hi - lo) / double(n);
  Array<double> grid({n * n, 2});
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      grid(i * n + j, 0) = lo + (double(i) + 0.5) * h;
      grid(i * n + j, 1) = lo + (double(j) + 0.5) * h;
    }
  area = h * h;
  return grid;
}
}  // namespace

TEST_CASE("the density of a randomized 2-D flow integrates to 1 ± 0.01") {
  auto flow = random_flow<double>(2, 21, /*actnorm=*/false, /*lu=*/true, 4);
  // Midpoint rule on [−12, 12]², fine enough for a smooth density of scale ~1.
  double area = 0;
  const Array<double> grid = grid_2d(600, area);
  Tape<double> t;
  const Var<double> lp = flow->log_prob(t.constant(grid));
  double mass = 0;
  for (double v : lp.value()) mass += std::exp(v) * area;
  CHECK(mass == doctest::Approx(1.0).epsilon(0.01));
}

TEST_CASE("T equals the path energy computed directly from the recorded trajectory") {
  auto flow = random_flow<double>(3, 4, true, false, 3);
  ad::Rng rng(2);
  Array<double> x({10, 3});
  rng.fill_normal(x.data(), x.size());
  Tape<double> t;
  std::vector<Var<double>> traj;
  const Mapped<double> y = flow->forward(t.constant(x), &traj);
  REQUIRE(traj.size() == flow->num_layers() + 1);
  CHECK(traj.front().value() == x);
  CHECK(traj.back().value() == y.out.value());
  double direct = 0;
  const double L = double(flow->num_layers());
  for (std::size_t l = 0; l + 1 < traj.size(); ++l)
    for (std::size_t i = 0; i < 10; ++i)
      for (std::size_t j = 0; j < 3; ++j) direct += std::pow(traj[l + 1].value()(i, j) - traj[l].value()(i, j), 2);
  direct *= L / 10.0;
  CHECK(path_energy(traj).item() == doctest::Approx(direct).epsilon(1e-12));
  double map = 0;
  for (std::size_t i = 0; i < 10; ++i)
    for (std::size_t j = 0; j < 3; ++j) map += std::pow(y.out.value()(i, j) - x(i, j), 2);
  CHECK(mean_squared_distance(traj.front(), traj.back()).item() == doctest::Approx(map / 10.0).epsilon(1e-12));
  // Path energy ≥ map cost (Cauchy–Schwarz), with equality only for straight, even steps.
  CHECK(path_energy(traj).item() >= map / 10.0);
}

TEST_CASE("the whole objective λ·NLL + β·T passes gradcheck in float64, both directions") {
  for (const Direction dir : {Direction::gen, Direction::norm}) {
    CAPTURE(direction_name(dir));
    auto flow = random_flow<double>(3, 8, /*actnorm=*/true, /*lu=*/true, 2);
    ad::Rng rng(5);
    Array<double> data({6, 3}), base({6, 3});
    rng.fill_normal(data.data(), data.size());
    rng.fill_normal(base.data(), base.size());
    ObjectiveWeights w;
    w.kl = 0.7;
    w.transport = 0.3;
    w.direction = dir;
    auto f = [&](Tape<double>& t) { return objective(*flow, t.constant(data), t.constant(base), w).loss; };
    ad::GradcheckOptions opt;
    const ad::GradcheckResult r = ad::gradcheck_params(f, flow->parameters(), opt);
    CHECK_MESSAGE(r.ok, r.report);
    CHECK(r.compared > 100);
  }
}

TEST_CASE("the objective's gradient with respect to the data batch passes gradcheck (gen and norm)") {
  for (const Direction dir : {Direction::gen, Direction::norm}) {
    auto flow = random_flow<double>(2, 12, false, false, 2);
    ad::Rng rng(6);
    Array<double> data({4, 2}), base({4, 2});
    rng.fill_normal(data.data(), data.size());
    rng.fill_normal(base.data(), base.size());
    ObjectiveWeights w;
    w.transport = 0.5;
    w.direction = dir;
    const ad::GradcheckResult r = ad::gradcheck(
        [&](Tape<double>& t, const std::vector<Var<double>>& v) { return objective(*flow, v[0], v[1], w).loss; },
        {data, base});
    CHECK_MESSAGE(r.ok, r.report);
  }
}

TEST_CASE("a flow trained on a 2-D Gaussian reaches a test NLL within 0.02 nats of its entropy") {
  // Target N(m, Σ) with Σ = A Aᵀ: entropy = ½ log det(2πe Σ).
  const double a11 = 1.2, a21 = 0.5, a22 = 0.6, m1 = 0.5, m2 = -1.0;
  auto sample = [&](ad::Rng& rng, Array<float>& y) {
    for (std::size_t i = 0; i < y.shape()[0]; ++i) {
      const double e1 = rng.normal(), e2 = rng.normal();
      y(i, 0) = float(m1 + a11 * e1);
      y(i, 1) = float(m2 + a21 * e1 + a22 * e2);
    }
  };
  const double entropy = 0.5 * std::log(std::pow(2 * M_PI * M_E, 2) * std::pow(a11 * a22, 2));
  FlowSpec spec;
  spec.layers = 4;
  spec.coupling.hidden = 16;
  spec.coupling.depth = 1;
  auto flow = make_flow<float>(2, spec);
  nn::Adam<float> adam(flow->parameters(), 1e-2);
  ad::Rng rng(1);
  Array<float> y({256, 2}), x({256, 2});
  Tape<float> t;
  ObjectiveWeights w;
  w.measure_transport = false;
  for (int step = 0; step < 600; ++step) {
    sample(rng, y);
    t.clear();
    const auto terms = objective(*flow, t.constant(y), Var<float>{}, w);
    flow->zero_grad();
    t.backward(terms.loss);
    adam.set_lr(step < 400 ? 1e-2 : 2e-3);
    adam.step();
  }
  Array<float> test({20000, 2});
  ad::Rng test_rng(99);
  sample(test_rng, test);
  double nll = 0;
  t.clear();
  const Var<float> lp = flow->log_prob(t.constant(test));
  for (float v : lp.value()) nll -= v;
  nll /= 20000.0;
  // The sample mean of −log p_true differs from the entropy by O(1/√n) ≈ 0.007.
  CHECK(std::abs(nll - entropy) < 0.02);
}

TEST_CASE("release_adjoints: the objective's gradients are bitwise unchanged with a fraction of the adjoint memory") {
  auto flow = random_flow<double>(6, 41, /*actnorm=*/true, /*lu=*/true, /*layers=*/6);
  ad::Rng rng(2);
  Array<double> y = Array<double>::from_shape({97, 6}), x = Array<double>::from_shape({97, 6});
  rng.fill_normal(y.data(), y.size(), 0.0, 1.0);
  rng.fill_normal(x.data(), x.size(), 0.0, 1.0);
  ObjectiveWeights w;
  w.transport = 0.5;
  auto gradients = [&](Tape<double>& t) {
    flow->zero_grad();
    t.clear();
    const auto terms = objective(*flow, t.constant(y), t.constant(x), w);
    t.backward(terms.loss);
    std::vector<double> g;
    for (auto* p : flow->parameters()) g.insert(g.end(), p->grad.begin(), p->grad.end());
    return g;
  };
  Tape<double> keep, release;
  release.set_release_adjoints(true);
  const std::vector<double> expected = gradients(keep);
  for (int pass = 0; pass < 3; ++pass) CHECK(gradients(release) == expected);  // pooled buffers reused
  CHECK(release.adjoint_bytes() * 3 < keep.adjoint_bytes());
  CHECK(release.bytes_reserved() < keep.bytes_reserved());
  // An intermediate's adjoint is gone; asking for it is an error, not a silent zero.
  const Var<double> v = release.variable(y);
  const Var<double> out = ad::sum(ad::square(ad::tanh(v)));
  release.backward(out);
  CHECK(v.grad().size() == y.size());  // a variable keeps its adjoint
  CHECK_THROWS_AS(Var<double>({&release, out.index - 1}).grad(), std::logic_error);
}

// ---------------------------------------------------------------- spline flows and steps
namespace {

/// The paper's structure: `steps` × (LU, rqs coupling on A, rqs coupling on B), randomized.
template <class T>
std::unique_ptr<Flow<T>> random_spline_flow(std::size_t d, std::uint64_t seed, std::size_t steps,
                                            ConditionerKind cond = ConditionerKind::mlp, double scale = 0.4) {
  FlowSpec spec;
  spec.layers = steps;
  spec.structure = Structure::steps;
  spec.coupling.kind = CouplingKind::rqs;
  spec.coupling.conditioner = cond;
  spec.coupling.hidden = 8;
  spec.coupling.depth = 1;
  spec.coupling.bins = 6;
  spec.coupling.tail_bound = 2.5;
  spec.seed = seed;
  auto flow = make_flow<T>(d, spec);
  randomize(*flow, seed + 1, scale);
  return flow;
}

}  // namespace

TEST_CASE("--structure steps: an LU layer, then couplings on A and on its complement, per step") {
  for (std::size_t d : {1, 2, 5}) {
    CAPTURE(d);
    auto flow = random_spline_flow<float>(d, 3, 3);
    const std::size_t per_step = d == 1 ? 2 : 3;  // d = 1 has no complement: one coupling per step
    REQUIRE(flow->num_layers() == 3 * per_step);
    for (std::size_t s = 0; s < 3; ++s) {
      CHECK(dynamic_cast<LULinear<float>*>(&flow->layer(s * per_step)) != nullptr);
      auto* first = dynamic_cast<RQSplineCoupling<float>*>(&flow->layer(s * per_step + 1));
      REQUIRE(first != nullptr);
      std::vector<int> updated = first->updated();
      if (d > 1) {
        auto* second = dynamic_cast<RQSplineCoupling<float>*>(&flow->layer(s * per_step + 2));
        REQUIRE(second != nullptr);
        CHECK(second->updated() == first->conditioning());
        CHECK(second->conditioning() == first->updated());
        updated.insert(updated.end(), second->updated().begin(), second->updated().end());
      }
      std::sort(updated.begin(), updated.end());
      std::vector<int> all(d);
      std::iota(all.begin(), all.end(), 0);
      CHECK(updated == all);  // every coordinate once per step
    }
  }
}

TEST_CASE("the density of a randomized 2-D spline flow (3 steps) integrates to 1 ± 0.01") {
  for (ConditionerKind cond : {ConditionerKind::mlp, ConditionerKind::resnet}) {
    CAPTURE(conditioner_name(cond));
    // Weights of scale 0.25: the density varies on scales the 0.04 grid resolves (at 0.4 it
    // grows spikes that need a 2400² grid to integrate to 1 ± 0.003).
    auto flow = random_spline_flow<double>(2, 23, 3, cond, 0.25);
    double area = 0;
    const Array<double> grid = grid_2d(600, area);
    Tape<double> t;
    const Var<double> lp = flow->log_prob(t.constant(grid));
    double mass = 0, bent = 0;
    for (std::size_t k = 0; k < grid.shape()[0]; ++k) {
      const double v = lp.value()(k, 0), r2 = grid(k, 0) * grid(k, 0) + grid(k, 1) * grid(k, 1);
      mass += std::exp(v) * area;
      if (r2 < 9) bent = std::max(bent, std::abs(v - (-0.5 * r2 - std::log(2 * M_PI))));
    }
    CHECK(mass == doctest::Approx(1.0).epsilon(0.01));
    CHECK(bent > 0.5);  // the randomized flow really moves mass: its density is far from the base's
  }
}

TEST_CASE("a spline flow's log-determinant equals log|det J| of G, and its objective passes gradcheck (float64)") {
  auto flow = random_spline_flow<double>(4, 5, 2, ConditionerKind::resnet, 0.25);
  ad::Rng rng(19);
  Array<double> y({1, 4});
  rng.fill_normal(y.data(), y.size());
  check_inverse_logdet(*flow, y);
  for (const Direction dir : {Direction::gen, Direction::norm}) {
    CAPTURE(direction_name(dir));
    Array<double> data({5, 4}), base({5, 4});
    rng.fill_normal(data.data(), data.size(), 0.0, 1.5);  // some coordinates beyond the tail bound 2.5
    rng.fill_normal(base.data(), base.size());
    ObjectiveWeights w;
    w.transport = 0.3;
    w.direction = dir;
    auto f = [&](Tape<double>& tape) { return objective(*flow, tape.constant(data), tape.constant(base), w).loss; };
    ad::GradcheckOptions opt;
    opt.eps = 3e-6;  // two stacked spline steps curve more than affine layers: a smaller step for O(ε²)
    opt.atol = 1e-8;  // ... whose quotient carries ~2e-9 of round-off from a loss of O(10)
    const ad::GradcheckResult r = ad::gradcheck_params(f, flow->parameters(), opt);
    CHECK_MESSAGE(r.ok, r.report);
    CHECK(r.compared > 100);
  }
}

TEST_CASE("--structure layers: each pair of couplings updates every coordinate once (random and alternate splits)") {
  for (Permutation perm : {Permutation::random, Permutation::alternate})
    for (std::size_t d : {2, 3, 5}) {
      for (std::uint64_t seed = 0; seed < 8; ++seed) {
        CAPTURE(permutation_name(perm));
        CAPTURE(d);
        FlowSpec spec;
        spec.layers = 6;
        spec.permutation = perm;
        spec.coupling.hidden = 4;
        spec.seed = seed;
        auto flow = make_flow<float>(d, spec);
        REQUIRE(flow->num_layers() == 6);
        for (std::size_t l = 0; l < 6; l += 2) {
          auto& first = dynamic_cast<Coupling<float>&>(flow->layer(l));
          auto& second = dynamic_cast<Coupling<float>&>(flow->layer(l + 1));
          CHECK(second.updated() == first.conditioning());
          std::vector<int> all = first.updated();
          all.insert(all.end(), second.updated().begin(), second.updated().end());
          std::sort(all.begin(), all.end());
          std::vector<int> want(d);
          std::iota(want.begin(), want.end(), 0);
          CHECK(all == want);
        }
      }
    }
}

TEST_CASE("transport schedules: β at the start, the end and between, for each kind") {
  BetaSchedule s;
  s.start = 0.05;
  s.floor = 0.0005;
  s.steps = 1000;
  CHECK(s.at(0) == 0.05);
  CHECK(s.at(700) == 0.05);  // constant
  s.kind = BetaSchedule::Kind::linear;
  CHECK(s.at(500) == doctest::Approx(0.5 * (0.05 + 0.0005)));
  s.kind = BetaSchedule::Kind::cosine;
  CHECK(s.at(1000) == doctest::Approx(0.0005));
  CHECK(s.at(500) == doctest::Approx(0.5 * (0.05 + 0.0005)));
  s.kind = BetaSchedule::Kind::exponential;  // as many steps per decade: 0.05 → 0.005 → 0.0005
  CHECK(s.at(0) == doctest::Approx(0.05));
  CHECK(s.at(500) == doctest::Approx(0.005));
  CHECK(s.at(1000) == doctest::Approx(0.0005));
  CHECK(s.at(5000) == doctest::Approx(0.0005));  // held after the run's end
  CHECK(BetaSchedule::kind_from_name("exponential") == BetaSchedule::Kind::exponential);
  s.floor = 0.0;
  CHECK_THROWS_AS(s.at(10), std::invalid_argument);
}

TEST_CASE("gaussian_init: the flow starts as the maximum-likelihood full-covariance Gaussian of the rows it is given") {
  const std::size_t m = 400, d = 4;
  Array<double> y({m, d});
  ad::Rng rng(21);
  // Correlated rows with different scales and means.
  for (std::size_t i = 0; i < m; ++i) {
    double z[4];
    for (double& v : z) v = rng.normal();
    y(i, 0) = 3.0 + 2.0 * z[0];
    y(i, 1) = -1.0 + 0.5 * z[0] + 0.3 * z[1];
    y(i, 2) = 0.1 * z[2] - 4.0 * z[1];
    y(i, 3) = z[3] + z[2] + 10.0;
  }
  FlowSpec spec;
  spec.layers = 2;
  spec.coupling.hidden = 8;
  spec.gaussian_init = true;
  auto flow = make_flow<double>(d, spec);
  flow->initialize_from_data(y);
  // The reference: mean and covariance (m − 1), log N(y; μ, Σ) through a Cholesky factor.
  std::vector<double> mu(d, 0.0), S(d * d, 0.0), L(d * d, 0.0);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < d; ++j) mu[j] += y(i, j) / double(m);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < d; ++j)
      for (std::size_t k = 0; k < d; ++k) S[j * d + k] += (y(i, j) - mu[j]) * (y(i, k) - mu[k]) / double(m - 1);
  for (std::size_t j = 0; j < d; ++j)
    for (std::size_t k = 0; k <= j; ++k) {
      double s = S[j * d + k];
      for (std::size_t q = 0; q < k; ++q) s -= L[j * d + q] * L[k * d + q];
      L[j * d + k] = j == k ? std::sqrt(s) : s / L[k * d + k];
    }
  Tape<double> tape;
  const Array<double> lp = flow->log_prob(tape.constant(y)).value();
  for (std::size_t i = 0; i < m; i += 37) {
    double z[4], quad = 0, logdet = 0;
    for (std::size_t j = 0; j < d; ++j) {
      double s = y(i, j) - mu[j];
      for (std::size_t q = 0; q < j; ++q) s -= L[j * d + q] * z[q];
      z[j] = s / L[j * d + j];
      quad += z[j] * z[j];
      logdet += std::log(L[j * d + j]);
    }
    const double want = -0.5 * quad - logdet - 0.5 * double(d) * std::log(2 * M_PI);
    CHECK(lp(i, 0) == doctest::Approx(want).epsilon(1e-6));
  }
  // Saved and rebuilt, the layers keep their initialized state: a second initialization changes nothing.
  const nlohmann::json arch = flow->config();
  auto rebuilt = Flow<double>::from_config(arch);
  CHECK(rebuilt->config() == arch);
  const auto before = flow->parameters()[flow->parameters().size() - 3]->value;
  Array<double> other = y * 5.0;
  flow->initialize_from_data(other);
  CHECK(flow->parameters()[flow->parameters().size() - 3]->value == before);
  // Fewer rows than columns, and a constant column: a singular covariance still initializes
  // (a small ridge), to a finite, invertible map.
  Array<double> few({3, 5}, 0.0);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 4; ++j) few(i, j) = std::sin(double(3 * i + j));
  spec.layers = 1;
  auto small = make_flow<double>(5, spec);
  small->initialize_from_data(few);
  Tape<double> t3;
  const Array<double> lp3 = small->log_prob(t3.constant(few)).value();
  for (double v : lp3) CHECK(std::isfinite(v));
}
