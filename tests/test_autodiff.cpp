// autodiff: every op's gradient against central differences (one table of ops,
// many shapes), float32 against float64, forward values against direct
// formulas, and the tape's bookkeeping (reuse, accumulation, errors).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include "autodiff/xsimd.hpp"

#include "autodiff/autodiff.hpp"
#include "../autodiff/src/kernels.hpp"  // the GEMM kernels, tested directly below
#include "compare.hpp"
#include "spline_reference.hpp"

using ad::Activation;
using ad::Array;
using ad::Op;
using ad::Parameter;
using ad::Rng;
using ad::Tape;
using ad::Var;

namespace {

using Inputs = std::vector<Array<double>>;

constexpr Activation kActivations[] = {Activation::identity, Activation::tanh,       Activation::sigmoid,
                                       Activation::relu,     Activation::leaky_relu, Activation::softplus,
                                       Activation::elu};

// ---------------------------------------------------------------- custom ops
/// y = a ⊙ b + sin(a):   ā += ȳ ⊙ (b + cos a),   b̄ += ȳ ⊙ a
template <class T>
struct SinMul : ad::CustomOp<T> {
  const char* name() const override { return "sin_mul"; }
  std::array<std::size_t, 2> shape(const Array<T>* const* in, int n) const override {
    if (n != 2 || in[0]->shape() != in[1]->shape()) throw ad::ShapeError("sin_mul: two inputs of one shape");
    return {in[0]->shape()[0], in[0]->shape()[1]};
  }
  void forward(const Array<T>* const* in, int, Array<T>& out) override {
    for (std::size_t i = 0; i < out.size(); ++i) {
      const T a = in[0]->data()[i], b = in[1]->data()[i];
      out.data()[i] = a * b + std::sin(a);
    }
  }
  void vjp(const Array<T>* const* in, int, const Array<T>&, const Array<T>& gy, Array<T>* const* gx) override {
    for (std::size_t i = 0; i < gy.size(); ++i) {
      const T a = in[0]->data()[i], b = in[1]->data()[i], g = gy.data()[i];
      if (gx[0]) gx[0]->data()[i] += g * (b + std::cos(a));
      if (gx[1]) gx[1]->data()[i] += g * a;
    }
  }
};

/// The same op with the cos term of ā forgotten: gradcheck must notice.
template <class T>
struct WrongSinMul : SinMul<T> {
  void vjp(const Array<T>* const* in, int, const Array<T>&, const Array<T>& gy, Array<T>* const* gx) override {
    for (std::size_t i = 0; i < gy.size(); ++i) {
      if (gx[0]) gx[0]->data()[i] += gy.data()[i] * in[1]->data()[i];
      if (gx[1]) gx[1]->data()[i] += gy.data()[i] * in[0]->data()[i];
    }
  }
};

/// Three inputs: y = a ⊙ b − c²:   ā += ȳ ⊙ b,   b̄ += ȳ ⊙ a,   c̄ −= 2 ȳ ⊙ c
template <class T>
struct MulSubSq : ad::CustomOp<T> {
  const char* name() const override { return "mul_sub_sq"; }
  std::array<std::size_t, 2> shape(const Array<T>* const* in, int n) const override {
    if (n != 3 || in[0]->shape() != in[1]->shape() || in[0]->shape() != in[2]->shape())
      throw ad::ShapeError("mul_sub_sq: three inputs of one shape");
    return {in[0]->shape()[0], in[0]->shape()[1]};
  }
  void forward(const Array<T>* const* in, int, Array<T>& out) override {
    for (std::size_t i = 0; i < out.size(); ++i) {
      const T a = in[0]->data()[i], b = in[1]->data()[i], c = in[2]->data()[i];
      out.data()[i] = a * b - c * c;
    }
  }
  void vjp(const Array<T>* const* in, int, const Array<T>&, const Array<T>& gy, Array<T>* const* gx) override {
    for (std::size_t i = 0; i < gy.size(); ++i) {
      const T a = in[0]->data()[i], b = in[1]->data()[i], c = in[2]->data()[i], g = gy.data()[i];
      if (gx[0]) gx[0]->data()[i] += g * b;
      if (gx[1]) gx[1]->data()[i] += g * a;
      if (gx[2]) gx[2]->data()[i] -= T(2) * g * c;
    }
  }
};

template <class T> ad::CustomOp<T>& sin_mul() {
  static SinMul<T> op;
  return op;
}
template <class T> ad::CustomOp<T>& mul_sub_sq() {
  static MulSubSq<T> op;
  return op;
}

// ---------------------------------------------------------------- the op table
/// One shape the table runs on, and what the column ops need for it (the index
/// vectors must outlive every tape that references them).
struct Dims {
  std::size_t m = 0, n = 0;
  std::size_t p = 7;          ///< the other dimension of matmul and linear (m·p crosses a float batch)
  std::vector<int> take;      ///< distinct, in decreasing order
  std::vector<int> take_rep;  ///< with repeats: the VJP must accumulate
  std::vector<int> scatter;   ///< distinct, leaves the columns j % 3 == 1 to the base
  std::size_t slice_start = 0, slice_count = 0;
};

Dims make_dims(std::size_t m, std::size_t n) {
  Dims d;
  d.m = m;
  d.n = n;
  for (int j = int(n) - 1; j >= 0; j -= 2) d.take.push_back(j);
  d.take_rep = {int(n) - 1, 0, int(n) - 1, int(n / 2), 0};
  for (int j = int(n) - 1; j >= 0; --j)
    if (j % 3 != 1) d.scatter.push_back(j);
  d.slice_start = n / 4;
  d.slice_count = std::max<std::size_t>(1, n / 2);
  return d;
}

const std::vector<std::pair<std::size_t, std::size_t>> kShapes = {{1, 1}, {1, 19}, {19, 1}, {3, 17}, {4, 16}, {5, 33}};

template <class T> using Fn = std::function<Var<T>(const Dims&, const std::vector<Var<T>>&)>;
using Maker = std::function<Inputs(Rng&, const Dims&)>;
using Reference = std::function<Array<double>(const Dims&, const Inputs&)>;

/// An op under test: one generic builder (instantiated for float and double), its
/// valid random inputs, and an independent float64 reference of its forward value.
struct Entry {
  std::string name;
  Fn<double> f64;
  Fn<float> f32;
  Maker make;
  Reference ref;
};

template <class F>
Entry entry(std::string name, F f, Maker make, Reference ref) {
  return {std::move(name), Fn<double>(f), Fn<float>(f), std::move(make), std::move(ref)};
}

// --- input distributions
using Dist = std::function<double(Rng&)>;
Dist normal(double s = 1.0) { return [s](Rng& r) { return s * r.normal(); }; }
Dist uniform(double lo, double hi) { return [lo, hi](Rng& r) { return r.uniform(lo, hi); }; }
/// |x| in [lo, hi), either sign: denominators, and inputs kept away from a kink at 0.
Dist away_from_zero(double lo, double hi) {
  return [lo, hi](Rng& r) { return (r.uniform() < 0.5 ? -1.0 : 1.0) * r.uniform(lo, hi); };
}
/// Draws of base at least margin away from every point (kinks).
Dist avoiding(Dist base, std::vector<double> points, double margin) {
  return [base, points, margin](Rng& r) {
    for (;;) {
      const double v = base(r);
      if (std::all_of(points.begin(), points.end(), [&](double p) { return std::abs(v - p) >= margin; })) return v;
    }
  };
}

Array<double> rnd(Rng& r, std::size_t rows, std::size_t cols, const Dist& d) {
  Array<double> a(Array<double>::shape_type{rows, cols});
  for (double& v : a) v = d(r);
  return a;
}

// --- reference helpers (plain loops, float64)
Array<double> zeros(std::size_t rows, std::size_t cols) { return Array<double>(Array<double>::shape_type{rows, cols}, 0.0); }

Array<double> emap(const Array<double>& a, const std::function<double(double)>& f) {
  Array<double> y = a;
  for (double& v : y) v = f(v);
  return y;
}
Array<double> emap2(const Array<double>& a, const Array<double>& b, const std::function<double(double, double)>& f) {
  Array<double> y = a;
  for (std::size_t i = 0; i < y.size(); ++i) y.data()[i] = f(a.data()[i], b.data()[i]);
  return y;
}

Array<double> naive_matmul(const Array<double>& a, const Array<double>& b, bool ta, bool tb) {
  const std::size_t m = ta ? a.shape()[1] : a.shape()[0], k = ta ? a.shape()[0] : a.shape()[1];
  const std::size_t n = tb ? b.shape()[0] : b.shape()[1];
  Array<double> c = zeros(m, n);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double s = 0;
      for (std::size_t q = 0; q < k; ++q) s += (ta ? a(q, i) : a(i, q)) * (tb ? b(j, q) : b(q, j));
      c(i, j) = s;
    }
  return c;
}

double act_ref(Activation act, double z, double s) {
  switch (act) {
    case Activation::identity: return z;
    case Activation::tanh: return std::tanh(z);
    case Activation::sigmoid: return 1.0 / (1.0 + std::exp(-z));
    case Activation::relu: return z > 0 ? z : 0.0;
    case Activation::leaky_relu: return z > 0 ? z : s * z;
    case Activation::softplus: return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
    case Activation::elu: return z > 0 ? z : s * std::expm1(z);
  }
  return NAN;
}
double default_slope(Activation act) { return act == Activation::leaky_relu ? 0.01 : 1.0; }
bool has_kink(Activation act) {
  return act == Activation::relu || act == Activation::leaky_relu || act == Activation::elu;
}

/// z = x Wᵀ (+ b)
Array<double> linear_ref(const Inputs& in) {
  Array<double> z = naive_matmul(in[0], in[1], false, true);
  if (in.size() > 2)
    for (std::size_t i = 0; i < z.shape()[0]; ++i)
      for (std::size_t j = 0; j < z.shape()[1]; ++j) z(i, j) += in[2](0, j);
  return z;
}

/// x (m×n), W (p×n), b (1×p); with a kinked activation, redrawn until every z is 0.01 from 0.
Maker linear_inputs(bool bias, bool avoid_kink) {
  return [=](Rng& r, const Dims& d) {
    for (int attempt = 0; attempt < 100000; ++attempt) {
      Inputs in{rnd(r, d.m, d.n, normal()), rnd(r, d.p, d.n, normal(1.0 / std::sqrt(double(d.n))))};
      if (bias) in.push_back(rnd(r, 1, d.p, normal(0.5)));
      if (!avoid_kink) return in;
      const Array<double> z = linear_ref(in);
      if (std::all_of(z.begin(), z.end(), [](double v) { return std::abs(v) >= 0.01; })) return in;
    }
    throw std::runtime_error("linear_inputs: no draw away from the kink");
  };
}

template <class F>
Entry unary(std::string name, F op, Dist d, std::function<double(double)> ref) {
  return entry(
      std::move(name), [op](const Dims&, const auto& x) { return op(x[0]); },
      [d](Rng& r, const Dims& s) { return Inputs{rnd(r, s.m, s.n, d)}; },
      [ref](const Dims&, const Inputs& in) { return emap(in[0], ref); });
}

template <class F>
Entry binary(std::string name, F op, Dist da, Dist db, std::function<double(double, double)> ref) {
  return entry(
      std::move(name), [op](const Dims&, const auto& x) { return op(x[0], x[1]); },
      [da, db](Rng& r, const Dims& s) { return Inputs{rnd(r, s.m, s.n, da), rnd(r, s.m, s.n, db)}; },
      [ref](const Dims&, const Inputs& in) { return emap2(in[0], in[1], ref); });
}

/// Input x (m×n) and a 1×n row.
template <class F>
Entry row_op(std::string name, F op, std::function<double(double, double)> ref) {
  return entry(
      std::move(name), [op](const Dims&, const auto& x) { return op(x[0], x[1]); },
      [](Rng& r, const Dims& s) { return Inputs{rnd(r, s.m, s.n, normal()), rnd(r, 1, s.n, normal())}; },
      [ref](const Dims& d, const Inputs& in) {
        Array<double> y = in[0];
        for (std::size_t i = 0; i < d.m; ++i)
          for (std::size_t j = 0; j < d.n; ++j) y(i, j) = ref(in[0](i, j), in[1](0, j));
        return y;
      });
}

Entry matmul_entry(bool ta, bool tb) {
  return entry(
      std::string("matmul(") + (ta ? "Aᵀ" : "A") + ", " + (tb ? "Bᵀ" : "B") + ")",
      [ta, tb](const Dims&, const auto& x) { return ad::matmul(x[0], x[1], ta, tb); },
      [ta, tb](Rng& r, const Dims& d) {  // op(A) is m×n, op(B) is n×p
        return Inputs{ta ? rnd(r, d.n, d.m, normal()) : rnd(r, d.m, d.n, normal()),
                      tb ? rnd(r, d.p, d.n, normal()) : rnd(r, d.n, d.p, normal())};
      },
      [ta, tb](const Dims&, const Inputs& in) { return naive_matmul(in[0], in[1], ta, tb); });
}

/// Reductions: f(sum over the group, group size) for groups = all, rows, cols.
enum class Axis { all, rows, cols };
template <class F>
Entry reduction(std::string name, F op, Axis axis, bool mean) {
  return entry(
      std::move(name), [op](const Dims&, const auto& x) { return op(x[0]); },
      [](Rng& r, const Dims& s) { return Inputs{rnd(r, s.m, s.n, normal())}; },
      [axis, mean](const Dims& d, const Inputs& in) {
        const std::size_t R = axis == Axis::cols ? 1 : axis == Axis::rows ? d.m : 1;
        const std::size_t C = axis == Axis::rows ? 1 : axis == Axis::cols ? d.n : 1;
        Array<double> y = zeros(R, C);
        for (std::size_t i = 0; i < d.m; ++i)
          for (std::size_t j = 0; j < d.n; ++j) y(axis == Axis::rows ? i : 0, axis == Axis::cols ? j : 0) += in[0](i, j);
        const double count = axis == Axis::all ? double(d.m * d.n) : axis == Axis::rows ? double(d.n) : double(d.m);
        if (mean) y /= count;
        return y;
      });
}

/// Columns of a by an index list: y[:, j] = a[:, idx[j]].
Array<double> take_ref(const Array<double>& a, const std::vector<int>& idx) {
  Array<double> y = zeros(a.shape()[0], idx.size());
  for (std::size_t i = 0; i < a.shape()[0]; ++i)
    for (std::size_t j = 0; j < idx.size(); ++j) y(i, j) = a(i, std::size_t(idx[j]));
  return y;
}

