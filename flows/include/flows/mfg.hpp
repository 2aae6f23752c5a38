#pragma once
// Mean-field games with normalizing flows (Huang, Yu, Chen, Lai, J. Comput. Phys. 2023;
// docs/mfg.md). A population moves from P0 to P1 along the flow's layers, which are the time
// steps t_l = l/L: the states s_0 = x ~ P0, s_1 = f_1(x), …, s_L = F(x). Its cost is
//   terminal(F#P0, P1) + λ_L · L + λ_F · F_P,
// with L the kinetic energy (the path energy T of flow.hpp) and F_P a running cost, the
// time average over the states of an obstacle's density. This header holds the running cost,
// the target's log-density on the tape (for the reverse KL), and the problems' definitions.
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flows/datasets.hpp"
#include "flows/flow.hpp"

namespace flows {

/// An obstacle Q = N(c, diag(v)) on the first two coordinates, weighted by `scale`:
/// the running cost of a state x is scale · pdf_Q(x₁, x₂).
struct Obstacle {
  double cx = 0.0, cy = 0.0;  ///< centre
  double vx = 1.0, vy = 0.5;  ///< variances along x₁ and x₂
  double scale = 50.0;
  /// scale · pdf_Q(x, y).
  double cost(double x, double y) const;
  /// Whether (x, y) lies inside Q's one-sigma ellipse.
  bool inside(double x, double y) const;
};

/// Weights w_0 … w_L (summing to 1) of the time average (1/1)∫₀¹ g(t) dt over L + 1 equally
/// spaced states: composite Simpson (1, 4, 2, …, 4, 1)/(3L) for even L; for odd L ≥ 3,
/// Simpson on the first L − 3 intervals and Simpson's 3/8 rule on the last three; the
/// trapezoid rule for L = 1; {1} for a single state.
std::vector<double> simpson_weights(std::size_t states);

/// F_P = Σ_l w_l · mean_rows(scale · pdf_Q(s_l[:, c:c+2])) over the states of `traj` (1×1), with
/// the weights of simpson_weights: the obstacle on columns c and c + 1 (c = `column`).
template <class T>
Var<T> obstacle_cost(const std::vector<Var<T>>& traj, const Obstacle& q, std::size_t column = 0);

/// The interaction of P populations side by side in the state (dim/P columns each):
/// F_I = Σ_l w_l · mean_rows Σ_{i<j} exp(−½‖s_l^i − s_l^j‖²), row r of population i paired with
/// row r of population j (independent draws), the weights of simpson_weights (1×1).
template <class T>
Var<T> interaction_cost(const std::vector<Var<T>>& traj, std::size_t populations);

/// log p1(y) per row (m×1) on the tape, for a target whose density is a Gaussian mixture
/// with isotropic components (GaussianMixture: gmm:D, crowd:D): a log-sum-exp over the
/// components, shifted by each row's largest term (a constant, which leaves the gradient as is).
/// std::invalid_argument for another kind of target.
template <class T>
Var<T> target_log_prob(const Dataset& target, Var<T> y);

/// A mean-field-game problem: where the population starts (the flow's base), where it must
/// arrive, and what it avoids.
struct MfgProblem {
  std::string name;               ///< "crowd", "gmm", "drones2", "drones8" or "drones2-obstacle"
  std::size_t dim = 2;            ///< of the whole state (populations × their dimension)
  std::vector<double> p0_mean;    ///< P0 = N(p0_mean, p0_var · I): the flow's (fixed) base
  double p0_var = 0.3;
  std::string target;             ///< the dataset spec of P1 ("crowd:D", "gmm:D", "drones2", "drones8")
  bool has_obstacle = false;
  Obstacle obstacle;              ///< on the first two coordinates of every population
  /// P > 1: P populations of dim/P coordinates side by side, one flow each (FlowSpec::populations),
  /// with the interaction cost between them in the running cost.
  std::size_t populations = 1;
  /// Whether there is a running cost (an obstacle or an interaction) for λ_F to weigh.
  bool has_running_cost() const { return has_obstacle || populations > 1; }
};

/// One problem of mfg_problem's: its name (`trflow mfg --problem NAME`), a few words for the
/// help, its own dimension (0: any D ≥ 2, as --dim says) and how it is built.
struct MfgProblemKind {
  const char* name;
  const char* summary;
  std::size_t own_dim;
  MfgProblem (*make)(const MfgProblemKind& kind, std::size_t dim);
};

/// Every problem mfg_problem knows, in the order the help lists them: the one list of names
/// that the CLI's choices, its help and the error messages are made from.
const std::vector<MfgProblemKind>& mfg_problem_kinds();
/// The kind called `name`, or nullptr.
const MfgProblemKind* find_mfg_problem(const std::string& name);
/// "crowd, gmm, drones2, drones2-obstacle or drones8" (with_summaries: each followed by its
/// summary in parentheses).
std::string mfg_problem_list(bool with_summaries = false);

/// "crowd": P0 = N(3e₂, 0.3 I), P1 = N(−3e₂, 0.3 I), the obstacle N(0, diag(1, 0.5)) on
/// (x₁, x₂) with scale 50; "gmm": P0 = N(0, 0.3 I), P1 = gmm:D, no obstacle. D ≥ 2.
/// "drones2": two groups in 2-D swap corners, N((0,0), 0.01 I) → N((1,1), 0.01 I) and
/// N((1,0), 0.01 I) → N((0,1), 0.01 I); "drones2-obstacle" adds 50·N((0.5, 0.5), diag(0.1, 0.004)),
/// a thin bar across the middle; "drones8": eight groups on the circle of radius 2 (variance
/// 5e-3), each to its antipode. The drones problems have their own dimension (4, 4, 16):
/// dim 0 picks it, another value is refused.
MfgProblem mfg_problem(const std::string& name, std::size_t dim);

/// The running cost's two parts (1×1 each; a part the problem lacks is an empty Var, .tape null):
/// the obstacle's Σ_k F_P(population k) and the populations' interaction F_I.
template <class T>
struct RunningCost {
  Var<T> obstacles, interaction;
};
template <class T>
RunningCost<T> running_cost_terms(const std::vector<Var<T>>& traj, const MfgProblem& problem);

/// The running cost F = Σ_k F_P(population k) + F_I (what λ_F weighs; 1×1).
template <class T>
Var<T> running_cost(const std::vector<Var<T>>& traj, const MfgProblem& problem);

}  // namespace flows

