#include "flows/datasets.hpp"

#include <cblas.h>

// LAPACK (OpenBLAS ships it): Householder QR and the orthogonal factor it implies.
extern "C" void dgeqrf_(const int* m, const int* n, double* a, const int* lda, double* tau, double* work,
                        const int* lwork, int* info);
extern "C" void dorgqr_(const int* m, const int* n, const int* k, double* a, const int* lda, const double* tau,
                        double* work, const int* lwork, int* info);
// Cholesky factor of a symmetric positive-definite matrix, and the inverse of a triangular one.
extern "C" void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
extern "C" void dtrtri_(const char* uplo, const char* diag, const int* n, double* a, const int* lda, int* info);

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include <fmt/format.h>

#include "nn/io.hpp"

namespace flows {

namespace {

constexpr double kPi = 3.141592653589793238462643383279502884;
constexpr double kLog2Pi = 1.837877066409345483560659472811235279;
constexpr std::size_t kMaxDim = 4096;

// ---------------------------------------------------------------- toys

/// FFJORD's 2-D sets (lib/toy_data.py), one fresh row at a time. Where FFJORD
/// lays points out evenly on a grid of angles per batch (sklearn's make_moons /
/// make_circles, and "rings"), we draw the angle uniformly: the same law for
/// an infinite stream.
class ToyDataset : public Dataset {
 public:
  enum class Kind { moons, circles, rings, pinwheel, spirals, checkerboard, swissroll };
  ToyDataset(std::string name, Kind kind) : name_(std::move(name)), kind_(kind) {}
  std::size_t dim() const override { return 2; }
  std::string name() const override { return name_; }
  void sample(std::size_t n, ad::Rng& rng, double* out) override {
    for (std::size_t i = 0; i < n; ++i) row(rng, out + 2 * i);
  }

 private:
  void row(ad::Rng& rng, double* p) const {
    double x = 0, y = 0;
    switch (kind_) {
      case Kind::moons: {  // make_moons(noise=0.1) · 2 + (−1, −0.2)
        const double t = kPi * rng.uniform();
        if (rng.below(2) == 0) x = std::cos(t), y = std::sin(t);
        else x = 1 - std::cos(t), y = 0.5 - std::sin(t);
        x = 2 * (x + 0.1 * rng.normal()) - 1;
        y = 2 * (y + 0.1 * rng.normal()) - 0.2;
        break;
      }
      case Kind::circles: {  // make_circles(factor=0.5, noise=0.08) · 3
        const double r = rng.below(2) == 0 ? 1.0 : 0.5, t = 2 * kPi * rng.uniform();
        x = 3 * (r * std::cos(t) + 0.08 * rng.normal());
        y = 3 * (r * std::sin(t) + 0.08 * rng.normal());
        break;
      }
      case Kind::rings: {  // radii 3·{1, 0.75, 0.5, 0.25}, then N(0, 0.08²) noise
        const double r = 3.0 * 0.25 * double(4 - rng.below(4)), t = 2 * kPi * rng.uniform();
        x = r * std::cos(t) + 0.08 * rng.normal();
        y = r * std::sin(t) + 0.08 * rng.normal();
        break;
      }
      case Kind::pinwheel: {  // 5 arms; f ~ N((1, 0), diag(0.3², 0.1²)), angle 2πk/5 + 0.25 e^{f₀}
        const double f0 = 1 + 0.3 * rng.normal(), f1 = 0.1 * rng.normal();
        const double a = 2 * kPi * double(rng.below(5)) / 5 + 0.25 * std::exp(f0);
        const double c = std::cos(a), s = std::sin(a);
        x = 2 * (f0 * c + f1 * s);
        y = 2 * (-f0 * s + f1 * c);
        break;
      }
      case Kind::spirals: {  // t = √u · 3π; (−t cos t + u/2, t sin t + u/2) · ±1 / 3 + N(0, 0.1²)
        const double t = std::sqrt(rng.uniform()) * 3 * kPi;
        const double dx = -std::cos(t) * t + 0.5 * rng.uniform(), dy = std::sin(t) * t + 0.5 * rng.uniform();
        const double sign = rng.below(2) == 0 ? 1.0 : -1.0;
        x = sign * dx / 3 + 0.1 * rng.normal();
        y = sign * dy / 3 + 0.1 * rng.normal();
        break;
      }
      case Kind::checkerboard: {  // x₁ ~ U[−2, 2), x₂ = u − 2b + (⌊x₁⌋ mod 2); · 2
        const double x1 = 4 * rng.uniform() - 2;
        const double parity = std::fmod(std::floor(x1), 2.0) != 0 ? 1.0 : 0.0;
        x = 2 * x1;
        y = 2 * (rng.uniform() - 2.0 * double(rng.below(2)) + parity);
        break;
      }
      case Kind::swissroll: {  // make_swiss_roll(noise=1.0)[:, [0, 2]] / 5, t = 1.5π(1 + 2u)
        const double t = 1.5 * kPi * (1 + 2 * rng.uniform());
        x = (t * std::cos(t) + rng.normal()) / 5;
        y = (t * std::sin(t) + rng.normal()) / 5;
        break;
      }
    }
    p[0] = x;
    p[1] = y;
  }

