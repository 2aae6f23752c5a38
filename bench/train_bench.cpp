// End-to-end throughput of trflow on the three benchmark shapes (one shape per process,
// so that the peak RSS is per shape):
//
//   A: 8gaussians,  d = 2,  8 couplings, MLP 64×2 tanh,  batch 1024
//   B: gaussian:16, d = 16, 8 couplings, MLP 128×2 tanh, batch 1024
//   C: gaussian:64, d = 64, 16 couplings, MLP 512×2 tanh, batch 2048
//
// A training step is flows::Trainer<float>::step(), exactly as `trflow train` calls it:
// transport pass through F on base samples (β = 0.01, direction gen) and its backward, then
// NLL pass through G and its backward on the cleared tape, gradient norm, Adam, with the
// batch's rows split across --threads threads.
// Also measured: log_prob throughput (flows::Inference, chunks of 1024 rows per thread, as
// flows::mean_nll) and sampling throughput (base draw + F, likewise),
// peak RSS (getrusage ru_maxrss) and heap allocations per steady-state step (a counting
// global operator new, between step 10 and step 60).
//
//   train_bench --shape B --threads 1 [--steps 40 --reps 5 --warmup-steps 60 --eval-n 16384]
//
// --coupling rqs [--bins 8 --tail-bound B] swaps the affine couplings for rational-quadratic
// spline couplings (flows::RQSplineCoupling, the same conditioner MLP with 3K − 1 outputs per
// updated coordinate); the default tail bound is the one `trflow train` would choose for the
// shape's data (max(3, 1.2 × the 99.9th percentile of |y|), rounded up to 0.5: 5 for A, 5.5 for B;
// printed in the JSON). The PyTorch counterpart is bench/torch_spline.py.
//
// prints a human summary on stderr and one JSON line on stdout.
//
// Finding allocations: TRFLOW_BENCH_ALLOC_TRACE=1 groups the steady-state allocations by
// call stack (symbolized with dladdr; the executable exports its symbols) and prints the
// sites; TRFLOW_BENCH_ALLOC_ABORT=1 aborts on the first one, for a backtrace under gdb:
//   TRFLOW_BENCH_ALLOC_ABORT=1 gdb -batch -ex run -ex bt --args build-bench/bench/train_bench --shape A
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <cerrno>

#include <cxxabi.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cblas.h>
#include <fmt/format.h>

#include "flows/datasets.hpp"
#include "flows/flow.hpp"
#include "flows/inference.hpp"
#include "flows/train.hpp"
#include "nn/io.hpp"

#include "alloc_count.hpp"  // the counting allocator (defines operator new and malloc)

namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  const char* name;
  const char* data;
  std::size_t layers, hidden, depth, batch;
};

const Shape kShapes[] = {
    {"A", "8gaussians", 8, 64, 2, 1024},
    {"B", "gaussian:16", 8, 128, 2, 1024},
    {"C", "gaussian:64", 16, 512, 2, 2048},
};

