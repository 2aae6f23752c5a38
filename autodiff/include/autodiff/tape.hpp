#pragma once
// The tape: a Wengert list of every value computed, in creation order.
//
// A forward computation appends one Node per operation; a Var is only a handle
// (tape, index). Because a node's inputs always have smaller indices than the
// node itself, walking the list backwards visits every node after all of its
// consumers, so reverse mode needs no topological sort:
//
//     for (i = end; i-- > 0;) nodes[i].vjp();       // ā_k += ȳ_i · ∂y_i/∂a_k
//
// clear() forgets the nodes but keeps their arrays, so the next step, which
// records the same operations on the same shapes, allocates nothing. A tape that
// alternates between recordings of different shapes (the trainer's two passes) pools
// its value arrays by size instead (set_pool_values), which allocates nothing either.
#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/xsimd.hpp"  // first: see there
#include <xtensor/xtensor.hpp>
#include "autodiff/names.hpp"

namespace ad {

/// A rank-2, row-major array: rows are the batch, columns the features. A scalar is 1×1.
template <class T>
using Array = xt::xtensor<T, 2>;

/// Thrown when an operation's inputs have incompatible shapes; the message names the op and the shapes.
struct ShapeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

/// Every operation the tape knows, generated from the list in autodiff/ops.def (one line per
/// op); ops.cpp builds its table of each op's forward and VJP from the same list.
enum class Op : std::uint8_t {
#define TRFLOW_OP(name, Impl) name,
#include "autodiff/ops.def"
#undef TRFLOW_OP
  count_
};

/// Each op's name, from the same list, in the same order.
inline constexpr NameTable<Op, std::size_t(Op::count_)> kOpNames{{
#define TRFLOW_OP(name, Impl) {Op::name, #name},
#include "autodiff/ops.def"
#undef TRFLOW_OP
}};

/// The name of an op, as used in error messages and tape listings ("?" for none).
const char* op_name(Op op);

/// Activations that the fused linear layer can apply. Each one's derivative is
/// a function of its output, so the pre-activation need not be stored.
enum class Activation : std::uint8_t { identity, tanh, sigmoid, relu, leaky_relu, softplus, elu };
inline constexpr NameTable<Activation, 7> kActivationNames{{{Activation::identity, "identity"},
                                                            {Activation::tanh, "tanh"},
                                                            {Activation::sigmoid, "sigmoid"},
                                                            {Activation::relu, "relu"},
                                                            {Activation::leaky_relu, "leaky_relu"},
                                                            {Activation::softplus, "softplus"},
                                                            {Activation::elu, "elu"}}};

/// Parses "tanh", "relu", … (throws std::invalid_argument listing the valid names) and back.
Activation activation_from_name(const std::string& name);
const char* activation_name(Activation a);

template <class T> class Tape;

/// A handle to a value on a tape: cheap to copy, valid until the tape is cleared.
template <class T>
struct Var {
  using scalar_type = T;
  Tape<T>* tape = nullptr;
  std::int32_t index = -1;

  const Array<T>& value() const;
  /// The adjoint ∂out/∂this after backward(out); zeros if this value did not reach out.
  const Array<T>& grad() const;
  std::size_t rows() const { return value().shape()[0]; }
  std::size_t cols() const { return value().shape()[1]; }
  /// The value of a 1×1 Var.
  T item() const;
};

/// A trainable array that outlives the tape. Its gradient accumulates over
/// backward calls until zero_grad().
template <class T>
struct Parameter {
  std::string name;
  Array<T> value;
  Array<T> grad;

