// Data parallelism: the thread team, the row split, parameter adjoints kept on a
// worker's tape, and the multi-threaded Trainer and Inference against one thread.
#include <atomic>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "flows/datasets.hpp"
#include "flows/inference.hpp"
#include "flows/metrics.hpp"
#include "flows/train.hpp"
#include "trainer_fixtures.hpp"

using ad::Array;
using ad::Tape;
using ad::Var;
using namespace flows;

using trainer_fixtures::max_rel_diff;

namespace {
std::unique_ptr<Flow<double>> test_flow(std::size_t d, std::uint64_t seed) {
  return trainer_fixtures::test_flow<double>(d, seed);
}
}  // namespace

TEST_CASE("a thread team runs every lane once per run and rethrows a lane's exception") {
  for (int lanes : {1, 2, 3}) {
    ThreadTeam team(lanes);
    CHECK(team.lanes() == lanes);
    std::vector<std::atomic<int>> calls(static_cast<std::size_t>(lanes));
    auto count = [&](int lane) { calls[std::size_t(lane)]++; };
    for (int run = 0; run < 50; ++run) team.run(count);
    for (auto& c : calls) CHECK(c.load() == 50);
    auto fail_last = [&](int lane) {
      if (lane == lanes - 1) throw std::runtime_error("lane failed");
    };
    CHECK_THROWS_WITH_AS(team.run(fail_last), "lane failed", std::runtime_error);
    team.run(count);  // still usable after an exception
    for (auto& c : calls) CHECK(c.load() == 51);
  }
  CHECK_THROWS_AS(ThreadTeam(0), std::invalid_argument);
}

TEST_CASE("a thread team's lanes see each run's inputs and the caller sees their results, run after run") {
  // Back-to-back runs with no work between them: the workers are still polling (the fast
  // path) unless the team has more lanes than the machine has cores (then they sleep).
  for (int lanes : {2, 3, 64}) {
    CAPTURE(lanes);
    ThreadTeam team(lanes);
    std::vector<long> in(static_cast<std::size_t>(lanes)), out(static_cast<std::size_t>(lanes));
    long expected = 0, sum = 0;
    const int runs = lanes > 8 ? 200 : 2000;  // (64 sleeping lanes take ~1 ms a run to wake)
    for (int run = 0; run < runs; ++run) {
      for (int l = 0; l < lanes; ++l) in[std::size_t(l)] = run * 7 + l;  // written by the caller only
      auto square = [&](int lane) { out[std::size_t(lane)] = in[std::size_t(lane)] * in[std::size_t(lane)]; };
      team.run(square);
      for (int l = 0; l < lanes; ++l) {
        const long v = run * 7 + l;
        expected += v * v;
        sum += out[std::size_t(l)];
      }
    }
    CHECK(sum == expected);
    // A pause longer than the polling: the workers have gone to sleep and must be woken.
    std::this_thread::sleep_for(3 * ThreadTeam::kSpin);
    std::atomic<int> calls{0};
    auto count = [&](int) { calls++; };
    team.run(count);
    CHECK(calls.load() == lanes);
  }
}

TEST_CASE("lane_rows splits n rows into contiguous blocks that cover them once") {
  for (std::size_t n : {0, 1, 5, 64, 1023, 1024}) {
    for (int lanes : {1, 2, 3, 7}) {
      std::size_t next = 0;
      for (int k = 0; k < lanes; ++k) {
        const auto [first, last] = lane_rows(n, k, lanes);
        CHECK(first == next);
        CHECK(last >= first);
        CHECK(last - first <= n / std::size_t(lanes) + 1);
        next = last;
      }
      CHECK(next == n);
    }
  }
  CHECK(useful_lanes(1024, 2) == 2);
  CHECK(useful_lanes(100, 2) == 1);  // fewer than 64 rows per thread: not worth a thread
  CHECK(useful_lanes(1024, 0) == 1);
}

