#include "flows/parallel.hpp"

#include <stdexcept>

namespace flows {

ThreadTeam::ThreadTeam(int lanes) : errors_(std::size_t(lanes < 1 ? 1 : lanes)) {
  if (lanes < 1) throw std::invalid_argument("ThreadTeam: the number of threads must be positive");
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

void ThreadTeam::run_erased(Thunk thunk, void* fn) {
  for (std::exception_ptr& e : errors_) e = nullptr;
  if (!workers_.empty()) {
    std::lock_guard<std::mutex> lock(mutex_);
    thunk_ = thunk;
    fn_ = fn;
    running_ = int(workers_.size());
    ++generation_;
  }
  start_.notify_all();
  try {
    thunk(fn, 0);
  } catch (...) {
    errors_[0] = std::current_exception();
  }
  if (!workers_.empty()) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return running_ == 0; });
  }
  for (std::exception_ptr& e : errors_)
    if (e) std::rethrow_exception(e);
}

void ThreadTeam::worker(int lane) {
  std::size_t seen = 0;
  for (;;) {
    Thunk thunk;
    void* fn;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      start_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      thunk = thunk_;
      fn = fn_;
    }
    try {
      thunk(fn, lane);
    } catch (...) {
      errors_[std::size_t(lane)] = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --running_;
    }
    done_.notify_one();
  }
}

}  // namespace flows
