// libFuzzer target: flows::load_matrix on the bytes as a .csv file (with and without drop_nonfinite).
// Built and run by scripts/fuzz.sh; see docs/fuzzing.md.
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  trflow_fuzz::run_csv(data, size);
  return 0;
}
