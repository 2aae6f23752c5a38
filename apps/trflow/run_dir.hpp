#pragma once
// A run's output directory: one writer at a time, no leftovers of killed writers, and no
// run started over another's files by accident.
#include <filesystem>
#include <string>
#include <vector>

namespace trflow {

/// An exclusive lock (flock) on DIR/.trflow.lock, held while the object lives: a second
/// trflow training into the same directory gets a DataError naming the holder's pid.
class RunDirLock {
 public:
  explicit RunDirLock(const std::filesystem::path& dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  int fd_ = -1;
};

/// Removes DIR's "<name>.tmp.<pid>" files (the temporaries of atomic writes) whose writer
/// process no longer exists; returns their names.
std::vector<std::string> remove_stale_temporaries(const std::filesystem::path& dir);

/// The files of a run (config, checkpoint, model, metrics, result, figures) present in DIR.
std::vector<std::string> run_files_in(const std::filesystem::path& dir);

/// Total physical memory in bytes (0 if unknown).
double physical_memory_bytes();

}  // namespace trflow
