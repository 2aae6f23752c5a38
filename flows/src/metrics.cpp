#include "flows/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

#include <cblas.h>

#include "flows/inference.hpp"
#include "flows/train.hpp"

namespace flows {

namespace {
/// OpenBLAS's own threads set to n while the guard lives (the data set's float64 products in
/// evaluate(), which run between the lanes' passes, not beside them), then restored.
class BlasThreads {
 public:
  explicit BlasThreads(int n) : before_(openblas_get_num_threads()) { openblas_set_num_threads(std::max(1, n)); }
  ~BlasThreads() { openblas_set_num_threads(before_); }
  BlasThreads(const BlasThreads&) = delete;
  BlasThreads& operator=(const BlasThreads&) = delete;

 private:
  int before_;
};
}  // namespace

nlohmann::json EvalReport::to_json() const {
  nlohmann::json j = {{"n", n}, {"nll", nll}, {"transport", transport}, {"map_cost", map_cost}};
  if (rows > 0) j["rows"] = rows;
  auto put = [&](const char* key, const std::optional<double>& v) {
    if (v) j[key] = *v;
  };
  put("true_nll", true_nll);
  put("entropy", entropy);
  put("w2_sq", w2_sq);
  put("map_ratio", map_ratio);
  put("transport_ratio", transport_ratio);
  put("forward_kl", forward_kl);
  put("reverse_kl", reverse_kl);
  put("jeffreys", jeffreys);
  put("l2_uvp", l2_uvp);
  put("ot_cos", ot_cos);
  return j;
}

template <class T>
double mean_nll(Inference<T>& inference, const Array<T>& y) {
  const std::size_t n = y.shape()[0];
  std::vector<T> lp(n);
  inference.log_prob(y.data(), n, lp.data());
  double total = 0;
  for (T v : lp) total -= double(v);
  return total / double(n);
}


double total_variance(const Dataset& data, const double* rows, std::size_t n) {
  if (const auto v = data.total_variance()) return *v;
  const std::size_t d = data.dim();
  double variance = 0;
  for (std::size_t j = 0; j < d; ++j) {
    double mean = 0, sq = 0;
    for (std::size_t i = 0; i < n; ++i) mean += rows[i * d + j] / double(n);
    for (std::size_t i = 0; i < n; ++i) sq += (rows[i * d + j] - mean) * (rows[i * d + j] - mean);
    variance += sq / double(n > 1 ? n - 1 : 1);
  }
  return variance;
}

template <class T>
OtScores ot_scores(const Dataset& data, const Array<T>& x, const T* fx, double variance) {
  // The yardstick of Korotin et al. (NeurIPS 2021): the learned map against T*, point by point.
  const std::size_t n = x.shape()[0], d = x.shape()[1];
  // In chunks of rows (kProductChunk), not float64 copies of all n rows and their page faults.
  const std::size_t chunk = std::min(n, kProductChunk);
  std::vector<double> xd(chunk * d), target(chunk * d);
  double gap = 0, dot = 0, ot_sq = 0, map_sq = 0;
  for (std::size_t s0 = 0; s0 < n; s0 += chunk) {
    const std::size_t rows = std::min(chunk, n - s0), len = rows * d;
    std::copy_n(x.data() + s0 * d, len, xd.data());
    data.ot_map(xd.data(), rows, target.data());
    const T* f_rows = fx + s0 * d;
    for (std::size_t k = 0; k < len; ++k) {
      const double f = double(f_rows[k]), t = target[k], x0 = xd[k];
      gap += (f - t) * (f - t);
      dot += (t - x0) * (f - x0);
      ot_sq += (t - x0) * (t - x0);
      map_sq += (f - x0) * (f - x0);
    }
  }
  OtScores s;
  if (variance > 0) s.l2_uvp = 100.0 * gap / double(n) / variance;
  if (ot_sq * map_sq > 0) s.ot_cos = dot / std::sqrt(ot_sq * map_sq);
  return s;
}

template <class T>
double mean_nll(Flow<T>& flow, const Array<T>& y, int threads, std::size_t chunk) {
  Inference<T> inference(flow, threads, chunk);
  return mean_nll(inference, y);
}

template <class T>
EvalReport evaluate(Flow<T>& flow, Dataset& data, std::size_t n, std::uint64_t seed, double nll_offset, int threads,
                    std::size_t chunk) {
  if (data.dim() != flow.dim())
    throw std::invalid_argument("evaluate: the data have " + std::to_string(data.dim()) +
                                " dimensions but the model has " + std::to_string(flow.dim()));
  if (n == 0) throw std::invalid_argument("evaluate: the number of samples must be positive");
  EvalReport r;
  r.n = n;
  ad::Rng rng(seed);
  std::vector<double> buffer;
  Array<T> y, x;
  std::optional<BlasThreads> blas(threads);  // the data set's own products use every thread
  // (Drawn even for a file, so that the base draws below are as before.) The true density of
  // the draws comes with them: for gaussian:D from the standard-normal draws themselves.
  std::vector<double> lp(data.has_log_prob() ? n : 0);
  sample_batch(data, n, rng, buffer, y, lp.empty() ? nullptr : lp.data());
  if (const std::size_t rows = data.row_count()) {
    // A finite data set: the NLL is the exact mean over all its rows, not over draws with replacement.
    const std::size_t d = data.dim();
    buffer.resize(rows * d);
    data.all_rows(buffer.data());
    y.resize({rows, d});
    std::copy(buffer.begin(), buffer.end(), y.data());
    r.rows = rows;
  }
  double true_nll = 0;
  for (double v : lp) true_nll -= v;
  if (!lp.empty()) true_nll /= double(n);
  // The OT scores' Var(Y) (closed form, or the rows' sample variance); then the float64 rows
  // go (164 MB at n = 20 000, D = 1024).
  const double variance = data.has_ot_map() ? total_variance(data, buffer.data(), y.shape()[0]) : 0.0;
  std::vector<double>().swap(buffer);
  blas.reset();  // the lanes' passes: one OpenBLAS thread each
  Inference<T> inference(flow, threads, chunk);
  r.nll = mean_nll(inference, y) + nll_offset;
  if (data.has_log_prob()) {
    r.true_nll = true_nll;
    r.forward_kl = r.nll - true_nll;
  }
  r.entropy = data.entropy();
  r.w2_sq = data.w2_sq_to_standard_normal();

  // Transport and map cost on base samples; the reverse KL on the same pushes.
  flow.base().sample(n, rng, x);
  const std::size_t d = flow.dim();
  std::vector<T> pushed(n * d), path_energy(n), log_q(n);
  PushOutputs<T> out;
  out.y = pushed.data();
  out.path_energy = path_energy.data();
  if (data.has_log_prob()) out.log_density = log_q.data();
  inference.forward(x.data(), n, out);
  blas.emplace(threads);
  // T = L · mean_x Σ_l ‖F_{l+1}(x) − F_l(x)‖²,  map cost = mean_x ‖F(x) − x‖²
  double transport = 0, map_cost = 0;
  for (std::size_t i = 0; i < n; ++i) {
    transport += double(path_energy[i]);
    for (std::size_t j = 0; j < d; ++j) {
      const double step = double(pushed[i * d + j]) - double(x.data()[i * d + j]);
      map_cost += step * step;
    }
  }
  r.transport = double(flow.num_time_steps()) * transport / double(n);
  r.map_cost = map_cost / double(n);
  if (data.has_ot_map()) {
    const OtScores s = ot_scores(data, x, pushed.data(), variance);
    r.l2_uvp = s.l2_uvp;
    r.ot_cos = s.ot_cos;
  }
  if (data.has_log_prob()) {
    // KL(q ‖ p) = E_x[log q(F(x)) − log p(F(x))]
    const std::size_t chunk = std::min(n, kProductChunk);  // (float64 copies of a chunk of rows at a time)
    std::vector<double> pushed_d(chunk * d), target_lp(chunk);
    double reverse_kl = 0;
    for (std::size_t s0 = 0; s0 < n; s0 += chunk) {
      const std::size_t rows = std::min(chunk, n - s0);
      std::copy_n(pushed.data() + s0 * d, rows * d, pushed_d.data());
      data.log_prob(pushed_d.data(), rows, target_lp.data());
      for (std::size_t i = 0; i < rows; ++i) reverse_kl += double(log_q[s0 + i]) - target_lp[i];
    }
    r.reverse_kl = reverse_kl / double(n);
    r.jeffreys = *r.forward_kl + *r.reverse_kl;
  }
  if (r.w2_sq && *r.w2_sq > 0) {
    r.map_ratio = r.map_cost / *r.w2_sq;
    r.transport_ratio = r.transport / *r.w2_sq;
  }
  return r;
}

template OtScores ot_scores<float>(const Dataset&, const Array<float>&, const float*, double);
template OtScores ot_scores<double>(const Dataset&, const Array<double>&, const double*, double);
template double mean_nll<float>(Inference<float>&, const Array<float>&);
template double mean_nll<double>(Inference<double>&, const Array<double>&);
template double mean_nll<float>(Flow<float>&, const Array<float>&, int, std::size_t);
template double mean_nll<double>(Flow<double>&, const Array<double>&, int, std::size_t);
template EvalReport evaluate<float>(Flow<float>&, Dataset&, std::size_t, std::uint64_t, double, int, std::size_t);
template EvalReport evaluate<double>(Flow<double>&, Dataset&, std::size_t, std::uint64_t, double, int, std::size_t);

}  // namespace flows
