// Saving and loading models and checkpoints; resuming gives the same parameters bitwise.
#include <cstdio>
#include <unistd.h>
#include <filesystem>
#include <string>

#include <doctest/doctest.h>

#include "flows/checkpoint.hpp"
#include "flows/datasets.hpp"
#include "nn/io.hpp"

using ad::Array;
using ad::Tape;
using namespace flows;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("trflow_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

FlowSpec small_spec() {
  FlowSpec spec;
  spec.layers = 3;
  spec.coupling.hidden = 16;
  spec.actnorm = true;
  spec.lu = true;
  spec.seed = 4;
  return spec;
}

/// A few Adam steps on gaussian:2 so the parameters differ from their initial values.
void train_some(Flow<float>& flow, Dataset& data, int steps, std::uint64_t seed = 0) {
  TrainConfig cfg;
  cfg.batch = 64;
  cfg.steps = steps;
  cfg.beta.start = 0.1;
  cfg.seed = seed;
  Trainer<float> trainer(flow, data, cfg);
  for (int i = 0; i < steps; ++i) trainer.step();
}

}  // namespace

TEST_CASE("a saved and reloaded model (ActNorm included) gives identical log_prob and samples") {
  const fs::path dir = temp_dir("model");
  auto data = make_dataset("gaussian:2");
  auto flow = make_flow<float>(2, small_spec());
  train_some(*flow, *data, 20);
  auto& actnorm = dynamic_cast<ActNorm<float>&>(flow->layer(0));
  REQUIRE(actnorm.initialized());
  save_model((dir / "model.npz").string(), *flow, {{"data", "gaussian:2"}});

  LoadedModel loaded = load_model((dir / "model.npz").string());
  CHECK(loaded.meta.at("data").get<std::string>() == "gaussian:2");
  REQUIRE(loaded.flow->num_layers() == flow->num_layers());
  auto& loaded_actnorm = dynamic_cast<ActNorm<float>&>(loaded.flow->layer(0));
  CHECK(loaded_actnorm.initialized());
  const std::vector<float> shift_before(loaded_actnorm.shift.value.begin(), loaded_actnorm.shift.value.end());

  Array<float> y({50, 2});
  ad::Rng rng(3);
  rng.fill_normal(y.data(), y.size());
  Tape<float> t1, t2;
  CHECK(flow->log_prob(t1.constant(y)).value() == loaded.flow->log_prob(t2.constant(y)).value());

  Array<float> x1, x2;
  ad::Rng r1(8), r2(8);
  flow->base().sample(30, r1, x1);
  loaded.flow->base().sample(30, r2, x2);
  t1.clear();
  t2.clear();
  CHECK(flow->forward(t1.constant(x1)).out.value() == loaded.flow->forward(t2.constant(x2)).out.value());

  // Training the loaded model must not re-run the data-dependent initialization.
  train_some(*loaded.flow, *data, 1, 99);
  CHECK(loaded_actnorm.initialized());
  double moved = 0;
  for (std::size_t j = 0; j < 2; ++j) moved += std::abs(loaded_actnorm.shift.value(0, j) - shift_before[j]);
  CHECK(moved < 0.05);  // one Adam step of lr 1e-3 moves each entry by at most ~1e-3
  fs::remove_all(dir);
}

TEST_CASE("numpy-readable layout: parameters under dotted names, the architecture as JSON bytes") {
  const fs::path dir = temp_dir("layout");
  auto flow = make_flow<float>(3, small_spec());
  save_model((dir / "m.npz").string(), *flow, {{"note", "hello"}});
  const auto arrays = nn::read_npz((dir / "m.npz").string());
  bool found_weight = false, found_arch = false;
  for (const auto& a : arrays) {
    if (a.name == "layers.2.net.0.weight") {
      found_weight = true;
      CHECK(a.descr == "<f4");
      CHECK(a.shape == std::vector<std::size_t>{16, 2});
    }
    if (a.name == "architecture") {
      found_arch = true;
      CHECK(a.descr == "|u1");
      std::string text;
      for (double c : a.data) text += char(int(c));
      CHECK(nlohmann::json::parse(text).at("meta").at("note").get<std::string>() == "hello");
    }
  }
  CHECK(found_weight);
  CHECK(found_arch);
  fs::remove_all(dir);
}

