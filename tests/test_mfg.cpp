// Mean-field games (flows/mfg.hpp): the time weights, the obstacle cost and the target's
// log-density on the tape against direct computations, their gradients against central
// differences, and the Jeffreys objective's parameter gradient.
#include <cmath>
#include <vector>

#include <doctest/doctest.h>

#include "autodiff/gradcheck.hpp"
#include "flows/mfg.hpp"
#include "flows/train.hpp"

using ad::Array;
using ad::Tape;
using ad::Var;
using namespace flows;

TEST_CASE("simpson_weights sum to 1 and integrate cubics on [0, 1] exactly, for even and odd step counts") {
  for (std::size_t states = 1; states <= 12; ++states) {
    CAPTURE(states);
    const std::vector<double> w = simpson_weights(states);
    REQUIRE(w.size() == states);
    double total = 0;
    for (double v : w) total += v;
    CHECK(total == doctest::Approx(1.0).epsilon(1e-14));
    if (states < 3) continue;  // trapezoid (2 states) is exact for lines only
    const double L = double(states - 1);
    double cubic = 0;
    for (std::size_t l = 0; l < states; ++l) {
      const double t = double(l) / L;
      cubic += w[l] * (4 * t * t * t - 3 * t * t + 2 * t + 1);
    }
    CHECK(cubic == doctest::Approx(1.0 - 1.0 + 1.0 + 1.0).epsilon(1e-13));  // ∫ = 1 − 1 + 1 + 1
  }
  CHECK(simpson_weights(5) == std::vector<double>{1.0 / 12, 4.0 / 12, 2.0 / 12, 4.0 / 12, 1.0 / 12});
  CHECK_THROWS_AS(simpson_weights(0), std::invalid_argument);
}

TEST_CASE("obstacle_cost equals the Simpson-weighted mean of 50 pdf_Q over hand-made trajectories") {
  const Obstacle q;  // N(0, diag(1, 0.5)), scale 50
  // Three rows (the third coordinate is ignored), five states: a straight line through the
  // obstacle, one around it, one standing still.
  const std::size_t m = 3, S = 5;
  std::vector<Array<double>> states(S, Array<double>({m, 3}));
  for (std::size_t s = 0; s < S; ++s) {
    const double t = double(s) / double(S - 1);
    states[s](0, 0) = 0.0, states[s](0, 1) = 3 - 6 * t, states[s](0, 2) = 7;
    states[s](1, 0) = 2 * std::sin(M_PI * t), states[s](1, 1) = 3 - 6 * t, states[s](1, 2) = -1;
    states[s](2, 0) = 0.5, states[s](2, 1) = 0.25, states[s](2, 2) = 0;
  }
  Tape<double> tape;
  std::vector<Var<double>> traj;
  for (const auto& s : states) traj.push_back(tape.constant(s));
  const double got = obstacle_cost(traj, q).item();
  const std::vector<double> w = simpson_weights(S);
  double want = 0;
  for (std::size_t s = 0; s < S; ++s)
    for (std::size_t i = 0; i < m; ++i) {
      const double x = states[s](i, 0), y = states[s](i, 1);
      want += w[s] * 50 * std::exp(-0.5 * (x * x + y * y / 0.5)) / (2 * M_PI * std::sqrt(0.5)) / double(m);
    }
  CHECK(got == doctest::Approx(want).epsilon(1e-13));
  CHECK(q.cost(0, 0) == doctest::Approx(50 / (2 * M_PI * std::sqrt(0.5))));
  CHECK(q.inside(0.5, 0.25));
  CHECK_FALSE(q.inside(0.0, 0.8));
  // Its gradient with respect to every state.
  auto f = [&](Tape<double>&, const std::vector<Var<double>>& x) { return obstacle_cost(x, q); };
  const ad::GradcheckResult r = ad::gradcheck(f, states);
  CHECK_MESSAGE(r.ok, r.report);
}

