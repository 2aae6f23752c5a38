#pragma once
// Target distributions: FFJORD's 2-D toy sets, Gaussian targets with a known
// density (and, for gaussian:D, known entropy and W2² to N(0, I)), and data
// files (.npy / .csv). make_dataset turns a spec string into one of them.
// docs/datasets.md gives every formula and constant.
#include <algorithm>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autodiff/xsimd.hpp"  // first: see there
#include <xtensor/xtensor.hpp>

#include "autodiff/random.hpp"

namespace flows {

/// A distribution we can draw rows from: n×dim() row-major doubles.
class Dataset {
 public:
  virtual ~Dataset();
  virtual std::size_t dim() const = 0;
  /// The spec that recreates it ("moons", "gaussian:4", "data/x.csv", ...).
  virtual std::string name() const = 0;
  /// Writes n fresh samples to out (n × dim(), row-major). Allocates nothing
  /// once constructed: it is called every training step.
  virtual void sample(std::size_t n, ad::Rng& rng, double* out) = 0;
  /// Whether log_prob is known exactly.
  virtual bool has_log_prob() const { return false; }
  /// out[i] = log p(x_i) for the n rows of x (n × dim()); std::logic_error when
  /// has_log_prob() is false.
  virtual void log_prob(const double* x, std::size_t n, double* out) const;
  /// sample() that also writes lp[i] = log p(out_i); std::logic_error when has_log_prob() is
  /// false. The default is sample() then log_prob(); a data set that knows the density of its
  /// own draws without evaluating it afresh (gaussian:D: from the standard-normal draws, with
  /// no whitening product) overrides it.
  virtual void sample_with_log_prob(std::size_t n, ad::Rng& rng, double* out, double* lp);
  /// sample() (lp null) or sample_with_log_prob() in two parts, for a data set whose draws end
  /// in work row by row (gaussian:D: the product by Σ's Cholesky factor, D² a row), so that
  /// threads can share that work: draw_unfinished() takes from rng all that sample() would take
  /// (and writes lp), then finish_block(out, n, b) completes block b of out's rows in place,
  /// rows [b·R, min(n, (b + 1)·R)) with R = finish_block_rows(). Blocks are independent: calls
  /// on different blocks may run at once. Once every block is finished, out holds sample()'s
  /// rows bit for bit. By default the rows are drawn finished, and R = 0 (no blocks).
  virtual void draw_unfinished(std::size_t n, ad::Rng& rng, double* out, double* lp);
  virtual std::size_t finish_block_rows() const { return 0; }
  virtual void finish_block(double* out, std::size_t n, std::size_t block) const;
  /// W2²(N(0, I), p) in closed form, when known.
  virtual std::optional<double> w2_sq_to_standard_normal() const { return std::nullopt; }
  /// The differential entropy −E log p(x) in nats, when known in closed form.
  virtual std::optional<double> entropy() const { return std::nullopt; }
  /// A finite set of rows (a data file): how many, else 0 (a generator).
  virtual std::size_t row_count() const { return 0; }
  /// All row_count() rows (row_count() × dim(), row-major); std::logic_error for a generator.
  virtual void all_rows(double* out) const;
  /// Whether the optimal-transport (Monge) map T* from N(0, I) to this distribution is known.
  virtual bool has_ot_map() const { return false; }
  /// out = T*(x) for the n rows of x (n × dim()); std::logic_error when has_ot_map() is false.
  virtual void ot_map(const double* x, std::size_t n, double* out) const;
  /// E‖Y − EY‖², when known in closed form.
  virtual std::optional<double> total_variance() const { return std::nullopt; }
  /// The bytes it holds once it has drawn a batch (its rows, matrices and scratch), for the
  /// training's memory check; a few kilobytes count as 0.
  virtual std::size_t memory_bytes() const { return 0; }
};

/// The default tail bound B of spline couplings for a flow from N(0, I) to `data`: the flow's
/// states run from the base (|z| ≤ 3 for 99.7 % of its coordinates) to the data, so B covers
/// both: max(3, 1.2 × the 99.9th percentile of |y_j| over 20 000 drawn rows, or over as many
/// as make kTailBoundValues values where D > 104), rounded up to 0.5.
/// std::invalid_argument when the rows hold non-finite values.
double spline_tail_bound(Dataset& data, std::uint64_t seed);
/// The most values (rows × D) spline_tail_bound draws once D > 104 (16 MB of doubles).
inline constexpr std::size_t kTailBoundValues = std::size_t(1) << 21;

/// "gaussian:D": a fixed anisotropic Gaussian N(m, Σ), Σ = Q diag(λ) Qᵀ, the
/// same for every run with the same D. It is built from ad::Rng(1234 + D):
/// first m_i = N(0, 1)/2 for i < D, then a D×D matrix of N(0, 1) entries
/// (row-major) whose QR factorization (Gram–Schmidt, R with positive diagonal)
/// gives Q. The eigenvalues are log-evenly spaced over [1/4, 4]:
/// λ_i = 4^(2i/(D−1) − 1), i = 0..D−1 (λ = 1 for D = 1). Draws and densities go
/// through Σ's Cholesky factor L (lower triangular, L Lᵀ = Σ).
class GaussianDataset : public Dataset {
 public:
  explicit GaussianDataset(std::size_t d);
  std::size_t dim() const override { return d_; }
  std::string name() const override;
  /// x = m + L ε, ε ~ N(0, I) (the rows' ε drawn one row after another).
  void sample(std::size_t n, ad::Rng& rng, double* out) override;
  bool has_log_prob() const override { return true; }
  /// log p(x) = −½ ‖z‖² − ½ Σ_i log λ_i − (D/2) log 2π, z = L⁻¹(x − m).
  void log_prob(const double* x, std::size_t n, double* out) const override;
  /// The draws of sample() (the same ones for the same rng) with log p = log_norm − ½‖ε‖².
  void sample_with_log_prob(std::size_t n, ad::Rng& rng, double* out, double* lp) override;
  /// ε (and lp from it), then x = m + L ε block by block: blocks of kFinishRows rows, so
  /// that a row's bits do not depend on how many threads share the batch (OpenBLAS's dtrmm
  /// gives a row other bits in a call of another row count at some D that are not multiples
  /// of 8: 33, 63, 100, …).
  void draw_unfinished(std::size_t n, ad::Rng& rng, double* out, double* lp) override;
  std::size_t finish_block_rows() const override { return kFinishRows; }
  void finish_block(double* out, std::size_t n, std::size_t block) const override;
  static constexpr std::size_t kFinishRows = 256;
  /// ‖m‖² + Σ_i (1 + λ_i − 2√λ_i): the Bures–Wasserstein distance to N(0, I).
  std::optional<double> w2_sq_to_standard_normal() const override;
  /// ½ log det(2πe Σ) = (D/2) log(2πe) + ½ Σ_i log λ_i.
  std::optional<double> entropy() const override;
  bool has_ot_map() const override { return true; }
  /// T*(x) = m + Σ^{1/2} x with Σ^{1/2} = Q diag(√λ) Qᵀ: the gradient of the convex
  /// ½ xᵀΣ^{1/2}x + mᵀx, so the W2-optimal map from N(0, I) (Brenier).
  void ot_map(const double* x, std::size_t n, double* out) const override;
  /// tr Σ = Σ_i λ_i.
  std::optional<double> total_variance() const override;
  /// Q, Σ^{1/2}, L and L⁻¹ (D × D each), float64.
  std::size_t memory_bytes() const override;

  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& eigenvalues() const { return lambda_; }
  /// Q: orthogonal, column i is the eigenvector of λ_i.
  const xt::xtensor<double, 2>& rotation() const { return q_; }
  /// Σ = Q diag(λ) Qᵀ.
  xt::xtensor<double, 2> covariance() const;

