#include "flows/train.hpp"

#include <cmath>

#include <fmt/format.h>

namespace flows {

double BetaSchedule::at(std::int64_t t) const {
  if (kind == Kind::constant || steps <= 0) return start;
  const double frac = std::min(1.0, double(t) / double(steps));
  if (kind == Kind::linear) return start + (floor - start) * frac;
  return floor + (start - floor) * 0.5 * (1.0 + std::cos(M_PI * frac));
}

const char* BetaSchedule::kind_name(Kind k) {
  switch (k) {
    case Kind::constant: return "constant";
    case Kind::linear: return "linear";
    case Kind::cosine: return "cosine";
  }
  return "?";
}

BetaSchedule::Kind BetaSchedule::kind_from_name(const std::string& name) {
  for (Kind k : {Kind::constant, Kind::linear, Kind::cosine})
    if (name == kind_name(k)) return k;
  throw std::invalid_argument(fmt::format("unknown transport schedule '{}' (expected constant, linear or cosine)", name));
}

template <class T>
void sample_batch(Dataset& data, std::size_t n, ad::Rng& rng, std::vector<double>& buffer, Array<T>& out) {
  const std::size_t d = data.dim();
  buffer.resize(n * d);
  data.sample(n, rng, buffer.data());
  if (out.shape()[0] != n || out.shape()[1] != d) out.resize({n, d});
  std::copy(buffer.begin(), buffer.end(), out.data());
}

template <class T>
Trainer<T>::Trainer(Flow<T>& flow, Dataset& data, const TrainConfig& cfg)
    : flow_(flow), data_(data), cfg_(cfg), optimizer_(flow.parameters(), cfg.lr, 0.9, 0.999, 1e-8, cfg.weight_decay,
                                                      /*decoupled=*/cfg.weight_decay != 0.0),
      rng_(cfg.seed) {
  if (data.dim() != flow.dim())
    throw std::invalid_argument(fmt::format("the data have {} dimensions but the model has {}", data.dim(), flow.dim()));
  if (cfg.batch == 0) throw std::invalid_argument("the batch size must be positive");
  lr_schedule_.kind = cfg.lr_schedule;
  lr_schedule_.base = cfg.lr;
  lr_schedule_.warmup = cfg.warmup;
  lr_schedule_.total = cfg.steps;
  lr_schedule_.lr_min = cfg.lr_min;
  // Data-dependent initialization (a no-op for layers that have none or are initialized).
  ad::Rng init_rng(cfg.seed ^ 0x9e3779b97f4a7c15ULL);
  sample_batch(data_, std::max<std::size_t>(cfg.batch, 256), init_rng, buffer_, data_batch_);
  flow_.initialize_from_data(data_batch_);
}

template <class T>
StepReport Trainer<T>::step(bool measure_transport) {
  const std::int64_t t = steps_done();
  StepReport r;
  r.step = t + 1;
  r.lr = lr_schedule_.at(t);
  r.beta = cfg_.beta.at(t);
  optimizer_.set_lr(r.lr);

  sample_batch(data_, cfg_.batch, rng_, buffer_, data_batch_);
  const bool transport = r.beta != 0.0 || measure_transport;
  if (transport && cfg_.direction == Direction::gen) flow_.base().sample(cfg_.batch, rng_, base_batch_);

  tape_.clear();
  ObjectiveWeights w;
  w.kl = cfg_.kl_weight;
  w.transport = r.beta;
  w.direction = cfg_.direction;
  w.measure_transport = measure_transport;
  const Var<T> base = transport && cfg_.direction == Direction::gen ? tape_.constant(base_batch_) : Var<T>{};
  const ObjectiveTerms<T> terms = objective(flow_, tape_.constant(data_batch_), base, w);
  r.loss = terms.loss.item();
  r.nll = terms.nll.item();
  r.transport = terms.transport.tape ? terms.transport.item() : std::nan("");
  r.map_cost = terms.map_cost.tape ? terms.map_cost.item() : std::nan("");

  const char* bad = !std::isfinite(r.nll) ? "NLL" : (transport && !std::isfinite(r.transport)) ? "transport" : nullptr;
  if (!bad) {
    optimizer_.zero_grad();
    tape_.backward(terms.loss);
    r.grad_norm = cfg_.clip_norm > 0 ? nn::clip_grad_norm(optimizer_.params(), cfg_.clip_norm)
                                     : nn::grad_norm(optimizer_.params());
    if (!std::isfinite(r.grad_norm)) bad = "gradient";
  }
  if (bad) {
    if (cfg_.skip_nonfinite) {
      optimizer_.zero_grad();
      ++skipped_;
      r.skipped = true;
      return r;
    }
    throw DivergenceError(
        r.step, bad,
        fmt::format("training diverged at step {}: the {} became non-finite (loss {}, NLL {}, transport {}). "
                    "Try a lower learning rate (--lr, now {:g}), gradient clipping (--clip-norm), "
                    "or scale stabilization (--scale-clamp 2)",
                    r.step, bad == std::string("gradient") ? "gradient" : std::string(bad) + " term", r.loss, r.nll,
                    r.transport, r.lr));
  }
  optimizer_.step();
  return r;
}

template void sample_batch<float>(Dataset&, std::size_t, ad::Rng&, std::vector<double>&, Array<float>&);
template void sample_batch<double>(Dataset&, std::size_t, ad::Rng&, std::vector<double>&, Array<double>&);
template class Trainer<float>;
template class Trainer<double>;

}  // namespace flows
