// Figure and Axes: the drawing layer under the figure functions.
#include "canvas.hpp"

#include <fmt/format.h>

#include "nn/io.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

#if defined(__SANITIZE_ADDRESS__)
#define PLOT_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PLOT_UNDER_ASAN 1
#endif
#endif
#ifdef PLOT_UNDER_ASAN
#include <dlfcn.h>
#endif

namespace plot::detail {
namespace {

// cairo's toy-font cache and fontconfig's configuration live until exit and
// read as leaks to LeakSanitizer. In AddressSanitizer builds, release them at
// exit (cairo first, then fontconfig's FcFini, looked up at run time because
// this library does not link fontconfig directly). Normal builds do nothing.
void release_font_caches_at_exit() {
#ifdef PLOT_UNDER_ASAN
  static std::once_flag once;
  std::call_once(once, [] {
    std::atexit([] {
      cairo_debug_reset_static_data();
      if (void* f = dlsym(RTLD_DEFAULT, "FcFini")) reinterpret_cast<void (*)()>(f)();
    });
  });
#endif
}

constexpr double kPi = 3.14159265358979323846;

// Pixel-centre coordinate for a crisp 1-px line near v.
double snap(double v) { return std::floor(v) + 0.5; }

struct Segment {
  std::string text;
  bool sup = false;
};

// Splits "a^{b}c" into {a}, {b, sup}, {c}.
std::vector<Segment> parse_rich(const std::string& s) {
  std::vector<Segment> out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    const auto open = s.find("^{", pos);
    if (open == std::string::npos) {
      out.push_back({s.substr(pos), false});
      break;
    }
    const auto close = s.find('}', open + 2);
    if (close == std::string::npos) {
      out.push_back({s.substr(pos), false});
      break;
    }
    if (open > pos) out.push_back({s.substr(pos, open - pos), false});
    out.push_back({s.substr(open + 2, close - open - 2), true});
    pos = close + 1;
  }
  return out;
}

constexpr double kSupScale = 0.72;
constexpr double kSupRaise = 0.42;
constexpr double kCapHeight = 0.72;  // DejaVu Sans cap height, in ems
constexpr double kDescent = 0.22;

void select_font(cairo_t* cr, double size, bool bold) {
  cairo_select_font_face(cr, style::kFont, CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

// Typographic minus signs for tick labels.
std::string pretty_minus(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '-')
      out += "\xE2\x88\x92";  // U+2212 MINUS SIGN
    else
      out += c;
  }
  return out;
}

bool is_power_of_ten(double v, int* k) {
  if (!(v > 0.0)) return false;
  const double l = std::log10(v);
  const double r = std::round(l);
  if (std::fabs(l - r) > 1e-9) return false;
  *k = int(r);
  return true;
}

std::string log_tick_label(double v, bool decades) {
  int k = 0;
  if (decades && is_power_of_ten(v, &k)) {
    if (k == 0) return "1";
    if (k == 1) return "10";
    return fmt::format("10^{{{}}}", k);
  }
  const double mag = std::pow(10.0, std::floor(std::log10(v) + 1e-9));
  return format_tick(v, mag);
}

}  // namespace

void set_color(cairo_t* cr, Rgb c, double alpha) {
  if (alpha >= 1.0)
    cairo_set_source_rgb(cr, c.r, c.g, c.b);
  else
    cairo_set_source_rgba(cr, c.r, c.g, c.b, alpha);
}

// ---------------------------------------------------------------------------
// Figure

Figure::Figure(int width, int height) : width_(width), height_(height) {
  release_font_caches_at_exit();
  surface_ = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
  if (cairo_surface_status(surface_) != CAIRO_STATUS_SUCCESS) {
    const std::string why = cairo_status_to_string(cairo_surface_status(surface_));
    cairo_surface_destroy(surface_);
    throw std::runtime_error(fmt::format("plot: cannot create a {}x{} image: {}", width, height, why));
  }
  cr_ = cairo_create(surface_);
  cairo_set_antialias(cr_, CAIRO_ANTIALIAS_DEFAULT);
  cairo_font_options_t* fo = cairo_font_options_create();
  cairo_font_options_set_antialias(fo, CAIRO_ANTIALIAS_GRAY);
  cairo_font_options_set_hint_style(fo, CAIRO_HINT_STYLE_SLIGHT);
  cairo_font_options_set_hint_metrics(fo, CAIRO_HINT_METRICS_OFF);
  cairo_set_font_options(cr_, fo);
  cairo_font_options_destroy(fo);
  cairo_set_source_rgb(cr_, 1.0, 1.0, 1.0);
  cairo_paint(cr_);
  cairo_set_line_join(cr_, CAIRO_LINE_JOIN_ROUND);
  cairo_set_line_cap(cr_, CAIRO_LINE_CAP_BUTT);
}

