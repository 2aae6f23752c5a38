#pragma once
// Batched inference with a trained flow: log-densities and pushes through F,
// in chunks of rows (plan_chunks: the same chunks for any number of threads, so the
// same bits), the chunks split across threads (flows/parallel.hpp). Each thread keeps
// its own tape, whose arrays the next chunk reuses: chunks of one size allocate nothing.
// The last chunk is often shorter (n rows are rarely a multiple of the chunk), and its
// lane's tape resizes its arrays for it and back for the next call's full chunks: a pool
// keyed by size (Tape::set_pool_values) would avoid those allocations at the price of
// holding both sizes' arrays (bench/train_bench measured ~120 allocations per 1024 rows
// at its shape C, whose chunks are shortened to fit kTapeBudget).
#include <memory>
#include <vector>

#include "flows/flow.hpp"
#include "flows/parallel.hpp"

namespace flows {

/// Optional per-row results of a push x ↦ F(x); each non-null pointer receives n rows.
template <class T>
struct PushOutputs {
  T* y = nullptr;            ///< F(x), n×d
  T* log_density = nullptr;  ///< log q(F(x)) = log α0(x) − log|det ∇F(x)|, the model's density there, n
  T* path_energy = nullptr;  ///< Σ_l ‖F_{l+1}(x) − F_l(x)‖², n (T = L · its mean)
  T* states = nullptr;       ///< [x, s_1, …, F(x)]: (K+1)×n×d, state-major, K = flow.num_time_steps()
};

/// How Inference cuts n rows into chunks: `count` chunks of `rows` rows (the last one may be
/// shorter), chunk c from row c · rows. It depends on n and the chunk size, not on threads.
struct ChunkPlan {
  std::size_t rows = 0, count = 0;
};

template <class T>
class Inference {
 public:
  /// threads: how many threads share the rows; chunk: rows per tape pass at most (bounds
  /// memory; lowered on first use so that a lane's tape holds about kTapeBudget bytes).
  explicit Inference(Flow<T>& flow, int threads = 1, std::size_t chunk = 1024);
  static constexpr std::size_t kEvalChunk = 4096;                     ///< evaluate()'s and validation's chunk
  static constexpr std::size_t kTapeBudget = std::size_t(64) << 20;  ///< bytes of tape per lane
  static constexpr std::size_t kMinChunk = 64;                        ///< rows: below this GEMMs lose
  /// The chunks' count is a multiple of this (else of 4 or 2) where chunks stay ≥ kMinChunk rows.
  static constexpr std::size_t kChunkGroup = 8;

  /// The chunks of n rows, at most `chunk` rows each: a function of n and chunk alone, never of
  /// the threads, so that every row is computed in the same place of the same chunk whatever
  /// their number (the same bits on any number of threads).
  static ChunkPlan plan_chunks(std::size_t n, std::size_t chunk);

  /// out[i] = log p(y_i) = log α0(G(y_i)) + log|det ∇G(y_i)| for the n rows of y (n×d).
  void log_prob(const T* y, std::size_t n, T* out);
  /// Pushes the n rows of x (n×d) through F.
  void forward(const T* x, std::size_t n, const PushOutputs<T>& out);

  /// Gives the tapes' memory back (Tape::release); the next pass allocates again.
  void release() {
    for (auto& tape : tapes_) tape->release();
  }

  int threads() const { return team_.lanes(); }
  std::size_t chunk() const { return chunk_; }

 private:
  template <class Pass>
  void for_each_chunk(std::size_t n, Pass& pass);
  void size_chunk();

  Flow<T>& flow_;
  std::size_t chunk_;
  bool sized_ = false;
  ThreadTeam team_;
  std::vector<std::unique_ptr<Tape<T>>> tapes_;  // one per lane
};

extern template class Inference<float>;
extern template class Inference<double>;

}  // namespace flows
