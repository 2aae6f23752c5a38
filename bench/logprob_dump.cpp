// Per-point log-densities of a saved trflow model, for checking another implementation
// (bench/torch_spline.py --trflow-model ... --check-logprob ...) against trflow's own numbers.
//
//   logprob_dump --model DIR|DIR/model.npz --data points.npy --out logp.npy
//                [--dtype float32|float64] [--latent latent.npy] [--grad grads.npz]
//                [--push x.npy --push-out fx.npy [--push-grad tgrads.npz]]
//
// Writes log p(y_i) = log α0(G(y_i)) + log|det ∇G(y_i)| for every row y_i of points.npy (an
// (N, d) float32 or float64 array) as an (N,) .npy of the dtype computed in. This is the flow's
// own density: a model trained with --standardize lives in standardized units (the data-unit
// density adds the standardization's log-Jacobian, which `trflow eval` applies and this does not).
//
// --dtype float32 (default) is what `trflow eval` and training compute: flows::load_model and
// flows::Inference<float>, chunks of 1024 rows. --dtype float64 rebuilds the same flow as
// Flow<double> from the file's architecture and loads the stored (float32) parameters into it,
// which separates formula differences from float32 rounding.
// --latent: G(y) (N, d). --grad: d(Σ_i log p(y_i))/dθ for every parameter, an .npz under the
// parameters' names (one tape pass over all rows).
// --push: the forward direction on base points x (N, d): --push-out gets [F(x) | log|det ∇F(x)|]
// (N, d + 1), --push-grad the gradient of the transport cost T = L · mean_i Σ_l ‖s_{l+1} − s_l‖²
// (flows::path_energy) along F, which checks the forward map's VJP as --grad checks the inverse's.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "autodiff/ops.hpp"
#include "flows/checkpoint.hpp"
#include "flows/flow.hpp"
#include "flows/inference.hpp"
#include "nn/io.hpp"

namespace {

struct Options {
  std::string model, data, out, latent, grad, push, push_out, push_grad;
  std::string dtype = "float32";
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "logprob_dump: %s\n"
               "usage: logprob_dump --model DIR|model.npz --data points.npy --out logp.npy\n"
               "                    [--dtype float32|float64] [--latent latent.npy] [--grad grads.npz]\n"
               "                    [--push x.npy --push-out fx.npy [--push-grad tgrads.npz]]\n",
               why.c_str());
  std::exit(2);
}

std::string model_file(const std::string& p) {
  if (p.size() >= 4 && p.compare(p.size() - 4, 4, ".npz") == 0) return p;
  return p + "/model.npz";
}

template <class T>
constexpr nn::Dtype dtype_of() {
  return sizeof(T) == 4 ? nn::Dtype::float32 : nn::Dtype::float64;
}

template <class T>
std::unique_ptr<flows::Flow<T>> load_flow(const std::string& path) {
  if constexpr (std::is_same_v<T, float>) {
    return std::move(flows::load_model(path).flow);
  } else {
    const nlohmann::json arch = flows::read_architecture(path);
    auto flow = flows::Flow<T>::from_config(arch.at("flow"));
    std::vector<nn::NpyArray> arrays = nn::read_npz(path);
    for (const auto& [name, p] : flow->named_parameters()) {
      const nn::NpyArray* a = nullptr;
      for (const auto& e : arrays)
        if (e.name == name) a = &e;
      if (!a) throw std::runtime_error(fmt::format("{}: no tensor named '{}'", path, name));
      if (a->data.size() != p->value.size())
        throw std::runtime_error(fmt::format("{}: '{}' has {} elements, the parameter {}", path, name, a->data.size(),
                                             p->value.size()));
      for (std::size_t i = 0; i < a->data.size(); ++i) p->value.data()[i] = T(a->data[i]);
    }
    return flow;
  }
}