TEST_CASE("target_log_prob on the tape equals the mixture's own log-density, with a correct gradient") {
  for (const char* spec : {"gmm:3", "crowd:2", "8gaussians"}) {
    CAPTURE(spec);
    auto target = make_dataset(spec);
    const std::size_t d = target->dim(), m = 7;
    Array<double> y({m, d});
    ad::Rng rng(3);
    target->sample(m, rng, y.data());
    y(0, 0) += 40.0;  // far from every component: the shift keeps it finite
    Tape<double> tape;
    const Array<double> got = target_log_prob(*target, tape.constant(y)).value();
    std::vector<double> want(m);
    target->log_prob(y.data(), m, want.data());
    for (std::size_t i = 0; i < m; ++i) CHECK(got(i, 0) == doctest::Approx(want[i]).epsilon(1e-12));
    auto f = [&](Tape<double>&, const std::vector<Var<double>>& x) { return target_log_prob(*target, x[0]); };
    Array<double> near = y;
    near(0, 0) -= 40.0;
    const ad::GradcheckResult r = ad::gradcheck(f, {near});
    CHECK_MESSAGE(r.ok, r.report);
  }
  auto not_mixture = make_dataset("moons");
  Tape<double> tape;
  CHECK_THROWS_AS(target_log_prob(*not_mixture, tape.constant(Array<double>({2, 2}, 0.0))), std::invalid_argument);
}

TEST_CASE("the mean-field-game objective: reverse KL and running cost by value, and its parameter gradient") {
  const MfgProblem p = mfg_problem("crowd", 2);
  auto target = make_dataset(p.target);
  FlowSpec spec;
  spec.layers = 2;
  spec.structure = Structure::steps;
  spec.coupling.kind = CouplingKind::rqs;
  spec.coupling.hidden = 6;
  spec.coupling.tail_bound = 6;
  spec.base = "fixed_gaussian";
  spec.base_mean = p.p0_mean;
  spec.base_log_std.assign(2, 0.5 * std::log(p.p0_var));
  spec.time_per_step = true;
  auto flow = make_flow<double>(2, spec);
  CHECK(flow->num_time_steps() == 2);  // 6 layers, 3 per step
  ad::Rng rng(5);
  for (auto* q : flow->parameters()) rng.fill_normal(q->value.data(), q->value.size(), 0.0, 0.3);
  Array<double> data({9, 2}), base;
  target->sample(9, rng, data.data());
  flow->base().sample(9, rng, base);
  ObjectiveWeights w;
  w.transport = 0.1;
  w.reverse_kl = 1.0;
  w.target = target.get();
  w.running = 2.0;
  w.problem = &p;
  Tape<double> tape;
  const ObjectiveTerms<double> terms = objective(*flow, tape.constant(data), tape.constant(base), w);
  // The reverse KL from its definition, E_x[log α0(x) − log|det ∇F(x)| − log p1(F(x))].
  Tape<double> t2;
  std::vector<Var<double>> traj;
  const Mapped<double> f = flow->forward(t2.constant(base), &traj);
  CHECK(traj.size() == 3);
  std::vector<double> lp1(9);
  target->log_prob(f.out.value().data(), 9, lp1.data());
  const Array<double> log_a0 = flow->base().log_prob(t2.constant(base)).value();
  double rev = 0;
  for (std::size_t i = 0; i < 9; ++i) rev += (log_a0(i, 0) - f.logdet.value()(i, 0) - lp1[i]) / 9.0;
  CHECK(terms.reverse_kl.item() == doctest::Approx(rev).epsilon(1e-12));
  CHECK(terms.running.item() == doctest::Approx(obstacle_cost(traj, p.obstacle).item()).epsilon(1e-12));
  CHECK(terms.loss.item() == doctest::Approx(terms.nll.item() + 0.1 * terms.transport.item() + rev +
                                             2.0 * terms.running.item())
                                 .epsilon(1e-12));
  // The whole objective's gradient with respect to every parameter.
  auto loss = [&](Tape<double>& t) { return objective(*flow, t.constant(data), t.constant(base), w).loss; };
  ad::GradcheckOptions opt;
  opt.rtol = 1e-5;
  opt.check_entries = false;  // projections: every parameter moves at once
  opt.projections = 6;
  const ad::GradcheckResult r = ad::gradcheck_params(loss, flow->parameters(), opt);
  CHECK_MESSAGE(r.ok, r.report);
}

