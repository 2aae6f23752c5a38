#pragma once
// In-register transposes of float blocks, for the kernels that turn rows into columns: the
// spline op's element-major parameters (kernels.hpp: load_lanes16, store_lanes16), the
// packing of a transposed GEMM operand (gemm_packed.hpp: pack_b), the tall weight gradient's
// Cᵀ added to C (add_transposed16), and the sums across the lanes of 16 accumulators at once
// (hadd16: the small-output GEMM, kernels.hpp).
#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstddef>

namespace ad::kern {

/// r[i], row i of a 16 × 16 float matrix, becomes column i: 64 shuffles in four rounds
/// (pairs of rows interleaved, then pairs of pairs, then 128-bit quarters twice).
inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 16; i += 8)
    for (int j = 0; j < 4; ++j) {
      t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
      t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xDD);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
  }
}

/// r[j] = column j of the block of `rows` rows (≤ 16, `ld` floats apart) at src, read under the
/// column mask `cols` (a bit per column, zero where clear), rows past `rows` zero: 16 masked
/// row loads and one transpose16. (The spline op's lanes, a transposed GEMM operand's packing,
/// the tall weight gradient's Cᵀ added to C.)
inline void load_transposed16(const float* src, std::size_t ld, int rows, __mmask16 cols, __m512 (&r)[16]) {
  for (int l = 0; l < 16; ++l) r[l] = l < rows ? _mm512_maskz_loadu_ps(cols, src + std::size_t(l) * ld) : _mm512_setzero_ps();
  transpose16(r);
}

/// Lane l of the result is xsimd::hadd(a[l]) (xsimd 8.1, AVX-512 floats), bit for bit: the
/// same additions in the same order, y_i = x_i + x_{i+8}, then z_i = y_i + y_{i+4}, then
/// (z_0 + z_1) + (z_2 + z_3), done for 16 accumulators together in 45 instructions, where 16
/// calls of hadd take ~10 each (an extract, two adds, a permute, two hadd_ps, …).
inline __m512 hadd16(const __m512 (&a)[16]) {
  // y for two accumulators in one vector: [y(p) | y(q)]
  auto fold8 = [](__m512 p, __m512 q) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(p, q, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(p, q, _MM_SHUFFLE(3, 2, 3, 2)));
  };
  // z for four: from [y(p) | y(q)] and [y(r) | y(s)], [z(p) | z(q) | z(r) | z(s)]
  auto fold4 = [](__m512 u, __m512 v) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(3, 1, 3, 1)));
  };
  // adjacent pairs within each 128-bit block: [u0 + u1, u2 + u3, v0 + v1, v2 + v3]
  auto pairs = [](__m512 u, __m512 v) {
    return _mm512_add_ps(_mm512_shuffle_ps(u, v, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_ps(u, v, _MM_SHUFFLE(3, 1, 3, 1)));
  };
  // W_j holds z of a[j], a[j + 4], a[j + 8], a[j + 12] in its four blocks, so that the last two
  // rounds put hadd(a[4k + j]) in lane 4k + j.
  __m512 w[4];
  for (int j = 0; j < 4; ++j) w[j] = fold4(fold8(a[j], a[j + 4]), fold8(a[j + 8], a[j + 12]));
  return pairs(pairs(w[0], w[1]), pairs(w[2], w[3]));
}

}  // namespace ad::kern
#endif
