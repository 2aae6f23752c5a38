// nn: modules, initialization, optimizers, schedules.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include <doctest/doctest.h>

#include "nn/module.hpp"
#include "nn/optim.hpp"

using ad::Array;
using ad::Parameter;
using ad::Tape;
using ad::Var;

namespace {

/// A 3×2 parameter and a quadratic loss L = Σ (w − target)² · c_ij with fixed
/// weights, so the gradient 2 c (w − target) is known in closed form.
struct Quadratic {
  Parameter<double> w{"w", 3, 2};
  Array<double> target{{0.5, -1.0}, {2.0, 0.25}, {-0.75, 1.5}};
  Array<double> c{{1.0, 3.0}, {0.5, 2.0}, {4.0, 0.1}};
  Quadratic() { w.value = Array<double>{{0.1, 0.2}, {-0.3, 0.4}, {0.5, -0.6}}; }
  double loss_and_grad() {
    Tape<double> t;
    const Var<double> diff = t.param(w) - t.constant(target);
    const Var<double> loss = ad::sum(ad::square(diff) * t.constant(c));
    w.zero_grad();
    t.backward(loss);
    return loss.item();
  }
  Array<double> grad_closed_form() const { return 2.0 * c * (w.value - target); }
};

}  // namespace

TEST_CASE("quadratic test problem: the tape's gradient equals the closed form") {
  Quadratic q;
  q.loss_and_grad();
  const Array<double> g = q.grad_closed_form();
  for (std::size_t i = 0; i < g.size(); ++i) CHECK(q.w.grad.data()[i] == doctest::Approx(g.data()[i]).epsilon(1e-14));
}

