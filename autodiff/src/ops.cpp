// Every op: its output shape, its forward, and its vector–Jacobian product
// (VJP), side by side. Notation: y is the op's output, ȳ = ∂L/∂y its adjoint,
// and ā += (∂y/∂a)ᵀ ȳ is what the VJP adds to input a's adjoint. Each op's struct is
// registered by its line in autodiff/ops.def (the table at the end of this file is built
// from that list), and reads its constants from the node's Attrs (c.attrs()).
//
// When an op is the first to reach ā in a backward pass (ā is "fresh"), it assigns
// ā = (∂y/∂a)ᵀ ȳ instead, which saves zero-filling ā beforehand; kern::put*() and put*()
// below make that choice for the elementwise VJPs, and the GEMMs use β = 0.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>

#include <fmt/format.h>

#include "autodiff/ops.hpp"
#include "kernels.hpp"
#include "op_table.hpp"
#include "spline.hpp"

namespace ad {
namespace {

using Shape = std::array<std::size_t, 2>;

/// What an op's functions see: its inputs, output and adjoints as raw pointers.
template <class T>
struct Ctx {
  Tape<T>& tape;
  Node<T>& node;
  const Array<T>& in(int k) const { return tape.value(node.in[k]); }
  bool has(int k) const { return node.in[k] >= 0; }
  const T* x(int k) const { return in(k).data(); }
  std::size_t rows(int k) const { return in(k).shape()[0]; }
  std::size_t cols(int k) const { return in(k).shape()[1]; }
  const Attrs<T>& attrs() const { return node.attrs; }
  T* y() { return node.value.data(); }
  const T* gy() const { return node.grad.data(); }
  std::size_t n() const { return node.value.size(); }
  std::size_t out_rows() const { return node.value.shape()[0]; }
  std::size_t out_cols() const { return node.value.shape()[1]; }
  /// The adjoint of input k to accumulate into, or nullptr if it needs none.
  T* gx(int k) {
    Array<T>* g = tape.grad_sink(node.in[k]);
    return g ? g->data() : nullptr;
  }
  /// The same for a VJP that writes every element: fresh = true means assign (ā = …, the
  /// old contents are stale), false means add (ā += …). See Tape::grad_sink.
  T* gx(int k, bool& fresh) {
    Array<T>* g = tape.grad_sink(node.in[k], fresh);
    return g ? g->data() : nullptr;
  }
};

// ā ⟵ u, f(u, v) or f(u, v, w) elementwise over n entries, for input k: assigned when ā is
// fresh, added otherwise (kern::put*); nothing when input k needs no gradient.
template <class T>
void put(Ctx<T>& c, int k, const T* u, std::size_t n) {
  bool fresh;
  if (T* g = c.gx(k, fresh)) kern::put(fresh, u, g, n);
}
template <class T, class F>
void put2(Ctx<T>& c, int k, const T* u, const T* v, std::size_t n, F f) {
  bool fresh;
  if (T* g = c.gx(k, fresh)) kern::put2(fresh, u, v, g, n, f);
}
template <class T, class F>
void put3(Ctx<T>& c, int k, const T* u, const T* v, const T* w, std::size_t n, F f) {
  bool fresh;
  if (T* g = c.gx(k, fresh)) kern::put3(fresh, u, v, w, g, n, f);
}

/// g ⟵ Σ_i f(u_i, v_i) over the rows of two m×n arrays (a bias or row-vector adjoint):
/// assigned when fresh (row 0 assigns, the others add), else added.
template <class T, class F>
void put_col_sums(T* g, bool fresh, const T* u, const T* v, std::size_t m, std::size_t n, F f) {
  if (fresh && m == 0) std::fill(g, g + n, T(0));
  for (std::size_t i = 0; i < m; ++i) kern::put2(fresh && i == 0, u + i * n, v + i * n, g, n, f);
}
template <class T>
void put_col_sums(T* g, bool fresh, const T* rows, std::size_t m, std::size_t n) {
  put_col_sums(g, fresh, rows, rows, m, n, [](auto a, auto) { return a; });
}

template <class T>
std::string dims(const Array<T>& a) {
  return fmt::format("{}×{}", a.shape()[0], a.shape()[1]);
}

template <class T>
[[noreturn]] void shape_error(const Ctx<T>& c, const std::string& why) {
  std::string shapes;
  for (int k = 0; k < 3; ++k)
    if (c.has(k)) shapes += (shapes.empty() ? "" : " and ") + dims(c.in(k));
  throw ShapeError(fmt::format("{}: {} (input shapes {})", op_name(c.node.op), why, shapes));
}

template <class T>
Shape same_as_input(Ctx<T> c) { return {c.rows(0), c.cols(0)}; }

template <class T>
Shape equal_shapes(Ctx<T> c) {
  if (c.in(0).shape() != c.in(1).shape()) shape_error(c, "shapes differ");
  return {c.rows(0), c.cols(0)};
}

template <class T>
Shape row_broadcast(Ctx<T> c) {
  if (c.rows(1) != 1 || c.cols(1) != c.cols(0)) shape_error(c, "the second input must be a 1×n row matching the columns");
  return {c.rows(0), c.cols(0)};
}

// Adapters from the table's signature to the op structs' Ctx-based functions.
template <class T, class Impl> Shape shape_of(Tape<T>& t, const Node<T>& n) {
  return Impl::shape(Ctx<T>{t, const_cast<Node<T>&>(n)});
}
template <class T, class Impl> void forward_of(Tape<T>& t, Node<T>& n) {
  Ctx<T> c{t, n};
  Impl::forward(c);
}
template <class T, class Impl> void vjp_of(Tape<T>& t, Node<T>& n) {
  Ctx<T> c{t, n};
  Impl::vjp(c);
}

// ---------------------------------------------------------------- leaves
// Leaves hold values recorded by Tape::constant/variable/param; nothing to do.
template <class T> struct Leaf {
  static Shape shape(Ctx<T> c) { return {c.out_rows(), c.out_cols()}; }
  static void forward(Ctx<T>&) {}
  static void vjp(Ctx<T>&) {}
};

// ---------------------------------------------------------------- elementwise arithmetic
// y = a + b                      ā += ȳ,  b̄ += ȳ
template <class T> struct Add {
  static Shape shape(Ctx<T> c) { return equal_shapes(c); }
  static void forward(Ctx<T>& c) { kern::map2(c.x(0), c.x(1), c.y(), c.n(), [](auto a, auto b) { return a + b; }); }
  static void vjp(Ctx<T>& c) {
    put(c, 0, c.gy(), c.n());
    put(c, 1, c.gy(), c.n());
  }
};

// y = a − b                      ā += ȳ,  b̄ −= ȳ
template <class T> struct Sub {
  static Shape shape(Ctx<T> c) { return equal_shapes(c); }
  static void forward(Ctx<T>& c) { kern::map2(c.x(0), c.x(1), c.y(), c.n(), [](auto a, auto b) { return a - b; }); }
  static void vjp(Ctx<T>& c) {
    put(c, 0, c.gy(), c.n());
    put2(c, 1, c.gy(), c.gy(), c.n(), [](auto g, auto) { return -g; });
  }
};

// y = a ⊙ b                      ā += ȳ ⊙ b,  b̄ += ȳ ⊙ a
template <class T> struct Mul {
  static Shape shape(Ctx<T> c) { return equal_shapes(c); }
  static void forward(Ctx<T>& c) { kern::map2(c.x(0), c.x(1), c.y(), c.n(), [](auto a, auto b) { return a * b; }); }
  static void vjp(Ctx<T>& c) {
    auto times = [](auto g, auto v) { return g * v; };
    put2(c, 0, c.gy(), c.x(1), c.n(), times);
    put2(c, 1, c.gy(), c.x(0), c.n(), times);
  }
};

// y = a ⊘ b                      ā += ȳ ⊘ b,  b̄ −= ȳ ⊙ y ⊘ b   (∂(a/b)/∂b = −a/b² = −y/b)
template <class T> struct Div {
  static Shape shape(Ctx<T> c) { return equal_shapes(c); }
  static void forward(Ctx<T>& c) { kern::map2(c.x(0), c.x(1), c.y(), c.n(), [](auto a, auto b) { return a / b; }); }
  static void vjp(Ctx<T>& c) {
    put2(c, 0, c.gy(), c.x(1), c.n(), [](auto g, auto b) { return g / b; });
    put3(c, 1, c.gy(), c.node.value.data(), c.x(1), c.n(), [](auto g, auto y, auto b) { return -g * y / b; });
  }
};

// y = −a                         ā −= ȳ
template <class T> struct Neg {
  static Shape shape(Ctx<T> c) { return same_as_input(c); }
  static void forward(Ctx<T>& c) { kern::map(c.x(0), c.y(), c.n(), [](auto a) { return -a; }); }
  static void vjp(Ctx<T>& c) {
    put2(c, 0, c.gy(), c.gy(), c.n(), [](auto g, auto) { return -g; });
  }
};

// y = a + s                      ā += ȳ
template <class T> struct AddScalar {
  static Shape shape(Ctx<T> c) { return same_as_input(c); }
  static void forward(Ctx<T>& c) {
    const T s = c.attrs().scalar;
    kern::map(c.x(0), c.y(), c.n(), [s](auto a) { return a + decltype(a)(s); });
  }
  static void vjp(Ctx<T>& c) {
    put(c, 0, c.gy(), c.n());
  }
};

// y = a · s                      ā += s ȳ
template <class T> struct MulScalar {
  static Shape shape(Ctx<T> c) { return same_as_input(c); }
  static void forward(Ctx<T>& c) {
    const T s = c.attrs().scalar;
    kern::map(c.x(0), c.y(), c.n(), [s](auto a) { return a * decltype(a)(s); });
  }
  static void vjp(Ctx<T>& c) {
    const T s = c.attrs().scalar;
    put2(c, 0, c.gy(), c.gy(), c.n(), [s](auto g, auto) { return g * decltype(g)(s); });
  }
};

// y = s − a                      ā −= ȳ
template <class T> struct RSubScalar {
  static Shape shape(Ctx<T> c) { return same_as_input(c); }
  static void forward(Ctx<T>& c) {
    const T s = c.attrs().scalar;
    kern::map(c.x(0), c.y(), c.n(), [s](auto a) { return decltype(a)(s) - a; });
  }
  static void vjp(Ctx<T>& c) {
    put2(c, 0, c.gy(), c.gy(), c.n(), [](auto g, auto) { return -g; });
  }
};

// y = s / a                      ā −= ȳ · y / a      (∂(s/a)/∂a = −s/a² = −y/a)
template <class T> struct RDivScalar {
  static Shape shape(Ctx<T> c) { return same_as_input(c); }
  static void forward(Ctx<T>& c) {
    const T s = c.attrs().scalar;
    kern::map(c.x(0), c.y(), c.n(), [s](auto a) { return decltype(a)(s) / a; });
  }
  static void vjp(Ctx<T>& c) {
    put3(c, 0, c.gy(), c.node.value.data(), c.x(0), c.n(), [](auto g, auto y, auto a) { return -g * y / a; });
  }
};

// ---------------------------------------------------------------- row broadcasts
// y_i = x_i + r  (each row i)     x̄ += ȳ,  r̄ += Σ_i ȳ_i
template <class T> struct AddRow {
  static Shape shape(Ctx<T> c) { return row_broadcast(c); }
  static void forward(Ctx<T>& c) {
    const std::size_t m = c.rows(0), n = c.cols(0);
    for (std::size_t i = 0; i < m; ++i)
      kern::map2(c.x(0) + i * n, c.x(1), c.y() + i * n, n, [](auto a, auto b) { return a + b; });
  }
  static void vjp(Ctx<T>& c) {
    const std::size_t m = c.rows(0), n = c.cols(0);
    put(c, 0, c.gy(), m * n);
    bool fresh;
    if (T* gr = c.gx(1, fresh)) put_col_sums(gr, fresh, c.gy(), m, n);
  }
};

// y_i = x_i ⊙ r                  x̄_i += ȳ_i ⊙ r,  r̄ += Σ_i ȳ_i ⊙ x_i
template <class T> struct MulRow {
  static Shape shape(Ctx<T> c) { return row_broadcast(c); }
  static void forward(Ctx<T>& c) {
    const std::size_t m = c.rows(0), n = c.cols(0);
    for (std::size_t i = 0; i < m; ++i)
      kern::map2(c.x(0) + i * n, c.x(1), c.y() + i * n, n, [](auto a, auto b) { return a * b; });
  }
  static void vjp(Ctx<T>& c) {
    const std::size_t m = c.rows(0), n = c.cols(0);
    auto times = [](auto g, auto v) { return g * v; };
    bool fresh;
    if (T* gx = c.gx(0, fresh))
      for (std::size_t i = 0; i < m; ++i) kern::put2(fresh, c.gy() + i * n, c.x(1), gx + i * n, n, times);
    if (T* gr = c.gx(1, fresh)) put_col_sums(gr, fresh, c.gy(), c.x(0), m, n, times);
  }
};

// ---------------------------------------------------------------- matmul
// C = op(A) op(B). With C̄ the adjoint, the four cases of the VJP are
//   C = A B:    Ā += C̄ Bᵀ,    B̄ += Aᵀ C̄
//   C = Aᵀ B:   Ā += B C̄ᵀ,    B̄ += A C̄
//   C = A Bᵀ:   Ā += C̄ B,     B̄ += C̄ᵀ A
//   C = Aᵀ Bᵀ:  Ā += Bᵀ C̄ᵀ,   B̄ += C̄ᵀ Aᵀ
// each one gemm with β = 1, accumulating straight into the adjoint (β = 0 when the adjoint is fresh).
template <class T> struct MatMul {
  static Shape shape(Ctx<T> c) {
    const bool ta = c.attrs().trans_a, tb = c.attrs().trans_b;
    const std::size_t m = ta ? c.cols(0) : c.rows(0), ka = ta ? c.rows(0) : c.cols(0);
    const std::size_t kb = tb ? c.cols(1) : c.rows(1), n = tb ? c.rows(1) : c.cols(1);
    if (ka != kb)
      shape_error(c, fmt::format("inner dimensions {} and {} differ (transposes: {}, {})", ka, kb, ta, tb));
    return {m, n};
  }
  static void forward(Ctx<T>& c) {
    const bool ta = c.attrs().trans_a, tb = c.attrs().trans_b;
    const int m = int(c.out_rows()), n = int(c.out_cols()), k = int(ta ? c.rows(0) : c.cols(0));
    kern::gemm(ta, tb, m, n, k, T(1), c.x(0), int(c.cols(0)), c.x(1), int(c.cols(1)), T(0), c.y(), n);
  }
  static void vjp(Ctx<T>& c) {
    const bool ta = c.attrs().trans_a, tb = c.attrs().trans_b;
    const int ar = int(c.rows(0)), ac = int(c.cols(0)), br = int(c.rows(1)), bc = int(c.cols(1));
    const int m = int(c.out_rows()), n = int(c.out_cols()), k = ta ? ar : ac;
    const T* a = c.x(0);
    const T* b = c.x(1);
    const T* g = c.gy();
    bool fresh;
    if (T* ga = c.gx(0, fresh)) {
      const T beta = fresh ? T(0) : T(1);
      if (!ta) kern::gemm(false, !tb, m, k, n, T(1), g, n, b, bc, beta, ga, ac);  // C̄ op(B)ᵀ: m×k
      else kern::gemm(tb, true, k, m, n, T(1), b, bc, g, n, beta, ga, ac);        // op(B) C̄ᵀ: k×m
    }
    if (T* gb = c.gx(1, fresh)) {
      const T beta = fresh ? T(0) : T(1);
      if (!tb) kern::gemm(!ta, false, k, n, m, T(1), a, ac, g, n, beta, gb, bc);  // op(A)ᵀ C̄: k×n
      else kern::gemm(true, ta, n, k, m, T(1), g, n, a, ac, beta, gb, bc);        // C̄ᵀ op(A): n×k
    }
    (void)ar, (void)br;
  }
};

// ---------------------------------------------------------------- reductions
// y = Σ_ij a_ij (1×1)             ā_ij += ȳ
// y = (1/N) Σ_ij a_ij             ā_ij += ȳ / N
template <class T, bool Mean = false> struct SumAll {
  static Shape shape(Ctx<T>) { return {1, 1}; }
  static void forward(Ctx<T>& c) {
    const std::size_t n = c.in(0).size();
    const T s = kern::sum(c.x(0), n);
    c.y()[0] = Mean ? s / T(n) : s;
  }
  static void vjp(Ctx<T>& c) {
    const std::size_t n = c.in(0).size();
    const T g = Mean ? c.gy()[0] / T(n) : c.gy()[0];
    bool fresh;
    if (T* ga = c.gx(0, fresh)) {
      if (fresh) std::fill(ga, ga + n, g);
      else kern::acc2(ga, ga, ga, n, [g](auto a, auto) { return decltype(a)(g); });
    }
  }
};
template <class T> using MeanAll = SumAll<T, true>;

// y = Σ_ij (a_ij − b_ij)² (1×1)   ā += 2ȳ (a − b),  b̄ −= 2ȳ (a − b)
// sum(square(a − b)) in one node: the same differences, squares and order of additions as
// those three ops (and so their bits), without a − b and its square as tape values. The path
// energy sums one per layer over the whole batch: at D = 1024 the three ops and their VJPs
// were ~2.7 % of a training step, passing over three batch-sized arrays each way.
template <class T> struct SumSqDiff {
  static Shape shape(Ctx<T> c) {
    equal_shapes(c);
    return {1, 1};
  }
  static void forward(Ctx<T>& c) {  // kern::sum's order over the squares, each rounded before it is added
    c.y()[0] = kern::sum2(c.x(0), c.x(1), c.in(0).size(), [](auto a, auto b) {
      const auto d = a - b;
      return kern::rounded(d * d);
    });
  }
  static void vjp(Ctx<T>& c) {
    const T g = c.gy()[0];
    const std::size_t n = c.in(0).size();
    // (2d)ȳ as square's VJP has it, rounded before sub's VJP adds it to an adjoint
    const auto twice = [g](auto a, auto b) { return kern::rounded(decltype(a)(2) * (a - b) * decltype(a)(g)); };
    put2(c, 0, c.x(0), c.x(1), n, twice);
    put2(c, 1, c.x(0), c.x(1), n, [twice](auto a, auto b) { return -twice(a, b); });
  }
};

// y_i = Σ_j a_ij (m×1)            ā_ij += ȳ_i        (mean: divided by n)
template <class T, bool Mean = false> struct RowSums {
  static Shape shape(Ctx<T> c) { return {c.rows(0), 1}; }
  static void forward(Ctx<T>& c) {
    const std::size_t m = c.rows(0), n = c.cols(0);
    for (std::size_t i = 0; i < m; ++i) {
      const T s = kern::sum(c.x(0) + i * n, n);
      c.y()[i] = Mean ? s / T(n) : s;
    }
  }
  static void vjp(Ctx<T>& c) {
    const std::size_t m = c.rows(0), n = c.cols(0);
    bool fresh;
    T* ga = c.gx(0, fresh);
    if (!ga) return;
    for (std::size_t i = 0; i < m; ++i) {
      const T g = Mean ? c.gy()[i] / T(n) : c.gy()[i];
      if (fresh) std::fill(ga + i * n, ga + (i + 1) * n, g);
      else kern::acc2(ga + i * n, ga + i * n, ga + i * n, n, [g](auto a, auto) { return decltype(a)(g); });
    }
  }
};
template <class T> using RowMeans = RowSums<T, true>;

// y_j = Σ_i a_ij (1×n)            ā_ij += ȳ_j        (mean: divided by m)
template <class T, bool Mean = false> struct ColSums {
  static Shape shape(Ctx<T> c) { return {1, c.cols(0)}; }
  static void forward(Ctx<T>& c) {
    const std::size_t m = c.rows(0), n = c.cols(0);
    std::fill(c.y(), c.y() + n, T(0));
    for (std::size_t i = 0; i < m; ++i) kern::acc(c.x(0) + i * n, c.y(), n);
    if (Mean) kern::map(c.y(), c.y(), n, [m](auto s) { return s / decltype(s)(T(m)); });
  }
  static void vjp(Ctx<T>& c) {
    const std::size_t m = c.rows(0), n = c.cols(0);
    bool fresh;
    T* ga = c.gx(0, fresh);
    if (!ga) return;
    const T scale = Mean ? T(1) / T(m) : T(1);
    auto scaled = [scale](auto g, auto) { return g * decltype(g)(scale); };
    for (std::size_t i = 0; i < m; ++i) kern::put2(fresh, c.gy(), c.gy(), ga + i * n, n, scaled);
  }
};
template <class T> using ColMeans = ColSums<T, true>;

// ---------------------------------------------------------------- activations
// Each activation's derivative is written in terms of its output y, so that the
// fused linear+activation node needs no stored pre-activation:
//   tanh        y = tanh z                  y' = 1 − y²
//   sigmoid     y = 1 / (1 + e^{−z})        y' = y (1 − y)
//   relu        y = max(z, 0)               y' = [y > 0]
//   leaky_relu  y = z > 0 ? z : s z         y' = y > 0 ? 1 : s      (s > 0)
//   softplus    y = log(1 + e^z)            y' = σ(z) = 1 − e^{−y} = −expm1(−y)
//   elu         y = z > 0 ? z : α(e^z − 1)  y' = y > 0 ? 1 : y + α  (α > 0)
template <class T, class Run>
void with_activation(Activation act, T s, Run run) {  // run(f) with f the activation, for batches and scalars
  switch (act) {
    case Activation::identity: run([](auto v) { return v; }); return;
    case Activation::tanh: run([](auto v) { return kern::tanh(v); }); return;
    case Activation::sigmoid: run([](auto v) { using V = decltype(v); return V(1) / (V(1) + kern::exp(-v)); }); return;
    case Activation::relu: run([](auto v) { return xsimd::max(v, decltype(v)(0)); }); return;
    case Activation::leaky_relu:
      run([s](auto v) { using V = decltype(v); return kern::where(v > V(0), v, V(s) * v); });
      return;
    case Activation::softplus:  // max(z, 0) + log1p(e^{−|z|}): no overflow for large z
      run([](auto v) {
        using V = decltype(v);
        return xsimd::max(v, V(0)) + xsimd::log1p(kern::exp(-xsimd::abs(v)));
      });
      return;
    case Activation::elu:
      run([s](auto v) { using V = decltype(v); return kern::where(v > V(0), v, V(s) * xsimd::expm1(v)); });
      return;
  }
}

template <class T, class Run>
void with_activation_slope(Activation act, T s, Run run) {  // run(f) with f(y) = act'(z), from the output y
  switch (act) {
    case Activation::identity: run([](auto v) { return decltype(v)(1); }); return;
    case Activation::tanh: run([](auto v) { return decltype(v)(1) - v * v; }); return;
    case Activation::sigmoid: run([](auto v) { return v * (decltype(v)(1) - v); }); return;
    case Activation::relu: run([](auto v) { using V = decltype(v); return kern::where(v > V(0), V(1), V(0)); }); return;
    case Activation::leaky_relu:
      run([s](auto v) { using V = decltype(v); return kern::where(v > V(0), V(1), V(s)); });
      return;
    case Activation::softplus: run([](auto v) { return -xsimd::expm1(-v); }); return;
    case Activation::elu:
      run([s](auto v) { using V = decltype(v); return kern::where(v > V(0), V(1), v + V(s)); });
      return;
  }
}

/// y = act(z), n entries (y may be z).
template <class T>
void activate(Activation act, T s, const T* z, T* y, std::size_t n) {
  if (act == Activation::identity) {
    if (y != z) std::copy(z, z + n, y);
    return;
  }
  with_activation(act, s, [&](auto f) { kern::map(z, y, n, f); });
}

/// y_i = act(y_i + b) for each row y_i of an m×n array and a 1×n bias b, in one pass.
template <class T>
void add_bias_activate(Activation act, T s, const T* b, T* y, std::size_t m, std::size_t n) {
  with_activation(act, s, [&](auto f) {
    for (std::size_t i = 0; i < m; ++i)
      kern::map2(y + i * n, b, y + i * n, n, [f](auto z, auto bias) { return f(z + bias); });
  });
}

/// (ȳ, y) ↦ ȳ · act'(z), given dydz(y) = act'(z): an activation's VJP, element by element.
template <class F>
auto times_slope(F dydz) {
  return [dydz](auto g, auto v) { return g * dydz(v); };
}

/// gz ⟵ ȳ ⊙ act'(y): assigned (gz = …, a fresh adjoint or a workspace) or added (gz += …).
template <class T>
void activation_vjp(bool assign, Activation act, T s, const T* y, const T* gy, T* gz, std::size_t n) {
  with_activation_slope(act, s, [&](auto dydz) { kern::put2(assign, gy, y, gz, n, times_slope(dydz)); });
}

// y = act(a), the activation and its slope/α held by the node (attrs act, scalar).
template <class T> struct Act {
  static Shape shape(Ctx<T> c) {
    // The VJP reads the slope from the output's sign, which only works for slope/α ≥ 0.
    const Activation act = c.attrs().act;
    const T s = c.attrs().scalar;
    if ((act == Activation::leaky_relu || act == Activation::elu) && !(s >= T(0)))
      shape_error(c, fmt::format("the {} must be ≥ 0, got {}", act == Activation::elu ? "α" : "slope", s));
    return same_as_input(c);
  }
  static void forward(Ctx<T>& c) { activate(c.attrs().act, c.attrs().scalar, c.x(0), c.y(), c.n()); }
  static void vjp(Ctx<T>& c) {
    bool fresh;
    if (T* ga = c.gx(0, fresh)) activation_vjp(fresh, c.attrs().act, c.attrs().scalar, c.node.value.data(), c.gy(), ga, c.n());
  }
};

// y = e^a                        ā += ȳ ⊙ y
template <class T> struct Exp {
  static Shape shape(Ctx<T> c) { return same_as_input(c); }
  static void forward(Ctx<T>& c) { kern::map(c.x(0), c.y(), c.n(), [](auto a) { return kern::exp(a); }); }
  static void vjp(Ctx<T>& c) {
    put2(c, 0, c.gy(), c.node.value.data(), c.n(), [](auto g, auto y) { return g * y; });
  }
};

// y = log a                      ā += ȳ ⊘ a
template <class T> struct Log {
  static Shape shape(Ctx<T> c) { return same_as_input(c); }
  static void forward(Ctx<T>& c) { kern::map(c.x(0), c.y(), c.n(), [](auto a) { return xsimd::log(a); }); }
  static void vjp(Ctx<T>& c) {
    put2(c, 0, c.gy(), c.x(0), c.n(), [](auto g, auto a) { return g / a; });
  }
};

// y = a²                         ā += 2 a ȳ
template <class T> struct Square {
  static Shape shape(Ctx<T> c) { return same_as_input(c); }
  static void forward(Ctx<T>& c) { kern::map(c.x(0), c.y(), c.n(), [](auto a) { return a * a; }); }
  static void vjp(Ctx<T>& c) {
    put2(c, 0, c.gy(), c.x(0), c.n(), [](auto g, auto a) { return decltype(a)(2) * a * g; });
  }
};

// y = √a                         ā += ȳ / (2y)
template <class T> struct Sqrt {
  static Shape shape(Ctx<T> c) { return same_as_input(c); }
  static void forward(Ctx<T>& c) { kern::map(c.x(0), c.y(), c.n(), [](auto a) { return xsimd::sqrt(a); }); }
  static void vjp(Ctx<T>& c) {
    put2(c, 0, c.gy(), c.node.value.data(), c.n(), [](auto g, auto y) { return g / (decltype(y)(2) * y); });
  }
};

// y = a^p                        ā += ȳ · p a^{p−1}
template <class T> struct Pow {
  static Shape shape(Ctx<T> c) { return same_as_input(c); }
  static void forward(Ctx<T>& c) {
    const T p = c.attrs().scalar;
    kern::map(c.x(0), c.y(), c.n(), [p](auto a) { return xsimd::pow(a, decltype(a)(p)); });
  }
  static void vjp(Ctx<T>& c) {
    const T p = c.attrs().scalar;
    put2(c, 0, c.gy(), c.x(0), c.n(), [p](auto g, auto a) {
      using V = decltype(a);
      return g * V(p) * xsimd::pow(a, V(p - T(1)));
    });
  }
};

// y = min(max(a, lo), hi)        ā += ȳ · [lo ≤ a ≤ hi]
template <class T> struct Clamp {
  static Shape shape(Ctx<T> c) {
    const T lo = c.attrs().lo, hi = c.attrs().hi;
    if (!(lo <= hi)) shape_error(c, fmt::format("lower bound {} exceeds upper bound {}", lo, hi));
    return same_as_input(c);
  }
  static void forward(Ctx<T>& c) {
    const T lo = c.attrs().lo, hi = c.attrs().hi;
    kern::map(c.x(0), c.y(), c.n(), [lo, hi](auto a) {
      using V = decltype(a);
      return xsimd::min(xsimd::max(a, V(lo)), V(hi));
    });
  }
  static void vjp(Ctx<T>& c) {
    const T lo = c.attrs().lo, hi = c.attrs().hi;
    put2(c, 0, c.gy(), c.x(0), c.n(), [lo, hi](auto g, auto a) {
      using V = decltype(a);
      return kern::where(a >= V(lo), kern::where(a <= V(hi), g, V(0)), V(0));
    });
  }
};

// y = c · tanh(a / c)            ā += ȳ (1 − (y/c)²)
template <class T> struct SoftClamp {
  static Shape shape(Ctx<T> c) {
    const T k = c.attrs().scalar;
    if (!(k > T(0))) shape_error(c, fmt::format("the bound c must be positive, got {}", k));
    return same_as_input(c);
  }
  static void forward(Ctx<T>& c) {
    const T k = c.attrs().scalar;
    kern::map(c.x(0), c.y(), c.n(), [k](auto a) { using V = decltype(a); return V(k) * kern::tanh(a / V(k)); });
  }
  static void vjp(Ctx<T>& c) {
    const T inv = T(1) / c.attrs().scalar;
    put2(c, 0, c.gy(), c.node.value.data(), c.n(), [inv](auto g, auto y) {
      using V = decltype(y);
      const V t = y * V(inv);
      return g * (V(1) - t * t);
    });
  }
};

// ---------------------------------------------------------------- dropout
// y = a ⊙ m / (1 − p)             ā += ȳ ⊙ m / (1 − p)
// m_ij = dropout_keeps(seed, call, row_offset + i, j, p), with p = attrs.scalar (rounded to T)
// and call = attrs.call. The scaled mask is kept in the node's scratch (reused across steps),
// so the VJP does not depend on the stream.
template <class T> struct Dropout {
  static Shape shape(Ctx<T> c) {
    const T p = c.attrs().scalar;
    if (!(p >= T(0) && p < T(1))) shape_error(c, fmt::format("the rate p must be in [0, 1), got {}", p));
    return same_as_input(c);
  }
  static void forward(Ctx<T>& c) {
    const auto& stream = c.tape.dropout_stream();
    const double p = double(c.attrs().scalar);
    const std::uint32_t call = c.attrs().call;
    const std::size_t m = c.rows(0), n = c.cols(0);
    c.tape.fit(c.node.scratch, m, n);
    T* mask = c.node.scratch.data();
    const T scale = T(1.0 / (1.0 - p));
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j)
        mask[i * n + j] = dropout_keeps(stream.seed, call, stream.row_offset + i, j, p) ? scale : T(0);
    kern::map2(c.x(0), mask, c.y(), c.n(), [](auto a, auto k) { return a * k; });
  }
  static void vjp(Ctx<T>& c) {
    put2(c, 0, c.gy(), c.node.scratch.data(), c.n(), [](auto g, auto k) { return g * k; });
  }
};

// ---------------------------------------------------------------- columns
// y[:, j] = a[:, cols[j]]          ā[:, cols[j]] += ȳ[:, j]
template <class T> struct TakeCols {
  static Shape shape(Ctx<T> c) {
    for (int j : *c.attrs().cols)
      if (j < 0 || std::size_t(j) >= c.cols(0)) shape_error(c, fmt::format("column index {} out of range", j));
    return {c.rows(0), c.attrs().cols->size()};
  }
  static void forward(Ctx<T>& c) {
    const std::vector<int>& idx = *c.attrs().cols;
    const std::size_t m = c.rows(0), n = c.cols(0), k = idx.size();
    const T* x = c.x(0);
    T* y = c.y();
    if (k == 1) {  // a d = 2 coupling's one column
      kern::put_block(true, m, 1, x + idx[0], n, y, 1);
      return;
    }
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < k; ++j) y[i * k + j] = x[i * n + std::size_t(idx[j])];
  }
  static void vjp(Ctx<T>& c) {
    const std::vector<int>& idx = *c.attrs().cols;
    const std::size_t m = c.rows(0), n = c.cols(0), k = idx.size();
    bool fresh;
    T* ga = c.gx(0, fresh);
    if (!ga) return;
    const T* gy = c.gy();
    for (std::size_t i = 0; i < m; ++i) {
      T* row = ga + i * n;
      if (fresh)  // row by row, while it is in cache; a loop, not a memset call per 2-wide row
        for (std::size_t j = 0; j < n; ++j) row[j] = T(0);
      for (std::size_t j = 0; j < k; ++j) row[idx[j]] += gy[i * k + j];  // idx may repeat: add
    }
  }
};