struct Options {
  std::string shape = "A";
  int threads = 1;       // threads that split the rows (Trainer, Inference)
  int blas_threads = 1;  // OpenBLAS's own threads
  int alloc_first = 11, alloc_last = 60;  // the allocation-counting window (steps, inclusive)
  int warmup_steps = 0;   // 0: alloc_last (the window is part of the warm-up)
  int steps = 0;          // per repetition; 0: a default per shape
  int reps = 5;
  std::size_t eval_n = 0;  // samples per log_prob / sampling repetition; 0: a default per shape
  std::size_t chunk = 1024;
  std::string write_data;  // write n samples of the dataset as float32 .npy, then exit
  std::size_t write_n = 100000;
  bool skip_eval = false;
  std::string coupling = "affine";  // affine | rqs
  int bins = 8;
  double tail_bound = 0;            // rqs; 0: as `trflow train` would choose it for the data
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "train_bench: %s\n"
               "usage: train_bench --shape A|B|C [--threads N] [--blas-threads N] [--steps S] [--reps R] [--alloc-window 11:60]\n"
               "                   [--warmup-steps W (>= window end)] [--eval-n N] [--chunk 1024] [--no-eval]\n"
               "                   [--coupling affine|rqs] [--bins 8] [--tail-bound B]\n"
               "       train_bench --shape A|B|C --write-data out.npy [--n 100000]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--shape") o.shape = next();
    else if (a == "--threads") o.threads = std::stoi(next());
    else if (a == "--blas-threads") o.blas_threads = std::stoi(next());
    else if (a == "--warmup-steps") o.warmup_steps = std::stoi(next());
    else if (a == "--alloc-window") {
      const std::string w = next();
      const auto colon = w.find(':');
      if (colon == std::string::npos) usage("--alloc-window wants FIRST:LAST");
      o.alloc_first = std::stoi(w.substr(0, colon));
      o.alloc_last = std::stoi(w.substr(colon + 1));
    }
    else if (a == "--steps") o.steps = std::stoi(next());
    else if (a == "--reps") o.reps = std::stoi(next());
    else if (a == "--eval-n") o.eval_n = std::stoul(next());
    else if (a == "--chunk") o.chunk = std::stoul(next());
    else if (a == "--no-eval") o.skip_eval = true;
    else if (a == "--write-data") o.write_data = next();
    else if (a == "--n") o.write_n = std::stoul(next());
    else if (a == "--coupling") o.coupling = next();
    else if (a == "--bins") o.bins = std::stoi(next());
    else if (a == "--tail-bound") o.tail_bound = std::stod(next());
    else usage(("unknown option " + a).c_str());
  }
  if (o.alloc_first < 2 || o.alloc_last < o.alloc_first) usage("--alloc-window needs 2 <= FIRST <= LAST");
  if (o.warmup_steps == 0) o.warmup_steps = o.alloc_last;
  if (o.warmup_steps < o.alloc_last) usage("--warmup-steps must cover the allocation window");
  if (o.reps < 1) usage("--reps must be positive");
  if (o.coupling != "affine" && o.coupling != "rqs") usage("--coupling must be affine or rqs");
  return o;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

long minor_faults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

