#pragma once
// Weight initialization, seeded and identical on every machine (ad::Rng).
#include <string>

#include "autodiff/random.hpp"
#include "autodiff/tape.hpp"

namespace nn {

enum class Init {
  zeros,
  xavier_uniform,   ///< U(−a, a), a = gain·√(6 / (fan_in + fan_out))
  xavier_normal,    ///< N(0, σ²), σ = gain·√(2 / (fan_in + fan_out))
  kaiming_uniform,  ///< U(−a, a), a = √(6 / fan_in)   (He, for relu)
  kaiming_normal,   ///< N(0, σ²), σ = √(2 / fan_in)
};

inline constexpr ad::NameTable<Init, 5> kInitNames{{{Init::zeros, "zeros"},
                                                    {Init::xavier_uniform, "xavier_uniform"},
                                                    {Init::xavier_normal, "xavier_normal"},
                                                    {Init::kaiming_uniform, "kaiming_uniform"},
                                                    {Init::kaiming_normal, "kaiming_normal"}}};
Init init_from_name(const std::string& name);
const char* init_name(Init init);

/// Fills w (out×in: fan_out = rows, fan_in = cols) by the scheme.
template <class T>
void initialize(ad::Array<T>& w, Init init, ad::Rng& rng, double gain = 1.0);

}  // namespace nn