TEST_CASE("parameter adjoints kept on a second tape add up to the one-tape gradient") {
  // loss = mean_rows(tanh(x Wᵀ + b)·c) over 9 rows, split 4 + 5; each part seeded with n_k / n.
  ad::Rng rng(3);
  Parameter<double> w("w", 3, 2), b("b", 1, 3), c("c", 3, 1);
  for (auto* p : {&w, &b, &c}) rng.fill_normal(p->value.data(), p->value.size(), 0.0, 1.0);
  Array<double> x = Array<double>::from_shape({9, 2});
  rng.fill_normal(x.data(), x.size(), 0.0, 1.0);
  auto loss = [&](Tape<double>& t, std::size_t first, std::size_t rows) {
    const Var<double> h = ad::linear_act(t.constant(x.data() + first * 2, rows, 2), t.param(w), t.param(b), ad::Activation::tanh);
    return ad::mean(ad::matmul(h, t.param(c)));
  };
  Tape<double> whole;
  whole.backward(loss(whole, 0, 9));
  const Array<double> gw = w.grad, gb = b.grad, gc = c.grad;
  for (auto* p : {&w, &b, &c}) p->zero_grad();

  Tape<double> first, second;
  second.set_param_grads_on_tape(true);
  Array<double> seed = Array<double>::from_shape({1, 1});
  seed(0, 0) = 4.0 / 9.0;
  first.backward(loss(first, 0, 4), seed);
  seed(0, 0) = 5.0 / 9.0;
  second.backward(loss(second, 4, 5), seed);
  CHECK(max_rel_diff(w.grad.data(), gw.data(), gw.size()) > 1e-3);  // the second part is not in yet
  second.accumulate_param_grads();
  CHECK(max_rel_diff(w.grad.data(), gw.data(), gw.size()) < 1e-13);
  CHECK(max_rel_diff(b.grad.data(), gb.data(), gb.size()) < 1e-13);
  CHECK(max_rel_diff(c.grad.data(), gc.data(), gc.size()) < 1e-13);
}

TEST_CASE("a training step on 2 or 3 threads gives the one-thread loss and gradient (float64)") {
  GaussianDataset data(5);
  for (Direction dir : {Direction::gen, Direction::norm})
    for (std::size_t batch : {std::size_t(300), std::size_t(301)}) {
      CAPTURE(direction_name(dir));
      CAPTURE(batch);
      auto reference = test_flow(5, 11);
      TrainConfig cfg;
      cfg.batch = batch;
      cfg.beta.start = 0.3;
      cfg.direction = dir;
      cfg.seed = 5;
      Trainer<double> one(*reference, data, cfg);
      const StepReport r1 = one.step();
      for (int threads : {2, 3}) {
        auto flow = test_flow(5, 11);
        cfg.threads = threads;
        Trainer<double> many(*flow, data, cfg);
        CHECK(many.threads() == threads);
        const StepReport r = many.step();
        trainer_fixtures::check_same_step(r, r1, *flow, *reference, /*values=*/true);
      }
    }
}

namespace {
/// gaussian:D with its draws finished in one go (Dataset's defaults: no blocks), so a Trainer
/// draws each batch on one thread, as before the lanes shared the product.
class WholeDraws : public Dataset {
 public:
  explicit WholeDraws(std::size_t d) : inner_(d) {}
  std::size_t dim() const override { return inner_.dim(); }
  std::string name() const override { return inner_.name(); }
  void sample(std::size_t n, ad::Rng& rng, double* out) override { inner_.sample(n, rng, out); }

 private:
  GaussianDataset inner_;
};
}  // namespace

TEST_CASE("the lanes finish a batch's gaussian:D draws, a block each, with the bits of one thread drawing it all") {
  // D = 40: OpenBLAS's product gives a row other bits in a call of another row count, so a
  // lane's blocks must be the data set's own (Dataset::finish_block); 600 rows: three blocks.
  const std::size_t d = 40;
  GaussianDataset blocks(d);
  WholeDraws whole(d);
  REQUIRE(blocks.finish_block_rows() > 0);
  REQUIRE(whole.finish_block_rows() == 0);
  for (int threads : {2, 3}) {
    CAPTURE(threads);
    TrainConfig cfg;
    cfg.batch = 600;
    cfg.beta.start = 0.1;
    cfg.threads = threads;
    cfg.seed = 3;
    auto f1 = trainer_fixtures::test_flow<float>(d, 4), f2 = trainer_fixtures::test_flow<float>(d, 4);
    Trainer<float> shared(*f1, blocks, cfg), one(*f2, whole, cfg);
    for (int step = 0; step < 3; ++step) {
      const StepReport a = shared.step(), b = one.step();
      CHECK(a.loss == b.loss);
      CHECK(a.nll == b.nll);
      CHECK(a.transport == b.transport);
      CHECK(a.grad_norm == b.grad_norm);
    }
    const auto p1 = f1->parameters(), p2 = f2->parameters();
    for (std::size_t i = 0; i < p1.size(); ++i)
      CHECK(max_rel_diff(p1[i]->value.data(), p2[i]->value.data(), p1[i]->value.size()) == 0.0);
  }
}

