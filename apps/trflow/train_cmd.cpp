// trflow train: the training loop with logging, checkpoints, resume and Ctrl-C.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "app.hpp"
#include "run_dir.hpp"
#include "figures.hpp"
#include "flows/checkpoint.hpp"
#include "flows/inference.hpp"
#include "flows/metrics.hpp"
#include "flows/mfg.hpp"
#include "flows/validation.hpp"
#include "model_dir.hpp"
#include "nn/io.hpp"
#include "progress.hpp"

namespace fs = std::filesystem;

namespace trflow {
namespace {

std::atomic<int> g_interrupted{0};  // the signal that asked the run to stop (SIGINT or SIGTERM), 0 for none
constexpr std::int64_t kPlateau = 5;  // --lr-schedule plateau: evaluations without improvement per halving
// --skip-nonfinite: stop once more than kSkipLimit of the batches were skipped, from step kSkipCheckFrom on.
constexpr double kSkipLimit = 0.5;
constexpr std::int64_t kSkipCheckFrom = 20;
extern "C" void on_stop_signal(int sig) { g_interrupted.store(sig); }

bool given(const TrainOptions& o, const std::string& flag) {
  return std::find(o.explicit_flags.begin(), o.explicit_flags.end(), flag) != o.explicit_flags.end();
}

/// field = value unless `flag` was given on the command line (a preset's or a subcommand's default).
template <class F, class V>
void default_to(const TrainOptions& o, const char* flag, F& field, V value) {
  if (!given(o, flag)) field = value;
}

void validate(const TrainOptions& o) {
  if (o.transport_schedule != "constant" && o.transport_weight == 0.0)
    throw UsageError(fmt::format("--transport-schedule {} decays β from --transport-weight, which is 0", o.transport_schedule));
  if (o.transport_schedule != "constant" && o.transport_floor > o.transport_weight)
    throw UsageError(fmt::format("--transport-floor {} exceeds --transport-weight {}: a decaying schedule needs floor ≤ start",
                                 o.transport_floor, o.transport_weight));
  if (o.transport_schedule == "exponential" && !(o.transport_floor > 0))
    throw UsageError("--transport-schedule exponential needs a positive --transport-floor (β decays geometrically to it)");
  if (o.transport_schedule == "constant" && given(o, "--transport-floor") && o.transport_floor != 0.0)
    throw UsageError("--transport-floor needs a decaying --transport-schedule (linear or cosine)");
  if (o.kl_weight == 0.0 && o.transport_weight == 0.0)
    throw UsageError("--kl-weight and --transport-weight are both 0: there is nothing to minimize");
  if (o.warmup >= o.steps) throw UsageError(fmt::format("--warmup {} must be shorter than --steps {}", o.warmup, o.steps));
  if (o.additive && given(o, "--coupling") && o.coupling != "additive")
    throw UsageError(fmt::format("--additive conflicts with --coupling {}", o.coupling));
  const std::string coupling = o.additive ? "additive" : o.coupling;
  if (coupling != "affine" && o.scale_clamp > 0)
    throw UsageError(fmt::format("--scale-clamp applies to affine couplings only (the couplings are {})", coupling));
  if (coupling != "rqs" && given(o, "--bins")) throw UsageError("--bins needs --coupling rqs");
  if (coupling != "rqs" && given(o, "--tail-bound")) throw UsageError("--tail-bound needs --coupling rqs");
}

}  // namespace

void apply_preset(TrainOptions& o) {
  if (o.preset == "none") return;
  if (o.preset != "ot") throw UsageError(fmt::format("--preset: expected none or ot, got '{}'", o.preset));
  auto set = [&](const char* flag, auto& field, auto value) { default_to(o, flag, field, value); };
  set("--structure", o.structure, std::string("steps"));
  set("--layers", o.layers, std::size_t(6));
  set("--transport-weight", o.transport_weight, 0.1);
  set("--transport-schedule", o.transport_schedule, std::string("cosine"));
  set("--transport-floor", o.transport_floor, 0.0);
  set("--transport-dir", o.transport_dir, std::string("gen"));
  set("--steps", o.steps, std::int64_t(20000));
}

namespace {

flows::TrainConfig train_config(const TrainOptions& o) {
  flows::TrainConfig c;
  c.batch = o.batch;
  c.threads = o.threads;
  c.steps = o.steps;
  c.lr = o.lr;
  c.lr_schedule = nn::LrSchedule::kind_from_name(o.lr_schedule);
  c.warmup = o.warmup;
  c.kl_weight = o.kl_weight;
  c.beta.kind = flows::BetaSchedule::kind_from_name(o.transport_schedule);
  c.beta.start = o.transport_weight;
  c.beta.floor = o.transport_floor;
  c.beta.steps = o.steps;
  c.direction = flows::direction_from_name(o.transport_dir);
  c.clip_norm = o.clip_norm;
  c.skip_nonfinite = o.skip_nonfinite;
  c.weight_decay = o.weight_decay;
  c.seed = o.seed;
  return c;
}

/// Every option a run saves (config.json, the model's and checkpoint's "meta.train"), by key:
/// the one list that writing, `--config` and `--resume` all read. f(key, field) per option.
template <class Options, class F>
void for_each_saved_option(Options& o, F&& f) {
  f("data", o.data);
  f("preset", o.preset);
  f("layers", o.layers);
  f("structure", o.structure);
  f("coupling", o.coupling);
  f("conditioner", o.conditioner);
  f("bins", o.bins);
  f("tail_bound", o.tail_bound);
  f("hidden", o.hidden);
  f("depth", o.depth);
  f("activation", o.activation);
  f("batch", o.batch);
  f("steps", o.steps);
  f("lr", o.lr);
  f("lr_schedule", o.lr_schedule);
  f("warmup", o.warmup);
  f("seed", o.seed);
  f("kl_weight", o.kl_weight);
  f("transport_weight", o.transport_weight);
  f("transport_dir", o.transport_dir);
  f("transport_schedule", o.transport_schedule);
  f("transport_floor", o.transport_floor);
  f("permutation", o.permutation);
  f("actnorm", o.actnorm);
  f("lu", o.lu);
  f("additive", o.additive);
  f("scale_clamp", o.scale_clamp);
  f("base", o.base);
  f("standardize", o.standardize);
  f("val_fraction", o.val_fraction);
  f("val", o.val);
  f("eval_every", o.eval_every);
  f("patience", o.patience);
  f("weight_decay", o.weight_decay);
  f("dropout", o.dropout);
  f("init", o.init);
  f("loss", o.loss);
  f("problem", o.problem);
  f("cost_weight", o.cost_weight);
  f("drop_nonfinite", o.drop_nonfinite);
  f("clip_norm", o.clip_norm);
  f("skip_nonfinite", o.skip_nonfinite);
  f("threads", o.threads);
  f("log_every", o.log_every);
  f("checkpoint_every", o.checkpoint_every);
  f("eval_n", o.eval_n);
}

/// The flag that sets an option: "tail_bound" → "--tail-bound".
std::string flag_of(const std::string& key) {
  std::string flag = "--" + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

nlohmann::json options_json(const TrainOptions& o) {
  nlohmann::json j = nlohmann::json::object();
  for_each_saved_option(o, [&](const char* key, const auto& field) { j[key] = field; });
  // --additive is the older spelling of --coupling additive: both keys say the same.
  j["coupling"] = o.additive ? std::string("additive") : o.coupling;
  j["additive"] = o.additive || o.coupling == "additive";
  return j;
}

/// --config FILE: the settings a run saved in its config.json (resolved: a preset's values,
/// the tail bound, the validation cadence), each replaced by the flag when it was given.
TrainOptions options_from_config(const nlohmann::json& j, const TrainOptions& cli, const std::string& file) {
  TrainOptions o = cli;
  for_each_saved_option(o, [&](const char* key, auto& field) {
    if (!j.contains(key) || given(cli, flag_of(key))) return;
    try {
      field = j.at(key).get<std::decay_t<decltype(field)>>();
    } catch (const nlohmann::json::exception&) {
      throw DataError(fmt::format("{}: '{}' has the wrong type ({})", file, key, j.at(key).dump().substr(0, 40)));
    }
  });
  if (o.coupling == "additive") o.additive = false;  // "additive" in the file mirrors the coupling
  o.from_config = true;
  return o;
}

/// The options a resumed run takes from its checkpoint; --steps and the
/// logging/threads/output flags may change, the rest must match.
TrainOptions options_from_json(const nlohmann::json& j, const TrainOptions& cli) {
  TrainOptions o = cli;
  // Kept from the command line: on how many threads, how often to log and save, and how many
  // samples the final evaluation draws (--steps too, when given).
  static const std::vector<std::string> kept = {"threads", "log_every", "checkpoint_every", "eval_n"};
  // Keys that checkpoints written before them lack, each with the value such a run had: spline
  // couplings, validation, dropout, the Gaussian start, the Jeffreys loss and mean-field games
  // came later; the runs before them were affine/additive layer stacks without validation. (A
  // missing "coupling" follows the old "additive" key, which every checkpoint has.)
  static const nlohmann::json legacy = {
      {"preset", "none"}, {"structure", "layers"}, {"conditioner", "mlp"}, {"bins", 8},
      {"tail_bound", 0.0}, {"val_fraction", 0.0}, {"val", ""},          {"eval_every", 100},
      {"patience", 0},    {"weight_decay", 0.0},  {"dropout", 0.0},      {"init", "identity"},
      {"loss", "nll"},    {"problem", ""},        {"cost_weight", 1.0}};
  const auto listed = [](const std::vector<std::string>& keys, const std::string& k) {
    return std::find(keys.begin(), keys.end(), k) != keys.end();
  };
  for_each_saved_option(o, [&](const char* key, auto& field) {
    if (listed(kept, key) || (std::string(key) == "steps" && given(cli, "--steps"))) return;
    const nlohmann::json value = j.contains(key)                  ? j.at(key)
                                 : std::string(key) == "coupling" ? nlohmann::json(j.at("additive").get<bool>() ? "additive" : "affine")
                                 : legacy.contains(key)           ? legacy.at(key)
                                                                  : j.at(key);  // a key every checkpoint has: missing is an error
    field = value.get<std::decay_t<decltype(field)>>();
  });
  // Flags that would change the run must agree with the checkpoint.
  const nlohmann::json now = options_json(cli);
  for (const std::string& flag : cli.explicit_flags) {
    std::string key = flag.substr(2);
    std::replace(key.begin(), key.end(), '-', '_');
    static const std::vector<std::string> unsaved = {"steps", "out", "resume", "no_plots", "quiet"};
    if (listed(kept, key) || listed(unsaved, key) || !j.contains(key)) continue;
    if (now.at(key) != j.at(key))
      throw UsageError(fmt::format("--resume: {} {} conflicts with the checkpoint's {}; drop the flag or start a new --out",
                                   flag, now.at(key).dump(), j.at(key).dump()));
  }
  return o;
}

std::unique_ptr<flows::Flow<float>> build_flow(const TrainOptions& o, std::size_t dim) {
  flows::FlowSpec spec;
  spec.layers = o.layers;
  spec.coupling.hidden = o.hidden;
  spec.coupling.depth = o.depth;
  spec.coupling.activation = ad::activation_from_name(o.activation);
  spec.coupling.scale_clamp = o.scale_clamp;
  spec.structure = flows::structure_from_name(o.structure);
  spec.coupling.kind = flows::coupling_kind_from_name(o.additive ? "additive" : o.coupling);
  spec.coupling.conditioner = flows::conditioner_from_name(o.conditioner);
  spec.coupling.bins = o.bins;
  spec.coupling.tail_bound = o.tail_bound;
  spec.coupling.dropout = o.dropout;
  spec.gaussian_init = o.init == "gaussian";
  spec.permutation = flows::permutation_from_name(o.permutation);
  spec.actnorm = o.actnorm;
  spec.lu = o.lu;
  spec.base = o.base;
  if (!o.problem.empty()) {  // a mean-field game starts from its P0
    const flows::MfgProblem p = flows::mfg_problem(o.problem, dim);
    spec.base = "fixed_gaussian";
    spec.base_mean = p.p0_mean;
    spec.base_log_std.assign(dim, 0.5 * std::log(p.p0_var));
    spec.time_per_step = true;  // the paper's time points: the states between whole steps
    spec.populations = p.populations;  // one flow per group
  }
  spec.seed = o.seed;
  return flows::make_flow<float>(dim, spec);
}

/// Keeps the lines of metrics.jsonl up to `step` (a resumed run re-logs the rest).
void truncate_metrics(const fs::path& path, std::int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).at("step").get<std::int64_t>() <= step) kept += line + "\n";
    } catch (const std::exception&) {  // a torn last line from a killed run
    }
  }
  nn::write_file_atomic(path.string(), kept);
}