// y = base; y[:, cols[j]] = src[:, j]
//   basē += ȳ on the columns not in cols,   src̄[:, j] += ȳ[:, cols[j]]
template <class T> struct ScatterCols {
  static Shape shape(Ctx<T> c) {
    const std::vector<int>& idx = *c.attrs().cols;
    if (c.rows(1) != c.rows(0) || c.cols(1) != idx.size())
      shape_error(c, fmt::format("the source must be {}×{} for {} column indices", c.rows(0), idx.size(), idx.size()));
    // Every record runs this check. A coupling's indices ascend, which makes them distinct in
    // one pass; only an unsorted list gets the pairwise search, which grew as k²: at D = 1024
    // (k = 512) ~0.6 % of `eval`, and at D = 16 384 it would cost more than the op itself.
    bool ascending = true;
    for (std::size_t j = 0; j < idx.size(); ++j) {
      if (idx[j] < 0 || std::size_t(idx[j]) >= c.cols(0)) shape_error(c, fmt::format("column index {} out of range", idx[j]));
      if (j > 0 && idx[j] <= idx[j - 1]) ascending = false;
    }
    if (!ascending)
      for (std::size_t j = 1; j < idx.size(); ++j)
        for (std::size_t q = 0; q < j; ++q)
          if (idx[q] == idx[j]) shape_error(c, fmt::format("column index {} appears twice", idx[j]));
    return {c.rows(0), c.cols(0)};
  }
  static void forward(Ctx<T>& c) {
    const std::vector<int>& idx = *c.attrs().cols;
    const std::size_t m = c.rows(0), n = c.cols(0), k = idx.size();
    std::copy(c.x(0), c.x(0) + m * n, c.y());
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < k; ++j) c.y()[i * n + idx[j]] = c.x(1)[i * k + j];
    // Remember which columns come from base (1) and which from src (0), for the VJP.
    Array<T>& keep = c.node.scratch;
    c.tape.fit(keep, 1, n);
    keep.fill(T(1));
    for (int j : idx) keep.data()[j] = T(0);
  }
  static void vjp(Ctx<T>& c) {
    const std::vector<int>& idx = *c.attrs().cols;
    const std::size_t m = c.rows(0), n = c.cols(0), k = idx.size();
    auto kept = [](auto g, auto keep) { return g * keep; };
    bool fresh;
    if (T* gb = c.gx(0, fresh))
      for (std::size_t i = 0; i < m; ++i) kern::put2(fresh, c.gy() + i * n, c.node.scratch.data(), gb + i * n, n, kept);
    if (T* gs = c.gx(1, fresh)) {  // the indices are distinct (checked in shape), so a fresh src̄ is fully assigned
      const T* gy = c.gy();
      for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < k; ++j) gs[i * k + j] = (fresh ? T(0) : gs[i * k + j]) + gy[i * n + std::size_t(idx[j])];
    }
  }
};

