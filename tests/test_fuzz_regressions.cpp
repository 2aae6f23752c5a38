// Replays every input the fuzzers (tests/fuzz/, scripts/fuzz.sh) found a bug
// with, through the same entry points (tests/fuzz/fuzz_targets.hpp): each
// must now be accepted or rejected with an expected exception (nn::FormatError,
// std::invalid_argument, std::runtime_error, nlohmann::json::exception). The
// cases below then pin the clear error each specific bug now gives.
// docs/fuzzing.md lists the bugs.
#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "fuzz/fuzz_targets.hpp"

namespace fs = std::filesystem;
using trflow_fuzz::Outcome;

namespace {

const fs::path kRegressions = fs::path(TRFLOW_TEST_DATA) / ".." / "fuzz" / "regressions";

std::vector<fs::path> inputs(const std::string& target) {
  std::vector<fs::path> files;
  const fs::path dir = kRegressions / target;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().filename().string().front() != '.') files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::string bytes_of(const std::string& target, const std::string& name) {
  return nn::read_file((kRegressions / target / name).string());
}

const std::uint8_t* u8(const std::string& s) { return reinterpret_cast<const std::uint8_t*>(s.data()); }

/// load_model on a regression file: rejected, with a message containing `expected`.
void check_model_rejected(const std::string& name, const std::string& expected) {
  CAPTURE(name);
  const std::string path = (kRegressions / "model" / name).string();
  const Outcome o = trflow_fuzz::outcome_of([&] { flows::load_model(path); });
  CHECK_FALSE(o.accepted);
  CHECK_MESSAGE(o.error.find(expected) != std::string::npos, o.error);
  // Rejected as a malformed file, naming it.
  CHECK_THROWS_AS(flows::load_model(path), nn::FormatError);
}

/// The architecture record stored in a regression .npz (without checking it).
nlohmann::json stored_architecture(const std::string& name) {
  for (const nn::NpyArray& a : nn::read_npz((kRegressions / "model" / name).string()))
    if (a.name == "architecture") {
      std::string text;
      for (double v : a.data) text.push_back(char(static_cast<unsigned char>(v)));
      return nlohmann::json::parse(text);
    }
  FAIL("no architecture entry in " << name);
  return {};
}

}  // namespace

TEST_CASE("fuzz regressions: every saved input gives a value or an expected exception") {
  std::size_t replayed = 0;
  for (const char* target : {"npy", "csv", "model"}) {
    for (const fs::path& file : inputs(target)) {
      CAPTURE(file.string());
      const std::string bytes = nn::read_file(file.string());
      if (std::string(target) == "npy") CHECK_NOTHROW(trflow_fuzz::run_npy(u8(bytes), bytes.size()));
      if (std::string(target) == "csv") CHECK_NOTHROW(trflow_fuzz::run_csv(u8(bytes), bytes.size()));
      if (std::string(target) == "model") CHECK_NOTHROW(trflow_fuzz::run_model(u8(bytes), bytes.size()));
      ++replayed;
    }
  }
  CHECK(replayed >= 13);  // the directory was found
}

TEST_CASE("fuzz regression: a negative conditioner depth is rejected, not a std::length_error") {
  // Found by fuzz_model: "depth": -1 read as 2^64 - 1 hidden layers.
  const std::string text = bytes_of("model", "length_error_depth_negative.json");
  const nlohmann::json arch = nlohmann::json::parse(text);
  CHECK_THROWS_WITH_AS(flows::Flow<float>::from_config(arch.at("flow")),
                       "layer 0: affine_coupling layer: 'depth' must be an integer in [0, 256], got -1",
                       std::invalid_argument);
  CHECK_THROWS_AS(flows::Flow<double>::from_config(arch.at("flow")), std::invalid_argument);
}

TEST_CASE("fuzz regression: an architecture entry that is not uint8 text is rejected before conversion") {
  // float64 elements such as 1e300 were cast to unsigned char (undefined behaviour).
  check_model_rejected("arch_f8_1e300.npz", "entry 'architecture': expected JSON text stored as uint8 ('|u1'), got dtype '<f8'");
  CHECK_THROWS_WITH_AS(flows::read_architecture((kRegressions / "model" / "arch_f8_1e300.npz").string()),
                       doctest::Contains("got dtype '<f8'"), nn::FormatError);
}

TEST_CASE("fuzz regression: a float format version is rejected before conversion") {
  // "version": 1e300 was converted to int (undefined behaviour).
  check_model_rejected("version_float_1e300.npz", "expected format version 1, found 1e+300");
}

TEST_CASE("fuzz regression: counts and coordinates in the architecture must be JSON integers in range") {
  // Floats and negative numbers were converted to size_t / int (undefined
  // behaviour, or a wrapped value); 2^32 in "updated" was silently read as 0.
  check_model_rejected("flow_dim_float.npz", "flow: 'dim' must be an integer in [1, 1048576], got 1e+300");
  check_model_rejected("updated_float_1e300.npz",
                       "layer 0: affine_coupling layer: 'updated' must hold integers in [0, 2), got 1e+300");
  check_model_rejected("updated_2pow32.npz",
                       "layer 0: affine_coupling layer: 'updated' must hold integers in [0, 2), got 4294967296");
  const nlohmann::json arch = stored_architecture("updated_2pow32.npz");
  CHECK_THROWS_WITH_AS(flows::Flow<float>::from_config(arch.at("flow")), doctest::Contains("got 4294967296"),
                       std::invalid_argument);
}