/// What a training run allocates, from its options, in bytes:
/// - params: the parameters with their gradient, Adam's two moments and the gradient of each
///   lane after the first (3 + threads copies), the checkpoint's encoded value and moments (3), and with validation
///   its best copy and that copy in the checkpoint (2); plus the program with its libraries
///   (16 MiB) and each further lane's OpenBLAS buffers and workspace (48 MiB; measured 38–58);
/// - batch: one pass's tape at a time (the trainer clears it between its two passes); over the
///   lanes together the batch's rows, each holding per coupling the conditioner's output and its
///   adjoint (2·out), its hidden layers' values, adjoints and scratch (3·depth·h, twice for a
///   resnet) and the states' elementwise nodes (d for a spline coupling, whose op is one node;
///   10·d for an affine one, whose scale, exp, product and sum are nodes of their own). Per row
///   measured: spline 94 / 368 KB at D = 256 / 1024 (counted 104 / 399), affine 50 / 194 KB
///   (counted 55 / 203);
/// - validation: its rows (float64 as read, and the float copy it keeps), one inference tape per
///   lane (Inference::kEvalChunk rows, at most kTapeBudget unless kMinChunk rows need more),
///   and the transport probe's base rows and pushes;
/// - eval: the final evaluation's rows (--eval-n draws, or all the rows of a data file) as
///   float32, with first their float64 originals and later (these freed) the --eval-n base draws
///   and their pushes (float32), one inference tape per lane and three float64 chunks of
///   flows::kProductChunk rows for the data set's own products (log p, T*); after the
///   training's tapes are released (so the larger of batch and eval counts);
/// - data: what the data set holds (Dataset::memory_bytes: a file's rows, gaussian:D's Q,
///   Σ^{1/2}, L and L⁻¹), which exists before the check.
/// Against peak RSS (gaussian:256 and :1024, batch 256 … 1024, 1 and 2 threads, with and
/// without validation): 0.77–1.16 × the measured value with spline couplings (0.89 × for a
/// default run at D = 1024), measured before the data and eval chunks were counted; 1.16 × for
/// a data file of 300 000 × 64 float64 rows (default run, one thread: 395 MB measured), whose
/// rows and final evaluation over all of them were not counted before (0.50 ×).
struct MemoryEstimate {
  double params = 0, batch = 0, validation = 0, eval = 0, data = 0;  ///< bytes
  /// The final evaluation runs after the training's tapes have given their memory back.
  double total() const { return params + std::max(batch, eval) + validation + data; }
};

