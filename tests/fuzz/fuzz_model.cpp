// libFuzzer target: flows::load_model / read_architecture on the bytes as an .npz (also with its CRC-32s
// recomputed), or, for text starting with '{', Flow::from_config and load_model on it as the
// architecture record.
// Built and run by scripts/fuzz.sh; see docs/fuzzing.md.
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  trflow_fuzz::run_model(data, size);
  return 0;
}