  Parameter() = default;
  Parameter(std::string n, std::size_t rows, std::size_t cols)
      : name(std::move(n)), value(typename Array<T>::shape_type{rows, cols}, T(0)),
        grad(typename Array<T>::shape_type{rows, cols}, T(0)) {}
  void zero_grad() { grad.fill(T(0)); }
};

/// The escape hatch: a user-defined op with up to three inputs. It supplies the
/// output shape, the forward, and the vector–Jacobian product; the tape calls
/// them like its own ops. The object must outlive the tape's use of it.
template <class T>
struct CustomOp {
  virtual ~CustomOp() = default;
  virtual const char* name() const { return "custom"; }
  /// Output shape for these inputs (throw ShapeError if they do not fit).
  virtual std::array<std::size_t, 2> shape(const Array<T>* const* inputs, int n_inputs) const = 0;
  /// out = f(inputs); out is already of the right shape.
  virtual void forward(const Array<T>* const* inputs, int n_inputs, Array<T>& out) = 0;
  /// input_grads[k] += (∂out/∂input_k)ᵀ · out_grad for each k whose pointer is non-null.
  virtual void vjp(const Array<T>* const* inputs, int n_inputs, const Array<T>& out,
                   const Array<T>& out_grad, Array<T>* const* input_grads) = 0;
};

/// The inputs of an op being recorded: indices of earlier nodes, −1 for none.
struct Inputs {
  std::int32_t a, b, c;
  Inputs(std::int32_t a_, std::int32_t b_ = -1, std::int32_t c_ = -1) : a(a_), b(b_), c(c_) {}
};

/// What an op needs besides its inputs: the constants it was called with. Each op reads its
/// own fields (its struct in ops.cpp says which); the others keep their defaults. The setters
/// return *this, so that a call names what it sets: Attrs<T>().with_bounds(lo, hi).
template <class T>
struct Attrs {
  T scalar = 0;                            // s of x + s, x·s, s − x, s / x; p of a^p; c of soft_clamp; the slope
                                           // or α of an activation; rq_spline's tail bound; dropout's rate
  T lo = 0, hi = 0;                        // clamp's bounds
  std::size_t start = 0, count = 0;        // slice_cols: the columns [start, start + count)
  int bins = 0;                            // rq_spline: the number of bins
  bool inverse = false;                    // rq_spline: run the inverse map
  std::uint32_t call = 0;                  // dropout: the call's number since clear(), which picks its mask
  Activation act = Activation::identity;   // tanh … elu, linear_act
  bool trans_a = false, trans_b = false;   // matmul: op(A) = Aᵀ, op(B) = Bᵀ
  const std::vector<int>* cols = nullptr;  // take_cols, scatter_cols: the column indices (caller-owned)
  CustomOp<T>* custom = nullptr;           // custom: the user's op

  Attrs& with_scalar(T s) { scalar = s; return *this; }
  Attrs& with_bounds(T l, T h) { lo = l, hi = h; return *this; }
  Attrs& with_columns(std::size_t s, std::size_t k) { start = s, count = k; return *this; }
  Attrs& with_bins(int k) { bins = k; return *this; }
  Attrs& with_inverse(bool inv) { inverse = inv; return *this; }
  Attrs& with_call(std::uint32_t k) { call = k; return *this; }
  Attrs& with_activation(Activation a) { act = a; return *this; }
  Attrs& with_transposes(bool ta, bool tb) { trans_a = ta, trans_b = tb; return *this; }
  Attrs& with_cols(const std::vector<int>& c) { cols = &c; return *this; }
  Attrs& with_custom(CustomOp<T>& op) { custom = &op; return *this; }
};

/// One recorded operation. Inputs are indices of earlier nodes.
template <class T>
struct Node {
  Op op = Op::leaf;
  bool needs_grad = false;      // some input (transitively) is a parameter or variable
  std::int32_t in[3] = {-1, -1, -1};
  Attrs<T> attrs;               // the op's constants: Tape::record's last argument
  Parameter<T>* param = nullptr;            // set for Op::param: value and grad live there
  std::uint64_t grad_epoch = 0;             // == tape's epoch when grad holds this pass's adjoint
  Array<T> value, grad;                     // reused across clear()
  Array<T> scratch;                         // small per-node memory (scatter_cols' column mask)
};

/// The places of a list of parameters in a caller's list of gradient buffers, one buffer per
/// parameter in the same order (Tape::accumulate_param_grads(into, index)). Built once (it
/// allocates); a look-up is a binary search by address and allocates nothing.
template <class T>
class ParamIndex {
 public:
  ParamIndex() = default;
  explicit ParamIndex(const std::vector<Parameter<T>*>& params);
  /// p's position in the list; throws std::invalid_argument (naming p) if it is not there.
  std::size_t operator()(const Parameter<T>* p) const;
  std::size_t size() const { return by_address_.size(); }

