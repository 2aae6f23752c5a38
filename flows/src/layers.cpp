#include "flows/layers.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include <cblas.h>
#include <fmt/format.h>

namespace flows {

// Σ_j r_j for each of m rows, as an m×1 column: ones(m×d) · rᵀ.
template <class T>
Var<T> row_total(std::size_t m, Var<T> r) {
  return ad::matmul(r.tape->constant(m, r.cols(), T(1)), r, false, true);
}

template <class T>
Array<T> Bijector<T>::initialize_from_data(const Array<T>& y) {
  Tape<T> tape;
  return Array<T>(inverse(tape.constant(y)).out.value());
}

// ---------------------------------------------------------------- permutations
const char* permutation_name(Permutation p) { return ad::name_in(kPermutationNames, p); }
Permutation permutation_from_name(const std::string& name) { return ad::value_named(kPermutationNames, name, "permutation"); }

void coupling_split(std::size_t d, std::size_t index, Permutation kind, ad::Rng& rng, std::vector<int>& a,
                    std::vector<int>& b) {
  if (d == 0) throw std::invalid_argument("coupling_split: dimension must be positive");
  std::vector<int> order(d);
  std::iota(order.begin(), order.end(), 0);
  if (kind == Permutation::random) {  // Fisher–Yates with the project's own generator
    for (std::size_t i = d; i-- > 1;) std::swap(order[i], order[rng.below(i + 1)]);
  } else if (index % 2 == 1) {
    std::reverse(order.begin(), order.end());
  }
  const std::size_t k = d == 1 ? 1 : d / 2;
  a.assign(order.begin(), order.begin() + k);
  b.assign(order.begin() + k, order.end());
  std::sort(a.begin(), a.end());  // Π only selects; the state keeps the data's order
  std::sort(b.begin(), b.end());
}

// ---------------------------------------------------------------- couplings
const char* coupling_kind_name(CouplingKind k) { return ad::name_in(kCouplingNames, k); }
CouplingKind coupling_kind_from_name(const std::string& name) { return ad::value_named(kCouplingNames, name, "coupling"); }
const char* conditioner_name(ConditionerKind k) { return ad::name_in(kConditionerNames, k); }
ConditionerKind conditioner_from_name(const std::string& name) {
  return ad::value_named(kConditionerNames, name, "conditioner");
}

template <class T>
Coupling<T>::Coupling(std::size_t dim, std::vector<int> a, std::vector<int> b, const CouplingConfig& cfg, ad::Rng& rng,
                      std::size_t outputs_per_coordinate)
    : Bijector<T>(dim), a_(std::move(a)), b_(std::move(b)), cfg_(cfg) {
  std::vector<bool> seen(dim, false);
  for (int i : a_) {
    if (i < 0 || std::size_t(i) >= dim || seen[i]) throw std::invalid_argument("coupling: A is not a set of coordinates");
    seen[i] = true;
  }
  for (int i : b_) {
    if (i < 0 || std::size_t(i) >= dim || seen[i]) throw std::invalid_argument("coupling: A and B must be disjoint sets of coordinates");
    seen[i] = true;
  }
  // Coordinates in neither A nor B pass through unseen (one population's coupling among several).
  if (a_.empty()) throw std::invalid_argument("coupling: A must not be empty");
  const std::size_t in = std::max<std::size_t>(1, b_.size());  // d = 1: a constant input
  const std::size_t out = outputs_per_coordinate * a_.size();
  if (!(cfg_.dropout >= 0.0 && cfg_.dropout < 1.0))
    throw std::invalid_argument(fmt::format("coupling: dropout must be in [0, 1), got {}", cfg_.dropout));
  if (cfg_.conditioner == ConditionerKind::resnet) {
    auto net = std::make_unique<nn::ResidualNet<T>>(in, cfg_.hidden, cfg_.depth, out, cfg_.activation, rng, /*zero_last=*/true);
    net->set_dropout(cfg_.dropout);
    net_ = std::move(net);
  } else {
    auto net = std::make_unique<nn::MLP<T>>(in, std::vector<std::size_t>(cfg_.depth, cfg_.hidden), out, cfg_.activation,
                                            rng, /*zero_last=*/true);
    net->set_dropout(cfg_.dropout);
    net_ = std::move(net);
  }
  this->register_module("net", *net_);
}

template <class T>
Var<T> Coupling<T>::conditioner(Var<T> z) {
  return net_->forward(b_.empty() ? z.tape->constant(z.rows(), 1, T(1)) : ad::take_cols(z, b_));
}

template <class T>
nlohmann::json Coupling<T>::config() const {
  nlohmann::json c = {{"type", cfg_.kind == CouplingKind::rqs        ? "rqs_coupling"
                               : cfg_.kind == CouplingKind::additive ? "additive_coupling"
                                                                     : "affine_coupling"},
                      {"dim", this->dim_},
                      {"updated", a_},
                      {"conditioning", b_},
                      {"conditioner", conditioner_name(cfg_.conditioner)},
                      {"hidden", cfg_.hidden},
                      {"depth", cfg_.depth},
                      {"activation", ad::activation_name(cfg_.activation)}};
  if (cfg_.dropout > 0) c["dropout"] = cfg_.dropout;  // absent: 0 (and files before dropout existed)
  if (cfg_.kind == CouplingKind::rqs) {
    c["bins"] = cfg_.bins;
    c["tail_bound"] = cfg_.tail_bound;
  } else {
    c["scale_clamp"] = cfg_.scale_clamp;
  }
  return c;
}

// ---------------------------------------------------------------- affine coupling
template <class T>
AffineCoupling<T>::AffineCoupling(std::size_t dim, std::vector<int> a, std::vector<int> b, const CouplingConfig& cfg,
                                  ad::Rng& rng)
    : Coupling<T>(dim, std::move(a), std::move(b), cfg, rng, cfg.kind == CouplingKind::additive ? 1 : 2) {
  if (cfg.kind == CouplingKind::rqs) throw std::invalid_argument("AffineCoupling: the config asks for a spline coupling");
}

template <class T>
std::pair<Var<T>, Var<T>> AffineCoupling<T>::scale_shift(Var<T> z) {
  const Var<T> h = this->conditioner(z);
  const std::size_t k = this->a_.size();
  if (this->cfg_.kind == CouplingKind::additive) return {Var<T>{}, h};
  Var<T> w = ad::slice_cols(h, 0, k);
  if (this->cfg_.scale_clamp > 0) w = ad::soft_clamp(w, T(this->cfg_.scale_clamp));
  return {w, ad::slice_cols(h, k, k)};
}

// y_A = x_A ⊙ exp(w) + b,   log|det| = Σ_i w_i
template <class T>
Mapped<T> AffineCoupling<T>::forward(Var<T> x) {
  const auto [w, b] = scale_shift(x);
  const Var<T> xa = ad::take_cols(x, this->a_);
  const Var<T> ya = w.tape ? xa * ad::exp(w) + b : xa + b;
  return {ad::scatter_cols(x, ya, this->a_), w.tape ? ad::row_sums(w) : Var<T>{}};
}

// x_A = (y_A − b) ⊙ exp(−w),   log|det| = −Σ_i w_i
template <class T>
Mapped<T> AffineCoupling<T>::inverse(Var<T> y) {
  const auto [w, b] = scale_shift(y);
  const Var<T> ya = ad::take_cols(y, this->a_);
  const Var<T> xa = w.tape ? (ya - b) * ad::exp(-w) : ya - b;
  return {ad::scatter_cols(y, xa, this->a_), w.tape ? -ad::row_sums(w) : Var<T>{}};
}

// ---------------------------------------------------------------- spline coupling
namespace {
/// 3K − 1, the conditioner's outputs per coordinate, after checking the spline's settings
/// (before the base class builds the network).
std::size_t spline_outputs(const CouplingConfig& cfg) {
  if (cfg.kind != CouplingKind::rqs) throw std::invalid_argument("RQSplineCoupling: the config asks for another coupling");
  if (cfg.bins < 2 || cfg.bins > 64)
    throw std::invalid_argument(fmt::format("spline coupling: {} bins (expected 2 to 64)", cfg.bins));
  if (!(cfg.tail_bound > 0) || !std::isfinite(cfg.tail_bound))
    throw std::invalid_argument(fmt::format("spline coupling: the tail bound must be positive, got {}", cfg.tail_bound));
  return std::size_t(3 * cfg.bins - 1);
}
}  // namespace

template <class T>
RQSplineCoupling<T>::RQSplineCoupling(std::size_t dim, std::vector<int> a, std::vector<int> b,
                                      const CouplingConfig& cfg, ad::Rng& rng)
    : Coupling<T>(dim, std::move(a), std::move(b), cfg, rng, spline_outputs(cfg)) {}

// y_A = s_θ(x_A) (or x_A = s_θ⁻¹(y_A)) with θ = h(x_B); the op returns [values | log|det|].
template <class T>
Mapped<T> RQSplineCoupling<T>::apply(Var<T> z, bool inverse) {
  const std::size_t k = this->a_.size();
  const Var<T> r = ad::rq_spline(ad::take_cols(z, this->a_), this->conditioner(z), this->cfg_.bins,
                                 T(this->cfg_.tail_bound), inverse);
  return {ad::scatter_cols(z, ad::slice_cols(r, 0, k), this->a_), ad::slice_cols(r, k, 1)};
}

template <class T>
Mapped<T> RQSplineCoupling<T>::forward(Var<T> x) { return apply(x, false); }

template <class T>
Mapped<T> RQSplineCoupling<T>::inverse(Var<T> y) { return apply(y, true); }

template <class T>
std::unique_ptr<Coupling<T>> make_coupling(std::size_t dim, std::vector<int> a, std::vector<int> b,
                                           const CouplingConfig& cfg, ad::Rng& rng) {
  if (cfg.kind == CouplingKind::rqs) return std::make_unique<RQSplineCoupling<T>>(dim, std::move(a), std::move(b), cfg, rng);
  return std::make_unique<AffineCoupling<T>>(dim, std::move(a), std::move(b), cfg, rng);
}

// ---------------------------------------------------------------- ActNorm
template <class T>
ActNorm<T>::ActNorm(std::size_t dim) : Bijector<T>(dim), log_scale("log_scale", 1, dim), shift("shift", 1, dim) {
  this->register_parameter("log_scale", log_scale);
  this->register_parameter("shift", shift);
}

template <class T>
Mapped<T> ActNorm<T>::forward(Var<T> x) {
  Tape<T>& t = *x.tape;
  const Var<T> y = ad::add_row(ad::mul_row(x, ad::exp(t.param(log_scale))), t.param(shift));
  return {y, row_total(x.rows(), t.param(log_scale))};
}

template <class T>
Mapped<T> ActNorm<T>::inverse(Var<T> y) {
  Tape<T>& t = *y.tape;
  const Var<T> x = ad::mul_row(ad::add_row(y, -t.param(shift)), ad::exp(-t.param(log_scale)));
  return {x, -row_total(y.rows(), t.param(log_scale))};
}

template <class T>
Array<T> ActNorm<T>::initialize_from_data(const Array<T>& y) {
  if (!initialized_) {
    // t = mean(y), s = log std(y): then f⁻¹(y) = (y − t) ⊙ exp(−s) is standardized.
    const std::size_t m = y.shape()[0], d = y.shape()[1];
    for (std::size_t j = 0; j < d; ++j) {
      double mean = 0, sq = 0;
      for (std::size_t i = 0; i < m; ++i) mean += y(i, j);
      mean /= double(m);
      for (std::size_t i = 0; i < m; ++i) sq += (y(i, j) - mean) * (y(i, j) - mean);
      const double sd = m > 1 ? std::sqrt(sq / double(m - 1)) : 1.0;
      shift.value(0, j) = T(mean);
      log_scale.value(0, j) = T(std::log(sd > 1e-6 ? sd : 1.0));
    }
    initialized_ = true;
  }
  return Bijector<T>::initialize_from_data(y);
}

template <class T>
nlohmann::json ActNorm<T>::config() const {
  return {{"type", "actnorm"}, {"dim", this->dim_}, {"initialized", initialized_}};
}

// ---------------------------------------------------------------- LU linear
extern "C" void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);  // LAPACK (OpenBLAS)

