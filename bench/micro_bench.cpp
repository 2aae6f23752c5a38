// Micro-benchmarks (Google Benchmark) of the pieces a training step is made of, for the
// three benchmark shapes (m = batch rows, in = d − ⌊d/2⌋ conditioning columns,
// h = hidden width, out = 2⌊d/2⌋):
//
//   A: m 1024, in 1,  h 64,  out 2      B: m 1024, in 8, h 128, out 16
//   C: m 2048, in 32, h 512, out 64
//
//  * sgemm/<shape>/<layer>/<pass>: the three GEMMs of each dense layer, exactly as ops.cpp
//    calls cblas_sgemm (row-major): fwd  Z = X·Wᵀ (NT), dX += Z̄·W (NN, β = 1), dW += Z̄ᵀ·X (TN, β = 1).
//  * gemm/<shape>/<layer>/<pass>_m.._n.._k../{blas,kern}: the same GEMMs through cblas_sgemm and
//    through ad::kern::gemm (which picks an xsimd kernel for a skinny shape, see kernels.hpp;
//    the label names the kernel), at m = the batch and m = half of it (two threads split the
//    batch): every layer of shapes A and B (the hidden layers run the packed kernel, the
//    skinny ones the small_k, small_n and tn_thin kernels), the D = 1024 spline conditioner's
//    output layer (gemm/D1024/out) and shape B's with splines (gemm/Bspline/out: 128 → 184).
//  * linear_tanh/<shape>/{fwd,fwd_bwd}: the fused ad::linear_act node on a tape (hidden layer h→h).
//  * tanh/<shape>: the elementwise activation alone on an m×h tape value (forward node).
//  * coupling/<shape>/{forward,inverse,inverse_bwd}: one flows::AffineCoupling on a tape.
//  * adam/<shape>: nn::Adam::step over every parameter of the shape's flow.
//  * rq_spline/m1024_n<n>_K<K>/{fwd,fwd_bwd,inv,inv_bwd}: the ad::rq_spline op alone on a tape
//    (its inputs' copy onto the tape not timed; m×n values, m × n(3K−1) parameters, B = 3;
//    about 5% of the values outside [−B, B]); items/s = spline elements (m·n) per CPU-second.
//    fwd_bwd/inv_bwd: record + backward with adjoints for both the values and the parameters.
//    n = 1 and 8 are shapes A's and B's updated coordinates per coupling; n = 64 a wide one.
//  * fma_peak: the machine's fp32 FMA peak on one core, measured here with an xsimd loop of
//    independent accumulators; every other benchmark reports pct_peak against it.
//
// GFLOP/s counts 2·m·n·k per GEMM (activation and bias work not counted).
// With one BLAS thread (the default) GFLOP/s and pct_peak are per CPU-second of the benchmark
// thread, so other processes on a shared machine do not deflate them; Google Benchmark's own
// items_per_second also uses CPU time. Extra flag: --blas-threads=N (rates then use wall time).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <cblas.h>
#include "autodiff/xsimd.hpp"

#include "autodiff/ops.hpp"
#include "../autodiff/src/kernels.hpp"  // ad::kern::gemm and its skinny-shape kernels
#include "flows/flow.hpp"
#include "flows/layers.hpp"
#include "nn/optim.hpp"

namespace {

using Clock = std::chrono::steady_clock;
double g_peak_gflops = 0;  // measured in main() before the benchmarks run
int g_threads = 1;         // BLAS threads

// The machine is shared: with one BLAS thread, rates are per CPU-second of this thread
// (CLOCK_THREAD_CPUTIME_ID), which time spent descheduled by other processes does not inflate.
// With more threads, wall-clock time.
struct Timer {
  timespec cpu0{};
  Clock::time_point wall0 = Clock::now();
  Timer() { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0); }
  double seconds() const {
    if (g_threads > 1) return std::chrono::duration<double>(Clock::now() - wall0).count();
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec - cpu0.tv_sec) + 1e-9 * double(t.tv_nsec - cpu0.tv_nsec);
  }
};

struct Shape {
  const char* name;
  int m, d, h, layers;
  int in() const { return d - d / 2; }
  int out() const { return 2 * (d / 2); }
};
const Shape kShapes[] = {{"A", 1024, 2, 64, 8}, {"B", 1024, 16, 128, 8}, {"C", 2048, 64, 512, 16}};

