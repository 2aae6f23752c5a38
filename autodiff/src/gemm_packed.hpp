#pragma once
// trflow's own general GEMM for the blocks the dense layers spend their time in (a batch of
// 512 … 4096 rows times a hidden width of 64 … 1024), written with xsimd so the same code
// compiles to AVX-512, AVX2 or SSE registers:
//
//     C = α · op(A) · op(B) + β · C      (row-major, op = identity or transpose)
//
// It is the textbook BLIS scheme (Van Zee & van de Geijn, "BLIS: A framework for rapidly
// instantiating BLAS functionality", 2015), in three parts:
//
//   1. Blocking. k is cut into panels of KC, n into chunks of at most 512 kB of packed op(B)
//      (the hidden layers' whole width), m into blocks of MC rows and MR-row slivers, a chunk
//      into slivers of NR columns. A chunk's panel of op(B) (KC × nc, in L2) is packed once and
//      read by every sliver of rows; each MR-row sliver of op(A) (in L1; a transposed A's block
//      of MC × KC, about 200 kB, is packed once) sweeps the chunk's slivers of op(B), so C is
//      written MR rows at a time from left to right (a weight gradient's Aᵀ B goes column by
//      column, see gemm_tiled).
//   2. Packing. op(A)'s block is copied as MR-row slivers stored column by column (the MR
//      values of one column p are adjacent), op(B)'s panel as NR-column slivers stored row
//      by row; the micro-kernel then reads both with unit stride whatever the transposes
//      were, and edge slivers are padded with zeros, so the kernel has no tails. (Except:
//      a row-major A is read in place, its MR rows one broadcast each per step of k; only a
//      last partial sliver of its rows is packed, see gemm_tiled.)
//   3. The micro-kernel. An MR × NR tile of C lives in MR·NV registers (NR = NV vectors):
//      for each p, NV vector loads of B's row, then MR broadcasts of A's column, each
//      feeding NV fused multiply-adds. With AVX-512 (16 floats): MR = 12, NV = 2, 24
//      accumulators + 2 B vectors + 1 broadcast of 32 registers; 24 FMAs per 14 loads, so
//      the FMA units, not the loads, set the pace. (Tried on the 2-core AVX-512 machine:
//      KC 128/192/320/384, MC 8–32 slivers, 8 × 3 and 6 × 4 tiles, software prefetch; none
//      beat this within the noise.)
//
// Edge tiles (m or n not a multiple of MR or NR) are computed whole into a stack tile and
// only the valid part is written. The packing buffers are per thread (each lane of a data-
// parallel step has its own), grow-only and aligned: no allocation once a shape has run.
// The first KC panel writes α·AB + β·C (β = 0: C is not read, as in BLAS); later panels add.
#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "autodiff/xsimd.hpp"
#include "fma.hpp"
#include "transpose.hpp"