  std::string name_;
  Kind kind_;
};

/// "8gaussians": centres 4·(cos 2πk/8, sin 2πk/8), σ = 0.5, all divided by 1.414.
std::unique_ptr<Dataset> eight_gaussians() {
  xt::xtensor<double, 2> means({8, 2});
  for (std::size_t k = 0; k < 8; ++k) {
    means(k, 0) = 4 * std::cos(2 * kPi * double(k) / 8) / 1.414;
    means(k, 1) = 4 * std::sin(2 * kPi * double(k) / 8) / 1.414;
  }
  return std::make_unique<GaussianMixture>("8gaussians", std::move(means), 0.5 / 1.414);
}

// ---------------------------------------------------------------- files

bool ends_with(const std::string& s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  for (std::size_t i = 0; i < suffix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[s.size() - suffix.size() + i])) != suffix[i]) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

/// A whole field as a number ("1", "-2.5e3", "+4", "nan", "inf"), or nullopt.
std::optional<double> parse_number(std::string_view field) {
  if (!field.empty() && field[0] == '+') field.remove_prefix(1);
  if (field.empty()) return std::nullopt;
  double v = 0;
  const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), v);
  if (end != field.data() + field.size()) return std::nullopt;
  if (ec == std::errc::result_out_of_range) return std::strtod(std::string(field).c_str(), nullptr);  // ±HUGE_VAL or tiny
  if (ec != std::errc()) return std::nullopt;
  return v;
}

std::string nonfinite_hint() { return " (or drop such rows with drop_nonfinite / --drop-nonfinite)"; }

/// Training runs in float32: a finite double beyond its range would become ±inf there.
constexpr double kFloat32Max = 3.4028234663852886e38;
std::string float32_expected(double v) {
  return fmt::format("a value within float32's range (|v| ≤ 3.4e38; trflow trains in float32), got {:g}: rescale the "
                     "column before training",
                     v);
}

xt::xtensor<double, 2> load_npy_matrix(const std::string& path, bool drop, std::size_t& dropped) {
  const nn::NpyArray a = nn::read_npy(path);
  if (a.descr != "<f4" && a.descr != "<f8")
    throw nn::FormatError(path, "", fmt::format("float32 or float64 data ('<f4' or '<f8'), got '{}'", a.descr));
  if (a.shape.size() != 2)
    throw nn::FormatError(path, "",
                          fmt::format("a 2-D (N, D) array, got {} dimension(s) (reshape a 1-D array with a.reshape(-1, 1))",
                                      a.shape.size()));
  const std::size_t n = a.shape[0], d = a.shape[1];
  if (n == 0 || d == 0)
    throw nn::FormatError(path, "", fmt::format("at least one row and one column, got shape ({}, {})", n, d));
  std::vector<std::size_t> keep;
  keep.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    bool finite = true;
    for (std::size_t j = 0; j < d && finite; ++j) {
      const double v = a.data[i * d + j];
      if (std::isfinite(v) && std::abs(v) > kFloat32Max)
        throw nn::FormatError(path, fmt::format("element [{}, {}]", i, j), float32_expected(v));
      if (std::isfinite(v)) continue;
      if (!drop)
        throw nn::FormatError(path, fmt::format("element [{}, {}]", i, j),
                              fmt::format("a finite value, got {}{}", v, nonfinite_hint()));
      finite = false;
    }
    if (finite) keep.push_back(i);
  }
  dropped = n - keep.size();
  if (keep.empty()) throw nn::FormatError(path, "", fmt::format("at least one finite row, got none of {}", n));
  xt::xtensor<double, 2> m({keep.size(), d});
  for (std::size_t r = 0; r < keep.size(); ++r) std::copy_n(a.data.data() + keep[r] * d, d, m.data() + r * d);
  return m;
}

xt::xtensor<double, 2> load_csv_matrix(const std::string& path, bool drop, std::size_t& dropped) {
  const std::string text = nn::read_file(path);
  std::string_view rest(text);
  if (rest.substr(0, 3) == "\xEF\xBB\xBF") rest.remove_prefix(3);  // UTF-8 byte order mark

  std::vector<double> values, row;
  std::size_t cols = 0, cols_line = 0, rows = 0, line = 0, blank_line = 0;
  bool header = false;
  dropped = 0;
  while (!rest.empty()) {
    const std::size_t nl = rest.find('\n');
    const std::string_view raw = rest.substr(0, nl);
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    ++line;
    if (trim(raw).empty()) {
      if (!blank_line) blank_line = line;
      continue;
    }
    if (blank_line)
      throw nn::FormatError(path, fmt::format("line {}", blank_line),
                            "a row of numbers, got a blank line (blank lines are allowed only at the end)");

    // Split and parse; remember the first field that is not a number.
    row.clear();
    std::size_t fields = 0, bad_column = 0;
    std::string_view bad_field;
    for (std::string_view r = raw;;) {
      const std::size_t comma = r.find(',');
      const std::string_view field = trim(r.substr(0, comma));
      ++fields;
      if (const std::optional<double> v = parse_number(field)) row.push_back(*v);
      else if (!bad_column) bad_column = fields, bad_field = field;
      if (comma == std::string_view::npos) break;
      r.remove_prefix(comma + 1);
    }
    if (line == 1 && row.empty()) {  // a header row of column names
      header = true;
      cols = fields, cols_line = line;
      continue;
    }
    if (bad_column)
      throw nn::FormatError(path, fmt::format("line {}, column {}", line, bad_column),
                            fmt::format("a number, got '{}'{}", bad_field,
                                        line == 1 ? " (a header row must hold no numbers)" : ""));
    if (!cols) cols = fields, cols_line = line;
    if (fields != cols)
      throw nn::FormatError(path, fmt::format("line {}", line),
                            fmt::format("{} comma-separated values (as on line {}), got {}", cols, cols_line, fields));
    bool finite = true;
    for (std::size_t j = 0; j < cols; ++j) {
      if (std::isfinite(row[j]) && std::abs(row[j]) > kFloat32Max)
        throw nn::FormatError(path, fmt::format("line {}, column {}", line, j + 1), float32_expected(row[j]));
      if (std::isfinite(row[j])) continue;
      if (!drop)
        throw nn::FormatError(path, fmt::format("line {}, column {}", line, j + 1),
                              fmt::format("a finite number, got {}{}", row[j], nonfinite_hint()));
      finite = false;
    }
    if (!finite) {
      ++dropped;
      continue;
    }
    values.insert(values.end(), row.begin(), row.end());
    ++rows;
  }
  if (rows + dropped == 0)
    throw nn::FormatError(path, "",
                          header ? "at least one row of numbers after the header"
                                 : "rows of comma-separated numbers, got an empty file");
  if (rows == 0) throw nn::FormatError(path, "", fmt::format("at least one finite row, got none of {}", dropped));
  xt::xtensor<double, 2> m({rows, cols});
  std::copy(values.begin(), values.end(), m.data());
  return m;
}