double loadavg1() {
  double l = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

std::string json_list(const std::vector<double>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += fmt::format("{}{:.2f}", i ? "," : "", v[i]);
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const Shape* shape = nullptr;
  for (const Shape& s : kShapes)
    if (o.shape == s.name) shape = &s;
  if (!shape) usage("--shape must be A, B or C");

  std::unique_ptr<flows::Dataset> data = flows::make_dataset(shape->data);
  const std::size_t d = data->dim();

  if (!o.write_data.empty()) {  // data parity for the PyTorch side (torch_realnvp.py --data file.npy)
    ad::Rng rng(4242);
    std::vector<double> buf(o.write_n * d);
    data->sample(o.write_n, rng, buf.data());
    std::vector<float> f(buf.begin(), buf.end());
    nn::write_file_atomic(o.write_data, nn::encode_npy(f.data(), {o.write_n, d}));
    std::fprintf(stderr, "train_bench: wrote %zu samples of %s to %s\n", o.write_n, shape->data, o.write_data.c_str());
    return 0;
  }

  // --threads N splits each batch's rows across N threads (flows::ThreadTeam), each
  // calling single-threaded BLAS; --blas-threads lets OpenBLAS thread instead.
  openblas_set_num_threads(o.blas_threads);
  alloc_count::abort_on_first = std::getenv("TRFLOW_BENCH_ALLOC_ABORT") != nullptr;
  alloc_count::trace = std::getenv("TRFLOW_BENCH_ALLOC_TRACE") != nullptr;
  if (alloc_count::trace) {
    alloc_count::records_cap = 100000;
    alloc_count::records = static_cast<alloc_count::Record*>(std::calloc(alloc_count::records_cap, sizeof(alloc_count::Record)));
    void* warm[4];
    backtrace(warm, 4);  // loads libgcc's unwinder now, not inside the window
  }

  const int steps_per_rep = o.steps > 0 ? o.steps : (shape->name[0] == 'C' ? 6 : 40);
  const std::size_t eval_n = o.eval_n > 0 ? o.eval_n : (shape->name[0] == 'C' ? 8192 : 16384);

  // The flow as `trflow train` builds it (defaults: random permutation, no ActNorm/LU, N(0, I) base).
  flows::FlowSpec spec;
  spec.layers = shape->layers;
  spec.coupling.hidden = shape->hidden;
  spec.coupling.depth = shape->depth;
  spec.coupling.activation = ad::Activation::tanh;
  const bool rqs = o.coupling == "rqs";
  double tail_bound = 0;
  if (rqs) {
    tail_bound = o.tail_bound > 0 ? o.tail_bound : flows::spline_tail_bound(*data, 0);
    spec.coupling.kind = flows::CouplingKind::rqs;
    spec.coupling.bins = o.bins;
    spec.coupling.tail_bound = tail_bound;
  }
  spec.seed = 0;
  auto flow = flows::make_flow<float>(d, spec);

  flows::TrainConfig cfg;
  cfg.batch = shape->batch;
  cfg.steps = 1000000;
  cfg.lr = 1e-3;  // as torch_realnvp.py
  cfg.beta.kind = flows::BetaSchedule::Kind::constant;
  cfg.beta.start = 0.01;
  cfg.direction = flows::Direction::gen;
  cfg.seed = 0;
  cfg.threads = o.threads;
  flows::Trainer<float> trainer(*flow, *data, cfg);
  const double load_start = loadavg1();

  // Warm-up; steps alloc_first..alloc_last (default 11..60) form the allocation-counting window.
  flows::StepReport last;
  long faults0 = 0;
  for (int s = 1; s <= o.warmup_steps; ++s) {
    if (s == o.alloc_first) {
      faults0 = minor_faults();
      alloc_count::counting = true;
    }
    last = trainer.step(/*measure_transport=*/false);  // what the app calls on a non-logging step
    if (s == o.alloc_last) alloc_count::counting = false;
  }
  const double window_steps = o.alloc_last - o.alloc_first + 1;
  const double faults_per_step = double(minor_faults() - faults0) / window_steps;
  const double new_per_step = double(alloc_count::count[0].load()) / window_steps;
  const double malloc_per_step = double(alloc_count::count[1].load()) / window_steps;
  const double allocs_per_step = new_per_step + malloc_per_step;
  const double alloc_bytes_per_step = double(alloc_count::bytes[0].load() + alloc_count::bytes[1].load()) / window_steps;
  if (alloc_count::trace) std::fputs(alloc_count::sites_report(window_steps).c_str(), stderr);

  std::vector<double> rep_rates, rep_cpu;
  for (int r = 0; r < o.reps; ++r) {
    const double c0 = process_cpu_seconds();
    const auto t0 = Clock::now();
    for (int s = 0; s < steps_per_rep; ++s) last = trainer.step(false);
    rep_rates.push_back(steps_per_rep / seconds_since(t0));
    rep_cpu.push_back(1e3 * (process_cpu_seconds() - c0) / steps_per_rep);
  }
  const double steps_per_s = median(rep_rates);
  const double cpu_ms_per_step = median(rep_cpu);  // all threads' CPU time: robust to other load, not to spinning

  // log_prob and sampling throughput, chunks of `chunk` rows, on one tape each (as flows::mean_nll).
  std::vector<double> lp_rates, sample_rates;
  double lp_allocs_per_chunk = 0, sample_allocs_per_chunk = 0, checksum = 0;
  if (!o.skip_eval) {
    ad::Rng rng(99);
    std::vector<double> buffer;
    ad::Array<float> y;
    flows::sample_batch(*data, eval_n, rng, buffer, y);
    flows::Inference<float> inference(*flow, o.threads, o.chunk);
    const std::size_t chunks = (eval_n + o.chunk - 1) / o.chunk;
    std::vector<float> lp(eval_n), pushed(eval_n * d);
    auto log_prob_pass = [&] {
      inference.log_prob(y.data(), eval_n, lp.data());
      checksum += lp[0];
    };
    ad::Array<float> x;
    flows::PushOutputs<float> push;
    push.y = pushed.data();
    auto sample_pass = [&] {  // base draw + F
      flow->base().sample(eval_n, rng, x);
      inference.forward(x.data(), eval_n, push);
      checksum += pushed[0];
    };
    const int eval_reps = std::max(3, o.reps);
    log_prob_pass();  // warm-up (sizes the tape)
    alloc_count::reset();
    alloc_count::records_n = 0;
    alloc_count::counting = true;
    log_prob_pass();
    alloc_count::counting = false;
    lp_allocs_per_chunk = double(alloc_count::total()) / double(chunks);
    if (alloc_count::trace) std::fprintf(stderr, "log_prob: %s", alloc_count::sites_report(double(chunks)).c_str());
    for (int r = 0; r < eval_reps; ++r) {
      const auto t0 = Clock::now();
      log_prob_pass();
      lp_rates.push_back(double(eval_n) / seconds_since(t0));
    }
    sample_pass();
    alloc_count::reset();
    alloc_count::records_n = 0;
    alloc_count::counting = true;
    sample_pass();
    alloc_count::counting = false;
    sample_allocs_per_chunk = double(alloc_count::total()) / double(chunks);
    if (alloc_count::trace) std::fprintf(stderr, "sampling: %s", alloc_count::sites_report(double(chunks)).c_str());
    for (int r = 0; r < eval_reps; ++r) {
      const auto t0 = Clock::now();
      sample_pass();
      sample_rates.push_back(double(eval_n) / seconds_since(t0));
    }
  }
  const double lp_sps = lp_rates.empty() ? 0 : median(lp_rates);
  const double sample_sps = sample_rates.empty() ? 0 : median(sample_rates);
  const double rss = peak_rss_mb();

  // Where the memory goes (after the peak RSS is read: this builds a second tape): one training
  // step's two passes, each recorded and backpropagated on a fresh tape as Trainer::step does
  // with 1 thread (adjoints released during the sweep, value arrays pooled by size), and the
  // bytes the tape holds as values (its nodes' and its pool's: per size, the most either pass
  // needs), adjoints and scratch, plus its workspace (where linear_act puts z̄ = ȳ ⊙ act'(y)
  // for its GEMMs, one node at a time).
  double tape_value_mb = 0, tape_grad_mb = 0, tape_scratch_mb = 0, params_mb = 0;
  std::size_t tape_nodes = 0;
  if (!o.skip_eval) {
    ad::Rng rng(5);
    std::vector<double> buffer;
    ad::Array<float> yb, xb;
    flows::sample_batch(*data, shape->batch, rng, buffer, yb);
    flow->base().sample(shape->batch, rng, xb);
    ad::Tape<float> tape;
    tape.set_release_adjoints(true);  // as the Trainer's tapes
    tape.set_pool_values(true);
    flows::ObjectiveWeights w;
    w.transport = 0.01;
    w.direction = flows::Direction::gen;
    w.measure_transport = false;
    flow->zero_grad();
    for (flows::Pass pass : {flows::Pass::base, flows::Pass::data}) {
      tape.clear();
      w.pass = pass;
      const ad::Var<float> rows = tape.constant(pass == flows::Pass::base ? xb : yb);
      const auto terms = pass == flows::Pass::base ? flows::objective(*flow, ad::Var<float>{}, rows, w)
                                                   : flows::objective(*flow, rows, ad::Var<float>{}, w);
      tape.backward(terms.loss);
      tape_nodes = std::max(tape_nodes, tape.size());  // the longer pass
    }
    // The data pass's scratch is on its nodes; the base pass's went back to the pool with its
    // values at clear() and counts with them.
    for (std::size_t i = 0; i < tape.size(); ++i)
      tape_scratch_mb += double(tape.node(i).scratch.size()) * sizeof(float) / 1048576.0;
    tape_value_mb = double(tape.value_bytes()) / 1048576.0;
    tape_scratch_mb += double(tape.workspace_size()) * sizeof(float) / 1048576.0;
    tape_grad_mb = double(tape.adjoint_bytes()) / 1048576.0;  // nodes' + pool's: the sweeps' peak
    // parameters: value + grad, plus Adam's two moments
    params_mb = double(flow->parameter_count()) * sizeof(float) * 4 / 1048576.0;
  }

  std::fprintf(stderr,
               "train_bench %s (%s, d=%zu, %zu %s couplings, MLP %zux%zu tanh, batch %zu, %zu params), %d thread(s):\n"
               "  train   %8.2f steps/s  (median of %d x %d steps; reps %s; %.1f CPU ms/step; last loss %.4f)\n"
               "  log_prob %9.0f samples/s   sampling %9.0f samples/s  (chunks of %zu, %zu samples)\n"
               "  peak RSS %.1f MB   heap allocations/step %.1f (operator new %.1f, malloc family %.1f; %.0f bytes; steps %d..%d);"
               " page faults/step %.1f\n  log_prob allocs/chunk %.1f   sampling allocs/chunk %.1f\n"
               "  tape of one step: %zu nodes (the longer pass), values %.1f MB, adjoints %.1f MB, scratch + workspace %.1f MB;"
               " parameters + grads + Adam moments %.1f MB\n"
               "  load average at start %.2f, at end %.2f\n",
               shape->name, shape->data, d, shape->layers, rqs ? fmt::format("rqs (K={}, B={})", o.bins, tail_bound).c_str() : "affine",
               shape->hidden, shape->depth, shape->batch, flow->parameter_count(), o.threads, steps_per_s, o.reps, steps_per_rep, json_list(rep_rates).c_str(),
               cpu_ms_per_step, last.loss, lp_sps, sample_sps, o.chunk, eval_n, rss, allocs_per_step, new_per_step, malloc_per_step,
               alloc_bytes_per_step, o.alloc_first, o.alloc_last, faults_per_step, lp_allocs_per_chunk, sample_allocs_per_chunk, tape_nodes,
               tape_value_mb, tape_grad_mb, tape_scratch_mb, params_mb, load_start, loadavg1());
  std::printf(
      "{\"impl\":\"trflow\",\"shape\":\"%s\",\"coupling\":\"%s\",\"bins\":%d,\"tail_bound\":%g,"
      "\"data\":\"%s\",\"d\":%zu,\"layers\":%zu,\"hidden\":%zu,\"batch\":%zu,"
      "\"params\":%zu,\"threads\":%d,\"steps_per_s\":%.3f,\"rep_steps_per_s\":%s,\"steps_per_rep\":%d,"
      "\"cpu_ms_per_step\":%.2f,"
      "\"logprob_sps\":%.1f,\"sample_sps\":%.1f,\"peak_rss_mb\":%.1f,\"allocs_per_step\":%.2f,"
      "\"new_per_step\":%.2f,\"malloc_per_step\":%.2f,\"faults_per_step\":%.2f,"
      "\"alloc_bytes_per_step\":%.0f,\"logprob_allocs_per_chunk\":%.2f,\"sample_allocs_per_chunk\":%.2f,"
      "\"alloc_window\":\"%d:%d\",\"tape_nodes\":%zu,\"tape_value_mb\":%.1f,\"tape_grad_mb\":%.1f,"
      "\"tape_scratch_mb\":%.1f,\"params_adam_mb\":%.1f,\"last_loss\":%.5f,\"load_start\":%.2f,\"load_end\":%.2f,\"checksum\":%g}\n",
      shape->name, o.coupling.c_str(), rqs ? o.bins : 0, tail_bound, shape->data, d, shape->layers, shape->hidden,
      shape->batch, flow->parameter_count(), o.threads,
      steps_per_s, json_list(rep_rates).c_str(), steps_per_rep, cpu_ms_per_step, lp_sps, sample_sps, rss, allocs_per_step, new_per_step, malloc_per_step, faults_per_step,
      alloc_bytes_per_step, lp_allocs_per_chunk, sample_allocs_per_chunk, o.alloc_first, o.alloc_last, tape_nodes, tape_value_mb, tape_grad_mb, tape_scratch_mb,
      params_mb, last.loss, load_start, loadavg1(),
      checksum);
  return 0;
}
