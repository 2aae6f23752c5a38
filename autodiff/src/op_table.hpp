#pragma once
// The registry that the tape consults: for each Op, its output shape, its
// forward, and its vector–Jacobian product (ops.cpp builds the table from the
// list in autodiff/ops.def).
#include <array>
#include <cstddef>

#include "autodiff/tape.hpp"

namespace ad {

template <class T>
struct OpDef {
  /// Output shape from the inputs; throws ShapeError when they do not fit together.
  std::array<std::size_t, 2> (*shape)(Tape<T>& tape, const Node<T>& node);
  /// node.value = f(inputs); node.value already has the shape above.
  void (*forward)(Tape<T>& tape, Node<T>& node);
  /// For each input k that needs a gradient: ā_k += (∂y/∂a_k)ᵀ ȳ, where ȳ = node.grad.
  void (*vjp)(Tape<T>& tape, Node<T>& node);
};

template <class T>
const OpDef<T>& op_def(Op op);

}  // namespace ad