namespace ad::kern::packed {

template <class T>
using batch = xsimd::batch<T>;

/// The register tile: NV vectors of W wide by MR rows (see the header comment).
template <class T>
struct Tile {
  static constexpr int W = int(batch<T>::size);
  static constexpr int NV = 2;
  static constexpr int NR = NV * W;
  // 12 rows × 2 vectors: 24 accumulators + 2 loads of B + 1 broadcast fit AVX-512's 32
  // registers; AVX2 and SSE have 16, so 6 × 2 (the classic 6 × 16 of AVX2 floats).
  static constexpr int MR = W >= 16 || (W == 8 && sizeof(T) == 8) ? 12 : 6;
  static constexpr int KC = 256;      // a packed B sliver: KC·NR·sizeof(T) = 32 kB for AVX-512 floats (L1)
  // A chunk of op(B) packed at once, KC × nc, at most this many bytes (L2): n = 512 at KC = 256
  // (floats). Measured on the 2 MB-L2 machine at n = 11 776, k = 64: 256 kB 134, 512 kB 144,
  // 1 MB 134 GFLOP/s.
  static constexpr std::size_t kPanelBytes = std::size_t(512) << 10;
  // A packed A block is MR · 16 rows: MC·KC·sizeof(T) = 192 kB for AVX-512 floats (L2).
};

template <class T>
using aligned_vector = std::vector<T, xsimd::aligned_allocator<T, 64>>;

/// Grow-only, per-thread packing memory.
template <class T>
inline T* pack_buffer(int which, std::size_t n) {
  thread_local aligned_vector<T> buffers[4];  // packed B, packed A, an edge sliver of A, a product Cᵀ
  aligned_vector<T>& b = buffers[which];
  if (b.size() < n) b.resize(n);
  return b.data();
}

/// Where a weight gradient's packing of op(B) also sums B's columns (a bias gradient): out[j]
/// = Σ_p B(p, j), assigned where `assign` (row 0 assigns, the others add: the order of a pass
/// over B's rows), else added; out = nullptr: none.
template <class T>
struct ColSums {
  T* out = nullptr;
  bool assign = false;
};

/// op(A)[i0 : i0 + mc, p0 : p0 + kc] → MR-row slivers, column-major within a sliver (the MR
/// values of one column adjacent), rows past mc zero. A is read from MR of its rows at once, a
/// transposed A (a weight gradient's) a row of a at a time.
template <class T, int MR>
inline void pack_a(bool ta, const T* a, int lda, int i0, int mc, int p0, int kc, T* out) {
  if (ta && mc % MR == 0) {
    // A(i, p) = a[p·lda + i], whole slivers: row p of the block read left to right, into every
    // sliver (one sequential stream, as pack_b; measured on a 64 × 64 weight gradient with
    // k = 1024: 110 → 120 GFLOP/s, the same within noise on wider ones)
    const T* src = a + std::size_t(p0) * lda + i0;
    for (int p = 0; p < kc; ++p, src += lda) {
      T* s = out + std::size_t(p) * MR;
      for (int ir = 0; ir < mc; ir += MR, s += std::size_t(kc) * MR)
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) s[r] = src[ir + r];
    }
    return;
  }
  for (int ir = 0; ir < mc; ir += MR) {
    const int rows = std::min(MR, mc - ir);
    T* s = out + std::size_t(ir) * kc;
    // A(i, p) = a[p·lda + i], sliver by sliver where the block ends in a partial sliver:
    // the row-wise pass above with the partial sliver after it measured 1.03–1.06× slower on
    // such blocks (128 rows of 12-row slivers, a 512-row weight gradient's last 128-row block)
    if (ta) {
      const T* src = a + std::size_t(p0) * lda + i0 + ir;
      if (rows == MR) {
        for (int p = 0; p < kc; ++p, s += MR, src += lda)
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) s[r] = src[r];
      } else {
        for (int p = 0; p < kc; ++p, s += MR, src += lda)
          for (int r = 0; r < MR; ++r) s[r] = r < rows ? src[r] : T(0);
      }
      continue;
    }
    const T* src[MR];  // A(i, p) = a[i·lda + p] (gemm_tiled packs only a last partial sliver)
    for (int r = 0; r < MR; ++r) src[r] = a + std::size_t(i0 + ir + std::min(r, rows - 1)) * lda + p0;
    for (int p = 0; p < kc; ++p, s += MR)
      for (int r = 0; r < MR; ++r) s[r] = r < rows ? src[r][p] : T(0);
  }
}

