// trflow: train, evaluate, sample and plot transport-regularized normalizing flows.
// Exit codes: 0 success, 1 data or model error (or divergence), 2 usage error, 130 interrupted (SIGINT),
// 143 terminated (SIGTERM); both save a checkpoint first.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <new>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "app.hpp"
#include "flows/mfg.hpp"
#include "flows/train.hpp"

namespace {

/// A finite number that must satisfy `ok` (a strictly positive or a non-negative value);
/// inf and nan are refused (a run would start and then "diverge").
CLI::Validator number_check(bool (*ok)(double), const char* must_be, const char* name) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        try {
          std::size_t used = 0;
          const double v = std::stod(s, &used);
          if (used != s.size()) return "expected a number, got '" + s + "'";
          if (!std::isfinite(v)) return "expected a finite number, got " + s;
          if (!ok(v)) return std::string(must_be) + ", got " + s;
        } catch (const std::out_of_range&) {
          return "expected a finite number, got " + s + " (beyond the range of a double)";
        } catch (const std::exception&) {
          return "expected a number, got '" + s + "'";
        }
        return {};
      },
      name);
}

/// A whole number of the option's own type I, at least lo: anything that does not parse as
/// one, or lies beyond I's range, is refused (CLI11 alone clamps 99999999999999999999).
template <class I>
CLI::Validator whole(const I&, I lo) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        I v{};
        const char* end = s.data() + s.size();
        const auto [ptr, ec] = std::from_chars(s.data(), end, v);
        if (ec == std::errc::result_out_of_range)
          return fmt::format("{} is out of range (expected {} to {})", s, lo, std::numeric_limits<I>::max());
        if (ec != std::errc() || ptr != end) return "expected a whole number, got '" + s + "'";
        if (v < lo) return fmt::format("must be at least {}, got {}", lo, s);
        return {};
      },
      lo > 0 ? "POSITIVE" : "NON-NEGATIVE");
}

const CLI::Validator kPositive = number_check([](double v) { return v > 0; }, "must be positive", "POSITIVE");
const CLI::Validator kNonNegative =
    number_check([](double v) { return v >= 0; }, "must be zero or positive", "NON-NEGATIVE");

