#pragma once
// Held-out data, best-model selection and early stopping.
//
// A data file's rows are split once, by a seeded shuffle, into training rows and
// validation rows (hold_out); built-in generators get a fixed validation sample instead.
// Every `every` steps the trainer's caller asks Validation for the mean NLL of the
// validation rows; the parameters with the lowest one are kept (the model that is
// saved), and after `patience` evaluations without improvement training stops.
// Selection is on the validation NLL alone: the transport term regularizes training,
// the density is what has to generalize.
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include "autodiff/xsimd.hpp"  // first: see there
#include <xtensor/xtensor.hpp>

#include "flows/flow.hpp"
#include "flows/inference.hpp"

namespace flows {

/// rows split by a seeded shuffle: ⌈fraction · N⌉ validation rows (at least 1 when fraction > 0,
/// at most N − 1), the rest for training, each in the file's order. fraction in [0, 1).
std::pair<xt::xtensor<double, 2>, xt::xtensor<double, 2>> hold_out(const xt::xtensor<double, 2>& rows,
                                                                   double fraction, std::uint64_t seed);

struct ValidationConfig {
  std::int64_t every = 100;   ///< steps between evaluations
  std::int64_t patience = 0;  ///< stop after this many evaluations without improvement (0: never)
  double min_delta = 0.0;     ///< an improvement must lower the best NLL by more than this (nats)
};

template <class T>
class Validation {
 public:
  /// rows: the validation rows as the model sees them (standardized if it is); nll_offset is
  /// added to every NLL (Σ log σ_j for standardized data), so NLLs are in the data's units.
  Validation(Flow<T>& flow, Array<T> rows, double nll_offset, const ValidationConfig& cfg, int threads = 1);

  bool due(std::int64_t step) const { return cfg_.every > 0 && step % cfg_.every == 0; }
  struct Outcome {
    double nll = 0;         ///< mean NLL of the validation rows now
    bool improved = false;  ///< a new best: the parameters were copied
    bool stop = false;      ///< patience exhausted
  };
  /// Evaluates the flow's current parameters after `step` steps.
  Outcome evaluate(std::int64_t step);
  /// Mean NLL of the validation rows under the flow's current parameters.
  double nll() const;

  double best_nll() const { return best_nll_; }
  std::int64_t best_step() const { return best_step_; }  ///< −1 before the first evaluation
  std::int64_t evaluations_since_best() const { return since_best_; }
  bool has_best() const { return best_step_ >= 0; }
  /// Copies the best parameters into the flow (nothing if none was evaluated).
  void use_best();
  const ValidationConfig& config() const { return cfg_; }
  /// The tapes the evaluations run on, for other passes between them (the OT probe of
  /// `trflow train`), so that a run holds one inference tape per lane, not two.
  Inference<T>& inference() { return inference_; }
  std::size_t rows() const { return rows_.shape()[0]; }

  /// For checkpoints: the best parameters by name, and {best_nll, best_step, since_best}.
  const std::vector<std::pair<std::string, Array<T>>>& best_parameters() const { return best_; }
  std::vector<std::pair<std::string, Array<T>>>& best_parameters() { return best_; }
  nlohmann::json state() const;
  void set_state(const nlohmann::json& state);

 private:
  Flow<T>& flow_;
  mutable Inference<T> inference_;  // kept: an evaluation reuses its tapes
  Array<T> rows_;
  double offset_;
  ValidationConfig cfg_;
  std::vector<std::pair<std::string, Array<T>>> best_;
  double best_nll_ = std::numeric_limits<double>::infinity();
  std::int64_t best_step_ = -1, since_best_ = 0;
};

extern template class Validation<float>;
extern template class Validation<double>;

}  // namespace flows
