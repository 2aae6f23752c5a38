// Ticks (1-2-5 rule), tick labels, robust limits, the palette and small
// geometry helpers.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "canvas.hpp"
#include "plot/plot.hpp"

namespace plot {
namespace {

// 10^k, exact for the powers representable and correctly rounded otherwise
// (1 / 10^-k, so that 10^-1 is the double nearest 0.1).
double pow10i(int k) { return k >= 0 ? std::pow(10.0, k) : 1.0 / std::pow(10.0, -k); }

// i·m·10^k computed so that decimal ticks come out as the nearest double to
// the decimal (0.3, not 0.30000000000000004).
double tick_value(long long i, int m, int k) {
  const double im = double(i) * double(m);
  return k >= 0 ? im * std::pow(10.0, k) : im / std::pow(10.0, -k);
}

struct Step {
  int m = 0;  // 1, 2 or 5
  int k = 0;  // power of ten
  long long first = 0;
  long long last = -1;
};

// The 1-2-5 step for nice_ticks, with the range of multiples inside [lo, hi].
bool find_step(double lo, double hi, int max_ticks, Step& out) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || lo >= hi || max_ticks < 1) return false;
  const double span = hi - lo;
  int k = int(std::floor(std::log10(span / double(max_ticks)))) - 1;
  for (int guard = 0; guard < 64; ++k, ++guard) {
    for (int m : {1, 2, 5}) {
      const double step = double(m) * pow10i(k);
      const double qlo = lo / step;
      const double qhi = hi / step;
      const double tol = 1e-9 * std::max({1.0, std::fabs(qlo), std::fabs(qhi)});
      const double first = std::ceil(qlo - tol);
      const double last = std::floor(qhi + tol);
      if (last - first + 1.0 <= double(max_ticks)) {
        out = {m, k, (long long)first, (long long)last};
        return true;
      }
    }
  }
  return false;
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int max_ticks) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || lo > hi || max_ticks < 1) return {};
  if (lo == hi) return {lo};
  Step s;
  if (!find_step(lo, hi, max_ticks, s)) return {};
  std::vector<double> ticks;
  for (long long i = s.first; i <= s.last; ++i) {
    double v = tick_value(i, s.m, s.k);
    if (v == 0.0) v = 0.0;  // no -0
    ticks.push_back(v);
  }
  return ticks;
}

double nice_step(double lo, double hi, int max_ticks) {
  Step s;
  if (!find_step(lo, hi, max_ticks, s)) return 0.0;
  return double(s.m) * pow10i(s.k);
}

std::vector<double> log_ticks(double lo, double hi, int max_ticks) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo > 0.0) || !(hi > lo) || max_ticks < 1) return {};
  const double llo = std::log10(lo);
  const double lhi = std::log10(hi);
  const int klo = int(std::ceil(llo - 1e-9));
  const int khi = int(std::floor(lhi + 1e-9));
  std::vector<double> ticks;
  if (khi - klo + 1 >= 2) {
    int stride = 1;
    while ((khi - klo) / stride + 1 > max_ticks) ++stride;
    // Align to multiples of the stride so that 10^0 stays a tick when it can.
    int start = klo;
    while (start % stride != 0) ++start;
    if (start > khi) start = klo;
    for (int k = start; k <= khi; k += stride) ticks.push_back(pow10i(k));
    if (ticks.size() >= 2) return ticks;
    ticks.clear();
  }
  for (int k = int(std::floor(llo)) - 1; k <= int(std::ceil(lhi)); ++k) {
    for (int m : {1, 2, 5}) {
      const double v = tick_value(1, m, k);
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) ticks.push_back(v);
    }
  }
  if (ticks.size() >= 2 && int(ticks.size()) <= max_ticks) return ticks;
  return nice_ticks(lo, hi, max_ticks);
}