std::size_t parse_dim(const std::string& spec, std::size_t prefix, std::size_t min) {
  const std::string digits = spec.substr(prefix);
  std::size_t d = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), d);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || d < min || d > kMaxDim)
    throw std::invalid_argument(fmt::format("dataset '{}': expected {}D with D an integer in [{}, {}]", spec,
                                            spec.substr(0, prefix), min, kMaxDim));
  return d;
}

}  // namespace

// ---------------------------------------------------------------- Dataset

Dataset::~Dataset() = default;

void Dataset::log_prob(const double*, std::size_t, double*) const {
  throw std::logic_error("dataset " + name() + " has no known density (log_prob)");
}

double spline_tail_bound(Dataset& data, std::uint64_t seed) {
  // 20 000 rows, or fewer once they would pass kTailBoundValues values (D > 104): at D = 1024
  // the 20 000 rows were 164 MB and, for gaussian:D, 21 GFLOP of draws, 0.6 s of a 1.5 s
  // one-step run, growing as D² (D = 4096: 655 MB, ~5 s). 2²¹ values still pin the 99.9th
  // percentile to ~0.2 % (the bound is rounded up to 0.5): gaussian:64 … 2048, gmm:128 and
  // :1024 and crowd:1024 gave the same bound with both counts, for seeds 0, 1 and 2.
  const std::size_t d = data.dim();
  const std::size_t n = std::clamp<std::size_t>(kTailBoundValues / std::max<std::size_t>(d, 1), 1, 20000);
  std::vector<double> buf(n * d);
  ad::Rng rng(seed + 23);
  data.sample(n, rng, buf.data());
  for (double& v : buf) v = std::abs(v);
  const std::size_t q = std::min(buf.size() - 1, std::size_t(0.999 * double(buf.size())));
  std::nth_element(buf.begin(), buf.begin() + std::ptrdiff_t(q), buf.end());
  const double b = std::max(3.0, 1.2 * buf[q]);
  if (!std::isfinite(b)) throw std::invalid_argument("the data hold non-finite values");
  return std::ceil(b * 2.0) / 2.0;
}

void Dataset::sample_with_log_prob(std::size_t n, ad::Rng& rng, double* out, double* lp) {
  if (!has_log_prob()) throw std::logic_error("dataset " + name() + " has no known density (log_prob)");
  sample(n, rng, out);
  log_prob(out, n, lp);
}

void Dataset::draw_unfinished(std::size_t n, ad::Rng& rng, double* out, double* lp) {
  if (lp) sample_with_log_prob(n, rng, out, lp);
  else sample(n, rng, out);
}

void Dataset::finish_block(double*, std::size_t, std::size_t) const {}

void Dataset::all_rows(double*) const {
  throw std::logic_error("dataset " + name() + " is a generator, not a finite set of rows");
}

void Dataset::ot_map(const double*, std::size_t, double*) const {
  throw std::logic_error("dataset " + name() + " has no known optimal-transport map");
}

// ---------------------------------------------------------------- gaussian:D