// ---------------------------------------------------------------- FMA peak
// K independent chains acc_k ← acc_k·a + b: with K ≥ latency × FMA ports the loop is
// throughput-bound. Returns GFLOP/s (2 flops per lane per FMA). K + 2 registers must fit the
// register file: 16 chains for AVX-512's 32 registers, 12 for AVX2's and SSE's 16 (16 chains
// there spilled to the stack: an AVX2 build measured 100 GFLOP/s, below its own GEMMs' 115).
constexpr int kPeakChains = xsimd::batch<float>::size >= 16 ? 16 : 12;
template <int K>
double fma_peak(double seconds) {
  using B = xsimd::batch<float>;
  B acc[K];
  for (int k = 0; k < K; ++k) acc[k] = B(1.0f + 1e-3f * float(k));
  volatile float va = 0.99999994f, vb = 1e-7f;  // runtime values: nothing to fold at compile time
  const B a(va), b(vb);
  std::size_t iters = 0;
  const std::size_t inner = 1 << 16;
  const int saved = g_threads;
  g_threads = 1;  // one core: always per CPU-second
  const Timer timer;
  double elapsed = 0;
  do {
    for (std::size_t i = 0; i < inner; ++i) {
#pragma GCC unroll 32
      for (int k = 0; k < K; ++k) acc[k] = ad::kern::fma(acc[k], a, b);  // one vfmadd on AVX-512 whatever the compiler
    }
    iters += inner;
    elapsed = timer.seconds();
  } while (elapsed < seconds);
  g_threads = saved;
  B s(0.0f);
  for (int k = 0; k < K; ++k) s += acc[k];
  benchmark::DoNotOptimize(s);
  return double(iters) * K * B::size * 2 / elapsed * 1e-9;
}

void BM_fma_peak(benchmark::State& state) {
  double best = 0;
  for (auto _ : state) best = std::max(best, fma_peak<kPeakChains>(0.05));
  state.counters["GFLOP/s"] = best;
  state.counters["pct_peak"] = 100.0 * best / g_peak_gflops;
  state.SetLabel(std::string(xsimd::default_arch::name()) + ", " + std::to_string(kPeakChains) +
                 " accumulators, 1 thread");
}

void set_flops(benchmark::State& state, double flops_per_iter, double seconds, std::int64_t iters) {
  const double gflops = flops_per_iter * double(iters) / seconds * 1e-9;
  state.counters["GFLOP/s"] = gflops;
  state.counters["pct_peak"] = 100.0 * gflops / g_peak_gflops;
}

void fill(std::vector<float>& v, unsigned seed) {
  ad::Rng rng(seed);
  rng.fill_uniform(v.data(), v.size(), -1.0, 1.0);
}
void fill(ad::Array<float>& v, unsigned seed) {
  ad::Rng rng(seed);
  rng.fill_uniform(v.data(), v.size(), -1.0, 1.0);
}

// ---------------------------------------------------------------- GEMMs
// C(m×n) = α op(A) op(B) + β C, as ad::kern::gemm calls it.
void BM_sgemm(benchmark::State& state, bool ta, bool tb, int m, int n, int k, float beta) {
  std::vector<float> a(std::size_t(m) * k), b(std::size_t(k) * n), c(std::size_t(m) * n, 0.0f);
  fill(a, 1), fill(b, 2);
  const int lda = ta ? m : k, ldb = tb ? k : n;
  auto body = [&] {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a.data(),
                lda, b.data(), ldb, beta, c.data(), n);
    benchmark::ClobberMemory();
  };
  body();  // warm-up: first-touch page faults and OpenBLAS buffers are not part of the figure
  const Timer timer;
  for (auto _ : state) body();
  set_flops(state, 2.0 * m * n * k, timer.seconds(), state.iterations());
}

// C(m×n) = op(A) op(B) + β C through cblas_sgemm (blas) or ad::kern::gemm (kern).
void BM_gemm_vs(benchmark::State& state, bool kern, bool ta, bool tb, int m, int n, int k, float beta) {
  std::vector<float> a(std::size_t(m) * k), b(std::size_t(k) * n), c(std::size_t(m) * n, 0.0f);
  fill(a, 1), fill(b, 2);
  const int lda = ta ? m : k, ldb = tb ? k : n;
  auto body = [&] {
    if (kern) ad::kern::gemm(ta, tb, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, beta, c.data(), n);
    else ad::kern::gemm_blas(ta, tb, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, beta, c.data(), n);
    benchmark::ClobberMemory();
  };
  body();
  const Timer timer;
  for (auto _ : state) body();
  set_flops(state, 2.0 * m * n * k, timer.seconds(), state.iterations());
  state.SetLabel(ad::kern::gemm_kernel_name(kern ? ad::kern::gemm_kernel<float>(ta, tb, m, n, k) : ad::kern::GemmKernel::blas));
}