std::string format_tick(double v, double step) {
  if (!std::isfinite(v)) return fmt::format("{}", v);
  if (step > 0.0 && std::fabs(v) < 1e-9 * step) v = 0.0;
  if (v == 0.0) return "0";
  const double av = std::fabs(v);
  std::string s;
  if (av >= 1e6 || (step > 0.0 && step < 1e-4) || (step <= 0.0 && av < 1e-4)) {
    int digits = 0;
    if (step > 0.0) {
      digits = int(std::floor(std::log10(av) + 1e-9)) - int(std::floor(std::log10(step) + 1e-9));
      digits = std::clamp(digits, 0, 15);
    } else {
      digits = 3;
    }
    s = fmt::format("{:.{}e}", v, digits);
    // Tidy "2.50e+06" into "2.5e6" and "5e-05" into "5e-5".
    const auto e = s.find('e');
    std::string mant = s.substr(0, e);
    std::string expo = s.substr(e + 1);
    if (mant.find('.') != std::string::npos) {
      while (!mant.empty() && mant.back() == '0') mant.pop_back();
      if (!mant.empty() && mant.back() == '.') mant.pop_back();
    }
    const bool neg = !expo.empty() && expo[0] == '-';
    if (!expo.empty() && (expo[0] == '+' || expo[0] == '-')) expo.erase(0, 1);
    while (expo.size() > 1 && expo[0] == '0') expo.erase(0, 1);
    s = mant + "e" + (neg ? "-" : "") + expo;
  } else if (step > 0.0) {
    const int decimals = std::clamp(-int(std::floor(std::log10(step) + 1e-9)), 0, 15);
    s = fmt::format("{:.{}f}", v, decimals);
  } else {
    s = fmt::format("{:g}", v);
  }
  // "-0", "-0.00" after rounding: drop the sign.
  if (!s.empty() && s[0] == '-' && s.find_first_of("123456789") == std::string::npos) s.erase(0, 1);
  return s;
}

Limits robust_limits(const double* xy, std::size_t n, double q, double pad) {
  if (n > 0 && xy == nullptr) throw std::invalid_argument("plot::robust_limits: null pointer with n > 0");
  std::vector<double> xs(n), ys(n);
  for (std::size_t i = 0; i < n; ++i) {
    xs[i] = xy[2 * i];
    ys[i] = xy[2 * i + 1];
  }
  const auto [x0, x1] = detail::robust_range(std::move(xs), q, pad);
  const auto [y0, y1] = detail::robust_range(std::move(ys), q, pad);
  return {x0, x1, y0, y1};
}

Limits robust_limits(const std::vector<double>& xy, double q, double pad) {
  if (xy.size() % 2 != 0)
    throw std::invalid_argument(
        fmt::format("plot::robust_limits: expected n×2 values, got an odd count {}", xy.size()));
  return robust_limits(xy.data(), xy.size() / 2, q, pad);
}

Rgb palette(std::size_t i) {
  static constexpr Rgb kPalette[] = {
      {31 / 255.0, 119 / 255.0, 180 / 255.0},   // blue
      {255 / 255.0, 127 / 255.0, 14 / 255.0},   // orange
      {44 / 255.0, 160 / 255.0, 44 / 255.0},    // green
      {214 / 255.0, 39 / 255.0, 40 / 255.0},    // red
      {148 / 255.0, 103 / 255.0, 189 / 255.0},  // purple
      {140 / 255.0, 86 / 255.0, 75 / 255.0},    // brown
      {227 / 255.0, 119 / 255.0, 194 / 255.0},  // pink
      {127 / 255.0, 127 / 255.0, 127 / 255.0},  // grey
      {188 / 255.0, 189 / 255.0, 34 / 255.0},   // olive
      {23 / 255.0, 190 / 255.0, 207 / 255.0},   // cyan
  };
  return kPalette[i % (sizeof(kPalette) / sizeof(kPalette[0]))];
}

Limits square_limits(const Limits& in) {
  Limits l = in;
  const double w = l.x1 - l.x0;
  const double h = l.y1 - l.y0;
  if (w > h) {
    const double c = 0.5 * (l.y0 + l.y1);
    l.y0 = c - 0.5 * w;
    l.y1 = c + 0.5 * w;
  } else if (h > w) {
    const double c = 0.5 * (l.x0 + l.x1);
    l.x0 = c - 0.5 * h;
    l.x1 = c + 0.5 * h;
  }
  return l;
}