TEST_CASE("loading rejects a file with a missing or mis-shaped tensor, naming it and both shapes") {
  const fs::path dir = temp_dir("reject");
  auto flow = make_flow<float>(2, small_spec());
  const std::string good = (dir / "good.npz").string();
  save_model(good, *flow, {});
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& a : nn::read_npz(good)) {
    if (a.name == "layers.2.net.0.bias") continue;  // drop one tensor
    if (a.descr == "|u1") {
      std::vector<std::uint8_t> bytes(a.data.begin(), a.data.end());
      entries.emplace_back(a.name, nn::encode_npy(bytes.data(), a.shape));
    } else {
      std::vector<float> v(a.data.begin(), a.data.end());
      entries.emplace_back(a.name, nn::encode_npy(v.data(), a.shape));
    }
  }
  const std::string missing = (dir / "missing.npz").string();
  nn::write_npz(missing, entries);
  try {
    load_model(missing);
    FAIL("a model with a missing tensor loaded");
  } catch (const nn::FormatError& e) {
    const std::string what = e.what();
    CHECK(what.find("layers.2.net.0.bias") != std::string::npos);
    CHECK(what.find("missing.npz") != std::string::npos);
  }
  // A tensor the model does not have is rejected too.
  entries.emplace_back("layers.9.net.0.weight", entries.back().second);
  for (const auto& a : nn::read_npz(good))
    if (a.name == "layers.2.net.0.bias") {
      std::vector<float> v(a.data.begin(), a.data.end());
      entries.emplace_back(a.name, nn::encode_npy(v.data(), a.shape));
    }
  const std::string extra = (dir / "extra.npz").string();
  nn::write_npz(extra, entries);
  CHECK_THROWS_WITH_AS(load_model(extra), doctest::Contains("layers.9.net.0.weight"), nn::FormatError);
  fs::remove_all(dir);
}

TEST_CASE("a mis-shaped tensor's message gives the expected and the found shape") {
  const fs::path dir = temp_dir("shapes");
  FlowSpec spec = small_spec();
  spec.actnorm = spec.lu = false;
  auto flow = make_flow<float>(2, spec);
  const std::string good = (dir / "good.npz").string();
  save_model(good, *flow, {});
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& a : nn::read_npz(good)) {
    if (a.descr == "|u1") {
      std::vector<std::uint8_t> bytes(a.data.begin(), a.data.end());
      entries.emplace_back(a.name, nn::encode_npy(bytes.data(), a.shape));
    } else if (a.name == "layers.0.net.0.weight") {  // (16, 1) saved as (1, 16)
      std::vector<float> v(a.data.begin(), a.data.end());
      entries.emplace_back(a.name, nn::encode_npy(v.data(), {1, 16}));
    } else {
      std::vector<float> v(a.data.begin(), a.data.end());
      entries.emplace_back(a.name, nn::encode_npy(v.data(), a.shape));
    }
  }
  const std::string bad = (dir / "bad.npz").string();
  nn::write_npz(bad, entries);
  try {
    load_model(bad);
    FAIL("loaded");
  } catch (const nn::FormatError& e) {
    const std::string what = e.what();
    CHECK(what.find("layers.0.net.0.weight") != std::string::npos);
    CHECK(what.find("(16, 1)") != std::string::npos);
    CHECK(what.find("(1, 16)") != std::string::npos);
  }
  fs::remove_all(dir);
}

TEST_CASE("resuming from a checkpoint ends with the same parameters as an uninterrupted run, bitwise") {
  const fs::path dir = temp_dir("resume");
  auto data = make_dataset("8gaussians");
  TrainConfig cfg;
  cfg.batch = 64;
  cfg.steps = 30;
  cfg.lr_schedule = nn::LrSchedule::Kind::cosine;
  cfg.beta.kind = BetaSchedule::Kind::cosine;
  cfg.beta.start = 0.2;
  cfg.beta.floor = 0.01;
  cfg.beta.steps = 30;
  cfg.seed = 5;

  auto straight = make_flow<float>(2, small_spec());
  Trainer<float> t_straight(*straight, *data, cfg);
  for (int i = 0; i < 30; ++i) t_straight.step(i % 3 == 0);

  auto first = make_flow<float>(2, small_spec());
  {
    Trainer<float> t_first(*first, *data, cfg);
    for (int i = 0; i < 12; ++i) t_first.step(i % 3 == 0);
    save_checkpoint((dir / "ckpt.npz").string(), *first, t_first, {});
  }
  const nlohmann::json arch = read_architecture((dir / "ckpt.npz").string());
  auto resumed = Flow<float>::from_config(arch.at("flow"));
  Trainer<float> t_resumed(*resumed, *data, cfg);
  load_checkpoint((dir / "ckpt.npz").string(), *resumed, t_resumed);
  CHECK(t_resumed.steps_done() == 12);
  for (int i = 12; i < 30; ++i) t_resumed.step(i % 3 == 0);

  const auto a = straight->named_parameters(), b = resumed->named_parameters();
  REQUIRE(a.size() == b.size());
  for (std::size_t k = 0; k < a.size(); ++k) {
    CAPTURE(a[k].first);
    CHECK(a[k].first == b[k].first);
    CHECK(a[k].second->value == b[k].second->value);
  }
  fs::remove_all(dir);
}
