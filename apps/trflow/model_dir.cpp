#include "model_dir.hpp"

#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "app.hpp"
#include "flows/checkpoint.hpp"
#include "nn/io.hpp"

namespace fs = std::filesystem;

namespace trflow {

double Standardization::nll_offset() const {
  double s = 0;
  for (double v : std) s += std::log(v);
  return s;
}

void Standardization::apply(double* x, std::size_t n) const {
  const std::size_t d = mean.size();
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) x[i * d + j] = (x[i * d + j] - mean[j]) / std[j];
}

void Standardization::invert(float* x, std::size_t n) const {
  const std::size_t d = mean.size();
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) x[i * d + j] = float(x[i * d + j] * std[j] + mean[j]);
}

nlohmann::json Standardization::to_json() const {
  if (!active()) return nullptr;
  return {{"mean", mean}, {"std", std}};
}

Standardization Standardization::from_json(const nlohmann::json& j) {
  Standardization s;
  if (j.is_null()) return s;
  s.mean = j.at("mean").get<std::vector<double>>();
  s.std = j.at("std").get<std::vector<double>>();
  if (s.mean.size() != s.std.size()) throw DataError("standardization: mean and std differ in length");
  return s;
}

StandardizedDataset::StandardizedDataset(std::unique_ptr<flows::Dataset> inner, Standardization s)
    : inner_(std::move(inner)), s_(std::move(s)) {
  if (s_.mean.size() != inner_->dim())
    throw DataError(fmt::format("the standardization has {} columns but the data have {}", s_.mean.size(), inner_->dim()));
}

void StandardizedDataset::sample(std::size_t n, ad::Rng& rng, double* out) {
  inner_->sample(n, rng, out);
  s_.apply(out, n);
}

void StandardizedDataset::all_rows(double* out) const {
  inner_->all_rows(out);
  s_.apply(out, inner_->row_count());
}

std::unique_ptr<flows::Dataset> open_dataset(const std::string& spec, bool drop_nonfinite) {
  try {
    return flows::make_dataset(spec, drop_nonfinite);
  } catch (const nn::FormatError& e) {
    throw DataError(e.what());
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
}

Model load_model_dir(const std::string& path) {
  fs::path file = path;
  if (fs::is_directory(file)) file /= "model.npz";
  if (!fs::exists(file))
    throw DataError(fmt::format("no model at {} (expected a directory written by `trflow train`, or its model.npz)", path));
  Model m;
  try {
    flows::LoadedModel loaded = flows::load_model(file.string());
    m.flow = std::move(loaded.flow);
    m.meta = std::move(loaded.meta);
  } catch (const nn::FormatError& e) {
    throw DataError(e.what());
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt::format("{}: the architecture entry is malformed: {}", file.string(), e.what()));
  }
  m.standardization = Standardization::from_json(m.meta.value("standardization", nlohmann::json()));
  m.dir = file.parent_path().string();
  if (m.dir.empty()) m.dir = ".";
  return m;
}

std::unique_ptr<flows::Dataset> dataset_for_model(const Model& m, const std::string& spec) {
  const std::string name = spec.empty() ? m.meta.value("data", std::string()) : spec;
  if (name.empty()) throw UsageError("the model does not record its training data; pass --data");
  const bool drop = m.meta.contains("train") && m.meta["train"].value("drop_nonfinite", false);
  std::unique_ptr<flows::Dataset> data = open_dataset(name, drop);
  if (data->dim() != m.flow->dim())
    throw DataError(fmt::format("{} has {} dimensions but the model has {}", name, data->dim(), m.flow->dim()));
  if (m.standardization.active()) return std::make_unique<StandardizedDataset>(std::move(data), m.standardization);
  return data;
}

}  // namespace trflow
