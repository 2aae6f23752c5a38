#include "autodiff/simd.hpp"

#include "autodiff/xsimd.hpp"

namespace ad {

SimdInfo simd_info() {
  return {xsimd::default_arch::name(), xsimd::batch<float>::size, xsimd::batch<double>::size};
}

bool simd_supported_by_cpu() {
  return xsimd::available_architectures().best >= xsimd::default_arch::version();
}

}  // namespace ad