// y = [a | b]                     ā += ȳ[:, :na],  b̄ += ȳ[:, na:]
template <class T> struct ConcatCols {
  static Shape shape(Ctx<T> c) {
    if (c.rows(0) != c.rows(1)) shape_error(c, "row counts differ");
    return {c.rows(0), c.cols(0) + c.cols(1)};
  }
  static void forward(Ctx<T>& c) {
    const std::size_t m = c.rows(0), na = c.cols(0), nb = c.cols(1), n = na + nb;
    kern::put_block(true, m, na, c.x(0), na, c.y(), n);
    kern::put_block(true, m, nb, c.x(1), nb, c.y() + na, n);
  }
  static void vjp(Ctx<T>& c) {
    const std::size_t m = c.rows(0), na = c.cols(0), nb = c.cols(1), n = na + nb;
    bool fresh;
    if (T* ga = c.gx(0, fresh)) kern::put_block(fresh, m, na, c.gy(), n, ga, na);
    if (T* gb = c.gx(1, fresh)) kern::put_block(fresh, m, nb, c.gy() + na, n, gb, nb);
  }
};

// y = a[:, s : s + k]             ā[:, s : s + k] += ȳ      (s = attrs.start, k = attrs.count)
template <class T> struct SliceCols {
  static Shape shape(Ctx<T> c) {
    const std::size_t s = c.attrs().start, k = c.attrs().count;
    if (s > c.cols(0) || k > c.cols(0) - s)  // s + k > cols, without wrapping around
      shape_error(c, fmt::format("columns [{}, {}) exceed the input's {}", s, s + k, c.cols(0)));
    return {c.rows(0), k};
  }
  static void forward(Ctx<T>& c) {
    const std::size_t m = c.rows(0), n = c.cols(0), s = c.attrs().start, k = c.attrs().count;
    kern::put_block(true, m, k, c.x(0) + s, n, c.y(), k);
  }
  static void vjp(Ctx<T>& c) {
    const std::size_t m = c.rows(0), n = c.cols(0), s = c.attrs().start, k = c.attrs().count;
    bool fresh;
    T* ga = c.gx(0, fresh);
    if (!ga) return;
    if (fresh)  // ā_i = [0 … 0 | ȳ_i | 0 … 0]: the columns outside the slice zeroed, row by row
      for (std::size_t i = 0; i < m; ++i) {
        T* row = ga + i * n;
        for (std::size_t j = 0; j < s; ++j) row[j] = T(0);
        for (std::size_t j = s + k; j < n; ++j) row[j] = T(0);
      }
    kern::put_block(fresh, m, k, c.gy(), k, ga + s, n);
  }
};

