#include "flows/mfg.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

namespace flows {

namespace {
constexpr double kTwoPi = 6.283185307179586;
}

double Obstacle::cost(double x, double y) const {
  const double dx = x - cx, dy = y - cy;
  return scale * std::exp(-0.5 * (dx * dx / vx + dy * dy / vy)) / (kTwoPi * std::sqrt(vx * vy));
}

bool Obstacle::inside(double x, double y) const {
  const double dx = x - cx, dy = y - cy;
  return dx * dx / vx + dy * dy / vy <= 1.0;
}

std::vector<double> simpson_weights(std::size_t states) {
  if (states == 0) throw std::invalid_argument("simpson_weights: no states");
  if (states == 1) return {1.0};
  const std::size_t L = states - 1;
  const double h = 1.0 / double(L);
  std::vector<double> w(states, 0.0);
  if (L == 1) return {0.5, 0.5};
  // Simpson's 1/3 rule on [0, L − r] intervals (an even count), 3/8 on the last r = 0 or 3.
  const std::size_t r = L % 2 == 0 ? 0 : 3;
  for (std::size_t i = 0; i + 2 <= L - r; i += 2) {
    w[i] += h / 3.0;
    w[i + 1] += 4.0 * h / 3.0;
    w[i + 2] += h / 3.0;
  }
  if (r == 3) {
    const std::size_t i = L - 3;
    w[i] += 3.0 * h / 8.0;
    w[i + 1] += 9.0 * h / 8.0;
    w[i + 2] += 9.0 * h / 8.0;
    w[i + 3] += 3.0 * h / 8.0;
  }
  return w;
}

// F_P = Σ_l w_l · (1/m) Σ_i scale · exp(−½ ((x_i1 − c_x)²/v_x + (x_i2 − c_y)²/v_y)) / (2π √(v_x v_y))
template <class T>
Var<T> obstacle_cost(const std::vector<Var<T>>& traj, const Obstacle& q, std::size_t column) {
  if (traj.empty()) throw std::invalid_argument("obstacle_cost: no states");
  if (traj[0].cols() < column + 2)
    throw std::invalid_argument(fmt::format("obstacle_cost: columns {} and {} of states with {}", column, column + 1, traj[0].cols()));
  static thread_local std::vector<double> w;  // computed once per trajectory length: no allocation per step
  if (w.size() != traj.size()) w = simpson_weights(traj.size());
  Tape<T>& tape = *traj[0].tape;
  const T shift[2] = {T(-q.cx), T(-q.cy)}, inv_sd[2] = {T(1.0 / std::sqrt(q.vx)), T(1.0 / std::sqrt(q.vy))};
  const Var<T> c = tape.constant(shift, 1, 2), s = tape.constant(inv_sd, 1, 2);
  const double norm = q.scale / (kTwoPi * std::sqrt(q.vx * q.vy));
  Var<T> total;
  for (std::size_t l = 0; l < traj.size(); ++l) {
    const Var<T> z = ad::mul_row(ad::add_row(ad::slice_cols(traj[l], column, 2), c), s);
    const Var<T> term = ad::mean(ad::exp(ad::row_sums(ad::square(z)) * T(-0.5))) * T(w[l] * norm);
    total = total.tape ? total + term : term;
  }
  return total;
}

// F_I = Σ_l w_l · (1/m) Σ_r Σ_{i<j} exp(−½ ‖s_l[r, block i] − s_l[r, block j]‖²)
template <class T>
Var<T> interaction_cost(const std::vector<Var<T>>& traj, std::size_t populations) {
  if (traj.empty()) throw std::invalid_argument("interaction_cost: no states");
  const std::size_t dim = traj[0].cols();
  if (populations < 2 || dim % populations != 0)
    throw std::invalid_argument(fmt::format("interaction_cost: {} populations in {} columns", populations, dim));
  static thread_local std::vector<double> w;
  if (w.size() != traj.size()) w = simpson_weights(traj.size());
  const std::size_t block = dim / populations;
  static thread_local std::vector<Var<T>> groups;  // s_l's P blocks, each sliced once per state
  Var<T> total;
  for (std::size_t l = 0; l < traj.size(); ++l) {
    groups.clear();
    for (std::size_t i = 0; i < populations; ++i) groups.push_back(ad::slice_cols(traj[l], i * block, block));
    Var<T> pairs;
    for (std::size_t i = 0; i < populations; ++i)
      for (std::size_t j = i + 1; j < populations; ++j) {
        const Var<T> diff = groups[i] - groups[j];
        const Var<T> kernel = ad::exp(ad::row_sums(ad::square(diff)) * T(-0.5));
        pairs = pairs.tape ? pairs + kernel : kernel;
      }
    const Var<T> term = ad::mean(pairs) * T(w[l]);
    total = total.tape ? total + term : term;
  }
  return total;
}

template <class T>
RunningCost<T> running_cost_terms(const std::vector<Var<T>>& traj, const MfgProblem& problem) {
  if (!problem.has_running_cost()) throw std::invalid_argument(fmt::format("the {} problem has no running cost", problem.name));
  RunningCost<T> r;
  if (problem.has_obstacle) {
    const std::size_t block = problem.dim / problem.populations;
    for (std::size_t k = 0; k < problem.populations; ++k) {
      const Var<T> c = obstacle_cost(traj, problem.obstacle, k * block);
      r.obstacles = r.obstacles.tape ? r.obstacles + c : c;
    }
  }
  if (problem.populations > 1) r.interaction = interaction_cost(traj, problem.populations);
  return r;
}

template <class T>
Var<T> running_cost(const std::vector<Var<T>>& traj, const MfgProblem& problem) {
  const RunningCost<T> r = running_cost_terms(traj, problem);
  if (!r.obstacles.tape) return r.interaction;
  return r.interaction.tape ? r.obstacles + r.interaction : r.obstacles;
}

// log p1(y) = log Σ_k exp(a_k(y)) − log K − (D/2) log(2πσ²),  a_k(y) = −‖y − μ_k‖²/(2σ²),
// computed as b + log Σ_k exp(a_k − b) with b the row's largest a_k (a constant).
template <class T>
Var<T> target_log_prob(const Dataset& target, Var<T> y) {
  const auto* gm = dynamic_cast<const GaussianMixture*>(&target);
  if (!gm) throw std::invalid_argument(fmt::format("target_log_prob: {} is not a Gaussian mixture", target.name()));
  const auto& means = gm->means();
  const std::size_t K = means.shape()[0], d = means.shape()[1], m = y.rows();
  if (y.cols() != d) throw std::invalid_argument(fmt::format("target_log_prob: {} columns for a {}-D target", y.cols(), d));
  Tape<T>& tape = *y.tape;
  const double s2 = gm->sigma() * gm->sigma();
  static thread_local std::vector<T> row;
  static thread_local std::vector<Var<T>> terms;
  terms.clear();
  row.resize(d);
  for (std::size_t k = 0; k < K; ++k) {
    for (std::size_t j = 0; j < d; ++j) row[j] = T(-means(k, j));
    const Var<T> diff = ad::add_row(y, tape.constant(row.data(), 1, d));
    terms.push_back(ad::row_sums(ad::square(diff)) * T(-0.5 / s2));
  }
  // The shift b (m×1), from the values just computed.
  static thread_local std::vector<T> shift;
  shift.resize(m);
  for (std::size_t i = 0; i < m; ++i) {
    T best = terms[0].value()(i, 0);
    for (std::size_t k = 1; k < K; ++k) best = std::max(best, terms[k].value()(i, 0));
    shift[i] = best;
  }
  const Var<T> b = tape.constant(shift.data(), m, 1);
  Var<T> sum;
  for (std::size_t k = 0; k < K; ++k) {
    const Var<T> e = ad::exp(terms[k] - b);
    sum = sum.tape ? sum + e : e;
  }
  const double constant = -std::log(double(K)) - 0.5 * double(d) * std::log(kTwoPi * s2);
  return ad::log(sum) + b + T(constant);
}

namespace {

// The drones: P groups of 2 coordinates each, every one from its start to its target (drones2:
// the opposite corner, drones8: the antipode on the circle), optionally past the bar.
MfgProblem drones(const MfgProblemKind& kind, std::size_t populations, bool bar) {
  MfgProblem p;
  p.name = kind.name;
  p.populations = populations;
  p.dim = kind.own_dim;
  p.p0_mean = GaussianMixture::drones_start(populations);
  p.p0_var = populations == 2 ? 0.01 : 5e-3;
  p.target = fmt::format("drones{}", populations);
  if (bar) {
    p.has_obstacle = true;
    p.obstacle = Obstacle{0.5, 0.5, 0.1, 0.004, 50.0};
  }
  return p;
}

// One population in D ≥ 2 dimensions from N(p0_mean, 0.3 I).
MfgProblem one_population(const MfgProblemKind& kind, std::size_t dim) {
  MfgProblem p;
  p.name = kind.name;
  p.dim = dim;
  p.p0_mean.assign(dim, 0.0);
  p.p0_var = 0.3;
  p.target = fmt::format("{}:{}", kind.name, dim);  // crowd:D, gmm:D
  return p;
}

}  // namespace

const std::vector<MfgProblemKind>& mfg_problem_kinds() {
  static const std::vector<MfgProblemKind> kinds = {
      {"crowd", "around an obstacle", 0,
       [](const MfgProblemKind& k, std::size_t dim) {
         MfgProblem p = one_population(k, dim);
         p.p0_mean[1] = 3.0;
         p.has_obstacle = true;
         p.obstacle = Obstacle{};
         return p;
       }},
      {"gmm", "to a mixture of 8 Gaussians", 0, one_population},
      {"drones2", "two groups swap corners", 4, [](const MfgProblemKind& k, std::size_t) { return drones(k, 2, false); }},
      {"drones2-obstacle", "past a bar in the middle", 4,
       [](const MfgProblemKind& k, std::size_t) { return drones(k, 2, true); }},
      {"drones8", "eight groups cross a circle", 16, [](const MfgProblemKind& k, std::size_t) { return drones(k, 8, false); }},
  };
  return kinds;
}

const MfgProblemKind* find_mfg_problem(const std::string& name) {
  for (const MfgProblemKind& k : mfg_problem_kinds())
    if (name == k.name) return &k;
  return nullptr;
}

std::string mfg_problem_list(bool with_summaries) {
  const auto& kinds = mfg_problem_kinds();
  std::string s;
  for (std::size_t i = 0; i < kinds.size(); ++i) {
    if (i > 0) s += i + 1 == kinds.size() ? " or " : ", ";
    s += kinds[i].name;
    if (with_summaries) s += fmt::format(" ({})", kinds[i].summary);
  }
  return s;
}

MfgProblem mfg_problem(const std::string& name, std::size_t dim) {
  const MfgProblemKind* kind = find_mfg_problem(name);
  if (!kind) throw std::invalid_argument(fmt::format("unknown mfg problem '{}' (expected {})", name, mfg_problem_list()));
  if (kind->own_dim != 0) {
    if (dim != 0 && dim != kind->own_dim)
      throw std::invalid_argument(fmt::format("{} has its own dimension {} (groups of 2 coordinates side by side), not {}",
                                              name, kind->own_dim, dim));
  } else if (dim < 2) {
    throw std::invalid_argument(fmt::format("mfg problem {}: the dimension must be at least 2, got {}", name, dim));
  }
  return kind->make(*kind, dim);
}

template Var<float> obstacle_cost<float>(const std::vector<Var<float>>&, const Obstacle&, std::size_t);
template Var<double> obstacle_cost<double>(const std::vector<Var<double>>&, const Obstacle&, std::size_t);
template Var<float> interaction_cost<float>(const std::vector<Var<float>>&, std::size_t);
template Var<double> interaction_cost<double>(const std::vector<Var<double>>&, std::size_t);
template RunningCost<float> running_cost_terms<float>(const std::vector<Var<float>>&, const MfgProblem&);
template RunningCost<double> running_cost_terms<double>(const std::vector<Var<double>>&, const MfgProblem&);
template Var<float> running_cost<float>(const std::vector<Var<float>>&, const MfgProblem&);
template Var<double> running_cost<double>(const std::vector<Var<double>>&, const MfgProblem&);
template Var<float> target_log_prob<float>(const Dataset&, Var<float>);
template Var<double> target_log_prob<double>(const Dataset&, Var<double>);

}  // namespace flows