std::vector<Entry> build_table() {
  std::vector<Entry> t;
  const Dist N = normal(), N2 = normal(2.0), N3 = normal(3.0);
  const Dist nonzero = away_from_zero(0.5, 2.0), positive = uniform(0.2, 3.0);

  // elementwise arithmetic, named and as operators
  t.push_back(binary("add", [](auto a, auto b) { return ad::add(a, b); }, N, N, [](double a, double b) { return a + b; }));
  t.push_back(binary("sub", [](auto a, auto b) { return ad::sub(a, b); }, N, N, [](double a, double b) { return a - b; }));
  t.push_back(binary("mul", [](auto a, auto b) { return ad::mul(a, b); }, N, N, [](double a, double b) { return a * b; }));
  t.push_back(binary("div", [](auto a, auto b) { return ad::div(a, b); }, N, nonzero, [](double a, double b) { return a / b; }));
  t.push_back(unary("neg", [](auto a) { return ad::neg(a); }, N, [](double a) { return -a; }));
  t.push_back(binary("a + b", [](auto a, auto b) { return a + b; }, N, N, [](double a, double b) { return a + b; }));
  t.push_back(binary("a - b", [](auto a, auto b) { return a - b; }, N, N, [](double a, double b) { return a - b; }));
  t.push_back(binary("a * b", [](auto a, auto b) { return a * b; }, N, N, [](double a, double b) { return a * b; }));
  t.push_back(binary("a / b", [](auto a, auto b) { return a / b; }, N, nonzero, [](double a, double b) { return a / b; }));
  t.push_back(unary("-a", [](auto a) { return -a; }, N, [](double a) { return -a; }));

  // with a scalar, named and as operators
  t.push_back(unary("add_scalar", [](auto a) { return ad::add_scalar(a, 0.75); }, N, [](double a) { return a + 0.75; }));
  t.push_back(unary("mul_scalar", [](auto a) { return ad::mul_scalar(a, -1.5); }, N, [](double a) { return a * -1.5; }));
  t.push_back(unary("rsub_scalar", [](auto a) { return ad::rsub_scalar(2.0, a); }, N, [](double a) { return 2.0 - a; }));
  t.push_back(unary("rdiv_scalar", [](auto a) { return ad::rdiv_scalar(3.0, a); }, nonzero, [](double a) { return 3.0 / a; }));
  t.push_back(unary("a + s", [](auto a) { return a + 0.75; }, N, [](double a) { return a + 0.75; }));
  t.push_back(unary("s + a", [](auto a) { return 0.75 + a; }, N, [](double a) { return 0.75 + a; }));
  t.push_back(unary("a - s", [](auto a) { return a - 0.75; }, N, [](double a) { return a - 0.75; }));
  t.push_back(unary("s - a", [](auto a) { return 2.0 - a; }, N, [](double a) { return 2.0 - a; }));
  t.push_back(unary("a * s", [](auto a) { return a * -1.5; }, N, [](double a) { return a * -1.5; }));
  t.push_back(unary("s * a", [](auto a) { return -1.5 * a; }, N, [](double a) { return -1.5 * a; }));
  t.push_back(unary("a / s", [](auto a) { return a / 3.0; }, N, [](double a) { return a / 3.0; }));
  t.push_back(unary("s / a", [](auto a) { return 3.0 / a; }, nonzero, [](double a) { return 3.0 / a; }));

  // row broadcasts
  t.push_back(row_op("add_row", [](auto x, auto r) { return ad::add_row(x, r); }, [](double x, double r) { return x + r; }));
  t.push_back(row_op("mul_row", [](auto x, auto r) { return ad::mul_row(x, r); }, [](double x, double r) { return x * r; }));

  // matmul, all four transpose combinations
  for (bool ta : {false, true})
    for (bool tb : {false, true}) t.push_back(matmul_entry(ta, tb));

  // reductions
  t.push_back(reduction("sum", [](auto a) { return ad::sum(a); }, Axis::all, false));
  t.push_back(reduction("mean", [](auto a) { return ad::mean(a); }, Axis::all, true));
  t.push_back(reduction("row_sums", [](auto a) { return ad::row_sums(a); }, Axis::rows, false));
  t.push_back(reduction("row_means", [](auto a) { return ad::row_means(a); }, Axis::rows, true));
  t.push_back(reduction("col_sums", [](auto a) { return ad::col_sums(a); }, Axis::cols, false));
  t.push_back(reduction("col_means", [](auto a) { return ad::col_means(a); }, Axis::cols, true));

  // elementwise functions (kinked ones on inputs away from their kinks)
  const Dist off_kink = avoiding(N2, {0.0}, 0.05);
  t.push_back(unary("exp", [](auto a) { return ad::exp(a); }, N, [](double a) { return std::exp(a); }));
  t.push_back(unary("log", [](auto a) { return ad::log(a); }, positive, [](double a) { return std::log(a); }));
  t.push_back(unary("tanh", [](auto a) { return ad::tanh(a); }, N2, [](double a) { return std::tanh(a); }));
  t.push_back(unary("sigmoid", [](auto a) { return ad::sigmoid(a); }, N3, [](double a) { return 1 / (1 + std::exp(-a)); }));
  t.push_back(unary("relu", [](auto a) { return ad::relu(a); }, off_kink, [](double a) { return a > 0 ? a : 0.0; }));
  t.push_back(unary("leaky_relu", [](auto a) { return ad::leaky_relu(a); }, off_kink,
                    [](double a) { return a > 0 ? a : 0.01 * a; }));
  t.push_back(unary("leaky_relu(0.2)", [](auto a) { return ad::leaky_relu(a, 0.2); }, off_kink,
                    [](double a) { return a > 0 ? a : 0.2 * a; }));
  t.push_back(unary("softplus", [](auto a) { return ad::softplus(a); }, N3,
                    [](double a) { return act_ref(Activation::softplus, a, 0); }));
  t.push_back(unary("elu", [](auto a) { return ad::elu(a); }, off_kink, [](double a) { return a > 0 ? a : std::expm1(a); }));
  t.push_back(unary("elu(0.5)", [](auto a) { return ad::elu(a, 0.5); }, off_kink,
                    [](double a) { return a > 0 ? a : 0.5 * std::expm1(a); }));
  t.push_back(unary("square", [](auto a) { return ad::square(a); }, N, [](double a) { return a * a; }));
  t.push_back(unary("sqrt", [](auto a) { return ad::sqrt(a); }, positive, [](double a) { return std::sqrt(a); }));
  t.push_back(unary("pow(a, 2.5)", [](auto a) { return ad::pow(a, 2.5); }, positive, [](double a) { return std::pow(a, 2.5); }));
  t.push_back(unary("pow(a, -1.5)", [](auto a) { return ad::pow(a, -1.5); }, positive,
                    [](double a) { return std::pow(a, -1.5); }));
  t.push_back(unary("pow(a, 3), a of either sign", [](auto a) { return ad::pow(a, 3.0); }, N,
                    [](double a) { return a * a * a; }));
  t.push_back(unary("clamp(a, -0.5, 0.7)", [](auto a) { return ad::clamp(a, -0.5, 0.7); }, avoiding(N, {-0.5, 0.7}, 0.02),
                    [](double a) { return std::min(std::max(a, -0.5), 0.7); }));
  t.push_back(unary("soft_clamp(a, 1.5)", [](auto a) { return ad::soft_clamp(a, 1.5); }, N3,
                    [](double a) { return 1.5 * std::tanh(a / 1.5); }));
  for (Activation act : kActivations)
    t.push_back(unary(std::string("activation(") + ad::activation_name(act) + ")",
                      [act](auto a) { return ad::activation(a, act); }, has_kink(act) ? off_kink : N2,
                      [act](double a) { return act_ref(act, a, default_slope(act)); }));

  // columns
  auto one_input = [](Rng& r, const Dims& s) { return Inputs{rnd(r, s.m, s.n, normal())}; };
  t.push_back(entry(
      "take_cols (distinct)", [](const Dims& d, const auto& x) { return ad::take_cols(x[0], d.take); }, one_input,
      [](const Dims& d, const Inputs& in) { return take_ref(in[0], d.take); }));
  t.push_back(entry(
      "take_cols (repeated)", [](const Dims& d, const auto& x) { return ad::take_cols(x[0], d.take_rep); }, one_input,
      [](const Dims& d, const Inputs& in) { return take_ref(in[0], d.take_rep); }));
  t.push_back(entry(
      "scatter_cols", [](const Dims& d, const auto& x) { return ad::scatter_cols(x[0], x[1], d.scatter); },
      [](Rng& r, const Dims& d) { return Inputs{rnd(r, d.m, d.n, normal()), rnd(r, d.m, d.scatter.size(), normal())}; },
      [](const Dims& d, const Inputs& in) {
        Array<double> y = in[0];
        for (std::size_t i = 0; i < d.m; ++i)
          for (std::size_t j = 0; j < d.scatter.size(); ++j) y(i, std::size_t(d.scatter[j])) = in[1](i, j);
        return y;
      }));
  t.push_back(entry(
      "concat_cols", [](const Dims&, const auto& x) { return ad::concat_cols(x[0], x[1]); },
      [](Rng& r, const Dims& d) { return Inputs{rnd(r, d.m, d.n, normal()), rnd(r, d.m, 3, normal())}; },
      [](const Dims& d, const Inputs& in) {
        Array<double> y = zeros(d.m, d.n + 3);
        for (std::size_t i = 0; i < d.m; ++i)
          for (std::size_t j = 0; j < d.n + 3; ++j) y(i, j) = j < d.n ? in[0](i, j) : in[1](i, j - d.n);
        return y;
      }));
  t.push_back(entry(
      "slice_cols", [](const Dims& d, const auto& x) { return ad::slice_cols(x[0], d.slice_start, d.slice_count); },
      one_input,
      [](const Dims& d, const Inputs& in) {
        Array<double> y = zeros(d.m, d.slice_count);
        for (std::size_t i = 0; i < d.m; ++i)
          for (std::size_t j = 0; j < d.slice_count; ++j) y(i, j) = in[0](i, d.slice_start + j);
        return y;
      }));

  // fused dense layers, with and without bias, with every activation
  for (bool bias : {true, false}) {
    const std::string b = bias ? ", b" : ", no bias";
    t.push_back(entry(
        "linear(x, W" + b + ")",
        [bias](const Dims&, const auto& x) {
          using V = typename std::decay_t<decltype(x)>::value_type;
          return ad::linear(x[0], x[1], bias ? x[2] : V{});
        },
        linear_inputs(bias, false), [](const Dims&, const Inputs& in) { return linear_ref(in); }));
    for (Activation act : kActivations)
      t.push_back(entry(
          std::string("linear_act(x, W") + b + ", " + ad::activation_name(act) + ")",
          [bias, act](const Dims&, const auto& x) {
            using V = typename std::decay_t<decltype(x)>::value_type;
            return ad::linear_act(x[0], x[1], bias ? x[2] : V{}, act);
          },
          linear_inputs(bias, has_kink(act)),
          [act](const Dims&, const Inputs& in) {
            return emap(linear_ref(in), [act](double z) { return act_ref(act, z, default_slope(act)); });
          }));
  }

  // rational-quadratic splines on [−3, 3], inputs inside and outside the box (away from ±3)
  for (const auto& [bins, inverse] : {std::pair<int, bool>{5, false}, {3, true}}) {
    t.push_back(entry(
        std::string(inverse ? "rq_spline inverse" : "rq_spline") + ", " + std::to_string(bins) + " bins",
        [bins = bins, inverse = inverse](const Dims&, const auto& x) { return ad::rq_spline(x[0], x[1], bins, 3.0, inverse); },
        [bins = bins](Rng& r, const Dims& d) {
          return Inputs{rnd(r, d.m, d.n, avoiding(uniform(-4, 4), {-3.0, 3.0}, 0.01)),
                        rnd(r, d.m, d.n * std::size_t(3 * bins - 1), normal(0.5))};
        },
        [bins = bins, inverse = inverse](const Dims&, const Inputs& in) {
          return spline_ref::apply(in[0], in[1], bins, 3.0, inverse);
        }));
  }

  // custom ops
  t.push_back(entry(
      "custom: a ⊙ b + sin(a)", [](const Dims&, const auto& x) {
        using T = typename std::decay_t<decltype(x)>::value_type::scalar_type;
        return ad::custom(sin_mul<T>(), x[0], x[1]);
      },
      [](Rng& r, const Dims& d) { return Inputs{rnd(r, d.m, d.n, normal(2)), rnd(r, d.m, d.n, normal())}; },
      [](const Dims&, const Inputs& in) {
        return emap2(in[0], in[1], [](double a, double b) { return a * b + std::sin(a); });
      }));
  t.push_back(entry(
      "custom (3 inputs): a ⊙ b − c²", [](const Dims&, const auto& x) {
        using T = typename std::decay_t<decltype(x)>::value_type::scalar_type;
        return ad::custom(mul_sub_sq<T>(), x[0], x[1], x[2]);
      },
      [](Rng& r, const Dims& d) {
        return Inputs{rnd(r, d.m, d.n, normal()), rnd(r, d.m, d.n, normal()), rnd(r, d.m, d.n, normal())};
      },
      [](const Dims&, const Inputs& in) {
        Array<double> y = in[0];
        for (std::size_t i = 0; i < y.size(); ++i)
          y.data()[i] = in[0].data()[i] * in[1].data()[i] - in[2].data()[i] * in[2].data()[i];
        return y;
      }));

  // a composition in which a is used three times
  t.push_back(entry(
      "composite: row_means(exp(soft_clamp(a, 2)) ⊙ a − a ⊘ (b² + 1))",
      [](const Dims&, const auto& x) {
        const auto a = x[0], b = x[1];
        return ad::row_means(ad::exp(ad::soft_clamp(a, 2.0)) * a - a / (b * b + 1.0));
      },
      [](Rng& r, const Dims& d) { return Inputs{rnd(r, d.m, d.n, normal()), rnd(r, d.m, d.n, normal())}; },
      [](const Dims& d, const Inputs& in) {
        Array<double> y = zeros(d.m, 1);
        for (std::size_t i = 0; i < d.m; ++i) {
          for (std::size_t j = 0; j < d.n; ++j) {
            const double a = in[0](i, j), b = in[1](i, j);
            y(i, 0) += std::exp(2 * std::tanh(a / 2)) * a - a / (b * b + 1);
          }
          y(i, 0) /= double(d.n);
        }
        return y;
      }));
  // Last, so that the entries above draw the same inputs as before it existed.
  // dropout under a fixed stream (seed 77, this tape's rows start at batch row 5): a fixed mask.
  t.push_back(entry(
      "dropout(a, 0.25)",
      [](const Dims&, const auto& x) {
        x[0].tape->set_dropout_stream(77, 5);
        return ad::dropout(x[0], 0.25);
      },
      [](Rng& r, const Dims& s) { return Inputs{rnd(r, s.m, s.n, normal())}; },
      [](const Dims& d, const Inputs& in) {
        Array<double> y = in[0];
        for (std::size_t i = 0; i < d.m; ++i)
          for (std::size_t j = 0; j < d.n; ++j) y(i, j) = ad::dropout_keeps(77, 0, 5 + i, j, 0.25) ? y(i, j) / 0.75 : 0.0;
        return y;
      }));
  // (Entries draw their inputs from one stream per shape: a new one goes last, so that the
  // others keep the inputs they have always been checked on.)
  t.push_back(entry(
      "sum_sq_diff", [](const Dims&, const auto& x) { return ad::sum_sq_diff(x[0], x[1]); },
      [](Rng& r, const Dims& d) { return Inputs{rnd(r, d.m, d.n, normal()), rnd(r, d.m, d.n, normal())}; },
      [](const Dims& d, const Inputs& in) {
        Array<double> y = zeros(1, 1);
        for (std::size_t i = 0; i < d.m; ++i)
          for (std::size_t j = 0; j < d.n; ++j) y(0, 0) += (in[0](i, j) - in[1](i, j)) * (in[0](i, j) - in[1](i, j));
        return y;
      }));
  return t;
}

const std::vector<Entry>& table() {
  static const std::vector<Entry> t = build_table();
  return t;
}

std::string shape_str(std::size_t m, std::size_t n) { return std::to_string(m) + "×" + std::to_string(n); }

