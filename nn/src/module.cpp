#include "nn/module.hpp"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

namespace nn {

// ---------------------------------------------------------------- init
const char* init_name(Init init) { return ad::name_in(kInitNames, init); }
Init init_from_name(const std::string& name) { return ad::value_named(kInitNames, name, "initialization"); }

template <class T>
void initialize(ad::Array<T>& w, Init init, ad::Rng& rng, double gain) {
  const double fan_out = double(w.shape()[0]), fan_in = double(w.shape()[1]);
  switch (init) {
    case Init::zeros: w.fill(T(0)); return;
    case Init::xavier_uniform: {
      const double a = gain * std::sqrt(6.0 / (fan_in + fan_out));
      rng.fill_uniform(w.data(), w.size(), -a, a);
      return;
    }
    case Init::xavier_normal:
      rng.fill_normal(w.data(), w.size(), 0.0, gain * std::sqrt(2.0 / (fan_in + fan_out)));
      return;
    case Init::kaiming_uniform: {
      const double a = std::sqrt(6.0 / fan_in);
      rng.fill_uniform(w.data(), w.size(), -a, a);
      return;
    }
    case Init::kaiming_normal: rng.fill_normal(w.data(), w.size(), 0.0, std::sqrt(2.0 / fan_in)); return;
  }
}

// ---------------------------------------------------------------- Module
template <class T>
void Module<T>::collect(const std::string& prefix, std::vector<std::pair<std::string, Parameter<T>*>>& out) const {
  for (const auto& [name, p] : params_) out.emplace_back(prefix + name, p);
  for (const auto& [name, m] : children_) m->collect(prefix + name + ".", out);
}

template <class T>
std::vector<std::pair<std::string, Parameter<T>*>> Module<T>::named_parameters() const {
  std::vector<std::pair<std::string, Parameter<T>*>> out;
  collect("", out);
  return out;
}

template <class T>
std::vector<Parameter<T>*> Module<T>::parameters() const {
  std::vector<Parameter<T>*> out;
  for (auto& [name, p] : named_parameters()) out.push_back(p);
  return out;
}

template <class T>
std::size_t Module<T>::parameter_count() const {
  std::size_t n = 0;
  for (Parameter<T>* p : parameters()) n += p->value.size();
  return n;
}

template <class T>
void Module<T>::zero_grad() const {  // recursive, without building names: no allocation
  for (const auto& np : params_) np.second->zero_grad();
  for (const auto& nm : children_) nm.second->zero_grad();
}

// ---------------------------------------------------------------- Linear
template <class T>
Linear<T>::Linear(std::size_t in, std::size_t out, ad::Rng& rng, Init init, Activation act, bool with_bias)
    : weight("weight", out, in), bias("bias", 1, out), activation(act), has_bias(with_bias) {
  if (in == 0 || out == 0) throw std::invalid_argument(fmt::format("Linear: sizes must be positive, got {}→{}", in, out));
  initialize(weight.value, init, rng);
  this->register_parameter("weight", weight);
  if (has_bias) this->register_parameter("bias", bias);
}

template <class T>
Var<T> Linear<T>::forward(Var<T> x) {
  Tape<T>& t = *x.tape;
  const Var<T> b = has_bias ? t.param(bias) : Var<T>{};
  return activation == Activation::identity ? ad::linear(x, t.param(weight), b)
                                            : ad::linear_act(x, t.param(weight), b, activation);
}

// ---------------------------------------------------------------- MLP
template <class T>
MLP<T>::MLP(std::size_t in, const std::vector<std::size_t>& hidden, std::size_t out, Activation act, ad::Rng& rng,
            bool zero_last, Init init) {
  std::size_t width = in;
  for (std::size_t h : hidden) {
    layers_.push_back(std::make_unique<Linear<T>>(width, h, rng, init, act));
    width = h;
  }
  layers_.push_back(std::make_unique<Linear<T>>(width, out, rng, zero_last ? Init::zeros : init));
  for (std::size_t i = 0; i < layers_.size(); ++i) this->register_module(std::to_string(i), *layers_[i]);
}

template <class T>
Var<T> MLP<T>::forward(Var<T> x) {
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    x = layers_[i]->forward(x);
    if (dropout_ > 0 && i + 1 < layers_.size()) x = ad::dropout(x, dropout_);
  }
  return x;
}

// ---------------------------------------------------------------- residual network
template <class T>
ResidualNet<T>::ResidualNet(std::size_t in, std::size_t hidden, std::size_t blocks, std::size_t out, Activation act,
                            ad::Rng& rng, bool zero_last, Init init)
    : act_(act) {
  in_ = std::make_unique<Linear<T>>(in, hidden, rng, init);
  this->register_module("in", *in_);
  for (std::size_t k = 0; k < blocks; ++k) {
    blocks_.push_back(std::make_unique<Linear<T>>(hidden, hidden, rng, init, act));
    blocks_.push_back(std::make_unique<Linear<T>>(hidden, hidden, rng, Init::zeros));
    this->register_module(fmt::format("blocks.{}.0", k), *blocks_[2 * k]);
    this->register_module(fmt::format("blocks.{}.1", k), *blocks_[2 * k + 1]);
  }
  out_ = std::make_unique<Linear<T>>(hidden, out, rng, zero_last ? Init::zeros : init);
  this->register_module("out", *out_);
}

template <class T>
Var<T> ResidualNet<T>::forward(Var<T> x) {
  Var<T> h = in_->forward(x);
  for (std::size_t k = 0; k < blocks_.size(); k += 2)
    h = h + blocks_[k + 1]->forward(ad::dropout(blocks_[k]->forward(ad::activation(h, act_)), dropout_));
  return out_->forward(h);
}

template void initialize<float>(ad::Array<float>&, Init, ad::Rng&, double);
template void initialize<double>(ad::Array<double>&, Init, ad::Rng&, double);
template class Module<float>;
template class Module<double>;
template class Linear<float>;
template class Linear<double>;
template class MLP<float>;
template class MLP<double>;
template class ResidualNet<float>;
template class ResidualNet<double>;

}  // namespace nn
