#include "progress.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

#include <fmt/format.h>

namespace trflow {

bool stderr_is_terminal() {
  const char* term = std::getenv("TERM");
  return isatty(STDERR_FILENO) && !(term && std::strcmp(term, "dumb") == 0);
}

Progress::Progress(std::int64_t total, std::int64_t first, bool terminal)
    : total_(total), first_(first), terminal_(terminal), start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - std::chrono::hours(1)), last_step_(first) {}

double Progress::steps_per_second() const {
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return sec > 0 ? double(last_step_ - first_) / sec : 0.0;
}

static std::string clock_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const long s = long(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60)
                   : fmt::format("{:02d}:{:02d}", s / 60, s % 60);
}

void Progress::update(std::int64_t step, double loss, double nll, double transport, bool force) {
  last_step_ = step;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  // A terminal redraws ~10 times a second; a log gets a line every ~5 seconds.
  if (!force && since < (terminal_ ? 0.1 : 5.0) && step != total_) return;
  last_draw_ = now;
  const double rate = steps_per_second();
  const double eta = rate > 0 ? double(total_ - step) / rate : NAN;
  const std::string t = std::isfinite(transport) ? fmt::format("{:.4f}", transport) : "-";
  const std::string val =
      std::isfinite(val_nll_) ? fmt::format("  val {:.4f} (best {:.4f})", val_nll_, val_best_) : std::string();
  const std::string stats = fmt::format("loss {:.4f}  nll {:.4f}{}  transport {}  {:.0f} steps/s  ETA {}", loss, nll, val,
                                        t, rate, clock_text(eta));
  if (terminal_) {
    const int width = 24;
    const int filled = total_ > 0 ? int(double(width) * double(step) / double(total_)) : width;
    fmt::print(stderr, "\r\x1b[2K[{}{}] {}/{}  {}", std::string(filled, '#'), std::string(width - filled, '.'), step,
               total_, stats);
    drawn_ = true;
  } else {
    fmt::print(stderr, "step {}/{}  {}\n", step, total_, stats);
  }
  std::fflush(stderr);
}

void Progress::finish() {
  if (terminal_ && drawn_) fmt::print(stderr, "\n");
  drawn_ = false;
}

}  // namespace trflow