// ---------------------------------------------------------------- fused linear + tanh on the tape
void BM_linear_tanh(benchmark::State& state, Shape s, bool backward) {
  const std::size_t m = s.m, h = s.h;
  ad::Parameter<float> w("weight", h, h), b("bias", 1, h);
  fill(w.value, 3), fill(b.value, 4);
  ad::Array<float> x({m, h}), seed({m, h}, 1.0f);
  fill(x, 5);
  ad::Tape<float> tape;
  auto body = [&] {
    tape.clear();
    const auto xv = tape.variable(x);  // a hidden layer's input needs its adjoint too
    const auto y = ad::linear_act(xv, tape.param(w), tape.param(b), ad::Activation::tanh);
    if (backward) tape.backward(y, seed);
    benchmark::DoNotOptimize(y.value().data());
  };
  body();  // warm-up: sizes the tape's arrays
  const Timer timer;
  for (auto _ : state) body();
  const double mnk = double(m) * h * h;
  set_flops(state, (backward ? 6.0 : 2.0) * mnk, timer.seconds(),
            state.iterations());
  state.SetItemsProcessed(state.iterations() * std::int64_t(m));
}

void BM_tanh(benchmark::State& state, Shape s) {
  const std::size_t m = s.m, h = s.h;
  ad::Array<float> x({m, h});
  fill(x, 6);
  ad::Tape<float> tape;
  auto body = [&] {
    tape.clear();
    const auto y = ad::tanh(tape.constant(x));
    benchmark::DoNotOptimize(y.value().data());
  };
  body();
  for (auto _ : state) body();
  state.SetItemsProcessed(state.iterations() * std::int64_t(m * h));  // elements/s (includes the copy onto the tape)
}

// ---------------------------------------------------------------- affine coupling
enum class CouplingPass { forward, inverse, inverse_bwd };

void BM_coupling(benchmark::State& state, Shape s, CouplingPass pass) {
  const std::size_t m = s.m, d = s.d;
  ad::Rng rng(7);
  std::vector<int> a, b;
  flows::coupling_split(d, 0, flows::Permutation::random, rng, a, b);
  flows::CouplingConfig cfg;
  cfg.hidden = s.h;
  cfg.depth = 2;
  cfg.activation = ad::Activation::tanh;
  flows::AffineCoupling<float> layer(d, a, b, cfg, rng);
  // The last layer starts at zero; give it small weights so exp(w) is not trivially 1.
  for (auto* p : layer.parameters()) {
    ad::Rng r2(11);
    r2.fill_uniform(p->value.data(), p->value.size(), -0.05, 0.05);
  }
  ad::Array<float> x({m, d});
  fill(x, 8);
  ad::Tape<float> tape;
  auto body = [&] {
    tape.clear();
    if (pass == CouplingPass::forward) {
      benchmark::DoNotOptimize(layer.forward(tape.constant(x)).out.value().data());
    } else if (pass == CouplingPass::inverse) {
      benchmark::DoNotOptimize(layer.inverse(tape.constant(x)).out.value().data());
    } else {
      layer.zero_grad();
      const auto r = layer.inverse(tape.variable(x));
      const auto loss = ad::sum(r.out) + ad::sum(r.logdet);
      tape.backward(loss);
      benchmark::DoNotOptimize(loss.value().data());
    }
  };
  body();  // warm-up: sizes the tape's arrays
  const Timer timer;
  for (auto _ : state) body();
  const double mlp = double(m) * (double(s.in()) * s.h + double(s.h) * s.h + double(s.h) * s.out());
  set_flops(state, (pass == CouplingPass::inverse_bwd ? 6.0 : 2.0) * mlp,
            timer.seconds(), state.iterations());
  state.SetItemsProcessed(state.iterations() * std::int64_t(m));
}