#include "flows/inference.hpp"

namespace flows {

template <class T>
MfgReport mfg_report(Flow<T>& flow, const MfgProblem& problem, std::size_t n, std::uint64_t seed, int threads) {
  const std::size_t d = flow.dim(), S = flow.num_time_steps() + 1;
  ad::Rng rng(seed);
  Array<T> x;
  flow.base().sample(n, rng, x);
  std::vector<T> y(n * d), states(S * n * d);
  PushOutputs<T> out;
  out.y = y.data();
  out.states = states.data();
  Inference<T>(flow, threads).forward(x.data(), n, out);
  MfgReport r;
  r.problem = problem.name;
  // The costs the objective trains, evaluated on these states in float64: L (path_energy),
  // the running cost and the interaction, the same functions on a tape of constants.
  Tape<double> tape;
  std::vector<Var<double>> traj;
  Array<double> state({n, d});
  for (std::size_t s = 0; s < S; ++s) {
    std::copy(states.begin() + long(s * n * d), states.begin() + long((s + 1) * n * d), state.data());
    traj.push_back(tape.constant(state));
  }
  r.kinetic_energy = path_energy(traj).item();
  if (problem.has_running_cost()) {
    const RunningCost<double> terms = running_cost_terms(traj, problem);
    r.running = (terms.obstacles.tape ? terms.obstacles.item() : 0.0) + (terms.interaction.tape ? terms.interaction.item() : 0.0);
    if (terms.interaction.tape) r.interaction = terms.interaction.item();
  }
  const std::size_t P = problem.populations, block = d / P;
  if (problem.has_obstacle) {
    std::size_t inside = 0;
    for (std::size_t s = 0; s < S; ++s)
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t k = 0; k < P; ++k) {
          const T* p = states.data() + (s * n + i) * d + k * block;
          inside += problem.obstacle.inside(double(p[0]), double(p[1]));
        }
    r.inside_share = double(inside) / double(S * n * P);
  }
  if (P > 1) {
    // Arrival: each group's mean end point against its target's mean.
    // (P1 is the groups' targets side by side: one isotropic Gaussian, problem.target)
    const auto data = make_dataset(problem.target);
    const auto* target = dynamic_cast<const GaussianMixture*>(data.get());
    if (!target || target->means().shape()[0] != 1)
      throw std::invalid_argument(fmt::format("mfg_report: {}'s target is not one Gaussian per group", problem.name));
    const double radius = 3.0 * target->sigma() * std::sqrt(double(block));
    double worst = 0, least = 1;
    for (std::size_t k = 0; k < P; ++k) {
      std::vector<double> mean(block, 0.0);
      std::size_t near = 0;
      for (std::size_t i = 0; i < n; ++i) {
        double q = 0;
        for (std::size_t j = 0; j < block; ++j) {
          const double v = double(y[i * d + k * block + j]);
          mean[j] += v / double(n);
          q += std::pow(v - target->means()(0, k * block + j), 2);
        }
        near += q <= radius * radius;
      }
      double e = 0;
      for (std::size_t j = 0; j < block; ++j) e += std::pow(mean[j] - target->means()(0, k * block + j), 2);
      worst = std::max(worst, std::sqrt(e));
      least = std::min(least, double(near) / double(n));
    }
    r.arrival_error = worst;
    r.arrived_share = least;
  }
  if (problem.name == "crowd") {
    double err = 0;
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < d; ++j) {
        const double target = double(x(i, j)) - (j == 1 ? 6.0 : 0.0);
        err += (double(y[i * d + j]) - target) * (double(y[i * d + j]) - target);
      }
    r.l2_uvp = 100.0 * err / double(n) / (problem.p0_var * double(d));
  }
  return r;
}

nlohmann::json MfgReport::to_json() const {
  nlohmann::json j = {{"problem", problem}, {"kinetic_energy", kinetic_energy}};
  if (running) j["running_cost"] = *running;
  if (inside_share) j["inside_obstacle"] = *inside_share;
  if (l2_uvp) j["l2_uvp"] = *l2_uvp;
  if (interaction) j["interaction"] = *interaction;
  if (arrival_error) j["arrival_error"] = *arrival_error;
  if (arrived_share) j["arrived_share"] = *arrived_share;
  return j;
}

template MfgReport mfg_report<float>(Flow<float>&, const MfgProblem&, std::size_t, std::uint64_t, int);
template MfgReport mfg_report<double>(Flow<double>&, const MfgProblem&, std::size_t, std::uint64_t, int);

}  // namespace flows