Figure::~Figure() {
  if (cr_) cairo_destroy(cr_);
  if (surface_) cairo_surface_destroy(surface_);
}

double Figure::text_width(const std::string& s, double size, bool bold) const {
  cairo_save(cr_);
  double w = 0.0;
  for (const auto& seg : parse_rich(s)) {
    select_font(cr_, seg.sup ? size * kSupScale : size, bold);
    cairo_text_extents_t ext;
    cairo_text_extents(cr_, seg.text.c_str(), &ext);
    w += ext.x_advance;
  }
  cairo_restore(cr_);
  return w;
}

void Figure::text(double x, double y, const std::string& s, double size, HAlign h, VAlign v, bool bold, Rgb color,
                  double angle) const {
  if (s.empty()) return;
  const auto segs = parse_rich(s);
  const double w = text_width(s, size, bold);
  double dx = 0.0;
  if (h == HAlign::Center) dx = -0.5 * w;
  if (h == HAlign::Right) dx = -w;
  double dy = 0.0;  // baseline relative to the anchor
  switch (v) {
    case VAlign::Top: dy = kCapHeight * size; break;
    case VAlign::Middle: dy = 0.5 * kCapHeight * size; break;
    case VAlign::Baseline: dy = 0.0; break;
    case VAlign::Bottom: dy = -kDescent * size; break;
  }
  cairo_save(cr_);
  cairo_translate(cr_, x, y);
  if (angle != 0.0) cairo_rotate(cr_, -angle);
  set_color(cr_, color);
  double cx = dx;
  for (const auto& seg : segs) {
    const double sz = seg.sup ? size * kSupScale : size;
    select_font(cr_, sz, bold);
    cairo_move_to(cr_, cx, dy - (seg.sup ? kSupRaise * size : 0.0));
    cairo_show_text(cr_, seg.text.c_str());
    cairo_text_extents_t ext;
    cairo_text_extents(cr_, seg.text.c_str(), &ext);
    cx += ext.x_advance;
  }
  cairo_restore(cr_);
}

void Figure::save(const std::string& path) const {
  // Encoded in memory, then written atomically (nn::write_file_atomic): a full disk or a kill
  // leaves the previous figure, never a truncated one, and the error names the OS's reason.
  cairo_surface_flush(surface_);
  std::string png;
  const cairo_status_t st = cairo_surface_write_to_png_stream(
      surface_,
      [](void* closure, const unsigned char* data, unsigned int length) {
        static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
        return CAIRO_STATUS_SUCCESS;
      },
      &png);
  if (st != CAIRO_STATUS_SUCCESS)
    throw std::runtime_error(fmt::format("plot: cannot encode PNG '{}': {}", path, cairo_status_to_string(st)));
  try {
    nn::write_file_atomic(path, png);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("plot: {}", e.what()));
  }
}

// ---------------------------------------------------------------------------
// Axes

Axes::Axes(Figure& fig, Rect area, Limits limits, bool log_y)
    : fig_(fig), area_(area), limits_(limits), log_y_(log_y) {
  xticks_ = nice_ticks(limits.x0, limits.x1, std::max(3, int(area.w / 58.0)));
  yticks_ = log_y ? log_ticks(limits.y0, limits.y1, std::max(3, int(area.h / 40.0)))
                  : nice_ticks(limits.y0, limits.y1, std::max(3, int(area.h / 50.0)));
}

double Axes::px(double x) const { return area_.x + (x - limits_.x0) / (limits_.x1 - limits_.x0) * area_.w; }

double Axes::py(double y) const {
  double f;
  if (log_y_) {
    if (!(y > 0.0)) return std::nan("");
    f = (std::log10(y) - std::log10(limits_.y0)) / (std::log10(limits_.y1) - std::log10(limits_.y0));
  } else {
    f = (y - limits_.y0) / (limits_.y1 - limits_.y0);
  }
  return area_.y + (1.0 - f) * area_.h;
}

AxesInfo Axes::info() const {
  AxesInfo i;
  i.left = area_.x;
  i.top = area_.y;
  i.width = area_.w;
  i.height = area_.h;
  i.limits = limits_;
  i.log_y = log_y_;
  return i;
}

