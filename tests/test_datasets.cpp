// flows/datasets: Gaussian targets against closed forms, toy sets, data files, standardization.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <doctest/doctest.h>

#include "flows/datasets.hpp"
#include "nn/io.hpp"

namespace fs = std::filesystem;
using flows::Dataset;

namespace {

constexpr double kPi = 3.141592653589793238462643383279502884;

std::vector<double> draw(Dataset& data, std::size_t n, std::uint64_t seed) {
  std::vector<double> x(n * data.dim());
  ad::Rng rng(seed);
  data.sample(n, rng, x.data());
  return x;
}

/// Mean and covariance (divisor n) of n rows of d columns.
void moments(const std::vector<double>& x, std::size_t d, std::vector<double>& mean, std::vector<double>& cov) {
  const std::size_t n = x.size() / d;
  mean.assign(d, 0.0);
  cov.assign(d * d, 0.0);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t a = 0; a < d; ++a) mean[a] += x[i * d + a] / double(n);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t a = 0; a < d; ++a)
      for (std::size_t b = 0; b < d; ++b) cov[a * d + b] += (x[i * d + a] - mean[a]) * (x[i * d + b] - mean[b]) / double(n);
}

/// Solves A y = b and returns det A (Gaussian elimination with partial pivoting; A is d×d, copied).
double solve(std::vector<double> a, std::vector<double>& b, std::size_t d) {
  double det = 1;
  for (std::size_t c = 0; c < d; ++c) {
    std::size_t p = c;
    for (std::size_t r = c + 1; r < d; ++r)
      if (std::abs(a[r * d + c]) > std::abs(a[p * d + c])) p = r;
    if (p != c) {
      for (std::size_t k = 0; k < d; ++k) std::swap(a[c * d + k], a[p * d + k]);
      std::swap(b[c], b[p]);
      det = -det;
    }
    det *= a[c * d + c];
    for (std::size_t r = c + 1; r < d; ++r) {
      const double f = a[r * d + c] / a[c * d + c];
      for (std::size_t k = c; k < d; ++k) a[r * d + k] -= f * a[c * d + k];
      b[r] -= f * b[c];
    }
  }
  for (std::size_t c = d; c-- > 0;) {
    for (std::size_t k = c + 1; k < d; ++k) b[c] -= a[c * d + k] * b[k];
    b[c] /= a[c * d + c];
  }
  return det;
}

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() / ("trflow_data_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& content) const {
    const std::string p = (path / name).string();
    nn::write_file_atomic(p, content);
    return p;
  }
};

