#pragma once
// What the Trainer tests share (tests/test_parallel.cpp, tests/mpi/test_mpi.cpp): a flow with
// every layer kind off its initial weights, and the check that a step split some way (threads,
// ranks) matches the one-lane step.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include <doctest/doctest.h>

#include "flows/train.hpp"

namespace trainer_fixtures {

/// ActNorm, LU and affine couplings (optionally with conditioner dropout), weights ~ N(0, 0.2²).
template <class T>
std::unique_ptr<flows::Flow<T>> test_flow(std::size_t d, std::uint64_t seed, double dropout = 0.0) {
  flows::FlowSpec spec;
  spec.layers = 3;
  spec.coupling.hidden = 12;
  spec.coupling.dropout = dropout;
  spec.actnorm = true;
  spec.lu = true;
  spec.base = "diagonal_gaussian";
  spec.seed = seed;
  auto flow = flows::make_flow<T>(d, spec);
  ad::Rng rng(seed + 1);
  std::vector<double> v;
  for (auto* p : flow->parameters()) {
    v.resize(p->value.size());
    rng.fill_normal(v.data(), v.size(), 0.0, 0.2);
    std::copy(v.begin(), v.end(), p->value.data());
  }
  return flow;
}

template <class T>
double max_rel_diff(const T* a, const T* b, std::size_t n) {
  double m = 0;
  for (std::size_t i = 0; i < n; ++i)
    m = std::max(m, std::abs(double(a[i]) - double(b[i])) / (1e-12 + std::abs(double(a[i])) + std::abs(double(b[i]))));
  return m;
}

/// A step's report equals the reference step's to 1e-12 and every gradient (and, with
/// `values`, every updated parameter) to 1e-10 relative. After step(), grad holds the step's
/// gradient and value the updated parameters.
template <class T>
void check_same_step(const flows::StepReport& r, const flows::StepReport& ref, flows::Flow<T>& flow,
                     flows::Flow<T>& reference, bool values) {
  CHECK(r.loss == doctest::Approx(ref.loss).epsilon(1e-12));
  CHECK(r.nll == doctest::Approx(ref.nll).epsilon(1e-12));
  CHECK(r.transport == doctest::Approx(ref.transport).epsilon(1e-12));
  CHECK(r.map_cost == doctest::Approx(ref.map_cost).epsilon(1e-12));
  CHECK(r.grad_norm == doctest::Approx(ref.grad_norm).epsilon(1e-12));
  const auto ps = flow.parameters(), refs = reference.parameters();
  for (std::size_t i = 0; i < ps.size(); ++i) {
    CAPTURE(ps[i]->name);
    CHECK(max_rel_diff(ps[i]->grad.data(), refs[i]->grad.data(), ps[i]->grad.size()) < 1e-10);
    if (values) CHECK(max_rel_diff(ps[i]->value.data(), refs[i]->value.data(), ps[i]->value.size()) < 1e-10);
  }
}

}  // namespace trainer_fixtures
