#pragma once
// Checks a function's reverse-mode gradient against central differences, in
// float64. Two checks:
//  1. every entry:  ∂⟨u, f⟩/∂x_k  vs  (⟨u, f(x + ε e_k)⟩ − ⟨u, f(x − ε e_k)⟩) / 2ε
//  2. random projections:  ⟨u, J v⟩ = Σ_k ⟨x̄_k, v_k⟩  vs  (⟨u, f(x + εv)⟩ − ⟨u, f(x − εv)⟩) / 2ε
// where u is a fixed random seed for the output (u = 1 for a 1×1 output).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "autodiff/tape.hpp"

namespace ad {

struct GradcheckOptions {
  double eps = 1e-5;        ///< finite-difference step (scaled by max(1, |x_k|))
  double rtol = 1e-6;       ///< passes when |analytic − numeric| ≤ atol + rtol · max(|analytic|, |numeric|)
  double atol = 1e-9;
  int projections = 3;      ///< number of random directions v for the ⟨u, J v⟩ check
  std::uint64_t seed = 0;   ///< for u and v
  bool check_entries = true;  ///< the per-entry check (costs two evaluations per input entry)
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;  ///< over all compared numbers
  double max_rel_error = 0;
  int compared = 0;
  std::string report;        ///< the failures, one line each (the first few)
};

/// f records a computation of the given input Vars on the tape and returns its output.
using GradFunction = std::function<Var<double>(Tape<double>&, const std::vector<Var<double>>&)>;

/// Gradcheck of f with respect to its inputs (each becomes a tape variable).
GradcheckResult gradcheck(const GradFunction& f, std::vector<Array<double>> inputs, const GradcheckOptions& opt = {});

/// Gradcheck with respect to parameters: f reads them with tape.param(p). Their
/// values are perturbed in place and restored; their grads are zeroed.
GradcheckResult gradcheck_params(const std::function<Var<double>(Tape<double>&)>& f,
                                 const std::vector<Parameter<double>*>& params, const GradcheckOptions& opt = {});

}  // namespace ad