MemoryEstimate estimate_memory(const TrainOptions& o, const flows::Dataset& data, std::size_t val_rows) {
  const std::size_t data_rows = data.row_count();  // 0 for a generator
  const double d = double(data.dim()), h = double(o.hidden), depth = double(o.depth), bins = double(o.bins);
  const double couplings = double(o.layers) * (o.structure == "steps" ? 2.0 : 1.0);
  const double a = std::ceil(d / 2), b = std::max(1.0, d - a);
  const bool spline = o.coupling == "rqs" && !o.additive;
  const double per_coord = spline ? 3 * bins - 1 : o.coupling == "additive" || o.additive ? 1 : 2;
  const double out = per_coord * a;
  const bool resnet = o.conditioner == "resnet";
  const double net = resnet ? b * h + h + depth * 2 * (h * h + h) + h * out + out
                            : b * h + h + (depth - 1) * (h * h + h) + h * out + out;
  const double lu = o.structure == "steps" || o.lu ? double(o.layers) * (2 * d * d + d) : 0.0;
  const double params = couplings * net + lu;
  const double row_floats = couplings * (2 * out + 3 * depth * h * (resnet ? 2 : 1) + (spline ? 1 : 10) * d);
  MemoryEstimate e;
  constexpr double MiB = 1048576.0;
  e.params = 4.0 * params * (3.0 + double(o.threads) + 3.0 + (val_rows > 0 ? 2.0 : 0.0)) + 16 * MiB +
             48 * MiB * double(o.threads - 1);
  e.batch = 4.0 * double(o.batch) * row_floats;
  // One inference tape per lane: values only, about half a training row's floats per row, for
  // a chunk of kEvalChunk rows, or fewer where those pass kTapeBudget (never below kMinChunk).
  using Inference = flows::Inference<float>;
  const double tape_row = 4.0 * 0.5 * row_floats;
  const double tapes = double(o.threads) * std::min(double(Inference::kEvalChunk) * tape_row,
                                                    std::max(double(Inference::kTapeBudget),
                                                             double(Inference::kMinChunk) * tape_row));
  if (val_rows > 0) e.validation = double(val_rows) * d * (8.0 + 4.0) + tapes + 2000.0 * d * 8.0;
  const double eval_rows = double(data_rows > 0 ? data_rows : o.eval_n), draws = double(o.eval_n);
  // The rows' float copy throughout; their float64 rows until copied, then the base draws with
  // their pushes, the inference tapes and the data set's float64 chunks.
  e.eval = eval_rows * d * 4.0 +
           std::max(eval_rows * d * 8.0, draws * d * 8.0 + tapes + 3.0 * double(flows::kProductChunk) * d * 8.0);
  e.data = double(data.memory_bytes());
  return e;
}