GaussianDataset::GaussianDataset(std::size_t d) : d_(d), mean_(d), lambda_(d), q_({d, d}) {
  if (d == 0) throw std::invalid_argument("GaussianDataset: the dimension must be at least 1");
  ad::Rng rng(1234 + d);
  for (double& m : mean_) m = rng.normal() / 2;
  xt::xtensor<double, 2> g({d, d});
  rng.fill_normal(g.data(), g.size());
  // Q = the orthonormalized columns of g: LAPACK's Householder QR (dgeqrf, dorgqr; O(D³) in
  // blocked BLAS-3, a fraction of a second at D = 1024), each column's sign chosen so that
  // R's diagonal is positive: the Q that Gram–Schmidt on g's columns gives, to rounding.
  const int n = int(d);
  std::vector<double> a(d * d), tau(d);
  for (std::size_t r = 0; r < d; ++r)
    for (std::size_t i = 0; i < d; ++i) a[r + i * d] = g(r, i);  // column-major
  int info = 0, lwork = -1;
  double query = 0;
  dgeqrf_(&n, &n, a.data(), &n, tau.data(), &query, &lwork, &info);
  std::vector<double> work(std::size_t(std::max(1.0, query)));
  lwork = int(work.size());
  dgeqrf_(&n, &n, a.data(), &n, tau.data(), work.data(), &lwork, &info);
  if (info != 0) throw std::logic_error(fmt::format("GaussianDataset: LAPACK dgeqrf failed (info {})", info));
  std::vector<double> sign(d);
  for (std::size_t i = 0; i < d; ++i) {
    const double rii = a[i + i * d];
    if (!(std::abs(rii) > 1e-8)) throw std::logic_error("GaussianDataset: a degenerate random matrix");
    sign[i] = rii < 0 ? -1.0 : 1.0;
  }
  lwork = -1;
  dorgqr_(&n, &n, &n, a.data(), &n, tau.data(), &query, &lwork, &info);
  work.resize(std::size_t(std::max(1.0, query)));
  lwork = int(work.size());
  dorgqr_(&n, &n, &n, a.data(), &n, tau.data(), work.data(), &lwork, &info);
  if (info != 0) throw std::logic_error(fmt::format("GaussianDataset: LAPACK dorgqr failed (info {})", info));
  for (std::size_t r = 0; r < d; ++r)
    for (std::size_t i = 0; i < d; ++i) q_(r, i) = sign[i] * a[r + i * d];
  double sum_log = 0;
  std::vector<double> root_lambda(d);
  for (std::size_t i = 0; i < d; ++i) {
    lambda_[i] = d == 1 ? 1.0 : std::pow(4.0, 2.0 * double(i) / double(d - 1) - 1.0);
    root_lambda[i] = std::sqrt(lambda_[i]);
    sum_log += std::log(lambda_[i]);
  }
  log_norm_ = -0.5 * sum_log - 0.5 * double(d) * kLog2Pi;
  root_ = spectral(root_lambda);  // once: ot_map is called a chunk of rows at a time
  // L (lower triangular, L Lᵀ = Σ) and L⁻¹, for sample() and log_prob(): a product with a
  // triangular factor is half the flops of one with Q (cblas_dtrmm: 14 against 29 ms for 1024
  // rows at D = 1024). The row-major lower triangle is LAPACK's column-major upper one, so
  // dpotrf('U') gives U = Lᵀ with Σ = Uᵀ U and dtrtri('U') then U⁻¹ = (L⁻¹)ᵀ, in place.
  chol_ = spectral(lambda_);
  dpotrf_("U", &n, chol_.data(), &n, &info);
  if (info != 0) throw std::logic_error(fmt::format("GaussianDataset: LAPACK dpotrf failed (info {})", info));
  for (std::size_t r = 0; r < d; ++r)  // the strict upper triangle (row-major) still holds Σ
    for (std::size_t c = r + 1; c < d; ++c) chol_(r, c) = 0;
  chol_inv_ = chol_;
  dtrtri_("U", "N", &n, chol_inv_.data(), &n, &info);
  if (info != 0) throw std::logic_error(fmt::format("GaussianDataset: LAPACK dtrtri failed (info {})", info));
}

// Q diag(w) Qᵀ (symmetric): Σ for w = λ, Σ^{1/2} for w = √λ. As M Mᵀ with M = Q diag(√w)
// (w > 0): dsyrk computes the lower triangle at half a GEMM's flops, then it is mirrored.
// (Set-up at D = 4096 was 6.3 s with Σ^{1/2} through a GEMM and no L; L and L⁻¹ with Σ
// through another GEMM made it 9.0 s.)
xt::xtensor<double, 2> GaussianDataset::spectral(const std::vector<double>& w) const {
  const std::size_t d = d_;
  xt::xtensor<double, 2> scaled({d, d}), s({d, d});
  for (std::size_t a = 0; a < d; ++a)
    for (std::size_t i = 0; i < d; ++i) scaled(a, i) = q_(a, i) * std::sqrt(w[i]);
  cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, int(d), int(d), 1.0, scaled.data(), int(d), 0.0, s.data(),
              int(d));
  for (std::size_t r = 0; r < d; ++r)
    for (std::size_t c = r + 1; c < d; ++c) s(r, c) = s(c, r);
  return s;
}

std::string GaussianDataset::name() const { return "gaussian:" + std::to_string(d_); }

std::size_t GaussianDataset::memory_bytes() const {
  return (q_.size() + root_.size() + chol_.size() + chol_inv_.size() + mean_.size() + lambda_.size()) *
         sizeof(double);
}

// x_s = m + L ε_s: the draws ε in the order of one row after another, straight into out
// (Rng::normals: Box–Muller on whole batches in SIMD, the stream of normal() calls to
// rounding; one scalar normal() each, with libm's sin and cos, took ~17 ns), then, in
// finish_block, a triangular product in place per block of rows (E ← E Lᵀ, no scratch)
// instead of a matrix–vector product per row. With lp, also log p(x_s) = log_norm − ½‖ε_s‖²,
// since L⁻¹(x_s − m) = ε_s: the density of the data set's own draws needs no whitening product.
void GaussianDataset::draw_unfinished(std::size_t n, ad::Rng& rng, double* out, double* lp) {
  const std::size_t d = d_;
  if (n == 0) return;
  rng.normals(out, n * d);
  if (lp)
    for (std::size_t s = 0; s < n; ++s) {
      double sq = 0;
      for (std::size_t i = 0; i < d; ++i) sq += out[s * d + i] * out[s * d + i];
      lp[s] = log_norm_ - 0.5 * sq;
    }
}