// ---------------------------------------------------------------- fused dense layer
// z = x Wᵀ + b,  y = act(z)   (x: m×in, W: out×in, b: 1×out)
//   z̄ = ȳ ⊙ act'(y),  b̄ += Σ_i z̄_i,  x̄ += z̄ W,  W̄ += z̄ᵀ x
// The forward is one GEMM with β = 0 and one pass y = act(z + b) (as fast as copying b into
// every row and using β = 1, and one pass fewer). z̄ is needed only inside the VJP, so it lives
// in the tape's workspace, one buffer shared by every layer, not in each node.
template <class T> struct Linear {
  static Shape shape(Ctx<T> c) {
    if (c.cols(1) != c.cols(0)) shape_error(c, fmt::format("x has {} columns but W has {} (W is out×in)", c.cols(0), c.cols(1)));
    if (c.has(2) && (c.rows(2) != 1 || c.cols(2) != c.rows(1)))
      shape_error(c, fmt::format("the bias must be 1×{}", c.rows(1)));
    return {c.rows(0), c.rows(1)};
  }
  static void forward(Ctx<T>& c) {
    const int m = int(c.rows(0)), in = int(c.cols(0)), out = int(c.rows(1));
    // y = act(x Wᵀ + b). A narrow input (in ≤ kern::kSmallKFused: shape A's 1): all in the
    // small-k kernel's stores. Otherwise + b in the GEMM's own stores where its packed kernel
    // runs the shape, then act(y) (nothing for the identity), or act(y + b) in one pass where
    // the bias is not in yet. The same operations in the same order on every path.
    const T* b = c.has(2) ? c.x(2) : nullptr;
    bool done = false;
    with_activation(c.attrs().act, c.attrs().scalar, [&](auto f) {
      done = kern::gemm_small_k_act(false, true, m, out, in, c.x(0), in, c.x(1), in, c.y(), out, b, f);
    });
    if (done) return;
    if (kern::gemm_add_bias(false, true, m, out, in, T(1), c.x(0), in, c.x(1), in, T(0), c.y(), out, b))
      activate(c.attrs().act, c.attrs().scalar, c.y(), c.y(), c.n());
    else
      add_bias_activate(c.attrs().act, c.attrs().scalar, b, c.y(), std::size_t(m), std::size_t(out));
  }
  static void vjp(Ctx<T>& c) {
    const int m = int(c.rows(0)), in = int(c.cols(0)), out = int(c.rows(1));
    const T* gz = c.gy();
    bool fresh;  // a fresh adjoint is assigned: β = 0
    const bool identity = c.attrs().act == Activation::identity;
    if (!identity) {
      // z̄ = ȳ ⊙ act'(y) into the tape's workspace and b̄ = Σ_i z̄_i in the same pass, the sums
      // in registers (kern::map2_col_sums). The activation is picked once, outside the loops:
      // a call and a switch per row of 64 values put this VJP (outside its GEMMs) at 9.5 % of a
      // shape-A step; 7.4 % with one switch, each row added to b̄ from L1 after it was written.
      bool fresh_b = false;
      T* gb = c.has(2) ? c.gx(2, fresh_b) : nullptr;
      T* z_bar = c.tape.workspace(c.n());
      const std::size_t rows = std::size_t(m), cols = std::size_t(out);
      const T* y = c.node.value.data();
      const T* gy = c.gy();
      with_activation_slope(c.attrs().act, c.attrs().scalar, [&](auto dydz) {
        if (gb) kern::map2_col_sums(fresh_b, rows, cols, gy, y, z_bar, gb, times_slope(dydz));
        else
          for (std::size_t i = 0; i < rows; ++i)  // by rows: each row's scalar tail as above
            kern::map2(gy + i * cols, y + i * cols, z_bar + i * cols, cols, times_slope(dydz));
      });
      gz = z_bar;
    }
    if (T* gx = c.gx(0, fresh)) kern::gemm(false, false, m, in, out, T(1), gz, out, c.x(1), in, fresh ? T(0) : T(1), gx, in);
    T* gw = c.gx(1, fresh);
    const T beta_w = fresh ? T(0) : T(1);
    // Without an activation b̄ = Σ_i ȳ_i: taken in W̄'s pass over ȳ where the kernel can (one
    // read of a ȳ not in cache instead of two: the D = 1024 spline conditioner's output layer).
    // Each adjoint is claimed (Tape::grad_sink) just before it is written, x̄, W̄, then b̄, so
    // that inputs which are one node add up whatever the order.
    bool fresh_b = false;
    T* gb = identity && c.has(2) ? c.gx(2, fresh_b) : nullptr;
    if (gw && gb && kern::gemm_tn_col_sums(out, in, m, T(1), gz, out, c.x(0), in, beta_w, gw, in, gb, fresh_b)) return;
    if (gw) kern::gemm(true, false, out, in, m, T(1), gz, out, c.x(0), in, beta_w, gw, in);
    if (gb) put_col_sums(gb, fresh_b, gz, std::size_t(m), std::size_t(out));
  }
};

