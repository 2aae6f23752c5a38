#pragma once
// Training progress on stderr: a live bar on a terminal, plain periodic lines otherwise.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>

namespace trflow {

class Progress {
 public:
  /// total steps of the run; first: the step the run starts from (after a resume).
  Progress(std::int64_t total, std::int64_t first, bool terminal);
  /// Shows step `step` with the latest loss terms (NaN transport: not measured).
  void update(std::int64_t step, double loss, double nll, double transport, bool force = false);
  /// The latest validation NLL and the best one so far, shown from now on.
  void set_validation(double nll, double best) { val_nll_ = nll, val_best_ = best; }
  /// Ends the bar's line.
  void finish();
  double steps_per_second() const;

 private:
  std::int64_t total_, first_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::int64_t last_step_ = 0;
  bool drawn_ = false;
  double val_nll_ = NAN, val_best_ = NAN;
};

/// True when stderr is a terminal (and TERM is not "dumb").
bool stderr_is_terminal();

}  // namespace trflow