namespace {

inline void trsm(bool lower, int n, const float* a, float* b) {
  cblas_strsm(CblasRowMajor, CblasLeft, lower ? CblasLower : CblasUpper, CblasNoTrans, CblasNonUnit, n, n, 1.0f, a, n, b, n);
}
inline void trsm(bool lower, int n, const double* a, double* b) {
  cblas_dtrsm(CblasRowMajor, CblasLeft, lower ? CblasLower : CblasUpper, CblasNoTrans, CblasNonUnit, n, n, 1.0, a, n, b, n);
}
inline void gemm(bool ta, bool tb, int n, float alpha, const float* a, const float* b, float beta, float* c) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, n, n, n, alpha, a, n, b, n,
              beta, c, n);
}
inline void gemm(bool ta, bool tb, int n, double alpha, const double* a, const double* b, double beta, double* c) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, n, n, n, alpha, a, n, b, n,
              beta, c, n);
}

/// B = A⁻¹ for a triangular A (by trsm on the identity).
/// VJP: dB = −B dA B, so Ā += −Bᵀ B̄ Bᵀ, kept on A's triangle (the only entries read).
template <class T>
struct TriangularInverse : ad::CustomOp<T> {
  bool lower;
  Array<T> tmp, full;
  explicit TriangularInverse(bool is_lower) : lower(is_lower) {}
  const char* name() const override { return lower ? "lower_triangular_inverse" : "upper_triangular_inverse"; }
  std::array<std::size_t, 2> shape(const Array<T>* const* in, int) const override {
    if (in[0]->shape()[0] != in[0]->shape()[1]) throw ad::ShapeError(fmt::format("{}: the matrix is not square", name()));
    return {in[0]->shape()[0], in[0]->shape()[1]};
  }
  void forward(const Array<T>* const* in, int, Array<T>& out) override {
    const std::size_t n = out.shape()[0];
    out.fill(T(0));
    for (std::size_t i = 0; i < n; ++i) out(i, i) = T(1);
    trsm(lower, int(n), in[0]->data(), out.data());
  }
  void vjp(const Array<T>* const*, int, const Array<T>& b, const Array<T>& gb, Array<T>* const* ga) override {
    if (!ga[0]) return;
    const int n = int(b.shape()[0]);
    if (tmp.shape() != b.shape()) tmp.resize(b.shape());
    gemm(false, true, n, T(1), gb.data(), b.data(), T(0), tmp.data());  // B̄ Bᵀ
    if (full.shape() != b.shape()) full.resize(b.shape());
    gemm(true, false, n, T(-1), b.data(), tmp.data(), T(0), full.data());  // −Bᵀ (B̄ Bᵀ)
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j)
        if (lower ? j <= i : j >= i) (*ga[0])(i, j) += full(i, j);
  }
};