 private:
  /// draw_unfinished, then every block finished: sample() (lp null) and sample_with_log_prob().
  void draw(std::size_t n, ad::Rng& rng, double* out, double* lp);
  xt::xtensor<double, 2> spectral(const std::vector<double>& w) const;

  std::size_t d_;
  std::vector<double> mean_, lambda_;
  xt::xtensor<double, 2> q_, root_;        // root_ = Σ^{1/2}, for ot_map
  xt::xtensor<double, 2> chol_, chol_inv_;  // L and L⁻¹ (row-major, zero above the diagonal)
  double log_norm_;  // −½ Σ log λ_i − (D/2) log 2π
};

/// "brenier:D": Y = ∇ψ(X), X ~ N(0, I_D), for the strictly convex
///   ψ(x) = ½‖x‖² + Σ_{k<K} (a/s) softplus(s (w_k·x − b_k)),  K = D + 2, a = 2.5, s = 4,
/// w_k random unit vectors and b_k ~ 0.3 N(0, 1), drawn from ad::Rng(4321 + D). By Brenier's
/// theorem T* = ∇ψ is the W2-optimal map from N(0, I) to Y, so the target has a known Monge map.
///   ∇ψ(x) = x + a Σ_k σ(z_k) w_k,   ∇²ψ(x) = I + a s Σ_k σ(z_k)(1 − σ(z_k)) w_k w_kᵀ,   z_k = s(w_k·x − b_k),
///   log p(y) = log φ(x) − log det ∇²ψ(x) with x = (∇ψ)⁻¹(y), found by damped Newton on the
///   1-strongly convex ψ(x) − ⟨x, y⟩ (inverse()). W2² = E‖∇ψ(X) − X‖² by Monte Carlo (w2_estimate()).
class BrenierDataset : public Dataset {
 public:
  explicit BrenierDataset(std::size_t d);
  std::size_t dim() const override { return d_; }
  std::string name() const override { return "brenier:" + std::to_string(d_); }
  void sample(std::size_t n, ad::Rng& rng, double* out) override;
  bool has_log_prob() const override { return true; }
  void log_prob(const double* y, std::size_t n, double* out) const override;
  bool has_ot_map() const override { return true; }
  void ot_map(const double* x, std::size_t n, double* out) const override;
  /// W2²(N(0, I), Y) by Monte Carlo on 200 000 fixed draws (its standard error: w2_estimate()).
  std::optional<double> w2_sq_to_standard_normal() const override { return w2_; }
  /// The Monte Carlo estimate of W2² and its standard error.
  std::pair<double, double> w2_estimate() const { return {w2_, w2_se_}; }
  std::size_t memory_bytes() const override { return (w_.size() + b_.size()) * sizeof(double); }

