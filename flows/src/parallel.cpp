#include "flows/parallel.hpp"

#include <stdexcept>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace flows {

namespace {
/// The cores this process may run on: its affinity mask where the system has one (taskset,
/// a container's cpuset), else every online core.
int available_cores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
#endif
  return int(std::thread::hardware_concurrency());
}

/// A polling thread's pause between two reads (x86 PAUSE: it frees the pipeline for a
/// hyperthread sibling and eases the exit from the loop).
inline void relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

/// Polls ready() for at most `limit` and returns whether it came true.
template <class F>
bool poll(std::chrono::microseconds limit, F ready) {
  if (limit.count() == 0) return ready();
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      relax();
    }
    if (std::chrono::steady_clock::now() >= until) return ready();
  }
}
}  // namespace

ThreadTeam::ThreadTeam(int lanes) : errors_(std::size_t(lanes < 1 ? 1 : lanes)) {
  if (lanes < 1) throw std::invalid_argument("ThreadTeam: the number of threads must be positive");
  // More lanes than cores: a polling thread would hold a core that a working lane needs.
  spin_ = lanes <= available_cores() ? kSpin : std::chrono::microseconds(0);
  workers_.reserve(std::size_t(lanes - 1));
  for (int lane = 1; lane < lanes; ++lane) workers_.emplace_back([this, lane] { worker(lane); });
}

ThreadTeam::~ThreadTeam() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  start_.notify_all();
  for (std::thread& t : workers_) t.join();
}

// The handshakes go through the mutex and the two condition variables, so a sleeping thread
// is always woken; the atomics let a thread that is still polling (spin_) see the change
// without sleeping first. A run is published by generation_ (release; thunk_ and fn_ are
// written before it) and ends when running_ reaches 0 (acq_rel; a worker's errors_ entry is
// written before its decrement).
void ThreadTeam::run_erased(Thunk thunk, void* fn) {
  for (std::exception_ptr& e : errors_) e = nullptr;
  if (!workers_.empty()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      thunk_ = thunk;
      fn_ = fn;
      running_.store(int(workers_.size()), std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    start_.notify_all();
  }
  try {
    thunk(fn, 0);
  } catch (...) {
    errors_[0] = std::current_exception();
  }
  auto finished = [this] { return running_.load(std::memory_order_acquire) == 0; };
  if (!workers_.empty() && !poll(spin_, finished)) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, finished);
  }
  for (std::exception_ptr& e : errors_)
    if (e) std::rethrow_exception(e);
}

void ThreadTeam::worker(int lane) {
  std::size_t seen = 0;
  for (;;) {
    Thunk thunk;
    void* fn;
    poll(spin_, [&] { return stop_.load(std::memory_order_relaxed) || generation_.load(std::memory_order_acquire) != seen; });
    {
      std::unique_lock<std::mutex> lock(mutex_);
      start_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_relaxed) != seen; });
      if (stop_) return;
      seen = generation_.load(std::memory_order_relaxed);
      thunk = thunk_;
      fn = fn_;
    }
    try {
      thunk(fn, lane);
    } catch (...) {
      errors_[std::size_t(lane)] = std::current_exception();
    }
    if (running_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // Under the mutex: a caller between its test of running_ and its wait holds it, so the
      // notification cannot fall in between.
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_one();
    }
  }
}

}  // namespace flows