template <class T>
TriangularInverse<T>& lower_inverse_op() {
  static thread_local TriangularInverse<T> op(true);
  return op;
}
template <class T>
TriangularInverse<T>& upper_inverse_op() {
  static thread_local TriangularInverse<T> op(false);
  return op;
}

}  // namespace

template <class T>
LULinear<T>::LULinear(std::size_t dim)
    : Bijector<T>(dim), lower("lower", dim, dim), upper("upper", dim, dim), log_diag("log_diag", 1, dim),
      identity_({dim, dim}, T(0)), lower_mask_({dim, dim}, T(0)), upper_mask_({dim, dim}, T(0)), perm_(dim) {
  for (std::size_t i = 0; i < dim; ++i) {
    identity_(i, i) = T(1);
    for (std::size_t j = 0; j < dim; ++j) {
      if (j < i) lower_mask_(i, j) = T(1);
      if (j > i) upper_mask_(i, j) = T(1);
    }
  }
  std::iota(perm_.begin(), perm_.end(), 0);
  perm_inverse_.assign(dim, 0);
  for (std::size_t i = 0; i < dim; ++i) perm_inverse_[perm_[i]] = int(i);
  this->register_parameter("lower", lower);
  this->register_parameter("upper", upper);
  this->register_parameter("log_diag", log_diag);
}