// x = m + L ε for one block of rows, in place: one triangular product per block (one call on
// an evaluation's 20 000 rows at D = 1024 raised the process's peak RSS by 57 MB, OpenBLAS's
// own buffers for the product; 256-row calls take 4 % longer than 1024-row ones there).
void GaussianDataset::finish_block(double* out, std::size_t n, std::size_t block) const {
  const std::size_t d = d_, s0 = block * kFinishRows;
  if (s0 >= n) throw std::out_of_range("GaussianDataset::finish_block: block " + std::to_string(block) +
                                       " is past the " + std::to_string(n) + " rows");
  const std::size_t m = std::min(kFinishRows, n - s0);
  double* rows = out + s0 * d;
  cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, int(m), int(d), 1.0, chol_.data(),
              int(d), rows, int(d));
  for (std::size_t s = 0; s < m; ++s)
    for (std::size_t j = 0; j < d; ++j) rows[s * d + j] += mean_[j];
}

void GaussianDataset::draw(std::size_t n, ad::Rng& rng, double* out, double* lp) {
  draw_unfinished(n, rng, out, lp);
  for (std::size_t b = 0; b * kFinishRows < n; ++b) finish_block(out, n, b);
}

void GaussianDataset::sample(std::size_t n, ad::Rng& rng, double* out) { draw(n, rng, out, nullptr); }

void GaussianDataset::sample_with_log_prob(std::size_t n, ad::Rng& rng, double* out, double* lp) {
  draw(n, rng, out, lp);
}

// log p(x) = log_norm − ½ ‖L⁻¹(x − m)‖², in chunks of rows through one triangular product each
// (Z ← (X − 1mᵀ) L⁻ᵀ, in place).
void GaussianDataset::log_prob(const double* x, std::size_t n, double* out) const {
  const std::size_t d = d_, chunk = std::min<std::size_t>(n, 2048);
  std::vector<double> z(chunk * d);
  for (std::size_t s0 = 0; s0 < n; s0 += chunk) {
    const std::size_t m = std::min(chunk, n - s0);
    for (std::size_t s = 0; s < m; ++s)
      for (std::size_t j = 0; j < d; ++j) z[s * d + j] = x[(s0 + s) * d + j] - mean_[j];
    cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, int(m), int(d), 1.0,
                chol_inv_.data(), int(d), z.data(), int(d));
    for (std::size_t s = 0; s < m; ++s) {
      double quad = 0;
      for (std::size_t i = 0; i < d; ++i) quad += z[s * d + i] * z[s * d + i];
      out[s0 + s] = log_norm_ - 0.5 * quad;
    }
  }
}

std::optional<double> GaussianDataset::w2_sq_to_standard_normal() const {
  double w = 0;
  for (std::size_t i = 0; i < d_; ++i) w += mean_[i] * mean_[i] + 1 + lambda_[i] - 2 * std::sqrt(lambda_[i]);
  return w;
}

std::optional<double> GaussianDataset::entropy() const { return 0.5 * double(d_) - log_norm_; }

void GaussianDataset::ot_map(const double* x, std::size_t n, double* out) const {
  const std::size_t d = d_;
  for (std::size_t s = 0; s < n; ++s) std::copy(mean_.begin(), mean_.end(), out + s * d);
  if (n > 0)  // out = 1·mᵀ + x Σ^{1/2} (row-major: each row is m + Σ^{1/2} x_s)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(d), int(d), 1.0, x, int(d), root_.data(),
                int(d), 1.0, out, int(d));
}

std::optional<double> GaussianDataset::total_variance() const {
  double v = 0;
  for (double l : lambda_) v += l;
  return v;
}

xt::xtensor<double, 2> GaussianDataset::covariance() const { return spectral(lambda_); }

// ---------------------------------------------------------------- mixtures

GaussianMixture::GaussianMixture(std::string name, xt::xtensor<double, 2> means, double sigma)
    : name_(std::move(name)), means_(std::move(means)), sigma_(sigma) {
  if (means_.shape()[0] == 0 || means_.shape()[1] == 0 || !(sigma_ > 0))
    throw std::invalid_argument("GaussianMixture: need at least one component, one dimension and sigma > 0");
}

std::unique_ptr<GaussianMixture> GaussianMixture::gmm(std::size_t d) {
  if (d < 2) throw std::invalid_argument("gmm:D needs D >= 2");
  xt::xtensor<double, 2> means = xt::zeros<double>({std::size_t{8}, d});
  for (std::size_t k = 0; k < 8; ++k) {
    means(k, 0) = 4 * std::cos(2 * kPi * double(k) / 8);
    means(k, 1) = 4 * std::sin(2 * kPi * double(k) / 8);
  }
  return std::make_unique<GaussianMixture>("gmm:" + std::to_string(d), std::move(means), std::sqrt(0.3));
}

std::unique_ptr<GaussianMixture> GaussianMixture::crowd(std::size_t d) {
  if (d < 2) throw std::invalid_argument("crowd:D needs D >= 2");
  xt::xtensor<double, 2> means = xt::zeros<double>({std::size_t{1}, d});
  means(0, 1) = -3.0;
  return std::make_unique<GaussianMixture>("crowd:" + std::to_string(d), std::move(means), std::sqrt(0.3));
}

