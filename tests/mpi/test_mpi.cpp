// Data parallelism across MPI ranks (flows/distributed.hpp). ctest runs this program under
// mpirun with 1, 2 and 3 ranks; every rank runs every test case, and each compares the
// distributed Trainer with a one-process Trainer that it runs itself on the same seeds.
#define DOCTEST_CONFIG_IMPLEMENT
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include <doctest/doctest.h>

#include "flows/datasets.hpp"
#include "flows/distributed.hpp"
#include "flows/train.hpp"
#include "trainer_fixtures.hpp"

using namespace flows;
using trainer_fixtures::check_same_step;
using trainer_fixtures::max_rel_diff;
using trainer_fixtures::test_flow;

namespace {

Communicator* g_comm = nullptr;

/// The largest difference between this rank's values and rank 0's (0 on every rank when they agree).
template <class T>
double spread_across_ranks(const std::vector<ad::Parameter<T>*>& params) {
  std::vector<double> mine, zero;
  for (const auto* p : params) mine.insert(mine.end(), p->value.data(), p->value.data() + p->value.size());
  zero = g_comm->rank() == 0 ? mine : std::vector<double>(mine.size(), 0.0);
  g_comm->allreduce_sum(zero.data(), zero.size());  // rank 0's values, everywhere
  double d = 0;
  for (std::size_t i = 0; i < mine.size(); ++i) d = std::max(d, std::abs(mine[i] - zero[i]));
  std::vector<double> worst(std::size_t(g_comm->size()), 0.0);
  worst[std::size_t(g_comm->rank())] = d;
  g_comm->allreduce_sum(worst.data(), worst.size());
  return *std::max_element(worst.begin(), worst.end());
}

}  // namespace

TEST_CASE("float64: the gradient over N ranks equals the one-process gradient to 1e-10, both directions, odd batches, dropout") {
  REQUIRE(g_comm != nullptr);
  GaussianDataset data(5);
  for (Direction dir : {Direction::gen, Direction::norm})
    for (std::size_t batch : {std::size_t(300), std::size_t(301)})
      for (int threads : {1, 2}) {
        CAPTURE(g_comm->size());
        CAPTURE(direction_name(dir));
        CAPTURE(batch);
        CAPTURE(threads);
        TrainConfig cfg;
        cfg.batch = batch;
        cfg.beta.start = 0.3;
        cfg.direction = dir;
        cfg.seed = 5;
        auto reference = test_flow<double>(5, 11, 0.2);
        Trainer<double> one(*reference, data, cfg);
        const StepReport r1 = one.step();

        auto flow = test_flow<double>(5, 11, 0.2);
        cfg.comm = g_comm;
        cfg.threads = threads;
        Trainer<double> many(*flow, data, cfg);
        const StepReport r = many.step();
        check_same_step(r, r1, *flow, *reference, /*values=*/false);
        CHECK(spread_across_ranks(flow->parameters()) == 0.0);
      }
}

TEST_CASE("float32: after 50 Adam steps the parameters over N ranks equal one process's within 1e-4 relative") {
  REQUIRE(g_comm != nullptr);
  auto data = make_dataset("8gaussians");
  auto flow = test_flow<float>(2, 3);
  TrainConfig cfg;
  cfg.batch = 257;
  cfg.beta.start = 0.05;
  cfg.lr = 3e-3;
  cfg.seed = 9;
  Trainer<float> one(*flow, *data, cfg);
  for (int s = 0; s < 50; ++s) one.step(s % 10 == 0);

  auto ranks = test_flow<float>(2, 3);
  cfg.comm = g_comm;
  Trainer<float> many(*ranks, *data, cfg);
  for (int s = 0; s < 50; ++s) many.step(s % 10 == 0);
  const auto ps = ranks->parameters(), refs = flow->parameters();
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < ps.size(); ++i)
    for (std::size_t j = 0; j < ps[i]->value.size(); ++j) {
      worst = std::max(worst, std::abs(double(ps[i]->value.data()[j]) - double(refs[i]->value.data()[j])));
      scale = std::max(scale, std::abs(double(refs[i]->value.data()[j])));
    }
  CAPTURE(g_comm->size());
  CHECK(scale > 0.1);  // the parameters moved and are not all zero
  CHECK(worst <= 1e-4 * scale);
  CHECK(spread_across_ranks(ps) == 0.0);
}

TEST_CASE("float32: N ranks × 1 thread give the bits of one process with N threads") {
  REQUIRE(g_comm != nullptr);
  auto data = make_dataset("8gaussians");
  TrainConfig cfg;
  cfg.batch = 384;  // at least 64 rows per thread for 3 threads (useful_lanes)
  cfg.beta.start = 0.05;
  cfg.lr = 3e-3;
  cfg.seed = 4;
  cfg.threads = g_comm->size();
  auto threaded = test_flow<float>(2, 6);
  Trainer<float> one(*threaded, *data, cfg);
  CHECK(one.threads() == g_comm->size());
  for (int s = 0; s < 20; ++s) one.step();

  cfg.comm = g_comm;
  cfg.threads = 1;
  auto ranks = test_flow<float>(2, 6);
  Trainer<float> many(*ranks, *data, cfg);
  for (int s = 0; s < 20; ++s) many.step();
  const auto ps = ranks->parameters(), refs = threaded->parameters();
  // Bitwise for 1 and 2 ranks (a + b is b + a); with 3 the allreduce may associate the
  // three partial sums differently from the threads' (g0 + g1) + g2.
  const double tolerance = g_comm->size() <= 2 ? 0.0 : 1e-5;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    CAPTURE(ps[i]->name);
    CHECK(max_rel_diff(ps[i]->value.data(), refs[i]->value.data(), ps[i]->value.size()) <= tolerance);
  }
}

TEST_CASE("a signal seen by one rank stops every rank at the same step") {
  REQUIRE(g_comm != nullptr);
  auto data = make_dataset("8gaussians");
  auto flow = test_flow<float>(2, 8);
  std::atomic<int> interrupt{0};
  TrainConfig cfg;
  cfg.batch = 128;
  cfg.comm = g_comm;
  cfg.interrupt = &interrupt;
  Trainer<float> trainer(*flow, *data, cfg);
  std::int64_t stopped_at = -1;
  for (int s = 0; s < 10; ++s) {
    // the last rank alone is signalled, before step 4
    if (s == 3 && g_comm->rank() == g_comm->size() - 1) interrupt.store(SIGINT);
    const StepReport r = trainer.step(false);
    if (r.signal) {
      stopped_at = r.step;
      break;
    }
  }
  CHECK(stopped_at == 4);
  std::vector<double> steps(std::size_t(g_comm->size()), 0.0);
  steps[std::size_t(g_comm->rank())] = double(trainer.steps_done());
  g_comm->allreduce_sum(steps.data(), steps.size());
  for (double s : steps) CHECK(s == 4.0);
}

int main(int argc, char** argv) {
  g_comm = mpi_world(&argc, &argv);
  if (!g_comm) {
    std::fprintf(stderr, "trflow_mpi_tests: run me under mpirun (mpirun -np N trflow_mpi_tests)\n");
    return 1;
  }
  doctest::Context context(argc, argv);
  // Rank 0 reports; the others print only their failures.
  if (g_comm->rank() > 0) context.setOption("success", false);
  const int failures = context.run();
  // Every rank runs every case, so each one's failures make mpirun's exit code non-zero.
  return failures;
}
