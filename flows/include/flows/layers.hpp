#pragma once
// The invertible layers of a flow. Each maps base → data with forward() and
// data → base with inverse(), and returns the per-sample log-determinant of
// the map it applied. Every state stays in the data's own coordinate order, so
// the difference of two consecutive states is a true displacement.
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/module.hpp"

namespace flows {

using ad::Activation;
using ad::Array;
using ad::Parameter;
using ad::Tape;
using ad::Var;

/// A layer's output and log|det J| per row (m×1). An empty logdet Var means 0.
template <class T>
struct Mapped {
  Var<T> out;
  Var<T> logdet;
};

/// An invertible layer f.
template <class T>
class Bijector : public nn::Module<T> {
 public:
  /// y = f(x) and log|det ∂f/∂x|.
  virtual Mapped<T> forward(Var<T> x) = 0;
  /// x = f⁻¹(y) and log|det ∂f⁻¹/∂y| (= −log|det ∂f/∂x| at x = f⁻¹(y)).
  virtual Mapped<T> inverse(Var<T> y) = 0;
  /// Everything but the parameters needed to rebuild the layer ("type" names it).
  virtual nlohmann::json config() const = 0;
  /// Data-dependent initialization from a batch at the layer's data-side (output)
  /// end; returns the batch pulled back through the layer. Layers without one pass through.
  virtual Array<T> initialize_from_data(const Array<T>& y);
  std::size_t dim() const { return dim_; }

 protected:
  explicit Bijector(std::size_t dim) : dim_(dim) {}
  std::size_t dim_;
};

/// How Π chooses the updated coordinates A of each coupling.
enum class Permutation { random, alternate };
inline constexpr ad::NameTable<Permutation, 2> kPermutationNames{
    {{Permutation::random, "random"}, {Permutation::alternate, "alternate"}}};
Permutation permutation_from_name(const std::string& name);
const char* permutation_name(Permutation p);

/// Splits {0, …, d−1} for coupling layer `index`: A = the first ⌊d/2⌋ entries of
/// Π's order (Π seeded random, or alternating halves), B = the rest. For d = 1,
/// A = {0} and B = {}: the conditioner then sees a constant input.
void coupling_split(std::size_t d, std::size_t index, Permutation kind, ad::Rng& rng, std::vector<int>& a,
                    std::vector<int>& b);

/// What a coupling does to its updated coordinates.
enum class CouplingKind {
  affine,    ///< y_A = x_A ⊙ exp(w) + b
  additive,  ///< y_A = x_A + b (w ≡ 0)
  rqs,       ///< y_A = s_θ(x_A), a monotonic rational-quadratic spline per coordinate (Durkan et al. 2019)
};
inline constexpr ad::NameTable<CouplingKind, 3> kCouplingNames{
    {{CouplingKind::affine, "affine"}, {CouplingKind::additive, "additive"}, {CouplingKind::rqs, "rqs"}}};
CouplingKind coupling_kind_from_name(const std::string& name);  ///< "affine", "additive", "rqs"
const char* coupling_kind_name(CouplingKind k);

/// The conditioner network h_θ of a coupling.
enum class ConditionerKind {
  mlp,     ///< nn::MLP with `depth` hidden layers
  resnet,  ///< nn::ResidualNet with `depth` residual blocks (as in the paper's code)
};
inline constexpr ad::NameTable<ConditionerKind, 2> kConditionerNames{
    {{ConditionerKind::mlp, "mlp"}, {ConditionerKind::resnet, "resnet"}}};
ConditionerKind conditioner_from_name(const std::string& name);  ///< "mlp", "resnet"
const char* conditioner_name(ConditionerKind k);

struct CouplingConfig {
  CouplingKind kind = CouplingKind::affine;
  ConditionerKind conditioner = ConditionerKind::mlp;
  std::size_t hidden = 64;       ///< width of the conditioner's hidden layers
  std::size_t depth = 2;         ///< hidden layers (mlp) or residual blocks (resnet)
  Activation activation = Activation::tanh;
  double scale_clamp = 0.0;      ///< affine: c > 0 gives w = c·tanh(w_raw / c); 0: w = w_raw (the specification)
  int bins = 8;                  ///< rqs: K, the number of bins
  double tail_bound = 3.0;       ///< rqs: B, the spline acts on [−B, B] and is the identity outside
  double dropout = 0.0;          ///< dropout rate in the conditioner while training (0 ≤ p < 1)
};

/// What every coupling shares: the updated coordinates A and the conditioning coordinates B
/// (disjoint; usually a partition, and coordinates in neither pass through unchanged and
/// unseen, as one population's coupling in a multi-population flow), and the conditioner
/// h_θ(x_B) (a constant input when B is empty, d = 1), whose last layer starts at zero so that
/// the layer starts as the identity.
template <class T>
class Coupling : public Bijector<T> {
 public:
  const std::vector<int>& updated() const { return a_; }
  const std::vector<int>& conditioning() const { return b_; }
  const CouplingConfig& coupling_config() const { return cfg_; }
  nn::Layer<T>& net() { return *net_; }
  nlohmann::json config() const override;

