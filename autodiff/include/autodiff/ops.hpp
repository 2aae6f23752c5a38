#pragma once
// The operations, as free functions on Vars. Each records one node on the
// inputs' tape; shapes are checked here and a mismatch throws ShapeError naming
// the op and both shapes. The maths of each op and its vector–Jacobian product
// stand side by side in src/ops.cpp.
#include <vector>

#include "autodiff/tape.hpp"

namespace ad {

/// The scalar type of Var<T>, in a non-deduced context so that `x * 2.0` works for Var<float>.
template <class T> using Scalar = typename Var<T>::scalar_type;

// Elementwise on equal shapes: a + b, a − b, a ⊙ b, a ⊘ b, −a.
template <class T> Var<T> add(Var<T> a, Var<T> b);
template <class T> Var<T> sub(Var<T> a, Var<T> b);
template <class T> Var<T> mul(Var<T> a, Var<T> b);
template <class T> Var<T> div(Var<T> a, Var<T> b);
template <class T> Var<T> neg(Var<T> a);

// With a scalar constant s: a + s, a · s, s − a, s / a.
template <class T> Var<T> add_scalar(Var<T> a, Scalar<T> s);
template <class T> Var<T> mul_scalar(Var<T> a, Scalar<T> s);
template <class T> Var<T> rsub_scalar(Scalar<T> s, Var<T> a);
template <class T> Var<T> rdiv_scalar(Scalar<T> s, Var<T> a);

/// x + r and x ⊙ r with r a 1×n row broadcast over the m rows of x (a bias, a per-feature scale).
template <class T> Var<T> add_row(Var<T> x, Var<T> r);
template <class T> Var<T> mul_row(Var<T> x, Var<T> r);

/// op(A)·op(B), where op transposes when the flag is set (cblas gemm).
template <class T> Var<T> matmul(Var<T> a, Var<T> b, bool trans_a = false, bool trans_b = false);

// Reductions. sum/mean: over everything, 1×1. row_sums/row_means: one per row, m×1.
// col_sums/col_means: one per column, 1×n.
template <class T> Var<T> sum(Var<T> a);
template <class T> Var<T> mean(Var<T> a);
template <class T> Var<T> row_sums(Var<T> a);
template <class T> Var<T> row_means(Var<T> a);
template <class T> Var<T> col_sums(Var<T> a);
template <class T> Var<T> col_means(Var<T> a);
/// Σ_ij (a_ij − b_ij)², 1×1, a and b of one shape: what sum(square(a − b)) computes, in one
/// node that reads a and b once each way instead of keeping a − b and its square on the tape.
template <class T> Var<T> sum_sq_diff(Var<T> a, Var<T> b);

// Elementwise functions.
template <class T> Var<T> exp(Var<T> a);
template <class T> Var<T> log(Var<T> a);
template <class T> Var<T> tanh(Var<T> a);
template <class T> Var<T> sigmoid(Var<T> a);                  // 1 / (1 + e^{−a})
template <class T> Var<T> relu(Var<T> a);                     // max(a, 0)
template <class T> Var<T> leaky_relu(Var<T> a, Scalar<T> slope = T(0.01));  // a > 0 ? a : slope·a  (slope ≥ 0)
template <class T> Var<T> softplus(Var<T> a);                 // log(1 + e^a)
template <class T> Var<T> elu(Var<T> a, Scalar<T> alpha = T(1));      // a > 0 ? a : α(e^a − 1)  (α ≥ 0)
template <class T> Var<T> square(Var<T> a);
template <class T> Var<T> sqrt(Var<T> a);
template <class T> Var<T> pow(Var<T> a, Scalar<T> p);                 // a^p, for a > 0 or integer p
template <class T> Var<T> clamp(Var<T> a, Scalar<T> lo, Scalar<T> hi);        // gradient 1 inside [lo, hi], 0 outside
template <class T> Var<T> soft_clamp(Var<T> a, Scalar<T> c);          // c·tanh(a / c): smooth, |y| < c
/// The activation by name (identity, tanh, sigmoid, relu, leaky_relu (slope 0.01), softplus, elu (α 1)).
template <class T> Var<T> activation(Var<T> a, Activation act);

// Columns. The index vectors are referenced, not copied: they must outlive the tape's backward pass.
/// y[:, j] = a[:, cols[j]]
template <class T> Var<T> take_cols(Var<T> a, const std::vector<int>& cols);
/// The tape keeps a pointer to `cols` until it is cleared, so a temporary index list (which
/// would be gone before the backward pass reads it) does not compile.
template <class T> Var<T> take_cols(Var<T> a, std::vector<int>&& cols) = delete;
/// y = base, except y[:, cols[j]] = src[:, j]. Indices must be distinct.
template <class T> Var<T> scatter_cols(Var<T> base, Var<T> src, const std::vector<int>& cols);
template <class T> Var<T> scatter_cols(Var<T> base, Var<T> src, std::vector<int>&& cols) = delete;  // as take_cols
/// y = [a | b]
template <class T> Var<T> concat_cols(Var<T> a, Var<T> b);
/// y = a[:, start : start + count]
template <class T> Var<T> slice_cols(Var<T> a, std::size_t start, std::size_t count);

/// Fused dense layer y = x·Wᵀ + b, with W out×in and b a 1×out row (b may be an empty Var: no bias).
template <class T> Var<T> linear(Var<T> x, Var<T> w, Var<T> b);
/// Fused dense layer and activation y = act(x·Wᵀ + b) in one node.
template <class T> Var<T> linear_act(Var<T> x, Var<T> w, Var<T> b, Activation act);

/// Monotonic rational-quadratic splines (Durkan et al., "Neural Spline Flows", 2019), one per
/// element of x (m×n): K = bins bins on [−bound, bound], the identity outside, slope 1 at ±bound.
/// theta (m × n(3K−1)) holds each element's unnormalized parameters in turn, 3K − 1 per element:
/// K bin widths and K bin heights (softmax, minimum 1e-3 of the box each) and K − 1 interior
/// knot derivatives (softplus, minimum 1e-3, shifted so that theta = 0 is the identity map).
/// Returns m×(n+1): [y | Σ_j log ∂y_j/∂x_j]; slice_cols(r, 0, n) and slice_cols(r, n, 1) split it.
/// inverse = true maps y back to x in closed form: [x | −Σ_j log ∂y_j/∂x_j].
/// 2 ≤ bins ≤ 64; bound > 0. autodiff/src/spline.hpp has the formulas.
template <class T> Var<T> rq_spline(Var<T> x, Var<T> theta, int bins, Scalar<T> bound, bool inverse = false);
/// Dropout: a ⊙ m / (1 − p) with m_ij ∈ {0, 1} from the tape's dropout stream (Tape::set_dropout_stream),
/// 0 ≤ p < 1; the identity (no node) when the tape has no stream or p = 0.
template <class T> Var<T> dropout(Var<T> a, double p);
/// Whether dropout keeps entry (row, col) of call `call` under stream `seed` at rate p: a
/// splitmix64 hash of the four numbers, read as a uniform u ∈ [0, 1), kept when u ≥ p.
bool dropout_keeps(std::uint64_t seed, std::uint32_t call, std::size_t row, std::size_t col, double p);

/// A user-defined op (see CustomOp) on one to three inputs.
template <class T> Var<T> custom(CustomOp<T>& op, Var<T> a, Var<T> b = {}, Var<T> c = {});

// Operators, for readable formulas.
template <class T> Var<T> operator+(Var<T> a, Var<T> b) { return add(a, b); }
template <class T> Var<T> operator-(Var<T> a, Var<T> b) { return sub(a, b); }
template <class T> Var<T> operator*(Var<T> a, Var<T> b) { return mul(a, b); }
template <class T> Var<T> operator/(Var<T> a, Var<T> b) { return div(a, b); }
template <class T> Var<T> operator-(Var<T> a) { return neg(a); }
template <class T> Var<T> operator+(Var<T> a, Scalar<T> s) { return add_scalar(a, s); }
template <class T> Var<T> operator+(Scalar<T> s, Var<T> a) { return add_scalar(a, s); }
template <class T> Var<T> operator-(Var<T> a, Scalar<T> s) { return add_scalar(a, -s); }
template <class T> Var<T> operator-(Scalar<T> s, Var<T> a) { return rsub_scalar(s, a); }
template <class T> Var<T> operator*(Var<T> a, Scalar<T> s) { return mul_scalar(a, s); }
template <class T> Var<T> operator*(Scalar<T> s, Var<T> a) { return mul_scalar(a, s); }
template <class T> Var<T> operator/(Var<T> a, Scalar<T> s) { return mul_scalar(a, T(1) / s); }
template <class T> Var<T> operator/(Scalar<T> s, Var<T> a) { return rdiv_scalar(s, a); }

}  // namespace ad
