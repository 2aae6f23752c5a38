#include "flows/flow.hpp"
#include "flows/mfg.hpp"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

namespace flows {

namespace {
constexpr double kLog2Pi = 1.8378770664093454835606594728112;

/// Adds two per-row log-determinants, where an empty Var means 0.
template <class T>
Var<T> add_logdet(Var<T> a, Var<T> b) {
  if (!a.tape) return b;
  if (!b.tape) return a;
  return a + b;
}
}  // namespace

// ---------------------------------------------------------------- base densities
template <class T>
Var<T> StandardNormal<T>::log_prob(Var<T> z) {
  return ad::row_sums(ad::square(z)) * T(-0.5) - T(0.5 * kLog2Pi * double(this->dim_));
}

template <class T>
void StandardNormal<T>::sample(std::size_t n, ad::Rng& rng, Array<T>& out) const {
  if (out.shape()[0] != n || out.shape()[1] != this->dim_) out.resize({n, this->dim_});
  rng.fill_normal(out.data(), out.size());
}

template <class T>
DiagonalGaussian<T>::DiagonalGaussian(std::size_t dim, bool learned, std::vector<double> m, std::vector<double> ls)
    : BaseDensity<T>(dim), mean("mean", 1, dim), log_std("log_std", 1, dim), learned_(learned) {
  if ((!m.empty() && m.size() != dim) || (!ls.empty() && ls.size() != dim))
    throw std::invalid_argument(fmt::format("DiagonalGaussian: mean and log_std must have {} entries", dim));
  for (std::size_t j = 0; j < m.size(); ++j) mean.value(0, j) = T(m[j]);
  for (std::size_t j = 0; j < ls.size(); ++j) log_std.value(0, j) = T(ls[j]);
  if (learned_) {
    this->register_parameter("mean", mean);
    this->register_parameter("log_std", log_std);
  }
}

template <class T>
Var<T> DiagonalGaussian<T>::log_prob(Var<T> z) {
  Tape<T>& t = *z.tape;
  const Var<T> m = learned_ ? t.param(mean) : t.constant(mean.value);
  const Var<T> ls = learned_ ? t.param(log_std) : t.constant(log_std.value);
  const Var<T> u = ad::mul_row(ad::add_row(z, -m), ad::exp(-ls));  // (z − m) / σ
  return ad::row_sums(ad::square(u)) * T(-0.5) - row_total(z.rows(), ls) - T(0.5 * kLog2Pi * double(this->dim_));
}

template <class T>
void DiagonalGaussian<T>::sample(std::size_t n, ad::Rng& rng, Array<T>& out) const {
  const std::size_t d = this->dim_;
  if (out.shape()[0] != n || out.shape()[1] != d) out.resize({n, d});
  rng.fill_normal(out.data(), out.size());
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) out(i, j) = mean.value(0, j) + std::exp(log_std.value(0, j)) * out(i, j);
}

template <class T>
nlohmann::json DiagonalGaussian<T>::config() const {
  std::vector<double> m(this->dim_), ls(this->dim_);
  for (std::size_t j = 0; j < this->dim_; ++j) m[j] = mean.value(0, j), ls[j] = log_std.value(0, j);
  return {{"type", "diagonal_gaussian"}, {"dim", this->dim_}, {"learned", learned_}, {"mean", m}, {"log_std", ls}};
}

// ---------------------------------------------------------------- flow
template <class T>
Flow<T>::Flow(std::size_t dim, std::unique_ptr<BaseDensity<T>> base) : dim_(dim), base_(std::move(base)) {
  if (dim == 0) throw std::invalid_argument("Flow: dimension must be positive");
  if (base_->dim() != dim)
    throw std::invalid_argument(fmt::format("Flow: base density has dimension {}, flow {}", base_->dim(), dim));
  this->register_module("base", *base_);
}

template <class T>
void Flow<T>::add_layer(std::unique_ptr<Bijector<T>> layer) {
  if (layer->dim() != dim_)
    throw std::invalid_argument(fmt::format("Flow: layer has dimension {}, flow {}", layer->dim(), dim_));
  this->register_module("layers." + std::to_string(layers_.size()), *layer);
  layers_.push_back(std::move(layer));
}

