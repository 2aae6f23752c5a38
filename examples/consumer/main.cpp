// The C++ API outside the CLI, in a project that finds trflow with find_package(trflow):
//   1. the autodiff engine: a gradient on a tape, checked against central differences;
//   2. a flow: build it, train it on 8gaussians with transport regularization, evaluate it;
//   3. save it as `trflow` does and load it back.
// Exits 0 when every check holds (the test suite runs it), 1 otherwise.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "autodiff/autodiff.hpp"
#include "autodiff/gradcheck.hpp"
#include "flows/checkpoint.hpp"
#include "flows/datasets.hpp"
#include "flows/metrics.hpp"
#include "flows/train.hpp"

namespace {
int failures = 0;
void expect(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  failures += !ok;
}
}  // namespace

int main() {
  // 1. f(x) = Σ tanh(x ⊙ x + 1): the tape records it, backward() gives ∂f/∂x.
  ad::Array<double> x0({2, 3});
  for (std::size_t i = 0; i < x0.size(); ++i) x0.data()[i] = 0.3 * double(i) - 0.7;
  auto f = [](ad::Tape<double>&, const std::vector<ad::Var<double>>& x) { return ad::sum(ad::tanh(x[0] * x[0] + 1.0)); };
  const ad::GradcheckResult check = ad::gradcheck(f, {x0});
  expect(check.ok, "the tape's gradient of sum(tanh(x*x + 1)) matches central differences");

  // 2. Eight affine couplings on 8gaussians, λ·NLL + β·T, 600 Adam steps.
  auto data = flows::make_dataset("8gaussians");
  flows::FlowSpec spec;
  spec.layers = 6;
  spec.coupling.kind = flows::CouplingKind::affine;
  spec.coupling.hidden = 32;
  spec.seed = 1;
  auto flow = flows::make_flow<float>(data->dim(), spec);
  flows::TrainConfig cfg;
  cfg.batch = 256;
  cfg.lr = 3e-3;
  cfg.beta.start = 0.01;  // β: the transport cost's weight
  cfg.seed = 2;
  flows::Trainer<float> trainer(*flow, *data, cfg);
  const flows::EvalReport before = flows::evaluate(*flow, *data, 4000, 7);
  for (int step = 0; step < 600; ++step) trainer.step(false);
  const flows::EvalReport after = flows::evaluate(*flow, *data, 4000, 7);
  std::printf("     NLL %.3f -> %.3f nats, transport %.3f\n", before.nll, after.nll, after.transport);
  expect(after.nll < before.nll - 1.0, "training lowers the NLL by more than a nat");
  expect(std::isfinite(after.transport) && after.transport > 0, "the path energy is measured");

  // 3. Save and load: the same log-density.
  const auto path = std::filesystem::temp_directory_path() / "trflow_consumer_model.npz";
  flows::save_model(path.string(), *flow, nlohmann::json::object());
  flows::LoadedModel loaded = flows::load_model(path.string());
  const flows::EvalReport again = flows::evaluate(*loaded.flow, *data, 4000, 7);
  expect(std::abs(again.nll - after.nll) < 1e-9, "a saved and loaded flow has the same NLL");
  std::filesystem::remove(path);
  return failures == 0 ? 0 : 1;
}