 private:
  std::vector<std::pair<const Parameter<T>*, std::size_t>> by_address_;  // sorted
};

/// The tape. Not thread-safe; one per thread (see set_param_grads_on_tape).
template <class T>
class Tape {
 public:
  Tape() = default;
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  /// A constant (no gradient), copied onto the tape.
  Var<T> constant(const Array<T>& value);
  Var<T> constant(const T* data, std::size_t rows, std::size_t cols);
  /// A constant of the given shape filled with one value.
  Var<T> constant(std::size_t rows, std::size_t cols, T fill);
  /// An independent variable whose gradient backward() computes (read it with Var::grad()).
  Var<T> variable(const Array<T>& value);
  /// A parameter: its value is read in place and its gradient accumulates into p.grad
  /// (or, with param_grads_on_tape, into the node's own adjoint).
  Var<T> param(Parameter<T>& p);

  /// Data parallelism: several threads each record the same model on their own tape,
  /// on their own rows. Only one of them may write Parameter::grad while the others
  /// run; the others set this, keep their parameter adjoints on the tape, and add
  /// them in with accumulate_param_grads() once every thread has finished.
  void set_param_grads_on_tape(bool on) { param_grads_on_tape_ = on; }
  /// p.grad += this tape's adjoint of p, for every parameter node reached by the last backward.
  void accumulate_param_grads();
  /// The other way for a thread that may not write Parameter::grad: its parameter adjoints
  /// accumulate into (*into)[(*index)(p)], a buffer shaped like p, exactly as they would into
  /// p.grad (across backward passes and clear(), until the caller zeroes them), with no copy
  /// of a tape adjoint after each pass. The caller keeps both alive while the tape backpropagates;
  /// nullptr, nullptr goes back to Parameter::grad. It takes precedence over
  /// param_grads_on_tape. A backward throws std::invalid_argument (naming p) for a parameter
  /// the index does not know and ShapeError for a buffer of the wrong size. Allocates nothing.
  void set_param_grad_buffers(std::vector<Array<T>>* into, const ParamIndex<T>* index);

  /// Memory: with this on, backward() returns each intermediate node's adjoint to a pool as
  /// soon as that node's VJP has run (nothing reads ȳ after it), and a node receiving its
  /// first adjoint takes a buffer of its size from the pool. The adjoints alive at once are
  /// then the frontier of the reverse sweep instead of one per node. Leaves, variables and
  /// parameters keep theirs; grad() of a released intermediate throws.
  void set_release_adjoints(bool on) { release_adjoints_ = on; }
  /// Bytes held by adjoints: the nodes' and the pool's.
  std::size_t adjoint_bytes() const;

  /// Memory, for a tape that alternates between recordings of different shapes (the trainer
  /// records a step's two passes one after the other on one tape, clearing it in between):
  /// with this on, clear() hands every node's value and scratch array to a pool keyed by
  /// size, and a node being recorded takes an array of exactly its size from the pool,
  /// allocating only when the pool has none. The arrays held are then, for each size, the
  /// most that any one recording needs, max(pass 1, pass 2), instead of one per node slot
  /// sized by whichever recording used the slot last; once each recording has been seen,
  /// recording allocates nothing. Off (the default), a node keeps its slot's array and
  /// resizes it when the size differs: right for a tape that records the same shapes every
  /// time, or shapes that change for good (the pool would keep every size it has seen).
  void set_pool_values(bool on) { pool_values_ = on; }
  /// Bytes held by node values (not parameters'): the nodes' and the value pool's (which
  /// also takes back scratch arrays at clear()).
  std::size_t value_bytes() const;