template <class T>
Mapped<T> Flow<T>::forward(Var<T> x, std::vector<Var<T>>* traj) {
  if (x.cols() != dim_)
    throw ad::ShapeError(fmt::format("Flow::forward: input has {} columns, the flow has dimension {}", x.cols(), dim_));
  if (traj) traj->assign(1, x);
  Var<T> logdet;
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    const Mapped<T> m = layers_[l]->forward(x);
    x = m.out;
    logdet = add_logdet(logdet, m.logdet);
    if (traj && (l + 1) % per_step_ == 0) traj->push_back(x);
  }
  return {x, logdet};
}

template <class T>
Mapped<T> Flow<T>::inverse(Var<T> y, std::vector<Var<T>>* traj) {
  if (y.cols() != dim_)
    throw ad::ShapeError(fmt::format("Flow::inverse: input has {} columns, the flow has dimension {}", y.cols(), dim_));
  if (traj) traj->assign(1, y);
  Var<T> logdet;
  for (std::size_t l = layers_.size(); l-- > 0;) {
    const Mapped<T> m = layers_[l]->inverse(y);
    y = m.out;
    logdet = add_logdet(logdet, m.logdet);
    if (traj && l % per_step_ == 0) traj->push_back(y);
  }
  return {y, logdet};
}

// log p(y) = log α0(G(y)) + log|det ∇G(y)|
template <class T>
Var<T> Flow<T>::log_prob(Var<T> y) {
  const Mapped<T> g = inverse(y);
  const Var<T> lp = base_->log_prob(g.out);
  return g.logdet.tape ? lp + g.logdet : lp;
}

template <class T>
void Flow<T>::set_layers_per_time_step(std::size_t k) {
  if (k == 0 || layers_.empty() || layers_.size() % k != 0)
    throw std::invalid_argument(
        fmt::format("Flow: {} layers per time step does not divide the {} layers", k, layers_.size()));
  per_step_ = k;
}

template <class T>
void Flow<T>::initialize_from_data(const Array<T>& y) {
  Array<T> state = y;
  for (std::size_t l = layers_.size(); l-- > 0;) state = layers_[l]->initialize_from_data(state);
}

template <class T>
nlohmann::json Flow<T>::config() const {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : layers_) layers.push_back(l->config());
  nlohmann::json c = {{"dim", dim_}, {"base", base_->config()}, {"layers", layers}};
  if (per_step_ != 1) c["layers_per_time_step"] = per_step_;  // absent: 1
  return c;
}

namespace {
// Limits on what a config may ask for (make_layer checks each layer's fields
// against its own), so that a hostile file cannot make from_config allocate
// gigabytes: 2^26 parameters are 256 MiB of float32 values (and as much again
// for their gradients).
constexpr std::size_t kMaxFlowDim = std::size_t(1) << 20;
constexpr std::size_t kMaxFlowParameters = std::size_t(1) << 26;
}  // namespace

