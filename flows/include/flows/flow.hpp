#pragma once
// A flow F = f_L ∘ … ∘ f_1 from a base density α0 to the data, its inverse
// G = F⁻¹, the density it defines, and the transport-regularized objective
//   λ · NLL + β · T,   NLL(y) = −log α0(G(y)) − log|det ∇G(y)|,
//   T = L · E_x Σ_l ‖F_{l+1}(x) − F_l(x)‖²   (discretized kinetic energy).
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flows/layers.hpp"

namespace flows {

/// The base density α0.
template <class T>
class BaseDensity : public nn::Module<T> {
 public:
  /// log α0(z) per row (m×1).
  virtual Var<T> log_prob(Var<T> z) = 0;
  /// n draws into out (n×d), reusing its memory when the shape fits.
  virtual void sample(std::size_t n, ad::Rng& rng, Array<T>& out) const = 0;
  virtual nlohmann::json config() const = 0;
  std::size_t dim() const { return dim_; }

 protected:
  explicit BaseDensity(std::size_t dim) : dim_(dim) {}
  std::size_t dim_;
};

/// N(0, I): log α0(z) = −½‖z‖² − (d/2) log 2π.
template <class T>
class StandardNormal : public BaseDensity<T> {
 public:
  explicit StandardNormal(std::size_t dim) : BaseDensity<T>(dim) {}
  Var<T> log_prob(Var<T> z) override;
  void sample(std::size_t n, ad::Rng& rng, Array<T>& out) const override;
  nlohmann::json config() const override { return {{"type", "standard_normal"}, {"dim", this->dim_}}; }
};

/// N(m, diag σ²): log α0(z) = −½ Σ_j ((z_j − m_j)/σ_j)² − Σ_j log σ_j − (d/2) log 2π,
/// with m and log σ learned (parameters "mean", "log_std") or fixed.
template <class T>
class DiagonalGaussian : public BaseDensity<T> {
 public:
  DiagonalGaussian(std::size_t dim, bool learned, std::vector<double> mean = {}, std::vector<double> log_std = {});
  Var<T> log_prob(Var<T> z) override;
  void sample(std::size_t n, ad::Rng& rng, Array<T>& out) const override;
  nlohmann::json config() const override;
  bool learned() const { return learned_; }

  Parameter<T> mean, log_std;

 private:
  bool learned_;
};

/// The composition F = f_L ∘ … ∘ f_1 with its base density. Children are
/// named "base" and "layers.<l>", so parameters read "layers.3.net.0.weight".
template <class T>
class Flow : public nn::Module<T> {
 public:
  Flow(std::size_t dim, std::unique_ptr<BaseDensity<T>> base);
  void add_layer(std::unique_ptr<Bijector<T>> layer);

  std::size_t dim() const { return dim_; }
  std::size_t num_layers() const { return layers_.size(); }
  Bijector<T>& layer(std::size_t l) { return *layers_[l]; }
  BaseDensity<T>& base() { return *base_; }

  /// Time steps: by default every layer is one (the trajectory holds every layer's output);
  /// set_layers_per_time_step(k) makes each group of k layers one step (e.g. a whole step of
  /// the paper's structure, LU + two couplings, as its code does for mean-field games), so the
  /// trajectory holds the states between groups. k must divide the number of layers.
  void set_layers_per_time_step(std::size_t k);
  std::size_t layers_per_time_step() const { return per_step_; }
  /// K = L / k, the number of time steps; trajectories hold K + 1 states.
  std::size_t num_time_steps() const { return layers_.size() / per_step_; }

  /// y = F(x) with log|det ∇F(x)|; traj (if given) receives [x, F_1(x), …, F(x)], the K + 1
  /// states between time steps (every layer's output when each layer is a step).
  Mapped<T> forward(Var<T> x, std::vector<Var<T>>* traj = nullptr);
  /// x = G(y) with log|det ∇G(y)|; traj (if given) receives [y, …, G(y)], K + 1 states.
  Mapped<T> inverse(Var<T> y, std::vector<Var<T>>* traj = nullptr);
  /// log p(y) = log α0(G(y)) + log|det ∇G(y)| per row (m×1).
  Var<T> log_prob(Var<T> y);

  /// Data-dependent initialization (ActNorm) from a data batch, pulled back layer by layer.
  void initialize_from_data(const Array<T>& y);

  /// The architecture: {"dim", "base", "layers": [...]}; with the parameters, all that rebuilds the flow.
  nlohmann::json config() const;
  static std::unique_ptr<Flow<T>> from_config(const nlohmann::json& config);