  /// ∇ψ(x) into g (D values).
  void gradient(const double* x, double* g) const;
  /// x = (∇ψ)⁻¹(y) by damped Newton (to |∇ψ(x) − y| ≤ 1e-12 (1 + |y|)); returns log det ∇²ψ(x).
  double inverse(const double* y, double* x) const;

 private:
  /// log det ∇²ψ(x), and (if h) the Hessian itself (D×D, row-major).
  double hessian(const double* x, double* h) const;
  std::size_t d_, k_;
  std::vector<double> w_, b_;  // K×D unit rows, K offsets
  std::vector<double> x_;      // sample()'s standard-normal row (D values, allocated once)
  double w2_ = 0, w2_se_ = 0;
};

/// An equally weighted mixture of K isotropic Gaussians N(μ_k, σ² I):
/// log p(x) = logsumexp_k(−‖x − μ_k‖² / 2σ²) − log K − (D/2) log(2πσ²).
/// "gmm:D" and "8gaussians" are such mixtures.
class GaussianMixture : public Dataset {
 public:
  /// means: K × D, one component mean per row; sigma > 0.
  GaussianMixture(std::string name, xt::xtensor<double, 2> means, double sigma);
  /// "gmm:D" (D ≥ 2): 8 components, covariance 0.3·I, means 4(cos 2πk/8, sin 2πk/8, 0, …, 0).
  static std::unique_ptr<GaussianMixture> gmm(std::size_t d);
  /// "crowd:D" (D ≥ 2): the crowd-motion problem's target N(−3e₂, 0.3·I) (flows/mfg.hpp).
  static std::unique_ptr<GaussianMixture> crowd(std::size_t d);
  /// "drones2", "drones8": the targets of the multi-population games (flows/mfg.hpp), the
  /// groups side by side (2 coordinates each): drones2 N((1,1), 0.01 I) × N((0,1), 0.01 I);
  /// drones8 group k at 2(cos θ_k, sin θ_k), θ_k = (k + 1)π/4, variance 5e-3.
  static std::unique_ptr<GaussianMixture> drones(std::size_t groups);
  /// Where group k of drones2/drones8 starts (P0's mean, 2 numbers per group).
  static std::vector<double> drones_start(std::size_t groups);
  std::size_t dim() const override { return means_.shape()[1]; }
  std::string name() const override { return name_; }
  /// k uniform in [0, K), then x = μ_k + σ ε.
  void sample(std::size_t n, ad::Rng& rng, double* out) override;
  bool has_log_prob() const override { return true; }
  void log_prob(const double* x, std::size_t n, double* out) const override;