/// R rows of an untransposed B (src, src + ldb, …; n columns) into rows p … p + R − 1 of a
/// panel's NR-column slivers (out: row p of the first sliver; the next sliver is kc·NR further),
/// columns past n zero; and added to sums.out where given, row after row (`assign`: the first
/// row assigns). R = 4 with sums: one load and store of the sums per four rows, where one per
/// row cost more than the separate pass it replaces (at 512 × 11 776: +1.1 ms against 0.83).
template <class T, int NR, int R>
inline void pack_b_rows(const T* src, int ldb, int n, int kc, T* out, T* sums, bool assign) {
  constexpr int W = int(batch<T>::size);
  const int full = n / NR * NR;
  T* s = out;
  for (int jr = 0; jr < full; jr += NR, s += std::size_t(kc) * NR)
#pragma GCC unroll 4
    for (int v = 0; v < NR / W; ++v) {
      const int j = jr + v * W;
      batch<T> x[R];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        x[r] = batch<T>::load_unaligned(src + std::size_t(r) * ldb + j);
        x[r].store_aligned(s + r * NR + v * W);
      }
      if (sums) {
        batch<T> acc = assign ? x[0] : batch<T>::load_unaligned(sums + j) + x[0];
#pragma GCC unroll 4
        for (int r = 1; r < R; ++r) acc = acc + x[r];
        acc.store_unaligned(sums + j);
      }
    }
  for (int r = 0; r < R; ++r, src += ldb, s += NR) {
    for (int c = 0; c < NR && full < n; ++c) s[c] = full + c < n ? src[full + c] : T(0);
    if (sums)
      for (int j = full; j < n; ++j) sums[j] = assign && r == 0 ? src[j] : sums[j] + src[j];
  }
}

#if defined(__AVX512F__)
/// pack_b's transposed case for AVX-512 floats: B(p, j) = b[j·ldb + p], so each 16 × 16 block of
/// a sliver (16 of its columns, 16 values of k) is 16 row loads of b (masked past kc, zero past
/// n), one transpose16 and 16 vector stores, where element by element each value was a scalar
/// load and a store NR·4 bytes from the last. Every layer's forward (x Wᵀ) packs W so, on every
/// call. Measured on the AVX-512 machine against the scalar loop below, interleaved: `eval` of
/// the D = 1024 default model (its output layers' W 11 776 × 64, packed whole for every chunk of
/// ~250 rows) 5.13, 5.15, 5.34 → 4.89, 4.91, 5.09 s, the pack 7.6 → 3.8 % of its samples (what
/// is left waits for W's lines); gaussian:1024 training +1.2 to +4.5 % steps/s (4 pairs), shape
/// A +2 to +7 % (4 pairs), B and C within noise; the same bits.
template <int NR>
inline void pack_bt16(const float* b, int ldb, int p0, int kc, int n, float* out) {
  for (int jr = 0; jr < n; jr += NR) {
    float* s = out + std::size_t(jr) * kc;
    for (int c0 = 0; c0 < NR; c0 += 16) {
      const int rows = std::min(16, n - jr - c0);  // columns of op(B) that exist
      if (rows <= 0) {  // a last sliver's padding: zeros
        for (int q = 0; q < kc; ++q) _mm512_storeu_ps(s + std::size_t(q) * NR + c0, _mm512_setzero_ps());
        continue;
      }
      const float* src = b + std::size_t(jr + c0) * ldb + p0;
      for (int q = 0; q < kc; q += 16) {
        const int w = std::min(16, kc - q);
        const __mmask16 mask = __mmask16((1u << w) - 1u);
        __m512 r[16];
        load_transposed16(src + q, std::size_t(ldb), rows, mask, r);
        for (int j = 0; j < w; ++j) _mm512_storeu_ps(s + std::size_t(q + j) * NR + c0, r[j]);
      }
    }
  }
}
#endif

/// op(B)[p0 : p0 + kc, 0 : n] → NR-column slivers, row-major within a sliver, columns past n
/// zero. An untransposed B is read a row at a time, left to right across all the slivers (one
/// sequential stream, where sliver by sliver the lines were ldb apart and the prefetchers lost
/// them: a weight gradient's B, a layer's input not in cache); a transposed B one of its rows
/// (a sliver's column) at a time. sums (untransposed B only): B's column sums too (ColSums).
template <class T, int NR>
inline void pack_b(bool tb, const T* b, int ldb, int p0, int kc, int n, T* out, ColSums<T> sums = {}) {
  if (!tb) {  // B(p, j) = b[p·ldb + j]
    const T* src = b + std::size_t(p0) * ldb;
    int p = 0;
    if (sums.out)
      for (; p + 4 <= kc; p += 4)
        pack_b_rows<T, NR, 4>(src + std::size_t(p) * ldb, ldb, n, kc, out + std::size_t(p) * NR, sums.out,
                              sums.assign && p0 + p == 0);
    for (; p < kc; ++p)
      pack_b_rows<T, NR, 1>(src + std::size_t(p) * ldb, ldb, n, kc, out + std::size_t(p) * NR, sums.out,
                            sums.assign && p0 + p == 0);
    return;
  }
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && NR % 16 == 0) {
    pack_bt16<NR>(b, ldb, p0, kc, n, out);
    return;
  }