template <class T>
Var<T> LULinear<T>::lower_factor(Tape<T>& t) {
  return t.constant(identity_) + t.param(lower) * t.constant(lower_mask_);
}

template <class T>
Var<T> LULinear<T>::upper_factor(Tape<T>& t) {
  // diag(exp(s)) = I ⊙ exp(s) broadcast over rows (column j scaled by exp(s_j)).
  return t.param(upper) * t.constant(upper_mask_) + ad::mul_row(t.constant(identity_), ad::exp(t.param(log_diag)));
}

// y = x Wᵀ = x U'ᵀ Lᵀ Pᵀ;  (z Pᵀ)_i = z_{perm[i]}
template <class T>
Mapped<T> LULinear<T>::forward(Var<T> x) {
  Tape<T>& t = *x.tape;
  const Var<T> z = ad::matmul(ad::matmul(x, upper_factor(t), false, true), lower_factor(t), false, true);
  return {ad::take_cols(z, perm_), row_total(x.rows(), t.param(log_diag))};
}

// x = y W⁻ᵀ = y P L⁻ᵀ U'⁻ᵀ;  (y P)_j = y_{perm⁻¹[j]}
template <class T>
Mapped<T> LULinear<T>::inverse(Var<T> y) {
  Tape<T>& t = *y.tape;
  const Var<T> yp = ad::take_cols(y, perm_inverse_);
  const Var<T> l_inv = ad::custom(lower_inverse_op<T>(), lower_factor(t));
  const Var<T> u_inv = ad::custom(upper_inverse_op<T>(), upper_factor(t));
  const Var<T> x = ad::matmul(ad::matmul(yp, l_inv, false, true), u_inv, false, true);
  return {x, -row_total(y.rows(), t.param(log_diag))};
}

