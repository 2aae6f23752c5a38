#pragma once
// The PNG figures of a trained model (cairo, through the plot library).
#include <string>

#include "model_dir.hpp"

namespace trflow {

/// Writes DIR/samples.png, density.png, trajectories.png and (if metrics.jsonl
/// exists in the model's directory) losses.png, the model's passes on `threads`
/// threads. Returns the paths written.
std::vector<std::string> write_all_figures(Model& model, flows::Dataset& data, const std::string& dir, std::size_t n,
                                           std::uint64_t seed, int threads = 1);

/// Trajectories of a grid of base points through the layers, as (L+1)·N·2
/// doubles in data units (2-D models, or the first two coordinates).
std::vector<double> grid_trajectories(Model& model, std::size_t per_side, std::size_t* states, std::size_t* points,
                                      std::vector<int>* groups = nullptr);

}  // namespace trflow