std::vector<double> cell_centers(double lo, double hi, std::size_t n) {
  std::vector<double> c(n);
  for (std::size_t i = 0; i < n; ++i) c[i] = lo + (double(i) + 0.5) * (hi - lo) / double(n);
  return c;
}

std::pair<double, double> AxesInfo::to_pixel(double x, double y) const {
  const double fx = (x - limits.x0) / (limits.x1 - limits.x0);
  double fy;
  if (log_y) {
    fy = y > 0.0 ? (std::log10(y) - std::log10(limits.y0)) / (std::log10(limits.y1) - std::log10(limits.y0))
                 : std::nan("");
  } else {
    fy = (y - limits.y0) / (limits.y1 - limits.y0);
  }
  return {left + fx * width, top + (1.0 - fy) * height};
}

namespace detail {

double quantile(std::vector<double>& v, double q) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  if (v.empty()) return std::nan("");
  q = std::clamp(q, 0.0, 1.0);
  const double pos = q * double(v.size() - 1);
  const std::size_t i = std::size_t(pos);
  const double f = pos - double(i);
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(i), v.end());
  const double a = v[i];
  if (f == 0.0 || i + 1 >= v.size()) return a;
  const double b = *std::min_element(v.begin() + std::ptrdiff_t(i) + 1, v.end());
  return a + f * (b - a);
}

std::pair<double, double> robust_range(std::vector<double> v, double q, double pad,
                                       std::pair<double, double> fallback) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  if (v.empty()) return fallback;
  q = std::clamp(q, 0.0, 0.5);
  double lo = quantile(v, q);
  double hi = quantile(v, 1.0 - q);
  if (!(hi > lo)) {
    const double c = 0.5 * (lo + hi);
    const double h = std::max(0.5, 0.1 * std::fabs(c));
    return {c - h, c + h};
  }
  const double p = pad * (hi - lo);
  return {lo - p, hi + p};
}

Rect fit_aspect(Rect r, double aspect) {
  if (!(aspect > 0.0) || !std::isfinite(aspect)) return r;
  if (r.w / r.h > aspect) {
    const double w = std::round(r.h * aspect);
    r.x += std::round(0.5 * (r.w - w));
    r.w = w;
  } else {
    const double h = std::round(r.w / aspect);
    r.y += std::round(0.5 * (r.h - h));
    r.h = h;
  }
  return r;
}

void check_limits(const Limits& l, const char* what) {
  const bool ok = std::isfinite(l.x0) && std::isfinite(l.x1) && std::isfinite(l.y0) && std::isfinite(l.y1) &&
                  l.x0 < l.x1 && l.y0 < l.y1;
  if (!ok)
    throw std::invalid_argument(fmt::format("{}: limits must be finite with x0 < x1 and y0 < y1, got x [{}, {}], y [{}, {}]",
                                            what, l.x0, l.x1, l.y0, l.y1));
}

Rgb cyclic_color(double t) {
  t -= std::floor(t);
  // HSL wheel with moderate saturation and lightness.
  const double s = 0.62;
  const double l = 0.50;
  const double c = (1.0 - std::fabs(2.0 * l - 1.0)) * s;
  const double hp = t * 6.0;
  const double x = c * (1.0 - std::fabs(std::fmod(hp, 2.0) - 1.0));
  double r = 0, g = 0, b = 0;
  if (hp < 1) {
    r = c, g = x;
  } else if (hp < 2) {
    r = x, g = c;
  } else if (hp < 3) {
    g = c, b = x;
  } else if (hp < 4) {
    g = x, b = c;
  } else if (hp < 5) {
    r = x, b = c;
  } else {
    r = c, b = x;
  }
  const double m = l - 0.5 * c;
  return {r + m, g + m, b + m};
}

}  // namespace detail
}  // namespace plot