/// Every entry of the table through ad::gradcheck in float64 at one shape.
void gradcheck_table(std::size_t m, std::size_t n) {
  const Dims d = make_dims(m, n);
  Rng rng(1000 + 97 * m + n);
  ad::GradcheckOptions opt;
  opt.rtol = 1e-6;
  opt.seed = 11;
  for (const Entry& e : table()) {
    INFO("op: ", e.name, ", shape ", shape_str(m, n));
    const ad::GradcheckResult r = ad::gradcheck(
        [&](Tape<double>&, const std::vector<Var<double>>& x) { return e.f64(d, x); }, e.make(rng, d), opt);
    CHECK_MESSAGE(r.ok, r.report);
    CHECK(r.compared > 0);
  }
}

template <class T>
Array<T> cast(const Array<double>& a) {
  Array<T> b(typename Array<T>::shape_type{a.shape()[0], a.shape()[1]});
  for (std::size_t i = 0; i < a.size(); ++i) b.data()[i] = static_cast<T>(a.data()[i]);
  return b;
}

/// Rounds every entry to the nearest float, so both precisions see the same numbers.
void round_to_float(Array<double>& a) {
  for (double& v : a) v = double(float(v));
}

using test_compare::compare;
using test_compare::Worst;

bool same_bits(const void* a, const void* b, std::size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

}  // namespace

// ================================================================ the table
TEST_CASE("op table: every Op (but leaf/param) is recorded by some entry") {
  REQUIRE(std::size_t(Op::count_) > 2);
  const Dims d = make_dims(3, 17);
  Rng rng(5);
  std::set<Op> seen;
  for (const Entry& e : table()) {
    Tape<double> tape;
    std::vector<Var<double>> vars;
    for (const Array<double>& x : e.make(rng, d)) vars.push_back(tape.variable(x));
    e.f64(d, vars);
    for (std::size_t i = 0; i < tape.size(); ++i) seen.insert(tape.node(i).op);
  }
  int missing = 0;
  for (std::size_t k = 0; k < std::size_t(Op::count_); ++k) {
    const Op op = Op(k);
    if (op == Op::leaf || op == Op::param) continue;
    INFO("op without an entry in the gradient table: ", ad::op_name(op));
    CHECK(seen.count(op) == 1);
    missing += seen.count(op) == 0;
  }
  CHECK(missing == 0);
}

TEST_CASE("op names: one per Op, distinct, in the enum's order (both come from autodiff/ops.def)") {
  std::set<std::string> names;
  for (std::size_t k = 0; k < std::size_t(Op::count_); ++k) {
    CHECK(ad::kOpNames[k].first == Op(k));
    names.insert(ad::op_name(Op(k)));
  }
  CHECK(names.size() == std::size_t(Op::count_));
  CHECK(names.count("?") == 0);
  CHECK(std::string(ad::op_name(Op::slice_cols)) == "slice_cols");
  CHECK(std::string(ad::op_name(Op::count_)) == "?");
}

TEST_CASE("op table: float64 gradients match central differences (rtol 1e-6), 1×1") { gradcheck_table(1, 1); }
TEST_CASE("op table: float64 gradients match central differences (rtol 1e-6), 1×19") { gradcheck_table(1, 19); }
TEST_CASE("op table: float64 gradients match central differences (rtol 1e-6), 19×1") { gradcheck_table(19, 1); }
TEST_CASE("op table: float64 gradients match central differences (rtol 1e-6), 3×17") { gradcheck_table(3, 17); }
TEST_CASE("op table: float64 gradients match central differences (rtol 1e-6), 4×16") { gradcheck_table(4, 16); }
TEST_CASE("op table: float64 gradients match central differences (rtol 1e-6), 5×33") { gradcheck_table(5, 33); }

TEST_CASE("op table: float64 forward values equal independent reference formulas") {
  for (const auto& shape : kShapes) {
    const std::size_t m = shape.first, n = shape.second;  // (not a structured binding: clang 14 cannot capture those)
    const Dims d = make_dims(m, n);
    Rng rng(2000 + 97 * m + n);
    for (const Entry& e : table()) {
      INFO("op: ", e.name, ", shape ", shape_str(m, n));
      const Inputs in = e.make(rng, d);
      Tape<double> tape;
      std::vector<Var<double>> vars;
      for (const Array<double>& x : in) vars.push_back(tape.constant(x));
      const Var<double> y = e.f64(d, vars);
      const Array<double> want = e.ref(d, in);
      REQUIRE(y.rows() == want.shape()[0]);
      REQUIRE(y.cols() == want.shape()[1]);
      const Worst w = compare(y.value(), want, 1e-12);
      INFO("worst entry ", w.at, ": got ", w.got, ", reference ", w.want);
      CHECK(w.ratio <= 1.0);
    }
  }
}

TEST_CASE("dense layers wide enough for the packed GEMM: values and gradients") {
  // 40 rows × 20 inputs → 70 outputs goes to the packed kernel (the op table's own shapes
  // have 7 outputs and take OpenBLAS's or the skinny kernels).
  Dims d = make_dims(40, 20);
  d.p = 70;
  REQUIRE(ad::kern::gemm_kernel<double>(false, true, 40, 70, 20) == ad::kern::GemmKernel::packed);
  REQUIRE(ad::kern::gemm_kernel<float>(false, true, 40, 70, 20) == ad::kern::GemmKernel::packed);
  Rng rng(4242);
  int checked = 0;
  for (const Entry& e : table()) {
    if (e.name.rfind("linear", 0) != 0 || e.name.find("elu") != std::string::npos) continue;  // no kinks here
    INFO("op: ", e.name);
    Inputs in = e.make(rng, d);
    for (Array<double>& x : in) round_to_float(x);
    const Array<double> want = e.ref(d, in);
    Tape<double> t64;
    Tape<float> t32;
    std::vector<Var<double>> v64;
    std::vector<Var<float>> v32;
    for (const Array<double>& x : in) v64.push_back(t64.constant(x)), v32.push_back(t32.constant(cast<float>(x)));
    const Worst w64 = compare(e.f64(d, v64).value(), want, 1e-12);
    const Worst w32 = compare(e.f32(d, v32).value(), want, 2e-6);
    INFO("float64 worst entry ", w64.at, ": got ", w64.got, ", reference ", w64.want);
    INFO("float32 worst entry ", w32.at, ": got ", w32.got, ", reference ", w32.want);
    CHECK(w64.ratio <= 1.0);
    CHECK(w32.ratio <= 1.0);
    ad::GradcheckOptions opt;
    opt.rtol = 1e-6;
    opt.seed = 12;
    const ad::GradcheckResult r = ad::gradcheck(
        [&](Tape<double>&, const std::vector<Var<double>>& x) { return e.f64(d, x); }, in, opt);
    CHECK_MESSAGE(r.ok, r.report);
    ++checked;
  }
  CHECK(checked == 10);  // linear, and linear_act with identity, tanh, sigmoid, softplus; with and without bias
}

TEST_CASE("op table: float32 forward values and gradients agree with float64") {
  double worst_value = 0, worst_grad = 0;
  for (const auto& shape : kShapes) {
    const std::size_t m = shape.first, n = shape.second;  // (not a structured binding: clang 14 cannot capture those)
    const Dims d = make_dims(m, n);
    Rng rng(3000 + 97 * m + n);
    for (const Entry& e : table()) {
      INFO("op: ", e.name, ", shape ", shape_str(m, n));
      Inputs in = e.make(rng, d);
      for (Array<double>& x : in) round_to_float(x);

      Tape<double> t64;
      Tape<float> t32;
      std::vector<Var<double>> v64;
      std::vector<Var<float>> v32;
      for (const Array<double>& x : in) {
        v64.push_back(t64.variable(x));
        v32.push_back(t32.variable(cast<float>(x)));
      }
      const Var<double> y64 = e.f64(d, v64);
      const Var<float> y32 = e.f32(d, v32);
      REQUIRE(y32.value().shape() == y64.value().shape());
      const Worst wv = compare(y32.value(), y64.value(), 1e-5);
      {
        INFO("worst value entry ", wv.at, ": float32 ", wv.got, ", float64 ", wv.want);
        CHECK(wv.ratio <= 1.0);
      }
      worst_value = std::max(worst_value, wv.ratio);

      Array<double> seed = rnd(rng, y64.rows(), y64.cols(), normal());
      round_to_float(seed);
      t64.backward(y64, seed);
      t32.backward(y32, cast<float>(seed));
      for (std::size_t k = 0; k < in.size(); ++k) {
        const Worst wg = compare(v32[k].grad(), v64[k].grad(), 1e-5);
        INFO("input ", k, ", worst gradient entry ", wg.at, ": float32 ", wg.got, ", float64 ", wg.want);
        CHECK(wg.ratio <= 1.0);
        worst_grad = std::max(worst_grad, wg.ratio);
      }
    }
  }
  MESSAGE("float32 vs float64, worst error / tolerance: values ", worst_value, ", gradients ", worst_grad);
}

TEST_CASE("op table: every VJP adds to an input's adjoint instead of overwriting it") {
  // out = Σ y ⊙ U + Σ_k Σ x_k ⊙ V_k, where the second term is recorded after y, so
  // the reverse pass reaches it first and x_k's adjoint already holds V_k when
  // the op's VJP runs. The gradient must then be V_k + Jᵀ U, with Jᵀ U from a
  // plain seeded pass.
  for (const auto& shape : kShapes) {
    const std::size_t m = shape.first, n = shape.second;  // (not a structured binding: clang 14 cannot capture those)
    const Dims d = make_dims(m, n);
    Rng rng(4000 + 97 * m + n);
    for (const Entry& e : table()) {
      INFO("op: ", e.name, ", shape ", shape_str(m, n));
      const Inputs in = e.make(rng, d);
      Tape<double> t1, t2;
      std::vector<Var<double>> x1, x2;
      for (const Array<double>& x : in) {
        x1.push_back(t1.variable(x));
        x2.push_back(t2.variable(x));
      }
      const Var<double> y1 = e.f64(d, x1);
      const Array<double> u = rnd(rng, y1.rows(), y1.cols(), normal());
      t1.backward(y1, u);

      const Var<double> y2 = e.f64(d, x2);
      Var<double> out = ad::sum(y2 * t2.constant(u));
      Inputs v;
      for (std::size_t k = 0; k < in.size(); ++k) {
        v.push_back(rnd(rng, in[k].shape()[0], in[k].shape()[1], normal()));
        out = out + ad::sum(x2[k] * t2.constant(v[k]));
      }
      t2.backward(out);
      for (std::size_t k = 0; k < in.size(); ++k) {
        const Array<double>& g1 = x1[k].grad();
        const Array<double>& g2 = x2[k].grad();
        Worst w;
        for (std::size_t i = 0; i < g1.size(); ++i) {
          const double want = g1.data()[i] + v[k].data()[i];
          const double tol = 1e-12 * std::max({1.0, std::abs(g1.data()[i]), std::abs(v[k].data()[i])});
          const double ratio = std::abs(g2.data()[i] - want) / tol;
          if (!(ratio <= w.ratio)) w = {ratio, i, g2.data()[i], want};
        }
        INFO("input ", k, ", worst entry ", w.at, ": got ", w.got, ", want ", w.want);
        CHECK(w.ratio <= 1.0);
      }
    }
  }
}

// ================================================================ the checker itself
TEST_CASE("gradcheck rejects a wrong VJP and accepts the right one") {
  Rng rng(8);
  const Inputs in{rnd(rng, 3, 5, normal(2)), rnd(rng, 3, 5, normal())};
  WrongSinMul<double> wrong;
  SinMul<double> right;
  const ad::GradcheckResult bad = ad::gradcheck(
      [&](Tape<double>&, const std::vector<Var<double>>& x) { return ad::custom<double>(wrong, x[0], x[1]); }, in);
  CHECK_FALSE(bad.ok);
  CHECK(bad.report.find("input 0") != std::string::npos);
  CHECK(bad.max_rel_error > 1e-3);
  const ad::GradcheckResult good = ad::gradcheck(
      [&](Tape<double>&, const std::vector<Var<double>>& x) { return ad::custom<double>(right, x[0], x[1]); }, in);
  CHECK_MESSAGE(good.ok, good.report);
  CHECK(good.compared == 2 * 15 + 3);  // every entry of both inputs, then 3 projections
}

TEST_CASE("gradcheck_params: a two-layer network's parameter gradients") {
  Rng rng(9);
  Parameter<double> w1("w1", 6, 4), b1("b1", 1, 6), w2("w2", 2, 6), s("s", 1, 2);
  for (Parameter<double>* p : {&w1, &b1, &w2, &s}) rng.fill_normal(p->value.data(), p->value.size(), 0.0, 0.7);
  const Array<double> x = rnd(rng, 5, 4, normal());
  auto f = [&](Tape<double>& t) {
    const Var<double> h = ad::linear_act(t.constant(x), t.param(w1), t.param(b1), Activation::tanh);
    const Var<double> y = ad::mul_row(ad::linear(h, t.param(w2), Var<double>{}), t.param(s));
    return ad::mean(ad::softplus(y)) + ad::sum(ad::square(t.param(s)));
  };
  ad::GradcheckOptions opt;
  opt.rtol = 1e-6;
  const ad::GradcheckResult r = ad::gradcheck_params(f, {&w1, &b1, &w2, &s}, opt);
  CHECK_MESSAGE(r.ok, r.report);
  CHECK(r.compared == 24 + 6 + 12 + 2 + 3);
}

// ================================================================ the tape
TEST_CASE("a value used twice: y = x⊙x + x has gradient 2x + 1 exactly") {
  // dyadic values, so every sum and product along the way is exact
  const Array<double> x0{{0.5, -1.25, 3.0}, {-0.375, 0.0, 7.5}};
  Tape<double> tape;
  const Var<double> x = tape.variable(x0);
  const Var<double> y = ad::sum(x * x + x);
  tape.backward(y);
  for (std::size_t i = 0; i < x0.size(); ++i) {
    CAPTURE(i);
    CHECK(x.grad().data()[i] == 2 * x0.data()[i] + 1);
  }
  double expect = 0;
  for (double v : x0) expect += v * v + v;
  CHECK(y.item() == expect);

  // the same through matmul: y = Σ (x xᵀ) has gradient 2 · (column sums of x) broadcast over rows
  Tape<double> t2;
  const Var<double> a = t2.variable(x0);
  t2.backward(ad::sum(ad::matmul(a, a, false, true)));
  for (std::size_t i = 0; i < 2; ++i)
    for (std::size_t j = 0; j < 3; ++j) CHECK(a.grad()(i, j) == 2 * (x0(0, j) + x0(1, j)));
}

TEST_CASE("a value that does not reach the output gets zero gradient") {
  Rng rng(3);
  const Array<double> x0 = rnd(rng, 4, 5, normal()), z0 = rnd(rng, 4, 5, normal());
  Tape<double> tape;
  const Var<double> x = tape.variable(x0), z = tape.variable(z0);
  const Var<double> unused = ad::exp(z) * x;  // consumes x and z but is not part of the output
  const Var<double> out = ad::sum(ad::square(x));
  tape.backward(out);
  for (std::size_t i = 0; i < x0.size(); ++i) CHECK(x.grad().data()[i] == 2 * x0.data()[i]);
  CHECK(z.grad().shape() == z0.shape());
  CHECK(std::all_of(z.grad().begin(), z.grad().end(), [](double g) { return g == 0; }));
  CHECK(std::all_of(unused.grad().begin(), unused.grad().end(), [](double g) { return g == 0; }));

  // A second backward from another output on the same tape: x's adjoint from the
  // first pass must not leak into the second.
  const Var<double> out2 = ad::sum(z);
  tape.backward(out2);
  CHECK(std::all_of(x.grad().begin(), x.grad().end(), [](double g) { return g == 0; }));
  CHECK(std::all_of(z.grad().begin(), z.grad().end(), [](double g) { return g == 1; }));

  // An output that depends on no variable: backward does nothing, gradients are zero.
  const Var<double> c = tape.constant(x0);
  tape.backward(ad::sum(ad::exp(c)));
  CHECK(std::all_of(c.grad().begin(), c.grad().end(), [](double g) { return g == 0; }));
  CHECK(std::all_of(x.grad().begin(), x.grad().end(), [](double g) { return g == 0; }));
}