/// Refuses, before the flow is built, a configuration whose training run needs more than 80 %
/// of the machine's memory (estimate_memory). The flag named is the one whose default value
/// would save the most.
void check_memory(const TrainOptions& o, const flows::Dataset& data, std::size_t val_rows) {
  const MemoryEstimate e = estimate_memory(o, data, val_rows);
  const double have = physical_memory_bytes();
  if (!(have > 0 && e.total() > 0.8 * have)) return;
  const TrainOptions defaults;
  const char* culprit = "--batch";
  double best = -1;
  auto consider = [&](const char* flag, auto TrainOptions::*field) {
    TrainOptions t = o;
    t.*field = std::min(t.*field, defaults.*field);
    const double saved = e.total() - estimate_memory(t, data, val_rows).total();
    if (saved > best) best = saved, culprit = flag;
  };
  consider("--batch", &TrainOptions::batch);
  consider("--hidden", &TrainOptions::hidden);
  consider("--depth", &TrainOptions::depth);
  consider("--layers", &TrainOptions::layers);
  consider("--eval-n", &TrainOptions::eval_n);
  constexpr double GiB = 1073741824.0;
  throw UsageError(fmt::format("{}: this configuration needs about {:.3g} GiB ({:.3g} GiB of parameters and optimizer "
                               "state, {:.3g} GiB for a batch of {} rows, {:.3g} GiB for validation, {:.3g} GiB "
                               "for the final evaluation, {:.3g} GiB held by the data {}), more than 80 % of this "
                               "machine's {:.3g} GiB; lower --batch, --hidden, --depth, --layers or --eval-n",
                               culprit, e.total() / GiB, e.params / GiB, e.batch / GiB, o.batch, e.validation / GiB,
                               e.eval / GiB, e.data / GiB, data.name(), have / GiB));
}

nlohmann::json step_json(const flows::StepReport& r, double elapsed) {
  nlohmann::json j = {{"step", r.step}, {"loss", r.loss}, {"nll", r.nll}, {"grad_norm", r.grad_norm},
                      {"lr", r.lr},     {"beta", r.beta}, {"seconds", elapsed}};
  j["transport"] = std::isfinite(r.transport) ? nlohmann::json(r.transport) : nlohmann::json();
  j["map_cost"] = std::isfinite(r.map_cost) ? nlohmann::json(r.map_cost) : nlohmann::json();
  if (std::isfinite(r.reverse_kl)) j["reverse_kl"] = r.reverse_kl;
  if (std::isfinite(r.running)) j["running_cost"] = r.running;
  if (r.skipped) j["skipped"] = true;
  return j;
}

}  // namespace

int run_mfg(const TrainOptions& cli) {
  TrainOptions o = cli;
  const flows::MfgProblem problem = [&] {
    try {
      // (the drones problems have their own dimension; --dim, when given, must match it)
      const flows::MfgProblemKind* kind = flows::find_mfg_problem(o.problem);
      const bool own_dim = kind && kind->own_dim != 0 && !given(o, "--dim");
      return flows::mfg_problem(o.problem, own_dim ? 0 : o.dim);
    } catch (const std::invalid_argument& e) {
      throw UsageError(fmt::format("--problem {} --dim {}: {}", o.problem, o.dim, e.what()));
    }
  }();
  if (given(o, "--data")) throw UsageError("mfg: --data is set by --problem (its target P1)");
  if (given(o, "--base")) throw UsageError("mfg: the flow's base is the problem's P0; --base does not apply");
  if (given(o, "--standardize")) throw UsageError("mfg: --standardize does not apply (the costs live in the data's units)");
  if (given(o, "--cost-weight") && !problem.has_running_cost())
    throw UsageError(fmt::format("--cost-weight: the {} problem has no running cost", o.problem));
  o.data = problem.target;
  o.dim = problem.dim;
  const bool groups = problem.populations > 1;
  if (groups && (given(o, "--lu") || given(o, "--init") || (given(o, "--structure") && o.structure != "steps")))
    throw UsageError(fmt::format("mfg --problem {}: one flow per group takes structure steps, without --lu or --init",
                                 o.problem));
  // The paper's structure and terminal term, unless given (docs/mfg.md).
  auto set = [&](const char* flag, auto& field, auto value) { default_to(o, flag, field, value); };
  set("--structure", o.structure, std::string("steps"));
  set("--layers", o.layers, std::size_t(4));
  // λ_L decays from 0.1 to 0.01 by a cosine: the kinetic energy picks the straight paths early,
  // and its bias on where the population ends is small at the end (docs/mfg.md).
  set("--transport-weight", o.transport_weight, 0.1);
  if (!given(o, "--transport-schedule")) {
    o.transport_schedule = "cosine";
    set("--transport-floor", o.transport_floor, std::min(0.01, o.transport_weight));
  }
  set("--loss", o.loss, std::string("jeffreys"));
  set("--steps", o.steps, std::int64_t(5000));
  // λ_F: moderate avoidance (docs/mfg.md shows weak, moderate and strong).
  set("--cost-weight", o.cost_weight, groups ? 1.0 : 0.5);
  if (!problem.has_running_cost()) o.cost_weight = 0.0;
  return run_train(o);
}

