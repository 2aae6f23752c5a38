#include "flows/checkpoint.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>

#include <fmt/format.h>

#include "nn/io.hpp"

namespace flows {
namespace {

constexpr const char* kFormat = "trflow-model";
constexpr int kVersion = 1;

template <class T>
constexpr nn::Dtype dtype_of() {
  return sizeof(T) == 4 ? nn::Dtype::float32 : nn::Dtype::float64;
}

std::string shape_text(const std::vector<std::size_t>& s) {
  std::string t = "(";
  for (std::size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + (s.size() == 1 ? ",)" : ")");
}

template <class T>
void add_array(std::vector<std::pair<std::string, std::string>>& entries, const std::string& name, const Array<T>& a) {
  entries.emplace_back(name, nn::encode_npy(a.data(), {a.shape()[0], a.shape()[1]}, dtype_of<T>()));
}

void add_json(std::vector<std::pair<std::string, std::string>>& entries, const std::string& name,
              const nlohmann::json& j) {
  const std::string text = j.dump();
  entries.emplace_back(name, nn::encode_npy(reinterpret_cast<const std::uint8_t*>(text.data()), {text.size()}));
}

/// The archive's arrays by name.
struct Archive {
  std::string path;
  std::map<std::string, nn::NpyArray> arrays;

  explicit Archive(const std::string& p) : path(p) {
    for (nn::NpyArray& a : nn::read_npz(p)) {
      std::string name = a.name;
      arrays.emplace(std::move(name), std::move(a));
    }
  }

  const nn::NpyArray& get(const std::string& name) const {
    auto it = arrays.find(name);
    if (it == arrays.end())
      throw nn::FormatError(path, fmt::format("entry '{}'", name), fmt::format("a tensor named '{}', which is missing", name));
    return it->second;
  }

  nlohmann::json json(const std::string& name) const {
    const nn::NpyArray& a = get(name);
    // The bytes of the text: only uint8 elements convert to char safely.
    if (a.descr != "|u1")
      throw nn::FormatError(path, fmt::format("entry '{}'", name),
                            fmt::format("JSON text stored as uint8 ('|u1'), got dtype '{}'", a.descr));
    std::string text(a.data.size(), '\0');
    for (std::size_t i = 0; i < a.data.size(); ++i) text[i] = char(static_cast<unsigned char>(a.data[i]));
    try {
      return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw nn::FormatError(path, fmt::format("entry '{}'", name), fmt::format("JSON text ({})", e.what()));
    }
  }

  /// Copies the array `name` into `target`, which must have the same shape.
  template <class T>
  void load(const std::string& name, Array<T>& target) const {
    const nn::NpyArray& a = get(name);
    const std::vector<std::size_t> want = {target.shape()[0], target.shape()[1]};
    if (a.shape != want)
      throw nn::FormatError(path, fmt::format("entry '{}'", name),
                            fmt::format("tensor '{}' of shape {}, found shape {}", name, shape_text(want), shape_text(a.shape)));
    std::copy(a.data.begin(), a.data.end(), target.data());
  }
};

nlohmann::json architecture(const nlohmann::json& flow, const nlohmann::json& meta) {
  return {{"format", kFormat}, {"version", kVersion}, {"flow", flow}, {"meta", meta}};
}

void check_architecture(const std::string& path, const nlohmann::json& arch) {
  // (Compared as JSON values: a "format" that is not a string, or a "version"
  // that is a float, must not be converted first.)
  if (!arch.is_object() || !arch.contains("format") || arch["format"] != kFormat)
    throw nn::FormatError(path, "entry 'architecture'", fmt::format("a {} architecture record", kFormat));
  const nlohmann::json version = arch.value("version", nlohmann::json());
  if (!version.is_number_integer() || version != kVersion)
    throw nn::FormatError(path, "entry 'architecture'",
                          fmt::format("format version {}, found {}", kVersion,
                                      version.is_primitive() ? version.dump().substr(0, 40)
                                                             : std::string("an ") + version.type_name()));
}

template <class T>
std::vector<std::pair<std::string, std::string>> model_entries(const Flow<T>& flow, const nlohmann::json& meta) {
  std::vector<std::pair<std::string, std::string>> entries;
  add_json(entries, "architecture", architecture(flow.config(), meta));
  for (const auto& [name, p] : flow.named_parameters()) add_array(entries, name, p->value);
  return entries;
}

/// Loads every parameter of the flow. A tensor in the file that is not a
/// parameter (nor checkpoint state) is an error too: the file is not this model.
template <class T>
void load_parameters(const Archive& archive, const Flow<T>& flow) {
  const auto params = flow.named_parameters();
  for (const auto& [name, p] : params) {
    archive.load(name, p->value);
    // A model holding NaN or Inf evaluates to nulls: refuse it here, for every command that loads one.
    const T* v = p->value.data();
    for (std::size_t k = 0; k < p->value.size(); ++k)
      if (!std::isfinite(double(v[k])))
        throw nn::FormatError(archive.path, fmt::format("entry '{}'", name),
                              fmt::format("finite parameter values, found {} at index {}", double(v[k]), k));
  }
  for (const auto& entry : archive.arrays) {
    const std::string& name = entry.first;  // (not a structured binding: clang 14 cannot capture one in the lambda)
    if (name == "architecture" || name == "trainer" || name == "validation" || name.rfind("optimizer.", 0) == 0 ||
        name.rfind("validation.", 0) == 0)
      continue;
    const bool known = std::any_of(params.begin(), params.end(), [&](const auto& np) { return np.first == name; });
    if (!known)
      throw nn::FormatError(archive.path, fmt::format("entry '{}'", name),
                            fmt::format("only tensors of the described model, but '{}' belongs to no parameter", name));
  }
}

}  // namespace

template <class T>
void save_model(const std::string& path, const Flow<T>& flow, const nlohmann::json& meta) {
  nn::write_npz(path, model_entries(flow, meta));
}

nlohmann::json read_architecture(const std::string& path) {
  const Archive archive(path);
  nlohmann::json arch = archive.json("architecture");
  check_architecture(path, arch);
  return arch;
}

LoadedModel load_model(const std::string& path) {
  const Archive archive(path);
  const nlohmann::json arch = archive.json("architecture");
  check_architecture(path, arch);
  LoadedModel m;
  try {
    m.flow = Flow<float>::from_config(arch.at("flow"));
  } catch (const std::exception& e) {
    throw nn::FormatError(path, "entry 'architecture'", fmt::format("a valid flow description ({})", e.what()));
  }
  load_parameters(archive, *m.flow);
  m.meta = arch.value("meta", nlohmann::json::object());
  return m;
}

template <class T>
void save_checkpoint(const std::string& path, const Flow<T>& flow, Trainer<T>& trainer, const nlohmann::json& meta,
                     const Validation<T>* validation) {
  auto entries = model_entries(flow, meta);
  if (validation) {
    add_json(entries, "validation", validation->state());
    for (const auto& [name, a] : validation->best_parameters()) add_array(entries, "validation." + name, a);
  }
  for (const auto& [name, a] : trainer.optimizer().state()) add_array(entries, "optimizer." + name, *a);
  add_json(entries, "trainer",
           {{"steps_done", trainer.steps_done()},
            {"optimizer_steps", trainer.optimizer().steps()},
            {"skipped", trainer.skipped()},
            {"lr_scale", trainer.lr_scale()},
            {"rng", trainer.rng().state()}});
  nn::write_npz(path, entries);
}

template <class T>
void load_checkpoint(const std::string& path, Flow<T>& flow, Trainer<T>& trainer, Validation<T>* validation) {
  const Archive archive(path);
  check_architecture(path, archive.json("architecture"));
  load_parameters(archive, flow);
  if (validation && archive.arrays.count("validation")) {  // checkpoints before validation have none
    for (auto& [name, a] : validation->best_parameters()) archive.load("validation." + name, a);
    try {
      validation->set_state(archive.json("validation"));
    } catch (const std::exception& e) {
      throw nn::FormatError(path, "entry 'validation'", fmt::format("the validation state ({})", e.what()));
    }
  }
  for (const auto& [name, a] : trainer.optimizer().state()) archive.load("optimizer." + name, *a);
  const nlohmann::json state = archive.json("trainer");
  // A step count: a non-negative JSON integer (a float such as 1e300 must not be converted).
  auto count = [&](const char* key) {
    const nlohmann::json& v = state.at(key);
    const bool ok = v.is_number_unsigned() ? v.get<std::uint64_t>() <= std::uint64_t(INT64_MAX)
                                           : v.is_number_integer() && v.get<std::int64_t>() >= 0;
    if (!ok)
      throw std::invalid_argument(fmt::format("'{}' must be a non-negative integer, got {}", key,
                                              v.is_primitive() ? v.dump().substr(0, 40) : std::string("an ") + v.type_name()));
    return v.get<std::int64_t>();
  };
  try {
    trainer.optimizer().set_steps(count("optimizer_steps"));
    trainer.set_skipped(count("skipped"));
    trainer.rng().set_state(state.at("rng").get<std::string>());
    const nlohmann::json scale = state.value("lr_scale", nlohmann::json(1.0));  // absent before plateaus
    if (!scale.is_number() || !(scale.get<double>() > 0) || !std::isfinite(scale.get<double>()))
      throw std::invalid_argument(fmt::format("'lr_scale' must be a positive number, got {}", scale.dump().substr(0, 40)));
    trainer.set_lr_scale(scale.get<double>());
  } catch (const std::exception& e) {
    throw nn::FormatError(path, "entry 'trainer'", fmt::format("the trainer's state ({})", e.what()));
  }
}

template void save_model<float>(const std::string&, const Flow<float>&, const nlohmann::json&);
template void save_model<double>(const std::string&, const Flow<double>&, const nlohmann::json&);
template void save_checkpoint<float>(const std::string&, const Flow<float>&, Trainer<float>&, const nlohmann::json&,
                                     const Validation<float>*);
template void save_checkpoint<double>(const std::string&, const Flow<double>&, Trainer<double>&, const nlohmann::json&,
                                      const Validation<double>*);
template void load_checkpoint<float>(const std::string&, Flow<float>&, Trainer<float>&, Validation<float>*);
template void load_checkpoint<double>(const std::string&, Flow<double>&, Trainer<double>&, Validation<double>*);

}  // namespace flows