  /// Reverse pass from a 1×1 output, seeded with ∂out/∂out = 1.
  void backward(Var<T> out);
  /// Reverse pass from any output, seeded with the given adjoint (same shape as out).
  void backward(Var<T> out, const Array<T>& seed);

  /// Forgets all nodes but keeps their memory for the next recording (in the nodes' slots,
  /// or in the value pool with set_pool_values).
  void clear() {
    if (pool_values_) pool_node_arrays();
    size_ = 0;
    dropout_.calls = 0;
  }
  /// Forgets all nodes and gives their memory back (values, adjoints, scratch, pools,
  /// workspace): for a tape that will not record again soon. The next recording allocates.
  void release() {
    clear();
    std::vector<Node<T>>().swap(nodes_);
    std::vector<Array<T>>().swap(adjoint_pool_);
    std::vector<PoolBin>().swap(value_pool_);
    std::vector<T>().swap(workspace_);
  }

  /// Dropout in training. While a stream is set, ad::dropout keeps entry (i, j) of its k-th
  /// call since clear() when dropout_keeps(seed, k, row_offset + i, j, p): a hash of where the
  /// entry sits in the whole batch, so a batch split over several tapes (lanes, each given
  /// its first row as row_offset) drops the same entries as one tape. Without a stream (the
  /// default, and so in every evaluation) ad::dropout is the identity and records nothing.
  struct DropoutStream {
    bool on = false;
    std::uint64_t seed = 0;
    std::size_t row_offset = 0;
    std::uint32_t calls = 0;  ///< ad::dropout calls recorded since clear()
  };
  void set_dropout_stream(std::uint64_t seed, std::size_t row_offset) {
    dropout_.on = true;
    dropout_.seed = seed;
    dropout_.row_offset = row_offset;
  }
  void clear_dropout_stream() { dropout_.on = false; }
  const DropoutStream& dropout_stream() const { return dropout_; }
  /// The index of the next dropout call (used by ad::dropout).
  std::uint32_t next_dropout_call() { return dropout_.calls++; }
  /// Numbers the next dropout call k (and those after it k + 1, …) until clear(): a recording
  /// that stands for the later part of a longer one, whose first k calls were recorded apart
  /// (flows::Trainer's base-sample pass, numbered after the data pass as on one tape).
  void set_dropout_call(std::uint32_t k) { dropout_.calls = k; }
  std::size_t size() const { return size_; }
  /// Bytes held by node arrays (values, adjoints, scratch), their pools and the workspace,
  /// live or reusable.
  std::size_t bytes_reserved() const;

  const Node<T>& node(std::size_t i) const { return nodes_[i]; }
  const Array<T>& value(std::int32_t i) const {
    const Node<T>& n = nodes_[i];
    return n.param ? n.param->value : n.value;
  }
  const Array<T>& grad(std::int32_t i);

  /// Records op on its inputs with its attributes, e.g. record(Op::clamp, {a.index},
  /// Attrs<T>().with_bounds(lo, hi)): checks shapes, computes the value. The free functions
  /// in ops.hpp are the friendly way to call this.
  Var<T> record(Op op, Inputs in, const Attrs<T>& attrs = Attrs<T>());

