#pragma once
// A trained model on disk and the data it was trained on: DIR/model.npz holds
// the flow, the data spec and the standardization, so eval, sample and plot
// need nothing but the directory.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flows/datasets.hpp"
#include "flows/flow.hpp"

namespace trflow {

/// y_std = (y − mean) / std per column; the model sees standardized data.
struct Standardization {
  std::vector<double> mean, std;
  bool active() const { return !mean.empty(); }
  /// Σ_j log std_j: NLL in data units = NLL in standardized units + this.
  double nll_offset() const;
  void apply(double* x, std::size_t n) const;
  void invert(float* x, std::size_t n) const;
  nlohmann::json to_json() const;
  static Standardization from_json(const nlohmann::json& j);
};

/// A dataset seen through a standardization (sampling returns standardized rows).
class StandardizedDataset : public flows::Dataset {
 public:
  StandardizedDataset(std::unique_ptr<flows::Dataset> inner, Standardization s);
  std::size_t dim() const override { return inner_->dim(); }
  std::string name() const override { return inner_->name(); }
  void sample(std::size_t n, ad::Rng& rng, double* out) override;
  bool has_log_prob() const override { return false; }
  std::size_t row_count() const override { return inner_->row_count(); }
  void all_rows(double* out) const override;

 private:
  std::unique_ptr<flows::Dataset> inner_;
  Standardization s_;
};

/// Opens a data spec (built-in name, gaussian:D, gmm:D, .npy or .csv path);
/// bad specs and files become DataError/UsageError with the file and position.
std::unique_ptr<flows::Dataset> open_dataset(const std::string& spec, bool drop_nonfinite = false);

struct Model {
  std::unique_ptr<flows::Flow<float>> flow;
  nlohmann::json meta;  ///< {"data", "standardization", "train": {...}}
  Standardization standardization;
  std::string dir;      ///< the directory holding model.npz
};

/// Loads DIR/model.npz (or a path to a .npz itself).
Model load_model_dir(const std::string& path);

/// The dataset for evaluation/plots: `spec`, or the model's training data when empty,
/// standardized like the model's training data. Checks the dimension against the model.
std::unique_ptr<flows::Dataset> dataset_for_model(const Model& m, const std::string& spec);

}  // namespace trflow