 private:
  std::size_t dim_;
  std::unique_ptr<BaseDensity<T>> base_;
  std::vector<std::unique_ptr<Bijector<T>>> layers_;
  std::size_t per_step_ = 1;
};

/// How the layers are grouped.
enum class Structure {
  layers,  ///< L couplings (plus the optional ActNorm/LU); coupling 2k updates the set A_k that Π picks,
           ///< coupling 2k + 1 its complement, so each pair updates every coordinate once
  steps,   ///< L steps as in the paper's code: an LU linear layer, then two couplings on A_l and on its
           ///< complement, so that every coordinate is updated once per step (d = 1: one coupling)
};
inline constexpr ad::NameTable<Structure, 2> kStructureNames{{{Structure::layers, "layers"}, {Structure::steps, "steps"}}};
Structure structure_from_name(const std::string& name);  ///< "layers", "steps"
const char* structure_name(Structure s);

/// How to build a flow for `dim` dimensions.
struct FlowSpec {
  std::size_t layers = 8;                 ///< number of couplings (structure layers) or of steps (steps)
  Structure structure = Structure::layers;
  CouplingConfig coupling;
  Permutation permutation = Permutation::random;
  bool actnorm = false;                   ///< an ActNorm before each coupling (layers) or step (steps)
  bool lu = false;                        ///< an LU linear layer before each coupling (steps always have one)
  /// Last (at the data's side), an LU layer and an ActNorm that the first data batch sets to
  /// the full-covariance Gaussian fitted to it: the flow starts as that Gaussian.
  bool gaussian_init = false;
  std::string base = "standard_normal";   ///< or "diagonal_gaussian" (learned mean and log-std), or
                                          ///< "fixed_gaussian": N(base_mean, diag(exp(2·base_log_std)))
  std::vector<double> base_mean, base_log_std;  ///< for fixed_gaussian
  /// structure steps: each step (its LU, couplings and ActNorm) is one time step of the
  /// trajectories, as the paper's code has it for mean-field games; otherwise every layer is.
  bool time_per_step = false;
  /// P > 1: the state holds P populations of dim/P coordinates each, side by side (a
  /// multi-population mean-field game, mfg.hpp). Each step is then, per population, two
  /// complementary couplings that update and condition on that population's coordinates
  /// only (no LU layer, which would mix them): P independent flows in one, each agent's
  /// path depending on its own state alone. Needs structure steps and dim/P ≥ 2.
  std::size_t populations = 1;
  std::uint64_t seed = 0;                 ///< for the permutations and the initial weights
};

/// A flow of spec.layers couplings (plus the optional ActNorm/LU layers).
template <class T>
std::unique_ptr<Flow<T>> make_flow(std::size_t dim, const FlowSpec& spec);

// ---------------------------------------------------------------- costs
/// T = L · (1/m) Σ_rows Σ_l ‖s_{l+1} − s_l‖² for states s_0 … s_L (1×1).
template <class T>
Var<T> path_energy(const std::vector<Var<T>>& traj);

/// (1/m) Σ_rows ‖b − a‖² (1×1); the map cost E‖F(x) − x‖² with a = x, b = F(x).
template <class T>
Var<T> mean_squared_distance(Var<T> a, Var<T> b);

/// Which samples the transport cost follows: x ~ α0 pushed through F (gen, the
/// default), or the data pushed through G (norm).
enum class Direction { gen, norm };
inline constexpr ad::NameTable<Direction, 2> kDirectionNames{{{Direction::gen, "gen"}, {Direction::norm, "norm"}}};
Direction direction_from_name(const std::string& name);
const char* direction_name(Direction d);

class Dataset;
struct MfgProblem;

/// The objective is the sum of two passes that share nothing but the parameters:
///   data: the data's pass through G: λ·NLL, and β·T when T follows it (direction norm);
///   base: the base samples' pass through F: β·T (direction gen), ρ·reverse KL and λ_F·F_P
///         (with direction norm, F runs for the last two only).
/// Recording them apart, with a backward and a clear() in between, holds one pass's values on
/// the tape at a time instead of both (flows::Trainer); `all` records both, as one tape.
enum class Pass { all, data, base };

struct ObjectiveWeights {
  double kl = 1.0;         ///< λ, the weight of the NLL (the KL to the data, up to a constant)
  double transport = 0.0;  ///< β
  Direction direction = Direction::gen;
  bool measure_transport = true;  ///< compute T and the map cost even when β = 0 (for reporting)
  /// ρ, the weight of the reverse KL E_{x~α0}[log q(F(x)) − log p1(F(x))] (ρ = λ: the Jeffreys
  /// divergence with the NLL's forward KL); needs `target`'s density on the tape (mfg.hpp).
  double reverse_kl = 0.0;
  const Dataset* target = nullptr;
  /// λ_F, the weight of the running cost over the states x ~ α0 pass through: the obstacle
  /// cost F_P and, for several populations, their interaction (mfg.hpp: running_cost).
  double running = 0.0;
  const MfgProblem* problem = nullptr;
  Pass pass = Pass::all;  ///< which terms to record (see Pass)
};

/// The objective's terms, each 1×1 (empty when not computed: transport and map_cost when
/// not measured, reverse_kl and running when their weight is 0, and those of the pass not
/// recorded; loss when the pass recorded has no weighted term, e.g. a base pass that only
/// measures T).
template <class T>
struct ObjectiveTerms {
  Var<T> loss, nll, transport, map_cost, reverse_kl, running;
};

/// λ·NLL(data) + β·T (+ ρ·reverse KL + λ_F·F_P), or the part of it that w.pass records, whose
/// loss is then the weighted sum of that pass's terms. `base_samples` (x ~ α0) is used by
/// direction gen, the reverse KL and the running cost; direction norm reuses the data's pass
/// through G for T (the other two still push the base samples through F). A pass may leave
/// the input it does not use empty.
template <class T>
ObjectiveTerms<T> objective(Flow<T>& flow, Var<T> data, Var<T> base_samples, const ObjectiveWeights& w);

/// λ·NLL + β·T + ρ·reverse KL + λ_F·F_P from the terms' values, added in T in the order
/// objective(Pass::all) adds them on the tape (a term whose weight is 0 left out): the loss
/// one tape would report, for a step that recorded the two passes apart.
template <class T>
T objective_loss(T nll, T transport, T reverse_kl, T running, const ObjectiveWeights& w);

extern template class Flow<float>;
extern template class Flow<double>;

}  // namespace flows