void Axes::grid() const {
  cairo_t* cr = fig_.cr();
  cairo_save(cr);
  set_color(cr, style::kGrid);
  cairo_set_line_width(cr, 1.0);
  for (double t : xticks_) {
    const double X = px(t);
    if (X < area_.x + 1.0 || X > area_.x + area_.w - 1.0) continue;
    cairo_move_to(cr, snap(X), area_.y);
    cairo_line_to(cr, snap(X), area_.y + area_.h);
  }
  for (double t : yticks_) {
    const double Y = py(t);
    if (!(Y >= area_.y + 1.0 && Y <= area_.y + area_.h - 1.0)) continue;
    cairo_move_to(cr, area_.x, snap(Y));
    cairo_line_to(cr, area_.x + area_.w, snap(Y));
  }
  cairo_stroke(cr);
  cairo_restore(cr);
}

void Axes::frame() const {
  cairo_t* cr = fig_.cr();
  cairo_save(cr);
  set_color(cr, style::kFrame);
  cairo_set_line_width(cr, 1.0);
  cairo_rectangle(cr, area_.x - 0.5, area_.y - 0.5, area_.w + 1.0, area_.h + 1.0);
  cairo_stroke(cr);
  cairo_restore(cr);
}

void Axes::ticks(bool x_labels, bool y_labels) {
  cairo_t* cr = fig_.cr();
  const double bottom = area_.y + area_.h;
  const double left = area_.x;
  cairo_save(cr);
  set_color(cr, style::kFrame);
  cairo_set_line_width(cr, 1.0);

  const double xstep = xticks_.size() >= 2 ? xticks_[1] - xticks_[0] : 0.0;
  for (double t : xticks_) {
    const double X = px(t);
    if (X < area_.x - 0.5 || X > area_.x + area_.w + 0.5) continue;
    cairo_move_to(cr, snap(X), bottom);
    cairo_line_to(cr, snap(X), bottom + style::kTickLength);
    cairo_stroke(cr);
    if (x_labels)
      fig_.text(snap(X), bottom + style::kTickLength + 4.0, pretty_minus(format_tick(t, xstep)), style::kTickFont,
                HAlign::Center, VAlign::Top, false, style::kTickText);
  }

  double maxw = 0.0;
  const double ystep = yticks_.size() >= 2 ? yticks_[1] - yticks_[0] : 0.0;
  // A log axis is "by decades" when every tick is a power of ten: those get
  // 10^k labels; otherwise (1-2-5 ticks inside a decade) plain numbers.
  bool decades = log_y_ && yticks_.size() >= 2;
  for (double t : yticks_) {
    int k = 0;
    if (!is_power_of_ten(t, &k)) decades = false;
  }
  for (double t : yticks_) {
    const double Y = py(t);
    if (!(Y >= area_.y - 0.5 && Y <= bottom + 0.5)) continue;
    cairo_move_to(cr, left, snap(Y));
    cairo_line_to(cr, left - style::kTickLength, snap(Y));
    cairo_stroke(cr);
    if (y_labels) {
      const std::string label = pretty_minus(log_y_ ? log_tick_label(t, decades) : format_tick(t, ystep));
      fig_.text(left - style::kTickLength - 4.0, snap(Y), label, style::kTickFont, HAlign::Right, VAlign::Middle,
                false, style::kTickText);
      maxw = std::max(maxw, fig_.text_width(label, style::kTickFont));
    }
  }
  // Minor ticks (2..9 × 10^k) on a log axis labelled by decades, when they are not too dense.
  if (decades) {
    int k0 = 0, k1 = 0;
    is_power_of_ten(yticks_.front(), &k0);
    is_power_of_ten(yticks_.back(), &k1);
    const bool stride_one = int(yticks_.size()) == k1 - k0 + 1;
    const double decade_px = area_.h / (std::log10(limits_.y1) - std::log10(limits_.y0));
    if (stride_one && decade_px >= 40.0) {
      for (int k = int(std::floor(std::log10(limits_.y0))); k <= int(std::ceil(std::log10(limits_.y1))); ++k) {
        for (int m = 2; m <= 9; ++m) {
          const double v = double(m) * std::pow(10.0, k);
          const double Y = py(v);
          if (!(Y >= area_.y && Y <= bottom)) continue;
          cairo_move_to(cr, left, snap(Y));
          cairo_line_to(cr, left - 0.6 * style::kTickLength, snap(Y));
        }
      }
      cairo_stroke(cr);
    }
  }
  cairo_restore(cr);
  ylabel_offset_ = style::kTickLength + 4.0 + maxw + 9.0;
}

void Axes::xlabel(const std::string& s) const {
  const double y = area_.y + area_.h + style::kTickLength + 4.0 + kCapHeight * style::kTickFont + 11.0;
  fig_.text(area_.x + 0.5 * area_.w, y, s, style::kLabelFont, HAlign::Center, VAlign::Top);
}

void Axes::ylabel(const std::string& s) const {
  fig_.text(area_.x - ylabel_offset_, area_.y + 0.5 * area_.h, s, style::kLabelFont, HAlign::Center, VAlign::Bottom,
            false, style::kText, 0.5 * kPi);
}

