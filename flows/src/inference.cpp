#include "flows/inference.hpp"

#include <algorithm>
#include <stdexcept>

namespace flows {

template <class T>
Inference<T>::Inference(Flow<T>& flow, int threads, std::size_t chunk) : flow_(flow), chunk_(chunk), team_(threads) {
  if (chunk == 0) throw std::invalid_argument("Inference: the chunk size must be positive");
  for (int k = 0; k < threads; ++k) tapes_.push_back(std::make_unique<Tape<T>>());
}

// A chunk's tape holds every intermediate value of its rows: at D = 1024 with the default
// spline flow about 200 kB a row, so 4096-row chunks took 800 MB a lane and seconds of page
// faults. The first call records one row, reads what its tape holds, and lowers the chunk
// so a lane's tape stays near kTapeBudget (never below 64 rows, never above the chunk asked for).
template <class T>
void Inference<T>::size_chunk() {
  sized_ = true;
  Tape<T>& tape = *tapes_[0];
  tape.clear();
  const std::vector<T> row(flow_.dim(), T(0));
  flow_.log_prob(tape.constant(row.data(), 1, flow_.dim()));
  const std::size_t per_row = std::max<std::size_t>(1, tape.bytes_reserved());
  tape.clear();
  const std::size_t fit = std::max<std::size_t>(kMinChunk, kTapeBudget / per_row);
  chunk_ = std::min(chunk_, fit);
}

// The rows are cut into chunks at rows that depend on n and the chunk size only, never on the
// number of threads: a row's bits depend on where it sits in its chunk (an elementwise op runs
// its vector body on most of an array and a scalar tail on the last elements; a short chunk
// puts other rows in the tail), so `--threads 2` gives the same numbers as `--threads 1`.
// The chunks' count is rounded up to a multiple of kChunkGroup (8), or failing that of 4 or 2,
// where the chunks stay at least kMinChunk rows, so that 1, 2, 4 or 8 lanes get the same number
// of chunks (and 500 rows still go to two lanes); lane k then walks a contiguous run of them
// on its own tape.
template <class T>
ChunkPlan Inference<T>::plan_chunks(std::size_t n, std::size_t chunk) {
  if (chunk == 0) throw std::invalid_argument("Inference: the chunk size must be positive");
  std::size_t count = (n + chunk - 1) / chunk;
  for (std::size_t group = kChunkGroup; group > 1 && count > 0; group /= 2) {
    const std::size_t grouped = (count + group - 1) / group * group;
    if (n / grouped >= kMinChunk) {
      count = grouped;
      break;
    }
  }
  ChunkPlan plan;
  plan.rows = count == 0 ? 0 : (n + count - 1) / count;
  plan.count = plan.rows == 0 ? 0 : (n + plan.rows - 1) / plan.rows;
  return plan;
}

template <class T>
template <class Pass>
void Inference<T>::for_each_chunk(std::size_t n, Pass& pass) {
  if (!sized_) size_chunk();
  const ChunkPlan plan = plan_chunks(n, chunk_);
  const int lanes = int(std::min<std::size_t>(std::size_t(team_.lanes()), plan.count));
  auto work = [&](int lane) {
    if (lane >= lanes) return;
    const auto [first, last] = lane_rows(plan.count, lane, lanes);  // this lane's chunks
    Tape<T>& tape = *tapes_[std::size_t(lane)];
    for (std::size_t c = first; c < last; ++c) {
      const std::size_t start = c * plan.rows;
      tape.clear();
      pass(tape, start, std::min(plan.rows, n - start));
    }
  };
  team_.run(work);
}

template <class T>
void Inference<T>::log_prob(const T* y, std::size_t n, T* out) {
  const std::size_t d = flow_.dim();
  auto pass = [&](Tape<T>& tape, std::size_t start, std::size_t rows) {
    const Var<T> lp = flow_.log_prob(tape.constant(y + start * d, rows, d));
    std::copy(lp.value().data(), lp.value().data() + rows, out + start);
  };
  for_each_chunk(n, pass);
}

template <class T>
void Inference<T>::forward(const T* x, std::size_t n, const PushOutputs<T>& out) {
  const std::size_t d = flow_.dim();
  const bool want_traj = out.path_energy || out.states;
  auto pass = [&](Tape<T>& tape, std::size_t start, std::size_t rows) {
    static thread_local std::vector<Var<T>> traj;  // keeps its capacity across calls
    traj.clear();
    const Var<T> x0 = tape.constant(x + start * d, rows, d);
    const Mapped<T> f = flow_.forward(x0, want_traj ? &traj : nullptr);
    if (out.y) std::copy(f.out.value().data(), f.out.value().data() + rows * d, out.y + start * d);
    if (out.log_density) {
      const Var<T> log_q = f.logdet.tape ? flow_.base().log_prob(x0) - f.logdet : flow_.base().log_prob(x0);
      std::copy(log_q.value().data(), log_q.value().data() + rows, out.log_density + start);
    }
    if (out.path_energy)
      for (std::size_t i = 0; i < rows; ++i) {  // Σ_l ‖s_{l+1} − s_l‖², accumulated in double
        double e = 0;
        for (std::size_t l = 0; l + 1 < traj.size(); ++l) {
          const T* a = traj[l].value().data() + i * d;
          const T* b = traj[l + 1].value().data() + i * d;
          for (std::size_t j = 0; j < d; ++j) e += double(b[j] - a[j]) * double(b[j] - a[j]);
        }
        out.path_energy[start + i] = T(e);
      }
    if (out.states)
      for (std::size_t l = 0; l < traj.size(); ++l)
        std::copy(traj[l].value().data(), traj[l].value().data() + rows * d, out.states + (l * n + start) * d);
  };
  for_each_chunk(n, pass);
}

template class Inference<float>;
template class Inference<double>;

}  // namespace flows