TEST_CASE("interaction_cost equals Σ_{i<j} of the Simpson-weighted mean of exp(−½‖xⁱ − xʲ‖²), with its gradient") {
  // Three populations of 2 coordinates, four rows, five states: the groups cross, pass and stand.
  const std::size_t m = 4, S = 5, P = 3, D = 6;
  std::vector<Array<double>> states(S, Array<double>({m, D}));
  for (std::size_t s = 0; s < S; ++s) {
    const double t = double(s) / double(S - 1);
    for (std::size_t i = 0; i < m; ++i) {
      const double r = 0.3 * double(i);
      states[s](i, 0) = t + r, states[s](i, 1) = t;              // group 0: up the diagonal
      states[s](i, 2) = 1 - t, states[s](i, 3) = t - r;          // group 1: across it
      states[s](i, 4) = 0.5 * r, states[s](i, 5) = 2 + std::sin(3 * t);  // group 2: far, wobbling
    }
  }
  Tape<double> tape;
  std::vector<Var<double>> traj;
  for (const auto& s : states) traj.push_back(tape.constant(s));
  const std::vector<double> w = simpson_weights(S);
  double want = 0;
  for (std::size_t s = 0; s < S; ++s)
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t a = 0; a < P; ++a)
        for (std::size_t b = a + 1; b < P; ++b) {
          const double dx = states[s](i, 2 * a) - states[s](i, 2 * b), dy = states[s](i, 2 * a + 1) - states[s](i, 2 * b + 1);
          want += w[s] * std::exp(-0.5 * (dx * dx + dy * dy)) / double(m);
        }
  CHECK(interaction_cost(traj, P).item() == doctest::Approx(want).epsilon(1e-13));
  CHECK_THROWS_AS(interaction_cost(traj, 4), std::invalid_argument);  // 6 columns are not 4 groups
  CHECK_THROWS_AS(interaction_cost(traj, 1), std::invalid_argument);
  auto f = [&](Tape<double>&, const std::vector<Var<double>>& x) { return interaction_cost(x, P); };
  const ad::GradcheckResult r = ad::gradcheck(f, states);
  CHECK_MESSAGE(r.ok, r.report);
}

TEST_CASE("drones problems: their P0 and P1, the running cost (obstacle per group + interaction), refused dimensions") {
  const MfgProblem two = mfg_problem("drones2", 0), eight = mfg_problem("drones8", 16), bar = mfg_problem("drones2-obstacle", 4);
  CHECK(two.dim == 4);
  CHECK(two.populations == 2);
  CHECK(two.p0_mean == std::vector<double>{0, 0, 1, 0});
  CHECK(two.p0_var == 0.01);
  CHECK_FALSE(two.has_obstacle);
  CHECK(two.has_running_cost());
  CHECK(eight.dim == 16);
  CHECK(eight.p0_var == 5e-3);
  auto t8 = make_dataset(eight.target);
  REQUIRE(t8->dim() == 16);
  for (std::size_t k = 0; k < 8; ++k) {  // each group ends at the antipode of its start, radius 2
    CAPTURE(k);
    const double sx = eight.p0_mean[2 * k], sy = eight.p0_mean[2 * k + 1];
    const auto* gm = dynamic_cast<const GaussianMixture*>(t8.get());
    REQUIRE(gm);
    CHECK(gm->means()(0, 2 * k) == doctest::Approx(-sx).epsilon(1e-12));
    CHECK(gm->means()(0, 2 * k + 1) == doctest::Approx(-sy).epsilon(1e-12));
    CHECK(std::hypot(sx, sy) == doctest::Approx(2.0));
    CHECK(gm->sigma() == doctest::Approx(std::sqrt(5e-3)));
  }
  CHECK_THROWS_AS(mfg_problem("drones2", 2), std::invalid_argument);
  CHECK_THROWS_AS(mfg_problem("drones3", 0), std::invalid_argument);
  // drones2-obstacle: the bar's cost on each group's coordinates, plus the interaction.
  const std::size_t m = 3, S = 4;
  std::vector<Array<double>> states(S, Array<double>({m, 4}));
  ad::Rng rng(4);
  for (auto& s : states) rng.fill_normal(s.data(), s.size(), 0.5, 0.3);
  Tape<double> tape;
  std::vector<Var<double>> traj;
  for (const auto& s : states) traj.push_back(tape.constant(s));
  REQUIRE(bar.has_obstacle);
  const double want = obstacle_cost(traj, bar.obstacle, 0).item() + obstacle_cost(traj, bar.obstacle, 2).item() +
                      interaction_cost(traj, 2).item();
  CHECK(running_cost(traj, bar).item() == doctest::Approx(want).epsilon(1e-13));
  CHECK(running_cost(traj, two).item() == doctest::Approx(interaction_cost(traj, 2).item()).epsilon(1e-13));
  CHECK_THROWS_AS(running_cost(traj, mfg_problem("gmm", 4)), std::invalid_argument);
}