int run_train(const TrainOptions& cli_options) {
  // Under mpirun every rank trains (its block of each batch's rows); rank 0 alone writes files
  // and prints (docs/scaling.md).
  flows::Communicator* const comm = world();
  const bool writer = !comm || comm->rank() == 0;
  TrainOptions cli = cli_options;
  if (!writer) cli.quiet = true, cli.print_result = false;
  if (cli.out.empty()) throw UsageError("--out: expected a directory, got an empty path");
  const fs::path out = cli.out;
  const fs::path checkpoint = out / "checkpoint.npz";
  TrainOptions o = cli;
  if (!cli.config.empty()) {
    if (cli.resume) throw UsageError("--config and --resume: a resumed run takes its settings from its checkpoint");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(nn::read_file(cli.config));
    } catch (const nlohmann::json::exception& e) {
      throw DataError(fmt::format("--config {}: not a JSON object ({})", cli.config, e.what()));
    } catch (const std::runtime_error& e) {
      throw DataError(fmt::format("--config: {}", e.what()));
    }
    if (!j.is_object()) throw DataError(fmt::format("--config {}: expected a JSON object (a run's config.json)", cli.config));
    o = options_from_config(j, cli, cli.config);
  }
  if (!o.from_config) apply_preset(o);  // a saved config holds the preset's values already; on --resume the checkpoint's replace these
  if (cli.resume) {
    if (!fs::exists(checkpoint))
      throw UsageError(fmt::format("--resume: no checkpoint at {} (train without --resume first)", checkpoint.string()));
    const nlohmann::json arch = flows::read_architecture(checkpoint.string());
    o = options_from_json(arch.at("meta").at("train"), cli);
  }
  if (!given(o, "--warmup")) o.warmup = std::min<std::int64_t>(o.warmup, o.steps / 10);  // short runs
  validate(o);
  set_threads(o.threads);
  fs::create_directories(out);

  // Data (standardized if asked; the statistics travel with the model).
  std::unique_ptr<flows::Dataset> raw = open_dataset(o.data, o.drop_nonfinite);
  // Validation rows: a file's rows are split once by a seeded shuffle (the same split on
  // --resume); a built-in generator gets a fixed sample; --val reads them from a file.
  xt::xtensor<double, 2> val_rows;
  auto* file_rows = dynamic_cast<flows::MatrixDataset*>(raw.get());
  if (!o.val.empty()) {
    auto v = open_dataset(o.val, o.drop_nonfinite);
    auto* vm = dynamic_cast<flows::MatrixDataset*>(v.get());
    if (!vm) throw UsageError(fmt::format("--val {}: expected a .npy or .csv file of rows", o.val));
    if (vm->dim() != raw->dim())
      throw DataError(fmt::format("--val {}: {} columns, but the training data have {}", o.val, vm->dim(), raw->dim()));
    val_rows = vm->rows();
  } else if (o.val_fraction > 0 && file_rows) {
    if (file_rows->rows().shape()[0] < 2)
      throw DataError(fmt::format("{}: one row cannot be split into training and validation rows (--val-fraction 0)", o.data));
    auto [train_rows, held] = flows::hold_out(file_rows->rows(), o.val_fraction, o.seed + 29);
    raw = std::make_unique<flows::MatrixDataset>(file_rows->name(), std::move(train_rows), file_rows->dropped_rows());
    val_rows = std::move(held);
  } else if (o.val_fraction > 0) {
    const std::size_t n = 5000, d = raw->dim();
    val_rows = xt::xtensor<double, 2>({n, d});
    ad::Rng rng(o.seed + 31);
    raw->sample(n, rng, val_rows.data());
  }
  const bool files = file_rows != nullptr;
  // A small data file (docs/real_data.md): with fewer than 20 training rows per dimension, 8 affine
  // couplings instead of 4 spline couplings (whose conditioners emit 3K − 1 = 23 numbers per
  // coordinate, not 2, and overfit such sets before they help); and for every file a batch of at
  // most half its training rows (at least 64), so that a pass over them is two or more noisy
  // steps, not one full batch drawn with replacement. Flags given (or a preset, a saved config,
  // a resumed run's settings) win.
  if (files && !cli.resume && !o.from_config && o.preset == "none") {
    const std::size_t rows = raw->row_count(), d = raw->dim();
    if (double(rows) < 20.0 * double(d) && !given(o, "--coupling") && !given(o, "--additive") &&
        !given(o, "--layers") && !given(o, "--structure")) {
      o.coupling = "affine";
      o.layers = 8;
    }
    default_to(o, "--batch", o.batch, std::min(o.batch, std::clamp<std::size_t>(rows / 2, 64, 512)));
  }
  // Finite data sets get dropout by default (docs/real_data.md: it lowered the test NLL of every
  // set measured); a Gaussian start is an option (it helps the smallest set and hurts heavy tails).
  if (o.dropout < 0) o.dropout = files ? 0.2 : 0.0;
  if (o.init.empty()) o.init = "identity";
  if (o.patience < 0) o.patience = files && val_rows.size() > 0 ? 20 : 0;
  if (o.eval_every < 0) {
    // A few hundred rows are fitted (and overfitted) in tens of steps of 512 rows: validate about
    // every two passes over the training rows there, every 100 steps for a generator.
    o.eval_every = 100;
    if (const std::size_t rows = raw->row_count())
      o.eval_every = std::clamp<std::int64_t>(std::int64_t(std::ceil(2.0 * double(rows) / double(o.batch))), 10, 100);
  }
  if (o.patience > 0 && val_rows.size() == 0)
    throw UsageError("--patience needs validation rows (--val-fraction > 0 or --val FILE)");
  if (o.lr_schedule == "plateau" && val_rows.size() == 0)
    throw UsageError("--lr-schedule plateau needs validation rows (--val-fraction > 0 or --val FILE)");
  Standardization stdz;
  if (o.standardize) {
    if (cli.resume) {
      stdz = Standardization::from_json(flows::read_architecture(checkpoint.string()).at("meta").at("standardization"));
    } else {
      const std::size_t n = 20000, d = raw->dim();
      std::vector<double> buf(n * d);
      ad::Rng rng(o.seed + 17);
      raw->sample(n, rng, buf.data());
      stdz.mean.assign(d, 0.0);
      stdz.std.assign(d, 0.0);
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < d; ++j) stdz.mean[j] += buf[i * d + j] / double(n);
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < d; ++j) stdz.std[j] += std::pow(buf[i * d + j] - stdz.mean[j], 2) / double(n - 1);
      for (double& s : stdz.std) s = s > 1e-24 ? std::sqrt(s) : 1.0;  // a constant column stays as it is
    }
  }
  // Values far from the base's scale: a float32 flow from N(0, I) cannot reach them.
  double magnitude = 0;
  if (!stdz.active()) {
    const std::size_t n = 2000, d = raw->dim();
    std::vector<double> buf(n * d);
    ad::Rng rng(o.seed + 19);
    raw->sample(n, rng, buf.data());
    for (double v : buf) magnitude = std::max(magnitude, std::abs(v));
    if (magnitude > 1e6 && !cli.quiet)
      fmt::print(stderr, "trflow: warning: the data reach |x| = {:.3g}, far beyond the base N(0, I); train with "
                         "--standardize\n", magnitude);
  }
  std::unique_ptr<flows::Dataset> data =
      stdz.active() ? std::make_unique<StandardizedDataset>(std::move(raw), stdz) : std::move(raw);

  if (o.additive) o.coupling = "additive", o.additive = false;
  if (o.coupling == "rqs" && o.tail_bound == 0.0) {
    try {
      o.tail_bound = flows::spline_tail_bound(*data, o.seed);
    } catch (const std::invalid_argument& e) {
      throw DataError(fmt::format("cannot choose a spline tail bound for {} ({}): give --tail-bound", o.data, e.what()));
    }
  }
  // One writer per directory; then what killed writers left behind can go.
  std::optional<RunDirLock> lock;
  if (writer) lock.emplace(out), remove_stale_temporaries(out);
  if (!cli.resume && writer) {
    const std::vector<std::string> other = run_files_in(out);
    if (!other.empty() && !cli.force)
      throw UsageError(fmt::format("--out {} holds another run ({}); continue it with --resume, choose another --out, "
                                   "or pass --force to replace it",
                                   out.string(), fmt::join(other, ", ")));
    for (const std::string& f : other) fs::remove(out / f);  // --force: nothing of the old run stays to mislead
  }
  // The terminal term's reverse KL needs the target's density on the tape.
  if (o.loss == "jeffreys" && (stdz.active() || !dynamic_cast<flows::GaussianMixture*>(data.get())))
    throw UsageError(fmt::format("--loss jeffreys needs a target whose density is a Gaussian mixture (8gaussians, gmm:D, "
                                 "crowd:D) and no --standardize; {} is not one",
                                 o.data));
  std::optional<flows::MfgProblem> problem;
  if (!o.problem.empty()) problem = flows::mfg_problem(o.problem, data->dim());
  if (!cli.resume) check_memory(o, *data, val_rows.shape()[0]);
  auto flow = cli.resume ? flows::Flow<float>::from_config(flows::read_architecture(checkpoint.string()).at("flow"))
                         : build_flow(o, data->dim());
  flows::TrainConfig config = train_config(o);
  config.comm = comm;
  config.interrupt = &g_interrupted;
  if (o.loss == "jeffreys") config.reverse_kl = o.kl_weight;
  if (problem && problem->has_running_cost() && o.cost_weight > 0) {
    config.running = o.cost_weight;
    config.problem = &*problem;
  }
  flows::Trainer<float> trainer(*flow, *data, config);
  std::unique_ptr<flows::Validation<float>> validation;
  if (val_rows.size() > 0) {
    ad::Array<float> rows({val_rows.shape()[0], val_rows.shape()[1]});
    if (stdz.active()) stdz.apply(val_rows.data(), val_rows.shape()[0]);
    std::copy(val_rows.begin(), val_rows.end(), rows.data());
    validation = std::make_unique<flows::Validation<float>>(
        *flow, std::move(rows), stdz.nll_offset(), flows::ValidationConfig{o.eval_every, o.patience, 0.0}, o.threads);
  }
  if (cli.resume) {
    flows::load_checkpoint(checkpoint.string(), *flow, trainer, validation.get());
    // A finished run is not re-run (its files stay as they are); a run cannot be shortened.
    const std::int64_t done = trainer.steps_done();
    if (o.steps < done)
      throw UsageError(fmt::format("--steps {} is below the {} steps the checkpoint in {} has already taken; a run "
                                   "cannot be shortened (its model.npz holds the best of those steps)",
                                   o.steps, done, out.string()));
    if (o.steps == done) {
      if (!cli.quiet)
        fmt::print(stderr, "trflow: the run in {} has already finished its {} steps; nothing to do (a larger --steps "
                           "continues it)\n",
                   out.string(), done);
      if (cli.print_result && fs::exists(out / "result.json"))
        std::cout << nlohmann::json::parse(nn::read_file((out / "result.json").string())).dump() << std::endl;
      return 0;
    }
  }
  // Targets with a known OT map: L2-UVP and the cosine at each validation, on fixed base draws.
  // It pushes its draws on the validation's tapes (one inference tape per lane, not two).
  struct OtProbe {
    ad::Array<float> x;
    std::vector<float> fx;
    double variance = 0;
  };
  std::unique_ptr<OtProbe> ot;
  if (validation && data->has_ot_map() && writer) {
    ot = std::make_unique<OtProbe>();
    ad::Rng rng(o.seed + 37);
    flow->base().sample(2000, rng, ot->x);
    ot->fx.resize(ot->x.size());
    ot->variance = flows::total_variance(*data, val_rows.data(), val_rows.shape()[0]);
  }
  val_rows = xt::xtensor<double, 2>();  // the validation holds its own (float) copy

  const nlohmann::json meta = {
      {"data", o.data}, {"standardization", stdz.to_json()}, {"train", options_json(o)}};
  const fs::path metrics_path = out / "metrics.jsonl";
  std::ofstream metrics;  // rank 0's; the other ranks' stays closed and ignores what is written to it
  if (writer) {
    nn::write_file_atomic((out / "config.json").string(), options_json(o).dump(2) + "\n");
    if (cli.resume) truncate_metrics(metrics_path, trainer.steps_done());
    metrics.open(metrics_path, cli.resume ? std::ios::app : std::ios::trunc);
    if (!metrics) throw DataError(fmt::format("cannot write {}", metrics_path.string()));
  }
  // Checkpoints: rank 0's (every rank holds the same state).
  auto save = [&] {
    if (writer) flows::save_checkpoint(checkpoint.string(), *flow, trainer, meta, validation.get());
  };
  // An exit all ranks agreed on (a signal, a divergence): the others wait until rank 0 has saved
  // and said why (mpirun ends the whole job as soon as one rank exits non-zero).
  auto leave = [&](int code) {
    if (comm) comm->barrier();
    return code;
  };

  if (!cli.quiet)
    fmt::print(stderr, "trflow: training on {} (d = {}), {} layers, {} parameters, {} steps{}{} → {}\n", o.data,
               data->dim(), flow->num_layers(), flow->parameter_count(), o.steps,
               cli.resume ? fmt::format(" (resuming at step {})", trainer.steps_done()) : "",
               comm ? fmt::format(", {} ranks × {} threads", comm->size(), trainer.threads()) : "", out.string());

  // Ctrl-C (SIGINT) and schedulers' and timeout(1)'s SIGTERM both save a checkpoint and stop:
  // exit 130 and 143 (128 + the signal), as a shell reports a process killed by them.
  g_interrupted.store(0);
  auto previous = std::signal(SIGINT, on_stop_signal);
  auto previous_term = std::signal(SIGTERM, on_stop_signal);
  auto restore_signals = [&] {
    std::signal(SIGINT, previous);
    std::signal(SIGTERM, previous_term);
  };
  Progress progress(o.steps, trainer.steps_done(), stderr_is_terminal() && writer);
  flows::StepReport last;
  bool stopped_early = false;
  const std::int64_t first_step = trainer.steps_done();
  double allreduce_seconds = 0;  // in the gradient allreduce (several ranks), waiting for the slowest included
  const auto start = std::chrono::steady_clock::now();
  // The starting model is a candidate too (with --init gaussian it is the fitted Gaussian).
  if (validation && first_step == 0) {
    const auto v = validation->evaluate(0);
    metrics << nlohmann::json({{"step", 0}, {"val_nll", std::isfinite(v.nll) ? nlohmann::json(v.nll - stdz.nll_offset()) : nlohmann::json()},
                               {"val_best", validation->best_nll() - stdz.nll_offset()}})
                   .dump()
            << '\n';
  }
  try {
    while (trainer.steps_done() < o.steps) {
      // Several ranks stop at the step they all agreed on (StepReport::signal), never mid-allreduce.
      if (const int sig = comm ? last.signal : g_interrupted.load()) {
        progress.finish();
        save();
        metrics.flush();
        if (writer)
          fmt::print(stderr, "trflow: {} at step {}; checkpoint saved to {} (continue with --resume)\n",
                   sig == SIGTERM ? "terminated (SIGTERM)" : "interrupted", trainer.steps_done(), checkpoint.string());
        restore_signals();
        return leave(128 + sig);
      }
      const std::int64_t next = trainer.steps_done() + 1;
      const bool validate = validation && (validation->due(next) || next == o.steps);
      const bool log_step = next % o.log_every == 0 || next == o.steps || next == 1 || validate;
      last = trainer.step(log_step);
      allreduce_seconds += trainer.allreduce_seconds();
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      bool stop = false;
      nlohmann::json line = log_step ? step_json(last, elapsed) : nlohmann::json();
      if (validate) {
        // In the log and the progress line, in the units of the training NLL beside it (the
        // model's: standardized data if --standardize); result.json gives data units.
        const auto v = validation->evaluate(last.step);
        const double offset = stdz.nll_offset();
        line["val_nll"] = std::isfinite(v.nll) ? nlohmann::json(v.nll - offset) : nlohmann::json();
        line["val_best"] = validation->best_nll() - offset;
        progress.set_validation(v.nll - offset, validation->best_nll() - offset);
        stop = v.stop;
        if (ot) {
          flows::PushOutputs<float> push;
          push.y = ot->fx.data();
          validation->inference().forward(ot->x.data(), ot->x.shape()[0], push);
          const flows::OtScores s = flows::ot_scores(*data, ot->x, ot->fx.data(), ot->variance);
          if (s.l2_uvp) line["l2_uvp"] = *s.l2_uvp;
          if (s.ot_cos) line["ot_cos"] = *s.ot_cos;
        }
        // --lr-schedule plateau: half the rate after each kPlateau evaluations in a row without improvement.
        const std::int64_t since = validation->evaluations_since_best();
        if (o.lr_schedule == "plateau" && since > 0 && since % kPlateau == 0) trainer.set_lr_scale(trainer.lr_scale() * 0.5);
      }
      if (log_step) metrics << line.dump() << '\n' << std::flush;
      // --skip-nonfinite tolerates a few bad batches, not a run that has stopped learning.
      if (trainer.skipped() > 0 && trainer.steps_done() >= kSkipCheckFrom &&
          double(trainer.skipped()) > kSkipLimit * double(trainer.steps_done())) {
        progress.finish();
        restore_signals();
        if (writer)
          fmt::print(stderr,
                   "trflow: stopping at step {}: {} of the {} batches so far were skipped for a non-finite loss or "
                   "gradient (--skip-nonfinite stops above {:.0f} %); lower --lr (now {:g}), set --clip-norm, or check "
                   "the data\n",
                   trainer.steps_done(), trainer.skipped(), trainer.steps_done(), 100 * kSkipLimit, o.lr);
        return leave(1);
      }
      if (!cli.quiet) progress.update(last.step, last.loss, last.nll, last.transport, log_step && !stderr_is_terminal());
      if (stop) {
        progress.finish();
        if (!cli.quiet)
          fmt::print(stderr,
                     "trflow: stopping early at step {}: no better validation NLL in {} evaluations (best {:.4f} at "
                     "step {})\n",
                     last.step, o.patience, validation->best_nll(), validation->best_step());
        stopped_early = true;
        break;
      }
      if (last.step % o.checkpoint_every == 0 && last.step != o.steps) save();
    }
  } catch (const flows::DivergenceError& e) {
    progress.finish();
    restore_signals();
    if (!writer) return leave(1);
    fmt::print(stderr, "trflow: {}\n", e.what());
    if (magnitude > 1e6)
      fmt::print(stderr, "trflow: the data reach |x| = {:.3g}: rerun with --standardize (a lower --lr will not help)\n",
                 magnitude);
    if (fs::exists(checkpoint))
      fmt::print(stderr, "trflow: the last good checkpoint ({}) is intact\n", checkpoint.string());
    return leave(1);
  }
  restore_signals();
  progress.finish();
  if (!writer) return 0;  // rank 0 saves, evaluates and draws
  if (trainer.skipped() > 0)
    fmt::print(stderr, "trflow: skipped {} of {} batches (a non-finite loss or gradient)\n", trainer.skipped(),
               trainer.steps_done());
  const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double rate = train_seconds > 0 ? double(trainer.steps_done() - first_step) / train_seconds : 0.0;

  save();  // the last state
  if (validation) validation->use_best();  // model.npz: the parameters with the best validation NLL
  flows::save_model((out / "model.npz").string(), *flow, meta);

  // Final evaluation on fresh samples, in the data's own units; the training's and the
  // validation's tapes give their memory to it (at D = 1024 they hold ~300 MB).
  trainer.release_tapes();
  if (validation) validation->inference().release();
  flows::EvalReport eval = flows::evaluate(*flow, *data, o.eval_n, o.seed + 1000, stdz.nll_offset(), o.threads);
  nlohmann::json result = eval.to_json();
  result.erase("n");
  result["steps"] = trainer.steps_done();
  result["skipped_batches"] = trainer.skipped();
  result["final_loss"] = last.loss;
  result["steps_per_s"] = rate;
  if (comm) {
    result["ranks"] = comm->size();
    const double steps_run = double(trainer.steps_done() - first_step);
    result["allreduce_ms_per_step"] = steps_run > 0 ? 1e3 * allreduce_seconds / steps_run : 0.0;
    result["allreduce_share"] = train_seconds > 0 ? allreduce_seconds / train_seconds : 0.0;
  }
  result["out"] = out.string();
  result["parameters"] = flow->parameter_count();
  if (validation && validation->has_best()) {
    result["val_nll"] = validation->best_nll();  // the saved model's, on the validation rows
    result["best_step"] = validation->best_step();
    result["val_rows"] = validation->rows();
  }
  result["stopped_early"] = stopped_early;
  if (problem) {  // the mean-field game's own terms
    result.update(flows::mfg_report(*flow, *problem, 4000, o.seed + 1100, o.threads).to_json());
  }

  nn::write_file_atomic((out / "result.json").string(), result.dump(2) + "\n");
  if (o.plots) {
    Model m{std::move(flow), meta, stdz, out.string()};
    auto raw_data = open_dataset(o.data, o.drop_nonfinite);  // figures are in the data's own units
    write_all_figures(m, *raw_data, out.string(), 4000, o.seed + 2000, o.threads);
    if (!cli.quiet) fmt::print(stderr, "trflow: figures written to {}\n", out.string());
  }
  if (cli.print_result) std::cout << result.dump() << std::endl;
  return 0;
}

}  // namespace trflow