namespace {
/// One training-like step; returns every node value, the parameters' gradients and the loss, in order.
template <class T>
std::vector<std::vector<T>> tape_step(Tape<T>& t, const Array<T>& x, std::vector<Parameter<T>>& ps,
                                      const std::vector<int>& cols) {
  t.clear();
  for (Parameter<T>& p : ps) p.zero_grad();
  const Var<T> xs = ad::mul_row(t.constant(x), t.param(ps[3]));
  const Var<T> h = ad::linear_act(xs, t.param(ps[0]), t.param(ps[1]), Activation::elu);  // 6×4
  const Var<T> k = ad::take_cols(h, cols);
  const Var<T> sc = ad::scatter_cols(h, ad::tanh(k), cols);
  const Var<T> g = ad::matmul(sc, t.param(ps[2]), false, true);  // 6×3
  const Var<T> loss = ad::mean(ad::softplus(g)) + ad::sum(ad::square(ad::slice_cols(h, 1, 2))) * T(0.1) +
                      ad::sum(ad::log(ad::sigmoid(ad::col_means(g))));
  t.backward(loss);
  std::vector<std::vector<T>> out;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const Array<T>& v = t.value(std::int32_t(i));
    out.emplace_back(v.begin(), v.end());
  }
  for (Parameter<T>& p : ps) out.emplace_back(p.grad.begin(), p.grad.end());
  return out;
}

template <class T>
void check_clear_and_reuse() {
  Rng rng(4);
  std::vector<Parameter<T>> ps;
  ps.emplace_back("W", 4, 5);
  ps.emplace_back("b", 1, 4);
  ps.emplace_back("V", 3, 4);
  ps.emplace_back("s", 1, 5);
  for (Parameter<T>& p : ps) rng.fill_normal(p.value.data(), p.value.size(), 0.0, 0.8);
  const Array<T> x = cast<T>(rnd(rng, 6, 5, normal()));
  const std::vector<int> cols{3, 0};

  Tape<T> tape;
  const auto first = tape_step(tape, x, ps, cols);
  const std::size_t bytes = tape.bytes_reserved(), nodes = tape.size();
  std::vector<const T*> where;
  for (std::size_t i = 0; i < nodes; ++i) where.push_back(tape.node(i).value.data());
  CHECK(bytes > 0);
  for (int rep = 0; rep < 3; ++rep) {
    CAPTURE(rep);
    const auto again = tape_step(tape, x, ps, cols);
    CHECK(tape.size() == nodes);
    CHECK(tape.bytes_reserved() == bytes);
    REQUIRE(again.size() == first.size());
    for (std::size_t i = 0; i < first.size(); ++i) {
      CAPTURE(i);
      REQUIRE(again[i].size() == first[i].size());
      CHECK(same_bits(again[i].data(), first[i].data(), first[i].size() * sizeof(T)));
    }
    for (std::size_t i = 0; i < nodes; ++i) CHECK(tape.node(i).value.data() == where[i]);  // nothing reallocated
  }
  // the gradients are not all zero (the comparison above is not vacuous)
  for (std::size_t k = 0; k < ps.size(); ++k) {
    CAPTURE(k);
    CHECK(std::any_of(ps[k].grad.begin(), ps[k].grad.end(), [](T g) { return g != T(0); }));
  }
}
}  // namespace

TEST_CASE("clear() and re-recording gives bitwise identical values and gradients without growing the tape") {
  SUBCASE("float64") { check_clear_and_reuse<double>(); }
  SUBCASE("float32") { check_clear_and_reuse<float>(); }
}

TEST_CASE("value pool: two recordings of different shapes in turn hold, per size, the most either needs and allocate nothing after the first of each") {
  // Pass A (8 rows): x 8×4, tanh 8×4, dropout 8×4 with its 8×4 mask (scratch), w 4×6, x·w 8×6, sum 1×1.
  // Pass B (6 rows): x 6×4, exp 6×4, w 4×8, x·w 6×8, sum 1×1, u 2×16, tanh(u) 2×16, v 8×4.
  // Arrays by size (elements): A = 32×4, 24, 48, 1 (201); B = 24×2, 32×4, 48, 1 (225). Per size
  // the most either needs: 32×4, 24×2, 48, 1 = 225 elements, = max(A, B), where one slot per node
  // of whichever pass used it last would keep both (and reallocate at every turn).
  Rng rng(12);
  const Array<double> xa = rnd(rng, 8, 4, normal()), wa = rnd(rng, 4, 6, normal()), xb = rnd(rng, 6, 4, normal());
  const Array<double> wb = rnd(rng, 4, 8, normal()), u = rnd(rng, 2, 16, normal()), v = rnd(rng, 8, 4, normal());
  auto pass_a = [&](Tape<double>& t) {
    t.set_dropout_stream(5, 0);
    return ad::sum(ad::matmul(ad::dropout(ad::tanh(t.constant(xa)), 0.5), t.constant(wa))).item();
  };
  auto pass_b = [&](Tape<double>& t) {
    const double s = ad::sum(ad::matmul(ad::exp(t.constant(xb)), t.constant(wb))).item();
    ad::tanh(t.constant(u));
    t.constant(v);
    return s;
  };
  Tape<double> fresh_a, fresh_b;  // the values on tapes of their own
  const double a0 = pass_a(fresh_a), b0 = pass_b(fresh_b);
  const std::size_t max_bytes = 225 * sizeof(double), sum_bytes = (201 + 225) * sizeof(double);

  Tape<double> t;
  t.set_pool_values(true);
  std::set<const double*> arrays;  // every value or scratch array the recordings used
  auto used = [&] {
    std::set<const double*> now;
    for (std::size_t i = 0; i < t.size(); ++i) {
      if (t.node(i).value.size()) now.insert(t.node(i).value.data());
      if (t.node(i).scratch.size()) now.insert(t.node(i).scratch.data());
    }
    return now;
  };
  CHECK(pass_a(t) == a0);
  CHECK(t.bytes_reserved() == 201 * sizeof(double));
  for (const double* p : used()) arrays.insert(p);
  t.clear();
  CHECK(pass_b(t) == b0);
  CHECK(t.bytes_reserved() == max_bytes);  // one more 6×4 than A had; every other array reused
  for (const double* p : used()) arrays.insert(p);
  CHECK(arrays.size() == 8);
  for (int turn = 0; turn < 6; ++turn) {
    CAPTURE(turn);
    t.clear();
    CHECK((turn % 2 == 0 ? pass_a(t) : pass_b(t)) == (turn % 2 == 0 ? a0 : b0));  // bitwise
    CHECK(t.bytes_reserved() == max_bytes);
    CHECK(t.value_bytes() + (turn % 2 == 0 ? 32 : 0) * sizeof(double) == max_bytes);  // A's mask is scratch
    for (const double* p : used()) CHECK(arrays.count(p) == 1);  // nothing allocated: the same 8 arrays
  }
  CHECK(max_bytes < sum_bytes);
}

TEST_CASE("mismatched shapes throw ShapeError naming the op and both shapes") {
  Tape<double> t;
  const Var<double> a = t.variable(zeros(3, 4)), b = t.variable(zeros(5, 4)), r = t.variable(zeros(2, 4));
  const Var<double> w = t.variable(zeros(6, 3)), bias = t.variable(zeros(1, 6));
  const Var<double> src = t.variable(zeros(3, 3)), src4 = t.variable(zeros(3, 4));
  const std::size_t before = t.size();
  struct Bad {
    std::string op;
    std::function<void()> call;
    std::vector<std::string> shapes;
  };
  const std::vector<int> cols{0, 1}, out_of_range{1, 4}, twice_sorted{0, 2, 2}, twice_unsorted{3, 1, 0, 1}, out_of_range3{0, 4, 1};
  const std::vector<Bad> cases = {
      {"add", [&] { ad::add(a, b); }, {"3×4", "5×4"}},
      {"sub", [&] { (void)(a - b); }, {"3×4", "5×4"}},
      {"mul", [&] { (void)(a * b); }, {"3×4", "5×4"}},
      {"div", [&] { ad::div(b, a); }, {"5×4", "3×4"}},
      {"add_row", [&] { ad::add_row(a, r); }, {"3×4", "2×4"}},
      {"mul_row", [&] { ad::mul_row(a, b); }, {"3×4", "5×4"}},
      {"matmul", [&] { ad::matmul(a, b); }, {"3×4", "5×4"}},
      {"matmul", [&] { ad::matmul(a, b, true, false); }, {"3×4", "5×4"}},
      {"concat_cols", [&] { ad::concat_cols(a, b); }, {"3×4", "5×4"}},
      {"scatter_cols", [&] { ad::scatter_cols(a, b, cols); }, {"3×4", "5×4"}},
      {"scatter_cols", [&] { ad::scatter_cols(a, src, twice_sorted); }, {"index 2 appears twice"}},
      {"scatter_cols", [&] { ad::scatter_cols(a, src4, twice_unsorted); }, {"index 1 appears twice"}},
      {"scatter_cols", [&] { ad::scatter_cols(a, src, out_of_range3); }, {"index 4 out of range"}},
      {"take_cols", [&] { ad::take_cols(a, out_of_range); }, {"3×4", "index 4"}},
      {"slice_cols", [&] { ad::slice_cols(a, 3, 2); }, {"3×4"}},
      {"linear", [&] { ad::linear(a, w, Var<double>{}); }, {"3×4", "6×3"}},
      {"linear_act", [&] { ad::linear_act(a, b, bias, Activation::relu); }, {"3×4", "5×4", "1×6"}},
  };
  for (const Bad& c : cases) {
    INFO("op ", c.op);
    bool thrown = false;
    try {
      c.call();
    } catch (const ad::ShapeError& e) {
      thrown = true;
      const std::string msg = e.what();
      INFO("message: ", msg);
      CHECK(msg.rfind(c.op + ":", 0) == 0);  // starts with the op's name
      for (const std::string& s : c.shapes) {
        CAPTURE(s);
        CHECK(msg.find(s) != std::string::npos);
      }
    }
    CHECK(thrown);
    CHECK(t.size() == before);  // nothing committed
  }
  // the tape still works after the failures
  const Var<double> ok = ad::sum(a + a);
  t.backward(ok);
  CHECK(std::all_of(a.grad().begin(), a.grad().end(), [](double g) { return g == 2; }));
}

TEST_CASE("slice_cols keeps its columns as integers: exact past 2^24 in float, no wrap-around") {
  // A float holds every integer only up to 2^24: were start stored as a T, 2^24 + 1 would read
  // column 2^24.
  const std::size_t start = (std::size_t(1) << 24) + 1, n = start + 3;
  Array<float> x0({1, n});
  for (std::size_t j = 0; j < n; ++j) x0(0, j) = float(j % 7);
  Tape<float> t;
  const Var<float> x = t.variable(x0);
  const Var<float> y = ad::slice_cols(x, start, 2);
  CHECK(y.value()(0, 0) == x0(0, start));
  CHECK(y.value()(0, 1) == x0(0, start + 1));
  Array<float> seed({1, 2});
  seed(0, 0) = 1, seed(0, 1) = 2;
  t.backward(y, seed);
  CHECK(x.grad()(0, start - 1) == 0);
  CHECK(x.grad()(0, start) == 1);
  CHECK(x.grad()(0, start + 1) == 2);
  CHECK(x.grad()(0, start + 2) == 0);
  // start + count past SIZE_MAX wraps to a small number; it must still be refused.
  CHECK_THROWS_AS(ad::slice_cols(x, std::numeric_limits<std::size_t>::max(), 2), ad::ShapeError);
}

TEST_CASE("backward needs a seed for a non-scalar output, of the output's shape") {
  Rng rng(6);
  const Array<double> x0 = rnd(rng, 2, 3, normal());
  Tape<double> t;
  const Var<double> x = t.variable(x0);
  const Var<double> y = ad::exp(x);
  try {
    t.backward(y);
    FAIL("backward on a 2×3 output without a seed did not throw");
  } catch (const ad::ShapeError& e) {
    CHECK(std::string(e.what()).find("2×3") != std::string::npos);
  }
  CHECK_THROWS_AS(t.backward(y, zeros(3, 2)), ad::ShapeError);
  CHECK_THROWS_AS(y.item(), ad::ShapeError);

  const Array<double> seed = rnd(rng, 2, 3, normal());
  t.backward(y, seed);
  for (std::size_t i = 0; i < x0.size(); ++i)
    CHECK(x.grad().data()[i] == doctest::Approx(seed.data()[i] * std::exp(x0.data()[i])).epsilon(1e-14));

  Tape<double> other;
  CHECK_THROWS_AS(other.backward(ad::sum(y)), std::invalid_argument);  // an output on another tape
  t.clear();
  CHECK_THROWS_AS(ad::add(y, y), std::invalid_argument);  // a handle from before clear()
}

TEST_CASE("parameter gradients accumulate across backward calls until zero_grad") {
  Rng rng(10);
  Parameter<double> p("p", 2, 3);
  rng.fill_normal(p.value.data(), p.value.size());
  const Array<double> c = rnd(rng, 2, 3, normal()), x0 = rnd(rng, 2, 3, normal());
  auto all = [&](const Array<double>& g, double k) {
    for (std::size_t i = 0; i < g.size(); ++i) {
      CAPTURE(i);
      CHECK(g.data()[i] == k * c.data()[i]);  // c + c = 2c and 2c + c = fl(3c) exactly
    }
  };
  Tape<double> t;
  const Var<double> x = t.variable(x0);
  const Var<double> loss = ad::sum(t.param(p) * t.constant(c) + x * t.constant(c));
  t.backward(loss);
  all(p.grad, 1);
  all(x.grad(), 1);
  t.backward(loss);  // same recording, second pass
  all(p.grad, 2);
  all(x.grad(), 1);  // a tape variable's adjoint is per pass
  t.clear();
  t.backward(ad::sum(t.param(p) * t.constant(c)));  // a new recording
  all(p.grad, 3);
  p.zero_grad();
  all(p.grad, 0);
  t.clear();
  t.backward(ad::sum(t.param(p) * t.constant(c)));
  all(p.grad, 1);
  CHECK(ad::sum(t.param(p)).item() == doctest::Approx(std::accumulate(p.value.begin(), p.value.end(), 0.0)));
}

