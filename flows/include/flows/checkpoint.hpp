#pragma once
// Saving and loading models and training checkpoints as .npz archives that
// numpy reads directly: every parameter under its dotted name, plus an
// "architecture" entry holding JSON text (uint8), so nothing has to be
// repeated on the command line later:
//   z = np.load("model.npz"); json.loads(z["architecture"].tobytes())
// Files are replaced atomically (temporary file, fsync, rename).
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "flows/flow.hpp"
#include "flows/train.hpp"
#include "flows/validation.hpp"

namespace flows {

/// Writes the flow's parameters and {"format", "version", "flow": config, "meta": meta}.
template <class T>
void save_model(const std::string& path, const Flow<T>& flow, const nlohmann::json& meta);

struct LoadedModel {
  std::unique_ptr<Flow<float>> flow;
  nlohmann::json meta;
};

/// Rebuilds the flow from the file's architecture and loads every parameter,
/// checking names and shapes (a mismatch names the tensor and both shapes).
LoadedModel load_model(const std::string& path);

/// The architecture JSON of a model or checkpoint file, without building anything.
nlohmann::json read_architecture(const std::string& path);

/// A model file plus the optimizer's moments and the trainer's state (step,
/// skipped batches, random-generator state), and the validation's best parameters
/// ("validation.<name>") and state when given: everything --resume needs.
template <class T>
void save_checkpoint(const std::string& path, const Flow<T>& flow, Trainer<T>& trainer, const nlohmann::json& meta,
                     const Validation<T>* validation = nullptr);

/// Loads parameters, optimizer state and trainer state into a flow built from
/// read_architecture(path) and a trainer constructed on it (and the validation state,
/// when both the file and the caller have one).
template <class T>
void load_checkpoint(const std::string& path, Flow<T>& flow, Trainer<T>& trainer, Validation<T>* validation = nullptr);

}  // namespace flows