TEST_CASE("a step recorded as two passes gives the one-tape objective's loss and gradient in float64 (gen, norm, Jeffreys, dropout, on 1 and 2 threads)") {
  struct Case {
    const char* name;
    Direction dir;
    bool jeffreys;
    double dropout;
  };
  const Case cases[] = {{"gen", Direction::gen, false, 0.0},
                        {"norm", Direction::norm, false, 0.0},
                        {"gen, Jeffreys", Direction::gen, true, 0.0},
                        {"norm, Jeffreys", Direction::norm, true, 0.0},
                        {"gen, dropout", Direction::gen, false, 0.3}};
  for (const Case& c : cases)
    for (int threads : {1, 2}) {
      const std::string name = c.name;
      CAPTURE(name);
      CAPTURE(threads);
      const std::unique_ptr<Dataset> data =
          c.jeffreys ? make_dataset("gmm:4") : std::unique_ptr<Dataset>(std::make_unique<GaussianDataset>(4));
      auto flow = trainer_fixtures::test_flow<double>(4, 13, c.dropout);
      TrainConfig cfg;
      cfg.batch = 300;
      cfg.kl_weight = 0.7;
      cfg.beta.start = 0.3;
      cfg.direction = c.dir;
      cfg.reverse_kl = c.jeffreys ? 0.7 : 0.0;
      cfg.seed = 9;
      cfg.threads = threads;
      Trainer<double> trainer(*flow, *data, cfg);  // (sets ActNorm from the data first)
      REQUIRE(trainer.threads() == threads);

      // The reference: the Trainer's first batches (drawn from its seed), both passes on one
      // tape with step 1's dropout masks, one backward.
      ad::Rng rng(cfg.seed);
      std::vector<double> buffer;
      Array<double> y, x;
      sample_batch(*data, cfg.batch, rng, buffer, y);
      const bool base = c.dir == Direction::gen || c.jeffreys;
      if (base) flow->base().sample(cfg.batch, rng, x);
      ObjectiveWeights w;
      w.kl = cfg.kl_weight;
      w.transport = cfg.beta.start;
      w.direction = c.dir;
      w.reverse_kl = cfg.reverse_kl;
      w.target = data.get();
      Tape<double> tape;
      tape.set_dropout_stream(cfg.seed * 0x9E3779B97F4A7C15ULL + 1, 0);  // as Trainer::step keys step 1
      flow->zero_grad();
      const ObjectiveTerms<double> terms = objective(*flow, tape.constant(y), base ? tape.constant(x) : Var<double>{}, w);
      tape.backward(terms.loss);
      std::vector<Array<double>> expected;
      for (auto* p : flow->parameters()) expected.push_back(p->grad);

      const StepReport r = trainer.step();  // leaves its gradient in Parameter::grad
      const auto params = flow->parameters();
      if (threads == 1) {  // the same sums in the same order: the same bits
        CHECK(r.loss == terms.loss.item());
        CHECK(r.nll == terms.nll.item());
        CHECK(r.transport == terms.transport.item());
        CHECK(r.map_cost == terms.map_cost.item());
        if (c.jeffreys) CHECK(r.reverse_kl == terms.reverse_kl.item());
        for (std::size_t i = 0; i < params.size(); ++i) {
          CAPTURE(params[i]->name);
          CHECK(params[i]->grad == expected[i]);
        }
      } else {
        CHECK(r.loss == doctest::Approx(terms.loss.item()).epsilon(1e-12));
        CHECK(r.transport == doctest::Approx(terms.transport.item()).epsilon(1e-12));
        if (c.jeffreys) CHECK(r.reverse_kl == doctest::Approx(terms.reverse_kl.item()).epsilon(1e-12));
        // Two lanes sum each gradient in two halves: the same sums in another order, so equal to
        // rounding (1e-10 relative, check_same_step's bound; the worst element on gaussian:4's
        // draws is ~1.7e-12, a weight whose rows' contributions cancel)
        for (std::size_t i = 0; i < params.size(); ++i) {
          CAPTURE(params[i]->name);
          CHECK(max_rel_diff(params[i]->grad.data(), expected[i].data(), expected[i].size()) < 1e-10);
        }
      }
    }
}