template <class T>
std::unique_ptr<Flow<T>> Flow<T>::from_config(const nlohmann::json& c) {
  const nlohmann::json& dim_value = c.at("dim");
  // A JSON integer (a float or a negative number would not convert safely).
  const bool dim_ok = (dim_value.is_number_unsigned() && dim_value.get<std::uint64_t>() >= 1 &&
                       dim_value.get<std::uint64_t>() <= kMaxFlowDim) ||
                      (dim_value.is_number_integer() && dim_value.get<std::int64_t>() >= 1 &&
                       std::uint64_t(dim_value.get<std::int64_t>()) <= kMaxFlowDim);
  if (!dim_ok)
    throw std::invalid_argument(fmt::format("flow: 'dim' must be an integer in [1, {}], got {}", kMaxFlowDim,
                                            dim_value.is_primitive() ? dim_value.dump().substr(0, 40)
                                                                     : std::string("an ") + dim_value.type_name()));
  const std::size_t dim = dim_value.get<std::size_t>();
  const nlohmann::json& b = c.at("base");
  const std::string base_type = b.at("type").get<std::string>();
  std::unique_ptr<BaseDensity<T>> base;
  if (base_type == "standard_normal") base = std::make_unique<StandardNormal<T>>(dim);
  else if (base_type == "diagonal_gaussian")
    base = std::make_unique<DiagonalGaussian<T>>(dim, b.at("learned").get<bool>(), b.at("mean").get<std::vector<double>>(),
                                                 b.at("log_std").get<std::vector<double>>());
  else
    throw std::invalid_argument(
        fmt::format("unknown base density '{}' (expected standard_normal or diagonal_gaussian)", base_type));
  // (A fixed Gaussian base is a diagonal_gaussian with learned false.)
  auto flow = std::make_unique<Flow<T>>(dim, std::move(base));
  const nlohmann::json& layers = c.at("layers");
  if (!layers.is_array())
    throw std::invalid_argument(fmt::format("flow: 'layers' must be an array, got an {}", layers.type_name()));
  ad::Rng rng(0);  // weights are overwritten by the saved parameters
  std::size_t parameters = flow->parameter_count();
  for (std::size_t l = 0; l < layers.size(); ++l) {
    try {
      flow->add_layer(make_layer<T>(layers[l], rng));
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("layer {}: {}", l, e.what()));
    }
    parameters += flow->layer(l).parameter_count();
    if (parameters > kMaxFlowParameters)
      throw std::invalid_argument(
          fmt::format("flow: more than {} parameters (after layer {} of {})", kMaxFlowParameters, l, layers.size()));
  }
  if (c.contains("layers_per_time_step")) {
    const nlohmann::json& k = c.at("layers_per_time_step");
    if (!k.is_number_unsigned() || k.get<std::uint64_t>() == 0 || layers.empty() ||
        layers.size() % k.get<std::uint64_t>() != 0)
      throw std::invalid_argument(fmt::format("flow: 'layers_per_time_step' must be a positive integer that divides the "
                                              "{} layers, got {}",
                                              layers.size(), k.is_primitive() ? k.dump().substr(0, 40) : k.type_name()));
    flow->set_layers_per_time_step(k.get<std::size_t>());
  }
  return flow;
}

template <class T>
std::unique_ptr<Flow<T>> make_flow(std::size_t dim, const FlowSpec& spec) {
  if (spec.layers == 0) throw std::invalid_argument("make_flow: the number of layers must be positive");
  std::unique_ptr<BaseDensity<T>> base;
  if (spec.base == "standard_normal") base = std::make_unique<StandardNormal<T>>(dim);
  else if (spec.base == "diagonal_gaussian") base = std::make_unique<DiagonalGaussian<T>>(dim, true);
  else if (spec.base == "fixed_gaussian") {
    if (spec.base_mean.size() != dim || spec.base_log_std.size() != dim)
      throw std::invalid_argument(fmt::format("make_flow: a fixed Gaussian base needs {} means and log-stds, got {} and {}",
                                              dim, spec.base_mean.size(), spec.base_log_std.size()));
    base = std::make_unique<DiagonalGaussian<T>>(dim, false, spec.base_mean, spec.base_log_std);
  }
  else
    throw std::invalid_argument(
        fmt::format("unknown base density '{}' (expected standard_normal, diagonal_gaussian or fixed_gaussian)", spec.base));
  auto flow = std::make_unique<Flow<T>>(dim, std::move(base));
  ad::Rng rng(spec.seed);
  std::vector<int> a, b;
  if (spec.populations > 1) {
    const std::size_t P = spec.populations, block = dim / P;
    if (dim % P != 0 || block < 2)
      throw std::invalid_argument(fmt::format("make_flow: {} populations need a dimension that is a multiple of {} with "
                                              "at least 2 coordinates each, got {}", P, P, dim));
    if (spec.structure != Structure::steps || spec.gaussian_init || spec.lu)
      throw std::invalid_argument("make_flow: several populations need structure steps, without LU layers or a Gaussian start");
    // Population k owns the columns [k·block, (k+1)·block): its first half A_k, second half B_k.
    for (std::size_t l = 0; l < spec.layers; ++l) {
      if (spec.actnorm) flow->add_layer(std::make_unique<ActNorm<T>>(dim));
      for (std::size_t k = 0; k < P; ++k) {
        a.clear(), b.clear();
        for (std::size_t j = 0; j < block; ++j) (j < block / 2 ? a : b).push_back(int(k * block + j));
        flow->add_layer(make_coupling<T>(dim, a, b, spec.coupling, rng));
        flow->add_layer(make_coupling<T>(dim, b, a, spec.coupling, rng));
      }
    }
    flow->set_layers_per_time_step(flow->num_layers() / spec.layers);
    return flow;
  }
  for (std::size_t l = 0; l < spec.layers; ++l) {
    if (spec.actnorm) flow->add_layer(std::make_unique<ActNorm<T>>(dim));
    if (spec.lu || spec.structure == Structure::steps) flow->add_layer(std::make_unique<LULinear<T>>(dim));
    // Layers: an odd layer updates the complement of the layer before it, so that every pair
    // of couplings updates every coordinate (with a fresh split per pair, a 2-D flow of random
    // splits left a coordinate untouched with probability 2^(1−L)). Steps pair them within a step.
    if (spec.structure == Structure::layers && l % 2 == 1 && !b.empty()) std::swap(a, b);
    else coupling_split(dim, l, spec.permutation, rng, a, b);
    flow->add_layer(make_coupling<T>(dim, a, b, spec.coupling, rng));
    if (spec.structure == Structure::steps && !b.empty()) flow->add_layer(make_coupling<T>(dim, b, a, spec.coupling, rng));
  }
  if (spec.time_per_step && spec.structure == Structure::steps) {
    if (spec.gaussian_init) throw std::invalid_argument("make_flow: time_per_step and gaussian_init do not combine");
    flow->set_layers_per_time_step(flow->num_layers() / spec.layers);
  }
  if (spec.gaussian_init) {
    auto lu = std::make_unique<LULinear<T>>(dim);
    lu->set_data_init(true);
    flow->add_layer(std::move(lu));
    flow->add_layer(std::make_unique<ActNorm<T>>(dim));
  }
  return flow;
}