// ---------------------------------------------------------------- rational-quadratic spline op
void BM_rq_spline(benchmark::State& state, int m, int n, int K, bool inverse, bool backward) {
  const float B = 3.0f;
  const std::size_t P = std::size_t(3 * K - 1);
  ad::Array<float> x({std::size_t(m), std::size_t(n)}), theta({std::size_t(m), std::size_t(n) * P});
  ad::Rng rng(21);
  rng.fill_uniform(x.data(), x.size(), -1.05 * B, 1.05 * B);  // ~5% outside the box
  rng.fill_uniform(theta.data(), theta.size(), -2.0, 2.0);   // bins of a few times unequal size
  if (inverse) {  // invert values the forward map produced (same distribution as in a flow)
    ad::Tape<float> t0;
    const auto r = ad::rq_spline(t0.constant(x), t0.constant(theta), K, B, false);
    for (std::size_t i = 0; i < std::size_t(m); ++i)
      for (std::size_t j = 0; j < std::size_t(n); ++j) x(i, j) = r.value()(i, j);
  }
  ad::Tape<float> tape;
  ad::Array<float> seed({std::size_t(m), std::size_t(n) + 1}, 1.0f);
  // Recording the inputs copies them onto the tape (θ is 6 MB at n = 64, its copy about a
  // third of the forward's time): that part runs with the clock stopped, so the figure is the
  // op's own (and its backward's), as torch_spline.py --op-bench times its rq_spline().
  ad::Var<float> xv, tv;
  auto inputs = [&] {
    tape.clear();
    xv = backward ? tape.variable(x) : tape.constant(x);
    tv = backward ? tape.variable(theta) : tape.constant(theta);
  };
  auto op = [&] {
    const auto r = ad::rq_spline(xv, tv, K, B, inverse);
    if (backward) tape.backward(r, seed);
    benchmark::DoNotOptimize(r.value().data());
  };
  inputs(), op();  // warm-up: sizes the tape's arrays
  for (auto _ : state) {
    state.PauseTiming();
    inputs();
    state.ResumeTiming();
    op();
  }
  state.SetItemsProcessed(state.iterations() * std::int64_t(m) * n);  // spline elements/s
  state.SetLabel("K=" + std::to_string(K) + (inverse ? ", inverse" : ", forward"));
}

// ---------------------------------------------------------------- Adam
void BM_adam(benchmark::State& state, Shape s) {
  flows::FlowSpec spec;
  spec.layers = s.layers;
  spec.coupling.hidden = s.h;
  spec.coupling.depth = 2;
  auto flow = flows::make_flow<float>(s.d, spec);
  auto params = flow->parameters();
  for (auto* p : params) fill(p->grad, 9);
  nn::Adam<float> adam(params, 1e-3);
  std::size_t n = 0;
  for (auto* p : params) n += p->value.size();
  adam.step();
  for (auto _ : state) adam.step();
  state.SetItemsProcessed(state.iterations() * std::int64_t(n));  // parameters/s
  state.SetLabel(std::to_string(n) + " parameters");
}

/// A dense layer's three GEMMs (h inputs, o outputs, m rows: Z = X·Wᵀ, X̄ += Z̄·W, W̄ += Z̄ᵀ·X),
/// ad::kern::gemm against cblas: <prefix><pass>_m.._n.._k../{blas,kern}.
void register_layer_vs(const std::string& prefix, int m, int h, int o) {
  struct G { const char* pass; bool ta, tb; int m, n, k; float beta; };
  const G gs[] = {{"fwd_NT", false, true, m, o, h, 0.0f}, {"dX_NN", false, false, m, h, o, 1.0f},
                  {"dW_TN", true, false, o, h, m, 1.0f}};
  for (const G& g : gs)
    for (bool kern : {false, true}) {
      const std::string name = prefix + g.pass + "_m" + std::to_string(g.m) + "_n" + std::to_string(g.n) + "_k" +
                               std::to_string(g.k) + (kern ? "/kern" : "/blas");
      benchmark::RegisterBenchmark(name.c_str(), BM_gemm_vs, kern, g.ta, g.tb, g.m, g.n, g.k, g.beta)
          ->Unit(benchmark::kMicrosecond);
    }
}