  // --- used by the ops' forward and VJP functions -----------------------------------
  Array<T>& mutable_value(std::int32_t i) {
    Node<T>& n = nodes_[i];
    return n.param ? n.param->value : n.value;
  }
  /// The adjoint to accumulate into for node i, zeroed on first use in this pass;
  /// nullptr when node i does not need a gradient.
  Array<T>* grad_sink(std::int32_t i);
  /// The same for a VJP that writes every element of the adjoint: fresh = true when this is
  /// the first contribution to node i's adjoint in this pass, and then the array is *not*
  /// zeroed (it holds stale values) and the caller must assign ā = …; fresh = false when
  /// earlier contributions are there (or it is a Parameter::grad), and the caller adds ā += ….
  /// An op with the same node as two inputs is safe as long as it finishes writing one
  /// input's adjoint before asking for the next: the second request then finds fresh = false.
  Array<T>* grad_sink(std::int32_t i, bool& fresh);
  /// Gives a, a node's value or scratch array, the shape rows × cols (contents undefined):
  /// with set_pool_values, a pooled array of that size if a has another size; otherwise a
  /// resize when the size differs. Ops call this for their scratch.
  void fit(Array<T>& a, std::size_t rows, std::size_t cols);
  /// Temporary memory for one VJP: at least n elements, contents undefined, valid until the
  /// next call. One grow-only buffer per tape, so a step allocates nothing once it has seen
  /// its largest request (the fused linear layer's z̄ = ȳ ⊙ act'(y)).
  T* workspace(std::size_t n) {
    if (workspace_.size() < n) workspace_.resize(n);
    return workspace_.data();
  }
  std::size_t workspace_size() const { return workspace_.size(); }

 private:
  Node<T>& push(Op op);
  void run_backward(std::int32_t out);
  /// Whether node n received an adjoint in this backward pass (its grad_epoch is the pass's)
  /// and has a VJP to pass it on with: it needs a gradient and is not an input (a leaf or a
  /// parameter, whose adjoint is the result).
  bool passes_adjoint(const Node<T>& n) const {
    return n.grad_epoch == epoch_ && n.needs_grad && n.op != Op::leaf && n.op != Op::param;
  }
  /// With set_release_adjoints(true): n's adjoint is spent once its VJP has run (every consumer
  /// of n came later on the tape and has already run), so its buffer goes to the pool.
  void release_adjoint(Node<T>& n);
  void take_pooled_adjoint(Array<T>& grad, std::size_t size);
  /// With set_pool_values(true): the value pool's arrays of one size, and the moves in and out.
  struct PoolBin {
    std::size_t size = 0;
    std::vector<Array<T>> free;
  };
  void pool_node_arrays();                             // clear(): every node's value and scratch to the pool
  void put_in_pool(Array<T>& a);                       // a (non-empty) to its bin; a is left empty
  bool take_from_pool(Array<T>& a, std::size_t size);  // a (empty) takes an array of `size` elements, if any

  std::vector<Node<T>> nodes_;
  std::size_t size_ = 0;
  std::uint64_t epoch_ = 1;  // nodes start at grad_epoch 0: no adjoint yet
  bool param_grads_on_tape_ = false;
  std::vector<Array<T>>* param_buffers_ = nullptr;  // see set_param_grad_buffers
  const ParamIndex<T>* param_index_ = nullptr;
  /// Where parameter node n's adjoint accumulates: Parameter::grad or the caller's buffer;
  /// nullptr when it is kept on the tape (param_grads_on_tape).
  Array<T>* param_grad_target(const Node<T>& n) const;
  bool release_adjoints_ = false;
  std::vector<Array<T>> adjoint_pool_;  // released adjoint buffers (see set_release_adjoints)
  static constexpr std::uint64_t kReleased = ~std::uint64_t(0);  // grad_epoch of a released adjoint
  bool pool_values_ = false;
  std::vector<PoolBin> value_pool_;  // by size, in the order sizes were first seen (see set_pool_values)
  std::vector<T> workspace_;  // see workspace()
  DropoutStream dropout_;
};

template <class T>
const Array<T>& Var<T>::value() const { return tape->value(index); }
template <class T>
const Array<T>& Var<T>::grad() const { return tape->grad(index); }
template <class T>
T Var<T>::item() const {
  const Array<T>& v = value();
  if (v.size() != 1) throw ShapeError("item: the value is not 1×1");
  return v.data()[0];
}

extern template class ParamIndex<float>;
extern template class ParamIndex<double>;
extern template class Tape<float>;
extern template class Tape<double>;

}  // namespace ad