// ================================================================ forward values
namespace {
template <class T>
void check_extreme_activations() {
  const std::vector<double> xs{-1000, -100, -30, -1, 0, 1, 30, 100, 1000};
  Array<T> x0(typename Array<T>::shape_type{1, xs.size()});
  for (std::size_t i = 0; i < xs.size(); ++i) x0.data()[i] = T(xs[i]);
  const double rtol = std::is_same<T, float>::value ? 2e-6 : 1e-14;
  const double tiny = std::numeric_limits<T>::min();  // below this, exp(x) may flush to 0

  Tape<T> t;
  const Var<T> x = t.variable(x0);
  const Var<T> sp = ad::softplus(x), sg = ad::sigmoid(x), th = ad::tanh(x);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i];
    CAPTURE(v);
    const double got = sp.value().data()[i];
    CHECK(std::isfinite(got));
    CHECK(got >= 0);
    const double want = v > 0 ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v));  // = softplus, stably
    if (want < tiny) CHECK(got <= 2 * tiny);
    else CHECK(got == doctest::Approx(want).epsilon(rtol));
    const double s = sg.value().data()[i];
    CHECK(s >= 0);
    CHECK(s <= 1);
    const double s_want = 1 / (1 + std::exp(-v));
    if (s_want < tiny) CHECK(s <= 2 * tiny);
    else CHECK(s == doctest::Approx(s_want).epsilon(rtol));
    CHECK(th.value().data()[i] == doctest::Approx(std::tanh(v)).epsilon(rtol));
  }
  CHECK(sg.value().data()[4] == T(0.5));
  CHECK(sp.value().data()[4] == doctest::Approx(std::log(2.0)).epsilon(rtol));

  // d softplus / dx = sigmoid(x): finite and correct out to |x| = 1000
  t.backward(ad::sum(sp));
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i], g = x.grad().data()[i], want = 1 / (1 + std::exp(-v));
    CAPTURE(v);
    CHECK(std::isfinite(g));
    if (want < tiny) CHECK(std::abs(g) <= 2 * tiny);
    else CHECK(g == doctest::Approx(want).epsilon(std::is_same<T, float>::value ? 1e-5 : 1e-12));
  }
}
}  // namespace

TEST_CASE("softplus, sigmoid and tanh are finite and correct for large |x|") {
  SUBCASE("float64") { check_extreme_activations<double>(); }
  SUBCASE("float32") { check_extreme_activations<float>(); }
}

TEST_CASE("elu and leaky_relu with non-default α / slope: values and gradients against the formulas") {
  const Array<double> x0{{-3.0, -0.5, -1e-3, 1e-3, 0.25, 4.0, -20.0, 2.0, -1.0}};
  Tape<double> t;
  const Var<double> x = t.variable(x0);
  const Var<double> e = ad::elu(x, 0.5), l = ad::leaky_relu(x, 0.3);
  t.backward(ad::sum(e) + ad::sum(l) * 2.0);
  for (std::size_t i = 0; i < x0.size(); ++i) {
    const double v = x0.data()[i];
    CAPTURE(v);
    CHECK(e.value().data()[i] == doctest::Approx(v > 0 ? v : 0.5 * std::expm1(v)).epsilon(1e-14));
    CHECK(l.value().data()[i] == (v > 0 ? v : 0.3 * v));
    const double de = v > 0 ? 1 : 0.5 * std::exp(v), dl = v > 0 ? 1 : 0.3;
    CHECK(x.grad().data()[i] == doctest::Approx(de + 2 * dl).epsilon(1e-14));
  }

  // slope / α = 0 is allowed (gradient 0 on the negative side); a negative one would make
  // the output-based derivative wrong (y > 0 on both sides), so it is rejected.
  Tape<double> t0;
  const Var<double> z = t0.variable(x0);
  t0.backward(ad::sum(ad::leaky_relu(z, 0.0)) + ad::sum(ad::elu(z, 0.0)) * 3.0);
  for (std::size_t i = 0; i < x0.size(); ++i) CHECK(z.grad().data()[i] == (x0.data()[i] > 0 ? 4.0 : 0.0));
  const std::size_t before = t0.size();
  CHECK_THROWS_AS(ad::leaky_relu(z, -0.5), std::invalid_argument);
  CHECK_THROWS_AS(ad::elu(z, -1.0), std::invalid_argument);
  CHECK(t0.size() == before);
}

namespace {
template <class T>
void check_matmul_vs_naive() {
  Rng rng(12);
  const std::size_t m = 37, k = 29, n = 23;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      CAPTURE(ta);
      CAPTURE(tb);
      Array<double> a = ta ? rnd(rng, k, m, normal()) : rnd(rng, m, k, normal());
      Array<double> b = tb ? rnd(rng, n, k, normal()) : rnd(rng, k, n, normal());
      round_to_float(a);
      round_to_float(b);
      Tape<T> t;
      const Var<T> c = ad::matmul(t.constant(cast<T>(a)), t.constant(cast<T>(b)), ta, tb);
      REQUIRE(c.rows() == m);
      REQUIRE(c.cols() == n);
      const Array<double> want = naive_matmul(a, b, ta, tb);
      const Worst w = compare(c.value(), want, std::is_same<T, float>::value ? 1e-5 : 1e-13);
      INFO("worst entry ", w.at, ": got ", w.got, ", naive loop ", w.want);
      CHECK(w.ratio <= 1.0);
    }
}
}  // namespace

TEST_CASE("matmul equals a naive triple loop (37×29 by 29×23, all transposes)") {
  SUBCASE("float64") { check_matmul_vs_naive<double>(); }
  SUBCASE("float32") { check_matmul_vs_naive<float>(); }
}

TEST_CASE("a custom op sees null adjoints for inputs that need none") {
  Rng rng(13);
  const Array<double> a0 = rnd(rng, 3, 4, normal()), b0 = rnd(rng, 3, 4, normal());
  SinMul<double> op;
  Tape<double> t;
  const Var<double> a = t.variable(a0), b = t.constant(b0);
  const Var<double> y = ad::custom(op, a, b);
  CHECK(t.node(std::size_t(y.index)).op == Op::custom);
  t.backward(ad::sum(y));
  for (std::size_t i = 0; i < a0.size(); ++i)
    CHECK(a.grad().data()[i] == doctest::Approx(b0.data()[i] + std::cos(a0.data()[i])).epsilon(1e-14));
  CHECK(std::all_of(b.grad().begin(), b.grad().end(), [](double g) { return g == 0; }));
  CHECK_THROWS_AS(ad::custom(op, a, t.constant(zeros(2, 4))), ad::ShapeError);
}

// ================================================================ GEMM kernels
namespace {
/// C = α op(A) op(B) + β C as a kernel computes it (kern::gemm, or one kernel called directly).
template <class T>
using GemmFn = void (*)(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb,
                        T beta, T* c, int ldc);

/// gemm on one shape against a naive float64 loop, for β = 0 (C starts as NaN: it must not be
/// read), β = 1 and β = −0.5, with padded leading dimensions.
template <class T>
void check_gemm_run(bool ta, bool tb, int m, int n, int k, GemmFn<T> gemm, Rng& rng) {
  const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
  const int lda = a_cols + 3, ldb = b_cols + 2, ldc = n + 1;
  std::vector<double> a(std::size_t(a_rows) * lda), b(std::size_t(b_rows) * ldb);
  for (double& v : a) v = double(float(rng.normal()));  // representable in both precisions
  for (double& v : b) v = double(float(rng.normal()));
  const double alpha = 1.5;
  for (double beta : {0.0, 1.0, -0.5}) {
    CAPTURE(beta);
    std::vector<double> c0(std::size_t(m) * ldc);
    for (double& v : c0) v = beta == 0 ? std::numeric_limits<double>::quiet_NaN() : double(float(rng.normal()));
    std::vector<T> at(a.begin(), a.end()), bt(b.begin(), b.end()), ct(c0.begin(), c0.end());
    gemm(ta, tb, m, n, k, T(alpha), at.data(), lda, bt.data(), ldb, T(beta), ct.data(), ldc);
    double worst = 0;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double sum = 0, scale = 0;  // scale: Σ |terms|, what rounding errors are proportional to
        for (int p = 0; p < k; ++p) {
          const double t = (ta ? a[std::size_t(p) * lda + i] : a[std::size_t(i) * lda + p]) *
                           (tb ? b[std::size_t(j) * ldb + p] : b[std::size_t(p) * ldb + j]);
          sum += t;
          scale += std::abs(t);
        }
        const double old = c0[std::size_t(i) * ldc + j];
        const double want = alpha * sum + (beta == 0 ? 0.0 : beta * old);
        scale = alpha * scale + std::abs(beta * (beta == 0 ? 0.0 : old)) + 1e-300;
        const double err = std::abs(double(ct[std::size_t(i) * ldc + j]) - want) / scale;
        if (!(err <= worst)) worst = err;  // NaN sticks
      }
    CHECK(worst <= (std::is_same<T, float>::value ? 1e-6 : 1e-14));
    // the padding between rows of C is left alone
    for (int i = 0; i < m; ++i)
      for (int j = n; j < ldc; ++j) {
        const double v = double(ct[std::size_t(i) * ldc + j]), o = c0[std::size_t(i) * ldc + j];
        CHECK((v == o || (std::isnan(v) && std::isnan(o))));
      }
  }
}

/// kern::gemm picks `expect` for the shape, and computes it (check_gemm_run).
template <class T>
void check_gemm_shape(bool ta, bool tb, int m, int n, int k, ad::kern::GemmKernel expect, Rng& rng,
                      int caller_line = __builtin_LINE()) {
  CAPTURE(caller_line);
  CAPTURE(ta);
  CAPTURE(tb);
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  REQUIRE(ad::kern::gemm_kernel<T>(ta, tb, m, n, k) == expect);
  check_gemm_run<T>(ta, tb, m, n, k, &ad::kern::gemm<T>, rng);
}

template <class T>
void check_skinny_gemms() {
  using ad::kern::GemmKernel;
  Rng rng(21);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      // k ≤ 8: a sum of k outer products (k = 0 leaves β C); n = 300 crosses the 256-column block
      for (int k = 0; k <= 8; ++k) check_gemm_shape<T>(ta, tb, 37, 70, k, GemmKernel::small_k, rng);
      check_gemm_shape<T>(ta, tb, 19, 300, 3, GemmKernel::small_k, rng);
      check_gemm_shape<T>(ta, tb, 1, 1, 1, GemmKernel::small_k, rng);
    }
  for (bool tb : {false, true}) {
    // n ≤ 4 with A not transposed: dot products; m = 37 leaves a remainder of every row group,
    // k = 70 a scalar tail, k = 600 crosses the 512-deep block
    for (int n = 1; n <= ad::kern::kSmallN; ++n) check_gemm_shape<T>(false, tb, 37, n, 70, GemmKernel::small_n, rng);
    check_gemm_shape<T>(false, tb, 512, ad::kern::kSmallN, 128, GemmKernel::small_n, rng);
    check_gemm_shape<T>(false, tb, 21, 2, 600, GemmKernel::small_n, rng);
    check_gemm_shape<T>(false, tb, 32, 1, 64, GemmKernel::small_n, rng);
  }
  // Aᵀ B with a thin m or n (weight gradients): full and partial vector blocks and a scalar tail
  for (int s = 1; s <= 4; ++s) {
    check_gemm_shape<T>(true, false, s, 70, 100, GemmKernel::tn_thin, rng);
    check_gemm_shape<T>(true, false, 70, s, 100, GemmKernel::tn_thin, rng);
    check_gemm_shape<T>(true, false, s, 3, 50, GemmKernel::tn_thin, rng);
  }
  check_gemm_shape<T>(true, false, 2, 64, 1024, GemmKernel::tn_thin, rng);
  check_gemm_shape<T>(true, false, 64, 1, 1024, GemmKernel::tn_thin, rng);
  // A weight gradient Aᵀ B past OpenBLAS's small-matrix limit whose slices of k can stay at
  // least 32 deep goes to OpenBLAS in those slices (AVX-512 floats); the packed kernel is
  // then also run directly on the shape, so that it stays covered on every build.
  const GemmFn<T> packed = [](bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b,
                              int ldb, T beta, T* c, int ldc) {
    ad::kern::packed::gemm<T>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  };
  auto check_packed = [&](bool ta, bool tb, int m, int n, int k, int line = __builtin_LINE()) {
    const bool split = ta && !tb && ad::kern::blas_k_split_chunk<T>(m, n, k) > 0;
    check_gemm_shape<T>(ta, tb, m, n, k, split ? GemmKernel::blas_k_split : GemmKernel::packed, rng, line);
    if (split) check_gemm_run<T>(ta, tb, m, n, k, packed, rng);
  };
  // the packed kernel (n ≥ 64, m ≥ 32): every transpose; m = 37 and n = 130 leave partial
  // register tiles, k = 300 and 530 cross the 256-deep panel (later panels add), m = 200
  // crosses the 192-row block (AVX-512) of packed A
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check_packed(ta, tb, 37, 130, 300);
      check_packed(ta, tb, 200, 128, 9);
      check_packed(ta, tb, 37, 100, 300);  // A read in place when not transposed
    }
  check_packed(false, true, 33, 64, 9);
  check_packed(true, false, 35, 256, 530);
  // n cut into chunks of at most 512 kB of packed B (floats: 512 columns at k ≥ 256, 2048 at
  // k = 64; doubles half that): the last chunk partial, after two k panels for k = 300
  for (bool ta : {false, true})
    for (bool tb : {false, true}) check_packed(ta, tb, 37, 600, 300);
  check_packed(false, true, 37, 2100, 64);
  check_packed(false, false, 40, 2100, 64);
  // 8-row tiles where 12 would pad more (AVX-512): weight gradients of 16 and of 40 outputs
  check_packed(true, false, 16, 64, 1030);
  check_packed(true, false, 40, 70, 300);
  // slices of k (AVX-512 floats, with OpenBLAS's SkylakeX kernels; elsewhere packed or BLAS in one
  // call, as under OPENBLAS_CORETYPE=Haswell): shape A's hidden weight
  // gradient, and B's input layer's with a last, shorter slice (k = 1001: 501 + 500)
  const bool slices = ad::kern::blas_k_split_chunk<T>(64, 64, 1024) > 0;
  CHECK(slices == (std::is_same_v<T, float> && xsimd::batch<T>::size >= 16 && ad::kern::blas_has_small_kernels()));
  check_gemm_shape<T>(true, false, 64, 64, 1024, slices ? GemmKernel::blas_k_split : GemmKernel::packed, rng);
  check_gemm_shape<T>(true, false, 128, 8, 1001, slices ? GemmKernel::blas_k_split : GemmKernel::blas, rng);
  if (slices) CHECK(ad::kern::blas_k_split_chunk<T>(128, 8, 1001) == 501);
  CHECK(ad::kern::blas_k_split_chunk<T>(512, 512, 2048) == 0);  // slices would be too thin
  CHECK(ad::kern::blas_k_split_chunk<T>(100, 100, 100) == 0);   // within the limit: one call
  check_gemm_shape<T>(true, false, 16, 64, 64, GemmKernel::blas, rng);  // small: OpenBLAS's own kernels
  // outputs one vector wide, A not transposed: the 8 × 1-vector tile (m = 37: a partial tile
  // of rows; k = 300 crosses a panel)
  constexpr int w = int(xsimd::batch<T>::size);
  for (bool tb : {false, true})
    for (int n = ad::kern::kSmallN + 1; n <= w; ++n) {
      check_gemm_shape<T>(false, tb, 37, n, 70, GemmKernel::packed, rng);
      check_gemm_shape<T>(false, tb, 64, n, 300, GemmKernel::packed, rng);
    }
  // narrower outputs of a non-transposed A: one whole sliver always; 23 columns (a 2-D spline
  // coupling's bin parameters) where the padded sliver is full enough (AVX-512 floats)
  constexpr int nr = ad::kern::packed::Tile<T>::NR;
  for (bool tb : {false, true}) {
    // (on SSE2 a double sliver is 4 wide, no wider than what the small-n kernel takes)
    check_gemm_shape<T>(false, tb, 37, nr, 70, nr <= ad::kern::kSmallN ? GemmKernel::small_n : GemmKernel::packed, rng);
    check_gemm_shape<T>(false, tb, 200, 23, 300, ad::kern::packed_narrow<T>(23) ? GemmKernel::packed : GemmKernel::blas, rng);
  }
  CHECK_FALSE(ad::kern::packed_narrow<T>(nr + 1));  // a second sliver with one column
  // and the shapes that stay with BLAS
  check_gemm_shape<T>(false, false, 9, 9, 9, GemmKernel::blas, rng);
  check_gemm_shape<T>(false, false, 50, 33, 40, GemmKernel::blas, rng);
  check_gemm_shape<T>(true, false, 50, 23, 40, GemmKernel::blas, rng);  // a transposed A stays with BLAS below n = 64
  check_gemm_shape<T>(true, false, 520, 64, 40, GemmKernel::blas, rng);  // tall and narrow Aᵀ B (m ≥ 8n): OpenBLAS
  // ... unless m and k are long, with AVX-512 floats: then Cᵀ = Bᵀ A through the packed
  // kernel, added transposed. The kernel itself is checked on every build and type.
  const GemmKernel tall = xsimd::batch<T>::size >= 16 ? GemmKernel::tn_tall : GemmKernel::blas;
  check_gemm_shape<T>(true, false, 2050, 70, 260, tall, rng);
  check_gemm_shape<T>(true, false, 2048, 20, 300, tall, rng);
  check_gemm_shape<T>(true, false, 2048, 5, 300, slices ? GemmKernel::blas_k_split : tall, rng);  // slices of 75
  const GemmFn<T> tn_tall = [](bool, bool, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb,
                               T beta, T* c, int ldc) {
    ad::kern::packed::gemm_tn_tall<T>(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  };
  check_gemm_run<T>(true, false, 2050, 70, 260, tn_tall, rng);
  check_gemm_run<T>(true, false, 2048, 5, 300, tn_tall, rng);
  check_gemm_shape<T>(true, false, 500, 64, 40, GemmKernel::packed, rng);
  check_gemm_shape<T>(true, true, 31, 200, 40, GemmKernel::blas, rng);
  check_gemm_shape<T>(true, true, 3, 9, 9, GemmKernel::blas, rng);
}
}  // namespace

