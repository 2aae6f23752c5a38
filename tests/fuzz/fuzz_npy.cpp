// libFuzzer target: parse_npy, parse_npz and read_npz on the bytes; an accepted .npy also through load_matrix.
// Built and run by scripts/fuzz.sh; see docs/fuzzing.md.
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  trflow_fuzz::run_npy(data, size);
  return 0;
}
