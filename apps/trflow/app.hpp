#pragma once
// The trflow command-line app: options of each subcommand and the functions
// that run them. main.cpp only parses the command line.
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "flows/distributed.hpp"

namespace trflow {

/// A bad flag value or a conflict between flags: exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// Bad data, a bad or missing model file, a dimension mismatch: exit code 1.
struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TrainOptions {
  std::string data = "8gaussians";
  std::string preset = "none";  ///< "ot": the recipe that reaches the optimal-transport map (apply_preset)
  // Defaults chosen by measured fit per second (README, "Choosing the defaults").
  std::size_t layers = 4;
  std::string structure = "layers";
  std::string coupling = "rqs";
  std::string conditioner = "mlp";
  int bins = 8;
  double tail_bound = 0.0;  ///< 0: chosen from the data (see auto_tail_bound)
  std::size_t hidden = 64;
  std::size_t depth = 2;
  std::string activation = "tanh";
  std::size_t batch = 512;
  std::int64_t steps = 10000;
  double lr = 2e-3;
  std::string lr_schedule = "cosine";
  std::int64_t warmup = 100;
  std::uint64_t seed = 0;
  double kl_weight = 1.0;
  double transport_weight = 0.01;
  std::string transport_dir = "gen";
  std::string transport_schedule = "constant";
  double transport_floor = 0.0;
  std::string permutation = "random";
  bool actnorm = false;
  bool lu = false;
  bool additive = false;  ///< the older spelling of coupling = "additive"
  double scale_clamp = 0.0;
  std::string base = "standard_normal";
  bool standardize = false;
  double val_fraction = 0.1;     ///< of a data file's rows held out (0: no validation)
  std::string val;               ///< a validation file instead of held-out rows
  std::int64_t eval_every = -1;  ///< steps between validation NLLs; −1: 100, or for a data file about 2 epochs (10 to 100)
  std::int64_t patience = -1;    ///< evaluations without improvement before stopping; −1: 20 for files, 0 (off) else
  double weight_decay = 0.0;     ///< decoupled (AdamW) weight decay
  double dropout = -1.0;         ///< dropout rate in the conditioners while training; −1: 0.2 for data files, else 0
  std::string init;              ///< "identity", or "gaussian": a last LU + ActNorm layer starts as the fitted Gaussian ("": identity)
  std::string loss = "nll";      ///< "nll", or "jeffreys": plus the reverse KL (a target whose density is a Gaussian mixture)
  std::string problem;           ///< trflow mfg: "crowd" or "gmm" (empty: plain training)
  std::size_t dim = 2;           ///< trflow mfg: the dimension D
  double cost_weight = 1.0;      ///< trflow mfg: λ_F, the running cost's weight
  bool drop_nonfinite = false;
  double clip_norm = 0.0;
  bool skip_nonfinite = false;
  int threads = 1;
  std::string out = "runs/default";
  bool resume = false;
  bool force = false;  ///< replace the run already in --out (its files are removed first)
  std::string config;  ///< --config: rerun the settings of a saved config.json (explicit flags override)
  bool from_config = false;  ///< set when the settings came from --config (a preset is not applied again)
  std::int64_t log_every = 50;
  std::int64_t checkpoint_every = 500;
  std::size_t eval_n = 20000;
  bool plots = true;
  bool quiet = false;
  bool print_result = true;  ///< the final JSON line on stdout (compare turns it off)
  /// Flags given explicitly (for --resume conflict checks).
  std::vector<std::string> explicit_flags;
};

struct EvalOptions {
  std::string model;
  std::string data;  ///< empty: the data the model was trained on
  std::size_t n = 20000;
  std::uint64_t seed = 12345;
  int threads = 1;
};

struct SampleOptions {
  std::string model;
  std::size_t n = 1000;
  std::string out;
  std::string trajectories;
  std::uint64_t seed = 7;
  int threads = 1;
};

struct PlotOptions {
  std::string model;
  std::string out;   ///< default: the model's directory
  std::string data;  ///< default: the training data
  std::size_t n = 4000;
  std::uint64_t seed = 3;
  int threads = 1;
};

struct CompareOptions {
  TrainOptions train;  ///< shared settings (a preset resolved once); β = 0 in the unregularized arm
  std::string out = "runs/compare";
};

/// Fills in the settings of o.preset that were not given explicitly (o.explicit_flags).
/// "ot" (docs/ot.md): steps of an LU layer and two complementary spline couplings, 6 of them;
/// β decaying from 0.1 to 0 by a cosine over the run (continuation: the transport cost picks
/// the map early, the density is exact at the end); 20 000 steps.
void apply_preset(TrainOptions& o);

int run_train(const TrainOptions& o);
/// trflow mfg: a mean-field-game problem (flows/mfg.hpp) trained like `train`: its target as
/// the data, its P0 as the flow's fixed base, and its defaults where no flag was given.
int run_mfg(const TrainOptions& o);
int run_eval(const EvalOptions& o);
int run_sample(const SampleOptions& o);
int run_plot(const PlotOptions& o);
int run_compare(const CompareOptions& o);

/// trflow splits rows across its own threads (flows/parallel.hpp), so BLAS runs
/// single-threaded inside each of them.
void set_threads(int n);
/// "trflow 0.1.0 (xsimd avx512bw: 16 float lanes, …)"
/// The ranks this process trains with (mpirun), or nullptr for one process; set once by main.
flows::Communicator* world();
void set_world(flows::Communicator* comm);
std::string version_text();

}  // namespace trflow
