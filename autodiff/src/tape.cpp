// The tape's core: recording nodes and the reverse pass.
#include "autodiff/tape.hpp"

#include <algorithm>
#include <functional>
#include <limits>
#include <fmt/format.h>

#include "kernels.hpp"
#include "op_table.hpp"

namespace ad {

template <class T>
Node<T>& Tape<T>::push(Op op) {
  if (size_ == nodes_.size()) nodes_.emplace_back();
  Node<T>& n = nodes_[size_];
  n.op = op;
  n.needs_grad = false;
  n.in[0] = n.in[1] = n.in[2] = -1;
  n.attrs = Attrs<T>();
  n.param = nullptr;
  n.grad_epoch = 0;
  return n;
}

template <class T>
Var<T> Tape<T>::constant(const T* data, std::size_t rows, std::size_t cols) {
  Node<T>& n = push(Op::leaf);
  fit(n.value, rows, cols);
  std::copy(data, data + rows * cols, n.value.data());
  return {this, static_cast<std::int32_t>(size_++)};
}

template <class T>
Var<T> Tape<T>::constant(const Array<T>& value) {
  return constant(value.data(), value.shape()[0], value.shape()[1]);
}

template <class T>
Var<T> Tape<T>::constant(std::size_t rows, std::size_t cols, T fill) {
  Node<T>& n = push(Op::leaf);
  fit(n.value, rows, cols);
  n.value.fill(fill);
  return {this, static_cast<std::int32_t>(size_++)};
}

template <class T>
Var<T> Tape<T>::variable(const Array<T>& value) {
  Var<T> v = constant(value);
  nodes_[v.index].needs_grad = true;
  return v;
}

template <class T>
Var<T> Tape<T>::param(Parameter<T>& p) {
  Node<T>& n = push(Op::param);
  n.param = &p;
  n.needs_grad = true;
  if (p.grad.shape() != p.value.shape()) {  // a parameter whose value was replaced wholesale
    p.grad.resize(p.value.shape());
    p.grad.fill(T(0));
  }
  return {this, static_cast<std::int32_t>(size_++)};
}

template <class T>
Var<T> Tape<T>::record(Op op, Inputs in, const Attrs<T>& attrs) {
  const std::int32_t inputs[3] = {in.a, in.b, in.c};
  for (std::int32_t k : inputs)
    if (k >= static_cast<std::int32_t>(size_))
      throw std::invalid_argument(fmt::format("{}: an input is not on this tape (cleared since?)", op_name(op)));
  Node<T>& n = push(op);
  n.in[0] = in.a, n.in[1] = in.b, n.in[2] = in.c;
  n.attrs = attrs;
  for (std::int32_t k : inputs)
    if (k >= 0 && nodes_[k].needs_grad) n.needs_grad = true;

  const OpDef<T>& def = op_def<T>(op);
  const auto shape = def.shape(*this, n);  // throws before the node is committed
  fit(n.value, shape[0], shape[1]);
  def.forward(*this, n);
  return {this, static_cast<std::int32_t>(size_++)};
}

template <class T>
Array<T>* Tape<T>::grad_sink(std::int32_t i, bool& fresh) {
  Node<T>& n = nodes_[i];
  fresh = false;
  if (!n.needs_grad) return nullptr;
  if (n.param)  // accumulates across passes until the owner zeroes it
    if (Array<T>* target = param_grad_target(n)) return target;
  if (n.grad_epoch != epoch_) {  // first adjoint this pass: the caller assigns every element
    const Array<T>& v = value(i);  // a parameter node's value lives in the Parameter
    if (release_adjoints_ && n.grad.size() != v.size()) take_pooled_adjoint(n.grad, v.size());
    if (n.grad.shape() != v.shape()) n.grad.resize(v.shape());
#ifdef TRFLOW_POISON_ADJOINTS
    // Sanitizer and debug builds: a VJP that takes a fresh adjoint must write every element;
    // one it forgets stays NaN and fails gradcheck instead of passing on stale numbers.
    n.grad.fill(std::numeric_limits<T>::quiet_NaN());
#endif
    n.grad_epoch = epoch_;
    fresh = true;
  }
  return &n.grad;
}

template <class T>
Array<T>* Tape<T>::grad_sink(std::int32_t i) {
  bool fresh;
  Array<T>* g = grad_sink(i, fresh);
  if (fresh) g->fill(T(0));  // start from zero: the caller only adds
  return g;
}

// Swaps a pooled buffer of exactly `size` elements into `grad` (if there is one);
// the buffer grad held goes back to the pool unless it is empty.
template <class T>
void Tape<T>::take_pooled_adjoint(Array<T>& grad, std::size_t size) {
  for (std::size_t k = 0; k < adjoint_pool_.size(); ++k) {
    if (adjoint_pool_[k].size() != size) continue;
    std::swap(grad, adjoint_pool_[k]);
    if (adjoint_pool_[k].size() == 0) {
      std::swap(adjoint_pool_[k], adjoint_pool_.back());
      adjoint_pool_.pop_back();
    }
    return;
  }
}

// ---------------------------------------------------------------- the value pool
template <class T>
void Tape<T>::fit(Array<T>& a, std::size_t rows, std::size_t cols) {
  if (pool_values_ && a.size() != rows * cols) {
    if (a.size() != 0) put_in_pool(a);
    take_from_pool(a, rows * cols);  // else the resize below allocates
  }
  if (a.shape()[0] != rows || a.shape()[1] != cols) a.resize({rows, cols});  // same size: no allocation
}

template <class T>
void Tape<T>::pool_node_arrays() {
  // Every slot, not only the last recording's: a longer recording before it may have left
  // arrays further on, which the next recording could use before it reaches them.
  for (Node<T>& n : nodes_) {
    if (n.value.size() != 0) put_in_pool(n.value);
    if (n.scratch.size() != 0) put_in_pool(n.scratch);
  }
}

template <class T>
void Tape<T>::put_in_pool(Array<T>& a) {
  auto bin = std::find_if(value_pool_.begin(), value_pool_.end(), [&](const PoolBin& b) { return b.size == a.size(); });
  if (bin == value_pool_.end()) {  // a size not seen before: warm-up only
    value_pool_.emplace_back();
    bin = value_pool_.end() - 1;
    bin->size = a.size();
  }
  bin->free.emplace_back();  // within the capacity the bin has needed before
  std::swap(bin->free.back(), a);
}

template <class T>
bool Tape<T>::take_from_pool(Array<T>& a, std::size_t size) {
  for (PoolBin& bin : value_pool_) {
    if (bin.size != size) continue;
    if (bin.free.empty()) return false;
    std::swap(a, bin.free.back());
    bin.free.pop_back();  // the empty array a held
    return true;
  }
  return false;
}

template <class T>
std::size_t Tape<T>::value_bytes() const {
  std::size_t elements = 0;
  for (const Node<T>& n : nodes_) elements += n.value.size();
  for (const PoolBin& bin : value_pool_) elements += bin.size * bin.free.size();
  return elements * sizeof(T);
}

template <class T>
const Array<T>& Tape<T>::grad(std::int32_t i) {
  Node<T>& n = nodes_[i];
  if (n.grad_epoch == kReleased)
    throw std::logic_error(fmt::format("grad: the adjoint of node {} ({}) was released during backward "
                                       "(Tape::set_release_adjoints)", i, op_name(n.op)));
  if (n.param)
    if (Array<T>* target = param_grad_target(n)) return *target;
  if (n.grad_epoch != epoch_ || !n.needs_grad) {  // no adjoint reached it: ∂out/∂value = 0
    const Array<T>& v = value(i);
    if (n.grad.shape() != v.shape()) n.grad.resize(v.shape());
    n.grad.fill(T(0));
    n.grad_epoch = epoch_;
  }
  return n.grad;
}

template <class T>
void Tape<T>::backward(Var<T> out) {
  if (out.tape != this) throw std::invalid_argument("backward: the output is not on this tape");
  const Array<T>& v = value(out.index);
  if (v.size() != 1)
    throw ShapeError(fmt::format("backward: the output is {}×{}; a non-scalar output needs an explicit seed",
                                 v.shape()[0], v.shape()[1]));
  ++epoch_;
  bool fresh;
  Array<T>* g = grad_sink(out.index, fresh);
  if (!g) return;  // the output depends on no parameter or variable
  g->data()[0] = (fresh ? T(0) : g->data()[0]) + T(1);  // ∂out/∂out = 1
  run_backward(out.index);
}

template <class T>
void Tape<T>::backward(Var<T> out, const Array<T>& seed) {
  if (out.tape != this) throw std::invalid_argument("backward: the output is not on this tape");
  if (seed.shape() != value(out.index).shape())
    throw ShapeError(fmt::format("backward: seed is {}×{} but the output is {}×{}", seed.shape()[0],
                                 seed.shape()[1], value(out.index).shape()[0], value(out.index).shape()[1]));
  ++epoch_;
  bool fresh;
  Array<T>* g = grad_sink(out.index, fresh);
  if (!g) return;  // the output depends on no parameter or variable
  if (fresh) std::copy(seed.data(), seed.data() + seed.size(), g->data());
  else std::transform(g->data(), g->data() + g->size(), seed.data(), g->data(), std::plus<T>());
  run_backward(out.index);
}

// The reverse pass: creation order is a topological order, so one backward
// sweep visits each node after all the nodes that consumed it.
template <class T>
void Tape<T>::run_backward(std::int32_t out) {
  for (std::int32_t i = out + 1; i-- > 0;) {
    Node<T>& n = nodes_[i];
    if (!passes_adjoint(n)) continue;
    op_def<T>(n.op).vjp(*this, n);  // adds Jᵀ ȳ_i to the adjoints of n's inputs
    release_adjoint(n);
  }
}

template <class T>
void Tape<T>::release_adjoint(Node<T>& n) {
  if (!release_adjoints_) return;
  adjoint_pool_.emplace_back();
  std::swap(adjoint_pool_.back(), n.grad);
  n.grad_epoch = kReleased;
}

template <class T>
void Tape<T>::accumulate_param_grads() {
  for (std::size_t i = 0; i < size_; ++i) {
    Node<T>& n = nodes_[i];
    if (n.op == Op::param && n.grad_epoch == epoch_) kern::acc(n.grad.data(), n.param->grad.data(), n.grad.size());
  }
}

template <class T>
void Tape<T>::set_param_grad_buffers(std::vector<Array<T>>* into, const ParamIndex<T>* index) {
  if ((into == nullptr) != (index == nullptr))
    throw std::invalid_argument("set_param_grad_buffers: give both the buffers and their index, or neither");
  param_buffers_ = into;
  param_index_ = index;
}

template <class T>
Array<T>* Tape<T>::param_grad_target(const Node<T>& n) const {
  if (param_buffers_) {
    const std::size_t k = (*param_index_)(n.param);  // (throws for a parameter it does not know)
    Array<T>* buffer = k < param_buffers_->size() ? &(*param_buffers_)[k] : nullptr;
    if (!buffer || buffer->shape() != n.param->value.shape())
      throw ShapeError(fmt::format("set_param_grad_buffers: parameter '{}' is {}×{} but its gradient buffer {} is {}",
                                   n.param->name, n.param->value.shape()[0], n.param->value.shape()[1], k,
                                   buffer ? fmt::format("{}×{}", buffer->shape()[0], buffer->shape()[1]) : "missing"));
    return buffer;
  }
  return param_grads_on_tape_ ? nullptr : &n.param->grad;
}

template <class T>
ParamIndex<T>::ParamIndex(const std::vector<Parameter<T>*>& params) {
  by_address_.reserve(params.size());
  for (std::size_t k = 0; k < params.size(); ++k) by_address_.emplace_back(params[k], k);
  std::sort(by_address_.begin(), by_address_.end());
  for (std::size_t k = 1; k < by_address_.size(); ++k)
    if (by_address_[k].first == by_address_[k - 1].first)
      throw std::invalid_argument(fmt::format("ParamIndex: parameter '{}' is listed twice", by_address_[k].first->name));
}

template <class T>
std::size_t ParamIndex<T>::operator()(const Parameter<T>* p) const {
  auto it = std::lower_bound(by_address_.begin(), by_address_.end(), p,
                             [](const std::pair<const Parameter<T>*, std::size_t>& e, const Parameter<T>* q) { return e.first < q; });
  if (it == by_address_.end() || it->first != p)
    throw std::invalid_argument(fmt::format("ParamIndex: parameter '{}' is not among the {} indexed", p->name, by_address_.size()));
  return it->second;
}

template <class T>
std::size_t Tape<T>::adjoint_bytes() const {
  std::size_t elements = 0;
  for (const Node<T>& n : nodes_) elements += n.grad.size();
  for (const Array<T>& a : adjoint_pool_) elements += a.size();
  return elements * sizeof(T);
}

template <class T>
std::size_t Tape<T>::bytes_reserved() const {
  std::size_t bytes = 0;
  for (const Node<T>& n : nodes_) bytes += n.scratch.size() * sizeof(T);
  return bytes + value_bytes() + adjoint_bytes() + workspace_.capacity() * sizeof(T);
}

template class ParamIndex<float>;
template class ParamIndex<double>;
template class Tape<float>;
template class Tape<double>;

}  // namespace ad
