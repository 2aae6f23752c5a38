#include "autodiff/random.hpp"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "autodiff/xsimd.hpp"

namespace ad {

std::uint64_t Rng::below(std::uint64_t n) {
  if (n == 0) throw std::invalid_argument("Rng::below: n must be positive");
  // Lemire: the high 64 bits of x·n are uniform on [0, n) once the low part is
  // outside the biased zone.
  const std::uint64_t threshold = (0 - n) % n;
  for (;;) {
    const unsigned __int128 m = static_cast<unsigned __int128>(engine_()) * n;
    if (static_cast<std::uint64_t>(m) >= threshold) return static_cast<std::uint64_t>(m >> 64);
  }
}

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // Box–Muller: r = √(−2 ln u₁), θ = 2π u₂ → (r cos θ, r sin θ) are independent N(0, 1).
  double u1;
  do u1 = uniform(); while (u1 <= 0.0);
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double theta = 6.283185307179586476925 * u2;
  spare_ = r * std::sin(theta);
  has_spare_ = true;
  return r * std::cos(theta);
}

// Box–Muller on W pairs at a time: the uniforms are drawn in the order normal()
// draws them (u₁ of a pair, rejecting 0, then u₂), and each pair is written as
// (r cos θ, r sin θ), the order in which normal() returns it.
void Rng::normals(double* out, std::size_t n) {
  using Batch = xsimd::batch<double>;
  constexpr std::size_t W = Batch::size;
  std::size_t i = 0;
  if (n > 0 && has_spare_) {
    out[i++] = spare_;
    has_spare_ = false;
  }
  alignas(64) double u1[W], u2[W], cos_part[W], sin_part[W];
  for (; n - i >= 2 * W; i += 2 * W) {
    for (std::size_t k = 0; k < W; ++k) {
      do u1[k] = uniform(); while (u1[k] <= 0.0);
      u2[k] = uniform();
    }
    const Batch r = xsimd::sqrt(Batch(-2.0) * xsimd::log(Batch::load_aligned(u1)));
    const auto [sin_theta, cos_theta] = xsimd::sincos(Batch(6.283185307179586476925) * Batch::load_aligned(u2));
    (r * cos_theta).store_aligned(cos_part);
    (r * sin_theta).store_aligned(sin_part);
    for (std::size_t k = 0; k < W; ++k) {
      out[i + 2 * k] = cos_part[k];
      out[i + 2 * k + 1] = sin_part[k];
    }
  }
  for (; i < n; ++i) out[i] = normal();
}

std::string Rng::state() const {
  std::ostringstream os;
  os.precision(17);
  os << engine_ << ' ' << (has_spare_ ? 1 : 0) << ' ' << std::hexfloat << spare_;
  return os.str();
}

void Rng::set_state(const std::string& s) {
  std::istringstream is(s);
  std::mt19937_64 engine;
  int spare_flag = 0;
  std::string spare_text;
  is >> engine >> spare_flag >> spare_text;
  if (is.fail() || (spare_flag != 0 && spare_flag != 1))
    throw std::invalid_argument("Rng::set_state: malformed random-generator state");
  engine_ = engine;
  has_spare_ = spare_flag == 1;
  spare_ = std::strtod(spare_text.c_str(), nullptr);
}

}  // namespace ad