TEST_CASE("the problem table: every kind builds itself with its own dimension or any D >= 2, and messages list every name") {
  const auto& kinds = mfg_problem_kinds();
  REQUIRE(kinds.size() == 5);
  const std::string names = mfg_problem_list();
  CHECK(names == "crowd, gmm, drones2, drones2-obstacle or drones8");
  CHECK(mfg_problem_list(true).find("drones8 (eight groups cross a circle)") != std::string::npos);
  for (const MfgProblemKind& k : kinds) {
    CAPTURE(k.name);
    CHECK(find_mfg_problem(k.name) == &k);
    const MfgProblem p = mfg_problem(k.name, k.own_dim != 0 ? 0 : 3);
    CHECK(p.name == k.name);
    CHECK(p.dim == (k.own_dim != 0 ? k.own_dim : 3));
    CHECK(p.p0_mean.size() == p.dim);
    CHECK(p.dim % p.populations == 0);
    CHECK(make_dataset(p.target)->dim() == p.dim);  // P1 lives in the same space
    if (k.own_dim == 0) CHECK_THROWS_AS(mfg_problem(k.name, 1), std::invalid_argument);
    else CHECK_THROWS_AS(mfg_problem(k.name, k.own_dim + 2), std::invalid_argument);
  }
  CHECK(find_mfg_problem("drones") == nullptr);
  CHECK_THROWS_WITH_AS(mfg_problem("drones", 0), doctest::Contains(names.c_str()), std::invalid_argument);
}

TEST_CASE("a multi-population flow moves each group by its own coordinates alone, and is one time step per step") {
  FlowSpec spec;
  spec.layers = 3;
  spec.structure = Structure::steps;
  spec.populations = 3;
  spec.actnorm = true;
  spec.coupling.hidden = 8;
  auto flow = make_flow<double>(6, spec);
  CHECK(flow->num_time_steps() == 3);
  CHECK(flow->num_layers() == 3 * (1 + 3 * 2));
  ad::Rng rng(6);
  for (auto* p : flow->parameters()) rng.fill_normal(p->value.data(), p->value.size(), 0.0, 0.3);
  Array<double> x({5, 6});
  rng.fill_normal(x.data(), x.size(), 0.0, 1.0);
  Array<double> moved = x;
  for (std::size_t i = 0; i < 5; ++i) moved(i, 2) += 1.5, moved(i, 3) -= 0.7;  // group 1 only
  Tape<double> tape;
  const Array<double> y = flow->forward(tape.constant(x)).out.value(), z = flow->forward(tape.constant(moved)).out.value();
  for (std::size_t i = 0; i < 5; ++i) {
    for (std::size_t j : {0, 1, 4, 5}) CHECK(z(i, j) == y(i, j));  // groups 0 and 2 did not see it
    CHECK(std::abs(z(i, 2) - y(i, 2)) > 1e-3);
  }
  // and it inverts
  const Array<double> back = flow->inverse(tape.constant(y)).out.value();
  for (std::size_t k = 0; k < x.size(); ++k) CHECK(back.data()[k] == doctest::Approx(x.data()[k]).epsilon(1e-9));
  spec.lu = true;
  CHECK_THROWS_AS(make_flow<double>(6, spec), std::invalid_argument);
  spec.lu = false;
  CHECK_THROWS_AS(make_flow<double>(5, spec), std::invalid_argument);  // 5 columns are not 3 groups
}