TEST_CASE("Inference on several threads matches one tape pass: log p, F(x), log q(F(x)), path energy, states") {
  const std::size_t d = 4, n = 203;
  auto flow = test_flow(d, 21);
  ad::Rng rng(8);
  Array<double> x = Array<double>::from_shape({n, d});
  rng.fill_normal(x.data(), x.size(), 0.0, 1.0);

  Tape<double> tape;
  const Var<double> lp = flow->log_prob(tape.constant(x));
  std::vector<Var<double>> traj;
  const Var<double> x0 = tape.constant(x);
  const Mapped<double> f = flow->forward(x0, &traj);
  const Var<double> log_q = flow->base().log_prob(x0) - f.logdet;  // log q(F(x)) = log α0(x) − log|det ∇F(x)|
  const std::size_t L = flow->num_layers();
  REQUIRE(traj.size() == L + 1);

  for (int threads : {1, 3})
    for (std::size_t chunk : {std::size_t(7), std::size_t(1024)}) {
      CAPTURE(threads);
      CAPTURE(chunk);
      Inference<double> inference(*flow, threads, chunk);
      std::vector<double> out_lp(n), y(n * d), log_density(n), energy(n), states((L + 1) * n * d);
      inference.log_prob(x.data(), n, out_lp.data());
      CHECK(max_rel_diff(out_lp.data(), lp.value().data(), n) < 1e-12);
      PushOutputs<double> out;
      out.y = y.data();
      out.log_density = log_density.data();
      out.path_energy = energy.data();
      out.states = states.data();
      inference.forward(x.data(), n, out);
      CHECK(max_rel_diff(y.data(), f.out.value().data(), n * d) < 1e-12);
      CHECK(max_rel_diff(log_density.data(), log_q.value().data(), n) < 1e-12);
      for (std::size_t l = 0; l <= L; ++l)
        CHECK(max_rel_diff(states.data() + l * n * d, traj[l].value().data(), n * d) < 1e-12);
      // Σ_rows path energy · L / n is T as path_energy() computes it on the tape.
      double total = 0;
      for (double e : energy) total += e;
      CHECK(double(L) * total / double(n) == doctest::Approx(path_energy(traj).item()).epsilon(1e-12));
    }
}

TEST_CASE("Inference lowers its chunk for a wide flow so a lane's tape stays near its budget, with the same results") {
  // d = 256, 4 spline couplings of 8 bins: 128 × 23 spline parameters per row and coupling,
  // about 100 kB of tape per row in float64, so 4096-row chunks would hold ~400 MB a lane.
  FlowSpec spec;
  spec.layers = 4;
  spec.coupling.kind = CouplingKind::rqs;
  spec.coupling.hidden = 16;
  spec.coupling.bins = 8;
  spec.seed = 5;
  const std::size_t d = 256, n = 900;
  auto flow = make_flow<double>(d, spec);
  ad::Rng rng(9);
  Array<double> y = Array<double>::from_shape({n, d});
  rng.fill_normal(y.data(), y.size(), 0.0, 1.0);
  Tape<double> tape;
  const Var<double> lp = flow->log_prob(tape.constant(y));
  const std::size_t per_row = tape.bytes_reserved() / n;  // what one tape holds per row, roughly
  Inference<double> wide(*flow, 1, 4096);
  std::vector<double> out(n);
  wide.log_prob(y.data(), n, out.data());
  CAPTURE(per_row);
  CAPTURE(wide.chunk());
  CHECK(wide.chunk() < n);  // at least two chunks here
  CHECK(wide.chunk() >= Inference<double>::kMinChunk);
  CHECK(double(wide.chunk() * per_row) <= 1.25 * double(Inference<double>::kTapeBudget));
  CHECK(double(wide.chunk() * per_row) >= 0.5 * double(Inference<double>::kTapeBudget));
  CHECK(max_rel_diff(out.data(), lp.value().data(), n) < 1e-12);
  // a narrow flow keeps the chunk it was given
  auto narrow = test_flow(4, 21);
  Inference<double> small(*narrow, 1, 1024);
  std::vector<double> x(50 * 4, 0.5), o(50);
  small.log_prob(x.data(), 50, o.data());
  CHECK(small.chunk() == 1024);
}

