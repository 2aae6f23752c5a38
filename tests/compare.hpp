#pragma once
// Comparing an array against a float64 reference, element by element, for the tests.
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "autodiff/tape.hpp"

namespace test_compare {

/// The worst |x − ref| / (rtol · max(1, |ref|)) over two arrays of one shape, and where; a
/// ratio ≤ 1 means every element is within rtol (relative, or absolute below 1). A NaN on
/// either side is the worst there is (NaN sticks), so a comparison never passes over one.
struct Worst {
  double ratio = 0;
  std::size_t at = 0;
  double got = 0, want = 0;
};
template <class T>
Worst compare(const ad::Array<T>& got, const ad::Array<double>& want, double rtol) {
  Worst w;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = double(got.data()[i]), r = want.data()[i];
    const double ratio = std::abs(g - r) / (rtol * std::max(1.0, std::abs(r)));
    if (!(ratio <= w.ratio)) w = {ratio, i, g, r};  // NaN sticks
  }
  return w;
}

}  // namespace test_compare
