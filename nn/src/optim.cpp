#include "nn/optim.hpp"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>
#include "autodiff/xsimd.hpp"

namespace nn {

namespace {
template <class T>
std::vector<ad::Array<T>> zeros_like(const std::vector<ad::Parameter<T>*>& params) {
  std::vector<ad::Array<T>> out;
  for (auto* p : params) out.emplace_back(ad::Array<T>(p->value.shape(), T(0)));
  return out;
}
}  // namespace

template <class T>
void Optimizer<T>::zero_grad() {
  for (auto* p : params_) p->zero_grad();
}

// ---------------------------------------------------------------- SGD
template <class T>
SGD<T>::SGD(std::vector<ad::Parameter<T>*> params, double lr, double momentum, double weight_decay)
    : Optimizer<T>(std::move(params)), momentum_(momentum), weight_decay_(weight_decay),
      velocity_(zeros_like(this->params_)) {
  this->lr_ = lr;
}

template <class T>
void SGD<T>::update(int part, int parts) {
  const T lr = T(this->lr_), mu = T(momentum_), wd = T(weight_decay_);
  const bool first_step = this->steps_ == 1;  // (begin_step has counted this step)
  for_each_span(this->params_, part, parts, [&](std::size_t k, std::size_t first, std::size_t last) {
    T* p = this->params_[k]->value.data();
    const T* g = this->params_[k]->grad.data();
    T* v = velocity_[k].data();
    for (std::size_t i = first; i < last; ++i) {
      const T gi = g[i] + wd * p[i];
      // PyTorch: the first step sets v = g (no damping of the initial velocity).
      v[i] = first_step ? gi : mu * v[i] + gi;
      p[i] -= lr * (mu != T(0) ? v[i] : gi);
    }
  });
}

template <class T>
std::vector<std::pair<std::string, ad::Array<T>*>> SGD<T>::state() {
  std::vector<std::pair<std::string, ad::Array<T>*>> s;
  for (std::size_t k = 0; k < velocity_.size(); ++k) s.emplace_back(fmt::format("sgd.velocity.{}", k), &velocity_[k]);
  return s;
}

// ---------------------------------------------------------------- Adam / AdamW
template <class T>
Adam<T>::Adam(std::vector<ad::Parameter<T>*> params, double lr, double beta1, double beta2, double eps,
              double weight_decay, bool decoupled)
    : Optimizer<T>(std::move(params)), beta1_(beta1), beta2_(beta2), eps_(eps), weight_decay_(weight_decay),
      decoupled_(decoupled), m_(zeros_like(this->params_)), v_(zeros_like(this->params_)) {
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1))
    throw std::invalid_argument(fmt::format("Adam: betas must lie in [0, 1), got {} and {}", beta1, beta2));
  this->lr_ = lr;
}

template <class T>
void Adam<T>::update(int part, int parts) {
  using B = xsimd::batch<T>;
  constexpr std::size_t W = B::size;
  static_assert(kSpanAlign % W == 0, "a span must start on a SIMD block of the whole parameter");
  const std::int64_t t = this->steps_;  // (begin_step has counted this step)
  // Bias corrections folded into the step size: lr · m̂ / (√v̂ + ε) = a · m / (√v + ε̂)
  // with a = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ) and ε̂ = ε · √(1 − β₂ᵗ).
  const double c1 = 1.0 - std::pow(beta1_, double(t)), c2 = 1.0 - std::pow(beta2_, double(t));
  const T a = T(this->lr_ * std::sqrt(c2) / c1), eps_hat = T(eps_ * std::sqrt(c2));
  const T b1 = T(beta1_), b2 = T(beta2_), wd = T(weight_decay_), decay = T(1.0 - this->lr_ * weight_decay_);
  const bool l2 = weight_decay_ != 0.0 && !decoupled_, decoupled = weight_decay_ != 0.0 && decoupled_;
  for_each_span(this->params_, part, parts, [&](std::size_t k, std::size_t first, std::size_t last) {
    T* p = this->params_[k]->value.data();
    const T* g = this->params_[k]->grad.data();
    T* m = m_[k].data();
    T* v = v_[k].data();
    auto update = [&](auto pi, auto gi, auto mi, auto vi) {
      using V = decltype(pi);
      if (l2) gi = gi + V(wd) * pi;
      if (decoupled) pi = pi * V(decay);
      mi = V(b1) * mi + V(T(1) - b1) * gi;
      vi = V(b2) * vi + V(T(1) - b2) * gi * gi;
      pi = pi - V(a) * mi / (xsimd::sqrt(vi) + V(eps_hat));
      return std::make_tuple(pi, mi, vi);
    };
    // (first is a multiple of W, last one too or the parameter's end: the blocks of W and the
    // scalar tail are those of a pass over the whole parameter)
    std::size_t i = first;
    for (; i + W <= last; i += W) {
      auto [pi, mi, vi] = update(B::load_unaligned(p + i), B::load_unaligned(g + i), B::load_unaligned(m + i),
                                 B::load_unaligned(v + i));
      pi.store_unaligned(p + i);
      mi.store_unaligned(m + i);
      vi.store_unaligned(v + i);
    }
    for (; i < last; ++i) std::tie(p[i], m[i], v[i]) = update(p[i], g[i], m[i], v[i]);
  });
}

