#include "flows/metrics.hpp"

#include <algorithm>
#include <cmath>

#include "flows/train.hpp"

namespace flows {

nlohmann::json EvalReport::to_json() const {
  nlohmann::json j = {{"n", n}, {"nll", nll}, {"transport", transport}, {"map_cost", map_cost}};
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
  return j;
}

template <class T>
double mean_nll(Flow<T>& flow, const Array<T>& y, std::size_t chunk) {
  Tape<T> tape;
  const std::size_t n = y.shape()[0], d = y.shape()[1];
  double total = 0;
  for (std::size_t start = 0; start < n; start += chunk) {
    const std::size_t rows = std::min(chunk, n - start);
    tape.clear();
    const Var<T> lp = flow.log_prob(tape.constant(y.data() + start * d, rows, d));
    for (std::size_t i = 0; i < rows; ++i) total -= double(lp.value().data()[i]);
  }
  return total / double(n);
}

template <class T>
EvalReport evaluate(Flow<T>& flow, Dataset& data, std::size_t n, std::uint64_t seed, double nll_offset,
                    std::size_t chunk) {
  if (data.dim() != flow.dim())
    throw std::invalid_argument("evaluate: the data have " + std::to_string(data.dim()) +
                                " dimensions but the model has " + std::to_string(flow.dim()));
  EvalReport r;
  r.n = n;
  ad::Rng rng(seed);
  std::vector<double> buffer;
  Array<T> y, x;
  sample_batch(data, n, rng, buffer, y);
  r.nll = mean_nll(flow, y, chunk) + nll_offset;
  if (data.has_log_prob()) {
    std::vector<double> lp(n);
    data.log_prob(buffer.data(), n, lp.data());
    double s = 0;
    for (double v : lp) s -= v;
    r.true_nll = s / double(n);
    r.forward_kl = r.nll - *r.true_nll;
  }
  r.entropy = data.entropy();
  r.w2_sq = data.w2_sq_to_standard_normal();

  // Transport and map cost on base samples; the reverse KL on the same pushes.
  flow.base().sample(n, rng, x);
  Tape<T> tape;
  std::vector<Var<T>> traj;
  double transport = 0, map_cost = 0, reverse_kl = 0;
  const std::size_t d = flow.dim();
  std::vector<double> pushed, target_lp;
  for (std::size_t start = 0; start < n; start += chunk) {
    const std::size_t rows = std::min(chunk, n - start);
    tape.clear();
    const Var<T> x0 = tape.constant(x.data() + start * d, rows, d);
    const Mapped<T> f = flow.forward(x0, &traj);
    transport += path_energy(traj).item() * double(rows);
    map_cost += mean_squared_distance(traj.front(), traj.back()).item() * double(rows);
    if (data.has_log_prob()) {
      // log q(F(x)) = log α0(x) − log|det ∇F(x)|
      const Var<T> log_q = f.logdet.tape ? flow.base().log_prob(x0) - f.logdet : flow.base().log_prob(x0);
      pushed.assign(f.out.value().data(), f.out.value().data() + rows * d);
      target_lp.resize(rows);
      data.log_prob(pushed.data(), rows, target_lp.data());
      for (std::size_t i = 0; i < rows; ++i) reverse_kl += double(log_q.value().data()[i]) - target_lp[i];
    }
  }
  r.transport = transport / double(n);
  r.map_cost = map_cost / double(n);
  if (data.has_log_prob()) {
    r.reverse_kl = reverse_kl / double(n);
    r.jeffreys = *r.forward_kl + *r.reverse_kl;
  }
  if (r.w2_sq && *r.w2_sq > 0) {
    r.map_ratio = r.map_cost / *r.w2_sq;
    r.transport_ratio = r.transport / *r.w2_sq;
  }
  return r;
}

template double mean_nll<float>(Flow<float>&, const Array<float>&, std::size_t);
template double mean_nll<double>(Flow<double>&, const Array<double>&, std::size_t);
template EvalReport evaluate<float>(Flow<float>&, Dataset&, std::size_t, std::uint64_t, double, std::size_t);
template EvalReport evaluate<double>(Flow<double>&, Dataset&, std::size_t, std::uint64_t, double, std::size_t);

}  // namespace flows