template <class T>
nlohmann::json LULinear<T>::config() const {
  nlohmann::json c = {{"type", "lu_linear"}, {"dim", this->dim_}};
  if (data_init_) c["data_init"] = true, c["initialized"] = initialized_;  // absent: not data-initialized
  return c;
}

template <class T>
Array<T> LULinear<T>::initialize_from_data(const Array<T>& y) {
  if (data_init_ && !initialized_) {
    const std::size_t m = y.shape()[0], d = y.shape()[1];
    if (m < 2) throw std::invalid_argument("LULinear: data initialization needs at least two rows");
    std::vector<double> mean(d, 0.0), cov(d * d, 0.0);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < d; ++j) mean[j] += double(y(i, j)) / double(m);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < d; ++j)
        for (std::size_t k = 0; k <= j; ++k) cov[j * d + k] += (double(y(i, j)) - mean[j]) * (double(y(i, k)) - mean[k]);
    // Σ/(m−1). Fewer rows than columns or a constant column leave it singular: then a ridge
    // λ·tr(Σ)/d on the diagonal, from λ = 1e-10 up by 100× until LAPACK's Cholesky succeeds.
    double trace = 0;
    for (std::size_t j = 0; j < d; ++j)
      for (std::size_t k = 0; k <= j; ++k) {
        const double v = cov[j * d + k] / double(m - 1);
        cov[j * d + k] = cov[k * d + j] = v;
        if (j == k) trace += v;
      }
    // LAPACK's Cholesky: the row-major buffer read column-major is Σ itself; uplo 'U' there
    // leaves C = Uᵀ, Σ = C Cᵀ, in the row-major lower triangle.
    const int n = int(d);
    int info = 0;
    std::vector<double> work;
    for (double ridge = 0;; ridge = ridge == 0 ? 1e-10 : ridge * 100) {
      work = cov;
      for (std::size_t j = 0; j < d; ++j) work[j * d + j] += ridge * std::max(trace / double(d), 1e-300);
      dpotrf_("U", &n, work.data(), &n, &info);
      if (info == 0) break;
      if (ridge >= 1e-2)
        throw std::invalid_argument(
            fmt::format("LULinear: the data's covariance is not positive definite (LAPACK dpotrf info {})", info));
    }
    cov.swap(work);
    for (std::size_t j = 0; j < d; ++j) {
      const double c = cov[j * d + j];
      log_diag.value(0, j) = T(std::log(c));
      for (std::size_t k = 0; k < d; ++k) {
        lower.value(j, k) = k < j ? T(cov[j * d + k] / cov[k * d + k]) : T(0);
        upper.value(j, k) = T(0);
      }
    }
    initialized_ = true;
  }
  return Bijector<T>::initialize_from_data(y);
}