// ---------------------------------------------------------------- rational-quadratic spline
// [y | Σ_j log y'_j] = s_θ(x), one monotonic rational-quadratic spline per element of x
// (m×n), its 3K − 1 unnormalized parameters θ_ij in row i, columns j(3K−1) … (j+1)(3K−1)−1
// of θ (m × n(3K−1)); spline.hpp has the maths. The output is m×(n+1): the n transformed
// values, then each row's log-determinant Σ_j log |∂y_j/∂x_j|. K = attrs.bins, B = attrs.scalar;
// attrs.inverse runs the inverse, [x | −Σ_j log y'_j(x_j)] = s_θ⁻¹(y).
// VJP (forward): reverse mode through the bin's formula, then through the knots' cumulative
// sums, the softmaxes and the softplus (spline::reverse_bin, spline::reverse_knots):
//   x̄ = ȳ ∂y/∂x + ℓ̄ ∂ log y'/∂x,   θ̄ = ȳ ∂y/∂θ + ℓ̄ ∂ log y'/∂θ.
// VJP (inverse, x = s⁻¹(y), ℓ = −log s'(x)): with a = x̄ − ℓ̄ ∂ log s'/∂x,
//   ȳ = a / s'(x),   θ̄ = the forward VJP at x seeded with (−a / s'(x), −ℓ̄),
// by the implicit function theorem (dx = (dy − ∂s/∂θ dθ) / s').
// Outside [−B, B] the map is the identity: x̄ = ȳ, θ̄ = 0.
template <class T> struct RQSpline {
  static int bins(const Ctx<T>& c) { return c.attrs().bins; }
  static Shape shape(Ctx<T> c) {
    const std::size_t K = std::size_t(bins(c)), P = 3 * K - 1;
    if (c.rows(1) != c.rows(0) || c.cols(1) != c.cols(0) * P)
      shape_error(c, fmt::format("the spline parameters must be m×(n·(3K − 1)) = {}×{} for K = {} bins", c.rows(0),
                                 c.cols(0) * P, K));
    return {c.rows(0), c.cols(0) + 1};
  }

  template <class V> static V load(const T* p) {
    if constexpr (std::is_same_v<V, T>) return *p;
    else return V::load_unaligned(p);
  }
  template <class V> static void store(const V& v, T* p) {
    if constexpr (std::is_same_v<V, T>) *p = v;
    else v.store_unaligned(p);
  }

  static constexpr int kMaxLanes = int(kern::batch<T>::size);
  /// Whether blocks of V move a block's P parameters (lane l's at src + l·P) and their adjoints
  /// by row loads/stores and register transposes (AVX-512 floats: load_lanes, store_lanes) rather
  /// than gathers.
  template <class V> static constexpr bool kTransposes =
#if defined(__AVX512F__)
      std::is_same_v<V, kern::batch<float>> && kern::batch<float>::size == 16;
#else
      false;
#endif
  /// u[p] = parameter p of the block's lanes, and the converse for their adjoints gu[p] (added
  /// where add); only where kTransposes<V>.
  template <class V> static void load_lanes(const T* src, int P, V* u) {
#if defined(__AVX512F__)
    static_assert(sizeof(V) == sizeof(__m512));  // a batch is its one register (__m512 may alias)
    kern::load_lanes16(src, P, reinterpret_cast<__m512*>(u));
#else
    (void)src, (void)P, (void)u;
#endif
  }
  template <class V> static void store_lanes(const V* gu, int P, T* dst, bool add) {
#if defined(__AVX512F__)
    kern::store_lanes16(reinterpret_cast<const __m512*>(gu), P, dst, add);
#else
    (void)gu, (void)P, (void)dst, (void)add;
#endif
  }
  /// Where element e = i·n + j of x sits in the m×(n+1) output: its value at i(n + 1) + j, its
  /// row's log-determinant at i(n + 1) + n; stepped one element after another.
  struct Cursor {
    std::size_t n, j, at;  // at = i(n + 1) + j
    Cursor(std::size_t n_, std::size_t e) : n(n_), j(e % n_), at(e / n_ * (n_ + 1) + e % n_) {}
    std::size_t value() const { return at; }
    std::size_t logdet() const { return at - j + n; }
    void next() {
      ++at;
      if (++j == n) j = 0, ++at;  // skip the row's log-determinant column
    }
    /// Whether the next w elements lie in one row (their values contiguous, one log-determinant).
    bool in_row(std::size_t w) const { return j + w <= n; }
    /// next() w times, for w elements in one row.
    void skip(std::size_t w) {
      at += w, j += w;
      if (j == n) j = 0, ++at;
    }
  };

  /// The offsets 0, P, 2P, … of consecutive elements' parameters, one per lane of V.
  template <class V> static xsimd::as_integer_t<V> lane_offsets(int P) {
    constexpr int W = int(V::size);
    alignas(64) xsimd::as_integer_t<T> offsets[W];
    for (int l = 0; l < W; ++l) offsets[l] = xsimd::as_integer_t<T>(l * P);
    return xsimd::as_integer_t<V>::load_aligned(offsets);
  }

  /// Runs body(e, u, value, gy, gl, cursor) on the elements e … e + W − 1, W = the lanes of V,
  /// for the elements V covers (batches: all full blocks; a scalar: the tail after them): u are
  /// their 3K − 1 parameters, value their inputs, gy/gl the adjoints of their outputs and of
  /// their rows' log-determinants (zero when with_adjoints is false), cursor at element e.
  /// `written`: an array laid out as θ that body writes block by block (the backward's θ̄).
  template <class V, int KC, class Body>
  static void blocks(Ctx<T>& c, bool with_adjoints, Body body, T* written = nullptr) {
    constexpr int W = int(sizeof(V) / sizeof(T));
    const int K = bins_of<KC>(c), P = 3 * K - 1;
    const std::size_t n = c.cols(0), total = c.in(0).size();
    const std::size_t start = std::is_same_v<V, T> ? total - total % std::size_t(kern::batch<T>::size) : 0;
    const std::size_t end = std::is_same_v<V, T> ? total : start + (total - start) / W * W;
    const T* x = c.x(0);
    const T* th = c.x(1);
    const T* g = with_adjoints ? c.gy() : nullptr;
    T gy[kMaxLanes], gl[kMaxLanes];
    V u[3 * max_bins<KC>() - 1];
    Cursor at(n, start);
    if constexpr (std::is_same_v<V, T>) {
      for (std::size_t e = start; e < end; ++e, at.next()) {
        for (int p = 0; p < P; ++p) u[p] = th[e * std::size_t(P) + std::size_t(p)];
        body(e, u, x[e], g ? g[at.value()] : T(0), g ? g[at.logdet()] : T(0), at);
      }
    } else {
      // Lane l's parameters start P values after lane l − 1's: with AVX-512 floats, 16 row
      // loads and a register transpose per 16 parameters (kern::load_lanes16; at 1024 × 64,
      // K = 8, the forward 900 → 845 µs and the inverse 1112 → 1060 against 23 gathers);
      // elsewhere one gather per parameter (a transpose through a stack buffer instead stalls
      // every vector load on the scalar stores just before it).
      [[maybe_unused]] const auto index = kTransposes<V> ? xsimd::as_integer_t<V>(0) : lane_offsets<V>(P);
      // A θ larger than half of L2 comes from memory (the D = 1024 default flow's is 48 MB per
      // 1024 rows and coupling): the next block's W·P values are asked for one block ahead,
      // which the gathers alone do not get from the prefetchers. Measured on the AVX-512
      // machine, interleaved: `eval` of the D = 1024 model 6.7–6.9 → 6.4–6.7 s (4 pairs, 3–5 %),
      // its training +4–9 % steps/s, the op at 1024 × 64 (6 MB) 2–8 % faster; at 1024 × 1
      // (94 kB, in cache) 3 % slower, so not there. The backward's θ̄ (`written`, laid out as θ)
      // is then not in cache either, and its next block's lines are asked for too, to be
      // written (gaussian:1024 training, 7 interleaved pairs: +1.3 to +5.7 % steps/s, median
      // +2.8 %; the op alone at 1024 × 64 within noise).
      const bool stream = total * std::size_t(P) * sizeof(T) > (std::size_t(1) << 20);
      for (std::size_t e = start; e < end; e += W) {
        const Cursor first = at;
        const std::size_t at_params = e * std::size_t(P);
        const T* src = th + at_params;
        if (stream && e + 2 * W <= end)
          for (int b = 0; b < W * P * int(sizeof(T)); b += 64) {
            __builtin_prefetch(reinterpret_cast<const char*>(src + W * P) + b);
            if (written) __builtin_prefetch(reinterpret_cast<const char*>(written + at_params + W * P) + b, 1);
          }
        if constexpr (kTransposes<V>) load_lanes(src, P, u);
        else
          for (int p = 0; p < P; ++p) u[p] = kern::gather<V>(src + p, index);
        V gyv(T(0)), glv(T(0));
        if (at.in_row(W)) {  // the usual case when a row holds W or more elements
          if (g) gyv = V::load_unaligned(g + at.value()), glv = V(g[at.logdet()]);
          at.skip(W);
        } else {
          for (int l = 0; l < W; ++l, at.next()) {
            gy[l] = g ? g[at.value()] : T(0);
            gl[l] = g ? g[at.logdet()] : T(0);
          }
          gyv = V::load_unaligned(gy), glv = V::load_unaligned(gl);
        }
        body(e, u, V::load_unaligned(x + e), gyv, glv, first);
      }
    }
  }

  /// The op's output values (not the log-determinants) of the elements from cursor at on, one
  /// per lane of V.
  template <class V> static V load_values(const T* out, Cursor at) {
    if constexpr (std::is_same_v<V, T>) {
      return out[at.value()];
    } else {
      constexpr int W = int(V::size);
      if (at.in_row(W)) return V::load_unaligned(out + at.value());
      alignas(64) T v[W];
      for (int l = 0; l < W; ++l, at.next()) v[l] = out[at.value()];
      return V::load_aligned(v);
    }
  }

  /// The most bins a block's arrays hold: KC, the op's K where it is a compile-time constant
  /// (KC > 0), else spline::kMaxBins.
  template <int KC> static constexpr int max_bins() { return KC > 0 ? KC : spline::kMaxBins; }

  /// Runs f(V{}, KC) for the SIMD body (V a batch) and then for the scalar tail (V = T), where
  /// KC is K as a compile-time constant (std::integral_constant) for the default K = 8, or 0,
  /// K read at run time. With K known the compiler unrolls the loops over the bins and keeps
  /// the knots in registers instead of stack arrays of kMaxBins + 1 vectors.
  template <class F> static void simd_then_scalar(const Ctx<T>& c, F f) {
    auto both = [&f](auto k_const) {
      f(kern::batch<T>{}, k_const);
      f(T{}, k_const);
    };
    if (bins(c) == 8) both(std::integral_constant<int, 8>{});
    else both(std::integral_constant<int, 0>{});
  }
  /// K: KC where it is a compile-time constant, else the op's attribute.
  template <int KC> static int bins_of(const Ctx<T>& c) { return KC ? KC : bins(c); }

  static void forward(Ctx<T>& c) {
    const T B = c.attrs().scalar;
    const bool inverse = c.attrs().inverse;
    const std::size_t n = c.cols(0), m = c.rows(0);
    T* out = c.y();
    for (std::size_t i = 0; i < m; ++i) out[i * (n + 1) + n] = T(0);
    simd_then_scalar(c, [&](auto tag, auto k_const) {
      using V = decltype(tag);
      constexpr int W = int(sizeof(V) / sizeof(T)), KC = decltype(k_const)::value;
      const int K = bins_of<KC>(c);
      spline::Knots<V, max_bins<KC>()> kn;
      blocks<V, KC>(c, false, [&](std::size_t, const V* u, V v, V, V, Cursor at) {
        spline::make_spline(u, K, B, kn);
        const auto inside = (v >= V(-B)) & (v <= V(B));
        const V vc = kern::where(inside, v, V(T(0)));
        const spline::Bin<V> bin = spline::find_bin(kn, K, vc, inverse);
        V y, logd;
        if (inverse) {
          const V xi = spline::inverse_xi(bin, vc, logd);
          y = bin.x0 + xi * bin.w, logd = -logd;
        } else {
          spline::eval_bin(bin, xsimd::min(xsimd::max((vc - bin.x0) / bin.w, V(T(0))), V(T(1))), y, logd);
        }
        T ys[kMaxLanes], ls[kMaxLanes];
        store(kern::where(inside, logd, V(T(0))), ls);
        if (at.in_row(W)) {  // one row: the values contiguous, one log-determinant
          store(kern::where(inside, y, v), out + at.value());
          T& logdet = out[at.logdet()];
          T sum = logdet;  // summed in element order as below (the same bits whatever the blocks)
          for (int l = 0; l < W; ++l) sum += ls[l];
          logdet = sum;
        } else {
          store(kern::where(inside, y, v), ys);
          for (int l = 0; l < W; ++l, at.next()) {
            out[at.value()] = ys[l];
            out[at.logdet()] += ls[l];
          }
        }
      });
    });
  }

  static void vjp(Ctx<T>& c) {
    const T B = c.attrs().scalar;
    const bool inverse = c.attrs().inverse;
    bool fresh_x = false, fresh_t = false;
    T* gx = c.gx(0, fresh_x);
    T* gt = c.gx(1, fresh_t);
    if (!gx && !gt) return;
    simd_then_scalar(c, [&](auto tag, auto k_const) {
      using V = decltype(tag);
      constexpr int KC = decltype(k_const)::value;
      const int K = bins_of<KC>(c), P = 3 * K - 1;
      spline::Knots<V, max_bins<KC>()> kn;
      V gu[3 * max_bins<KC>() - 1];
      // θ̄ of a block of W elements is W·P contiguous values, lane l's P after lane l − 1's. Its
      // P vectors gu[p] (parameter p of every lane) go through a stack buffer: stored there as
      // they are, then read back P·W values at a time in θ̄'s order, each output vector q a
      // gather from the buffer (L1) of the values at flat positions qW … qW + W − 1, and
      // written to θ̄ with plain vector stores. A scatter per parameter instead (W single
      // stores into W lines, all of them, for a fresh θ̄ not in cache, waiting for their
      // lines) took 2.1× as long in a loop over a 24 MB θ̄ (512 × 512 coordinates, K = 8);
      // the op's backward at 1024 × 64 is 12 % faster this way, the same at 1024 × 8 (in L2).
      // With AVX-512 floats, store_lanes transposes in registers instead (kern::store_lanes16):
      // a gather from the buffer waits for the stores just before it, which perf put at 36 % of
      // the backward's samples (1024 × 64, K = 8); the whole op's forward + backward there went
      // from 2252 to 1990 µs with the row loads above.
      constexpr bool through_buffer = !std::is_same_v<V, T> && !kTransposes<V>;
      [[maybe_unused]] alignas(64) T buffer[through_buffer ? (3 * spline::kMaxBins - 1) * kMaxLanes : 1];
      [[maybe_unused]] const auto order = [&] {
        if constexpr (!through_buffer) {
          return 0;
        } else {
          using I = xsimd::as_integer_t<V>;
          constexpr int W = int(V::size);
          std::array<I, 3 * spline::kMaxBins - 1> idx{};
          alignas(64) xsimd::as_integer_t<T> at[W];
          for (int q = 0; q < P; ++q) {  // flat position f = qW + i holds lane f / P's parameter f % P
            for (int i = 0; i < W; ++i) at[i] = xsimd::as_integer_t<T>((q * W + i) % P * W + (q * W + i) / P);
            idx[std::size_t(q)] = I::load_aligned(at);
          }
          return idx;
        }
      }();
      blocks<V, KC>(c, true, [&](std::size_t e, const V* u, V v, V gy, V gl, Cursor at) {
        spline::make_spline(u, K, B, kn);
        const auto inside = (v >= V(-B)) & (v <= V(B));
        const V vc = kern::where(inside, v, V(T(0)));
        const V zero(T(0)), gy_identity = gy;  // outside the box: x̄ = ȳ
        gy = kern::where(inside, gy, zero);  // outside the box nothing depends on θ
        gl = kern::where(inside, gl, zero);
        const spline::Bin<V> bin = spline::find_bin(kn, K, vc, inverse, /*with_slopes=*/gt != nullptr);
        V g_in;  // the adjoint of the op's input (x, or y for the inverse), inside the box
        spline::BinGrad<V> g;
        if (!inverse) {
          g = spline::reverse_bin(bin, vc, gy, gl);
          g_in = g.x;
        } else {
          // x = s⁻¹(y) is the op's own output: ξ = (x − X_k)/Δx, without solving for it again
          // (outside the box, where the output is y itself, any point of the bin does: its
          // adjoints are zero there).
          const V x = kern::where(inside, load_values<V>(c.y(), at), bin.x0);
          const V xi = xsimd::min(xsimd::max((x - bin.x0) / bin.w, V(T(0))), V(T(1)));
          V y, slope;
          spline::eval_bin_slope(bin, xi, y, slope);        // (y unused)
          const V a = gy - gl * spline::dlogd_dx(bin, xi);  // here gy is x̄ and gl is ℓ̄ of ℓ = −log s'
          const V dinv = V(T(1)) / slope;                   // 1 / s'(x)
          g_in = a * dinv;
          g = spline::reverse_bin(bin, x, -a * dinv, -gl);
        }
        if (gx) {
          const V gin = kern::where(inside, g_in, gy_identity);
          if (fresh_x) store(gin, gx + e);
          else store(load<V>(gx + e) + gin, gx + e);
        }
        if (gt) {
          spline::reverse_knots(kn, K, B, bin, g, gu);
          T* dst = gt + e * std::size_t(P);  // (blocks() prefetches the next block's lines)
          if constexpr (std::is_same_v<V, T>) {
            for (int p = 0; p < P; ++p) dst[p] = fresh_t ? gu[p] : dst[p] + gu[p];
          } else if constexpr (kTransposes<V>) {  // lane l's P adjoints after lane l − 1's
            store_lanes(gu, P, dst, !fresh_t);
          } else {  // the same through the buffer (see above)
            constexpr int W = int(V::size);
            for (int p = 0; p < P; ++p) gu[p].store_aligned(buffer + p * W);
            for (int q = 0; q < P; ++q) {
              const V v = kern::gather<V>(buffer, order[std::size_t(q)]);
              T* out = dst + q * W;
              (fresh_t ? v : V::load_unaligned(out) + v).store_unaligned(out);
            }
          }
        }
      }, gt);
    });
  }
};