TEST_CASE("Adam's first updates equal the paper's formulas computed independently") {
  const double lr = 0.05, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  Quadratic q;
  nn::Adam<double> adam({&q.w}, lr, b1, b2, eps);
  // Reference: Kingma & Ba, Algorithm 1, written out as a plain loop.
  std::vector<double> p(q.w.value.begin(), q.w.value.end()), m(6, 0.0), v(6, 0.0);
  for (int t = 1; t <= 5; ++t) {
    q.loss_and_grad();
    const Array<double> g = q.w.grad;
    adam.step();
    for (std::size_t i = 0; i < 6; ++i) {
      const double gi = 2.0 * q.c.data()[i] * (p[i] - q.target.data()[i]);
      CHECK(gi == doctest::Approx(g.data()[i]).epsilon(1e-12));
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
    for (std::size_t i = 0; i < 6; ++i) CHECK(q.w.value.data()[i] == doctest::Approx(p[i]).epsilon(1e-12));
  }
  CHECK(adam.steps() == 5);
}

TEST_CASE("AdamW decays the weights before the Adam step, and Adam's L2 adds λp to the gradient") {
  const double lr = 0.01, wd = 0.1;
  for (const bool decoupled : {false, true}) {
    CAPTURE(decoupled);
    Quadratic q;
    nn::Adam<double> adam({&q.w}, lr, 0.9, 0.999, 1e-8, wd, decoupled);
    std::vector<double> p(q.w.value.begin(), q.w.value.end()), m(6, 0.0), v(6, 0.0);
    for (int t = 1; t <= 3; ++t) {
      q.loss_and_grad();
      adam.step();
      for (std::size_t i = 0; i < 6; ++i) {
        double gi = 2.0 * q.c.data()[i] * (p[i] - q.target.data()[i]);
        if (!decoupled) gi += wd * p[i];
        else p[i] *= 1 - lr * wd;
        m[i] = 0.9 * m[i] + 0.1 * gi;
        v[i] = 0.999 * v[i] + 0.001 * gi * gi;
        p[i] -= lr * (m[i] / (1 - std::pow(0.9, t))) / (std::sqrt(v[i] / (1 - std::pow(0.999, t))) + 1e-8);
      }
      for (std::size_t i = 0; i < 6; ++i) CHECK(q.w.value.data()[i] == doctest::Approx(p[i]).epsilon(1e-12));
    }
  }
}

TEST_CASE("SGD with momentum equals v ← μv + g, p ← p − lr·v") {
  const double lr = 0.02, mu = 0.9;
  Quadratic q;
  nn::SGD<double> sgd({&q.w}, lr, mu);
  std::vector<double> p(q.w.value.begin(), q.w.value.end()), vel(6, 0.0);
  for (int t = 0; t < 4; ++t) {
    q.loss_and_grad();
    sgd.step();
    for (std::size_t i = 0; i < 6; ++i) {
      const double gi = 2.0 * q.c.data()[i] * (p[i] - q.target.data()[i]);
      vel[i] = t == 0 ? gi : mu * vel[i] + gi;
      p[i] -= lr * vel[i];
    }
    for (std::size_t i = 0; i < 6; ++i) CHECK(q.w.value.data()[i] == doctest::Approx(p[i]).epsilon(1e-12));
  }
}

TEST_CASE("for_each_span: the parts cover every element once, cut at multiples of 16 within a parameter") {
  const std::vector<std::size_t> shapes[] = {{1}, {7, 16, 33}, {16, 16}, {1000, 1, 17, 250, 64, 3}, {5000}};
  for (const auto& sizes : shapes) {
    std::vector<std::unique_ptr<Parameter<float>>> owned;
    std::vector<Parameter<float>*> params;
    for (std::size_t n : sizes) params.push_back(owned.emplace_back(std::make_unique<Parameter<float>>("p", n, 1)).get());
    for (int parts = 1; parts <= 9; ++parts) {
      CAPTURE(sizes.size());
      CAPTURE(parts);
      std::vector<std::vector<int>> owner;
      for (std::size_t n : sizes) owner.emplace_back(n, -1);
      std::size_t largest = 0, total = 0;
      for (int part = 0; part < parts; ++part) {
        std::size_t mine = 0;
        nn::for_each_span(params, part, parts, [&](std::size_t k, std::size_t first, std::size_t last) {
          REQUIRE(k < sizes.size());
          CHECK(first < last);
          CHECK(last <= sizes[k]);
          CHECK(first % nn::kSpanAlign == 0);
          CHECK((last % nn::kSpanAlign == 0 || last == sizes[k]));
          for (std::size_t i = first; i < last; ++i) {
            CHECK(owner[k][i] == -1);  // not yet taken
            owner[k][i] = part;
          }
          mine += last - first;
        });
        largest = std::max(largest, mine);
        total += mine;
      }
      std::size_t all = 0;
      for (std::size_t k = 0; k < sizes.size(); ++k) {
        all += sizes[k];
        for (std::size_t i = 0; i < sizes[k]; ++i) CHECK(owner[k][i] >= 0);
        for (std::size_t i = 1; i < sizes[k]; ++i) CHECK(owner[k][i] >= owner[k][i - 1]);  // in order
      }
      CHECK(total == all);
      // Nearly equal shares: a cut moves by less than kSpanAlign elements per parameter it falls in.
      CHECK(largest <= all / std::size_t(parts) + 1 + 2 * nn::kSpanAlign);
    }
  }
}

TEST_CASE("an optimizer step split into parts gives the bits of step(): Adam, AdamW, Adam with L2, SGD") {
  // Parameters of odd sizes, so that parts cut inside them and the scalar tails matter.
  const std::size_t sizes[] = {37, 300, 5, 129};
  auto make = [&](std::vector<std::unique_ptr<Parameter<float>>>& owned) {
    std::vector<Parameter<float>*> params;
    ad::Rng rng(3);
    for (std::size_t n : sizes) {
      auto& p = owned.emplace_back(std::make_unique<Parameter<float>>("p", n, 1));
      rng.fill_normal(p->value.data(), n);
      params.push_back(p.get());
    }
    return params;
  };
  for (int kind = 0; kind < 4; ++kind)
    for (int parts : {2, 3, 7}) {
      CAPTURE(kind);
      CAPTURE(parts);
      std::vector<std::unique_ptr<Parameter<float>>> own_a, own_b;
      const auto pa = make(own_a), pb = make(own_b);
      auto optimizer = [&](const std::vector<Parameter<float>*>& ps) -> std::unique_ptr<nn::Optimizer<float>> {
        if (kind == 3) return std::make_unique<nn::SGD<float>>(ps, 0.05, 0.9, 0.01);
        return std::make_unique<nn::Adam<float>>(ps, 0.01, 0.9, 0.999, 1e-8, kind == 0 ? 0.0 : 0.1, kind == 1);
      };
      auto whole = optimizer(pa), split = optimizer(pb);
      ad::Rng rng(11);
      for (int step = 0; step < 4; ++step) {
        for (std::size_t k = 0; k < pa.size(); ++k) {
          rng.fill_normal(pa[k]->grad.data(), sizes[k]);
          std::copy_n(pa[k]->grad.data(), sizes[k], pb[k]->grad.data());
        }
        whole->step();
        split->begin_step();
        for (int part = parts - 1; part >= 0; --part) split->update(part, parts);  // any order
      }
      CHECK(split->steps() == whole->steps());
      for (std::size_t k = 0; k < pa.size(); ++k)
        for (std::size_t i = 0; i < sizes[k]; ++i) CHECK(pb[k]->value.data()[i] == pa[k]->value.data()[i]);
      const auto sa = whole->state(), sb = split->state();
      for (std::size_t s = 0; s < sa.size(); ++s)
        for (std::size_t i = 0; i < sa[s].second->size(); ++i) CHECK(sb[s].second->data()[i] == sa[s].second->data()[i]);
    }
}

TEST_CASE("gradient clipping scales to the global norm and reports the norm before clipping") {
  Parameter<double> a("a", 1, 2), b("b", 2, 1);
  a.grad = Array<double>{{3.0, 0.0}};
  b.grad = Array<double>{{0.0}, {4.0}};
  const double norm = nn::clip_grad_norm<double>({&a, &b}, 1.0);
  CHECK(norm == doctest::Approx(5.0));
  CHECK(a.grad(0, 0) == doctest::Approx(0.6));
  CHECK(b.grad(1, 0) == doctest::Approx(0.8));
  CHECK(nn::grad_norm<double>({&a, &b}) == doctest::Approx(1.0));
  // Below the threshold nothing changes.
  CHECK(nn::clip_grad_norm<double>({&a, &b}, 10.0) == doctest::Approx(1.0));
  CHECK(a.grad(0, 0) == doctest::Approx(0.6));
}

TEST_CASE("learning-rate schedules: warm-up, cosine, step") {
  nn::LrSchedule s;
  s.base = 1.0;
  s.warmup = 4;
  CHECK(s.at(0) == doctest::Approx(0.25));
  CHECK(s.at(3) == doctest::Approx(1.0));
  CHECK(s.at(100) == doctest::Approx(1.0));
  s.kind = nn::LrSchedule::Kind::cosine;
  s.total = 104;
  s.lr_min = 0.1;
  CHECK(s.at(4) == doctest::Approx(1.0));
  CHECK(s.at(54) == doctest::Approx(0.55));
  CHECK(s.at(104) == doctest::Approx(0.1));
  CHECK(s.at(500) == doctest::Approx(0.1));
  s.kind = nn::LrSchedule::Kind::step;
  s.step_size = 10;
  s.gamma = 0.5;
  CHECK(s.at(4 + 9) == doctest::Approx(1.0));
  CHECK(s.at(4 + 10) == doctest::Approx(0.5));
  CHECK(s.at(4 + 25) == doctest::Approx(0.25));
}

TEST_CASE("MLP parameters have dotted names and the zero last layer makes the output 0") {
  ad::Rng rng(3);
  nn::MLP<double> mlp(3, {5, 4}, 2, ad::Activation::tanh, rng, /*zero_last=*/true);
  const auto named = mlp.named_parameters();
  REQUIRE(named.size() == 6);
  CHECK(named[0].first == "0.weight");
  CHECK(named[1].first == "0.bias");
  CHECK(named[5].first == "2.bias");
  CHECK(mlp.parameter_count() == 3 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2);
  Tape<double> t;
  Array<double> x({7, 3});
  rng.fill_normal(x.data(), x.size());
  const Var<double> y = mlp(t.constant(x));
  CHECK(y.rows() == 7);
  CHECK(y.cols() == 2);
  for (double v : y.value()) CHECK(v == 0.0);
}

TEST_CASE("MLP gradients pass gradcheck in float64 for every activation") {
  for (const char* name : {"tanh", "relu", "leaky_relu", "softplus", "elu", "sigmoid"}) {
    CAPTURE(name);
    ad::Rng rng(11);
    nn::MLP<double> mlp(3, {6, 5}, 2, ad::activation_from_name(name), rng);
    Array<double> x({4, 3});
    rng.fill_normal(x.data(), x.size());
    auto f = [&](Tape<double>& t) { return ad::sum(ad::square(mlp(t.constant(x)))); };
    ad::GradcheckOptions opt;
    opt.check_entries = true;
    const ad::GradcheckResult r = ad::gradcheck_params(f, mlp.parameters(), opt);
    CHECK_MESSAGE(r.ok, r.report);
    CHECK(r.compared > 50);
  }
}

TEST_CASE("initializations have the stated spread and are reproducible") {
  ad::Rng rng(5);
  Array<double> w({200, 300});
  nn::initialize(w, nn::Init::xavier_uniform, rng);
  const double a = std::sqrt(6.0 / 500.0);
  double mx = 0, sq = 0;
  for (double v : w) mx = std::max(mx, std::abs(v)), sq += v * v;
  CHECK(mx <= a);
  CHECK(mx > 0.99 * a);
  CHECK(std::sqrt(sq / double(w.size())) == doctest::Approx(a / std::sqrt(3.0)).epsilon(0.02));
  nn::initialize(w, nn::Init::kaiming_normal, rng);
  sq = 0;
  for (double v : w) sq += v * v;
  CHECK(std::sqrt(sq / double(w.size())) == doctest::Approx(std::sqrt(2.0 / 300.0)).epsilon(0.02));
  // Same seed, same weights.
  ad::Rng r1(42), r2(42);
  Array<double> w1({4, 4}), w2({4, 4});
  nn::initialize(w1, nn::Init::xavier_normal, r1);
  nn::initialize(w2, nn::Init::xavier_normal, r2);
  CHECK(w1 == w2);
}

TEST_CASE("a small MLP fits a noiseless 1-D regression within 1500 Adam steps") {
  ad::Rng rng(0);
  nn::MLP<float> mlp(1, {32, 32}, 1, ad::Activation::tanh, rng);
  nn::Adam<float> adam(mlp.parameters(), 1e-2);
  Array<float> x({128, 1}), y({128, 1});
  for (std::size_t i = 0; i < 128; ++i) {
    x(i, 0) = -2.0f + 4.0f * float(i) / 127.0f;
    y(i, 0) = std::sin(2.0f * x(i, 0));
  }
  Tape<float> t;
  float loss = 0;
  for (int step = 0; step < 1500; ++step) {
    t.clear();
    const Var<float> l = ad::mean(ad::square(mlp(t.constant(x)) - t.constant(y)));
    mlp.zero_grad();
    t.backward(l);
    adam.step();
    loss = l.item();
  }
  CHECK(loss < 2e-3);
}
