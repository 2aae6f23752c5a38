#pragma once
// The whole engine: the tape, its ops, gradient checks and random numbers.
#include "autodiff/gradcheck.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"
#include "autodiff/simd.hpp"
#include "autodiff/tape.hpp"