TEST_CASE("evaluate gives the same report on 1 and 2 threads") {
  GaussianDataset data(3);
  auto flow = test_flow(3, 31);
  const EvalReport a = evaluate(*flow, data, 1000, 17, 0.0, 1, 128);
  const EvalReport b = evaluate(*flow, data, 1000, 17, 0.0, 2, 128);
  CHECK(b.nll == doctest::Approx(a.nll).epsilon(1e-12));
  CHECK(b.transport == doctest::Approx(a.transport).epsilon(1e-12));
  CHECK(b.map_cost == doctest::Approx(a.map_cost).epsilon(1e-12));
  REQUIRE(a.reverse_kl);
  REQUIRE(b.reverse_kl);
  CHECK(*b.reverse_kl == doctest::Approx(*a.reverse_kl).epsilon(1e-12));
  CHECK(a.transport > 0);
  CHECK(std::isfinite(a.nll));
  // float32, rows that leave a short chunk: the same bits, every figure of the report
  auto single = trainer_fixtures::test_flow<float>(3, 31);
  const nlohmann::json one = evaluate(*single, data, 1003, 17, 0.0, 1, 100).to_json();
  for (int threads : {2, 3}) {
    CAPTURE(threads);
    CHECK(evaluate(*single, data, 1003, 17, 0.0, threads, 100).to_json() == one);
  }
}

TEST_CASE("conditioner dropout: on in training steps (the same on 1 and 2 threads), off in every evaluation") {
  GaussianDataset data(4);
  auto make = [](double p) {
    FlowSpec spec;
    spec.layers = 3;
    spec.coupling.hidden = 16;
    spec.coupling.dropout = p;
    spec.seed = 3;
    auto flow = make_flow<double>(4, spec);
    ad::Rng rng(4);
    for (auto* q : flow->parameters()) rng.fill_normal(q->value.data(), q->value.size(), 0.0, 0.2);
    return flow;
  };
  auto plain = make(0.0), dropped = make(0.4);
  // The same weights: evaluation (no dropout stream) gives the same log-density, on a tape and in Inference.
  Array<double> y({50, 4});
  ad::Rng rng(8);
  rng.fill_normal(y.data(), y.size(), 0.0, 1.0);
  std::vector<double> lp_plain(50), lp_dropped(50), lp_dropped2(50);
  Inference<double>(*plain, 1).log_prob(y.data(), 50, lp_plain.data());
  Inference<double>(*dropped, 2).log_prob(y.data(), 50, lp_dropped.data());
  Inference<double>(*dropped, 1).log_prob(y.data(), 50, lp_dropped2.data());
  for (std::size_t i = 0; i < 50; ++i) {
    CHECK(lp_dropped[i] == doctest::Approx(lp_plain[i]).epsilon(1e-12));
    CHECK(lp_dropped2[i] == lp_dropped[i]);
  }
  Tape<double> tape;
  CHECK(dropped->log_prob(tape.constant(y)).value()(0, 0) == doctest::Approx(lp_plain[0]).epsilon(1e-12));
  // Training: the loss of a step differs from the plain flow's (entries are dropped) and is
  // the same on 1 and 2 threads (the masks follow each row's place in the batch).
  TrainConfig cfg;
  cfg.batch = 256;
  cfg.seed = 2;
  Trainer<double> t_plain(*plain, data, cfg);
  const StepReport rp = t_plain.step();
  auto one = make(0.4), two = make(0.4);
  Trainer<double> t1(*one, data, cfg);
  cfg.threads = 2;
  Trainer<double> t2(*two, data, cfg);
  const StepReport r1 = t1.step(), r2 = t2.step();
  CHECK(std::abs(r1.nll - rp.nll) > 1e-6);
  CHECK(r2.nll == doctest::Approx(r1.nll).epsilon(1e-12));
  CHECK(r2.grad_norm == doctest::Approx(r1.grad_norm).epsilon(1e-12));
  // The rate is part of the architecture, so a saved model rebuilds with it.
  const nlohmann::json arch = dropped->config();
  auto rebuilt = Flow<double>::from_config(arch);
  CHECK(rebuilt->config() == arch);
  CHECK(arch.dump().find("\"dropout\":0.4") != std::string::npos);
}

