#pragma once
// xsimd (and the compiler's AVX-512 intrinsics under it), included with one GCC warning kind
// silenced for the text of those headers only. GCC 12 reports "'__Y' may be used
// uninitialized" (-Wmaybe-uninitialized, -Wuninitialized) inside its own avx512fintrin.h (whose
// `__m512i __Y = __Y;` deliberately makes an undefined register) wherever xsimd's math
// is inlined into our code: 182 false warnings in a build. A diagnostic pragma applies to
// the lines it encloses, and these warnings point at the intrinsics header's lines, so
// enclosing the headers' first inclusion here silences them there and nowhere else: our
// own code keeps both warnings. Include this before anything that includes xsimd
// or xtensor (which includes xsimd with XTENSOR_USE_XSIMD).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <xsimd/xsimd.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