TEST_CASE("trflow's GEMM kernels (skinny and packed) equal a naive loop, every transpose they serve, β = 0 / 1 / −0.5") {
  SUBCASE("float64") { check_skinny_gemms<double>(); }
  SUBCASE("float32") { check_skinny_gemms<float>(); }
}

namespace {
/// gemm_add_bias against gemm followed by each row + bias: the same bits where the packed
/// kernel adds the bias in its stores (the same sums in the same order), the plain product
/// (and false) where another kernel runs the shape.
template <class T>
void check_gemm_bias(bool ta, bool tb, int m, int n, int k, T beta, Rng& rng) {
  CAPTURE(ta);
  CAPTURE(tb);
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  CAPTURE(beta);
  const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
  const int lda = a_cols + 1, ldb = b_cols + 3, ldc = n + 2;
  std::vector<T> a(std::size_t(a_rows) * lda), b(std::size_t(b_rows) * ldb), c0(std::size_t(m) * ldc);
  std::vector<T> bias(static_cast<std::size_t>(n));
  for (T& v : a) v = T(rng.normal());
  for (T& v : b) v = T(rng.normal());
  for (T& v : bias) v = T(rng.normal());
  for (T& v : c0) v = T(rng.normal());
  std::vector<T> want = c0, got = c0;
  ad::kern::gemm<T>(ta, tb, m, n, k, T(1), a.data(), lda, b.data(), ldb, beta, want.data(), ldc);
  const bool packed = ad::kern::gemm_kernel<T>(ta, tb, m, n, k) == ad::kern::GemmKernel::packed;
  const bool added =
      ad::kern::gemm_add_bias<T>(ta, tb, m, n, k, T(1), a.data(), lda, b.data(), ldb, beta, got.data(), ldc, bias.data());
  CHECK(added == packed);
  std::size_t differ = 0;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < ldc; ++j) {
      const std::size_t at = std::size_t(i) * ldc + std::size_t(j);
      const T expect = j < n && added ? want[at] + bias[std::size_t(j)] : want[at];
      differ += got[at] != expect;  // bitwise; the padding columns untouched
    }
  CHECK(differ == 0);
}
}  // namespace

#if defined(__AVX512F__)
TEST_CASE("load_lanes16 / store_lanes16 move 16 lanes' P values each between element-major memory and P vectors") {
  Rng rng(5);
  for (int P : {1, 7, 15, 16, 17, 23, 32, 33, 191}) {
    CAPTURE(P);
    const std::size_t len = std::size_t(16) * std::size_t(P);
    std::vector<float> src(len + 16);
    for (float& v : src) v = float(rng.normal());
    __m512 vecs[191];
    ad::kern::load_lanes16(src.data(), P, vecs);
    std::size_t wrong = 0;
    for (int p = 0; p < P; ++p) {
      alignas(64) float lane[16];
      _mm512_store_ps(lane, vecs[p]);
      for (int l = 0; l < 16; ++l) wrong += lane[l] != src[std::size_t(l) * std::size_t(P) + std::size_t(p)];
    }
    CHECK(wrong == 0);
    for (bool add : {false, true}) {
      CAPTURE(add);
      std::vector<float> dst(len + 16);
      for (float& v : dst) v = float(rng.normal());
      const std::vector<float> before = dst;
      ad::kern::store_lanes16(vecs, P, dst.data(), add);
      std::size_t differ = 0;
      for (std::size_t f = 0; f < len; ++f) {  // flat position f: lane f / P, parameter f % P
        const float v = src[f];
        differ += dst[f] != (add ? before[f] + v : v);
      }
      for (std::size_t f = len; f < dst.size(); ++f) differ += dst[f] != before[f];  // past the block: untouched
      CHECK(differ == 0);
    }
  }
}
#endif

TEST_CASE("sum_sq_diff gives sum(square(a − b))'s value and adjoints bit for bit, in float32 and float64") {
  auto check = [](auto zero) {
    using T = decltype(zero);
    Rng rng(41);
    for (const auto& shape : std::vector<std::pair<std::size_t, std::size_t>>{{1, 1}, {7, 3}, {33, 17}, {256, 64}}) {
      const std::size_t m = shape.first, n = shape.second;  // (not a structured binding: CAPTURE's lambda takes them)
      CAPTURE(m);
      CAPTURE(n);
      Array<T> a = Array<T>::from_shape({m, n}), b = Array<T>::from_shape({m, n});
      for (T& v : a) v = T(rng.normal());
      for (T& v : b) v = T(2.0 * rng.normal());
      // Each input also feeds another node, so the adjoints are accumulated as well as assigned.
      auto run = [&](bool fused) {
        Tape<T> t;
        const Var<T> va = t.variable(a), vb = t.variable(b);
        const Var<T> d = fused ? ad::sum_sq_diff(va, vb) : ad::sum(ad::square(va - vb));
        t.backward(d * T(0.37) + ad::sum(ad::exp(va * T(0.1))) + ad::sum(vb));
        return std::make_tuple(d.item(), Array<T>(va.grad()), Array<T>(vb.grad()));
      };
      const auto [y0, ga0, gb0] = run(false);
      const auto [y1, ga1, gb1] = run(true);
      CHECK(y1 == y0);  // bitwise
      CHECK(ga1 == ga0);
      CHECK(gb1 == gb0);
      double want = 0;
      for (std::size_t i = 0; i < a.size(); ++i) want += (double(a.data()[i]) - double(b.data()[i])) * (double(a.data()[i]) - double(b.data()[i]));
      CHECK(double(y1) == doctest::Approx(want).epsilon(std::is_same_v<T, float> ? 1e-5 : 1e-12));
    }
  };
  check(float{});
  check(double{});
  Tape<double> t;
  CHECK_THROWS_AS(ad::sum_sq_diff(t.variable(zeros(2, 3)), t.variable(zeros(3, 2))), ad::ShapeError);
}

TEST_CASE("gemm_add_bias: the packed kernel adds the bias in its stores, bit for bit as a pass after would") {
  Rng rng(77);
  for (const float beta : {0.0f, 1.0f}) {
    check_gemm_bias<float>(false, true, 100, 130, 300, beta, rng);  // 12 × 2 tile, two k panels, edge tiles
    check_gemm_bias<float>(false, true, 37, 130, 300, beta, rng);   // 8 × 2 tile (12 rows would pad 11)
    check_gemm_bias<float>(false, true, 67, 70, 300, beta, rng);    // A read in place, its last rows packed
    check_gemm_bias<float>(true, false, 100, 70, 300, beta, rng);   // A transposed, packed
    check_gemm_bias<float>(false, true, 40, 12, 70, beta, rng);     // one vector wide: 8 × 1
    check_gemm_bias<float>(true, false, 16, 64, 1030, beta, rng);   // 8 rows, five k panels
    check_gemm_bias<float>(false, true, 9, 9, 9, beta, rng);        // OpenBLAS: not added
    check_gemm_bias<float>(false, true, 33, 64, 3, beta, rng);      // small k: not the packed kernel
    check_gemm_bias<double>(false, true, 37, 130, 300, double(beta), rng);
    check_gemm_bias<float>(false, true, 37, 2100, 64, beta, rng);   // n in two chunks: the bias follows
  }
  // k = 0 (which the dispatcher sends to the small-k kernel): C = β C + bias.
  std::vector<float> c(6, 2.0f), bias = {1.0f, -1.0f, 0.5f};
  ad::kern::packed::gemm<float>(false, true, 2, 3, 0, 1.0f, nullptr, 1, nullptr, 1, 0.5f, c.data(), 3, bias.data());
  CHECK(c == std::vector<float>{2.0f, 0.0f, 1.5f, 2.0f, 0.0f, 1.5f});
}

namespace {
/// gemm_small_k_act against gemm and then a pass C = f(C + bias): the same bits where it fuses
/// (k ≤ kSmallKFused and the small-k kernel), false and C untouched elsewhere.
template <class T, class F>
void check_gemm_small_k_act(bool tb, int m, int n, int k, bool with_bias, F f, Rng& rng) {
  CAPTURE(tb);
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  CAPTURE(with_bias);
  const int lda = k + 1, b_rows = tb ? n : k, b_cols = tb ? k : n, ldb = b_cols + 2, ldc = n + 3;
  std::vector<T> a(std::size_t(m) * lda + 1), b(std::size_t(b_rows) * ldb + 1), bias(static_cast<std::size_t>(n));
  std::vector<T> c0(std::size_t(m) * ldc);
  for (T& v : a) v = T(2 * rng.normal());
  for (T& v : b) v = T(rng.normal());
  for (T& v : bias) v = T(rng.normal());
  for (T& v : c0) v = T(rng.normal());
  std::vector<T> want = c0, got = c0;
  ad::kern::gemm<T>(false, tb, m, n, k, T(1), a.data(), lda, b.data(), ldb, T(0), want.data(), ldc);
  for (int i = 0; i < m; ++i) {
    T* row = want.data() + std::size_t(i) * ldc;
    if (with_bias)
      ad::kern::map2(row, bias.data(), row, std::size_t(n), [f](auto z, auto bb) { return f(z + bb); });
    else
      ad::kern::map(row, row, std::size_t(n), f);
  }
  const bool fuses = k <= ad::kern::kSmallKFused && ad::kern::gemm_kernel<T>(false, tb, m, n, k) == ad::kern::GemmKernel::small_k;
  const bool done = ad::kern::gemm_small_k_act<T>(false, tb, m, n, k, a.data(), lda, b.data(), ldb, got.data(), ldc,
                                                  with_bias ? bias.data() : nullptr, f);
  CHECK(done == fuses);
  if (done) CHECK(same_bits(got.data(), want.data(), want.size() * sizeof(T)));  // the padding columns untouched too
  else CHECK(same_bits(got.data(), c0.data(), c0.size() * sizeof(T)));
}
}  // namespace

TEST_CASE("gemm_small_k_act: a narrow-input dense layer's bias and activation in the GEMM's stores, bit for bit") {
  Rng rng(80);
  const auto tanh_f = [](auto v) { return ad::kern::tanh(v); };
  const auto softplus = [](auto v) {
    using V = decltype(v);
    return xsimd::max(v, V(0)) + xsimd::log1p(ad::kern::exp(-xsimd::abs(v)));
  };
  for (const bool tb : {true, false})
    for (const bool with_bias : {true, false})
      for (int k = 0; k <= 6; ++k) {
        check_gemm_small_k_act<float>(tb, 37, 64, k, with_bias, tanh_f, rng);
        check_gemm_small_k_act<float>(tb, 5, 300, k, with_bias, softplus, rng);  // two column blocks, a scalar tail
        check_gemm_small_k_act<double>(tb, 9, 70, k, with_bias, tanh_f, rng);
      }
  CHECK(ad::kern::kSmallKFused <= ad::kern::kSmallK);
}

namespace {
/// gemm_tn_col_sums against gemm and then a pass over A's rows: C and the sums the same bits
/// (the same sums in the same order) where the tall kernel takes the shape; false, and C and
/// the sums untouched, elsewhere.
void check_gemm_tn_col_sums(int m, int n, int k, float beta, bool assign, Rng& rng) {
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  CAPTURE(beta);
  CAPTURE(assign);
  const int lda = m + 3, ldb = n + 1, ldc = n + 2;
  std::vector<float> a(std::size_t(k) * lda), b(std::size_t(k) * ldb), c0(std::size_t(m) * ldc), s0(std::size_t(m) + 4);
  for (float& v : a) v = float(rng.normal());
  for (float& v : b) v = float(rng.normal());
  for (float& v : c0) v = float(rng.normal());
  for (float& v : s0) v = float(rng.normal());
  std::vector<float> want = c0, got = c0, want_sums = s0, got_sums = s0;
  ad::kern::gemm<float>(true, false, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, beta, want.data(), ldc);
  for (int i = 0; i < m; ++i) {  // row by row, as put_col_sums
    float acc = assign ? 0.0f : want_sums[std::size_t(i)];
    for (int p = 0; p < k; ++p) acc = assign && p == 0 ? a[std::size_t(i)] : acc + a[std::size_t(p) * lda + i];
    want_sums[std::size_t(i)] = acc;
  }
  const bool fuses = ad::kern::gemm_kernel<float>(true, false, m, n, k) == ad::kern::GemmKernel::tn_tall;
  const bool done = ad::kern::gemm_tn_col_sums<float>(m, n, k, 1.0f, a.data(), lda, b.data(), ldb, beta, got.data(),
                                                      ldc, got_sums.data(), assign);
  CHECK(done == fuses);
  if (!done) want = c0, want_sums = s0;
  CHECK(same_bits(got.data(), want.data(), want.size() * sizeof(float)));
  CHECK(same_bits(got_sums.data(), want_sums.data(), want_sums.size() * sizeof(float)));  // nothing past m either
}
}  // namespace

TEST_CASE("gemm_tn_col_sums: a weight gradient and its bias gradient from one pass over the adjoint, bit for bit") {
  Rng rng(78);
  const bool tall = xsimd::batch<float>::size >= 16;  // the fused path: AVX-512 floats (gemm_kernel)
  CHECK(ad::kern::gemm_kernel<float>(true, false, 2050, 70, 300) ==
        (tall ? ad::kern::GemmKernel::tn_tall : ad::kern::GemmKernel::blas));
  for (const float beta : {0.0f, 1.0f})
    for (const bool assign : {true, false}) {
      check_gemm_tn_col_sums(2050, 70, 300, beta, assign, rng);  // tall: two k panels, five column chunks, a tail
      check_gemm_tn_col_sums(2048, 64, 259, beta, assign, rng);  // tall: whole slivers, 3 rows past the fours
      check_gemm_tn_col_sums(100, 70, 300, beta, assign, rng);   // the packed kernel: not fused
      check_gemm_tn_col_sums(20, 3, 40, beta, assign, rng);      // thin: not fused
    }
}