void add_train_options(CLI::App& c, trflow::TrainOptions& o) {
  c.add_option("--data", o.data, "built-in set (8gaussians, moons, circles, rings, pinwheel, 2spirals, checkerboard, "
                                 "swissroll), gaussian:D, gmm:D, or a .npy/.csv file")
      ->capture_default_str();
  c.add_option("--preset", o.preset,
               "ot: the recipe that reaches the optimal-transport map (6 steps of LU + two spline couplings, "
               "β cosine 0.1 → 0, 20000 steps; docs/ot.md); explicit flags override it")
      ->check(CLI::IsMember({"none", "ot"}))
      ->capture_default_str();
  c.add_option("--layers", o.layers, "number of coupling layers (or of steps, with --structure steps)")
      ->check(whole(o.layers, decltype(o.layers)(1)))
      ->capture_default_str();
  c.add_option("--structure", o.structure,
               "layers: one coupling per layer; steps: an LU layer and two complementary couplings per step")
      ->check(CLI::IsMember(ad::names_of(flows::kStructureNames)))
      ->capture_default_str();
  c.add_option("--coupling", o.coupling, "affine, additive (w = 0) or rqs (rational-quadratic splines)")
      ->check(CLI::IsMember(ad::names_of(flows::kCouplingNames)))
      ->capture_default_str();
  c.add_option("--conditioner", o.conditioner, "the couplings' network: mlp, or resnet (residual blocks)")
      ->check(CLI::IsMember(ad::names_of(flows::kConditionerNames)))
      ->capture_default_str();
  c.add_option("--bins", o.bins, "rqs: bins per spline (2 to 64)")->check(CLI::Range(2, 64))->capture_default_str();
  c.add_option("--tail-bound", o.tail_bound,
               "rqs: splines act on [-B, B], the identity outside (default: from the data, at least 3)")
      ->check(kPositive);
  c.add_option("--hidden", o.hidden, "width of the conditioner MLPs")->check(whole(o.hidden, decltype(o.hidden)(1)))->capture_default_str();
  c.add_option("--depth", o.depth, "hidden layers (mlp) or residual blocks (resnet) per conditioner")->check(whole(o.depth, decltype(o.depth)(1)))->capture_default_str();
  c.add_option("--activation", o.activation, "conditioner activation")
      ->check(CLI::IsMember(ad::names_of(ad::kActivationNames)))
      ->capture_default_str();
  c.add_option("--batch", o.batch, "batch size")->check(whole(o.batch, decltype(o.batch)(1)))->capture_default_str();
  c.add_option("--steps", o.steps, "training steps")->check(whole(o.steps, decltype(o.steps)(1)))->capture_default_str();
  c.add_option("--lr", o.lr, "learning rate (Adam)")->check(kPositive)->capture_default_str();
  c.add_option("--lr-schedule", o.lr_schedule,
               "learning-rate schedule (plateau: halved after every 5 validations in a row without improvement)")
      ->check(CLI::IsMember(ad::names_of(nn::LrSchedule::kNames)))
      ->capture_default_str();
  c.add_option("--warmup", o.warmup, "linear learning-rate warm-up steps")->check(whole(o.warmup, decltype(o.warmup)(0)))->capture_default_str();
  c.add_option("--seed", o.seed, "random seed (weights, permutations, batches)")->check(whole(o.seed, decltype(o.seed)(0)))->capture_default_str();
  c.add_option("--kl-weight", o.kl_weight, "λ, the weight of the NLL")->check(kNonNegative)->capture_default_str();
  c.add_option("--transport-weight", o.transport_weight, "β, the weight of the transport cost T (0: plain maximum likelihood)")
      ->check(kNonNegative)
      ->capture_default_str();
  c.add_option("--transport-dir", o.transport_dir, "gen: base samples pushed through F; norm: data pulled back through G")
      ->check(CLI::IsMember(ad::names_of(flows::kDirectionNames)))
      ->capture_default_str();
  c.add_option("--transport-schedule", o.transport_schedule,
               "β over the run: constant, or decaying to the floor (linear, cosine, or exponential: as many steps "
               "per decade, floor > 0)")
      ->check(CLI::IsMember(ad::names_of(flows::BetaSchedule::kNames)))
      ->capture_default_str();
  c.add_option("--transport-floor", o.transport_floor, "β at the end of a decaying schedule")
      ->check(kNonNegative)
      ->capture_default_str();
  c.add_option("--permutation", o.permutation, "how each coupling picks its updated coordinates")
      ->check(CLI::IsMember(ad::names_of(flows::kPermutationNames)))
      ->capture_default_str();
  c.add_flag("--actnorm", o.actnorm, "an ActNorm layer before each coupling");
  c.add_flag("--lu", o.lu, "an invertible LU linear layer before each coupling");
  c.add_flag("--additive", o.additive, "the same as --coupling additive");
  c.add_option("--scale-clamp", o.scale_clamp, "c > 0: stabilize scales as w = c·tanh(w/c)")
      ->check(kNonNegative)
      ->capture_default_str();
  c.add_option("--base", o.base, "base density")
      ->check(CLI::IsMember({"standard_normal", "diagonal_gaussian"}))
      ->capture_default_str();
  c.add_flag("--standardize", o.standardize, "standardize the data (statistics saved with the model; NLL stays in data units)");
  c.add_option("--val-fraction", o.val_fraction,
               "fraction of a data file's rows held out for validation (built-in sets: a fixed sample; 0: none)")
      ->check(number_check([](double v) { return v >= 0 && v <= 0.9; }, "must be in [0, 0.9]", "FRACTION"))
      ->capture_default_str();
  c.add_option("--val", o.val, "a .npy/.csv file of validation rows instead of held-out ones");
  c.add_option("--eval-every", o.eval_every,
               "steps between validation NLLs; the best model is the one saved (default: 100, for a data file about "
               "two passes over its training rows, 10 to 100)")
      ->check(whole(o.eval_every, decltype(o.eval_every)(1)));
  c.add_option("--patience", o.patience,
               "stop after this many validations without improvement (0: never; default 20 for data files, 0 otherwise)")
      ->check(whole(o.patience, decltype(o.patience)(0)));
  c.add_option("--dropout", o.dropout,
               "dropout rate in the couplings' conditioners while training (off in eval, sample, validation; "
               "default 0.2 for data files, 0 for the built-in sets)")
      ->check(number_check([](double v) { return v >= 0 && v < 1; }, "must be in [0, 1)", "RATE"));
  c.add_option("--init", o.init,
               "identity: the flow starts as the identity; gaussian: a last LU + ActNorm layer starts as the "
               "full-covariance Gaussian fitted to the training rows (default: identity)")
      ->check(CLI::IsMember({"identity", "gaussian"}));
  c.add_option("--weight-decay", o.weight_decay, "decoupled weight decay (AdamW)")->check(kNonNegative)->capture_default_str();
  c.add_flag("--drop-nonfinite", o.drop_nonfinite, "drop data rows holding NaN or Inf instead of rejecting the file");
  c.add_option("--clip-norm", o.clip_norm, "clip the global gradient norm (0: off)")->check(kNonNegative)->capture_default_str();
  c.add_flag("--skip-nonfinite", o.skip_nonfinite, "skip batches with a non-finite loss or gradient (counted) instead of stopping");
  c.add_option("--threads", o.threads, "threads that share the rows of each batch")->check(whole(o.threads, decltype(o.threads)(1)))->capture_default_str();
  c.add_option("--out", o.out, "output directory")->capture_default_str();
  c.add_flag("--resume", o.resume, "continue from OUT/checkpoint.npz");
  c.add_option("--config", o.config,
               "rerun the settings saved in a run's config.json (explicit flags override; same seed and --threads: "
               "the same parameters, bitwise)");
  c.add_flag("--force", o.force, "replace the run already in --out (its files are removed first); without it, such an --out is refused");
  c.add_option("--log-every", o.log_every, "steps between metrics.jsonl lines")->check(whole(o.log_every, decltype(o.log_every)(1)))->capture_default_str();
  c.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints")->check(whole(o.checkpoint_every, decltype(o.checkpoint_every)(1)))->capture_default_str();
  c.add_option("--eval-n", o.eval_n, "samples for the final evaluation")->check(whole(o.eval_n, decltype(o.eval_n)(1)))->capture_default_str();
  c.add_flag("!--no-plots", o.plots, "skip the PNG figures");
  c.add_flag("--quiet", o.quiet, "no progress output");
  c.add_option("--loss", o.loss,
               "nll: maximum likelihood (the forward KL); jeffreys: plus the reverse KL, for targets whose density "
               "is a Gaussian mixture (8gaussians, gmm:D, crowd:D)")
      ->check(CLI::IsMember({"nll", "jeffreys"}))
      ->capture_default_str();
}

}  // namespace

