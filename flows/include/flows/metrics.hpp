#pragma once
// Evaluation of a trained flow: test NLL, transport cost, map cost, and, for
// targets with a known density, the yardsticks (true NLL, W2², KL divergences).
#include <cstdint>
#include <optional>

#include <nlohmann/json.hpp>

#include "flows/datasets.hpp"
#include "flows/flow.hpp"
#include "flows/inference.hpp"

namespace flows {

/// Rows per chunk of evaluate()'s float64 products with the data set (its OT map for the OT
/// scores, its log-density for the reverse KL): two float64 copies of all n rows would take
/// 16·n·d bytes (330 MB for 20 000 rows at D = 1024). The memory check counts these chunks.
inline constexpr std::size_t kProductChunk = 2048;

struct EvalReport {
  std::size_t n = 0;     ///< base samples (and data draws, for a generator)
  std::size_t rows = 0;  ///< a data file's rows, all of which the NLL averages over (0: a generator)
  double nll = 0;        ///< mean −log p(y) over n fresh data samples or over all of a file's rows, nats (data units)
  double transport = 0;  ///< T = K · E Σ_k ‖s_{k+1} − s_k‖² over the K time steps (layers, or whole steps), x ~ α0
  double map_cost = 0;   ///< E ‖F(x) − x‖²
  std::optional<double> true_nll;         ///< mean −log p_true(y) on the same samples (≈ entropy)
  std::optional<double> entropy;          ///< closed form, when known
  std::optional<double> w2_sq;            ///< W2²(α0, target), closed form (Gaussian targets)
  std::optional<double> map_ratio;        ///< map_cost / W2²  (≥ 1 up to sampling; 1 for the OT map)
  std::optional<double> transport_ratio;  ///< T / W2²         (≥ map_ratio; 1 for straight, even steps)
  std::optional<double> forward_kl;       ///< KL(p ‖ q) = nll − true_nll
  std::optional<double> reverse_kl;       ///< KL(q ‖ p) = E_{x~α0}[log q(F(x)) − log p(F(x))]
  std::optional<double> jeffreys;         ///< forward + reverse KL
  /// When the OT map T* is known (Korotin et al. 2021), on the base samples x:
  std::optional<double> l2_uvp;  ///< 100 · E‖F(x) − T*(x)‖² / Var(Y), in % (0 for the OT map itself)
  std::optional<double> ot_cos;  ///< E⟨T*(x) − x, F(x) − x⟩ / √(E‖T*(x) − x‖² E‖F(x) − x‖²) (1 for T*)

  nlohmann::json to_json() const;
};

/// Evaluates on n fresh samples of the data (all rows of a finite data set) and n base samples, in chunks of
/// `chunk` rows so memory stays bounded. nll_offset is added to every NLL
/// (Σ log σ_j when the model was trained on standardized data). The rows are
/// split across `threads` threads, which can change the last digits of the result (the
/// split changes the order of the sums, and for some shapes which GEMM kernel runs): at
/// D = 1024 and 20 000 samples, 1 and 2 threads agree to ~1e-10 relative in every metric.
template <class T>
EvalReport evaluate(Flow<T>& flow, Dataset& data, std::size_t n, std::uint64_t seed, double nll_offset = 0.0,
                    int threads = 1, std::size_t chunk = Inference<T>::kEvalChunk);

/// L2-UVP and the cosine of the map x ↦ F(x) against data's OT map T* (data.has_ot_map()), on the
/// n base samples x (n×d) and their pushes fx; variance = Var(Y) (E‖Y − EY‖²). Either is empty
/// where undefined (variance ≤ 0; F(x) = x or T*(x) = x everywhere, for the cosine).
struct OtScores {
  std::optional<double> l2_uvp, ot_cos;
};
/// E‖Y − EY‖²: data.total_variance() when known, else the sample total variance of the n rows.
double total_variance(const Dataset& data, const double* rows, std::size_t n);

template <class T>
OtScores ot_scores(const Dataset& data, const Array<T>& x, const T* fx, double variance);

/// Mean −log p(y) of the rows of y under the flow (chunked, on `threads` threads).
template <class T>
double mean_nll(Flow<T>& flow, const Array<T>& y, int threads = 1, std::size_t chunk = Inference<T>::kEvalChunk);
/// The same with an Inference that is kept between calls (its tapes are reused: no allocation).
template <class T>
double mean_nll(Inference<T>& inference, const Array<T>& y);

}  // namespace flows