void Axes::title(const std::string& s) const {
  fig_.text(area_.x + 0.5 * area_.w, area_.y - 12.0, s, style::kTitleFont, HAlign::Center, VAlign::Baseline, true);
}

void Axes::clip() const {
  cairo_t* cr = fig_.cr();
  cairo_save(cr);
  cairo_rectangle(cr, area_.x, area_.y, area_.w, area_.h);
  cairo_clip(cr);
}

void Axes::unclip() const { cairo_restore(fig_.cr()); }

void Axes::legend(const std::vector<LegendEntry>& entries,
                  const std::vector<std::pair<double, double>>& avoid) const {
  if (entries.empty()) return;
  cairo_t* cr = fig_.cr();
  const double pad = 8.0;
  const double row = 19.0;
  const double sample = 22.0;
  double maxw = 0.0;
  for (const auto& e : entries) maxw = std::max(maxw, fig_.text_width(e.label, style::kLegendFont));
  const double w = pad + sample + 7.0 + maxw + pad;
  const double h = 2.0 * pad + row * double(entries.size()) - (row - kCapHeight * style::kLegendFont) + 2.0;
  const double inset = 8.0;
  const double xl = area_.x + inset;
  const double xr = area_.x + area_.w - inset - w;
  const double yt = area_.y + inset;
  const double yb = area_.y + area_.h - inset - h;
  const std::pair<double, double> corners[] = {{xr, yt}, {xl, yt}, {xl, yb}, {xr, yb}};
  std::size_t best = 0;
  std::size_t best_count = std::size_t(-1);
  for (std::size_t c = 0; c < 4; ++c) {
    const auto [bx, by] = corners[c];
    std::size_t count = 0;
    for (const auto& [x, y] : avoid)
      if (x >= bx - 4 && x <= bx + w + 4 && y >= by - 4 && y <= by + h + 4) ++count;
    if (count < best_count) {
      best_count = count;
      best = c;
    }
  }
  const double bx = std::round(corners[best].first);
  const double by = std::round(corners[best].second);

  cairo_save(cr);
  // Rounded box, white and nearly opaque, thin grey border.
  const double r = 3.0;
  cairo_new_sub_path(cr);
  cairo_arc(cr, bx + w - r, by + r, r, -0.5 * kPi, 0.0);
  cairo_arc(cr, bx + w - r, by + h - r, r, 0.0, 0.5 * kPi);
  cairo_arc(cr, bx + r, by + h - r, r, 0.5 * kPi, kPi);
  cairo_arc(cr, bx + r, by + r, r, kPi, 1.5 * kPi);
  cairo_close_path(cr);
  cairo_set_source_rgba(cr, 1.0, 1.0, 1.0, 0.9);
  cairo_fill_preserve(cr);
  cairo_set_source_rgb(cr, 0.80, 0.80, 0.80);
  cairo_set_line_width(cr, 1.0);
  cairo_stroke(cr);

  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    const double cy = by + pad + 1.0 + 0.5 * kCapHeight * style::kLegendFont + row * double(i);
    if (e.dot) {
      set_color(cr, e.color, e.alpha);
      cairo_arc(cr, bx + pad + 0.5 * sample, cy, 3.5, 0.0, 2.0 * kPi);
      cairo_fill(cr);
    } else {
      set_color(cr, e.color, e.alpha);
      cairo_set_line_width(cr, 2.0);
      cairo_move_to(cr, bx + pad, cy);
      cairo_line_to(cr, bx + pad + sample, cy);
      cairo_stroke(cr);
    }
    fig_.text(bx + pad + sample + 7.0, cy, e.label, style::kLegendFont, HAlign::Left, VAlign::Middle);
  }
  cairo_restore(cr);
}

void draw_dots(const Axes& ax, const double* xy, std::size_t n, double radius, Rgb color, double alpha) {
  if (n == 0) return;
  cairo_t* cr = ax.cr();
  ax.clip();
  set_color(cr, color, alpha);
  const Rect& a = ax.area();
  for (std::size_t i = 0; i < n; ++i) {
    const double x = xy[2 * i];
    const double y = xy[2 * i + 1];
    if (!std::isfinite(x) || !std::isfinite(y)) continue;
    const double X = ax.px(x);
    const double Y = ax.py(y);
    if (!(X >= a.x - radius && X <= a.x + a.w + radius && Y >= a.y - radius && Y <= a.y + a.h + radius)) continue;
    cairo_new_sub_path(cr);
    cairo_arc(cr, X, Y, radius, 0.0, 2.0 * kPi);
    cairo_fill(cr);
  }
  ax.unclip();
}

}  // namespace plot::detail