TEST_CASE("fuzz regression: huge dimensions and widths are rejected before allocating") {
  // Each of these asked for gigabytes to terabytes (ASan: allocation size too
  // big / out of memory) before any check ran.
  check_model_rejected("flow_dim_huge_diag.npz", "flow: 'dim' must be an integer in [1, 1048576], got 1099511627776");
  check_model_rejected("actnorm_dim_huge.npz", "flow: 'dim' must be an integer in [1, 1048576], got 1099511627776");
  check_model_rejected("coupling_dim_huge.npz", "flow: 'dim' must be an integer in [1, 1048576], got 4611686018427387904");
  check_model_rejected("coupling_hidden_huge.npz",
                       "layer 0: affine_coupling layer: 'hidden' must be an integer in [0, 1048576], got 1099511627776");
  check_model_rejected("lu_dim_huge.npz",
                       "layer 0: lu_linear layer: 20000100000 parameters, more than the limit of 67108864");

  // make_layer checks its own fields, whatever the flow's dimension.
  ad::Rng rng(0);
  CHECK_THROWS_WITH_AS(flows::make_layer<float>({{"type", "actnorm"}, {"dim", 1ull << 40}}, rng),
                       "actnorm layer: 'dim' must be an integer in [1, 1048576], got 1099511627776",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(flows::make_layer<float>({{"type", "lu_linear"}, {"dim", 8192}}, rng),
                       "lu_linear layer: 134225920 parameters, more than the limit of 67108864", std::invalid_argument);
}

TEST_CASE("fuzz regression: a float step count in a checkpoint's trainer state is rejected before conversion") {
  // "optimizer_steps": 1e300 was converted to int64 (undefined behaviour) by load_checkpoint.
  // The regression file is a record with a "trainer" member (fuzz_model's checkpoint form);
  // here that member replaces the trainer state of a real checkpoint.
  const nlohmann::json record = nlohmann::json::parse(bytes_of("model", "checkpoint_steps_float_1e300.json"));
  const nlohmann::json flow_config = record.at("flow");
  auto flow = flows::Flow<float>::from_config(flow_config);
  flows::GaussianDataset data(flow->dim());
  flows::TrainConfig cfg;
  cfg.batch = 4;
  flows::Trainer<float> trainer(*flow, data, cfg);
  const std::string path = trflow_fuzz::temp_path("regression_checkpoint", ".npz");
  flows::save_checkpoint(path, *flow, trainer, nlohmann::json::object());
  std::vector<std::pair<std::string, std::string>> entries;
  for (const nn::NpyArray& a : nn::read_npz(path)) {
    std::string text;
    if (a.name == "trainer") text = record.at("trainer").dump();
    else if (a.descr == "|u1")
      for (double v : a.data) text.push_back(char(static_cast<unsigned char>(v)));
    if (a.descr == "|u1") {
      entries.emplace_back(a.name, nn::encode_npy(reinterpret_cast<const std::uint8_t*>(text.data()), {text.size()}));
    } else {
      entries.emplace_back(a.name, nn::encode_npy(a.data.data(), a.shape, nn::Dtype::float32));
    }
  }
  nn::write_npz(path, entries);
  CHECK_THROWS_WITH_AS(flows::load_checkpoint(path, *flow, trainer),
                       doctest::Contains("entry 'trainer': expected the trainer's state ('optimizer_steps' must be a "
                                         "non-negative integer, got 1e+300)"),
                       nn::FormatError);
  fs::remove(path);
}

TEST_CASE("fuzz regression: encode_npy writes an empty array whose other dimensions overflow, as parse_npy reads it") {
  // Found by fuzz_npy: parse_npy accepted the shape (60, 8, 39447, ..., 0, 0)
  // (no elements), but encode_npy threw "has too many elements" for it.
  const std::string bytes = bytes_of("npy", "encode_empty_overflowing_shape.npy");
  const nn::NpyArray a = nn::parse_npy(bytes, "regression.npy");
  CHECK(a.data.empty());
  REQUIRE(a.shape.size() == 14);
  const nn::NpyArray b = nn::parse_npy(nn::encode_npy(a.data.data(), a.shape), "again.npy");
  CHECK(b.shape == a.shape);
  CHECK(b.data.empty());
  const double none = 0;
  CHECK(nn::parse_npy(nn::encode_npy(&none, {std::size_t(1) << 63, 4, 0}), "x").shape ==
        std::vector<std::size_t>{std::size_t(1) << 63, 4, 0});
  // Without a zero, an overflowing shape is still refused.
  CHECK_THROWS_AS(nn::encode_npy(&none, {std::size_t(1) << 63, 4}), std::invalid_argument);
}

TEST_CASE("fuzz regression: the new limits still accept large but real architectures") {
  flows::FlowSpec spec;
  spec.layers = 2;
  spec.coupling.hidden = 64;
  spec.actnorm = true;
  spec.lu = true;
  auto big = flows::make_flow<float>(512, spec);
  auto again = flows::Flow<float>::from_config(big->config());
  CHECK(again->parameter_count() == big->parameter_count());
  CHECK(again->config() == big->config());
}