TEST_CASE("map2_col_sums: z = f(x, y) and its column sums in one pass, bit for bit as map2 per row and put") {
  // A fused dense layer's z̄ = ȳ ⊙ tanh'(y) and b̄ = Σ_i z̄_i, and an f ending in a product (x·y),
  // whose sums must still add the stored z. Widths cover blocks of four, two and one vectors and
  // the scalar tail; m = 0: an assigned s is the empty sum, 0, an added one is left alone.
  Rng rng(80);
  constexpr std::size_t W = xsimd::batch<float>::size;
  const auto slope = [](auto g, auto v) { return g * (decltype(v)(1) - v * v); };
  const auto times = [](auto a, auto b) { return a * b; };
  const auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b, std::size_t count) {
    return count == 0 || std::memcmp(a.data(), b.data(), count * sizeof(float)) == 0;  // (m = 0: empty, no pointer)
  };
  int checked = 0;
  for (const std::size_t n : {std::size_t(1), std::size_t(5), W, 2 * W + 3, 3 * W, 4 * W, 7 * W + 1, 11 * W + W - 1})
    for (const std::size_t m : {std::size_t(0), std::size_t(1), std::size_t(3), std::size_t(37)})
      for (const bool assign : {true, false}) {
        CAPTURE(n);
        CAPTURE(m);
        CAPTURE(assign);
        std::vector<float> x(m * n), y(m * n), s0(n);
        rng.fill_normal(x.data(), x.size());
        rng.fill_normal(y.data(), y.size());
        rng.fill_normal(s0.data(), s0.size());
        const auto check = [&](const char* what, auto f) {
          INFO("f: ", what);
          std::vector<float> z_want(m * n, -1.0f), s_want = s0, z_got(m * n, -2.0f), s_got = s0;
          for (std::size_t i = 0; i < m; ++i) {
            ad::kern::map2(x.data() + i * n, y.data() + i * n, z_want.data() + i * n, n, f);
            ad::kern::put(assign && i == 0, z_want.data() + i * n, s_want.data(), n);
          }
          if (m == 0 && assign) std::fill(s_want.begin(), s_want.end(), 0.0f);
          ad::kern::map2_col_sums(assign, m, n, x.data(), y.data(), z_got.data(), s_got.data(), f);
          CHECK(same_bits(z_got, z_want, z_want.size()));
          CHECK(same_bits(s_got, s_want, n));
        };
        check("tanh slope", slope);
        check("product", times);
        ++checked;
      }
  CHECK(checked == 64);
}

TEST_CASE("a dense layer without activation, wide enough for the fused bias gradient: b̄ = Σ rows of ȳ exactly") {
  // 260 rows, 20 inputs, 2050 outputs: W̄ = ȳᵀ x runs as gemm_tn_tall on AVX-512 floats, which
  // sums ȳ's columns as it packs them; once as a fresh adjoint, once added to a parameter's.
  Rng rng(79);
  const int m = 260, in = 20, out = 2050;
  CHECK(ad::kern::gemm_kernel<float>(true, false, out, in, m) ==
        (xsimd::batch<float>::size >= 16 ? ad::kern::GemmKernel::tn_tall : ad::kern::GemmKernel::blas));
  Array<float> x0({std::size_t(m), std::size_t(in)}), seed({std::size_t(m), std::size_t(out)});
  rng.fill_normal(x0.data(), x0.size());
  rng.fill_normal(seed.data(), seed.size());
  Parameter<float> w("w", std::size_t(out), std::size_t(in)), b("b", 1, std::size_t(out));
  rng.fill_normal(w.value.data(), w.value.size());
  rng.fill_normal(b.value.data(), b.value.size());
  std::vector<float> col_sums(static_cast<std::size_t>(out));
  for (int j = 0; j < out; ++j) {
    float acc = 0.0f;
    for (int i = 0; i < m; ++i) acc = i == 0 ? seed.data()[std::size_t(j)] : acc + seed.data()[std::size_t(i) * out + j];
    col_sums[std::size_t(j)] = acc;
  }
  for (const bool on_tape : {true, false}) {
    CAPTURE(on_tape);
    w.zero_grad();
    b.zero_grad();
    Tape<float> t;
    t.set_param_grads_on_tape(on_tape);
    const Var<float> wv = t.param(w), bv = t.param(b);
    const Var<float> y = ad::linear(t.constant(x0), wv, bv);
    t.backward(y, seed);
    if (on_tape) t.accumulate_param_grads();
    CHECK(same_bits(b.grad.data(), col_sums.data(), col_sums.size() * sizeof(float)));
    double worst = 0;  // W̄ against a float64 loop
    for (int j = 0; j < out; ++j)
      for (int k = 0; k < in; ++k) {
        double acc = 0, mag = 0;
        for (int i = 0; i < m; ++i) {
          const double term = double(seed.data()[std::size_t(i) * out + j]) * double(x0.data()[std::size_t(i) * in + k]);
          acc += term, mag += std::abs(term);
        }
        worst = std::max(worst, std::abs(double(w.grad.data()[std::size_t(j) * in + k]) - acc) / (mag + 1e-30));
      }
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("a dense layer whose input, weight and bias are one 1×1 node: each adjoint adds to the others") {
  // y = x·x + x, dy/dx = 2x + 1: x̄, W̄ and b̄ land in one adjoint, each claimed just before it is written
  const Array<double> x0({1, 1}, 0.75);
  const auto f = [](Var<double> x) { return ad::linear(x, x, x); };
  const ad::GradcheckResult r =
      ad::gradcheck([&](Tape<double>&, const std::vector<Var<double>>& x) { return f(x[0]); }, {x0});
  CHECK_MESSAGE(r.ok, r.report);
  Tape<double> t;
  const Var<double> x = t.variable(x0);
  const Var<double> y = f(x);
  t.backward(y, Array<double>({1, 1}, 3.0));
  t.backward(y, Array<double>({1, 1}, 2.0));  // the second pass ignores the first's adjoint
  CHECK(x.grad().data()[0] == doctest::Approx(2.0 * (2 * 0.75 + 1)));
}

// ================================================================ fresh adjoints
TEST_CASE("an op with one input twice: the first write assigns, the second adds (stale adjoints ignored)") {
  // Each f uses x twice in a single op. Two backward passes over one recording with different
  // seeds: the second pass finds last pass's values in every adjoint and must ignore them.
  Rng rng(22);
  const Array<double> x0 = rnd(rng, 4, 4, normal());
  const std::vector<int> perm{2, 0, 3, 1};
  const std::vector<std::pair<std::string, std::function<Var<double>(Var<double>)>>> fs = {
      {"x ⊙ x", [](Var<double> x) { return x * x; }},
      {"x + x", [](Var<double> x) { return x + x; }},
      {"x ⊘ (1.5 x + 10)", [](Var<double> x) { return x / (x * 1.5 + 10.0); }},
      {"x xᵀ", [](Var<double> x) { return ad::matmul(x, x, false, true); }},
      {"xᵀ x", [](Var<double> x) { return ad::matmul(x, x, true, false); }},
      {"linear_act(x, W = x)", [](Var<double> x) { return ad::linear_act(x, x, Var<double>{}, Activation::tanh); }},
      {"linear(x, W = x)", [](Var<double> x) { return ad::linear(x, x, Var<double>{}); }},
      {"scatter_cols(x, x, perm)", [&perm](Var<double> x) { return ad::scatter_cols(x, x, perm); }},
      {"concat_cols(x, x)", [](Var<double> x) { return ad::concat_cols(x, x); }},
  };
  for (const auto& named : fs) {
    const std::string& name = named.first;
    const auto& f = named.second;
    INFO(name);
    // the gradient against central differences (one pass on a fresh tape)
    const ad::GradcheckResult r =
        ad::gradcheck([&](Tape<double>&, const std::vector<Var<double>>& x) { return f(x[0]); }, {x0});
    CHECK_MESSAGE(r.ok, r.report);
    // two passes on one tape: the second equals a first pass with the same seed, bitwise
    Tape<double> t, fresh;
    const Var<double> x = t.variable(x0), xf = fresh.variable(x0);
    const Var<double> y = f(x), yf = f(xf);
    const Array<double> u1 = rnd(rng, y.rows(), y.cols(), normal()), u2 = rnd(rng, y.rows(), y.cols(), normal());
    t.backward(y, u1);
    t.backward(y, u2);
    fresh.backward(yf, u2);
    CHECK(same_bits(x.grad().data(), xf.grad().data(), x0.size() * sizeof(double)));
  }
}

TEST_CASE("parameter adjoints: accumulate into Parameter::grad, or start fresh on a param_grads_on_tape tape") {
  Rng rng(23);
  Parameter<double> p("p", 3, 3);
  rng.fill_normal(p.value.data(), p.value.size());
  const Array<double> x0 = rnd(rng, 5, 3, normal());
  auto loss = [&](Tape<double>& t) {  // p used twice by one op, and again by another
    const Var<double> w = t.param(p);
    return ad::sum(ad::linear_act(t.constant(x0), w, Var<double>{}, Activation::tanh)) + ad::sum(w * w);
  };
  Tape<double> t;
  t.backward(loss(t));
  const Array<double> g1 = p.grad;
  CHECK(std::any_of(g1.begin(), g1.end(), [](double g) { return g != 0; }));
  t.backward(loss(t));  // accumulates: 2 g1 (up to the order of the sums)
  for (std::size_t i = 0; i < g1.size(); ++i) CHECK(p.grad.data()[i] == doctest::Approx(2 * g1.data()[i]).epsilon(1e-14));

  Tape<double> on;
  on.set_param_grads_on_tape(true);
  const Var<double> l = loss(on);
  on.backward(l);
  on.backward(l);  // the second pass finds the first one's adjoint on the tape and must not add to it
  p.zero_grad();
  on.accumulate_param_grads();
  for (std::size_t i = 0; i < g1.size(); ++i) CHECK(p.grad.data()[i] == doctest::Approx(g1.data()[i]).epsilon(1e-14));
}

TEST_CASE("parameter adjoints into a caller's buffers: two backward passes with clear() in between sum to the one-tape gradient") {
  Rng rng(29);
  Parameter<double> p("p", 3, 3), q("q", 1, 3), unknown("unknown", 1, 1);
  rng.fill_normal(p.value.data(), p.value.size());
  rng.fill_normal(q.value.data(), q.value.size());
  const Array<double> x0 = rnd(rng, 5, 3, normal()), x1 = rnd(rng, 4, 3, normal());
  auto part = [&](Tape<double>& t, const Array<double>& x) {  // p used twice (one node), q once
    const Var<double> w = t.param(p);
    return ad::sum(ad::linear_act(t.constant(x), w, t.param(q), Activation::tanh)) + ad::sum(w * w);
  };
  Tape<double> whole;  // one tape, one backward: into Parameter::grad
  whole.backward(part(whole, x0) + part(whole, x1));
  const Array<double> gp = p.grad, gq = q.grad;
  p.zero_grad(), q.zero_grad();

  const ad::ParamIndex<double> index({&q, &p});  // buffer 0 is q's, buffer 1 p's
  CHECK(index.size() == 2);
  CHECK(index(&p) == 1);
  std::vector<Array<double>> into{Array<double>({1, 3}, 0.0), Array<double>({3, 3}, 0.0)};
  Tape<double> t;
  t.set_param_grad_buffers(&into, &index);
  t.set_pool_values(true);
  t.backward(part(t, x1));
  t.clear();
  const Var<double> second = part(t, x0);
  t.backward(second);
  CHECK(std::all_of(p.grad.begin(), p.grad.end(), [](double g) { return g == 0; }));  // untouched
  CHECK(std::all_of(q.grad.begin(), q.grad.end(), [](double g) { return g == 0; }));
  for (std::size_t i = 0; i < gp.size(); ++i) CHECK(into[1].data()[i] == doctest::Approx(gp.data()[i]).epsilon(1e-14));
  for (std::size_t i = 0; i < gq.size(); ++i) CHECK(into[0].data()[i] == doctest::Approx(gq.data()[i]).epsilon(1e-14));
  // The tape reads a parameter's adjoint where it accumulates.
  const Var<double> w = t.param(p);
  CHECK(&w.grad() == &into[1]);

  // A parameter the index does not know, a buffer of the wrong shape, a parameter listed twice,
  // half a setting; and back to Parameter::grad.
  t.clear();
  CHECK_THROWS_WITH_AS(t.backward(ad::sum(t.param(unknown))), doctest::Contains("'unknown'"), std::invalid_argument);
  std::vector<Array<double>> wrong{Array<double>({1, 3}, 0.0), Array<double>({1, 9}, 0.0)};
  t.set_param_grad_buffers(&wrong, &index);
  t.clear();
  CHECK_THROWS_WITH_AS(t.backward(part(t, x0)), doctest::Contains("'p' is 3×3 but its gradient buffer 1 is 1×9"), ad::ShapeError);
  CHECK_THROWS_WITH_AS(ad::ParamIndex<double>({&p, &q, &p}), doctest::Contains("listed twice"), std::invalid_argument);
  CHECK_THROWS_AS(t.set_param_grad_buffers(&into, nullptr), std::invalid_argument);
  t.set_param_grad_buffers(nullptr, nullptr);
  t.clear();
  t.backward(part(t, x0) + part(t, x1));
  for (std::size_t i = 0; i < gp.size(); ++i) CHECK(p.grad.data()[i] == doctest::Approx(gp.data()[i]).epsilon(1e-14));
}

TEST_CASE("set_dropout_call: a recording split in two, the second part numbered on, drops what one tape drops") {
  Rng rng(31);
  const Array<double> x = rnd(rng, 7, 5, normal());
  auto part = [&](Tape<double>& t) { return ad::dropout(ad::dropout(t.constant(x), 0.3), 0.3).value(); };
  Tape<double> one, two;
  one.set_dropout_stream(9, 2);
  two.set_dropout_stream(9, 2);
  const Array<double> first = part(one), second = part(one);  // calls 0, 1, then 2, 3
  CHECK(first != second);
  two.set_dropout_call(2);  // the second part first, on its own
  CHECK(part(two) == second);
  two.clear();  // back to call 0
  CHECK(part(two) == first);
}

// ================================================================ SIMD
TEST_CASE("xsimd uses the CPU's vector width") {
  const ad::SimdInfo s = ad::simd_info();
  INFO("xsimd arch ", s.arch, ": ", s.float_lanes, " float lanes, ", s.double_lanes, " double lanes");
  CHECK(ad::simd_supported_by_cpu());
  CHECK(s.float_lanes == 2 * s.double_lanes);
  CHECK(s.float_lanes == xsimd::batch<float>::size);  // the library and this file agree
#if defined(__AVX512F__)
  CHECK(s.float_lanes >= 16);
#elif defined(__AVX2__)
  CHECK(s.float_lanes >= 8);
#elif defined(__SSE2__) || defined(__ARM_NEON)
  CHECK(s.float_lanes >= 4);
#endif
#if defined(__SSE2__) || defined(__ARM_NEON)
  CHECK(s.float_lanes > 1);
#endif
}

TEST_CASE("Rng::normals is the stream of normal() calls, and its values are standard normal") {
  for (bool spare_first : {false, true})
    for (std::size_t n : {0, 1, 7, 16, 17, 33, 300}) {
      CAPTURE(spare_first);
      CAPTURE(n);
      ad::Rng one_by_one(77), batched(77);
      if (spare_first) one_by_one.normal(), batched.normal();  // both now hold a spare
      std::vector<double> expected(n), got(n);
      for (double& v : expected) v = one_by_one.normal();
      batched.normals(got.data(), n);
      for (std::size_t i = 0; i < n; ++i) CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-14));
      CHECK(batched.normal() == doctest::Approx(one_by_one.normal()).epsilon(1e-14));  // same state after
    }
  // Moments and the mass within one standard deviation, on 400 000 draws.
  ad::Rng rng(5);
  std::vector<float> x(400000);
  rng.fill_normal(x.data(), x.size(), 1.5, 2.0);
  double mean = 0, var = 0, within = 0;
  for (float v : x) mean += v;
  mean /= double(x.size());
  for (float v : x) {
    var += (v - mean) * (v - mean);
    within += std::abs(v - 1.5) < 2.0;
  }
  var /= double(x.size() - 1);
  const double se = 2.0 / std::sqrt(double(x.size()));
  CHECK(std::abs(mean - 1.5) < 4 * se);
  CHECK(std::abs(var - 4.0) < 4 * 4.0 * std::sqrt(2.0 / double(x.size())));
  CHECK(std::abs(within / double(x.size()) - 0.682689) < 4 * std::sqrt(0.682689 * 0.317311 / double(x.size())));
}