const char* structure_name(Structure s) { return ad::name_in(kStructureNames, s); }
Structure structure_from_name(const std::string& name) { return ad::value_named(kStructureNames, name, "structure"); }

// ---------------------------------------------------------------- costs
// T = L · (1/m) Σ_i Σ_l ‖s_{l+1,i} − s_{l,i}‖²
template <class T>
Var<T> path_energy(const std::vector<Var<T>>& traj) {
  if (traj.size() < 2) throw std::invalid_argument("path_energy: a trajectory needs at least two states");
  const std::size_t steps = traj.size() - 1;
  Var<T> total;
  for (std::size_t l = 0; l < steps; ++l) {
    const Var<T> step = ad::sum_sq_diff(traj[l + 1], traj[l]);
    total = total.tape ? total + step : step;
  }
  return total * T(double(steps) / double(traj[0].rows()));
}

template <class T>
Var<T> mean_squared_distance(Var<T> a, Var<T> b) {
  return ad::sum_sq_diff(b, a) * T(1.0 / double(a.rows()));
}

const char* direction_name(Direction d) { return ad::name_in(kDirectionNames, d); }
Direction direction_from_name(const std::string& name) {
  return ad::value_named(kDirectionNames, name, "transport direction");
}

template <class T>
ObjectiveTerms<T> objective(Flow<T>& flow, Var<T> data, Var<T> base_samples, const ObjectiveWeights& w) {
  ObjectiveTerms<T> out;
  const bool transport = w.transport != 0.0 || w.measure_transport;
  static thread_local std::vector<Var<T>> traj;  // keeps its capacity: no allocation per step
  traj.clear();
  const bool norm = w.direction == Direction::norm;
  const bool data_pass = w.pass != Pass::base, base_pass = w.pass != Pass::data;
  // loss = the first weighted term, then loss + each next one (the order objective_loss follows)
  auto add_to_loss = [&out](Var<T> weighted) { out.loss = out.loss.tape ? out.loss + weighted : weighted; };

  // NLL(y) = −log α0(G(y)) − log|det ∇G(y)|, averaged over the batch.
  if (data_pass) {
    if (!data.tape) throw std::invalid_argument("objective: the data pass needs the data");
    const Mapped<T> g = flow.inverse(data, transport && norm ? &traj : nullptr);
    Var<T> log_p = flow.base().log_prob(g.out);
    if (g.logdet.tape) log_p = log_p + g.logdet;
    out.nll = -ad::mean(log_p);
    add_to_loss(w.kl == 1.0 ? out.nll : out.nll * T(w.kl));
  }

  // The base samples' pass through F, with its states: T (direction gen), the reverse KL and F_P.
  const bool reverse = w.reverse_kl != 0.0, running = w.running != 0.0;
  if (running && !w.problem) throw std::invalid_argument("objective: the running cost needs its mean-field-game problem");
  Mapped<T> f;
  if (base_pass && ((transport && !norm) || reverse || running)) {
    if (!base_samples.tape) throw std::invalid_argument("objective: direction gen, the reverse KL and F_P need base samples");
    if (transport && norm) {  // T follows the data; F_P needs the base samples' own states
      static thread_local std::vector<Var<T>> gen_traj;
      gen_traj.clear();
      f = flow.forward(base_samples, running ? &gen_traj : nullptr);
      if (running) out.running = running_cost(gen_traj, *w.problem);
    } else {
      f = flow.forward(base_samples, &traj);
      if (running) out.running = running_cost(traj, *w.problem);
    }
  }
  if (transport && (norm ? data_pass : base_pass)) {
    out.transport = path_energy(traj);
    out.map_cost = mean_squared_distance(traj.front(), traj.back());
    if (w.transport != 0.0) add_to_loss(out.transport * T(w.transport));
  }
  if (reverse && base_pass) {
    // KL(q ‖ p1) = E_x [log α0(x) − log|det ∇F(x)| − log p1(F(x))]
    if (!w.target) throw std::invalid_argument("objective: the reverse KL needs the target's density");
    Var<T> log_q = flow.base().log_prob(base_samples);
    if (f.logdet.tape) log_q = log_q - f.logdet;
    out.reverse_kl = ad::mean(log_q - target_log_prob(*w.target, f.out));
    add_to_loss(out.reverse_kl * T(w.reverse_kl));
  }
  if (running && base_pass) add_to_loss(out.running * T(w.running));
  return out;
}

