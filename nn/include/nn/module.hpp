#pragma once
// Modules own parameters and child modules; parameters are found recursively
// under dotted names ("coupling.3.net.0.weight"), which is also how they are
// saved and loaded.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/autodiff.hpp"
#include "nn/init.hpp"

namespace nn {

using ad::Activation;
using ad::Array;
using ad::Parameter;
using ad::Tape;
using ad::Var;

template <class T>
class Module {
 public:
  Module() = default;
  // Parameters are registered by address: a module stays where it was built.
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  /// All parameters of this module and its descendants, as (dotted name, parameter).
  std::vector<std::pair<std::string, Parameter<T>*>> named_parameters() const;
  std::vector<Parameter<T>*> parameters() const;
  /// Total number of scalar parameters.
  std::size_t parameter_count() const;
  void zero_grad() const;

 protected:
  void register_parameter(const std::string& name, Parameter<T>& p) { params_.emplace_back(name, &p); }
  void register_module(const std::string& name, Module<T>& m) { children_.emplace_back(name, &m); }

 private:
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Parameter<T>*>>& out) const;
  std::vector<std::pair<std::string, Parameter<T>*>> params_;
  std::vector<std::pair<std::string, Module<T>*>> children_;
};

/// A module with one input and one output.
template <class T>
class Layer : public Module<T> {
 public:
  virtual Var<T> forward(Var<T> x) = 0;
  Var<T> operator()(Var<T> x) { return forward(x); }
};

/// Dense layer y = act(x·Wᵀ + b) with W out×in and b 1×out, as one fused tape node.
template <class T>
class Linear : public Layer<T> {
 public:
  /// Weights from `init`, bias zero.
  Linear(std::size_t in, std::size_t out, ad::Rng& rng, Init init = Init::xavier_uniform,
         Activation act = Activation::identity, bool with_bias = true);
  Var<T> forward(Var<T> x) override;

  std::size_t in_features() const { return weight.value.shape()[1]; }
  std::size_t out_features() const { return weight.value.shape()[0]; }

  Parameter<T> weight, bias;
  Activation activation;
  bool has_bias;
};

/// Multilayer perceptron: in → hidden[0] → … → hidden[k−1] → out, the activation
/// after every hidden layer and none after the last. With zero_last the last
/// layer starts at zero, so the network starts as the constant 0.
template <class T>
class MLP : public Layer<T> {
 public:
  MLP(std::size_t in, const std::vector<std::size_t>& hidden, std::size_t out, Activation act, ad::Rng& rng,
      bool zero_last = false, Init init = Init::xavier_uniform);
  Var<T> forward(Var<T> x) override;
  const std::vector<std::unique_ptr<Linear<T>>>& layers() const { return layers_; }
  /// Dropout at rate p after every hidden layer (active only on a tape with a dropout stream).
  void set_dropout(double p) { dropout_ = p; }
  double dropout() const { return dropout_; }

 private:
  std::vector<std::unique_ptr<Linear<T>>> layers_;
  double dropout_ = 0.0;
};

/// Residual network (pre-activation blocks, as nflows' ResidualNet that the MFG_NF code uses):
///   h = x·W_inᵀ + b_in,   then `blocks` times   h ← h + B₁(act(B₀(act(h)))),   out = h·W_outᵀ + b_out,
/// with B₀, B₁ dense hidden→hidden layers. Each block's B₁ starts at zero (the block starts as the
/// identity), and with zero_last so does the output layer. Children: "in", "blocks.<k>.0",
/// "blocks.<k>.1", "out".
template <class T>
class ResidualNet : public Layer<T> {
 public:
  ResidualNet(std::size_t in, std::size_t hidden, std::size_t blocks, std::size_t out, Activation act, ad::Rng& rng,
              bool zero_last = false, Init init = Init::xavier_uniform);
  Var<T> forward(Var<T> x) override;
  /// Dropout at rate p inside each block, between act(B₀ ·) and B₁ (as nflows' ResidualBlock;
  /// active only on a tape with a dropout stream).
  void set_dropout(double p) { dropout_ = p; }
  double dropout() const { return dropout_; }

 private:
  Activation act_;
  double dropout_ = 0.0;
  std::unique_ptr<Linear<T>> in_, out_;
  std::vector<std::unique_ptr<Linear<T>>> blocks_;  // two per block: act(B₀ ·), then B₁ ·
};

/// Applies an activation elementwise.
template <class T>
class ActivationLayer : public Layer<T> {
 public:
  explicit ActivationLayer(Activation act) : act_(act) {}
  Var<T> forward(Var<T> x) override { return ad::activation(x, act_); }

 private:
  Activation act_;
};

/// Layers applied in order; children are named "0", "1", ….
template <class T>
class Sequential : public Layer<T> {
 public:
  Sequential() = default;
  /// Appends a layer (taking ownership) and returns a reference to it.
  template <class L>
  L& add(std::unique_ptr<L> layer) {
    L& ref = *layer;
    this->register_module(std::to_string(layers_.size()), ref);
    layers_.push_back(std::move(layer));
    return ref;
  }
  Var<T> forward(Var<T> x) override {
    for (auto& l : layers_) x = l->forward(x);
    return x;
  }
  std::size_t size() const { return layers_.size(); }

 private:
  std::vector<std::unique_ptr<Layer<T>>> layers_;
};

extern template class Module<float>;
extern template class Module<double>;
extern template class Linear<float>;
extern template class Linear<double>;
extern template class MLP<float>;
extern template class MLP<double>;
extern template class ResidualNet<float>;
extern template class ResidualNet<double>;

}  // namespace nn
