#include "flows/distributed.hpp"

#include <cstdlib>
#include <stdexcept>

#ifdef TRFLOW_HAVE_MPI
#include <mpi.h>
#endif

namespace flows {

bool launched_by_mpirun() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(var)) return true;
  return false;
}

#ifdef TRFLOW_HAVE_MPI

namespace {

class MpiWorld final : public Communicator {
 public:
  MpiWorld(int* argc, char*** argv) {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) MPI_Init(argc, argv);
    // Errors come back as codes (a dead peer must not leave the others waiting silently).
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiWorld() override {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allreduce_sum(float* x, std::size_t n) override { reduce(x, n, MPI_FLOAT); }
  void allreduce_sum(double* x, std::size_t n) override { reduce(x, n, MPI_DOUBLE); }
  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

 private:
  void reduce(void* x, std::size_t n, MPI_Datatype type) {
    if (n > std::size_t(INT32_MAX)) throw std::length_error("allreduce: more than 2³¹ − 1 values in one buffer");
    check(MPI_Allreduce(MPI_IN_PLACE, x, int(n), type, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  }
  void check(int rc, const char* call) const {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw std::runtime_error(std::string(call) + " failed on rank " + std::to_string(rank_) + ": " +
                             std::string(text, std::size_t(len)) + " (another rank may have died)");
  }
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool mpi_available() { return true; }

std::string mpi_library() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(text, &len);
  std::string s(text, std::size_t(len));
  // "Open MPI v4.1.4, package: Debian OpenMPI, ident: …": keep the first clause.
  if (const auto comma = s.find(','); comma != std::string::npos) s.resize(comma);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

Communicator* mpi_world(int* argc, char*** argv) {
  if (!launched_by_mpirun()) return nullptr;
  static MpiWorld world(argc, argv);  // finalized at exit
  return &world;
}

#else

bool mpi_available() { return false; }
std::string mpi_library() { return ""; }

Communicator* mpi_world(int*, char***) {
  if (!launched_by_mpirun()) return nullptr;
  const char* n = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (n && std::string(n) == "1") return nullptr;  // one rank: the same as a plain run
  throw std::runtime_error(
      "this trflow was built without MPI, but mpirun started it (each rank would train alone); install Open MPI "
      "(scripts/install-deps.sh) and rebuild");
}

#endif

}  // namespace flows