void register_all() {
  benchmark::RegisterBenchmark("fma_peak", BM_fma_peak)->Iterations(5)->Unit(benchmark::kMillisecond);
  for (const Shape& s : kShapes) {
    const std::string S = s.name;
    struct L { const char* name; int in, out; };
    const L layers[] = {{"in", s.in(), s.h}, {"hidden", s.h, s.h}, {"out", s.h, s.out()}};
    for (const L& l : layers) {
      const std::string base = "sgemm/" + S + "/" + l.name + "/";
      // fwd: Z(m×out) = X(m×in) · Wᵀ
      benchmark::RegisterBenchmark((base + "fwd_NT_m" + std::to_string(s.m) + "_n" + std::to_string(l.out) + "_k" +
                                    std::to_string(l.in)).c_str(),
                                   BM_sgemm, false, true, s.m, l.out, l.in, 0.0f)
          ->Unit(benchmark::kMicrosecond);
      // dX(m×in) += Z̄(m×out) · W(out×in)
      benchmark::RegisterBenchmark((base + "dX_NN_m" + std::to_string(s.m) + "_n" + std::to_string(l.in) + "_k" +
                                    std::to_string(l.out)).c_str(),
                                   BM_sgemm, false, false, s.m, l.in, l.out, 1.0f)
          ->Unit(benchmark::kMicrosecond);
      // dW(out×in) += Z̄ᵀ(out×m) · X(m×in)
      benchmark::RegisterBenchmark((base + "dW_TN_m" + std::to_string(l.out) + "_n" + std::to_string(l.in) + "_k" +
                                    std::to_string(s.m)).c_str(),
                                   BM_sgemm, true, false, l.out, l.in, s.m, 1.0f)
          ->Unit(benchmark::kMicrosecond);
    }
    // The spline conditioner's output layer at gaussian:1024 (bench/d_scaling.sh): batch 512,
    // hidden 64, 23·512 = 11 776 outputs. k = 64 is short, so packing op(B) is a larger share
    // of the forward than in the square layers above.
    if (S == "C") register_layer_vs("gemm/D1024/out/", 512, 64, 23 * 512);
    // The spline conditioner's output layer at shape B (train_bench --coupling rqs, K = 8):
    // hidden 128, 23·8 = 184 outputs, 57 % of a spline step's GEMM flops.
    if (S == "B") register_layer_vs("gemm/Bspline/out/", s.m, s.h, 23 * (s.d / 2));
    // cblas against ad::kern::gemm, at the batch and (shapes A and B) half of it
    for (int m : {s.m, s.m / 2})
      if (S != "C" || m == s.m)
        for (const L& l : layers) {
          struct G { const char* pass; bool ta, tb; int m, n, k; float beta; };
          const std::string dims = "_m" + std::to_string(m);
          const G gs[] = {{"fwd_NT", false, true, m, l.out, l.in, 0.0f},
                          {"dX_NN", false, false, m, l.in, l.out, 1.0f},
                          {"dW_TN", true, false, l.out, l.in, m, 1.0f}};
          for (const G& g : gs)
            for (bool kern : {false, true}) {
              const std::string name = "gemm/" + S + "/" + l.name + "/" + g.pass + "_m" + std::to_string(g.m) + "_n" +
                                       std::to_string(g.n) + "_k" + std::to_string(g.k) + (kern ? "/kern" : "/blas");
              benchmark::RegisterBenchmark(name.c_str(), BM_gemm_vs, kern, g.ta, g.tb, g.m, g.n, g.k, g.beta)
                  ->Unit(benchmark::kMicrosecond);
            }
          (void)dims;
        }
    benchmark::RegisterBenchmark(("linear_tanh/" + S + "/fwd").c_str(), BM_linear_tanh, s, false)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("linear_tanh/" + S + "/fwd_bwd").c_str(), BM_linear_tanh, s, true)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("tanh/" + S).c_str(), BM_tanh, s)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("coupling/" + S + "/forward").c_str(), BM_coupling, s, CouplingPass::forward)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("coupling/" + S + "/inverse").c_str(), BM_coupling, s, CouplingPass::inverse)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("coupling/" + S + "/inverse_bwd").c_str(), BM_coupling, s, CouplingPass::inverse_bwd)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("adam/" + S).c_str(), BM_adam, s)->Unit(benchmark::kMicrosecond);
  }
  for (int n : {1, 8, 64}) {
    const int m = 1024, K = 8;
    const std::string base = "rq_spline/m" + std::to_string(m) + "_n" + std::to_string(n) + "_K" + std::to_string(K) + "/";
    benchmark::RegisterBenchmark((base + "fwd").c_str(), BM_rq_spline, m, n, K, false, false)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((base + "fwd_bwd").c_str(), BM_rq_spline, m, n, K, false, true)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((base + "inv").c_str(), BM_rq_spline, m, n, K, true, false)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((base + "inv_bwd").c_str(), BM_rq_spline, m, n, K, true, true)->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--blas-threads=", 15) == 0) threads = std::atoi(argv[i] + 15);
    else args.push_back(argv[i]);
  }
  int n = int(args.size());
  openblas_set_num_threads(threads);
  g_threads = threads;
  for (int r = 0; r < 3; ++r) g_peak_gflops = std::max(g_peak_gflops, fma_peak<kPeakChains>(0.1));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", g_peak_gflops);
  benchmark::AddCustomContext("fp32_fma_peak_gflops_1core", buf);
  benchmark::AddCustomContext("simd_arch", xsimd::default_arch::name());
  benchmark::AddCustomContext("blas_threads", std::to_string(threads));
  benchmark::AddCustomContext("rates_per", threads == 1 ? "thread CPU second" : "wall-clock second");
  benchmark::AddCustomContext("openblas_core", openblas_get_corename());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
