#pragma once
// Data parallelism over rows. A training step or an inference pass splits its
// batch into one contiguous block of rows per lane; every lane records the same
// flow on its own tape. Losses are means over rows, so with lane k holding n_k of
// the n rows,
//   loss = Σ_k (n_k / n) · loss_k   and   ∇loss = Σ_k (n_k / n) · ∇loss_k,
// which is what the lanes compute (each backward is seeded with n_k / n).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace flows {

/// A fixed team of threads that run one function on every lane: lane 0 on the
/// calling thread, lanes 1 … n−1 on threads that wait between runs, polling for a
/// while and then asleep (a run allocates nothing). The first exception thrown by
/// any lane is rethrown by run().
class ThreadTeam {
 public:
  explicit ThreadTeam(int lanes = 1);
  ~ThreadTeam();
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;

  int lanes() const { return int(workers_.size()) + 1; }

  /// How long a waiting thread polls before it sleeps: a worker for the next run, the caller
  /// for the workers' end of this one (not with more lanes than cores). Waking a sleeping
  /// thread cost 20–60 µs per run on the 2-core VM (runs of an empty function), 1–3 % of a
  /// 2-thread training step at shape A; polling, 0.8 µs. 1 ms covers a step's serial part
  /// between two runs (the draws, the gradient sum, Adam: ~0.3 ms at shape B), so the worker
  /// is still polling when the next step starts (OpenMP runtimes poll before they sleep too:
  /// KMP_BLOCKTIME, GOMP_SPINCOUNT).
  static constexpr std::chrono::microseconds kSpin{1000};

  /// Calls f(lane) for every lane in parallel and returns when all have returned.
  template <class F>
  void run(F& f) {
    run_erased([](void* fn, int lane) { (*static_cast<F*>(fn))(lane); }, &f);
  }

 private:
  using Thunk = void (*)(void*, int);
  void run_erased(Thunk thunk, void* fn);
  void worker(int lane);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_, done_;
  Thunk thunk_ = nullptr;
  void* fn_ = nullptr;
  std::atomic<std::size_t> generation_{0};  // bumped per run; a worker runs once per generation
  std::atomic<int> running_{0};             // workers still busy in this run
  std::atomic<bool> stop_{false};
  std::chrono::microseconds spin_{0};       // kSpin, or 0 with more lanes than cores
  std::vector<std::exception_ptr> errors_;  // one per lane
};

/// The rows [first, last) of `lane` when n rows are split as evenly as possible.
inline std::pair<std::size_t, std::size_t> lane_rows(std::size_t n, int lane, int lanes) {
  const std::size_t k = std::size_t(lane), m = std::size_t(lanes);
  return {n * k / m, n * (k + 1) / m};
}

/// The number of threads worth using for `rows` rows: one per `min_rows` rows, at most `threads`.
inline int useful_lanes(std::size_t rows, int threads, std::size_t min_rows = 64) {
  const std::size_t by_rows = std::max<std::size_t>(1, rows / min_rows);
  return int(std::min<std::size_t>(std::size_t(std::max(1, threads)), by_rows));
}

}  // namespace flows
