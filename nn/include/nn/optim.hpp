#pragma once
// Optimizers, gradient clipping and learning-rate schedules.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/tape.hpp"

namespace nn {

/// Updates parameters from their gradients. The state (moments, step count)
/// is exposed as named arrays so it can be saved and restored exactly.
template <class T>
class Optimizer {
 public:
  explicit Optimizer(std::vector<ad::Parameter<T>*> params) : params_(std::move(params)) {}
  virtual ~Optimizer() = default;

  /// One update with the current gradients at learning rate lr().
  void step() {
    begin_step();
    update(0, 1);
  }
  /// The same step split for threads that share it: begin_step() once (it counts the step),
  /// then update(part, parts) for every part in [0, parts), in any order or at once: each
  /// updates its own elements (for_each_span), with the same bits as step().
  void begin_step() { ++steps_; }
  virtual void update(int part, int parts) = 0;
  void zero_grad();

  double lr() const { return lr_; }
  void set_lr(double lr) { lr_ = lr; }
  std::int64_t steps() const { return steps_; }

  /// The state as (name, array) pairs, e.g. ("adam.m.3", m of parameter 3); the
  /// arrays are live: loading writes into them. Scalars go through set_steps.
  virtual std::vector<std::pair<std::string, ad::Array<T>*>> state() = 0;
  void set_steps(std::int64_t steps) { steps_ = steps; }
  const std::vector<ad::Parameter<T>*>& params() const { return params_; }

 protected:
  std::vector<ad::Parameter<T>*> params_;
  double lr_ = 1e-3;
  std::int64_t steps_ = 0;
};

/// Calls f(k, first, last) for the elements [first, last) of parameter k that part `part` of
/// `parts` owns: every parameter's elements in order, cut into `parts` runs of nearly equal
/// length, each cut moved down to a multiple of kSpanAlign elements within its parameter, so
/// that a part's SIMD loops meet the blocks and the scalar tail of one pass over the whole
/// parameter. The parts cover every element once.
inline constexpr std::size_t kSpanAlign = 16;
template <class T, class F>
void for_each_span(const std::vector<ad::Parameter<T>*>& params, int part, int parts, F&& f) {
  std::size_t total = 0;
  for (const auto* p : params) total += p->value.size();
  const std::size_t lo = total * std::size_t(part) / std::size_t(parts);
  const std::size_t hi = total * std::size_t(part + 1) / std::size_t(parts);
  std::size_t at = 0;  // where parameter k starts among all elements
  for (std::size_t k = 0; k < params.size() && at < hi; ++k) {
    const std::size_t n = params[k]->value.size();
    // A cut c inside the parameter (0 < c − at < n) moves down to a multiple of kSpanAlign.
    auto cut = [&](std::size_t c) {
      const std::size_t r = c <= at ? 0 : std::min(c - at, n);
      return r == n ? n : r / kSpanAlign * kSpanAlign;
    };
    const std::size_t first = cut(lo), last = cut(hi);
    if (first < last) f(k, first, last);
    at += n;
  }
}

/// SGD with momentum μ and L2 weight decay λ (PyTorch's convention):
///   g ← ∇ + λ p,   v ← μ v + g,   p ← p − lr · v
template <class T>
class SGD : public Optimizer<T> {
 public:
  SGD(std::vector<ad::Parameter<T>*> params, double lr, double momentum = 0.0, double weight_decay = 0.0);
  void update(int part, int parts) override;
  std::vector<std::pair<std::string, ad::Array<T>*>> state() override;

 private:
  double momentum_, weight_decay_;
  std::vector<ad::Array<T>> velocity_;
};

/// Adam (Kingma & Ba) with bias correction; with decoupled = true it is AdamW
/// (Loshchilov & Hutter). At step t (from 1):
///   m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
///   m̂ = m / (1 − β₁ᵗ),        v̂ = v / (1 − β₂ᵗ)
///   p ← p − lr · m̂ / (√v̂ + ε)
/// Weight decay λ: Adam adds λ p to g; AdamW instead first sets p ← p − lr · λ · p.
template <class T>
class Adam : public Optimizer<T> {
 public:
  Adam(std::vector<ad::Parameter<T>*> params, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
       double weight_decay = 0.0, bool decoupled = false);
  void update(int part, int parts) override;
  std::vector<std::pair<std::string, ad::Array<T>*>> state() override;

 private:
  double beta1_, beta2_, eps_, weight_decay_;
  bool decoupled_;
  std::vector<ad::Array<T>> m_, v_;
};

/// Scales all gradients by min(1, max_norm / ‖g‖), ‖g‖ the global L2 norm over
/// every parameter, and returns ‖g‖ (before scaling; non-finite if a gradient is).
template <class T>
double clip_grad_norm(const std::vector<ad::Parameter<T>*>& params, double max_norm);

/// The global L2 norm of the gradients.
template <class T>
double grad_norm(const std::vector<ad::Parameter<T>*>& params);

/// Learning rate as a function of the step t = 0, 1, …: a linear warm-up from
/// 0 over `warmup` steps, then one of
///   constant:  lr₀
///   cosine:    lr_min + (lr₀ − lr_min) · (1 + cos(π · s / S)) / 2,   s = t − warmup, S = total − warmup
///   step:      lr₀ · γ^⌊s / step_size⌋
struct LrSchedule {
  /// plateau: the base rate (after warm-up) times a scale that the caller lowers when the
  /// validation stops improving (flows::Trainer::set_lr_scale); at() gives the unscaled rate.
  enum class Kind { constant, cosine, step, plateau } kind = Kind::constant;
  static constexpr ad::NameTable<Kind, 4> kNames{
      {{Kind::constant, "constant"}, {Kind::cosine, "cosine"}, {Kind::step, "step"}, {Kind::plateau, "plateau"}}};
  double base = 1e-3;
  std::int64_t warmup = 0;
  std::int64_t total = 0;       ///< cosine: steps to reach lr_min
  double lr_min = 0.0;          ///< cosine floor
  std::int64_t step_size = 1;   ///< step decay period
  double gamma = 0.1;           ///< step decay factor

  double at(std::int64_t t) const;
  static Kind kind_from_name(const std::string& name);
  static const char* kind_name(Kind k);
};

extern template class SGD<float>;
extern template class SGD<double>;
extern template class Adam<float>;
extern template class Adam<double>;

}  // namespace nn