// ---------------------------------------------------------------- factory
namespace {

// Limits on what a config (a model file's architecture) may ask for, checked
// before anything is allocated, so that a hostile or corrupt file cannot make
// make_layer take gigabytes or fail with std::length_error / std::bad_alloc.
constexpr std::size_t kMaxLayerDim = std::size_t(1) << 20;  // coordinates
constexpr std::size_t kMaxHidden = std::size_t(1) << 20;    // conditioner width
constexpr std::size_t kMaxDepth = 256;                      // conditioner hidden layers
constexpr double kMaxLayerParameters = double(std::size_t(1) << 26);  // as Flow::from_config's total

/// A JSON value for an error message: a number or a short string as written, else its type.
std::string json_shown(const nlohmann::json& v) {
  if (!v.is_primitive()) return std::string("an ") + v.type_name();
  const std::string s = v.dump();
  return s.size() > 40 ? s.substr(0, 40) + "..." : s;
}

/// v as a non-negative JSON integer (not a float, which could not be
/// converted safely), or false.
bool as_count(const nlohmann::json& v, std::uint64_t& n) {
  if (v.is_number_unsigned()) return n = v.get<std::uint64_t>(), true;
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return n = std::uint64_t(v.get<std::int64_t>()), true;
  return false;
}

std::size_t count_field(const nlohmann::json& c, const char* key, std::size_t lo, std::size_t hi, const std::string& type) {
  const nlohmann::json& v = c.at(key);
  std::uint64_t n = 0;
  if (!as_count(v, n) || n < lo || n > hi)
    throw std::invalid_argument(
        fmt::format("{} layer: '{}' must be an integer in [{}, {}], got {}", type, key, lo, hi, json_shown(v)));
  return static_cast<std::size_t>(n);
}

/// A list of coordinates in [0, dim) (an array of at most dim integers).
std::vector<int> index_field(const nlohmann::json& c, const char* key, std::size_t dim, const std::string& type) {
  const nlohmann::json& v = c.at(key);
  if (!v.is_array() || v.size() > dim)
    throw std::invalid_argument(fmt::format("{} layer: '{}' must be an array of at most {} coordinates, got {}", type,
                                            key, dim, v.is_array() ? fmt::format("{} entries", v.size()) : json_shown(v)));
  std::vector<int> out;
  out.reserve(v.size());
  for (const nlohmann::json& e : v) {
    std::uint64_t i = 0;
    if (!as_count(e, i) || i >= dim)
      throw std::invalid_argument(
          fmt::format("{} layer: '{}' must hold integers in [0, {}), got {}", type, key, dim, json_shown(e)));
    out.push_back(static_cast<int>(i));
  }
  return out;
}

void check_parameter_count(double count, const std::string& type) {
  if (count > kMaxLayerParameters)
    throw std::invalid_argument(fmt::format("{} layer: {:.0f} parameters, more than the limit of {:.0f}", type, count,
                                            kMaxLayerParameters));
}

}  // namespace

