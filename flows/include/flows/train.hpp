#pragma once
// The training loop: sample a data batch and a base batch, build
// λ·NLL + β(t)·T on the tape one pass at a time (the base samples' pass, backward,
// then the data's, backward), clip, Adam. One Trainer holds every piece of state a
// resumed run needs (parameters live in the flow).
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>
#include <stdexcept>
#include <string>

#include "flows/datasets.hpp"
#include "flows/distributed.hpp"
#include "flows/flow.hpp"
#include "flows/mfg.hpp"
#include "flows/parallel.hpp"
#include "nn/optim.hpp"

namespace flows {

/// β as a function of the step t over a run of `steps` steps, then held at the floor: constant;
/// linear or cosine from start to floor; or exponential (geometric), start·(floor/start)^(t/steps),
/// which spends as many steps in each decade of β (floor > 0).
struct BetaSchedule {
  enum class Kind { constant, linear, cosine, exponential } kind = Kind::constant;
  static constexpr ad::NameTable<Kind, 4> kNames{{{Kind::constant, "constant"},
                                                  {Kind::linear, "linear"},
                                                  {Kind::cosine, "cosine"},
                                                  {Kind::exponential, "exponential"}}};
  double start = 0.0;
  double floor = 0.0;
  std::int64_t steps = 0;

  double at(std::int64_t t) const;
  static Kind kind_from_name(const std::string& name);
  static const char* kind_name(Kind k);
};

struct TrainConfig {
  std::size_t batch = 512;
  std::int64_t steps = 4000;
  double lr = 1e-3;
  nn::LrSchedule::Kind lr_schedule = nn::LrSchedule::Kind::constant;
  std::int64_t warmup = 0;
  double lr_min = 0.0;
  double weight_decay = 0.0;
  double kl_weight = 1.0;         ///< λ
  BetaSchedule beta;              ///< β(t)
  Direction direction = Direction::gen;
  /// Mean-field games (mfg.hpp): ρ, the reverse KL's weight (ρ = λ: the Jeffreys divergence,
  /// the target being the training data set, whose density must be a Gaussian mixture), and
  /// λ_F, the running cost's weight, with its problem (obstacle, populations).
  double reverse_kl = 0.0;
  double running = 0.0;
  const MfgProblem* problem = nullptr;
  double clip_norm = 0.0;         ///< > 0: clip the global gradient norm
  bool skip_nonfinite = false;    ///< skip a batch whose loss or gradient is not finite, instead of stopping
  std::uint64_t seed = 0;         ///< for the batches (the flow's weights have their own seed)
  int threads = 1;                ///< threads that split each batch's rows (flows/parallel.hpp)
  /// Several processes (distributed.hpp): this rank's share of each batch is its block of
  /// rows, split again across its threads; nullptr: one process.
  Communicator* comm = nullptr;
  /// A signal number set asynchronously (SIGINT, SIGTERM) that asks the run to stop. Each
  /// step reports it in StepReport::signal; with several ranks, agreed across all of them
  /// (the same step on every rank), so they stop and save together.
  const std::atomic<int>* interrupt = nullptr;
};

/// What one step measured (transport and map_cost are NaN when not measured).
struct StepReport {
  std::int64_t step = 0;          ///< 1-based index of the step just taken
  double loss = 0, nll = 0, transport = 0, map_cost = 0, grad_norm = 0, lr = 0, beta = 0;
  double reverse_kl = 0, running = 0;  ///< NaN when their weight is 0
  bool skipped = false;
  int signal = 0;  ///< *cfg.interrupt when the step ended (any rank's, the largest)
};

/// A non-finite loss term or gradient stopped training.
struct DivergenceError : std::runtime_error {
  DivergenceError(std::int64_t step, std::string term, const std::string& message)
      : std::runtime_error(message), step(step), term(std::move(term)) {}
  std::int64_t step;
  std::string term;  ///< "NLL", "transport" or "gradient"
};

template <class T>
class Trainer {
 public:
  /// Initializes data-dependent layers (ActNorm) from a first batch if needed.
  Trainer(Flow<T>& flow, Dataset& data, const TrainConfig& cfg);

  /// One optimization step. measure_transport: compute T and the map cost even when β = 0.
  /// Throws DivergenceError on a non-finite term unless cfg.skip_nonfinite.
  StepReport step(bool measure_transport = true);