 protected:
  /// outputs_per_coordinate: how many numbers h_θ gives for each updated coordinate.
  Coupling(std::size_t dim, std::vector<int> a, std::vector<int> b, const CouplingConfig& cfg, ad::Rng& rng,
           std::size_t outputs_per_coordinate);
  /// h_θ of the conditioning columns of z (which equal x_B = y_B): m × |A|·outputs_per_coordinate.
  Var<T> conditioner(Var<T> z);

  std::vector<int> a_, b_;
  CouplingConfig cfg_;
  std::unique_ptr<nn::Layer<T>> net_;
};

/// Affine coupling: (w, b) = h(x_B), y_A = x_A ⊙ exp(w) + b, y_B = x_B,
/// log|det| = Σ_i w_i; inverse x_A = (y_A − b) ⊙ exp(−w). Additive when cfg.kind is additive.
template <class T>
class AffineCoupling : public Coupling<T> {
 public:
  AffineCoupling(std::size_t dim, std::vector<int> a, std::vector<int> b, const CouplingConfig& cfg, ad::Rng& rng);
  Mapped<T> forward(Var<T> x) override;
  Mapped<T> inverse(Var<T> y) override;

 private:
  /// (w, b) from the conditioning columns of z.
  std::pair<Var<T>, Var<T>> scale_shift(Var<T> z);
};

/// Rational-quadratic spline coupling (Durkan et al., "Neural Spline Flows", 2019):
/// θ = h(x_B) gives 3K − 1 numbers per updated coordinate, y_A = s_θ(x_A) coordinate by
/// coordinate on [−B, B] (the identity outside), y_B = x_B, log|det| = Σ_i log s'_θ(x_i);
/// the inverse is closed-form (ad::rq_spline). h starts at zero, and θ = 0 is the identity.
template <class T>
class RQSplineCoupling : public Coupling<T> {
 public:
  RQSplineCoupling(std::size_t dim, std::vector<int> a, std::vector<int> b, const CouplingConfig& cfg, ad::Rng& rng);
  Mapped<T> forward(Var<T> x) override;
  Mapped<T> inverse(Var<T> y) override;

 private:
  Mapped<T> apply(Var<T> z, bool inverse);
};

/// A coupling of cfg.kind.
template <class T>
std::unique_ptr<Coupling<T>> make_coupling(std::size_t dim, std::vector<int> a, std::vector<int> b,
                                           const CouplingConfig& cfg, ad::Rng& rng);

/// ActNorm: y = x ⊙ exp(s) + t per feature, log|det| = Σ_j s_j. The first data
/// batch initializes it so that f⁻¹(batch) has zero mean and unit variance; the
/// initialized state is saved with the model, so a loaded model is never re-initialized.
template <class T>
class ActNorm : public Bijector<T> {
 public:
  explicit ActNorm(std::size_t dim);
  Mapped<T> forward(Var<T> x) override;
  Mapped<T> inverse(Var<T> y) override;
  nlohmann::json config() const override;
  Array<T> initialize_from_data(const Array<T>& y) override;
  bool initialized() const { return initialized_; }
  void set_initialized(bool v) { initialized_ = v; }

  Parameter<T> log_scale, shift;

 private:
  bool initialized_ = false;
};

/// Invertible linear map y = x Wᵀ with W = P·L·(U + diag(exp(s))): P a fixed
/// permutation, L unit lower triangular, U strictly upper triangular.
/// log|det W| = Σ s. Starts at the identity (P = I, L = I, U = 0, s = 0).
template <class T>
class LULinear : public Bijector<T> {
 public:
  explicit LULinear(std::size_t dim);
  Mapped<T> forward(Var<T> x) override;
  Mapped<T> inverse(Var<T> y) override;
  nlohmann::json config() const override;
  /// With data_init, the first data batch sets W to the Cholesky factor C of the covariance of
  /// the rows it sees (CCᵀ = Σ; P = I, L = C diag(C)⁻¹, s = log diag C, U = 0), so that with an
  /// ActNorm after it the flow starts as the full-covariance Gaussian fitted to the data. The
  /// initialized state is saved with the model, so a loaded model is never re-initialized.
  void set_data_init(bool on) { data_init_ = on, initialized_ = !on; }
  void set_initialized(bool v) { initialized_ = v; }
  bool data_init() const { return data_init_; }
  bool initialized() const { return initialized_; }
  Array<T> initialize_from_data(const Array<T>& y) override;

  Parameter<T> lower, upper, log_diag;

 private:
  bool data_init_ = false, initialized_ = true;
  Var<T> lower_factor(Tape<T>& t);   // L = I + strict_lower(lower)
  Var<T> upper_factor(Tape<T>& t);   // U' = strict_upper(upper) + diag(exp(s))
  Array<T> identity_, lower_mask_, upper_mask_;
  std::vector<int> perm_, perm_inverse_;  // P as an index list: (P v)_i = v_{perm[i]}
};

/// Σ_j r_j of a 1×d row r, repeated for m rows (m×1): the per-sample
/// log-determinant of a layer whose Jacobian does not depend on the input.
template <class T>
Var<T> row_total(std::size_t m, Var<T> r);

/// Rebuilds a layer from its config() (parameters are loaded separately).
template <class T>
std::unique_ptr<Bijector<T>> make_layer(const nlohmann::json& config, ad::Rng& rng);

}  // namespace flows