std::string format_error(const std::string& path, bool drop = false) {
  try {
    flows::load_matrix(path, drop);
  } catch (const nn::FormatError& e) {
    return e.what();
  }
  FAIL("expected nn::FormatError for " << path);
  return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("gaussian:D is deterministic, Q is orthogonal and the eigenvalues span [1/4, 4]") {
  flows::GaussianDataset g(6), again(6);
  CHECK(g.name() == "gaussian:6");
  CHECK(g.mean() == again.mean());
  const auto& q = g.rotation();
  for (std::size_t a = 0; a < 6; ++a)
    for (std::size_t b = 0; b < 6; ++b) {
      double dot = 0;
      for (std::size_t r = 0; r < 6; ++r) dot += q(r, a) * q(r, b);
      CHECK(dot == doctest::Approx(a == b ? 1.0 : 0.0).epsilon(1e-12));
    }
  CHECK(g.eigenvalues().front() == doctest::Approx(0.25));
  CHECK(g.eigenvalues().back() == doctest::Approx(4.0));
  CHECK(g.eigenvalues()[1] / g.eigenvalues()[0] == doctest::Approx(g.eigenvalues()[5] / g.eigenvalues()[4]));
  CHECK(flows::GaussianDataset(1).eigenvalues() == std::vector<double>{1.0});
  // Orthogonal to rounding in high dimension too (Gram–Schmidt twice).
  flows::GaussianDataset big(200);
  double worst = 0;
  for (std::size_t a = 0; a < 200; a += 7)
    for (std::size_t b = 0; b < 200; ++b) {
      double dot = 0;
      for (std::size_t r = 0; r < 200; ++r) dot += big.rotation()(r, a) * big.rotation()(r, b);
      worst = std::max(worst, std::abs(dot - (a == b)));
    }
  CHECK(worst < 1e-12);
}

TEST_CASE("gaussian:D's Q (LAPACK QR) is the Gram–Schmidt Q of its random matrix, so the data set is what it was") {
  // The draws GaussianDataset(d) makes: d means, then the d×d matrix g, from Rng(1234 + d).
  const std::size_t d = 40;
  ad::Rng rng(1234 + d);
  for (std::size_t i = 0; i < d; ++i) rng.normal();
  std::vector<double> g(d * d), q(d * d);
  rng.fill_normal(g.data(), g.size());
  for (std::size_t i = 0; i < d; ++i) {  // modified Gram–Schmidt on g's columns, twice
    for (int pass = 0; pass < 2; ++pass)
      for (std::size_t k = 0; k < i; ++k) {
        double dot = 0;
        for (std::size_t r = 0; r < d; ++r) dot += q[r * d + k] * g[r * d + i];
        for (std::size_t r = 0; r < d; ++r) g[r * d + i] -= dot * q[r * d + k];
      }
    double norm = 0;
    for (std::size_t r = 0; r < d; ++r) norm += g[r * d + i] * g[r * d + i];
    for (std::size_t r = 0; r < d; ++r) q[r * d + i] = g[r * d + i] / std::sqrt(norm);
  }
  flows::GaussianDataset data(d);
  double worst = 0;
  for (std::size_t r = 0; r < d; ++r)
    for (std::size_t i = 0; i < d; ++i) worst = std::max(worst, std::abs(data.rotation()(r, i) - q[r * d + i]));
  CHECK(worst < 1e-10);
}

TEST_CASE("gaussian:3 samples have the stated mean and covariance") {
  flows::GaussianDataset g(3);
  const std::size_t n = 400000;
  std::vector<double> mean, cov;
  moments(draw(g, n, 5), 3, mean, cov);
  const auto sigma = g.covariance();
  for (std::size_t a = 0; a < 3; ++a) {
    // Standard errors: √(Σaa/n) ≤ 0.0032 for the mean, √((ΣaaΣbb + Σab²)/n) ≤ 0.009 for the covariance.
    CHECK(std::abs(mean[a] - g.mean()[a]) < 0.015);
    for (std::size_t b = 0; b < 3; ++b) CHECK(std::abs(cov[a * 3 + b] - sigma(a, b)) < 0.045);
  }
  // The covariance's eigenvalues are λ: tr Σ = Σ λ.
  CHECK(sigma(0, 0) + sigma(1, 1) + sigma(2, 2) == doctest::Approx(0.25 + 1 + 4));
}

TEST_CASE("gaussian:D log_prob equals the direct formula — entropy is −E log p") {
  flows::GaussianDataset g(3);
  const auto sigma = g.covariance();
  std::vector<double> s(sigma.begin(), sigma.end());
  const std::vector<double> x = {0.7, -1.2, 2.5};
  std::vector<double> y = {x[0] - g.mean()[0], x[1] - g.mean()[1], x[2] - g.mean()[2]};
  const std::vector<double> diff = y;
  const double det = solve(s, y, 3);  // y = Σ⁻¹ (x − m)
  const double quad = diff[0] * y[0] + diff[1] * y[1] + diff[2] * y[2];
  const double direct = -0.5 * quad - 0.5 * std::log(std::pow(2 * kPi, 3) * det);
  double lp = 0;
  g.log_prob(x.data(), 1, &lp);
  CHECK(lp == doctest::Approx(direct).epsilon(1e-12));
  CHECK(det == doctest::Approx(0.25 * 1 * 4));
  CHECK(*g.entropy() == doctest::Approx(0.5 * std::log(std::pow(2 * kPi * std::exp(1.0), 3) * det)));

  const std::size_t n = 200000;
  const std::vector<double> xs = draw(g, n, 11);
  std::vector<double> lps(n);
  g.log_prob(xs.data(), n, lps.data());
  double mean_nll = 0;
  for (double v : lps) mean_nll -= v / double(n);
  CHECK(std::abs(mean_nll - *g.entropy()) < 0.02);  // sd of −log p is √(D/2) ≈ 1.2: se 0.003
}

TEST_CASE("sample_with_log_prob: the same draws as sample, with the density log_prob gives them") {
  // gaussian:D computes log p of its own draws from the standard-normal draws (no whitening
  // product); the generic default (sample, then log_prob) must give the same figures.
  for (const std::size_t d : {std::size_t(3), std::size_t(40)}) {
    flows::GaussianDataset g(d);
    const std::size_t n = 1500;  // more than one chunk of draws
    const std::vector<double> plain = draw(g, n, 21);
    std::vector<double> xs(n * d), lp(n), direct(n);
    ad::Rng rng(21);
    g.sample_with_log_prob(n, rng, xs.data(), lp.data());
    CHECK(xs == plain);
    g.log_prob(xs.data(), n, direct.data());
    double worst = 0;
    for (std::size_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(lp[i] - direct[i]));
    CHECK(worst < 1e-9 * double(d));
  }
  const auto gmm = flows::make_dataset("gmm:2");  // the default: sample, then log_prob
  REQUIRE(gmm->has_log_prob());
  std::vector<double> gx(2 * 50), glp(50), gdirect(50);
  ad::Rng grng(3);
  gmm->sample_with_log_prob(50, grng, gx.data(), glp.data());
  CHECK(gx == draw(*gmm, 50, 3));
  gmm->log_prob(gx.data(), 50, gdirect.data());
  CHECK(glp == gdirect);
  const auto moons = flows::make_dataset("moons");  // no known density
  std::vector<double> xs(2), lp(1);
  ad::Rng rng(1);
  CHECK_THROWS_AS(moons->sample_with_log_prob(1, rng, xs.data(), lp.data()), std::logic_error);
}

TEST_CASE("draw_unfinished, then finish_block on every block, in any order and on two threads at once, gives sample()'s rows bit for bit") {
  // D = 33 and 100: OpenBLAS's dtrmm gives a row other bits in a call of another row count
  // there, so the blocks must be the same however the rows are shared out.
  for (const std::size_t d : {std::size_t(33), std::size_t(100)}) {
    CAPTURE(d);
    flows::GaussianDataset g(d);
    const std::size_t rows = g.finish_block_rows(), n = 3 * rows + 17;  // three whole blocks and a short one
    REQUIRE(rows > 0);
    std::vector<double> plain(n * d), plain_lp(n);
    ad::Rng r1(8);
    g.sample_with_log_prob(n, r1, plain.data(), plain_lp.data());
    std::vector<double> xs(n * d), lp(n);
    ad::Rng r2(8);
    g.draw_unfinished(n, r2, xs.data(), lp.data());
    CHECK(lp == plain_lp);
    CHECK(xs != plain);  // not finished yet: the standard-normal draws
    CHECK(r2.next_u64() == r1.next_u64());  // the same draws taken from the stream
    std::thread other([&] {
      g.finish_block(xs.data(), n, 3);
      g.finish_block(xs.data(), n, 1);
    });
    g.finish_block(xs.data(), n, 2);
    g.finish_block(xs.data(), n, 0);
    other.join();
    CHECK(xs == plain);
    CHECK_THROWS_AS(g.finish_block(xs.data(), n, 4), std::out_of_range);  // past the last row
    // sample() itself: the same rows as the draws with their densities
    std::vector<double> again(n * d);
    ad::Rng r3(8);
    g.sample(n, r3, again.data());
    CHECK(again == plain);
  }
  // A data set with nothing to finish: no blocks, and the rows come drawn finished.
  const auto moons = flows::make_dataset("moons");
  CHECK(moons->finish_block_rows() == 0);
  std::vector<double> xs(2 * 40);
  ad::Rng rng(4);
  moons->draw_unfinished(40, rng, xs.data(), nullptr);
  CHECK(xs == draw(*moons, 40, 4));
}

TEST_CASE("gaussian:2 density integrates to 1 and W2² matches the matrix square root formula") {
  flows::GaussianDataset g(2);
  double total = 0;
  const double h = 0.05;
  std::vector<double> pts;
  for (double u = -9; u < 9; u += h)
    for (double v = -9; v < 9; v += h) pts.insert(pts.end(), {u, v});
  std::vector<double> lp(pts.size() / 2);
  g.log_prob(pts.data(), lp.size(), lp.data());
  for (double v : lp) total += std::exp(v) * h * h;
  CHECK(total == doctest::Approx(1.0).epsilon(1e-6));

  // W2²(N(0, I), N(m, Σ)) = ‖m‖² + tr(I + Σ − 2 Σ^½), with the explicit 2×2 square
  // root √Σ = (Σ + √det Σ · I) / √(tr Σ + 2 √det Σ).
  const auto s = g.covariance();
  const double det = s(0, 0) * s(1, 1) - s(0, 1) * s(1, 0), tr = s(0, 0) + s(1, 1);
  const double tr_sqrt = (tr + 2 * std::sqrt(det)) / std::sqrt(tr + 2 * std::sqrt(det));
  const double m2 = g.mean()[0] * g.mean()[0] + g.mean()[1] * g.mean()[1];
  CHECK(*g.w2_sq_to_standard_normal() == doctest::Approx(m2 + 2 + tr - 2 * tr_sqrt).epsilon(1e-12));
  CHECK(*g.w2_sq_to_standard_normal() > m2);
}

TEST_CASE("gmm:D log_prob at a centre equals the direct mixture sum — samples have the right moments") {
  auto gmm = flows::make_dataset("gmm:3");
  CHECK(gmm->dim() == 3);
  CHECK(gmm->name() == "gmm:3");
  REQUIRE(gmm->has_log_prob());
  CHECK(!gmm->entropy());
  const std::vector<double> x = {4.0, 0.0, 0.0};
  double direct = 0;
  for (int k = 0; k < 8; ++k) {
    const double dx = 4 - 4 * std::cos(2 * kPi * k / 8), dy = -4 * std::sin(2 * kPi * k / 8);
    direct += 0.125 * std::pow(2 * kPi * 0.3, -1.5) * std::exp(-(dx * dx + dy * dy) / (2 * 0.3));
  }
  double lp = 0;
  gmm->log_prob(x.data(), 1, &lp);
  CHECK(lp == doctest::Approx(std::log(direct)).epsilon(1e-12));
  // Far away the log-sum-exp stays finite.
  const std::vector<double> far = {1e3, -1e3, 5e2};
  gmm->log_prob(far.data(), 1, &lp);
  CHECK(std::isfinite(lp));

  const std::size_t n = 200000;
  std::vector<double> mean, cov;
  moments(draw(*gmm, n, 3), 3, mean, cov);
  CHECK(std::abs(mean[0]) < 0.03);
  CHECK(std::abs(mean[1]) < 0.03);
  CHECK(std::abs(mean[2]) < 0.01);
  CHECK(cov[0] == doctest::Approx(8 + 0.3).epsilon(0.01));  // E cos² · 16 + σ²
  CHECK(cov[4] == doctest::Approx(8 + 0.3).epsilon(0.01));
  CHECK(cov[8] == doctest::Approx(0.3).epsilon(0.02));
}

TEST_CASE("toy sets: finite, in range, deterministic per seed, with their defining structure") {
  for (const std::string& name : flows::toy_dataset_names()) {
    CAPTURE(name);
    auto data = flows::make_dataset(name);
    CHECK(data->dim() == 2);
    CHECK(data->name() == name);
    const std::vector<double> x = draw(*data, 20000, 42);
    CHECK(x == draw(*data, 20000, 42));
    CHECK(x != draw(*data, 20000, 43));
    double lo = 1e9, hi = -1e9, second = 0;
    for (double v : x) {
      REQUIRE(std::isfinite(v));
      lo = std::min(lo, v), hi = std::max(hi, v);
      second += v * v / 20000;  // E‖x‖² over the 20000 rows
    }
    CHECK(lo > -7.0);
    CHECK(hi < 7.0);
    CHECK(second > 0.5);  // E‖x‖²: not collapsed
    CHECK(second < 20.0);
  }
  CHECK(flows::toy_dataset_names().size() == 8);

  std::vector<double> mean, cov;
  // moons: outer arc mean (0, 2/π), inner (1, ½ − 2/π) → (½, ¼) → ·2 + (−1, −0.2) = (0, 0.3).
  moments(draw(*flows::make_dataset("moons"), 100000, 1), 2, mean, cov);
  CHECK(std::abs(mean[0]) < 0.02);
  CHECK(std::abs(mean[1] - 0.3) < 0.02);
  // 8gaussians: E‖x‖² = (16 + 2 · 0.25) / 1.414².
  auto eight = flows::make_dataset("8gaussians");
  moments(draw(*eight, 100000, 1), 2, mean, cov);
  CHECK(cov[0] + cov[3] == doctest::Approx(16.5 / (1.414 * 1.414)).epsilon(0.01));
  REQUIRE(eight->has_log_prob());
  // checkerboard: ⌊x/2⌋ + ⌊y/2⌋ is even for every point.
  const std::vector<double> cb = draw(*flows::make_dataset("checkerboard"), 10000, 1);
  for (std::size_t i = 0; i < cb.size(); i += 2) {
    REQUIRE(int(std::floor(cb[i] / 2) + std::floor(cb[i + 1] / 2)) % 2 == 0);
    REQUIRE(std::abs(cb[i]) <= 4.0);
    REQUIRE(std::abs(cb[i + 1]) <= 4.0);
  }
  // rings: radii 3, 2.25, 1.5, 0.75 with N(0, 0.08²) noise; circles: 3 and 1.5 with 0.24.
  for (auto [name, noise] : {std::pair<const char*, double>{"rings", 0.08}, {"circles", 0.24}}) {
    const std::vector<double> r = draw(*flows::make_dataset(name), 20000, 9);
    double sq = 0;
    for (std::size_t i = 0; i < r.size(); i += 2) {
      const double rad = std::hypot(r[i], r[i + 1]);
      double best = 1e9;
      for (double c : {3.0, 2.25, 1.5, 0.75})
        if (std::string(name) == "rings" || c == 3.0 || c == 1.5) best = std::min(best, std::abs(rad - c));
      sq += best * best / 10000;
    }
    CHECK(std::sqrt(sq) == doctest::Approx(noise).epsilon(0.1));
  }
}

TEST_CASE("make_dataset: unknown names list the known ones — bad dimensions are rejected") {
  try {
    flows::make_dataset("moon");
    FAIL("expected std::invalid_argument");
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    for (const std::string& name : flows::toy_dataset_names()) CHECK(contains(msg, name));
    CHECK(contains(msg, "'moon'"));
    CHECK(contains(msg, "gaussian:D"));
    CHECK(contains(msg, "gmm:D"));
    CHECK(contains(msg, ".npy or .csv"));
  }
  for (const char* bad : {"gaussian:0", "gaussian:", "gaussian:2x", "gaussian:-1", "gmm:1", "gaussian:5000"})
    CHECK_THROWS_AS(flows::make_dataset(bad), std::invalid_argument);
  CHECK(flows::make_dataset("gaussian:4")->w2_sq_to_standard_normal().has_value());
  const std::vector<double> x = {0.0, 0.0};
  double out = 0;
  CHECK_THROWS_AS(flows::make_dataset("moons")->log_prob(x.data(), 1, &out), std::logic_error);
}

TEST_CASE("csv: header, CRLF and trailing blank lines are accepted — rows are drawn from the file") {
  TempDir dir;
  const std::string path = dir.write("d.csv", "x,y,z\r\n1,2,3\r\n-4.5, +5e-1 ,6\r\n\r\n\n");
  const auto m = flows::load_matrix(path);
  REQUIRE(m.shape()[0] == 2);
  REQUIRE(m.shape()[1] == 3);
  CHECK(std::vector<double>(m.begin(), m.end()) == std::vector<double>{1, 2, 3, -4.5, 0.5, 6});
  const auto no_header = flows::load_matrix(dir.write("n.csv", "7\n8\n9"));
  CHECK(no_header.shape()[0] == 3);
  CHECK(no_header(2, 0) == 9);

  auto data = flows::make_dataset(path);
  CHECK(data->dim() == 3);
  CHECK(data->name() == path);
  CHECK(!data->has_log_prob());
  const std::vector<double> x = draw(*data, 1000, 1);
  std::size_t first = 0;
  for (std::size_t i = 0; i < 1000; ++i) {
    REQUIRE((x[3 * i] == 1.0 || x[3 * i] == -4.5));
    first += x[3 * i] == 1.0;
  }
  CHECK(first > 430);  // uniform over the 2 rows: 500 ± 16
  CHECK(first < 570);
}

TEST_CASE("memory_bytes: what a data set holds, for the training's memory check") {
  TempDir dir;
  const auto file = flows::make_dataset(dir.write("d.csv", "1,2,3\n4,5,6\n7,8,9\n10,11,12\n"));
  CHECK(file->memory_bytes() == 4 * 3 * sizeof(double));  // its rows, float64
  // gaussian:D: Q, Σ^{1/2}, L and L⁻¹, and a few vectors of D (no scratch rows: draws go in place).
  for (std::size_t d : {8, 200}) {
    const auto g = flows::make_dataset("gaussian:" + std::to_string(d));
    CAPTURE(d);
    CHECK(g->memory_bytes() >= 4 * d * d * sizeof(double));
    CHECK(g->memory_bytes() <= (4 * d * d + 8 * d) * sizeof(double));
  }
  CHECK(flows::make_dataset("moons")->memory_bytes() == 0);
  CHECK(flows::make_dataset("gmm:16")->memory_bytes() == 8 * 16 * sizeof(double));  // its means
}

namespace {
/// A generator of known values for spline_tail_bound: value k of a draw (counting across its
/// rows) is (k mod 1000) / 100, so |y| is uniform on the grid 0, 0.01, …, 9.99 whatever the
/// number of values drawn; it records how many rows each sample() asked for.
class GridData : public Dataset {
 public:
  explicit GridData(std::size_t d) : d_(d) {}
  std::size_t dim() const override { return d_; }
  std::string name() const override { return "grid"; }
  void sample(std::size_t n, ad::Rng&, double* out) override {
    calls.push_back(n);
    for (std::size_t k = 0; k < n * d_; ++k) out[k] = double(k % 1000) / 100.0;
  }
  std::vector<std::size_t> calls;

 private:
  std::size_t d_;
};
}  // namespace

TEST_CASE("spline_tail_bound: 20 000 rows up to D = 104, then at most 2^21 values, the same bound") {
  // 1.2 × the 99.9th percentile (9.99) = 11.988, rounded up to 0.5: 12 with every count
  const std::size_t dims[] = {2, 104, 105, 1024, 4096};
  const std::size_t rows[] = {20000, 20000, 19972, 2048, 512};
  for (std::size_t i = 0; i < 5; ++i) {
    CAPTURE(dims[i]);
    GridData data(dims[i]);
    CHECK(flows::spline_tail_bound(data, 0) == 12.0);
    REQUIRE(data.calls.size() == 1);
    CHECK(data.calls[0] == rows[i]);
  }
  GridData wide(flows::kTailBoundValues + 1);  // wider than the budget: still one row
  CHECK(flows::spline_tail_bound(wide, 0) == 12.0);
  CHECK(wide.calls.at(0) == 1);
  // a built-in set: the bound over 2048 rows at D = 1024 is the one 20 000 rows gave
  auto g = flows::make_dataset("gaussian:1024");
  CHECK(flows::spline_tail_bound(*g, 0) == 5.5);
}

TEST_CASE("csv: errors name the file, line and column") {
  TempDir dir;
  struct Case {
    std::string content, where;
  };
  const Case cases[] = {
      {"a,b\n1,2\n3,abc\n", ": line 3, column 2: expected a number, got 'abc'"},
      {"1,2\n3,4,5\n", ": line 2: expected 2 comma-separated values (as on line 1), got 3"},
      {"a,b,c\n1,2\n", ": line 2: expected 3 comma-separated values (as on line 1), got 2"},
      {"1,2\n\n3,4\n", ": line 2: expected a row of numbers, got a blank line"},
      {"1,,2\n", ": line 1, column 2: expected a number, got ''"},
      {"x,1\n2,3\n", ": line 1, column 1: expected a number, got 'x' (a header row must hold no numbers)"},
      {"", ": expected rows of comma-separated numbers, got an empty file"},
      {"\n\n", ": expected rows of comma-separated numbers, got an empty file"},
      {"a,b\n", ": expected at least one row of numbers after the header"},
  };
  int k = 0;
  for (const Case& c : cases) {
    CAPTURE(c.content);
    const std::string path = dir.write("e" + std::to_string(k++) + ".csv", c.content);
    CHECK(contains(format_error(path), path + c.where));
  }
  CHECK_THROWS_AS(flows::load_matrix((dir.path / "x.txt").string()), std::invalid_argument);
  CHECK_THROWS_AS(flows::load_matrix((dir.path / "missing.csv").string()), std::runtime_error);
}

TEST_CASE("non-finite values: rejected with line and column, or their rows dropped and counted") {
  TempDir dir;
  const std::string csv = dir.write("nan.csv", "1,2\n3,nan\n-inf,4\n5,6\n");
  CHECK(contains(format_error(csv), csv + ": line 2, column 2: expected a finite number, got nan"));
  std::size_t dropped = 0;
  const auto m = flows::load_matrix(csv, true, &dropped);
  CHECK(dropped == 2);
  CHECK(std::vector<double>(m.begin(), m.end()) == std::vector<double>{1, 2, 5, 6});
  auto data = flows::make_dataset(csv, true);
  CHECK(dynamic_cast<flows::MatrixDataset&>(*data).dropped_rows() == 2);
  CHECK(contains(format_error(dir.write("all.csv", "nan\ninf\n"), true), "at least one finite row, got none of 2"));

  const double v[] = {1, 2, 3, NAN, 5, 6};
  const std::string npy = dir.write("nan.npy", nn::encode_npy(v, {3, 2}));
  CHECK(contains(format_error(npy), npy + ": element [1, 1]: expected a finite value, got nan"));
  const auto n = flows::load_matrix(npy, true, &dropped);
  CHECK(dropped == 1);
  CHECK(std::vector<double>(n.begin(), n.end()) == std::vector<double>{1, 2, 5, 6});
}

TEST_CASE("npy data: 2-D float arrays load — 1-D, empty and integer arrays are rejected clearly") {
  TempDir dir;
  const float f[] = {1.5f, 2.5f, -3.0f, 4.0f, 5.0f, 6.0f};
  const auto m = flows::load_matrix(dir.write("f.npy", nn::encode_npy(f, {3, 2})));
  REQUIRE(m.shape()[0] == 3);
  REQUIRE(m.shape()[1] == 2);
  CHECK(m(1, 0) == -3.0);
  CHECK(flows::make_dataset(dir.write("g.npy", nn::encode_npy(f, {2, 3})))->dim() == 3);

  const std::string one_d = dir.write("v.npy", nn::encode_npy(f, {6}));
  CHECK(contains(format_error(one_d), one_d + ": expected a 2-D (N, D) array, got 1 dimension(s)"));
  const std::string empty = dir.write("e.npy", nn::encode_npy(f, {0, 2}));
  CHECK(contains(format_error(empty), "at least one row and one column, got shape (0, 2)"));
  const std::uint8_t bytes[] = {1, 2};
  const std::string ints = dir.write("i.npy", nn::encode_npy(bytes, {1, 2}));
  CHECK(contains(format_error(ints), "float32 or float64 data ('<f4' or '<f8'), got '|u1'"));
}

TEST_CASE("Standardizer: zero mean, unit std, exact inverse, constant columns untouched in scale") {
  xt::xtensor<double, 2> x({4, 3});
  const double vals[] = {1, 10, 5, 2, 20, 5, 3, 30, 5, 4, 40, 5};
  std::copy(std::begin(vals), std::end(vals), x.begin());
  flows::Standardizer s;
  s.fit(x);
  CHECK(s.mean == std::vector<double>{2.5, 25, 5});
  CHECK(s.std[0] == doctest::Approx(std::sqrt(5.0 / 3.0)));
  CHECK(s.std[1] == doctest::Approx(10 * std::sqrt(5.0 / 3.0)));
  CHECK(s.std[2] == 1.0);  // constant column
  std::vector<double> y(x.begin(), x.end());
  s.apply(y.data(), 4, 3);
  CHECK(y[0] == doctest::Approx(-1.5 / std::sqrt(5.0 / 3.0)));
  CHECK(y[2] == 0.0);
  s.invert(y.data(), 4, 3);
  for (std::size_t i = 0; i < 12; ++i) CHECK(y[i] == doctest::Approx(vals[i]).epsilon(1e-15));
  CHECK(s.log_det() == doctest::Approx(-std::log(s.std[0]) - std::log(s.std[1])));
  CHECK_THROWS_AS(s.apply(y.data(), 6, 2), std::invalid_argument);
}
