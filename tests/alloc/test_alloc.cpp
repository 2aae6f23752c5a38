// A steady-state training step allocates nothing, for every layer type and training option.
//
// Its own executable, since it replaces the process's allocation functions (operator new and
// the malloc family, bench/alloc_count.hpp) to count every heap allocation, OpenBLAS's and
// xtensor's included; not built with the sanitizers, which interpose malloc themselves.
//
// Each case builds a flow and a Trainer as `trflow train` does, takes warm-up steps (the tapes'
// pools, the GEMM packing buffers and the lanes' scratch grow to their size there), then counts
// the allocations of kCounted further steps, alternating the two kinds of step the app takes
// (with and without measuring the transport cost). A failure lists the allocating call sites.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "alloc_count.hpp"
#include "flows/datasets.hpp"
#include "flows/flow.hpp"
#include "flows/mfg.hpp"
#include "flows/train.hpp"

using namespace flows;

namespace {

constexpr int kWarmup = 4;   // steps before counting
constexpr int kCounted = 6;  // counted steps

/// The allocations of kCounted steps after kWarmup, with their sites; loss: the last step's.
template <class T>
std::size_t allocations_per_window(Flow<T>& flow, Dataset& data, const TrainConfig& cfg, std::string& sites,
                                   double& loss) {
  Trainer<T> trainer(flow, data, cfg);
  for (int s = 0; s < kWarmup; ++s) trainer.step(s % 2 == 0);
  alloc_count::reset();
  alloc_count::records_n = 0;
  alloc_count::counting = true;
  StepReport r;
  for (int s = 0; s < kCounted; ++s) r = trainer.step(s % 2 == 0);
  alloc_count::counting = false;
  const std::size_t n = std::size_t(alloc_count::total());
  sites = n ? alloc_count::sites_report(kCounted) : std::string();
  loss = r.loss;
  return n;
}

/// Records call stacks (preallocated once, before any counting window).
struct Tracing {
  Tracing() {
    alloc_count::records_cap = 4096;
    alloc_count::records =
        static_cast<alloc_count::Record*>(std::calloc(alloc_count::records_cap, sizeof(alloc_count::Record)));
    void* warm[4];
    backtrace(warm, 4);  // loads libgcc's unwinder now, not inside a window
    alloc_count::trace = true;
  }
};
const Tracing tracing;

FlowSpec small_spec(std::size_t layers = 4, std::size_t hidden = 16) {
  FlowSpec spec;
  spec.layers = layers;
  spec.coupling.hidden = hidden;
  spec.coupling.depth = 2;
  spec.seed = 3;
  return spec;
}

TrainConfig small_config(double beta = 0.1) {
  TrainConfig cfg;
  cfg.batch = 64;
  cfg.steps = 1000;
  cfg.beta.start = beta;
  cfg.seed = 1;
  return cfg;
}

/// Makes p visible to code the compiler cannot see.
void escape(void* p) { asm volatile("" : : "g"(p) : "memory"); }

template <class T = float>
void check_no_allocations(const std::string& data_spec, const FlowSpec& spec, const TrainConfig& cfg) {
  auto data = make_dataset(data_spec);
  auto flow = make_flow<T>(data->dim(), spec);
  std::string sites;
  double loss = 0;
  const std::size_t n = allocations_per_window(*flow, *data, cfg, sites, loss);
  CHECK(std::isfinite(loss));  // the steps did run
  CHECK_MESSAGE(n == 0, kCounted << " steady-state steps allocated " << n << " times\n" << sites);
}

}  // namespace

TEST_CASE("the counting allocator sees C++ and C allocations, and only inside its window") {
  alloc_count::reset();
  alloc_count::counting = true;
  auto* p = new std::string(100, 'x');  // operator new (twice: the object and its buffer)
  void* q = std::malloc(32);
  escape(p), escape(q);  // (a compiler may elide an allocation whose pointer does not escape)
  alloc_count::counting = false;
  delete p;
  std::free(q);
  void* outside = std::malloc(16);  // not counted
  escape(outside);
  std::free(outside);
  CHECK(alloc_count::count[alloc_count::cxx_new].load() >= 2);
  CHECK(alloc_count::count[alloc_count::c_malloc].load() == 1);
  // And a Trainer's construction does allocate, so a window around it would fail the checks below.
  auto data = make_dataset("8gaussians");
  auto flow = make_flow<float>(2, small_spec());
  alloc_count::reset();
  alloc_count::counting = true;
  { Trainer<float> trainer(*flow, *data, small_config()); }
  alloc_count::counting = false;
  CHECK(alloc_count::total() > 0);
}

TEST_CASE("every built-in data set draws a training batch without allocating") {
  // Dataset::sample runs every training step (a Trainer with several lanes calls
  // draw_unfinished and finish_block instead, the same work in two parts).
  for (const std::string spec : {"8gaussians", "moons", "circles", "rings", "pinwheel", "2spirals", "checkerboard",
                                 "swissroll", "gaussian:5", "gaussian:40", "gmm:3", "crowd:2", "drones2", "drones8",
                                 "brenier:3"}) {
    CAPTURE(spec);
    auto data = make_dataset(spec);
    const std::size_t n = 600, d = data->dim();
    std::vector<double> rows(n * d);
    ad::Rng rng(2);
    data->sample(n, rng, rows.data());  // warm-up (OpenBLAS's buffers)
    alloc_count::reset();
    alloc_count::records_n = 0;
    alloc_count::counting = true;
    for (int s = 0; s < 3; ++s) data->sample(n, rng, rows.data());
    data->draw_unfinished(n, rng, rows.data(), nullptr);
    for (std::size_t b = 0; b * data->finish_block_rows() < n && data->finish_block_rows() > 0; ++b)
      data->finish_block(rows.data(), n, b);
    alloc_count::counting = false;
    const std::size_t count = std::size_t(alloc_count::total());
    CHECK_MESSAGE(count == 0, "4 draws allocated " << count << " times\n" << alloc_count::sites_report(4));
    CHECK(std::isfinite(rows[0]));
  }
}