int run(int argc, char** argv, flows::Communicator* comm);

int main(int argc, char** argv) {
  // Under mpirun: MPI starts here (a plain run never touches it).
  flows::Communicator* comm = nullptr;
  try {
    comm = flows::mpi_world(&argc, &argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "trflow: {}\n", e.what());
    return 2;
  }
  trflow::set_world(comm);
  const int code = run(argc, argv, comm);
  // A rank that fails must not wait in MPI_Finalize for the others (they may be waiting in an
  // allreduce for it): it exits at once, and mpirun ends the job with its exit code.
  if (comm && comm->size() > 1 && code != 0) {
    std::fflush(stderr);
    std::fflush(stdout);
    std::_Exit(code);
  }
  return code;
}

int run(int argc, char** argv, flows::Communicator* comm) {
  // With several ranks, a usage error (the same on every rank) is printed by rank 0 alone;
  // other errors are printed by the rank that met them, named.
  const bool several = comm && comm->size() > 1;
  const std::string who = several && comm->rank() > 0 ? fmt::format("trflow (rank {})", comm->rank()) : "trflow";
  CLI::App app{"trflow: transport-regularized normalizing flows"};
  app.require_subcommand(1);
  app.set_version_flag("--version", trflow::version_text());

  trflow::TrainOptions train;
  auto* train_cmd = app.add_subcommand("train", "train a flow; writes model.npz, config.json, metrics.jsonl and plots");
  add_train_options(*train_cmd, train);

  trflow::EvalOptions eval;
  auto* eval_cmd = app.add_subcommand("eval", "evaluate a model: prints one JSON object");
  eval_cmd->add_option("--model", eval.model, "model directory (or model.npz)")->required();
  eval_cmd->add_option("--data", eval.data, "data to evaluate on (default: the training data)");
  eval_cmd->add_option("--n", eval.n, "number of samples")->check(whole(eval.n, decltype(eval.n)(1)))->capture_default_str();
  eval_cmd->add_option("--seed", eval.seed, "random seed")->check(whole(eval.seed, decltype(eval.seed)(0)))->capture_default_str();
  eval_cmd->add_option("--threads", eval.threads, "threads that share the rows")->check(whole(eval.threads, decltype(eval.threads)(1)))->capture_default_str();

  trflow::SampleOptions sample;
  auto* sample_cmd = app.add_subcommand("sample", "draw samples (and their trajectories) from a model into .npy files");
  sample_cmd->add_option("--model", sample.model, "model directory (or model.npz)")->required();
  sample_cmd->add_option("--n", sample.n, "number of samples")->check(whole(sample.n, decltype(sample.n)(1)))->capture_default_str();
  sample_cmd->add_option("--out", sample.out, "samples, an (N, D) .npy file")->required();
  sample_cmd->add_option("--trajectories", sample.trajectories, "trajectories, a (K+1, N, D) .npy file: the states between the K time steps (layers, or whole steps)");
  sample_cmd->add_option("--seed", sample.seed, "random seed")->check(whole(sample.seed, decltype(sample.seed)(0)))->capture_default_str();
  sample_cmd->add_option("--threads", sample.threads, "threads that share the rows")->check(whole(sample.threads, decltype(sample.threads)(1)))->capture_default_str();

  trflow::PlotOptions plot;
  auto* plot_cmd = app.add_subcommand("plot", "write PNG figures of a model");
  plot_cmd->add_option("--model", plot.model, "model directory (or model.npz)")->required();
  plot_cmd->add_option("--out", plot.out, "output directory (default: the model's)");
  plot_cmd->add_option("--data", plot.data, "target data to show (default: the training data)");
  plot_cmd->add_option("--n", plot.n, "number of points per scatter")->check(whole(plot.n, decltype(plot.n)(1)))->capture_default_str();
  plot_cmd->add_option("--seed", plot.seed, "random seed")->check(whole(plot.seed, decltype(plot.seed)(0)))->capture_default_str();
  plot_cmd->add_option("--threads", plot.threads, "threads that share the rows")->check(whole(plot.threads, decltype(plot.threads)(1)))->capture_default_str();

  trflow::CompareOptions compare;
  auto* compare_cmd = app.add_subcommand(
      "compare", "train the same flow with and without transport regularization; plots and metrics side by side");
  add_train_options(*compare_cmd, compare.train);
  compare_cmd->get_option("--out")->default_str("runs/compare");
  compare.train.out = "runs/compare";

  trflow::TrainOptions mfg;
  auto* mfg_cmd = app.add_subcommand(
      "mfg",
      "solve a mean-field game: move a population from P0 to P1 at least cost, around an obstacle or each other "
      "(docs/mfg.md). Defaults that differ from train's: --structure steps --layers 4 --transport-weight 0.1 with "
      "--transport-schedule cosine --transport-floor 0.01, --loss jeffreys, --steps 5000, --cost-weight 0.5 "
      "(1 for the drones), --out runs/mfg");
  add_train_options(*mfg_cmd, mfg);
  std::vector<std::string> problems;
  for (const flows::MfgProblemKind& k : flows::mfg_problem_kinds()) problems.emplace_back(k.name);
  mfg_cmd->add_option("--problem", mfg.problem, flows::mfg_problem_list(true))
      ->check(CLI::IsMember(problems))
      ->required();
  mfg_cmd->add_option("--dim", mfg.dim, "the dimension D (at least 2; the drones problems have their own: 4 or 16)")
      ->check(whole(mfg.dim, decltype(mfg.dim)(2)))
      ->capture_default_str();
  mfg_cmd->add_option("--cost-weight", mfg.cost_weight,
                      "λ_F, the weight of the running cost, an obstacle's and the groups' interaction (default 0.5, "
                      "drones 1; docs/mfg.md shows weak, moderate and strong avoidance)")
      ->check(kNonNegative);
  mfg_cmd->get_option("--out")->default_str("runs/mfg");
  mfg.out = "runs/mfg";

  if (argc > 1 && argv[1][0] != '-') {
    const std::string cmd = argv[1];
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) known = known || sub->get_name() == cmd;
    if (!known) {
      fmt::print(stderr, "trflow: unknown command '{}' (expected train, mfg, eval, sample, plot or compare; see --help)\n", cmd);
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (!several || comm->rank() == 0) app.exit(e);
    return 2;
  }

  try {
    for (auto* opt : train_cmd->get_options())
      if (opt->count() > 0) train.explicit_flags.push_back(opt->get_name());
    for (auto* opt : compare_cmd->get_options())
      if (opt->count() > 0) compare.train.explicit_flags.push_back(opt->get_name());
    for (auto* opt : mfg_cmd->get_options())
      if (opt->count() > 0) mfg.explicit_flags.push_back(opt->get_name());
    if (several && !*mfg_cmd && !*train_cmd)
      throw trflow::UsageError(fmt::format("only train and mfg run under mpirun ({} ranks); run '{}' as one process",
                                           comm->size(), argv[1]));
    if (*mfg_cmd) return trflow::run_mfg(mfg);
    if (*train_cmd) return trflow::run_train(train);
    if (*eval_cmd) return trflow::run_eval(eval);
    if (*sample_cmd) return trflow::run_sample(sample);
    if (*plot_cmd) return trflow::run_plot(plot);
    if (*compare_cmd) {
      compare.out = compare.train.out;
      return trflow::run_compare(compare);
    }
  } catch (const trflow::UsageError& e) {
    if (!several || comm->rank() == 0) fmt::print(stderr, "trflow: {}\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "{}: out of memory while running '{}' (an allocation failed); lower --batch, --hidden, "
                       "--layers or --n\n", who, argv[1]);
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", who, e.what());
    return 1;
  }
  return 2;
}
