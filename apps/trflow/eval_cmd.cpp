// trflow eval and trflow sample.
#include <filesystem>
#include <iostream>

#include <cblas.h>
#include <fmt/format.h>

#include "app.hpp"
#include "autodiff/simd.hpp"
#include "flows/inference.hpp"
#include "flows/metrics.hpp"
#include "model_dir.hpp"
#include "nn/io.hpp"

namespace trflow {

void set_threads(int /*n*/) { openblas_set_num_threads(1); }

std::string version_text() {
  const ad::SimdInfo s = ad::simd_info();
  return fmt::format("trflow 0.1.0 (xsimd {}: {} float / {} double lanes{})", s.arch, s.float_lanes, s.double_lanes,
                     ad::simd_supported_by_cpu() ? "" : "; NOT supported by this CPU");
}

int run_eval(const EvalOptions& o) {
  set_threads(o.threads);
  Model m = load_model_dir(o.model);
  auto data = dataset_for_model(m, o.data);
  const flows::EvalReport r = flows::evaluate(*m.flow, *data, o.n, o.seed, m.standardization.nll_offset(), o.threads);
  nlohmann::json j = r.to_json();
  j["data"] = o.data.empty() ? m.meta.value("data", std::string()) : o.data;
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
  const std::size_t d = m.flow->dim(), n = o.n, L = m.flow->num_layers();
  ad::Rng rng(o.seed);
  ad::Array<float> x;
  m.flow->base().sample(n, rng, x);
  const bool with_traj = !o.trajectories.empty();
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
