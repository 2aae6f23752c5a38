// The figures of a trained model, drawn with the plot library.
#include "figures.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "flows/inference.hpp"
#include "flows/metrics.hpp"
#include "flows/mfg.hpp"
#include "plot/plot.hpp"

namespace fs = std::filesystem;

namespace trflow {
namespace {

/// The first two coordinates of n rows of d (n×2 row-major; 0 for a missing second one).
template <class T>
std::vector<double> first_two(const T* rows, std::size_t n, std::size_t d, std::size_t populations = 1) {
  // Several populations side by side: every group's first two coordinates, group after group.
  const std::size_t block = d / populations;
  std::vector<double> xy(2 * n * populations);
  for (std::size_t k = 0; k < populations; ++k)
    for (std::size_t i = 0; i < n; ++i) {
      xy[2 * (k * n + i)] = double(rows[i * d + k * block]);
      xy[2 * (k * n + i) + 1] = block > 1 ? double(rows[i * d + k * block + 1]) : 0.0;
    }
  return xy;
}

/// How many populations a model's state holds (a multi-population mean-field game), else 1.
std::size_t populations_of(const Model& m) {
  const std::string problem = m.meta.contains("train") ? m.meta["train"].value("problem", std::string()) : std::string();
  return problem.empty() ? 1 : flows::mfg_problem(problem, m.flow->dim()).populations;
}

/// F(x) for the rows of x (in the model's units).
std::vector<float> push(Model& m, const ad::Array<float>& x, int threads) {
  std::vector<float> y(x.size());
  flows::PushOutputs<float> out;
  out.y = y.data();
  flows::Inference<float>(*m.flow, threads).forward(x.data(), x.shape()[0], out);
  return y;
}

/// per_side² base points on a grid over [−2, 2]² in the first two coordinates (0 in the others).
ad::Array<float> base_grid(std::size_t per_side, std::size_t d) {
  ad::Array<float> x({per_side * per_side, d}, 0.0f);
  for (std::size_t a = 0; a < per_side; ++a)
    for (std::size_t b = 0; b < per_side; ++b) {
      x(a * per_side + b, 0) = float(-2.0 + 4.0 * double(a) / double(per_side - 1));
      if (d > 1) x(a * per_side + b, 1) = float(-2.0 + 4.0 * double(b) / double(per_side - 1));
    }
  return x;
}

/// n model samples in data units, first two coordinates (n×2 row-major).
std::vector<double> model_samples_2d(Model& m, std::size_t n, ad::Rng& rng, int threads) {
  const std::size_t d = m.flow->dim();
  ad::Array<float> x;
  m.flow->base().sample(n, rng, x);
  std::vector<float> v = push(m, x, threads);
  if (m.standardization.active()) m.standardization.invert(v.data(), n);
  return first_two(v.data(), n, d, populations_of(m));
}

std::vector<double> target_samples_2d(flows::Dataset& data, std::size_t n, ad::Rng& rng, std::size_t populations = 1) {
  const std::size_t d = data.dim();
  std::vector<double> buf(n * d);
  data.sample(n, rng, buf.data());
  return first_two(buf.data(), n, d, populations);
}

/// The model's density on a grid over `lim`: exact log p for d = 2; for d > 2 the
/// 2-D marginal of the first two coordinates, estimated by a smoothed histogram of samples.
std::vector<double> density_grid(Model& m, const plot::Limits& lim, std::size_t nx, std::size_t ny, ad::Rng& rng,
                                 int threads) {
  std::vector<double> values(nx * ny, 0.0);
  const std::vector<double> cx = plot::cell_centers(lim.x0, lim.x1, nx), cy = plot::cell_centers(lim.y0, lim.y1, ny);
  if (m.flow->dim() == 2) {
    ad::Array<float> grid({nx * ny, 2});
    for (std::size_t j = 0; j < ny; ++j)
      for (std::size_t i = 0; i < nx; ++i) {
        double px = cx[i], py = cy[j];
        if (m.standardization.active()) {
          px = (px - m.standardization.mean[0]) / m.standardization.std[0];
          py = (py - m.standardization.mean[1]) / m.standardization.std[1];
        }
        grid(j * nx + i, 0) = float(px);
        grid(j * nx + i, 1) = float(py);
      }
    std::vector<float> lp(nx * ny);
    flows::Inference<float>(*m.flow, threads).log_prob(grid.data(), nx * ny, lp.data());
    const double offset = m.standardization.nll_offset();  // density in data units
    for (std::size_t k = 0; k < nx * ny; ++k) values[k] = std::exp(double(lp[k]) - offset);
    return values;
  }
  const std::size_t n = 200000;
  const std::vector<double> xy = model_samples_2d(m, n, rng, threads);
  const std::size_t count = xy.size() / 2;  // n, or n per population (their marginals' average)
  const double wx = (lim.x1 - lim.x0) / double(nx), wy = (lim.y1 - lim.y0) / double(ny);
  for (std::size_t k = 0; k < count; ++k) {
    const double fx = (xy[2 * k] - lim.x0) / wx, fy = (xy[2 * k + 1] - lim.y0) / wy;
    if (fx < 0 || fy < 0 || fx >= double(nx) || fy >= double(ny)) continue;
    values[std::size_t(fy) * nx + std::size_t(fx)] += 1.0 / (double(count) * wx * wy);
  }
  // One pass of a 3×3 binomial blur: the histogram's noise, not its shape.
  std::vector<double> smooth(values.size(), 0.0);
  for (std::size_t j = 0; j < ny; ++j)
    for (std::size_t i = 0; i < nx; ++i) {
      double s = 0, w = 0;
      for (int dj = -1; dj <= 1; ++dj)
        for (int di = -1; di <= 1; ++di) {
          const long jj = long(j) + dj, ii = long(i) + di;
          if (jj < 0 || ii < 0 || jj >= long(ny) || ii >= long(nx)) continue;
          const double k = (di == 0 ? 2 : 1) * (dj == 0 ? 2 : 1);
          s += k * values[std::size_t(jj) * nx + std::size_t(ii)];
          w += k;
        }
      smooth[j * nx + i] = s / w;
    }
  return smooth;
}

/// (step, loss, nll, transport) columns of metrics.jsonl, missing values NaN, and the
/// validation NLL at the steps that have one.
std::vector<plot::CurvePanel> loss_panels(const fs::path& metrics) {
  std::ifstream in(metrics);
  std::vector<double> steps, loss, nll, transport, beta, val_steps, val_nll;
  std::string line;
  auto num = [](const nlohmann::json& j, const char* key) {
    return j.contains(key) && j[key].is_number() ? j[key].get<double>() : std::nan("");
  };
  while (std::getline(in, line)) {
    try {
      const nlohmann::json j = nlohmann::json::parse(line);
      steps.push_back(num(j, "step"));
      loss.push_back(num(j, "loss"));
      nll.push_back(num(j, "nll"));
      transport.push_back(num(j, "transport"));
      if (std::isfinite(num(j, "val_nll"))) val_steps.push_back(num(j, "step")), val_nll.push_back(num(j, "val_nll"));
    } catch (const std::exception&) {  // a torn line from an interrupted run
    }
  }
  plot::CurvePanel p1{{{"loss  λ·NLL + β·T", steps, loss}, {"NLL", steps, nll}}, "nats", "training objective", false, {}};
  if (!val_steps.empty()) p1.series.push_back({"validation NLL", val_steps, val_nll});
  plot::CurvePanel p2{{{"transport T", steps, transport}}, "path energy", "", false, {}};
  return {p1, p2};
}

}  // namespace

std::vector<double> grid_trajectories(Model& m, std::size_t per_side, std::size_t* states, std::size_t* points,
                                      std::vector<int>* groups) {
  const std::size_t d = m.flow->dim(), n = per_side * per_side, P = populations_of(m);
  ad::Array<float> x = base_grid(per_side, d);
  // A mean-field game's population starts from its P0 (the base), not from around the origin.
  if (m.meta.contains("train") && !m.meta["train"].value("problem", std::string()).empty()) {
    ad::Rng rng(11);
    m.flow->base().sample(n, rng, x);
  }
  ad::Tape<float> tape;
  std::vector<ad::Var<float>> traj;
  m.flow->forward(tape.constant(x), &traj);
  // Several populations: each group's paths are points of their own (group after group).
  *states = traj.size();
  *points = n * P;
  if (groups) {
    groups->assign(n * P, 0);
    for (std::size_t k = 0; k < P; ++k) std::fill(groups->begin() + long(k * n), groups->begin() + long((k + 1) * n), int(k));
  }
  std::vector<double> xy(traj.size() * n * P * 2);
  std::vector<float> state(n * d);
  for (std::size_t s = 0; s < traj.size(); ++s) {
    std::copy(traj[s].value().data(), traj[s].value().data() + n * d, state.data());
    if (m.standardization.active()) m.standardization.invert(state.data(), n);
    const std::vector<double> planar = first_two(state.data(), n, d, P);
    std::copy(planar.begin(), planar.end(), xy.begin() + long(s * n * P * 2));
  }
  return xy;
}

std::vector<std::string> write_all_figures(Model& m, flows::Dataset& data, const std::string& dir, std::size_t n,
                                           std::uint64_t seed, int threads) {
  const fs::path out = dir;
  fs::create_directories(out);
  ad::Rng rng(seed);
  std::vector<std::string> written;

  const std::size_t populations = populations_of(m);
  const std::vector<double> target = target_samples_2d(data, n, rng, populations);
  const std::vector<double> model = model_samples_2d(m, n, rng, threads);
  plot::scatter_compare((out / "samples.png").string(), target, model, "target samples", "model samples");
  written.push_back((out / "samples.png").string());

  const plot::Limits lim = plot::square_limits(plot::robust_limits(target));
  const std::size_t cells = 160;
  plot::HeatmapOptions hopt;
  hopt.colorbar_label = "density";
  const std::vector<double> dens = density_grid(m, lim, cells, cells, rng, threads);
  plot::density_heatmap((out / "density.png").string(), dens, cells, cells, lim,
                        m.flow->dim() == 2       ? "model density"
                        : populations > 1        ? fmt::format("model density, the {} groups' (x1, x2)", populations)
                                                 : std::string("model density, marginal of (x1, x2)"),
                        hopt);
  written.push_back((out / "density.png").string());

  std::size_t states = 0, points = 0;
  std::vector<int> groups;
  const std::vector<double> traj = grid_trajectories(m, populations > 1 ? 8 : 15, &states, &points, &groups);
  plot::TrajectoryOptions topt;
  const double beta = m.meta.contains("train") ? m.meta["train"].value("transport_weight", 0.0) : 0.0;
  const nlohmann::json train = m.meta.contains("train") ? m.meta["train"] : nlohmann::json::object();
  const std::string problem = train.value("problem", std::string());
  if (!problem.empty()) {
    const flows::MfgProblem p = flows::mfg_problem(problem, m.flow->dim());
    const std::string schedule = train.value("transport_schedule", std::string("constant"));
    topt.title = fmt::format("{}: {} steps (λ_L = {}, λ_F = {:g})", problem, states - 1,
                             schedule == "constant" ? fmt::format("{:g}", beta)
                                                    : fmt::format("{:g}→{:g}", beta, train.value("transport_floor", 0.0)),
                             train.value("cost_weight", 0.0));
    if (p.has_obstacle)
      topt.obstacle = plot::TrajectoryOptions::Obstacle{p.obstacle.cx, p.obstacle.cy, std::sqrt(p.obstacle.vx),
                                                        std::sqrt(p.obstacle.vy)};
    if (populations > 1) {
      topt.color = plot::PathColor::Group;
      topt.groups = groups;
    }
    topt.start_label = "start (P0)";
    topt.end_label = "end";
    topt.background_label = "target P1";
  } else {
    topt.title = fmt::format("trajectories through {} {} (β = {:g})", states - 1,
                             m.flow->layers_per_time_step() > 1 ? "steps" : "layers", beta);
  }
  // At most 2 000 target points, spread over all of them (every group's, for several populations).
  std::vector<double> background;
  const std::size_t target_points = target.size() / 2, stride = std::max<std::size_t>(1, target_points / 2000);
  for (std::size_t i = 0; i < target_points; i += stride) background.insert(background.end(), {target[2 * i], target[2 * i + 1]});
  topt.background = background;
  plot::trajectories((out / "trajectories.png").string(), traj, states, points, topt);
  written.push_back((out / "trajectories.png").string());

  // The learned map against the optimal-transport map, for targets whose T* is known (not for
  // standardized models: standardizing coordinate by coordinate does not keep a map optimal).
  if (data.has_ot_map() && !m.standardization.active()) {
    const std::size_t side = 13, k = side * side, d = m.flow->dim();
    const ad::Array<float> x = base_grid(side, d);
    const std::vector<double> xd(x.begin(), x.end());  // T* takes double rows
    std::vector<double> tx(k * d);
    data.ot_map(xd.data(), k, tx.data());
    const std::vector<float> fx = push(m, x, threads);
    // L2-UVP on many base draws, for the title (the grid alone is not a sample of the base).
    const std::size_t ns = 4000;
    ad::Array<float> xs;
    m.flow->base().sample(ns, rng, xs);
    std::vector<double> rows(ns * d);
    data.sample(ns, rng, rows.data());
    const flows::OtScores sc =
        flows::ot_scores(data, xs, push(m, xs, threads).data(), flows::total_variance(data, rows.data(), ns));
    const std::string title = fmt::format("F against T*{}: L2-UVP {:.2g} %, cos {:.3f}",
                                          d > 2 ? " (x1, x2)" : "", sc.l2_uvp.value_or(NAN), sc.ot_cos.value_or(NAN));
    plot::map_compare((out / "ot_map.png").string(), first_two(x.data(), k, d), first_two(fx.data(), k, d),
                      first_two(tx.data(), k, d), title, "learned map F(x)",
                      "optimal-transport map T*(x)", background);
    written.push_back((out / "ot_map.png").string());
  }

  const fs::path metrics = fs::path(m.dir) / "metrics.jsonl";
  if (fs::exists(metrics)) {
    plot::curve_panels((out / "losses.png").string(), loss_panels(metrics), "step", "training curves");
    written.push_back((out / "losses.png").string());
  }
  return written;
}

}  // namespace trflow