// ---------------------------------------------------------------- custom
template <class T> struct Custom {
  static int inputs(const Ctx<T>& c, const Array<T>* (&xs)[3]) {
    int k = 0;
    while (k < 3 && c.has(k)) xs[k] = &c.in(k), ++k;
    return k;
  }
  static Shape shape(Ctx<T> c) {
    const Array<T>* xs[3] = {};
    return c.attrs().custom->shape(xs, inputs(c, xs));
  }
  static void forward(Ctx<T>& c) {
    const Array<T>* xs[3] = {};
    c.attrs().custom->forward(xs, inputs(c, xs), c.node.value);
  }
  static void vjp(Ctx<T>& c) {
    const Array<T>* xs[3] = {};
    const int k = inputs(c, xs);
    Array<T>* gs[3] = {};
    for (int j = 0; j < k; ++j) gs[j] = c.tape.grad_sink(c.node.in[j]);
    c.attrs().custom->vjp(xs, k, c.node.value, c.node.grad, gs);
  }
};

// ---------------------------------------------------------------- the table
// One row per line of autodiff/ops.def: the row of Op::name holds Impl's functions. The enum
// is generated from the same lines, so kOps<T>[std::size_t(op)] is op's row.
template <class T>
const OpDef<T> kOps[] = {
#define TRFLOW_OP(name, Impl) {&shape_of<T, Impl<T>>, &forward_of<T, Impl<T>>, &vjp_of<T, Impl<T>>},
#include "autodiff/ops.def"
#undef TRFLOW_OP
};
static_assert(std::size(kOps<float>) == std::size_t(Op::count_), "one table row per Op");