#endif
  for (int jr = 0; jr < n; jr += NR) {  // B(p, j) = b[j·ldb + p]: a sliver's column is a row of b
    const int cols = std::min(NR, n - jr);
    T* s = out + std::size_t(jr) * kc;
    const T* src = b + std::size_t(jr) * ldb + p0;
    for (int c = 0; c < cols; ++c) {
      const T* row = src + std::size_t(c) * ldb;
      for (int p = 0; p < kc; ++p) s[std::size_t(p) * NR + c] = row[p];
    }
    for (int c = cols; c < NR; ++c)
      for (int p = 0; p < kc; ++p) s[std::size_t(p) * NR + c] = T(0);
  }
}

/// One MR × NR tile: acc = Σ_p ap[:, p] ⊗ bp[p, :], then C = α acc + β C on the first panel
/// (first = true; β = 0: C not read) or C += α acc; only rows < mr and columns < nr are written.
/// bias (the tile's NR columns of it, not overlapping C; only on the last panel): then each
/// row of C += bias, in the same store instead of a pass over C afterwards (the same sums in
/// the same order; bit for bit with α = 1, as the dense layer calls it, since an FMA
/// contraction of α·acc + bias rounds once where the pass rounds twice otherwise).
/// kRows: A read in place, row r of the tile at ap + r·lda (ap advancing by one column per p).
template <class T, int MR, int NV, bool kRows = false>
inline void micro_kernel(int kc, const T* __restrict ap, const T* __restrict bp, T alpha, T beta, bool first,
                         T* __restrict c, int ldc, int mr, int nr, std::size_t lda = 0,
                         const T* __restrict bias = nullptr) {
  using B = batch<T>;
  constexpr int W = int(B::size), NR = NV * W;
  B acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = B(T(0));
  // The tile of C is written (and read unless β = 0 on the first panel) only after the loop;
  // asking for its lines now hides the misses of a C that is not in cache (a fresh tape value).
  for (int r = 0; r < mr; ++r) {
    __builtin_prefetch(c + std::size_t(r) * ldc, 1);
    __builtin_prefetch(c + std::size_t(r) * ldc + NR - 1, 1);
  }
  for (int p = 0; p < kc; ++p) {
    B bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = B::load_aligned(bp + v * W);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const B av(kRows ? ap[r * lda] : ap[r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = kern::fma(av, bv[v], acc[r][v]);
    }
    ap += kRows ? 1 : MR;
    bp += NR;
  }
  const B va(alpha);
  if (mr == MR && nr == NR) {
    B bv[NV];
    if (bias)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = B::load_unaligned(bias + v * W);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      T* cr = c + std::size_t(r) * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        B out = va * acc[r][v];
        if (!first || beta != T(0)) {
          const B old = B::load_unaligned(cr + v * W);
          out = first ? kern::fma(B(beta), old, out) : out + old;
        }
        if (bias) out = out + bv[v];
        out.store_unaligned(cr + v * W);
      }
    }
    return;
  }
  // Edge tiles go through a stack tile. This loop is unrolled like the others so that every
  // acc[r][v] is named by constants: with it rolled, GCC 12 kept acc as an array in memory for
  // the whole kernel, zeroing it on the stack and storing and reloading all 24 accumulators
  // around the loop on every call, full tiles included. Unrolled, on Zen 4: k = 64 products
  // 512 × 1 024 × 64 92 → 104 GFLOP/s and 512 × 11 776 × 64 (the D = 1024 output layer's
  // forward) 93 → 100; shape A's hidden layer 6–9 % faster, C's 2–4 %; the same arithmetic, so
  // the same bits.
  alignas(64) T tile[MR * NR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) (va * acc[r][v]).store_aligned(tile + r * NR + v * W);
  for (int r = 0; r < mr; ++r) {
    T* cr = c + std::size_t(r) * ldc;
    const T* tr = tile + r * NR;
    for (int j = 0; j < nr; ++j) {
      T out = tr[j];
      if (!first) out = cr[j] + out;
      else if (beta != T(0)) out = beta * cr[j] + out;
      cr[j] = bias ? out + bias[j] : out;
    }
  }
}