template <class T>
std::vector<std::pair<std::string, ad::Array<T>*>> Adam<T>::state() {
  std::vector<std::pair<std::string, ad::Array<T>*>> s;
  for (std::size_t k = 0; k < m_.size(); ++k) {
    s.emplace_back(fmt::format("adam.m.{}", k), &m_[k]);
    s.emplace_back(fmt::format("adam.v.{}", k), &v_[k]);
  }
  return s;
}

// ---------------------------------------------------------------- clipping
// ‖g‖ over every parameter, summed in float64. Eight running sums (element i into sum i mod 8,
// then added pairwise) instead of one: a single chain waits an add's latency per element, and
// eight independent ones the compiler keeps in vector registers (the step's gradient check
// took 1.6 % of a training step at shape A with one chain).
template <class T>
double grad_norm(const std::vector<ad::Parameter<T>*>& params) {
  constexpr std::size_t kSums = 8;
  double sums[kSums] = {};
  for (auto* p : params) {
    const T* g = p->grad.data();
    const std::size_t n = p->grad.size(), full = n / kSums * kSums;
    for (std::size_t i = 0; i < full; i += kSums)
      for (std::size_t k = 0; k < kSums; ++k) sums[k] += double(g[i + k]) * double(g[i + k]);
    for (std::size_t i = full; i < n; ++i) sums[i - full] += double(g[i]) * double(g[i]);
  }
  for (std::size_t width = kSums / 2; width > 0; width /= 2)
    for (std::size_t k = 0; k < width; ++k) sums[k] += sums[k + width];
  return std::sqrt(sums[0]);
}

template <class T>
double clip_grad_norm(const std::vector<ad::Parameter<T>*>& params, double max_norm) {
  const double norm = grad_norm(params);
  if (std::isfinite(norm) && norm > max_norm && norm > 0) {
    const T scale = T(max_norm / norm);
    for (auto* p : params)
      for (std::size_t i = 0; i < p->grad.size(); ++i) p->grad.data()[i] *= scale;
  }
  return norm;
}

// ---------------------------------------------------------------- schedules
double LrSchedule::at(std::int64_t t) const {
  if (t < warmup) return base * double(t + 1) / double(warmup);
  const std::int64_t s = t - warmup;
  switch (kind) {
    case Kind::constant:
    case Kind::plateau: return base;
    case Kind::cosine: {
      const std::int64_t span = std::max<std::int64_t>(1, total - warmup);
      const double frac = std::min(1.0, double(s) / double(span));
      return lr_min + (base - lr_min) * 0.5 * (1.0 + std::cos(M_PI * frac));
    }
    case Kind::step: return base * std::pow(gamma, double(s / std::max<std::int64_t>(1, step_size)));
  }
  return base;
}

const char* LrSchedule::kind_name(Kind k) { return ad::name_in(kNames, k); }
LrSchedule::Kind LrSchedule::kind_from_name(const std::string& name) {
  return ad::value_named(kNames, name, "learning-rate schedule");
}

template class Optimizer<float>;
template class Optimizer<double>;
template class SGD<float>;
template class SGD<double>;
template class Adam<float>;
template class Adam<double>;
template double clip_grad_norm<float>(const std::vector<ad::Parameter<float>*>&, double);
template double clip_grad_norm<double>(const std::vector<ad::Parameter<double>*>&, double);
template double grad_norm<float>(const std::vector<ad::Parameter<float>*>&);
template double grad_norm<double>(const std::vector<ad::Parameter<double>*>&);

}  // namespace nn