namespace {
/// The drones' group centres: drones2's corners, or drones8's circle of radius 2 (θ_k = (k+1)π/4),
/// at the start (P0) or the end (P1, the antipode for drones8, the opposite corner for drones2).
std::vector<double> drone_centres(std::size_t groups, bool end) {
  if (groups == 2) return end ? std::vector<double>{1, 1, 0, 1} : std::vector<double>{0, 0, 1, 0};
  if (groups != 8) throw std::invalid_argument(fmt::format("drones: 2 or 8 groups, got {}", groups));
  std::vector<double> c(16);
  for (std::size_t k = 0; k < 8; ++k) {
    const double theta = kPi / 4 * double(k + 1) + (end ? 0.0 : kPi);
    c[2 * k] = 2 * std::cos(theta);
    c[2 * k + 1] = 2 * std::sin(theta);
  }
  return c;
}
}  // namespace

std::vector<double> GaussianMixture::drones_start(std::size_t groups) { return drone_centres(groups, false); }

std::unique_ptr<GaussianMixture> GaussianMixture::drones(std::size_t groups) {
  const std::vector<double> c = drone_centres(groups, true);
  xt::xtensor<double, 2> means = xt::zeros<double>({std::size_t{1}, c.size()});
  std::copy(c.begin(), c.end(), means.data());
  return std::make_unique<GaussianMixture>("drones" + std::to_string(groups), std::move(means),
                                           std::sqrt(groups == 2 ? 0.01 : 5e-3));
}

void GaussianMixture::sample(std::size_t n, ad::Rng& rng, double* out) {
  const std::size_t d = dim(), k_count = means_.shape()[0];
  for (std::size_t s = 0; s < n; ++s) {
    const double* mu = means_.data() + rng.below(k_count) * d;
    for (std::size_t j = 0; j < d; ++j) out[s * d + j] = mu[j] + sigma_ * rng.normal();
  }
}

void GaussianMixture::log_prob(const double* x, std::size_t n, double* out) const {
  const std::size_t d = dim(), k_count = means_.shape()[0];
  const double norm = -std::log(double(k_count)) - 0.5 * double(d) * (kLog2Pi + 2 * std::log(sigma_));
  for (std::size_t s = 0; s < n; ++s) {
    // Streaming log-sum-exp: running maximum m and Σ exp(a_k − m).
    double m = -INFINITY, sum = 0;
    for (std::size_t k = 0; k < k_count; ++k) {
      double sq = 0;
      for (std::size_t j = 0; j < d; ++j) {
        const double diff = x[s * d + j] - means_(k, j);
        sq += diff * diff;
      }
      const double a = -sq / (2 * sigma_ * sigma_);
      if (a > m) sum = sum * std::exp(m - a) + 1, m = a;
      else sum += std::exp(a - m);
    }
    out[s] = m + std::log(sum) + norm;
  }
}

// ---------------------------------------------------------------- files

MatrixDataset::MatrixDataset(std::string name, xt::xtensor<double, 2> rows, std::size_t dropped_rows)
    : name_(std::move(name)), rows_(std::move(rows)), dropped_(dropped_rows) {
  if (rows_.shape()[0] == 0 || rows_.shape()[1] == 0)
    throw std::invalid_argument("MatrixDataset " + name_ + ": need at least one row and one column");
}

void MatrixDataset::sample(std::size_t n, ad::Rng& rng, double* out) {
  const std::size_t d = dim(), rows = rows_.shape()[0];
  for (std::size_t s = 0; s < n; ++s) std::copy_n(rows_.data() + rng.below(rows) * d, d, out + s * d);
}

xt::xtensor<double, 2> load_matrix(const std::string& path, bool drop_nonfinite, std::size_t* dropped) {
  std::size_t count = 0;
  xt::xtensor<double, 2> m;
  if (ends_with(path, ".npy")) m = load_npy_matrix(path, drop_nonfinite, count);
  else if (ends_with(path, ".csv")) m = load_csv_matrix(path, drop_nonfinite, count);
  else throw std::invalid_argument("load_matrix: " + path + ": expected a file name ending in .npy or .csv");
  if (dropped) *dropped = count;
  return m;
}

// ---------------------------------------------------------------- specs

const std::vector<std::string>& toy_dataset_names() {
  static const std::vector<std::string> names = {"8gaussians", "moons",    "circles",      "rings",
                                                 "pinwheel",   "2spirals", "checkerboard", "swissroll"};
  return names;
}

// ---------------------------------------------------------------- brenier:D
namespace {
constexpr double kBrenierA = 2.5, kBrenierS = 4.0;
constexpr std::size_t kMaxBrenierDim = 64;
double sigmoid(double z) { return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z)); }
double softplus(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }

/// Cholesky factor L (lower, row-major, in place) of a symmetric positive definite D×D matrix;
/// returns log det = 2 Σ log L_ii.
double cholesky(double* a, std::size_t d) {
  double logdet = 0;
  for (std::size_t j = 0; j < d; ++j) {
    double s = a[j * d + j];
    for (std::size_t k = 0; k < j; ++k) s -= a[j * d + k] * a[j * d + k];
    if (!(s > 0)) throw std::logic_error("brenier: the Hessian is not positive definite");
    const double l = std::sqrt(s);
    a[j * d + j] = l;
    logdet += 2 * std::log(l);
    for (std::size_t i = j + 1; i < d; ++i) {
      double t = a[i * d + j];
      for (std::size_t k = 0; k < j; ++k) t -= a[i * d + k] * a[j * d + k];
      a[i * d + j] = t / l;
    }
  }
  return logdet;
}