template <class T>
T objective_loss(T nll, T transport, T reverse_kl, T running, const ObjectiveWeights& w) {
  // loss + term · weight, rounded twice as by the tape's two nodes: the product goes through a
  // volatile, which keeps the compiler from fusing the two into one FMA (GCC does by default).
  auto add = [](T loss, T term, double weight) {
    const volatile T weighted = term * T(weight);
    return loss + weighted;
  };
  T loss = w.kl == 1.0 ? nll : nll * T(w.kl);
  if (w.transport != 0.0) loss = add(loss, transport, w.transport);
  if (w.reverse_kl != 0.0) loss = add(loss, reverse_kl, w.reverse_kl);
  if (w.running != 0.0) loss = add(loss, running, w.running);
  return loss;
}

template class StandardNormal<float>;
template class StandardNormal<double>;
template class DiagonalGaussian<float>;
template class DiagonalGaussian<double>;
template class Flow<float>;
template class Flow<double>;
template std::unique_ptr<Flow<float>> make_flow<float>(std::size_t, const FlowSpec&);
template std::unique_ptr<Flow<double>> make_flow<double>(std::size_t, const FlowSpec&);
template Var<float> path_energy<float>(const std::vector<Var<float>>&);
template Var<double> path_energy<double>(const std::vector<Var<double>>&);
template Var<float> mean_squared_distance<float>(Var<float>, Var<float>);
template Var<double> mean_squared_distance<double>(Var<double>, Var<double>);
template ObjectiveTerms<float> objective<float>(Flow<float>&, Var<float>, Var<float>, const ObjectiveWeights&);
template ObjectiveTerms<double> objective<double>(Flow<double>&, Var<double>, Var<double>, const ObjectiveWeights&);
template float objective_loss<float>(float, float, float, float, const ObjectiveWeights&);
template double objective_loss<double>(double, double, double, double, const ObjectiveWeights&);

}  // namespace flows
