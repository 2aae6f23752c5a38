#include "flows/validation.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include <fmt/format.h>

#include "flows/metrics.hpp"

namespace flows {

std::pair<xt::xtensor<double, 2>, xt::xtensor<double, 2>> hold_out(const xt::xtensor<double, 2>& rows,
                                                                   double fraction, std::uint64_t seed) {
  const std::size_t n = rows.shape()[0], d = rows.shape()[1];
  if (!(fraction >= 0.0 && fraction < 1.0))
    throw std::invalid_argument(fmt::format("hold_out: the fraction must be in [0, 1), got {}", fraction));
  std::size_t k = fraction > 0 ? std::size_t(std::ceil(fraction * double(n))) : 0;
  if (fraction > 0 && n < 2)
    throw std::invalid_argument(fmt::format("hold_out: {} row(s) cannot be split into training and validation", n));
  k = std::min(k, n - 1);
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  ad::Rng rng(seed);
  for (std::size_t i = n; i-- > 1;) std::swap(order[i], order[rng.below(i + 1)]);  // Fisher–Yates
  std::vector<char> is_val(n, 0);
  for (std::size_t i = 0; i < k; ++i) is_val[order[i]] = 1;
  xt::xtensor<double, 2> train({n - k, d}), val({k, d});
  std::size_t t = 0, v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double* dst = is_val[i] ? &val(v++, 0) : &train(t++, 0);
    std::copy_n(&rows(i, 0), d, dst);
  }
  return {std::move(train), std::move(val)};
}

template <class T>
Validation<T>::Validation(Flow<T>& flow, Array<T> rows, double nll_offset, const ValidationConfig& cfg, int threads)
    : flow_(flow), inference_(flow, threads, Inference<T>::kEvalChunk), rows_(std::move(rows)), offset_(nll_offset), cfg_(cfg) {
  if (rows_.shape()[0] == 0) throw std::invalid_argument("Validation: no validation rows");
  if (rows_.shape()[1] != flow.dim())
    throw std::invalid_argument(fmt::format("Validation: the rows have {} columns but the model has dimension {}",
                                            rows_.shape()[1], flow.dim()));
  if (cfg_.every < 0 || cfg_.patience < 0) throw std::invalid_argument("Validation: every and patience must be ≥ 0");
  for (const auto& [name, p] : flow.named_parameters()) best_.emplace_back(name, p->value);
}

template <class T>
double Validation<T>::nll() const {
  return mean_nll(inference_, rows_) + offset_;
}

template <class T>
typename Validation<T>::Outcome Validation<T>::evaluate(std::int64_t step) {
  Outcome o;
  o.nll = nll();
  // A NaN never improves; the first finite value always does.
  if (std::isfinite(o.nll) && (best_step_ < 0 || o.nll < best_nll_ - cfg_.min_delta)) {
    best_nll_ = o.nll;
    best_step_ = step;
    since_best_ = 0;
    o.improved = true;
    const auto params = flow_.named_parameters();
    for (std::size_t i = 0; i < params.size(); ++i)
      std::copy_n(params[i].second->value.data(), params[i].second->value.size(), best_[i].second.data());
  } else {
    ++since_best_;
  }
  o.stop = cfg_.patience > 0 && since_best_ >= cfg_.patience;
  return o;
}

template <class T>
void Validation<T>::use_best() {
  if (!has_best()) return;
  const auto params = flow_.named_parameters();
  for (std::size_t i = 0; i < params.size(); ++i)
    std::copy_n(best_[i].second.data(), best_[i].second.size(), params[i].second->value.data());
}

template <class T>
nlohmann::json Validation<T>::state() const {
  return {{"best_nll", has_best() ? nlohmann::json(best_nll_) : nlohmann::json()},
          {"best_step", best_step_},
          {"since_best", since_best_}};
}

template <class T>
void Validation<T>::set_state(const nlohmann::json& s) {
  const auto& step = s.at("best_step");
  const auto& since = s.at("since_best");
  if (!step.is_number_integer() || !since.is_number_integer() || since.get<std::int64_t>() < 0 ||
      step.get<std::int64_t>() < -1)
    throw std::invalid_argument("validation state: best_step and since_best must be integers");
  best_step_ = step.get<std::int64_t>();
  since_best_ = since.get<std::int64_t>();
  const auto& nll = s.at("best_nll");
  best_nll_ = nll.is_number() ? nll.get<double>() : std::numeric_limits<double>::infinity();
  if (best_step_ >= 0 && !nll.is_number()) throw std::invalid_argument("validation state: best_nll is missing");
}

template class Validation<float>;
template class Validation<double>;

}  // namespace flows