/// Solves (L Lᵀ) x = r in place of r.
void cholesky_solve(const double* l, std::size_t d, double* r) {
  for (std::size_t i = 0; i < d; ++i) {
    for (std::size_t k = 0; k < i; ++k) r[i] -= l[i * d + k] * r[k];
    r[i] /= l[i * d + i];
  }
  for (std::size_t i = d; i-- > 0;) {
    for (std::size_t k = i + 1; k < d; ++k) r[i] -= l[k * d + i] * r[k];
    r[i] /= l[i * d + i];
  }
}
}  // namespace

BrenierDataset::BrenierDataset(std::size_t d) : d_(d), k_(d + 2), w_((d + 2) * d), b_(d + 2), x_(d) {
  if (d == 0) throw std::invalid_argument("BrenierDataset: the dimension must be at least 1");
  ad::Rng rng(4321 + d);
  for (std::size_t k = 0; k < k_; ++k) {
    double norm = 0;
    do {
      norm = 0;
      for (std::size_t j = 0; j < d; ++j) norm += (w_[k * d + j] = rng.normal()) * w_[k * d + j];
    } while (norm < 1e-12);
    for (std::size_t j = 0; j < d; ++j) w_[k * d + j] /= std::sqrt(norm);
    b_[k] = 0.3 * rng.normal();
  }
  // W2² = E‖∇ψ(X) − X‖² on 200 000 fixed draws, with its standard error.
  const std::size_t n = 200000;
  ad::Rng mc(99 + d);
  std::vector<double> x(d), g(d);
  double sum = 0, sum_sq = 0;
  for (std::size_t s = 0; s < n; ++s) {
    mc.fill_normal(x.data(), d);
    gradient(x.data(), g.data());
    double c = 0;
    for (std::size_t j = 0; j < d; ++j) c += (g[j] - x[j]) * (g[j] - x[j]);
    sum += c;
    sum_sq += c * c;
  }
  w2_ = sum / double(n);
  w2_se_ = std::sqrt(std::max(0.0, sum_sq / double(n) - w2_ * w2_) / double(n));
}

void BrenierDataset::gradient(const double* x, double* g) const {
  std::copy(x, x + d_, g);
  for (std::size_t k = 0; k < k_; ++k) {
    double z = -b_[k];
    for (std::size_t j = 0; j < d_; ++j) z += w_[k * d_ + j] * x[j];
    const double c = kBrenierA * sigmoid(kBrenierS * z);
    for (std::size_t j = 0; j < d_; ++j) g[j] += c * w_[k * d_ + j];
  }
}

double BrenierDataset::hessian(const double* x, double* h) const {
  std::vector<double> local;
  if (!h) local.resize(d_ * d_), h = local.data();
  std::fill(h, h + d_ * d_, 0.0);
  for (std::size_t j = 0; j < d_; ++j) h[j * d_ + j] = 1.0;
  for (std::size_t k = 0; k < k_; ++k) {
    double z = -b_[k];
    for (std::size_t j = 0; j < d_; ++j) z += w_[k * d_ + j] * x[j];
    const double sg = sigmoid(kBrenierS * z), c = kBrenierA * kBrenierS * sg * (1 - sg);
    for (std::size_t a = 0; a < d_; ++a)
      for (std::size_t b = 0; b < d_; ++b) h[a * d_ + b] += c * w_[k * d_ + a] * w_[k * d_ + b];
  }
  std::vector<double> l(h, h + d_ * d_);
  return cholesky(l.data(), d_);
}

double BrenierDataset::inverse(const double* y, double* x) const {
  // Minimize f(x) = ψ(x) − ⟨x, y⟩: ∇f = ∇ψ(x) − y, ∇²f = ∇²ψ(x) ⪰ I. Newton steps, halved
  // until f does not increase beyond its rounding (near the solution f is flat to rounding, and
  // a strict decrease would stall the full steps that converge quadratically).
  const std::size_t d = d_;
  auto f = [&](const double* v) {
    double val = 0;
    for (std::size_t j = 0; j < d; ++j) val += 0.5 * v[j] * v[j] - v[j] * y[j];
    for (std::size_t k = 0; k < k_; ++k) {
      double z = -b_[k];
      for (std::size_t j = 0; j < d; ++j) z += w_[k * d + j] * v[j];
      val += kBrenierA / kBrenierS * softplus(kBrenierS * z);
    }
    return val;
  };
  double ynorm = 0;
  for (std::size_t j = 0; j < d; ++j) ynorm += y[j] * y[j];
  const double tol = 1e-12 * (1 + std::sqrt(ynorm));
  std::copy(y, y + d, x);  // ∇ψ(x) = x + a Σ σ w: y itself is within a K of the answer
  std::vector<double> g(d), h(d * d), step(d), trial(d);
  for (int it = 0; it < 200; ++it) {
    gradient(x, g.data());
    double res = 0;
    for (std::size_t j = 0; j < d; ++j) res += (g[j] - y[j]) * (g[j] - y[j]), step[j] = g[j] - y[j];
    if (std::sqrt(res) <= tol) return hessian(x, nullptr);
    hessian(x, h.data());
    cholesky(h.data(), d);
    cholesky_solve(h.data(), d, step.data());
    const double f0 = f(x);
    double t = 1;
    for (int half = 0; half < 60; ++half, t *= 0.5) {
      for (std::size_t j = 0; j < d; ++j) trial[j] = x[j] - t * step[j];
      if (f(trial.data()) <= f0 + 1e-13 * std::max(1.0, std::abs(f0))) break;
    }
    std::copy(trial.begin(), trial.end(), x);
  }
  return hessian(x, nullptr);  // (not reached for this ψ: Newton converges in a few steps)
}

