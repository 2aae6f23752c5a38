#include "autodiff/gradcheck.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "autodiff/random.hpp"

namespace ad {
namespace {

/// The checks, for any set of arrays x_k with a way to evaluate ⟨u, f(x)⟩ and its gradient.
struct Checker {
  std::vector<Array<double>*> xs;                                   // perturbed in place
  std::function<Array<double>()> eval;                              // f(x), any shape
  std::function<std::vector<Array<double>>(const Array<double>&)> grads;  // x̄_k for seed u
  const GradcheckOptions& opt;
  GradcheckResult result;

  double project(const Array<double>& u) {  // ⟨u, f(x)⟩
    const Array<double> y = eval();
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += u.data()[i] * y.data()[i];
    return s;
  }

  void compare(double analytic, double numeric, const std::string& what) {
    const double abs_err = std::abs(analytic - numeric);
    const double scale = std::max(std::abs(analytic), std::abs(numeric));
    const double rel_err = scale > 0 ? abs_err / scale : 0;
    ++result.compared;
    result.max_abs_error = std::max(result.max_abs_error, abs_err);
    if (abs_err > opt.atol) result.max_rel_error = std::max(result.max_rel_error, rel_err);
    if (!(abs_err <= opt.atol + opt.rtol * scale)) {  // also catches NaN
      if (result.ok || std::count(result.report.begin(), result.report.end(), '\n') < 10)
        result.report += fmt::format("{}: analytic {:.12g}, numeric {:.12g} (abs err {:.3g}, rel err {:.3g})\n", what,
                                     analytic, numeric, abs_err, rel_err);
      result.ok = false;
    }
  }

  GradcheckResult run() {
    Rng rng(opt.seed);
    const Array<double> y0 = eval();
    Array<double> u(y0.shape());
    if (u.size() == 1) u.fill(1.0);
    else rng.fill_normal(u.data(), u.size());
    const std::vector<Array<double>> g = grads(u);

    if (opt.check_entries) {
      for (std::size_t k = 0; k < xs.size(); ++k) {
        Array<double>& x = *xs[k];
        for (std::size_t i = 0; i < x.size(); ++i) {
          const double saved = x.data()[i];
          const double h = opt.eps * std::max(1.0, std::abs(saved));
          x.data()[i] = saved + h;
          const double up = project(u);
          x.data()[i] = saved - h;
          const double down = project(u);
          x.data()[i] = saved;
          compare(g[k].data()[i], (up - down) / (2 * h),
                  fmt::format("input {} entry ({}, {})", k, i / x.shape()[1], i % x.shape()[1]));
        }
      }
    }
    for (int p = 0; p < opt.projections; ++p) {
      std::vector<Array<double>> v, saved;
      double analytic = 0;
      for (std::size_t k = 0; k < xs.size(); ++k) {
        v.emplace_back(xs[k]->shape());
        rng.fill_normal(v.back().data(), v.back().size());
        saved.push_back(*xs[k]);
        for (std::size_t i = 0; i < v.back().size(); ++i) analytic += g[k].data()[i] * v.back().data()[i];
      }
      const double h = opt.eps;
      auto shift = [&](double t) {
        for (std::size_t k = 0; k < xs.size(); ++k)
          for (std::size_t i = 0; i < xs[k]->size(); ++i) xs[k]->data()[i] = saved[k].data()[i] + t * v[k].data()[i];
      };
      shift(h);
      const double up = project(u);
      shift(-h);
      const double down = project(u);
      shift(0);
      compare(analytic, (up - down) / (2 * h), fmt::format("projection {} <u, J v>", p));
    }
    return result;
  }
};

}  // namespace

GradcheckResult gradcheck(const GradFunction& f, std::vector<Array<double>> inputs, const GradcheckOptions& opt) {
  Tape<double> tape;
  std::vector<Var<double>> vars;
  auto record = [&](bool with_grad) {
    tape.clear();
    vars.clear();
    for (const Array<double>& x : inputs) vars.push_back(with_grad ? tape.variable(x) : tape.constant(x));
    return f(tape, vars);
  };
  Checker c{{}, {}, {}, opt, {}};
  for (Array<double>& x : inputs) c.xs.push_back(&x);
  c.eval = [&] { return Array<double>(record(false).value()); };
  c.grads = [&](const Array<double>& u) {
    Var<double> y = record(true);
    tape.backward(y, u);
    std::vector<Array<double>> g;
    for (Var<double> v : vars) g.push_back(v.grad());
    return g;
  };
  return c.run();
}

GradcheckResult gradcheck_params(const std::function<Var<double>(Tape<double>&)>& f,
                                 const std::vector<Parameter<double>*>& params, const GradcheckOptions& opt) {
  Tape<double> tape;
  Checker c{{}, {}, {}, opt, {}};
  for (Parameter<double>* p : params) c.xs.push_back(&p->value);
  c.eval = [&] {
    tape.clear();
    return Array<double>(f(tape).value());
  };
  c.grads = [&](const Array<double>& u) {
    for (Parameter<double>* p : params) p->zero_grad();
    tape.clear();
    Var<double> y = f(tape);
    tape.backward(y, u);
    std::vector<Array<double>> g;
    for (Parameter<double>* p : params) g.push_back(p->grad);
    return g;
  };
  return c.run();
}

}  // namespace ad
