// MPI_Allreduce (sum, float32, in place) over message sizes from 4 B to 64 MiB: the median time
// per call, for fitting the α–β model of docs/scaling.md (t(n) = a + b·n on this machine).
//   mpicxx -O2 bench/allreduce_bench.cpp -o build/allreduce_bench && mpirun -np 2 build/allreduce_bench [--reps 50]
// (bench/mpi_scaling.sh builds and runs it)
// Prints one JSON object per size: {"ranks", "bytes", "median_us", "min_us", "gb_per_s"}.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int reps = 50;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::max(3, std::atoi(argv[i + 1]));
  for (std::size_t floats = 1; floats <= (std::size_t(1) << 24); floats *= 4) {
    std::vector<float> buf(floats, 1.0f);
    std::vector<double> times;
    const int n = floats >= (std::size_t(1) << 22) ? std::max(3, reps / 5) : reps;
    for (int r = 0; r < n + 2; ++r) {
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), int(floats), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      const double t = MPI_Wtime() - t0;
      if (r >= 2) times.push_back(t);  // two warm-up calls
    }
    // the slowest rank's time is the call's
    MPI_Allreduce(MPI_IN_PLACE, times.data(), int(times.size()), MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    if (rank == 0)
      std::printf("{\"ranks\": %d, \"bytes\": %zu, \"median_us\": %.3f, \"min_us\": %.3f, \"gb_per_s\": %.4f}\n", size,
                  floats * sizeof(float), 1e6 * median, 1e6 * times.front(), double(floats * sizeof(float)) / median / 1e9);
  }
  MPI_Finalize();
  return 0;
}
