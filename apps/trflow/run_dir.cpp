#include "run_dir.hpp"

#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>

#include "app.hpp"
#include "nn/io.hpp"

namespace fs = std::filesystem;

namespace trflow {

RunDirLock::RunDirLock(const fs::path& dir) {
  const fs::path path = dir / ".trflow.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw DataError(fmt::format("cannot open the lock file {}: {}", path.string(), nn::os_error(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK)
      throw DataError(fmt::format("cannot lock {}: {}", path.string(), nn::os_error(err)));
    const std::string holder = n > 0 ? std::string(buf, std::size_t(n)) : std::string("unknown");
    throw DataError(fmt::format("{} is in use by another trflow process (pid {}); wait for it to finish, stop it, or "
                                "choose another --out",
                                dir.string(), holder.substr(0, holder.find_first_of("\n "))));
  }
  // The holder's pid, for the message above (the lock itself is the flock, not the content).
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != ssize_t(pid.size())) {
    // Not fatal: the lock is held; only the message of a second process would lack the pid.
  }
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock; the file stays (removing it would race)
}

std::vector<std::string> remove_stale_temporaries(const fs::path& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const std::size_t at = name.rfind(".tmp.");
    if (at == std::string::npos || !entry.is_regular_file(ec)) continue;
    const char* first = name.data() + at + 5;
    const char* last = name.data() + name.size();
    long pid = 0;
    const auto [end, err] = std::from_chars(first, last, pid);
    if (err != std::errc() || end != last || pid <= 0) continue;
    if (pid == long(::getpid())) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // its writer may still be running
    if (fs::remove(entry.path(), ec)) removed.push_back(name);
  }
  return removed;
}

std::vector<std::string> run_files_in(const fs::path& dir) {
  std::vector<std::string> found;
  for (const char* f : {"config.json", "checkpoint.npz", "model.npz", "metrics.jsonl", "result.json", "samples.png",
                        "density.png", "trajectories.png", "losses.png", "ot_map.png"})
    if (fs::exists(dir / f)) found.emplace_back(f);
  return found;
}

double physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? double(pages) * double(page) : 0.0;
}

}  // namespace trflow