// --- helpers for the public functions
template <class T>
Tape<T>& tape_of(Var<T> a, const char* op) {
  if (!a.tape) throw std::invalid_argument(fmt::format("{}: an input Var is empty", op));
  return *a.tape;
}
template <class T>
Tape<T>& tape_of(Var<T> a, Var<T> b, const char* op) {
  if (!a.tape || !b.tape) throw std::invalid_argument(fmt::format("{}: an input Var is empty", op));
  if (a.tape != b.tape) throw std::invalid_argument(fmt::format("{}: the inputs are on different tapes", op));
  return *a.tape;
}

Op act_op(Activation a) {
  switch (a) {
    case Activation::tanh: return Op::tanh;
    case Activation::sigmoid: return Op::sigmoid;
    case Activation::relu: return Op::relu;
    case Activation::leaky_relu: return Op::leaky_relu;
    case Activation::softplus: return Op::softplus;
    case Activation::elu: return Op::elu;
    case Activation::identity: break;
  }
  return Op::leaf;
}

template <class T>
T default_act_param(Activation a) {
  return a == Activation::leaky_relu ? T(0.01) : a == Activation::elu ? T(1) : T(0);
}

template <class T>
Var<T> record_act(Var<T> a, Activation act, T s) {
  return tape_of(a, activation_name(act)).record(act_op(act), {a.index}, Attrs<T>().with_activation(act).with_scalar(s));
}

}  // namespace

template <class T>
const OpDef<T>& op_def(Op op) { return kOps<T>[std::size_t(op)]; }

const char* op_name(Op op) { return name_in(kOpNames, op); }

const char* activation_name(Activation a) { return name_in(kActivationNames, a); }
Activation activation_from_name(const std::string& name) { return value_named(kActivationNames, name, "activation"); }