TEST_CASE("Inference gives the same bits on any number of threads: chunks start at the same rows") {
  // A row's bits depend on where it sits in its chunk (an elementwise op runs the vector body
  // on most of an array and a scalar tail on its last elements), so the chunks must not move
  // with the thread count: float32, a spline flow and an affine one, chunk sizes that leave
  // short chunks, row counts that do not divide.
  for (CouplingKind kind : {CouplingKind::rqs, CouplingKind::affine}) {
    FlowSpec spec;
    spec.layers = 4;
    spec.coupling.kind = kind;
    spec.coupling.hidden = 16;
    spec.seed = 7;
    const std::size_t d = 5;
    auto flow = make_flow<float>(d, spec);
    ad::Rng init(3);
    for (auto* q : flow->parameters()) init.fill_normal(q->value.data(), q->value.size(), 0.0f, 0.3f);
    for (std::size_t n : {std::size_t(203), std::size_t(1000)})
      for (std::size_t chunk : {std::size_t(64), std::size_t(100), std::size_t(1024)}) {
        CAPTURE(n);
        CAPTURE(chunk);
        Array<float> x = Array<float>::from_shape({n, d});
        ad::Rng rng(11);
        rng.fill_normal(x.data(), x.size(), 0.0f, 1.5f);
        std::vector<float> lp1, y1, lq1, e1;
        for (int threads : {1, 2, 3}) {
          CAPTURE(threads);
          Inference<float> inference(*flow, threads, chunk);
          std::vector<float> lp(n), y(n * d), lq(n), e(n);
          inference.log_prob(x.data(), n, lp.data());
          PushOutputs<float> out;
          out.y = y.data();
          out.log_density = lq.data();
          out.path_energy = e.data();
          inference.forward(x.data(), n, out);
          if (threads == 1) {
            lp1 = lp, y1 = y, lq1 = lq, e1 = e;
            continue;
          }
          CHECK(lp == lp1);
          CHECK(y == y1);
          CHECK(lq == lq1);
          CHECK(e == e1);
        }
      }
  }
}

TEST_CASE("Inference::plan_chunks covers the rows once, in chunks of at most the size asked, grouped by 8, 4 or 2 where they stay wide") {
  using Plan = Inference<float>;
  for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(50), std::size_t(203), std::size_t(511),
                        std::size_t(512), std::size_t(513), std::size_t(1000), std::size_t(20000)})
    for (std::size_t chunk : {std::size_t(1), std::size_t(7), std::size_t(64), std::size_t(253), std::size_t(4096)}) {
      CAPTURE(n);
      CAPTURE(chunk);
      const ChunkPlan p = Plan::plan_chunks(n, chunk);
      CHECK(p.rows <= chunk);
      CHECK(p.count * p.rows >= n);                      // every row is in a chunk
      if (p.count > 0) CHECK((p.count - 1) * p.rows < n);  // and every chunk has rows
      if (n == 0) CHECK(p.count == 0);
      // grouped: a multiple of 8 (else 4, else 2) chunks where that keeps them ≥ kMinChunk rows,
      // else ⌈n / chunk⌉
      const std::size_t plain = (n + chunk - 1) / chunk;
      if (p.count > plain) {
        CHECK(p.count % 2 == 0);
        CHECK(n / p.count >= Plan::kMinChunk - 1);
      }
      if (plain > 0 && n / ((plain + 7) / 8 * 8) >= Plan::kMinChunk) CHECK(p.count % 8 == 0);
    }
  // the shape of eval's default: 20 000 rows in chunks of ≤ 4096 → 8 chunks of 2500
  CHECK(Plan::plan_chunks(20000, 4096).rows == 2500);
  CHECK(Plan::plan_chunks(20000, 4096).count == 8);
  CHECK(Plan::plan_chunks(20000, 253).count == 80);
  // a few hundred rows still go to two lanes, in chunks of ≥ 64 rows
  CHECK(Plan::plan_chunks(500, 4096).count == 4);
  CHECK(Plan::plan_chunks(200, 4096).count == 2);
  CHECK(Plan::plan_chunks(127, 4096).count == 1);
  CHECK_THROWS_AS(Plan::plan_chunks(10, 0), std::invalid_argument);
}
