// Held-out rows, best-model selection and early stopping (flows/validation.hpp), and the
// validation state that checkpoints carry.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <vector>

#include <doctest/doctest.h>

#include <unistd.h>

#include "flows/checkpoint.hpp"
#include "flows/metrics.hpp"
#include "flows/validation.hpp"

using ad::Array;
using namespace flows;

namespace {

xt::xtensor<double, 2> numbered_rows(std::size_t n, std::size_t d) {
  xt::xtensor<double, 2> rows({n, d});
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) rows(i, j) = double(i) + 0.001 * double(j);  // row i is recognizable
  return rows;
}

std::unique_ptr<Flow<float>> small_flow(std::size_t d) {
  FlowSpec spec;
  spec.layers = 2;
  spec.coupling.hidden = 8;
  spec.coupling.kind = CouplingKind::rqs;
  spec.coupling.bins = 4;
  return make_flow<float>(d, spec);
}

/// Sets every parameter of the flow to c·(its index + 1) · 0.01.
void set_params(Flow<float>& flow, float c) {
  for (auto* p : flow.parameters())
    for (std::size_t k = 0; k < p->value.size(); ++k) p->value.data()[k] = c * 0.01f * float(k % 7 + 1);
}

}  // namespace

TEST_CASE("hold_out: validation rows never enter the training rows, the split is seeded and sized as asked") {
  const auto rows = numbered_rows(101, 3);
  const auto [train, val] = hold_out(rows, 0.1, 7);
  CHECK(val.shape()[0] == 11);  // ⌈10.1⌉
  CHECK(train.shape()[0] == 90);
  std::set<double> seen;
  for (std::size_t i = 0; i < train.shape()[0]; ++i) seen.insert(train(i, 0));
  for (std::size_t i = 0; i < val.shape()[0]; ++i) {
    CHECK(seen.count(val(i, 0)) == 0);  // disjoint
    seen.insert(val(i, 0));
    CHECK(val(i, 2) == doctest::Approx(val(i, 0) + 0.002));  // whole rows move together
  }
  CHECK(seen.size() == 101);  // and together they are all the rows
  const auto again = hold_out(rows, 0.1, 7);
  CHECK(again.second == val);
  CHECK(hold_out(rows, 0.1, 8).second != val);
  // A training batch drawn from the training rows holds no validation row.
  MatrixDataset data("rows", train);
  std::vector<double> batch(5000 * 3);
  ad::Rng rng(1);
  data.sample(5000, rng, batch.data());
  std::set<double> held;
  for (std::size_t i = 0; i < val.shape()[0]; ++i) held.insert(val(i, 0));
  for (std::size_t i = 0; i < 5000; ++i) CHECK(held.count(batch[i * 3]) == 0);
  CHECK(hold_out(rows, 0.0, 1).second.shape()[0] == 0);
  CHECK(hold_out(numbered_rows(2, 1), 0.9, 1).first.shape()[0] == 1);  // at least one training row
  CHECK_THROWS_AS(hold_out(rows, 1.0, 1), std::invalid_argument);
  CHECK_THROWS_AS(hold_out(numbered_rows(1, 2), 0.5, 1), std::invalid_argument);
}

TEST_CASE("Validation keeps the parameters with the lowest validation NLL among the evaluated steps") {
  auto flow = small_flow(2);
  Array<float> rows({64, 2});
  ad::Rng rng(3);
  rng.fill_normal(rows.data(), rows.size());
  Validation<float> v(*flow, rows, 0.5, ValidationConfig{10, 0, 0.0});
  // Four parameter settings; the validation NLL of each, measured directly.
  std::vector<double> nll;
  for (float c : {3.0f, 0.0f, 1.0f, 2.0f}) {
    set_params(*flow, c);
    nll.push_back(mean_nll(*flow, rows) + 0.5);
  }
  const std::size_t best = std::size_t(std::min_element(nll.begin(), nll.end()) - nll.begin());
  std::int64_t step = 0;
  for (float c : {3.0f, 0.0f, 1.0f, 2.0f}) {
    set_params(*flow, c);
    step += 10;
    const auto o = v.evaluate(step);
    CHECK(o.nll == doctest::Approx(nll[std::size_t(step / 10 - 1)]).epsilon(1e-12));
  }
  CHECK(v.best_step() == std::int64_t(10 * (best + 1)));
  CHECK(v.best_nll() == doctest::Approx(nll[best]).epsilon(1e-12));
  v.use_best();
  CHECK(v.nll() == doctest::Approx(nll[best]).epsilon(1e-12));  // the flow now holds the best parameters
}