template <class T>
int run(const Options& o) {
  const std::string path = model_file(o.model);
  auto flow = load_flow<T>(path);
  const nn::NpyArray pts = nn::read_npy(o.data);
  if (pts.shape.size() != 2 || pts.shape[1] != flow->dim())
    throw std::runtime_error(fmt::format("{}: expected an (N, {}) array", o.data, flow->dim()));
  const std::size_t n = pts.shape[0], d = pts.shape[1];
  std::vector<T> y(pts.data.begin(), pts.data.end()), lp(n);

  flows::Inference<T> inference(*flow, 1, 1024);
  inference.log_prob(y.data(), n, lp.data());
  nn::write_file_atomic(o.out, nn::encode_npy(lp.data(), {n}, dtype_of<T>()));

  if (!o.latent.empty() || !o.grad.empty()) {
    ad::Tape<T> tape;
    const ad::Var<T> yv = tape.constant(y.data(), n, d);
    if (!o.latent.empty()) {
      const auto g = flow->inverse(yv);
      nn::write_file_atomic(o.latent, nn::encode_npy(g.out.value().data(), {n, d}, dtype_of<T>()));
    }
    if (!o.grad.empty()) {
      flow->zero_grad();
      const ad::Var<T> total = ad::sum(flow->log_prob(yv));
      tape.backward(total);
      std::vector<std::pair<std::string, std::string>> entries;
      for (const auto& [name, p] : flow->named_parameters())
        entries.emplace_back(name, nn::encode_npy(p->grad.data(), {p->grad.shape()[0], p->grad.shape()[1]},
                                                  dtype_of<T>()));
      nn::write_npz(o.grad, entries);
    }
  }
  if (!o.push.empty()) {
    const nn::NpyArray xs = nn::read_npy(o.push);
    if (xs.shape.size() != 2 || xs.shape[1] != d)
      throw std::runtime_error(fmt::format("{}: expected an (N, {}) array", o.push, d));
    const std::size_t nx = xs.shape[0];
    std::vector<T> x(xs.data.begin(), xs.data.end());
    ad::Tape<T> tape;
    std::vector<ad::Var<T>> traj;
    const auto f = flow->forward(tape.constant(x.data(), nx, d), &traj);
    std::vector<T> fx(nx * (d + 1));
    for (std::size_t i = 0; i < nx; ++i) {
      for (std::size_t j = 0; j < d; ++j) fx[i * (d + 1) + j] = f.out.value()(i, j);
      fx[i * (d + 1) + d] = f.logdet.tape ? f.logdet.value()(i, 0) : T(0);
    }
    if (!o.push_out.empty()) nn::write_file_atomic(o.push_out, nn::encode_npy(fx.data(), {nx, d + 1}, dtype_of<T>()));
    if (!o.push_grad.empty()) {
      flow->zero_grad();
      tape.backward(flows::path_energy(traj));
      std::vector<std::pair<std::string, std::string>> entries;
      for (const auto& [name, p] : flow->named_parameters())
        entries.emplace_back(name, nn::encode_npy(p->grad.data(), {p->grad.shape()[0], p->grad.shape()[1]},
                                                  dtype_of<T>()));
      nn::write_npz(o.push_grad, entries);
    }
  }
  double mean = 0;
  for (T v : lp) mean += double(v);
  std::fprintf(stderr, "logprob_dump: %zu rows of %s, %s, mean log p %.6f -> %s\n", n, o.data.c_str(), o.dtype.c_str(),
               n ? mean / double(n) : 0.0, o.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value after " + a);
      return argv[++i];
    };
    if (a == "--model") o.model = next();
    else if (a == "--data") o.data = next();
    else if (a == "--out") o.out = next();
    else if (a == "--dtype") o.dtype = next();
    else if (a == "--latent") o.latent = next();
    else if (a == "--grad") o.grad = next();
    else if (a == "--push") o.push = next();
    else if (a == "--push-out") o.push_out = next();
    else if (a == "--push-grad") o.push_grad = next();
    else usage("unknown option " + a);
  }
  if (o.model.empty() || o.data.empty() || o.out.empty()) usage("--model, --data and --out are required");
  try {
    if (o.dtype == "float32") return run<float>(o);
    if (o.dtype == "float64") return run<double>(o);
    usage("--dtype must be float32 or float64");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "logprob_dump: %s\n", e.what());
    return 1;
  }
}
