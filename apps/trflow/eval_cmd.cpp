// trflow eval and trflow sample.
#include <filesystem>
#include <iostream>

#include <cblas.h>
#include <fmt/format.h>

#include "app.hpp"
#include "autodiff/simd.hpp"
#include "flows/inference.hpp"
#include "flows/metrics.hpp"
#include "flows/mfg.hpp"
#include "model_dir.hpp"
#include "nn/io.hpp"
#include "run_dir.hpp"

namespace trflow {

void set_threads(int /*n*/) { openblas_set_num_threads(1); }

namespace {
flows::Communicator* g_world = nullptr;
}
flows::Communicator* world() { return g_world; }
void set_world(flows::Communicator* comm) { g_world = comm; }

std::string version_text() {
  const ad::SimdInfo s = ad::simd_info();
  return fmt::format("trflow 0.1.0 (xsimd {}: {} float / {} double lanes{}; {})", s.arch, s.float_lanes, s.double_lanes,
                     ad::simd_supported_by_cpu() ? "" : "; NOT supported by this CPU",
                     flows::mpi_available() ? "MPI: " + flows::mpi_library() + ", mpirun -np N trflow train … splits each batch"
                                            : "no MPI: one process");
}

namespace {
/// Refuses --n when n rows of `floats_per_row` float32 values would not fit in memory.
void check_rows_fit(std::size_t n, double floats_per_row, const char* what) {
  const double need = 4.0 * double(n) * floats_per_row, have = physical_memory_bytes();
  if (have > 0 && need > 0.8 * have)
    throw UsageError(fmt::format("--n {}: {} need about {:.3g} GiB, more than 80 % of this machine's {:.3g} GiB; "
                                 "lower --n",
                                 n, what, need / 1073741824.0, have / 1073741824.0));
}
}  // namespace

int run_eval(const EvalOptions& o) {
  set_threads(o.threads);
  Model m = load_model_dir(o.model);
  // The samples, their images and densities in float32 and float64, and the data's rows.
  check_rows_fit(o.n, 8.0 * double(m.flow->dim()) + 8.0, "the evaluation's samples");
  auto data = dataset_for_model(m, o.data);
  const flows::EvalReport r = flows::evaluate(*m.flow, *data, o.n, o.seed, m.standardization.nll_offset(), o.threads);
  nlohmann::json j = r.to_json();
  j["data"] = o.data.empty() ? m.meta.value("data", std::string()) : o.data;
  // A mean-field game's own terms: the kinetic energy (T), the running cost, the obstacle share.
  const std::string problem = m.meta.contains("train") ? m.meta["train"].value("problem", std::string()) : std::string();
  if (!problem.empty()) {
    const flows::MfgProblem p = flows::mfg_problem(problem, m.flow->dim());
    j.update(flows::mfg_report(*m.flow, p, std::min<std::size_t>(o.n, 20000), o.seed + 1, o.threads).to_json());
  }
  std::cout << j.dump() << std::endl;
  return 0;
}

int run_sample(const SampleOptions& o) {
  if (o.out.empty()) throw UsageError("--out: expected a .npy file, got an empty path");
  if (!o.trajectories.empty()) {
    std::error_code ec1, ec2;
    const auto a = std::filesystem::weakly_canonical(o.out, ec1), b = std::filesystem::weakly_canonical(o.trajectories, ec2);
    if (!ec1 && !ec2 && a == b)
      throw UsageError(fmt::format("--out and --trajectories name the same file ({}): one would overwrite the other", a.string()));
  }
  set_threads(o.threads);
  Model m = load_model_dir(o.model);
  const std::size_t d = m.flow->dim(), n = o.n, L = m.flow->num_time_steps();
  const bool with_traj = !o.trajectories.empty();
  // Base draws, samples and their encoded copy; the states and their encoded copy.
  check_rows_fit(n, double(d) * (3.0 + (with_traj ? 2.0 * double(L + 1) : 0.0)), "the samples (and trajectories)");
  ad::Rng rng(o.seed);
  ad::Array<float> x;
  m.flow->base().sample(n, rng, x);
  std::vector<float> samples(n * d), all(with_traj ? (L + 1) * n * d : 0);
  flows::PushOutputs<float> out;
  out.y = samples.data();
  if (with_traj) out.states = all.data();  // (L+1, N, D), starting from the base samples
  flows::Inference<float>(*m.flow, o.threads).forward(x.data(), n, out);

  if (m.standardization.active()) m.standardization.invert(samples.data(), n);
  nn::write_file_atomic(o.out, nn::encode_npy(samples.data(), {n, d}));
  if (with_traj) {
    if (m.standardization.active())  // states in data units
      for (std::size_t l = 0; l <= L; ++l) m.standardization.invert(all.data() + l * n * d, n);
    nn::write_file_atomic(o.trajectories, nn::encode_npy(all.data(), {L + 1, n, d}));
  }
  std::cout << nlohmann::json({{"samples", o.out}, {"n", n}, {"dim", d}, {"trajectories", o.trajectories}}).dump()
            << std::endl;
  return 0;
}

}  // namespace trflow
