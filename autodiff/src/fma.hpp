#pragma once
// a·b + c rounded once, for xsimd batches and scalars: the inner operation of every GEMM
// kernel. xsimd 8.1 has no AVX-512 kernel for fma; its generic one computes a * b + c with two
// intrinsics, which GCC contracts into one vfmadd (its default -ffp-contract=fast) but clang
// does not (its -ffp-contract=on contracts within an expression, not across intrinsic calls):
// a clang build ran every micro-kernel at half its FMA rate (training at gaussian:16, hidden
// 128, one thread: 172 against GCC's 260 steps/s). The AVX-512 batches call the intrinsic
// here; everything else (AVX2's FMA3 kernel, scalars: std::fma) is xsimd::fma.
#include <type_traits>

#include "autodiff/xsimd.hpp"

namespace ad::kern {

template <class V>
inline V fma(const V& a, const V& b, const V& c) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<V, xsimd::batch<float>> && sizeof(V) == 64)
    return V(_mm512_fmadd_ps(a, b, c));
  else if constexpr (std::is_same_v<V, xsimd::batch<double>> && sizeof(V) == 64)
    return V(_mm512_fmadd_pd(a, b, c));
  else
#endif
    return xsimd::fma(a, b, c);
}

/// v, held in a register as written: an empty asm that the compiler cannot see through, so no
/// a·b before it and + c after it are contracted into one fused multiply-add (which GCC's
/// -ffp-contract=fast would do). For a fused op that must round as the ops it replaces did.
template <class V>
inline V rounded(V v) {
  if constexpr (std::is_arithmetic_v<V>) {
    asm("" : "+x"(v));
    return v;
  } else {
    auto r = static_cast<typename V::register_type>(v);
    asm("" : "+x"(r));
    return V(r);
  }
}

}  // namespace ad::kern
