#include "flows/train.hpp"

#include <chrono>
#include <cmath>
#include <csignal>

#include <fmt/format.h>

namespace flows {

double BetaSchedule::at(std::int64_t t) const {
  if (kind == Kind::constant || steps <= 0) return start;
  const double frac = std::min(1.0, double(t) / double(steps));
  if (kind == Kind::linear) return start + (floor - start) * frac;
  if (kind == Kind::exponential) {
    if (!(floor > 0.0) || !(start > 0.0))
      throw std::invalid_argument(fmt::format("exponential transport schedule: start {} and floor {} must be positive", start, floor));
    return start * std::pow(floor / start, frac);
  }
  return floor + (start - floor) * 0.5 * (1.0 + std::cos(M_PI * frac));
}

const char* BetaSchedule::kind_name(Kind k) { return ad::name_in(kNames, k); }
BetaSchedule::Kind BetaSchedule::kind_from_name(const std::string& name) {
  return ad::value_named(kNames, name, "transport schedule");
}

template <class T>
void sample_batch(Dataset& data, std::size_t n, ad::Rng& rng, std::vector<double>& buffer, Array<T>& out,
                  double* log_prob) {
  const std::size_t d = data.dim();
  buffer.resize(n * d);
  if (log_prob) data.sample_with_log_prob(n, rng, buffer.data(), log_prob);
  else data.sample(n, rng, buffer.data());
  if (out.shape()[0] != n || out.shape()[1] != d) out.resize({n, d});
  std::copy(buffer.begin(), buffer.end(), out.data());
}

namespace {
/// This rank's rows of a batch of n: all of them in one process.
std::pair<std::size_t, std::size_t> rank_rows(std::size_t n, const Communicator* comm) {
  return comm ? lane_rows(n, comm->rank(), comm->size()) : std::pair<std::size_t, std::size_t>{0, n};
}
std::size_t rank_row_count(std::size_t n, const Communicator* comm) {
  const auto [first, last] = rank_rows(n, comm);
  return last - first;
}
/// The values after the gradients in the allreduce buffer: the loss terms (each a sum of
/// row shares), then per term the number of ranks on which it was not finite, then the signal.
enum Scalar { kLoss, kNll, kTransport, kMapCost, kReverseKl, kRunning, kBadNll, kBadTransport, kBadReverseKl,
              kBadRunning, kSignal, kScalars };
/// The terms a step checks for finiteness; StepReport and DivergenceError name them.
const char* const kBadNames[] = {"NLL", "transport", "reverse KL", "running cost"};
}  // namespace

template <class T>
Trainer<T>::Trainer(Flow<T>& flow, Dataset& data, const TrainConfig& cfg)
    : flow_(flow), data_(data), cfg_(cfg), optimizer_(flow.parameters(), cfg.lr, 0.9, 0.999, 1e-8, cfg.weight_decay,
                                                      /*decoupled=*/cfg.weight_decay != 0.0),
      rng_(cfg.seed),
      team_(useful_lanes(rank_row_count(cfg.batch, cfg.comm), cfg.threads)) {
  if (data.dim() != flow.dim())
    throw std::invalid_argument(fmt::format("the data have {} dimensions but the model has {}", data.dim(), flow.dim()));
  if (cfg.batch == 0) throw std::invalid_argument("the batch size must be positive");
  if (cfg.threads < 1) throw std::invalid_argument("the number of threads must be positive");
  if (cfg.comm && cfg.batch < std::size_t(cfg.comm->size()))
    throw std::invalid_argument(fmt::format("a batch of {} rows cannot be split across {} ranks", cfg.batch, cfg.comm->size()));
  // This rank's rows of every batch, split across its threads (lane 0 first).
  const auto [mine, mine_end] = rank_rows(cfg.batch, cfg.comm);
  param_index_ = ad::ParamIndex<T>(optimizer_.params());
  for (int k = 0; k < team_.lanes(); ++k) {
    Lane& lane = *lanes_.emplace_back(std::make_unique<Lane>());
    const auto [first, last] = lane_rows(mine_end - mine, k, team_.lanes());
    lane.first = mine + first;
    lane.rows = last - first;
    lane.seed.data()[0] = T(double(lane.rows) / double(cfg.batch));
    // The batch's first lane accumulates into Parameter::grad while the others run; they
    // accumulate theirs, the same way, into their own buffers and add them after (so rank r's
    // lanes compute what lanes of one process with all rows would).
    if (lane.first > 0) {
      for (const auto* p : optimizer_.params()) lane.grads.emplace_back(p->value.shape());
      lane.tape.set_param_grad_buffers(&lane.grads, &param_index_);
    }
    lane.tape.set_release_adjoints(true);  // only parameter gradients are read after backward
    lane.tape.set_pool_values(true);       // the two passes take turns on the tape
  }
  lr_schedule_.kind = cfg.lr_schedule;
  lr_schedule_.base = cfg.lr;
  lr_schedule_.warmup = cfg.warmup;
  lr_schedule_.total = cfg.steps;
  lr_schedule_.lr_min = cfg.lr_min;
  if (cfg.comm) {
    std::size_t n = 0;
    for (const auto* p : optimizer_.params()) n += p->grad.size();
    reduce_.assign(n + kScalars, T(0));
  }
  // Data-dependent initialization (a no-op for layers that have none or are initialized).
  // A data file's rows all take part (up to 100 000), so a Gaussian start is the maximum-likelihood
  // Gaussian of the training rows; a generator gives a batch of at least 256 draws.
  const std::size_t rows = data.row_count();
  if (rows > 0 && rows <= 100000) {
    buffer_.resize(rows * data.dim());
    data.all_rows(buffer_.data());
    data_batch_.resize({rows, data.dim()});
    std::copy(buffer_.begin(), buffer_.end(), data_batch_.data());
  } else {
    ad::Rng init_rng(cfg.seed ^ 0x9e3779b97f4a7c15ULL);
    sample_batch(data_, std::max<std::size_t>(cfg.batch, 256), init_rng, buffer_, data_batch_);
  }
  flow_.initialize_from_data(data_batch_);

  // Dropout masks are keyed by the call's number since clear(). On one tape the data pass's
  // calls came first and the base pass's followed; step() records the base pass first, on a
  // cleared tape, and starts its numbers after the data pass's, counted here on one row.
  ObjectiveWeights probe_w;
  probe_w.direction = cfg.direction;
  probe_w.measure_transport = false;
  probe_w.pass = Pass::data;
  Tape<T> probe;
  probe.set_dropout_stream(0, 0);
  objective(flow_, probe.constant(data_batch_.data(), 1, data.dim()), Var<T>{}, probe_w);
  data_dropout_calls_ = probe.dropout_stream().calls;
}

template <class T>
StepReport Trainer<T>::step(bool measure_transport) {
  const std::int64_t t = steps_done();
  StepReport r;
  r.step = t + 1;
  r.lr = lr_at(t);
  r.beta = cfg_.beta.at(t);
  optimizer_.set_lr(r.lr);

  draw_data_batch();
  const bool transport = r.beta != 0.0 || measure_transport;
  const bool base_pass = (transport && cfg_.direction == Direction::gen) || cfg_.reverse_kl != 0.0 || cfg_.running != 0.0;
  if (base_pass) flow_.base().sample(cfg_.batch, rng_, base_batch_);

  ObjectiveWeights w;
  w.kl = cfg_.kl_weight;
  w.transport = r.beta;
  w.direction = cfg_.direction;
  w.measure_transport = measure_transport;
  w.reverse_kl = cfg_.reverse_kl;
  w.target = &data_;
  w.running = cfg_.running;
  w.problem = cfg_.problem;
  ObjectiveWeights base_w = w, data_w = w;
  base_w.pass = Pass::base;
  data_w.pass = Pass::data;
  // Conditioner dropout: this step's masks, keyed by each row's place in the whole batch
  // (the same with any number of lanes; resumable, as the step number is in the checkpoint).
  const std::uint64_t dropout_seed = cfg_.seed * 0x9E3779B97F4A7C15ULL + std::uint64_t(t) + 1;

  // Each lane: the objective on its rows, one pass at a time (flow.hpp, Pass), each pass's
  // backward seeded with n_k / n if its terms are finite. The passes share only the parameters,
  // so their gradients add up, and the tape holds one pass's values at a time instead of both.
  // The base samples' pass goes first: one sweep over a tape holding both (the data's recorded
  // first) reached the base pass's nodes first, so Parameter::grad sums in the same order.
  optimizer_.zero_grad();
  auto work = [&](int k) {
    Lane& lane = *lanes_[std::size_t(k)];
    for (Array<T>& g : lane.grads) g.fill(T(0));  // (shaped like the parameters at construction)
    lane.terms = Terms();
    lane.tape.set_dropout_stream(dropout_seed, lane.first);
    const bool finite = !base_pass || run_pass(lane, base_w, /*backward=*/true);
    run_pass(lane, data_w, /*backward=*/finite);  // (its NLL is reported even after a bad base pass)
    const Terms& v = lane.terms;  // the first non-finite term, in kBadNames' order
    lane.bad = !std::isfinite(v.nll)          ? kBadNames[0]
               : !std::isfinite(v.transport)  ? kBadNames[1]
               : !std::isfinite(v.reverse_kl) ? kBadNames[2]
               : !std::isfinite(v.running)    ? kBadNames[3]
                                              : nullptr;
  };
  team_.run(work);

  // loss = Σ_k (n_k / n) · loss_k, and likewise for each term.
  r.loss = r.nll = 0;
  r.transport = r.map_cost = transport ? 0.0 : std::nan("");
  r.reverse_kl = cfg_.reverse_kl != 0.0 ? 0.0 : std::nan("");
  r.running = cfg_.running != 0.0 ? 0.0 : std::nan("");
  const char* bad = nullptr;
  for (const auto& lane_ptr : lanes_) {
    const Lane& lane = *lane_ptr;
    const Terms& v = lane.terms;
    const double share = double(lane.rows) / double(cfg_.batch);
    r.loss += share * objective_loss(v.nll, v.transport, v.reverse_kl, v.running, w);
    r.nll += share * v.nll;
    if (transport) {
      r.transport += share * v.transport;
      r.map_cost += share * v.map_cost;
    }
    if (cfg_.reverse_kl != 0.0) r.reverse_kl += share * v.reverse_kl;
    if (cfg_.running != 0.0) r.running += share * v.running;
    if (lane.bad && !bad) bad = lane.bad;
  }
  // The gradient sum and (below) Adam: elementwise, so each thread takes a share of the
  // elements (nn::for_each_span), with the bits of one thread doing it all.
  if (!bad) {
    auto sum = [&](int k) { add_lane_grads(k, team_.lanes()); };
    team_.run(sum);
  }
  r.signal = cfg_.interrupt ? cfg_.interrupt->load() : 0;
  if (cfg_.comm) bad = allreduce(r, bad);
  if (!bad) {
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
  optimizer_.begin_step();
  auto update = [&](int k) { optimizer_.update(k, team_.lanes()); };
  team_.run(update);
  return r;
}

template <class T>
void Trainer<T>::draw_data_batch() {
  const std::size_t n = cfg_.batch, d = data_.dim(), block_rows = data_.finish_block_rows();
  if (block_rows == 0) {
    sample_batch(data_, n, rng_, buffer_, data_batch_);
    return;
  }
  // gaussian:D at D = 1024: the product is ~3 % of a one-thread step, done by one thread for
  // the whole batch on every rank before.
  buffer_.resize(n * d);
  data_.draw_unfinished(n, rng_, buffer_.data(), nullptr);
  if (data_batch_.shape()[0] != n || data_batch_.shape()[1] != d) data_batch_.resize({n, d});
  const auto [first, last] = rank_rows(n, cfg_.comm);
  if (first == last) return;
  const std::size_t b0 = first / block_rows, blocks = (last - 1) / block_rows + 1 - b0;
  auto finish = [&](int k) {
    const std::size_t lanes = std::size_t(team_.lanes());
    for (std::size_t b = b0 + blocks * std::size_t(k) / lanes; b < b0 + blocks * std::size_t(k + 1) / lanes; ++b) {
      data_.finish_block(buffer_.data(), n, b);
      const std::size_t r0 = b * block_rows, r1 = std::min(n, r0 + block_rows);
      std::copy(buffer_.data() + r0 * d, buffer_.data() + r1 * d, data_batch_.data() + r0 * d);
    }
  };
  team_.run(finish);
}

template <class T>
bool Trainer<T>::run_pass(Lane& lane, const ObjectiveWeights& w, bool backward) {
  Tape<T>& tape = lane.tape;
  tape.clear();
  const std::size_t d = flow_.dim();
  const bool base = w.pass == Pass::base;
  if (base) tape.set_dropout_call(data_dropout_calls_);
  const T* rows = (base ? base_batch_ : data_batch_).data() + lane.first * d;
  const Var<T> input = tape.constant(rows, lane.rows, d);
  const ObjectiveTerms<T> terms = base ? objective(flow_, Var<T>{}, input, w) : objective(flow_, input, Var<T>{}, w);
  // Read before the next clear(): the pass's terms, and whether they are finite.
  Terms& v = lane.terms;
  if (terms.nll.tape) v.nll = terms.nll.item();
  if (terms.transport.tape) v.transport = terms.transport.item(), v.map_cost = terms.map_cost.item();
  if (terms.reverse_kl.tape) v.reverse_kl = terms.reverse_kl.item();
  if (terms.running.tape) v.running = terms.running.item();
  const bool finite = std::isfinite(v.nll) && std::isfinite(v.transport) && std::isfinite(v.reverse_kl) &&
                      std::isfinite(v.running);
  if (finite && backward && terms.loss.tape) tape.backward(terms.loss, lane.seed);
  return finite;
}

template <class T>
void Trainer<T>::add_lane_grads(int part, int parts) {
  // Per element, the lanes' gradients in lane order: (lane 0's + lane 1's) + …, each lane's
  // own sum formed apart, however the lanes are spread over ranks, so N ranks × 1 thread give
  // the bits of 1 rank × N threads. (A lane without buffers wrote into Parameter::grad.)
  const auto& params = optimizer_.params();
  nn::for_each_span(params, part, parts, [&](std::size_t i, std::size_t first, std::size_t last) {
    T* g = params[i]->grad.data();
    for (const auto& lane : lanes_) {
      if (lane->grads.empty()) continue;
      const T* l = lane->grads[i].data();
      for (std::size_t j = first; j < last; ++j) g[j] += l[j];
    }
  });
}

template <class T>
const char* Trainer<T>::allreduce(StepReport& r, const char* bad) {
  // One call: this rank's gradient sum and step values in, every rank's sum out.
  T* buf = reduce_.data();
  const auto& params = optimizer_.params();
  std::size_t at = 0;
  for (const auto* p : params) {
    std::copy(p->grad.data(), p->grad.data() + p->grad.size(), buf + at);
    at += p->grad.size();
  }
  T* s = buf + at;
  // (a term not measured this step is NaN on every rank and stays NaN)
  s[kLoss] = T(r.loss), s[kNll] = T(r.nll), s[kTransport] = T(r.transport), s[kMapCost] = T(r.map_cost);
  s[kReverseKl] = T(r.reverse_kl), s[kRunning] = T(r.running);
  for (int b = 0; b < 4; ++b) s[kBadNll + b] = T(bad == kBadNames[b] ? 1 : 0);
  // Ranks agree on a stop when any of them was signalled: the sum is non-zero.
  s[kSignal] = T(r.signal);
  const auto t0 = std::chrono::steady_clock::now();
  cfg_.comm->allreduce_sum(buf, reduce_.size());
  allreduce_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  at = 0;
  for (auto* p : params) {
    std::copy(buf + at, buf + at + p->grad.size(), p->grad.data());
    at += p->grad.size();
  }
  r.loss = double(s[kLoss]), r.nll = double(s[kNll]), r.transport = double(s[kTransport]);
  r.map_cost = double(s[kMapCost]), r.reverse_kl = double(s[kReverseKl]), r.running = double(s[kRunning]);
  // Any rank's signal stops all of them at this step; a rank that saw none reports the one
  // mpirun forwards on Ctrl-C or SIGTERM.
  r.signal = s[kSignal] > T(0) ? (r.signal ? r.signal : SIGTERM) : 0;
  for (int b = 0; b < 4; ++b)
    if (s[kBadNll + b] > T(0)) return kBadNames[b];
  return nullptr;
}

template void sample_batch<float>(Dataset&, std::size_t, ad::Rng&, std::vector<double>&, Array<float>&, double*);
template void sample_batch<double>(Dataset&, std::size_t, ad::Rng&, std::vector<double>&, Array<double>&, double*);
template class Trainer<float>;
template class Trainer<double>;

}  // namespace flows
