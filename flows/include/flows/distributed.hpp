#pragma once
// Data parallelism across processes (MPI ranks). Every rank holds the whole model and
// draws the whole batch from the same seeded stream; rank r takes the rows
// lane_rows(batch, r, ranks) and splits them across its own threads (parallel.hpp).
// After the backward passes, one MPI_Allreduce sums a single contiguous buffer (every
// parameter's gradient, then the step's loss terms and flags), so every rank takes the
// same optimizer step and the parameters stay identical on all ranks. Which rows a rank
// holds does not change the answer, only the order of floating-point sums: a run with
// N ranks × T threads computes what one process with N·T threads computes.
#include <cstddef>
#include <memory>
#include <string>

namespace flows {

/// The ranks that train one model together. `nullptr` where a Communicator* is taken
/// means a single process.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Sums x[0 .. n) elementwise over all ranks, in place; every rank receives the same values.
  virtual void allreduce_sum(float* x, std::size_t n) = 0;
  virtual void allreduce_sum(double* x, std::size_t n) = 0;
  /// Returns when every rank has called it.
  virtual void barrier() = 0;
};

/// Whether this build has MPI (CMake found Open MPI when it configured).
bool mpi_available();
/// A human-readable name of the MPI library ("Open MPI v4.1.4"), or "" without MPI.
std::string mpi_library();
/// Whether this process was started by mpirun/mpiexec (Open MPI's or PMIx's environment).
bool launched_by_mpirun();
/// The world communicator: initializes MPI on the first call (and finalizes it at exit).
/// Returns nullptr when the process was not started by mpirun (no MPI start-up cost for a
/// plain run); throws when it was, but this build has no MPI.
Communicator* mpi_world(int* argc, char*** argv);

}  // namespace flows