TEST_CASE("early stopping: after `patience` evaluations without improvement, and not before") {
  auto flow = small_flow(3);
  Array<float> rows({32, 3});
  ad::Rng rng(4);
  rng.fill_normal(rows.data(), rows.size());
  Validation<float> v(*flow, rows, 0.0, ValidationConfig{5, 3, 0.0});
  CHECK(v.due(5));
  CHECK(!v.due(7));
  const auto first = v.evaluate(5);  // the first finite value always improves
  CHECK(first.improved);
  CHECK(!first.stop);
  // A plateau: the same parameters, the same NLL.
  CHECK(!v.evaluate(10).stop);
  CHECK(!v.evaluate(15).stop);
  const auto third = v.evaluate(20);
  CHECK(!third.improved);
  CHECK(third.stop);
  CHECK(v.best_step() == 5);
  // An improvement resets the count: evaluate the worse of two settings twice, then the better.
  set_params(*flow, 0.5f);
  const double a = mean_nll(*flow, rows);
  set_params(*flow, 0.0f);
  const double b = mean_nll(*flow, rows);
  REQUIRE(a != b);
  const float worse = a > b ? 0.5f : 0.0f, better = a > b ? 0.0f : 0.5f;
  set_params(*flow, worse);
  Validation<float> w(*flow, rows, 0.0, ValidationConfig{5, 2, 0.0});
  CHECK(w.evaluate(5).improved);
  CHECK(!w.evaluate(10).stop);  // one without improvement
  set_params(*flow, better);
  const auto o = w.evaluate(15);
  CHECK(o.improved);
  CHECK(!o.stop);
  CHECK(!w.evaluate(20).stop);  // the count restarted at the improvement
  CHECK(w.evaluate(25).stop);
}

TEST_CASE("a checkpoint carries the validation state and the best parameters") {
  namespace fs = std::filesystem;
  const fs::path path = fs::temp_directory_path() / ("trflow_validation_" + std::to_string(::getpid()) + ".npz");
  GaussianDataset data(2);
  auto flow = small_flow(2);
  TrainConfig cfg;
  cfg.batch = 32;
  Trainer<float> trainer(*flow, data, cfg);
  Array<float> rows({50, 2});
  ad::Rng rng(5);
  rng.fill_normal(rows.data(), rows.size());
  Validation<float> v(*flow, rows, 0.0, ValidationConfig{1, 4, 0.0});
  trainer.step();
  v.evaluate(1);
  trainer.step();
  v.evaluate(2);
  save_checkpoint(path.string(), *flow, trainer, nlohmann::json::object(), &v);

  auto flow2 = small_flow(2);
  Trainer<float> trainer2(*flow2, data, cfg);
  Validation<float> v2(*flow2, rows, 0.0, ValidationConfig{1, 4, 0.0});
  load_checkpoint(path.string(), *flow2, trainer2, &v2);
  CHECK(v2.state() == v.state());
  for (std::size_t i = 0; i < v.best_parameters().size(); ++i) CHECK(v2.best_parameters()[i].second == v.best_parameters()[i].second);
  // The file still loads as a plain model, and a checkpoint without validation loads into one with it.
  CHECK(load_model(path.string()).flow->parameter_count() == flow->parameter_count());
  save_checkpoint(path.string(), *flow, trainer, nlohmann::json::object());
  Validation<float> v3(*flow2, rows, 0.0, ValidationConfig{1, 4, 0.0});
  load_checkpoint(path.string(), *flow2, trainer2, &v3);
  CHECK(!v3.has_best());
  fs::remove(path);
}

TEST_CASE("evaluate on a data file averages the NLL over all of its rows exactly") {
  auto flow = small_flow(3);
  set_params(*flow, 0.3f);
  const auto rows = numbered_rows(37, 3);
  xt::xtensor<double, 2> scaled = rows * 0.05;
  MatrixDataset data("rows", scaled);
  const EvalReport r = evaluate(*flow, data, 500, 1);
  CHECK(r.rows == 37);
  Array<float> y({37, 3});
  std::copy(scaled.begin(), scaled.end(), y.data());
  CHECK(r.nll == doctest::Approx(mean_nll(*flow, y)).epsilon(1e-12));
  CHECK(evaluate(*flow, data, 500, 2).nll == r.nll);  // no sampling: the seed does not matter
  CHECK(r.to_json().at("rows") == 37);
}