namespace flows {

template <class T> class Flow;

/// What `eval` adds for a mean-field-game model, from n draws x ~ P0 pushed through F.
struct MfgReport {
  std::string problem;
  double kinetic_energy = 0;     ///< L = K · E Σ_k ‖s_{k+1} − s_k‖² over the time steps (flows' T)
  std::optional<double> running;       ///< F_P (without λ_F), for a problem with an obstacle
  std::optional<double> inside_share;  ///< share of the trajectories' states inside the obstacle's one-sigma ellipse
  std::optional<double> l2_uvp;  ///< crowd: 100 · E‖F(x) − (x − 6e₂)‖² / Var(P1), against the straight translation
  std::optional<double> interaction;  ///< F_I, for several populations
  /// Several populations: the largest distance between a group's mean end point and its
  /// target's mean, and the smallest share of a group's end points within 3 standard deviations
  /// of its target's mean (per coordinate: ‖y − μ‖ ≤ 3σ√d).
  std::optional<double> arrival_error, arrived_share;
  /// {"problem", "kinetic_energy", "running_cost", "inside_obstacle", "l2_uvp", "interaction",
  /// "arrival_error", "arrived_share"} (those measured),
  /// the keys result.json and eval add for a mean-field-game model.
  nlohmann::json to_json() const;
};

template <class T>
MfgReport mfg_report(Flow<T>& flow, const MfgProblem& problem, std::size_t n, std::uint64_t seed, int threads = 1);

}  // namespace flows