/// C = α op(A) op(B) + β C, op(A) m × k, op(B) k × n, all row-major (see the header comment),
/// with an MR × NV-vector register tile.
template <class T, int MR, int NV>
void gemm_tiled(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
                T* c, int ldc, const T* bias = nullptr, ColSums<T> b_sums = {}) {
  constexpr int NR = NV * Tile<T>::W, KC = Tile<T>::KC, MC = MR * 16;
  constexpr std::size_t kPanelBytes = Tile<T>::kPanelBytes;
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // C = β C (+ bias)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        T& cij = c[std::size_t(i) * ldc + j];
        cij = beta == T(0) ? T(0) : beta * cij;
        if (bias) cij += bias[j];
      }
    return;
  }
  // n is cut into chunks whose packed panel of op(B) (KC × nc) stays in L2 (kPanelBytes): every
  // MR-row sliver of A sweeps a whole chunk. The hidden layers' n ≤ 512 make one chunk; a spline
  // conditioner's output layer (n = 23 · D/2 = 11 776 at D = 1024, k = 64) makes 23.
  const int nc_max = std::max(NR, int(kPanelBytes / sizeof(T)) / std::min(KC, k) / NR * NR);
  const int nc_pad = (std::min(n, nc_max) + NR - 1) / NR * NR;
  T* bp = pack_buffer<T>(0, std::size_t(std::min(KC, k)) * std::size_t(nc_pad));  // at most kPanelBytes
  T* ap = pack_buffer<T>(1, std::size_t(MC) * KC);
  // A not transposed: the kernel reads A's rows in place (MR rows, one broadcast each per p)
  // instead of packing them. Measured: 1.1–1.3× on 64- and 128-wide layers; with the row-sliver
  // order below, whose MR rows stay in L1 while they sweep the chunk, 1.01–1.08× on 256- to
  // 2048-wide ones too (it lost at n = 512 when the tiles went column by column).
  const bool in_place = !ta;
  for (int j0 = 0; j0 < n; j0 += nc_max) {
    const int nc = std::min(nc_max, n - j0);
    for (int p0 = 0; p0 < k; p0 += KC) {
      const int kc = std::min(KC, k - p0);
      const bool first = p0 == 0;
      const T* panel_bias = p0 + kc == k ? bias : nullptr;  // added once, after the last panel's sums
      pack_b<T, NR>(tb, tb ? b + std::size_t(j0) * ldb : b + j0, ldb, p0, kc, nc, bp,
                    {b_sums.out ? b_sums.out + j0 : nullptr, b_sums.assign});
      for (int i0 = 0; i0 < m; i0 += MC) {
        const int mc = std::min(MC, m - i0);
        if (!in_place) pack_a<T, MR>(ta, a, lda, i0, mc, p0, kc, ap);
        // Read in place, the block's last rows short of a full sliver are packed once (their
        // padding rows must read zeros) and serve every sliver of B.
        const int full = in_place ? mc / MR * MR : mc;
        T* edge = full < mc ? pack_buffer<T>(2, std::size_t(MR) * KC) : nullptr;
        if (edge) pack_a<T, MR>(false, a, lda, i0 + full, mc - full, p0, kc, edge);
        auto tile = [&](int ir, int jr) {
          const T* bs = bp + std::size_t(jr) * kc;
          T* ct = c + std::size_t(i0 + ir) * ldc + j0 + jr;
          const int mr = std::min(MR, mc - ir), nr = std::min(NR, nc - jr);
          const T* tb_bias = panel_bias ? panel_bias + j0 + jr : nullptr;
          if (!in_place) {
            micro_kernel<T, MR, NV>(kc, ap + std::size_t(ir) * kc, bs, alpha, beta, first, ct, ldc, mr, nr, 0,
                                    tb_bias);
          } else if (mr == MR) {
            micro_kernel<T, MR, NV, true>(kc, a + std::size_t(i0 + ir) * lda + p0, bs, alpha, beta, first, ct, ldc,
                                          mr, nr, std::size_t(lda), tb_bias);
          } else {  // the last rows of A, packed above
            micro_kernel<T, MR, NV>(kc, edge, bs, alpha, beta, first, ct, ldc, mr, nr, 0, tb_bias);
          }
        };
        // The order of the tiles. A layer's forward and x̄ (A not transposed): a sliver of A's
        // rows sweeps the chunk's slivers of B, so C is written MR rows at a time from left to
        // right, MR sequential streams the prefetchers follow. Column by column instead, each
        // tile's MR rows are lines ldc apart in a C that is not in cache (a fresh tape value):
        // measured on the AVX-512 machine, m = 512, n = 11 776, k = 64 (the D = 1024 spline
        // conditioner's output layer) 65 → 142 GFLOP/s, the 2048 × 512 × 512 hidden layer
        // 135 → 146 and its x̄ 146 → 154. A weight gradient (Aᵀ B, long k, C read back on every
        // panel) keeps the column order, 1–4 % faster there.
        if (!ta) {
          for (int ir = 0; ir < mc; ir += MR)
            for (int jr = 0; jr < nc; jr += NR) tile(ir, jr);
        } else {
          for (int jr = 0; jr < nc; jr += NR)
            for (int ir = 0; ir < mc; ir += MR) tile(ir, jr);
        }
      }
    }
  }
}

