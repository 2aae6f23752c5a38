#pragma once
// What the build vectorizes with: the xsimd architecture and batch widths.
#include <cstddef>

namespace ad {

struct SimdInfo {
  const char* arch;            ///< xsimd's name of the instruction set, e.g. "avx512f", "avx2", "sse2"
  std::size_t float_lanes;     ///< xsimd::batch<float>::size
  std::size_t double_lanes;    ///< xsimd::batch<double>::size
};

/// The instruction set and widths the engine's kernels were compiled for.
SimdInfo simd_info();

/// Whether the running CPU supports what the build was compiled for.
bool simd_supported_by_cpu();

}  // namespace ad