TEST_CASE("dropout: the identity without a stream, about p of the entries dropped with one, the same mask split over tapes") {
  Rng rng(11);
  const std::size_t m = 200, n = 50;
  Array<double> x = rnd(rng, m, n, uniform(1.0, 2.0));  // no zeros: a zero output means dropped
  Tape<double> off;
  const Var<double> a = off.variable(x);
  const Var<double> same = ad::dropout(a, 0.3);
  CHECK(same.index == a.index);  // no node: evaluation never drops
  CHECK(off.size() == 1);
  CHECK_THROWS_AS(ad::dropout(a, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(ad::dropout(a, -0.1), std::invalid_argument);

  Tape<double> whole;
  whole.set_dropout_stream(9, 0);
  const Var<double> y = ad::dropout(whole.variable(x), 0.3);
  std::size_t dropped = 0;
  for (std::size_t k = 0; k < m * n; ++k) {
    const double v = y.value().data()[k];
    if (v == 0.0) ++dropped;
    else CHECK(v == doctest::Approx(x.data()[k] / 0.7).epsilon(1e-15));
  }
  // 10 000 Bernoulli(0.3) draws: 3000 ± 46 (one standard deviation).
  CHECK(std::abs(double(dropped) - 3000.0) < 200.0);
  // A second call on the same recording draws another mask; clear() starts the count again.
  const Var<double> y2 = ad::dropout(whole.variable(x), 0.3);
  CHECK_FALSE(std::equal(y.value().begin(), y.value().end(), y2.value().begin()));
  whole.clear();
  const Var<double> y3 = ad::dropout(whole.variable(x), 0.3);
  CHECK(std::equal(y.value().begin(), y.value().end(), y3.value().begin()));
  // Rows 0..119 on one tape and 120..199 on another (row offset 120): the same entries.
  Tape<double> t1, t2;
  t1.set_dropout_stream(9, 0);
  t2.set_dropout_stream(9, 120);
  Array<double> top({120, n}), bottom({80, n});
  std::copy(x.data(), x.data() + 120 * n, top.data());
  std::copy(x.data() + 120 * n, x.data() + m * n, bottom.data());
  const Var<double> p1 = ad::dropout(t1.variable(top), 0.3), p2 = ad::dropout(t2.variable(bottom), 0.3);
  CHECK(std::equal(p1.value().begin(), p1.value().end(), y.value().begin()));
  CHECK(std::equal(p2.value().begin(), p2.value().end(), y.value().begin() + 120 * n));
  // Another seed, another mask.
  Tape<double> other;
  other.set_dropout_stream(10, 0);
  const Var<double> z = ad::dropout(other.variable(x), 0.3);
  CHECK_FALSE(std::equal(y.value().begin(), y.value().end(), z.value().begin()));
}

// take_cols and scatter_cols keep a pointer to their index list on the tape: a temporary list
// (`ad::take_cols(x, {0, 2})`) would dangle by the backward pass, so passing one must not compile.
template <class C, class = void>
struct takes_cols : std::false_type {};
template <class C>
struct takes_cols<C, std::void_t<decltype(ad::take_cols(std::declval<Var<double>>(), std::declval<C>()))>>
    : std::true_type {};
template <class C, class = void>
struct scatters_cols : std::false_type {};
template <class C>
struct scatters_cols<C, std::void_t<decltype(ad::scatter_cols(std::declval<Var<double>>(), std::declval<Var<double>>(),
                                                             std::declval<C>()))>> : std::true_type {};

TEST_CASE("take_cols and scatter_cols refuse a temporary index list at compile time") {
  static_assert(takes_cols<std::vector<int>&>::value, "an index list that outlives the tape is taken");
  static_assert(takes_cols<const std::vector<int>&>::value, "a const one too");
  static_assert(!takes_cols<std::vector<int>>::value, "a temporary list is refused");
  static_assert(!takes_cols<std::vector<int>&&>::value, "a moved-from list is refused");
  static_assert(scatters_cols<const std::vector<int>&>::value, "scatter_cols takes a lasting list");
  static_assert(!scatters_cols<std::vector<int>>::value, "and refuses a temporary one");
  // The lvalue form still works end to end.
  Tape<double> t;
  const std::vector<int> cols = {2, 0};
  Array<double> x({1, 3});
  x(0, 0) = 1, x(0, 1) = 2, x(0, 2) = 3;
  const Var<double> y = ad::take_cols(t.variable(x), cols);
  CHECK(y.value()(0, 0) == 3.0);
  CHECK(y.value()(0, 1) == 1.0);
}

#ifdef TRFLOW_POISON_ADJOINTS
TEST_CASE("poisoned builds: a fresh adjoint starts as NaN, so a VJP must write all of it") {
  Tape<double> t;
  const Var<double> x = t.variable(Array<double>({2, 3}, 1.0));
  t.backward(ad::sum(ad::square(x)));
  bool fresh = false;
  CHECK(t.grad_sink(x.index, fresh) != nullptr);
  CHECK_FALSE(fresh);  // x has its adjoint of this pass: a VJP adds to it
  // A node recorded after the pass: its first adjoint request is fresh, and poisoned until written.
  const Var<double> z = ad::exp(x);
  Array<double>* gz = t.grad_sink(z.index, fresh);
  REQUIRE(gz);
  CHECK(fresh);
  for (double v : *gz) CHECK(std::isnan(v));
}
#endif

TEST_CASE("Tape::release gives the memory back, and the tape records and differentiates as before after it") {
  Rng rng(5);
  Array<double> x({64, 32}), w({48, 32});
  rng.fill_normal(x.data(), x.size(), 0.0, 1.0);
  rng.fill_normal(w.data(), w.size(), 0.0, 0.3);
  ad::Tape<double> tape;
  auto run = [&] {
    tape.clear();
    const auto xv = tape.variable(x);
    const auto wv = tape.variable(w);
    const auto loss = ad::sum(ad::square(ad::linear_act(xv, wv, ad::Var<double>{}, ad::Activation::tanh)));
    tape.backward(loss);
    return std::pair<double, Array<double>>(loss.item(), wv.grad());
  };
  const auto first = run();
  REQUIRE(tape.bytes_reserved() > 64 * 48 * sizeof(double));
  tape.release();
  CHECK(tape.bytes_reserved() == 0);
  const auto again = run();
  CHECK(again.first == first.first);
  CHECK(again.second == first.second);
}

/// kern::exp replaces xsimd's scaling by 2^k with AVX-512's vscalefps (on other targets it is
/// xsimd's own): on every input, bit for bit the value xsimd::exp gives.
TEST_CASE_TEMPLATE("kern::exp gives xsimd::exp's bits on every input, edges included", T, float, double) {
  using V = xsimd::batch<T>;
  constexpr std::size_t W = V::size;
  std::vector<T> xs = {T(0), -T(0), T(1), T(-1), T(44), T(-44), std::numeric_limits<T>::infinity(),
                       -std::numeric_limits<T>::infinity(), std::numeric_limits<T>::quiet_NaN(),
                       std::numeric_limits<T>::denorm_min(), std::numeric_limits<T>::max(),
                       std::numeric_limits<T>::lowest(), std::numeric_limits<T>::min()};
  // around the ends of exp's range (float: minlog −88.376, where k = −127 makes xsimd's 2^k zero,
  // and the smallest normal result at −87.34; maxlog 88.376; double: ±708.4, 709.8), then a sweep
  for (T edge : {T(-88.3762626647949), T(-87.68), T(-87.3365), T(88.3762626647949), T(88.7228), T(-708.3964185322641),
                 T(-745.2), T(709.436), T(709.7827)})
    for (int i = -40; i <= 40; ++i) xs.push_back(edge + T(i) * std::abs(edge) * T(1e-7)), xs.push_back(std::nextafter(edge, T(i)));
  for (int i = 0; i < 200000; ++i) xs.push_back(T(-760) + T(1520) * T(i) / T(200000));
  while (xs.size() % W) xs.push_back(T(0.5));
  std::size_t differ = 0;
  T got[W], want[W];
  for (std::size_t i = 0; i < xs.size(); i += W) {
    const V x = V::load_unaligned(xs.data() + i);
    ad::kern::exp(x).store_unaligned(got);
    xsimd::exp(x).store_unaligned(want);
    differ += std::size_t(std::memcmp(got, want, sizeof got) != 0);
  }
  CHECK(differ == 0);
  CHECK(ad::kern::exp(T(1.5)) == std::exp(T(1.5)));  // scalars: xsimd's scalar overload
}

#if defined(__AVX512F__)
TEST_CASE("kern::hadd16: lane l is xsimd::hadd of accumulator l, bit for bit (AVX-512 floats)") {
  // Values spread over 2^±30, so that another order of the additions gives other bits; and
  // the special values, which pass through the same additions.
  ad::Rng rng(17);
  std::size_t differ = 0, checked = 0;
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::max()};
  for (int t = 0; t < 20000; ++t) {
    alignas(64) float x[16][16];
    __m512 a[16];
    for (int q = 0; q < 16; ++q) {
      for (int l = 0; l < 16; ++l)
        x[q][l] = float(std::ldexp(rng.uniform(-1.0, 1.0), int(rng.below(61)) - 30));
      if (t % 7 == 0) x[q][rng.below(16)] = specials[rng.below(std::size(specials))];
      a[q] = _mm512_load_ps(x[q]);
    }
    alignas(64) float sums[16];
    _mm512_store_ps(sums, ad::kern::hadd16(a));
    for (int q = 0; q < 16; ++q, ++checked) {
      const float want = xsimd::hadd(xsimd::batch<float>::load_aligned(x[q]));
      differ += std::size_t(std::memcmp(&want, &sums[q], sizeof want) != 0 && !(std::isnan(want) && std::isnan(sums[q])));
    }
  }
  CHECK(checked == 320000);
  CHECK(differ == 0);
  // and a left-to-right sum of the same lanes does differ, so the check can tell orders apart
  alignas(64) float x[16];
  std::size_t other = 0;
  for (int t = 0; t < 1000; ++t) {
    float seq = 0;
    for (float& v : x) v = float(std::ldexp(rng.uniform(-1.0, 1.0), int(rng.below(61)) - 30)), seq += v;
    other += std::size_t(seq != xsimd::hadd(xsimd::batch<float>::load_aligned(x)));
  }
  CHECK(other > 100);  // (493 of the 1000 with this seed)
}
#endif

/// kern::tanh: for floats a rational approximation, within 3·10⁻⁷ of tanh relative to it, the
/// same bits in a batch and as a scalar, exactly ±1 where the nearest float to tanh is, x itself
/// for tiny x, NaN for NaN; for doubles xsimd::tanh's bits.
TEST_CASE("kern::tanh: float within 3e-7 relative of tanh, batch and scalar alike, double as xsimd") {
  using V = xsimd::batch<float>;
  constexpr std::size_t W = V::size;
  std::vector<float> xs;
  for (float x = 1e-5f; x < 40.0f; x *= 1.0001f) xs.push_back(x), xs.push_back(-x);
  for (float x : {0.0f, -0.0f, 3e-4f, 4e-4f, 9.0f, 9.02f, 9.03f, 1e30f, std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min()})
    xs.push_back(x), xs.push_back(-x);
  while (xs.size() % W) xs.push_back(0.5f);
  double worst = 0;
  std::size_t scalar_differs = 0;
  float got[W];
  for (std::size_t i = 0; i < xs.size(); i += W) {
    ad::kern::tanh(V::load_unaligned(xs.data() + i)).store_unaligned(got);
    for (std::size_t l = 0; l < W; ++l) {
      const float x = xs[i + l];
      const double want = std::tanh(double(x));
      worst = std::max(worst, std::abs(double(got[l]) - want) / std::max(std::abs(want), 1e-300));
      scalar_differs += std::size_t(ad::kern::tanh(x) != got[l]);
      if (std::abs(x) >= 9.03f) CHECK(got[l] == (x > 0 ? 1.0f : -1.0f));
      if (std::abs(x) < 4e-4f) CHECK(std::memcmp(&got[l], &x, sizeof x) == 0);
    }
  }
  CHECK(worst < 3e-7);
  CHECK(worst > 0);  // it is an approximation: not tanh's correctly rounded value everywhere
  CHECK(scalar_differs == 0);
  CHECK(std::isnan(ad::kern::tanh(std::numeric_limits<float>::quiet_NaN())));
  float nan_in[W], nan_out[W];
  std::fill(nan_in, nan_in + W, std::numeric_limits<float>::quiet_NaN());
  ad::kern::tanh(V::load_unaligned(nan_in)).store_unaligned(nan_out);
  CHECK(std::isnan(nan_out[0]));
  CHECK(std::isnan(nan_out[W - 1]));

  using D = xsimd::batch<double>;
  double in[D::size], a[D::size], b[D::size];
  std::size_t double_differs = 0;
  for (double x = -20; x < 20; x += 0.001) {
    for (std::size_t l = 0; l < D::size; ++l) in[l] = x + double(l) * 1e-4;
    ad::kern::tanh(D::load_unaligned(in)).store_unaligned(a);
    xsimd::tanh(D::load_unaligned(in)).store_unaligned(b);
    double_differs += std::size_t(std::memcmp(a, b, sizeof a) != 0);
  }
  CHECK(double_differs == 0);
  CHECK(ad::kern::tanh(0.3) == xsimd::tanh(0.3));
}

/// kern::fma rounds once, as the GEMM kernels' speed needs (one vfmadd; xsimd 8.1's AVX-512 fma is
/// a multiply and an add, fused by GCC but not by clang): with a = b = 1 + ε, a·b = 1 + 2ε + ε²,
/// so a·b − (1 + 2ε) is ε² fused and 0 rounded twice.
TEST_CASE_TEMPLATE("kern::fma rounds once, on batches and scalars", T, float, double) {
  using V = xsimd::batch<T>;
  const T eps = std::numeric_limits<T>::epsilon();
  const T a = T(1) + eps, c = -(T(1) + T(2) * eps);
  T lanes[V::size];
  ad::kern::fma(V(a), V(a), V(c)).store_unaligned(lanes);
  CHECK(lanes[0] == eps * eps);
  CHECK(lanes[V::size - 1] == eps * eps);
  CHECK(ad::kern::fma(a, a, c) == eps * eps);
}