/// C = α Aᵀ B + β C for a tall, narrow weight gradient (A k × m, B k × n, m ≥ 8n: a spline
/// conditioner's output layer, 23·D/2 outputs from 64 hidden). Run directly, each packed
/// element of the long, strided A would serve only n/NR slivers of B; instead Cᵀ = Bᵀ A
/// (n × m) is computed into a per-thread buffer, the long operand now packed as B (read
/// row by row), and added to C transposed. Measured (m = 11 776, n = 64, k = 512, operands
/// not in cache, CPU time): 106 GFLOP/s against OpenBLAS's 92 on the same product.
/// a_sums: A's column sums too (Σ_p A(p, i), a bias gradient), summed as A is packed.
template <class T>
void gemm_tn_tall(int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c, int ldc,
                  ColSums<T> a_sums = {});

/// Rows of C a tile of `rows` rows pads m to.
constexpr int padded_rows(int m, int rows) { return (m + rows - 1) / rows * rows; }

/// C = α op(A) op(B) + β C (then + 1·biasᵀ, each row plus the n values of bias, where given),
/// with the register tile picked for the shape:
/// - an output at most one vector wide (n ≤ W: a narrow layer's forward, such as an affine
///   coupling's 2 · 8 = 16 scale-and-shift outputs): 8 × 1 vector. Eight accumulators cover
///   the FMA latency of two units, and only eight rows of A are read in place at once.
///   Measured on the AVX-512 machine (m = 1024, k = 128, n = 16): 8 rows 164 GFLOP/s, 6 150,
///   10 129, 12 139, 24 81; the 12 × 2 tile (half padding) 88, OpenBLAS 0.3.21 104;
/// - where MR = 12 would pad more than a tenth of m with zero rows and 8 pads fewer (a weight
///   gradient's 16, 32 or 64 output features; m = 16: 12 rows pad to 24, 33 % wasted): 8 × 2.
///   Measured (Aᵀ B, k = 1024, n = 128): m = 16 8 rows 110–117 GFLOP/s, 12 rows 87–89,
///   OpenBLAS 93–96; m = 32 144 / 132–138 / 115; m = 64 (n = 64) 146 / 135 / 129;
/// - otherwise the tile of the header comment (MR × 2 vectors).
/// b_sums (B not transposed): B's column sums too, as its panels are packed (see ColSums).
template <class T>
void gemm(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
          int ldc, const T* bias = nullptr, ColSums<T> b_sums = {}) {
  constexpr int MR = Tile<T>::MR, NV = Tile<T>::NV;
  if (n <= Tile<T>::W) return gemm_tiled<T, 8, 1>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias, b_sums);
  if constexpr (MR > 8) {
    const int waste = padded_rows(m, MR) - m;
    if (10 * waste > m && padded_rows(m, 8) < padded_rows(m, MR))
      return gemm_tiled<T, 8, NV>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias, b_sums);
  }
  gemm_tiled<T, MR, NV>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias, b_sums);
}