template <class T>
std::unique_ptr<Bijector<T>> make_layer(const nlohmann::json& c, ad::Rng& rng) {
  const std::string type = c.at("type").get<std::string>();
  if (type == "affine_coupling" || type == "additive_coupling" || type == "rqs_coupling") {
    const std::size_t dim = count_field(c, "dim", 1, kMaxLayerDim, type);
    CouplingConfig cfg;
    cfg.kind = type == "rqs_coupling" ? CouplingKind::rqs
               : type == "additive_coupling" ? CouplingKind::additive
                                             : CouplingKind::affine;
    cfg.conditioner = conditioner_from_name(c.value("conditioner", std::string("mlp")));  // files before 0.2: mlp
    cfg.hidden = count_field(c, "hidden", 0, kMaxHidden, type);
    cfg.depth = count_field(c, "depth", 0, kMaxDepth, type);
    cfg.activation = ad::activation_from_name(c.at("activation").get<std::string>());
    if (c.contains("dropout")) {
      const nlohmann::json& p = c.at("dropout");
      if (!p.is_number() || !(p.get<double>() >= 0.0 && p.get<double>() < 1.0))
        throw std::invalid_argument(fmt::format("{} layer: 'dropout' must be a number in [0, 1), got {}", type, json_shown(p)));
      cfg.dropout = p.get<double>();
    }
    std::size_t per_coordinate = cfg.kind == CouplingKind::additive ? 1 : 2;
    if (cfg.kind == CouplingKind::rqs) {
      cfg.bins = int(count_field(c, "bins", 2, 64, type));
      const nlohmann::json& bound = c.at("tail_bound");
      if (!bound.is_number() || !(bound.get<double>() > 0) || !std::isfinite(bound.get<double>()))
        throw std::invalid_argument(
            fmt::format("{} layer: 'tail_bound' must be a positive number, got {}", type, json_shown(bound)));
      cfg.tail_bound = bound.get<double>();
      per_coordinate = std::size_t(3 * cfg.bins - 1);
    } else {
      cfg.scale_clamp = c.value("scale_clamp", 0.0);
    }
    std::vector<int> a = index_field(c, "updated", dim, type), b = index_field(c, "conditioning", dim, type);
    // The conditioner: max(1, |B|) -> hidden -> … -> per_coordinate·|A|, weights and biases.
    const double in = double(std::max<std::size_t>(1, b.size())), h = double(cfg.hidden);
    const double out = double(per_coordinate * a.size()), depth = double(cfg.depth);
    const double count = cfg.conditioner == ConditionerKind::resnet
                             ? in * h + h + depth * 2 * (h * h + h) + h * out + out
                             : (cfg.depth == 0 ? in * out + out : in * h + h + (depth - 1) * (h * h + h) + h * out + out);
    check_parameter_count(count, type);
    return make_coupling<T>(dim, std::move(a), std::move(b), cfg, rng);
  }
  if (type == "actnorm") {
    const std::size_t dim = count_field(c, "dim", 1, kMaxLayerDim, type);
    auto layer = std::make_unique<ActNorm<T>>(dim);
    layer->set_initialized(c.value("initialized", false));
    return layer;
  }
  if (type == "lu_linear") {
    const std::size_t dim = count_field(c, "dim", 1, kMaxLayerDim, type);
    check_parameter_count(2.0 * double(dim) * double(dim) + double(dim), type);
    auto layer = std::make_unique<LULinear<T>>(dim);
    if (c.value("data_init", false)) {
      layer->set_data_init(true);
      layer->set_initialized(c.value("initialized", false));
    }
    return layer;
  }
  throw std::invalid_argument(fmt::format(
      "unknown layer type '{}' (expected affine_coupling, additive_coupling, rqs_coupling, actnorm or lu_linear)", type));
}

template class Bijector<float>;
template class Bijector<double>;
template class Coupling<float>;
template class Coupling<double>;
template class AffineCoupling<float>;
template class AffineCoupling<double>;
template class RQSplineCoupling<float>;
template class RQSplineCoupling<double>;
template std::unique_ptr<Coupling<float>> make_coupling<float>(std::size_t, std::vector<int>, std::vector<int>,
                                                               const CouplingConfig&, ad::Rng&);
template std::unique_ptr<Coupling<double>> make_coupling<double>(std::size_t, std::vector<int>, std::vector<int>,
                                                                 const CouplingConfig&, ad::Rng&);
template class ActNorm<float>;
template class ActNorm<double>;
template class LULinear<float>;
template class LULinear<double>;
template Var<float> row_total<float>(std::size_t, Var<float>);
template Var<double> row_total<double>(std::size_t, Var<double>);
template std::unique_ptr<Bijector<float>> make_layer<float>(const nlohmann::json&, ad::Rng&);
template std::unique_ptr<Bijector<double>> make_layer<double>(const nlohmann::json&, ad::Rng&);

}  // namespace flows
