// trflow plot and trflow compare.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "app.hpp"
#include "figures.hpp"
#include "model_dir.hpp"
#include "nn/io.hpp"
#include "plot/plot.hpp"

namespace fs = std::filesystem;

namespace trflow {

int run_plot(const PlotOptions& o) {
  set_threads(o.threads);
  Model m = load_model_dir(o.model);
  const std::string spec = o.data.empty() ? m.meta.value("data", std::string()) : o.data;
  if (spec.empty()) throw UsageError("the model does not record its training data; pass --data");
  auto data = open_dataset(spec, m.meta.contains("train") && m.meta["train"].value("drop_nonfinite", false));
  if (data->dim() != m.flow->dim())
    throw DataError(fmt::format("{} has {} dimensions but the model has {}", spec, data->dim(), m.flow->dim()));
  const std::vector<std::string> files = write_all_figures(m, *data, o.out.empty() ? m.dir : o.out, o.n, o.seed, o.threads);
  std::cout << nlohmann::json({{"figures", files}}).dump() << std::endl;
  return 0;
}

namespace {
nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw DataError(fmt::format("cannot read {}", p.string()));
  return nlohmann::json::parse(in);
}
}  // namespace

int run_compare(const CompareOptions& o) {
  // A preset is resolved once, here: both arms get its architecture and steps, and the
  // regularized arm its β schedule; the other arm is the same flow trained with β = 0.
  if (!o.train.config.empty()) throw UsageError("compare: --config does not apply (rerun each arm with train --config)");
  TrainOptions shared = o.train;
  apply_preset(shared);
  if (shared.transport_weight <= 0)
    throw UsageError("compare: --transport-weight must be positive (the regularized arm; the other uses 0)");
  const fs::path out = o.out;
  TrainOptions with = shared, without = shared;
  with.out = (out / "with_transport").string();
  without.out = (out / "without_transport").string();
  without.preset = "none";
  without.transport_weight = 0.0;
  without.transport_schedule = "constant";
  without.transport_floor = 0.0;
  without.explicit_flags.clear();
  with.print_result = without.print_result = false;
  for (TrainOptions* arm : {&with, &without}) {
    const int rc = run_train(*arm);
    if (rc != 0) return rc;
  }
  Model a = load_model_dir(with.out), b = load_model_dir(without.out);
  std::size_t sa = 0, pa = 0, sb = 0, pb = 0;
  const std::vector<double> ta = grid_trajectories(a, 15, &sa, &pa), tb = grid_trajectories(b, 15, &sb, &pb);
  auto data = open_dataset(o.train.data, o.train.drop_nonfinite);
  std::vector<double> background(2 * 3000);
  {
    const std::size_t d = data->dim();
    std::vector<double> buf(3000 * d);
    ad::Rng rng(o.train.seed + 5);
    data->sample(3000, rng, buf.data());
    for (std::size_t i = 0; i < 3000; ++i) {
      background[2 * i] = buf[i * d];
      background[2 * i + 1] = d > 1 ? buf[i * d + 1] : 0.0;
    }
  }
  plot::TrajectoryOptions topt;
  topt.background = background;
  const fs::path figure = out / "trajectories_compare.png";
  const nlohmann::json ra = read_json(fs::path(with.out) / "result.json"), rb = read_json(fs::path(without.out) / "result.json");
  auto measured = [](const nlohmann::json& r) {  // T and the map cost the arm's result.json measured
    return fmt::format("T = {:.3g}, map cost = {:.3g}", r.value("transport", NAN), r.value("map_cost", NAN));
  };
  const std::string beta = shared.transport_schedule == "constant"
                               ? fmt::format("β = {:g}", shared.transport_weight)
                               : fmt::format("β {:g} → {:g}", shared.transport_weight, shared.transport_floor);
  plot::trajectories_compare(figure.string(), {ta, sa, pa}, {tb, sb, pb},
                             fmt::format("{}: {}", beta, measured(ra)), fmt::format("β = 0: {}", measured(rb)), topt);
  const nlohmann::json result = {{"with_transport", ra},
                                 {"without_transport", rb},
                                 {"figure", figure.string()}};
  nn::write_file_atomic((out / "comparison.json").string(), result.dump(2) + "\n");
  std::cout << result.dump() << std::endl;
  return 0;
}

}  // namespace trflow
