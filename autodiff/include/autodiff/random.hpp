#pragma once
// Reproducible random numbers. The engine is std::mt19937_64, whose output the
// C++ standard fixes bit for bit; the uniform and normal transforms are our own,
// because std::normal_distribution differs between standard libraries.
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>

namespace ad {

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) : engine_(seed) {}

  /// Raw 64 random bits.
  std::uint64_t next_u64() { return engine_(); }

  /// Uniform on [0, 1) with 53 random bits: u = (bits >> 11) · 2⁻⁵³.
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  /// Uniform on [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

  /// Uniform integer in [0, n), n > 0 (Lemire's multiply-shift, unbiased by rejection).
  std::uint64_t below(std::uint64_t n);

  /// Standard normal by the Box–Muller transform; pairs are generated, the
  /// second value is kept for the next call (it is part of the saved state).
  double normal();

  /// n standard normals, the same stream as n calls of normal(), with the
  /// transform of whole batches of pairs done in SIMD (random.cpp).
  void normals(double* out, std::size_t n);

  /// Fills p[0..n) with N(mean, std²) values / U[lo, hi) values.
  template <class T> void fill_normal(T* p, std::size_t n, double mean = 0.0, double std = 1.0) {
    double block[256];
    for (std::size_t start = 0; start < n; start += 256) {
      const std::size_t k = n - start < 256 ? n - start : 256;
      normals(block, k);
      for (std::size_t i = 0; i < k; ++i) p[start + i] = static_cast<T>(mean + std * block[i]);
    }
  }
  template <class T> void fill_uniform(T* p, std::size_t n, double lo = 0.0, double hi = 1.0) {
    for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<T>(uniform(lo, hi));
  }

  /// The whole state (engine and cached normal) as text, and back: a resumed
  /// run continues the exact same stream.
  std::string state() const;
  void set_state(const std::string& s);

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace ad