  const xt::xtensor<double, 2>& means() const { return means_; }
  double sigma() const { return sigma_; }
  std::size_t memory_bytes() const override { return means_.size() * sizeof(double); }

 private:
  std::string name_;
  xt::xtensor<double, 2> means_;
  double sigma_;
};

/// The rows of a data matrix, drawn uniformly with replacement.
class MatrixDataset : public Dataset {
 public:
  /// rows: N × D with N, D ≥ 1; dropped_rows: how many non-finite rows the
  /// loader left out (reported, not used).
  MatrixDataset(std::string name, xt::xtensor<double, 2> rows, std::size_t dropped_rows = 0);
  std::size_t dim() const override { return rows_.shape()[1]; }
  std::string name() const override { return name_; }
  void sample(std::size_t n, ad::Rng& rng, double* out) override;

  const xt::xtensor<double, 2>& rows() const { return rows_; }
  std::size_t row_count() const override { return rows_.shape()[0]; }
  void all_rows(double* out) const override { std::copy(rows_.begin(), rows_.end(), out); }
  std::size_t dropped_rows() const { return dropped_; }
  std::size_t memory_bytes() const override { return rows_.size() * sizeof(double); }

 private:
  std::string name_;
  xt::xtensor<double, 2> rows_;
  std::size_t dropped_;
};

/// The 2-D toy sets, in FFJORD's order: 8gaussians, moons, circles, rings,
/// pinwheel, 2spirals, checkerboard, swissroll.
const std::vector<std::string>& toy_dataset_names();

/// A dataset from its spec: a toy name, "gaussian:D" (1 ≤ D ≤ 4096),
/// "gmm:D" (2 ≤ D ≤ 4096), or a path ending in .npy or .csv (load_matrix; see
/// there for drop_nonfinite). An unknown spec raises std::invalid_argument
/// listing the known names and forms; a malformed file raises nn::FormatError.
std::unique_ptr<Dataset> make_dataset(const std::string& spec, bool drop_nonfinite = false);

/// An N × D data matrix (N, D ≥ 1) from a file, by extension:
///  .npy: a 2-D, C-ordered float32 or float64 array;
///  .csv: comma-separated numbers, an optional first row of column names (no
///        numbers in it), the same number of columns on every row, blank lines
///        only at the end.
/// A NaN or ±Inf value raises nn::FormatError naming its row and column unless
/// drop_nonfinite, in which case its row is left out and counted in *dropped
/// (if given). Other malformed content raises nn::FormatError naming the file
/// and the line/column or byte offset; an unknown extension std::invalid_argument.
xt::xtensor<double, 2> load_matrix(const std::string& path, bool drop_nonfinite = false,
                                   std::size_t* dropped = nullptr);

/// Per-column standardization y = (x − mean) / std, with the sample standard
/// deviation (divisor N − 1; std = 1 for N = 1). A column whose std is at
/// most 1e-12 · max(1, |mean|) (constant up to rounding) gets std = 1, so it is
/// only centred and nothing is divided by zero.
struct Standardizer {
  std::vector<double> mean, std;

  void fit(const xt::xtensor<double, 2>& x);
  /// x ← (x − mean) / std for n rows of d = mean.size() columns (std::invalid_argument otherwise).
  void apply(double* x, std::size_t n, std::size_t d) const;
  /// x ← x · std + mean.
  void invert(double* x, std::size_t n, std::size_t d) const;
  /// log |det ∂y/∂x| of x ↦ (x − mean)/std: −Σ_j log std_j
  /// (so log p_x(x) = log p_y(y) + log_det()).
  double log_det() const;
};

}  // namespace flows