TEST_CASE("no allocation per training step: affine, additive and spline couplings") {
  for (const CouplingKind kind : {CouplingKind::affine, CouplingKind::additive, CouplingKind::rqs}) {
    const std::string coupling = coupling_kind_name(kind);
    CAPTURE(coupling);
    FlowSpec spec = small_spec();
    spec.coupling.kind = kind;
    spec.coupling.tail_bound = 4;
    check_no_allocations("8gaussians", spec, small_config());
    check_no_allocations("gaussian:6", spec, small_config());  // several coordinates per coupling
  }
}

TEST_CASE("no allocation per training step: ActNorm, LU, learned base, resnet conditioner, clamp, relu") {
  FlowSpec spec = small_spec();
  spec.actnorm = true;
  spec.lu = true;
  spec.base = "diagonal_gaussian";
  spec.coupling.conditioner = ConditionerKind::resnet;
  spec.coupling.scale_clamp = 2.0;
  spec.coupling.activation = ad::Activation::relu;
  check_no_allocations("gaussian:5", spec, small_config());
  spec.gaussian_init = true;  // the flow starts as the Gaussian fitted to the first batch
  spec.permutation = Permutation::alternate;
  check_no_allocations("gaussian:5", spec, small_config());
}

TEST_CASE("no allocation per training step: the paper's step structure, spline couplings, dropout") {
  FlowSpec spec = small_spec(3);
  spec.structure = Structure::steps;
  spec.coupling.kind = CouplingKind::rqs;
  spec.coupling.tail_bound = 5;
  spec.coupling.dropout = 0.2;
  spec.time_per_step = true;
  check_no_allocations("gaussian:4", spec, small_config());
}

TEST_CASE("no allocation per training step: transport towards the data (norm), clipping, schedules, weight decay") {
  TrainConfig cfg = small_config(0.5);
  cfg.direction = Direction::norm;
  cfg.clip_norm = 1.0;
  cfg.lr_schedule = nn::LrSchedule::Kind::cosine;
  cfg.warmup = 2;
  cfg.weight_decay = 1e-4;
  cfg.beta.kind = BetaSchedule::Kind::linear;
  cfg.beta.floor = 0.1;
  cfg.beta.steps = 20;
  cfg.skip_nonfinite = true;
  check_no_allocations("gaussian:4", small_spec(), cfg);
  cfg.beta.start = cfg.beta.floor = 0.0;  // NLL alone (the transport pass measured on alternate steps)
  cfg.beta.kind = BetaSchedule::Kind::constant;
  check_no_allocations("gaussian:4", small_spec(), cfg);
}

TEST_CASE("no allocation per training step: two threads, and float64") {
  TrainConfig cfg = small_config();
  cfg.threads = 2;
  FlowSpec spec = small_spec();
  check_no_allocations("gaussian:4", spec, cfg);
  spec.coupling.kind = CouplingKind::rqs;
  spec.coupling.tail_bound = 5;
  check_no_allocations("gaussian:4", spec, cfg);
  check_no_allocations<double>("gaussian:4", spec, small_config());
}

TEST_CASE("no allocation per training step: bench/train_bench's shapes A and B (packed and sliced GEMMs), 1 and 2 threads") {
  // The small cases above keep every product within OpenBLAS's small-matrix limit; these run
  // trflow's packed kernel and the weight gradients in slices of k (kern::gemm) at full size.
  for (const int threads : {1, 2}) {
    CAPTURE(threads);
    TrainConfig cfg = small_config(0.01);
    cfg.batch = 1024;
    cfg.threads = threads;
    FlowSpec a = small_spec(8, 64);
    check_no_allocations("8gaussians", a, cfg);
    FlowSpec b = small_spec(8, 128);
    check_no_allocations("gaussian:16", b, cfg);
    b.coupling.kind = CouplingKind::rqs;
    b.coupling.tail_bound = 5.5;
    check_no_allocations("gaussian:16", b, cfg);
  }
}

TEST_CASE("no allocation per training step: mean-field games (obstacle, populations)") {
  for (const std::string name : {"crowd", "drones2-obstacle"}) {
    CAPTURE(name);
    const MfgProblem p = mfg_problem(name, name == "crowd" ? 2 : 0);
    FlowSpec spec = small_spec(2);
    spec.structure = Structure::steps;
    spec.coupling.kind = CouplingKind::rqs;
    spec.coupling.tail_bound = 6;
    spec.base = "fixed_gaussian";
    spec.base_mean = p.p0_mean;
    spec.base_log_std.assign(p.dim, 0.5 * std::log(p.p0_var));
    spec.time_per_step = true;
    spec.populations = p.populations;
    TrainConfig cfg = small_config(1.0);
    cfg.reverse_kl = 1.0;
    cfg.running = 2.0;
    cfg.problem = &p;
    check_no_allocations(p.target, spec, cfg);
  }
}