  std::int64_t steps_done() const { return optimizer_.steps() + skipped_; }
  std::int64_t skipped() const { return skipped_; }
  void set_skipped(std::int64_t n) { skipped_ = n; }
  nn::Adam<T>& optimizer() { return optimizer_; }
  /// Gives the lanes' tapes' memory back (Tape::release), e.g. before a large evaluation once
  /// training is done; a later step records afresh (and allocates).
  void release_tapes() {
    for (auto& lane : lanes_) lane->tape.release();
  }
  ad::Rng& rng() { return rng_; }
  const TrainConfig& config() const { return cfg_; }
  /// The rate of step t: the schedule's, times the scale (1 unless a plateau lowered it).
  double lr_at(std::int64_t t) const { return lr_schedule_.at(t) * lr_scale_; }
  double lr_scale() const { return lr_scale_; }
  void set_lr_scale(double s) { lr_scale_ = s; }
  /// Threads that share each batch (cfg.threads, fewer for a small batch).
  int threads() const { return team_.lanes(); }
  /// Seconds spent in the last step's allreduce (0 in one process).
  double allreduce_seconds() const { return allreduce_seconds_; }

 private:
  /// Several ranks: sums the gradients and r's values over all of them (one MPI_Allreduce)
  /// and returns the term that became non-finite on any rank (nullptr if none).
  const char* allreduce(StepReport& r, const char* bad);
  struct Lane;
  /// Adds the lanes' gradient buffers to Parameter::grad: the elements of part `part` of
  /// `parts` (nn::for_each_span), every lane in order.
  void add_lane_grads(int part, int parts);

  Flow<T>& flow_;
  Dataset& data_;
  TrainConfig cfg_;
  nn::LrSchedule lr_schedule_;
  nn::Adam<T> optimizer_;
  ad::Rng rng_;
  /// The values of a step's terms on one lane (those not computed stay 0).
  struct Terms {
    T nll = 0, transport = 0, map_cost = 0, reverse_kl = 0, running = 0;
  };
  /// One lane per thread: its own tape, rows and results.
  struct Lane {
    std::size_t first = 0, rows = 0;  // its rows of every batch
    Array<T> seed = Array<T>::from_shape({1, 1});  // n_k / n, its share of the batch mean
    Tape<T> tape;
    Terms terms;
    const char* bad = nullptr;  // the term that became non-finite
    /// A lane after the batch's first row (first > 0): its own gradient, one array per
    /// parameter (in optimizer_.params() order), into which its tape accumulates both passes
    /// (Tape::set_param_grad_buffers), added to Parameter::grad once every lane has finished
    /// (add_lane_grads). Empty for the first.
    std::vector<Array<T>> grads;
  };
  /// Clears the lane's tape and records the pass w.pass of the objective on its rows, keeps
  /// its terms' values in lane.terms, and (if `backward` and every term so far is finite)
  /// backpropagates it, into the lane's grads when it has them. Returns whether the terms
  /// so far are finite.
  bool run_pass(Lane& lane, const ObjectiveWeights& w, bool backward);
  /// A step's batch of data into data_batch_: drawn, then (a data set with blocks to finish,
  /// Dataset::finish_block) the blocks holding this rank's rows finished and converted by the
  /// lanes, a share each; the other rows are not read.
  void draw_data_batch();
  ThreadTeam team_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  ad::ParamIndex<T> param_index_;  ///< each parameter's place in a lane's grads (the lanes' tapes point at it)
  /// Dropout calls in the data pass (counted once, in the constructor): the base pass numbers
  /// its calls after them, as when both passes were on one tape.
  std::uint32_t data_dropout_calls_ = 0;
  Array<T> data_batch_, base_batch_;
  std::vector<double> buffer_;
  /// Several ranks: every parameter's gradient, then kScalars step values, summed in one call.
  std::vector<T> reduce_;
  double allreduce_seconds_ = 0;
  std::int64_t skipped_ = 0;
  double lr_scale_ = 1.0;
};

/// Draws n rows of the dataset as T (into out, reusing its memory; the float64 draws stay in
/// buffer); with log_prob, also their log-densities (Dataset::sample_with_log_prob, n values).
template <class T>
void sample_batch(Dataset& data, std::size_t n, ad::Rng& rng, std::vector<double>& buffer, Array<T>& out,
                  double* log_prob = nullptr);

extern template class Trainer<float>;
extern template class Trainer<double>;

}  // namespace flows