void BrenierDataset::sample(std::size_t n, ad::Rng& rng, double* out) {
  for (std::size_t s = 0; s < n; ++s) {
    rng.fill_normal(x_.data(), d_);
    gradient(x_.data(), out + s * d_);
  }
}

void BrenierDataset::ot_map(const double* x, std::size_t n, double* out) const {
  for (std::size_t s = 0; s < n; ++s) gradient(x + s * d_, out + s * d_);
}

void BrenierDataset::log_prob(const double* y, std::size_t n, double* out) const {
  std::vector<double> x(d_);
  for (std::size_t s = 0; s < n; ++s) {
    const double logdet = inverse(y + s * d_, x.data());
    double sq = 0;
    for (double v : x) sq += v * v;
    out[s] = -0.5 * sq - 0.5 * double(d_) * kLog2Pi - logdet;
  }
}

std::unique_ptr<Dataset> make_dataset(const std::string& spec, bool drop_nonfinite) {
  using K = ToyDataset::Kind;
  if (spec == "8gaussians") return eight_gaussians();
  const std::pair<const char*, K> toys[] = {{"moons", K::moons},       {"circles", K::circles},
                                            {"rings", K::rings},       {"pinwheel", K::pinwheel},
                                            {"2spirals", K::spirals},  {"checkerboard", K::checkerboard},
                                            {"swissroll", K::swissroll}};
  for (const auto& [name, kind] : toys)
    if (spec == name) return std::make_unique<ToyDataset>(spec, kind);
  if (spec.rfind("gaussian:", 0) == 0) return std::make_unique<GaussianDataset>(parse_dim(spec, 9, 1));
  if (spec.rfind("gmm:", 0) == 0) return GaussianMixture::gmm(parse_dim(spec, 4, 2));
  if (spec.rfind("crowd:", 0) == 0) return GaussianMixture::crowd(parse_dim(spec, 6, 2));
  if (spec == "drones2") return GaussianMixture::drones(2);
  if (spec == "drones8") return GaussianMixture::drones(8);
  if (spec.rfind("brenier:", 0) == 0) {
    const std::size_t d = parse_dim(spec, 8, 1);
    if (d > kMaxBrenierDim)  // its W2² is a Monte Carlo estimate of cost 200 000 (D + 2) D
      throw std::invalid_argument(fmt::format("{}: brenier:D takes 1 <= D <= {}", spec, kMaxBrenierDim));
    return std::make_unique<BrenierDataset>(d);
  }
  if (ends_with(spec, ".npy") || ends_with(spec, ".csv")) {
    std::size_t dropped = 0;
    xt::xtensor<double, 2> rows = load_matrix(spec, drop_nonfinite, &dropped);
    return std::make_unique<MatrixDataset>(spec, std::move(rows), dropped);
  }
  std::string known;
  for (const std::string& n : toy_dataset_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument(fmt::format("unknown dataset '{}': expected one of {}; gaussian:D (1 <= D <= {}); "
                                          "gmm:D, crowd:D (2 <= D <= {}); brenier:D (1 <= D <= {}); drones2, drones8; or a path ending in .npy or .csv",
                                          spec, known, kMaxDim, kMaxDim, kMaxBrenierDim));
}

// ---------------------------------------------------------------- Standardizer

void Standardizer::fit(const xt::xtensor<double, 2>& x) {
  const std::size_t n = x.shape()[0], d = x.shape()[1];
  if (n == 0) throw std::invalid_argument("Standardizer::fit: no rows");
  mean.assign(d, 0.0);
  std.assign(d, 0.0);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) mean[j] += x(i, j);
  for (double& m : mean) m /= double(n);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) std[j] += (x(i, j) - mean[j]) * (x(i, j) - mean[j]);
  for (std::size_t j = 0; j < d; ++j) {
    const double s = n > 1 ? std::sqrt(std[j] / double(n - 1)) : 1.0;
    std[j] = s > 1e-12 * std::max(1.0, std::abs(mean[j])) ? s : 1.0;
  }
}

void Standardizer::apply(double* x, std::size_t n, std::size_t d) const {
  if (d != mean.size()) throw std::invalid_argument(fmt::format("Standardizer: fitted on {} columns, got {}", mean.size(), d));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) x[i * d + j] = (x[i * d + j] - mean[j]) / std[j];
}

void Standardizer::invert(double* x, std::size_t n, std::size_t d) const {
  if (d != mean.size()) throw std::invalid_argument(fmt::format("Standardizer: fitted on {} columns, got {}", mean.size(), d));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) x[i * d + j] = x[i * d + j] * std[j] + mean[j];
}

double Standardizer::log_det() const {
  double s = 0;
  for (double v : std) s -= std::log(v);
  return s;
}

}  // namespace flows