#if defined(__AVX512F__)
/// C(i, j) = β C(i, j) + Cᵀ(j, i) (β = 0: C not read), Cᵀ n × m with rows m apart: blocks of
/// 16 × 16, each 16 (masked) row loads of Cᵀ, one transpose16 and 16 (masked) row stores of C,
/// the rows of C in order. Element by element, each value was a scalar load from one of n
/// streams 4m bytes apart and a scalar store: at m = 11 776, n = 64 (the D = 1024 spline
/// conditioner's output layer) 1.38 ms of the 10.3 ms weight gradient, 0.45 ms this way (β = 1:
/// 1.43 → 0.78 ms), on the Zen 4 machine. β C + Cᵀ is one FMA, as GCC contracts the loop
/// below; for the β = 0 and 1 that the dense layers pass, the same bits either way.
inline void add_transposed16(int m, int n, const float* ct, float beta, float* c, int ldc) {
  for (int i0 = 0; i0 < m; i0 += 16) {
    const int rows = std::min(16, m - i0);  // rows of C here: columns of Cᵀ
    const __mmask16 in_mask = __mmask16((1u << rows) - 1u);
    for (int j0 = 0; j0 < n; j0 += 16) {
      const int cols = std::min(16, n - j0);  // columns of C here: rows of Cᵀ
      const __mmask16 out_mask = __mmask16((1u << cols) - 1u);
      __m512 r[16];
      load_transposed16(ct + std::size_t(j0) * m + i0, std::size_t(m), cols, in_mask, r);  // r[q]: row i0 + q of C
      for (int q = 0; q < rows; ++q) {
        float* dst = c + std::size_t(i0 + q) * ldc + j0;
        __m512 v = r[q];
        if (beta != 0.0f) v = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(out_mask, dst), v);
        _mm512_mask_storeu_ps(dst, out_mask, v);
      }
    }
  }
}
#endif

template <class T>
void gemm_tn_tall(int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c, int ldc,
                  ColSums<T> a_sums) {
  if (m <= 0 || n <= 0) return;
  T* ct = pack_buffer<T>(3, std::size_t(n) * std::size_t(m));
  gemm<T>(true, false, n, m, k, alpha, b, ldb, a, lda, T(0), ct, m, nullptr, a_sums);
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    add_transposed16(m, n, ct, beta, c, ldc);
    return;
  }
#endif
  for (int i = 0; i < m; ++i) {  // C(i, j) = β C(i, j) + Cᵀ(j, i): n streams of Cᵀ, each read in order
    T* ci = c + std::size_t(i) * ldc;
    const T* col = ct + i;
    if (beta == T(0)) {
      for (int j = 0; j < n; ++j) ci[j] = col[std::size_t(j) * m];
    } else {
      for (int j = 0; j < n; ++j) ci[j] = beta * ci[j] + col[std::size_t(j) * m];
    }
  }
}

}  // namespace ad::kern::packed