// --- the public functions: each records one node.
template <class T> Var<T> add(Var<T> a, Var<T> b) { return tape_of(a, b, "add").record(Op::add, {a.index, b.index}); }
template <class T> Var<T> sub(Var<T> a, Var<T> b) { return tape_of(a, b, "sub").record(Op::sub, {a.index, b.index}); }
template <class T> Var<T> mul(Var<T> a, Var<T> b) { return tape_of(a, b, "mul").record(Op::mul, {a.index, b.index}); }
template <class T> Var<T> div(Var<T> a, Var<T> b) { return tape_of(a, b, "div").record(Op::div, {a.index, b.index}); }
template <class T> Var<T> neg(Var<T> a) { return tape_of(a, "neg").record(Op::neg, {a.index}); }
template <class T> Var<T> add_scalar(Var<T> a, Scalar<T> s) {
  return tape_of(a, "add_scalar").record(Op::add_scalar, {a.index}, Attrs<T>().with_scalar(s));
}
template <class T> Var<T> mul_scalar(Var<T> a, Scalar<T> s) {
  return tape_of(a, "mul_scalar").record(Op::mul_scalar, {a.index}, Attrs<T>().with_scalar(s));
}
template <class T> Var<T> rsub_scalar(Scalar<T> s, Var<T> a) {
  return tape_of(a, "rsub_scalar").record(Op::rsub_scalar, {a.index}, Attrs<T>().with_scalar(s));
}
template <class T> Var<T> rdiv_scalar(Scalar<T> s, Var<T> a) {
  return tape_of(a, "rdiv_scalar").record(Op::rdiv_scalar, {a.index}, Attrs<T>().with_scalar(s));
}
template <class T> Var<T> add_row(Var<T> x, Var<T> r) { return tape_of(x, r, "add_row").record(Op::add_row, {x.index, r.index}); }
template <class T> Var<T> mul_row(Var<T> x, Var<T> r) { return tape_of(x, r, "mul_row").record(Op::mul_row, {x.index, r.index}); }
template <class T> Var<T> matmul(Var<T> a, Var<T> b, bool ta, bool tb) {
  return tape_of(a, b, "matmul").record(Op::matmul, {a.index, b.index}, Attrs<T>().with_transposes(ta, tb));
}
template <class T> Var<T> sum(Var<T> a) { return tape_of(a, "sum").record(Op::sum, {a.index}); }
template <class T> Var<T> mean(Var<T> a) { return tape_of(a, "mean").record(Op::mean, {a.index}); }
template <class T> Var<T> row_sums(Var<T> a) { return tape_of(a, "row_sums").record(Op::row_sums, {a.index}); }
template <class T> Var<T> row_means(Var<T> a) { return tape_of(a, "row_means").record(Op::row_means, {a.index}); }
template <class T> Var<T> col_sums(Var<T> a) { return tape_of(a, "col_sums").record(Op::col_sums, {a.index}); }
template <class T> Var<T> col_means(Var<T> a) { return tape_of(a, "col_means").record(Op::col_means, {a.index}); }
template <class T> Var<T> sum_sq_diff(Var<T> a, Var<T> b) {
  return tape_of(a, b, "sum_sq_diff").record(Op::sum_sq_diff, {a.index, b.index});
}
template <class T> Var<T> exp(Var<T> a) { return tape_of(a, "exp").record(Op::exp, {a.index}); }
template <class T> Var<T> log(Var<T> a) { return tape_of(a, "log").record(Op::log, {a.index}); }
template <class T> Var<T> tanh(Var<T> a) { return record_act(a, Activation::tanh, T(0)); }
template <class T> Var<T> sigmoid(Var<T> a) { return record_act(a, Activation::sigmoid, T(0)); }
template <class T> Var<T> relu(Var<T> a) { return record_act(a, Activation::relu, T(0)); }
template <class T> Var<T> leaky_relu(Var<T> a, Scalar<T> slope) { return record_act(a, Activation::leaky_relu, slope); }
template <class T> Var<T> softplus(Var<T> a) { return record_act(a, Activation::softplus, T(0)); }
template <class T> Var<T> elu(Var<T> a, Scalar<T> alpha) { return record_act(a, Activation::elu, alpha); }
template <class T> Var<T> square(Var<T> a) { return tape_of(a, "square").record(Op::square, {a.index}); }
template <class T> Var<T> sqrt(Var<T> a) { return tape_of(a, "sqrt").record(Op::sqrt, {a.index}); }
template <class T> Var<T> pow(Var<T> a, Scalar<T> p) { return tape_of(a, "pow").record(Op::pow, {a.index}, Attrs<T>().with_scalar(p)); }
template <class T> Var<T> clamp(Var<T> a, Scalar<T> lo, Scalar<T> hi) {
  return tape_of(a, "clamp").record(Op::clamp, {a.index}, Attrs<T>().with_bounds(lo, hi));
}
template <class T> Var<T> soft_clamp(Var<T> a, Scalar<T> c) {
  return tape_of(a, "soft_clamp").record(Op::soft_clamp, {a.index}, Attrs<T>().with_scalar(c));
}
template <class T> Var<T> activation(Var<T> a, Activation act) {
  if (act == Activation::identity) return a;
  return record_act(a, act, default_act_param<T>(act));
}
template <class T> Var<T> take_cols(Var<T> a, const std::vector<int>& cols) {
  return tape_of(a, "take_cols").record(Op::take_cols, {a.index}, Attrs<T>().with_cols(cols));
}
template <class T> Var<T> scatter_cols(Var<T> base, Var<T> src, const std::vector<int>& cols) {
  return tape_of(base, src, "scatter_cols").record(Op::scatter_cols, {base.index, src.index}, Attrs<T>().with_cols(cols));
}
template <class T> Var<T> concat_cols(Var<T> a, Var<T> b) {
  return tape_of(a, b, "concat_cols").record(Op::concat_cols, {a.index, b.index});
}
template <class T> Var<T> slice_cols(Var<T> a, std::size_t start, std::size_t count) {
  return tape_of(a, "slice_cols").record(Op::slice_cols, {a.index}, Attrs<T>().with_columns(start, count));
}
template <class T> Var<T> linear(Var<T> x, Var<T> w, Var<T> b) {
  Tape<T>& t = tape_of(x, w, "linear");
  if (b.tape && b.tape != &t) throw std::invalid_argument("linear: the bias is on a different tape");
  return t.record(Op::linear, {x.index, w.index, b.tape ? b.index : -1});
}
template <class T> Var<T> linear_act(Var<T> x, Var<T> w, Var<T> b, Activation act) {
  Tape<T>& t = tape_of(x, w, "linear_act");
  if (b.tape && b.tape != &t) throw std::invalid_argument("linear_act: the bias is on a different tape");
  return t.record(Op::linear_act, {x.index, w.index, b.tape ? b.index : -1},
                  Attrs<T>().with_activation(act).with_scalar(default_act_param<T>(act)));
}
namespace {
std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
}  // namespace

bool dropout_keeps(std::uint64_t seed, std::uint32_t call, std::size_t row, std::size_t col, double p) {
  const std::uint64_t h =
      splitmix64(splitmix64(splitmix64(seed) ^ std::uint64_t(call)) ^ (std::uint64_t(row) << 24 ^ std::uint64_t(col)));
  return double(h >> 11) * 0x1.0p-53 >= p;
}

template <class T> Var<T> dropout(Var<T> a, double p) {
  Tape<T>& t = tape_of(a, "dropout");
  if (!(p >= 0.0 && p < 1.0)) throw std::invalid_argument(fmt::format("dropout: the rate p must be in [0, 1), got {}", p));
  if (!t.dropout_stream().on || p == 0.0) return a;
  const std::uint32_t call = t.next_dropout_call();
  if (call >= (1u << 24)) throw std::length_error("dropout: more than 2^24 calls on one recording");
  return t.record(Op::dropout, {a.index}, Attrs<T>().with_scalar(T(p)).with_call(call));
}

template <class T> Var<T> rq_spline(Var<T> x, Var<T> theta, int bins, Scalar<T> bound, bool inverse) {
  Tape<T>& t = tape_of(x, theta, "rq_spline");
  if (bins < 2 || bins > spline::kMaxBins)
    throw std::invalid_argument(fmt::format("rq_spline: {} bins (expected 2 to {})", bins, spline::kMaxBins));
  if (!(bound > 0) || !std::isfinite(double(bound)))
    throw std::invalid_argument(fmt::format("rq_spline: the tail bound must be positive and finite, got {}", bound));
  return t.record(Op::rq_spline, {x.index, theta.index},
                  Attrs<T>().with_bins(bins).with_scalar(bound).with_inverse(inverse));
}
template <class T> Var<T> custom(CustomOp<T>& op, Var<T> a, Var<T> b, Var<T> c) {
  Tape<T>& t = tape_of(a, op.name());
  if ((b.tape && b.tape != &t) || (c.tape && c.tape != &t))
    throw std::invalid_argument(fmt::format("{}: the inputs are on different tapes", op.name()));
  if (!b.tape && c.tape) throw std::invalid_argument(fmt::format("{}: inputs must be given in order", op.name()));
  return t.record(Op::custom, {a.index, b.tape ? b.index : -1, c.tape ? c.index : -1}, Attrs<T>().with_custom(op));
}

#define TRFLOW_INSTANTIATE_OPS(T)                                                              \
  template const OpDef<T>& op_def<T>(Op);                                                     \
  template Var<T> add(Var<T>, Var<T>);                                                        \
  template Var<T> sub(Var<T>, Var<T>);                                                        \
  template Var<T> mul(Var<T>, Var<T>);                                                        \
  template Var<T> div(Var<T>, Var<T>);                                                        \
  template Var<T> neg(Var<T>);                                                                \
  template Var<T> add_scalar(Var<T>, Scalar<T>);                                              \
  template Var<T> mul_scalar(Var<T>, Scalar<T>);                                              \
  template Var<T> rsub_scalar(Scalar<T>, Var<T>);                                             \
  template Var<T> rdiv_scalar(Scalar<T>, Var<T>);                                             \
  template Var<T> add_row(Var<T>, Var<T>);                                                    \
  template Var<T> mul_row(Var<T>, Var<T>);                                                    \
  template Var<T> matmul(Var<T>, Var<T>, bool, bool);                                         \
  template Var<T> sum(Var<T>);                                                                \
  template Var<T> mean(Var<T>);                                                               \
  template Var<T> row_sums(Var<T>);                                                           \
  template Var<T> row_means(Var<T>);                                                          \
  template Var<T> col_sums(Var<T>);                                                           \
  template Var<T> col_means(Var<T>);                                                          \
  template Var<T> sum_sq_diff(Var<T>, Var<T>);                                                \
  template Var<T> exp(Var<T>);                                                                \
  template Var<T> log(Var<T>);                                                                \
  template Var<T> tanh(Var<T>);                                                               \
  template Var<T> sigmoid(Var<T>);                                                            \
  template Var<T> relu(Var<T>);                                                               \
  template Var<T> leaky_relu(Var<T>, Scalar<T>);                                              \
  template Var<T> softplus(Var<T>);                                                           \
  template Var<T> elu(Var<T>, Scalar<T>);                                                     \
  template Var<T> square(Var<T>);                                                             \
  template Var<T> sqrt(Var<T>);                                                               \
  template Var<T> pow(Var<T>, Scalar<T>);                                                     \
  template Var<T> clamp(Var<T>, Scalar<T>, Scalar<T>);                                        \
  template Var<T> soft_clamp(Var<T>, Scalar<T>);                                              \
  template Var<T> activation(Var<T>, Activation);                                             \
  template Var<T> take_cols(Var<T>, const std::vector<int>&);                                 \
  template Var<T> scatter_cols(Var<T>, Var<T>, const std::vector<int>&);                      \
  template Var<T> concat_cols(Var<T>, Var<T>);                                                \
  template Var<T> slice_cols(Var<T>, std::size_t, std::size_t);                               \
  template Var<T> linear(Var<T>, Var<T>, Var<T>);                                             \
  template Var<T> linear_act(Var<T>, Var<T>, Var<T>, Activation);                             \
  template Var<T> rq_spline(Var<T>, Var<T>, int, Scalar<T>, bool);                          \
  template Var<T> dropout(Var<T>, double);                                                     \
  template Var<T> custom(CustomOp<T>&, Var<T>, Var<T>, Var<T>);

TRFLOW_INSTANTIATE_OPS(float)
TRFLOW_INSTANTIATE_OPS(double)

}  // namespace ad
