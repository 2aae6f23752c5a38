// The figure functions: scatter comparison, density heat map, trajectories
// and loss curves, built on the Figure/Axes layer of canvas.hpp.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "canvas.hpp"
#include "plot/plot.hpp"

namespace plot {
namespace {

using detail::Axes;
using detail::Figure;
using detail::HAlign;
using detail::LegendEntry;
using detail::Rect;
using detail::VAlign;
namespace style = detail::style;

constexpr double kPi = 3.14159265358979323846;
constexpr int kPanel = 500;  // square panel cell, pixels

// ---------------------------------------------------------------------------
// Validation and limits

void check_even(const std::vector<double>& v, const char* fn, const char* name) {
  if (v.size() % 2 != 0)
    throw std::invalid_argument(
        fmt::format("{}: {} must hold n×2 values (x, y pairs), got an odd count {}", fn, name, v.size()));
}

void check_pointer(const double* p, std::size_t n, const char* fn, const char* name) {
  if (n > 0 && p == nullptr)
    throw std::invalid_argument(fmt::format("{}: {} is a null pointer but its count is {}", fn, name, n));
}

void check_trajectories(const Trajectories& t, const char* fn, const char* name) {
  if (t.states == 0) throw std::invalid_argument(fmt::format("{}: {} needs at least one state (states = 0)", fn, name));
  const std::size_t want = t.states * t.points * 2;
  if (t.xy.size() != want)
    throw std::invalid_argument(fmt::format(
        "{}: {} has {} values, expected states*points*2 = {}*{}*2 = {} (layout [state][point][x, y])", fn, name,
        t.xy.size(), t.states, t.points, want));
}

struct PointSet {
  const double* xy;
  std::size_t n;
};

// Robust limits of several point sets together, widened to a square.
Limits square_auto_limits(const std::vector<PointSet>& sets) {
  std::vector<double> xs, ys;
  for (const auto& s : sets) {
    for (std::size_t i = 0; i < s.n; ++i) {
      xs.push_back(s.xy[2 * i]);
      ys.push_back(s.xy[2 * i + 1]);
    }
  }
  const auto [x0, x1] = detail::robust_range(std::move(xs), 0.005, 0.05);
  const auto [y0, y1] = detail::robust_range(std::move(ys), 0.005, 0.05);
  return square_limits({x0, x1, y0, y1});
}

// Plot area of the square panel whose cell's top-left corner is (cx, cy).
Rect square_area(double cx, double cy) {
  const double left = 62.0, right = 22.0, top = 40.0, bottom = 50.0;
  return detail::fit_aspect({cx + left, cy + top, kPanel - left - right, kPanel - top - bottom}, 1.0);
}

// Dot size and opacity for a scatter of n points: ~1 px at alpha ~0.3 for a
// few thousand, larger and more opaque for a few hundred.
struct DotStyle {
  double radius;
  double alpha;
};

DotStyle scatter_style(std::size_t n) {
  const double ln = std::log10(double(std::max<std::size_t>(n, 1)));
  const double radius = std::clamp(2.9 - 0.5 * ln, 0.9, 2.2);         // 1000 → 1.4, 10000 → 0.9
  const double alpha = std::clamp(0.3 * std::sqrt(3000.0 / double(std::max<std::size_t>(n, 1))), 0.18, 0.7);
  return {radius, alpha};
}

// ---------------------------------------------------------------------------
// Scatter

AxesInfo scatter_panel(Figure& fig, Rect area, const Limits& lim, const double* xy, std::size_t n, Rgb color,
                       DotStyle ds, const std::string& title) {
  Axes ax(fig, area, lim);
  ax.grid();
  detail::draw_dots(ax, xy, n, ds.radius, color, ds.alpha);
  ax.frame();
  ax.ticks();
  ax.title(title);
  return ax.info();
}

// ---------------------------------------------------------------------------
// Trajectories

std::vector<std::pair<double, double>> trajectory_vertices_px(const Axes& ax, const Trajectories& t) {
  std::vector<std::pair<double, double>> out;
  const std::size_t total = t.states * t.points;
  const std::size_t stride = std::max<std::size_t>(1, total / 20000);
  for (std::size_t k = 0; k < total; k += stride) {
    const double x = t.xy[2 * k], y = t.xy[2 * k + 1];
    if (std::isfinite(x) && std::isfinite(y)) out.emplace_back(ax.px(x), ax.py(y));
  }
  return out;
}

AxesInfo trajectory_panel(Figure& fig, Rect area, const Limits& lim, const Trajectories& t,
                          const TrajectoryOptions& o, const std::string& title) {
  Axes ax(fig, area, lim);
  cairo_t* cr = fig.cr();
  ax.grid();
  const std::size_t N = t.points;
  const std::size_t S = t.states;
  const auto at = [&](std::size_t s, std::size_t i, int d) { return t.xy[(s * N + i) * 2 + std::size_t(d)]; };
  const auto finite_at = [&](std::size_t s, std::size_t i) {
    return std::isfinite(at(s, i, 0)) && std::isfinite(at(s, i, 1));
  };

  const Rgb obstacle_color{0.93, 0.45, 0.18};
  if (o.obstacle) {
    ax.clip();
    for (double k : {3.0, 2.0, 1.0}) {  // darker towards the centre: each level adds its alpha
      cairo_save(cr);
      cairo_translate(cr, ax.px(o.obstacle->cx), ax.py(o.obstacle->cy));
      cairo_scale(cr, std::abs(ax.px(o.obstacle->cx + k * o.obstacle->sx) - ax.px(o.obstacle->cx)),
                  std::abs(ax.py(o.obstacle->cy + k * o.obstacle->sy) - ax.py(o.obstacle->cy)));
      cairo_arc(cr, 0.0, 0.0, 1.0, 0.0, 2.0 * kPi);
      cairo_restore(cr);
      detail::set_color(cr, obstacle_color, 0.22);
      cairo_fill(cr);
    }
    ax.unclip();
  }
  if (!o.background.empty()) {
    const std::size_t nb = o.background.size() / 2;
    const double r = nb > 3000 ? 1.0 : 1.3;
    const double a = std::clamp(0.25 * std::sqrt(3000.0 / double(nb)), 0.12, 0.4);
    detail::draw_dots(ax, o.background.data(), nb, r, style::kBackground, a);
  }

  // Polylines.
  ax.clip();
  cairo_set_line_width(cr, N > 1000 ? 0.7 : 1.0);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
  const double line_alpha = N > 1000 ? 0.45 : 0.65;
  if (S >= 2) {
    if (o.color == PathColor::Group && o.groups.size() != N)
      throw std::invalid_argument(fmt::format("trajectories: {} groups for {} points", o.groups.size(), N));
    if (o.color == PathColor::StartAngle || o.color == PathColor::Group) {
      const int group_count = o.groups.empty() ? 1 : *std::max_element(o.groups.begin(), o.groups.end()) + 1;
      double cx = 0.0, cy = 0.0;
      std::size_t cnt = 0;
      for (std::size_t i = 0; i < N; ++i) {
        if (!finite_at(0, i)) continue;
        cx += at(0, i, 0);
        cy += at(0, i, 1);
        ++cnt;
      }
      if (cnt > 0) {
        cx /= double(cnt);
        cy /= double(cnt);
      }
      for (std::size_t i = 0; i < N; ++i) {
        if (o.color == PathColor::Group) {
          detail::set_color(cr, detail::cyclic_color((double(o.groups[i]) + 0.5) / double(group_count)), line_alpha);
        } else {
          const double angle = finite_at(0, i) ? std::atan2(at(0, i, 1) - cy, at(0, i, 0) - cx) : 0.0;
          detail::set_color(cr, detail::cyclic_color((angle + kPi) / (2.0 * kPi)), line_alpha);
        }
        bool pen = false;
        for (std::size_t s = 0; s < S; ++s) {
          if (!finite_at(s, i)) {
            pen = false;
            continue;
          }
          const double X = ax.px(at(s, i, 0)), Y = ax.py(at(s, i, 1));
          if (pen)
            cairo_line_to(cr, X, Y);
          else
            cairo_move_to(cr, X, Y);
          pen = true;
        }
        cairo_stroke(cr);
      }
    } else {
      for (std::size_t s = 0; s + 1 < S; ++s) {
        const double f = S > 2 ? double(s) / double(S - 2) : 0.5;
        detail::set_color(cr, viridis(0.88 * f), line_alpha);
        for (std::size_t i = 0; i < N; ++i) {
          if (!finite_at(s, i) || !finite_at(s + 1, i)) continue;
          cairo_move_to(cr, ax.px(at(s, i, 0)), ax.py(at(s, i, 1)));
          cairo_line_to(cr, ax.px(at(s + 1, i, 0)), ax.py(at(s + 1, i, 1)));
        }
        cairo_stroke(cr);
      }
    }
  }
  ax.unclip();

  // Start and end points.
  const double r = N <= 400 ? 2.2 : N <= 2000 ? 1.7 : 1.2;
  detail::draw_dots(ax, t.xy.data(), N, r, style::kStart, 0.9);
  detail::draw_dots(ax, t.xy.data() + (S - 1) * N * 2, N, r, style::kEnd, 0.9);

  ax.frame();
  ax.ticks();
  ax.title(title);
  std::vector<LegendEntry> entries;
  if (!o.start_label.empty()) entries.push_back({o.start_label, style::kStart, true, 0.9});
  if (!o.end_label.empty()) entries.push_back({o.end_label, style::kEnd, true, 0.9});
  if (!o.background.empty() && !o.background_label.empty())
    entries.push_back({o.background_label, style::kBackground, true, 0.6});
  if (o.obstacle && !o.obstacle_label.empty()) entries.push_back({o.obstacle_label, obstacle_color, true, 0.6});
  ax.legend(entries, trajectory_vertices_px(ax, t));
  return ax.info();
}

Limits trajectory_limits(const std::vector<const Trajectories*>& sets, const TrajectoryOptions& o, const char* fn) {
  if (o.limits) {
    detail::check_limits(*o.limits, fn);
    return *o.limits;
  }
  std::vector<PointSet> ps;
  for (const auto* t : sets) ps.push_back({t->xy.data(), t->states * t->points});
  ps.push_back({o.background.data(), o.background.size() / 2});
  return square_auto_limits(ps);
}

// ---------------------------------------------------------------------------
// Curves

struct XRange {
  double lo;
  double hi;
};

double series_x(const Series& s, std::size_t i) { return s.xs.empty() ? double(i) : s.xs[i]; }

void check_series(const Series& s, const char* fn) {
  if (!s.xs.empty() && s.xs.size() != s.ys.size())
    throw std::invalid_argument(fmt::format("{}: series '{}' has {} x values but {} y values (xs may also be empty)",
                                            fn, s.name, s.xs.size(), s.ys.size()));
}

bool usable(double x, double y, bool log_y) { return std::isfinite(x) && std::isfinite(y) && (!log_y || y > 0.0); }

XRange curves_x_range(const std::vector<CurvePanel>& panels) {
  double lo = HUGE_VAL, hi = -HUGE_VAL;
  for (const auto& p : panels)
    for (const auto& s : p.series)
      for (std::size_t i = 0; i < s.ys.size(); ++i) {
        const double x = series_x(s, i);
        if (!std::isfinite(x) || !std::isfinite(s.ys[i])) continue;
        lo = std::min(lo, x);
        hi = std::max(hi, x);
      }
  if (!(lo <= hi)) return {0.0, 1.0};
  if (lo == hi) return {lo - 0.5, hi + 0.5};
  return {lo, hi};
}

// y limits of one panel and whether it is really drawn on a log axis.
std::pair<Limits, bool> panel_limits(const CurvePanel& p, XRange xr, const char* fn) {
  bool log_y = p.log_y;
  if (log_y) {
    bool any = false;
    for (const auto& s : p.series)
      for (std::size_t i = 0; i < s.ys.size() && !any; ++i) any = usable(series_x(s, i), s.ys[i], true);
    if (!any && !p.y_range) log_y = false;
  }
  double y0, y1;
  if (p.y_range) {
    y0 = p.y_range->first;
    y1 = p.y_range->second;
    if (!std::isfinite(y0) || !std::isfinite(y1) || !(y0 < y1) || (log_y && !(y0 > 0.0)))
      throw std::invalid_argument(fmt::format("{}: y range [{}, {}] of panel '{}' must be finite, increasing{}", fn,
                                              y0, y1, p.y_label, log_y ? " and positive (log axis)" : ""));
  } else {
    std::vector<double> ys;
    for (const auto& s : p.series)
      for (std::size_t i = 0; i < s.ys.size(); ++i)
        if (usable(series_x(s, i), s.ys[i], log_y)) ys.push_back(log_y ? std::log10(s.ys[i]) : s.ys[i]);
    auto [lo, hi] = detail::robust_range(std::move(ys), 0.005, 0.05, {0.0, 1.0});
    if (log_y) {
      y0 = std::pow(10.0, lo);
      y1 = std::pow(10.0, hi);
    } else {
      y0 = lo;
      y1 = hi;
    }
  }
  return {{xr.lo, xr.hi, y0, y1}, log_y};
}

AxesInfo curve_panel(Figure& fig, Rect area, const CurvePanel& p, XRange xr, bool x_labels,
                     const std::string& x_label, const char* fn) {
  const auto [lim, log_y] = panel_limits(p, xr, fn);
  Axes ax(fig, area, lim, log_y);
  cairo_t* cr = fig.cr();
  ax.grid();
  std::vector<std::pair<double, double>> avoid;
  std::vector<LegendEntry> entries;
  ax.clip();
  cairo_set_line_width(cr, 1.8);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
  for (std::size_t k = 0; k < p.series.size(); ++k) {
    const Series& s = p.series[k];
    const Rgb color = palette(k);
    bool drawable = false;
    for (std::size_t i = 0; i < s.ys.size() && !drawable; ++i) drawable = usable(series_x(s, i), s.ys[i], log_y);
    if (!s.name.empty() && drawable) entries.push_back({s.name, color, false, 1.0});
    detail::set_color(cr, color);
    bool pen = false;
    double px_prev = 0.0, py_prev = 0.0;
    std::size_t run = 0;
    std::vector<std::pair<double, double>> isolated;
    for (std::size_t i = 0; i <= s.ys.size(); ++i) {
      const bool ok = i < s.ys.size() && usable(series_x(s, i), s.ys[i], log_y);
      if (!ok) {
        if (run == 1) isolated.emplace_back(px_prev, py_prev);  // a lone point: drawn as a dot
        pen = false;
        run = 0;
        continue;
      }
      const double X = ax.px(series_x(s, i)), Y = ax.py(s.ys[i]);
      if (pen) {
        // Densify long segments so the legend avoids them too.
        const double len = std::hypot(X - px_prev, Y - py_prev);
        for (double f = 8.0; f < len; f += 8.0)
          avoid.emplace_back(px_prev + (X - px_prev) * f / len, py_prev + (Y - py_prev) * f / len);
        cairo_line_to(cr, X, Y);
      } else {
        cairo_move_to(cr, X, Y);
      }
      avoid.emplace_back(X, Y);
      pen = true;
      ++run;
      px_prev = X;
      py_prev = Y;
    }
    cairo_stroke(cr);
    for (const auto& [X, Y] : isolated) {
      cairo_new_sub_path(cr);
      cairo_arc(cr, X, Y, 2.2, 0.0, 2.0 * kPi);
    }
    cairo_fill(cr);
  }
  ax.unclip();
  if (avoid.empty())
    fig.text(area.x + 0.5 * area.w, area.y + 0.5 * area.h, "no data", style::kLabelFont, HAlign::Center,
             VAlign::Middle, false, {0.6, 0.6, 0.6});
  ax.frame();
  ax.ticks(x_labels, true);
  if (x_labels) ax.xlabel(x_label);
  ax.ylabel(p.y_label);
  ax.title(p.title);
  ax.legend(entries, avoid);
  return ax.info();
}

}  // namespace

// ---------------------------------------------------------------------------
// Public figure functions

FigureInfo scatter_compare(const std::string& path, const double* target, std::size_t n, const double* model,
                           std::size_t m, const std::string& title_target, const std::string& title_model,
                           const std::optional<Limits>& limits) {
  constexpr const char* fn = "plot::scatter_compare";
  check_pointer(target, n, fn, "target");
  check_pointer(model, m, fn, "model");
  Limits lim;
  if (limits) {
    detail::check_limits(*limits, fn);
    lim = *limits;
  } else {
    // The target is the reference: a model that diverged on a few percent of
    // its samples must not shrink the target to a dot.
    lim = n > 0 ? square_auto_limits({{target, n}}) : square_auto_limits({{model, m}});
  }
  Figure fig(2 * kPanel, kPanel);
  FigureInfo info{fig.width(), fig.height(), {}};
  info.axes.push_back(
      scatter_panel(fig, square_area(0, 0), lim, target, n, palette(0), scatter_style(n), title_target));
  info.axes.push_back(
      scatter_panel(fig, square_area(kPanel, 0), lim, model, m, palette(1), scatter_style(m), title_model));
  fig.save(path);
  return info;
}

FigureInfo scatter_compare(const std::string& path, const std::vector<double>& target,
                           const std::vector<double>& model, const std::string& title_target,
                           const std::string& title_model, const std::optional<Limits>& limits) {
  constexpr const char* fn = "plot::scatter_compare";
  check_even(target, fn, "target");
  check_even(model, fn, "model");
  return scatter_compare(path, target.data(), target.size() / 2, model.data(), model.size() / 2, title_target,
                         title_model, limits);
}

FigureInfo density_heatmap(const std::string& path, const double* values, std::size_t ny, std::size_t nx,
                           const Limits& extent, const std::string& title, const HeatmapOptions& opt) {
  constexpr const char* fn = "plot::density_heatmap";
  if (nx == 0 || ny == 0)
    throw std::invalid_argument(fmt::format("{}: the grid must be at least 1×1, got ny={} nx={}", fn, ny, nx));
  check_pointer(values, nx * ny, fn, "values");
  detail::check_limits(extent, fn);
  check_even(opt.points, fn, "options.points");
  if ((opt.vmin && !std::isfinite(*opt.vmin)) || (opt.vmax && !std::isfinite(*opt.vmax)) ||
      (opt.vmin && opt.vmax && !(*opt.vmin < *opt.vmax)))
    throw std::invalid_argument(fmt::format("{}: vmin/vmax must be finite with vmin < vmax", fn));

  // Colour range.
  std::vector<double> finite;
  finite.reserve(nx * ny);
  for (std::size_t k = 0; k < nx * ny; ++k)
    if (std::isfinite(values[k])) finite.push_back(values[k]);
  double vmax = opt.vmax ? *opt.vmax : (finite.empty() ? 1.0 : *std::max_element(finite.begin(), finite.end()));
  double vmin = opt.vmin ? *opt.vmin : (finite.empty() ? 0.0 : detail::quantile(finite, 0.01));
  if (!(vmin < vmax)) {
    if (opt.vmin && !opt.vmax) {
      vmax = vmin + std::max(0.5, 0.1 * std::fabs(vmin));
    } else if (opt.vmax && !opt.vmin) {
      vmin = vmax - std::max(0.5, 0.1 * std::fabs(vmax));
    } else {
      const double c = 0.5 * (vmin + vmax), h = std::max(0.5, 0.1 * std::fabs(c));
      vmin = c - h;
      vmax = c + h;
    }
  }

  Figure fig(600, kPanel);
  cairo_t* cr = fig.cr();
  const Rect avail{62.0, 40.0, 600.0 - 62.0 - 118.0, kPanel - 40.0 - 50.0};
  const Rect area = detail::fit_aspect(avail, (extent.x1 - extent.x0) / (extent.y1 - extent.y0));
  Axes ax(fig, area, extent);

  // The grid as an image, row 0 at the bottom.
  cairo_surface_t* img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, int(nx), int(ny));
  if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS) {
    cairo_surface_destroy(img);
    throw std::invalid_argument(fmt::format("{}: grid {}×{} is too large for an image", fn, ny, nx));
  }
  cairo_surface_flush(img);
  unsigned char* data = cairo_image_surface_get_data(img);
  const int stride = cairo_image_surface_get_stride(img);
  const auto pack = [](Rgb c) {
    const auto b = [](double v) { return std::uint32_t(std::lround(std::clamp(v, 0.0, 1.0) * 255.0)); };
    return (b(c.r) << 16) | (b(c.g) << 8) | b(c.b);
  };
  for (std::size_t j = 0; j < ny; ++j) {
    auto* row = reinterpret_cast<std::uint32_t*>(data + std::size_t(stride) * (ny - 1 - j));
    for (std::size_t i = 0; i < nx; ++i) {
      const double v = values[j * nx + i];
      row[i] = std::isnan(v) ? pack({0.86, 0.86, 0.86}) : pack(viridis((v - vmin) / (vmax - vmin)));
    }
  }
  cairo_surface_mark_dirty(img);
  ax.clip();
  cairo_translate(cr, area.x, area.y);
  cairo_scale(cr, area.w / double(nx), area.h / double(ny));
  cairo_set_source_surface(cr, img, 0.0, 0.0);
  cairo_pattern_set_filter(cairo_get_source(cr), opt.smooth ? CAIRO_FILTER_BILINEAR : CAIRO_FILTER_NEAREST);
  cairo_pattern_set_extend(cairo_get_source(cr), CAIRO_EXTEND_PAD);
  cairo_paint(cr);
  ax.unclip();
  cairo_surface_destroy(img);

  if (!opt.points.empty()) detail::draw_dots(ax, opt.points.data(), opt.points.size() / 2, 1.3, {1.0, 1.0, 1.0}, 0.55);
  ax.frame();
  ax.ticks();
  ax.title(title);

  // Colour bar.
  const Rect bar{area.x + area.w + 22.0, area.y, 18.0, area.h};
  Axes cb(fig, bar, {0.0, 1.0, vmin, vmax});
  {
    cairo_surface_t* ramp = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 256);
    cairo_surface_flush(ramp);
    unsigned char* rd = cairo_image_surface_get_data(ramp);
    const int rs = cairo_image_surface_get_stride(ramp);
    for (int k = 0; k < 256; ++k)
      *reinterpret_cast<std::uint32_t*>(rd + std::size_t(rs) * std::size_t(255 - k)) = pack(viridis(k / 255.0));
    cairo_surface_mark_dirty(ramp);
    cb.clip();
    cairo_translate(cr, bar.x, bar.y);
    cairo_scale(cr, bar.w, bar.h / 256.0);
    cairo_set_source_surface(cr, ramp, 0.0, 0.0);
    cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_BILINEAR);
    cairo_pattern_set_extend(cairo_get_source(cr), CAIRO_EXTEND_PAD);
    cairo_paint(cr);
    cb.unclip();
    cairo_surface_destroy(ramp);
  }
  cb.frame();
  const auto cticks = nice_ticks(vmin, vmax, std::max(3, int(bar.h / 55.0)));
  const double cstep = cticks.size() >= 2 ? cticks[1] - cticks[0] : 0.0;
  double maxw = 0.0;
  cairo_save(cr);
  detail::set_color(cr, style::kFrame);
  cairo_set_line_width(cr, 1.0);
  for (double t : cticks) {
    const double Y = std::floor(cb.py(t)) + 0.5;
    const double right = bar.x + bar.w;
    cairo_move_to(cr, right, Y);
    cairo_line_to(cr, right + style::kTickLength, Y);
    cairo_stroke(cr);
    std::string label = format_tick(t, cstep);
    if (!label.empty() && label[0] == '-') label = "\xE2\x88\x92" + label.substr(1);
    fig.text(right + style::kTickLength + 4.0, Y, label, style::kTickFont, HAlign::Left, VAlign::Middle, false,
             style::kTickText);
    maxw = std::max(maxw, fig.text_width(label, style::kTickFont));
  }
  cairo_restore(cr);
  fig.text(bar.x + bar.w + style::kTickLength + 4.0 + maxw + 9.0, bar.y + 0.5 * bar.h, opt.colorbar_label,
           style::kLabelFont, HAlign::Center, VAlign::Top, false, style::kText, 0.5 * kPi);

  FigureInfo info{fig.width(), fig.height(), {ax.info(), cb.info()}};
  fig.save(path);
  return info;
}

FigureInfo density_heatmap(const std::string& path, const std::vector<double>& values, std::size_t ny, std::size_t nx,
                           const Limits& extent, const std::string& title, const HeatmapOptions& options) {
  if (values.size() != nx * ny)
    throw std::invalid_argument(fmt::format(
        "plot::density_heatmap: values has {} entries, expected ny*nx = {}*{} = {}", values.size(), ny, nx, ny * nx));
  return density_heatmap(path, values.data(), ny, nx, extent, title, options);
}

FigureInfo trajectories(const std::string& path, const Trajectories& traj, const TrajectoryOptions& options) {
  constexpr const char* fn = "plot::trajectories";
  check_trajectories(traj, fn, "traj");
  check_even(options.background, fn, "options.background");
  const Limits lim = trajectory_limits({&traj}, options, fn);
  Figure fig(kPanel, kPanel);
  FigureInfo info{fig.width(), fig.height(), {}};
  info.axes.push_back(trajectory_panel(fig, square_area(0, 0), lim, traj, options, options.title));
  fig.save(path);
  return info;
}

FigureInfo trajectories(const std::string& path, const std::vector<double>& traj, std::size_t states,
                        std::size_t points, const TrajectoryOptions& options) {
  return trajectories(path, Trajectories{traj, states, points}, options);
}

FigureInfo trajectories_compare(const std::string& path, const Trajectories& a, const Trajectories& b,
                                const std::string& title_a, const std::string& title_b,
                                const TrajectoryOptions& options) {
  constexpr const char* fn = "plot::trajectories_compare";
  check_trajectories(a, fn, "a");
  check_trajectories(b, fn, "b");
  check_even(options.background, fn, "options.background");
  // Each panel fits its own paths (and the background), so that short paths are not a blot in
  // the corner of the other panel's axes; options.limits, when given, applies to both.
  const Limits lim_a = trajectory_limits({&a}, options, fn), lim_b = trajectory_limits({&b}, options, fn);
  Figure fig(2 * kPanel, kPanel);
  FigureInfo info{fig.width(), fig.height(), {}};
  info.axes.push_back(trajectory_panel(fig, square_area(0, 0), lim_a, a, options, title_a));
  info.axes.push_back(trajectory_panel(fig, square_area(kPanel, 0), lim_b, b, options, title_b));
  fig.save(path);
  return info;
}

FigureInfo map_compare(const std::string& path, const std::vector<double>& xy_base,
                       const std::vector<double>& xy_model, const std::vector<double>& xy_ref,
                       const std::string& title, const std::string& label_model, const std::string& label_ref,
                       const std::vector<double>& background, const std::optional<Limits>& limits) {
  constexpr const char* fn = "plot::map_compare";
  check_even(xy_base, fn, "xy_base");
  check_even(background, fn, "background");
  if (xy_model.size() != xy_base.size() || xy_ref.size() != xy_base.size())
    throw std::invalid_argument(fmt::format("{}: xy_base, xy_model and xy_ref must have the same size (got {}, {} and {})",
                                            fn, xy_base.size(), xy_model.size(), xy_ref.size()));
  const std::size_t n = xy_base.size() / 2;
  Limits lim;
  if (limits) {
    detail::check_limits(*limits, fn);
    lim = *limits;
  } else {
    lim = square_auto_limits({{xy_base.data(), n}, {xy_model.data(), n}, {xy_ref.data(), n},
                              {background.data(), background.size() / 2}});
  }
  const Rgb ref_color{0.13, 0.55, 0.35}, model_color = style::kEnd;
  Figure fig(kPanel, kPanel);
  FigureInfo info{fig.width(), fig.height(), {}};
  Axes ax(fig, square_area(0, 0), lim);
  cairo_t* cr = fig.cr();
  ax.grid();
  if (!background.empty()) {
    const std::size_t nb = background.size() / 2;
    detail::draw_dots(ax, background.data(), nb, nb > 3000 ? 1.0 : 1.3, style::kBackground,
                      std::clamp(0.2 * std::sqrt(3000.0 / double(nb)), 0.1, 0.35));
  }
  const auto finite = [](const std::vector<double>& v, std::size_t i) {
    return std::isfinite(v[2 * i]) && std::isfinite(v[2 * i + 1]);
  };
  // One stroke of the n segments base[i] → end[i] (finite ends only).
  const auto segments = [&](const std::vector<double>& end, double width, Rgb color, double alpha) {
    cairo_set_line_width(cr, width);
    detail::set_color(cr, color, alpha);
    for (std::size_t i = 0; i < n; ++i) {
      if (!finite(xy_base, i) || !finite(end, i)) continue;
      cairo_move_to(cr, ax.px(xy_base[2 * i]), ax.py(xy_base[2 * i + 1]));
      cairo_line_to(cr, ax.px(end[2 * i]), ax.py(end[2 * i + 1]));
    }
    cairo_stroke(cr);
  };
  ax.clip();
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
  // The reference: a wide, light stroke, so the learned map's thin line shows on top of it.
  segments(xy_ref, 3.2, ref_color, 0.35);
  cairo_set_line_width(cr, 1.6);
  detail::set_color(cr, ref_color, 0.9);
  for (std::size_t i = 0; i < n; ++i) {
    if (!finite(xy_ref, i)) continue;
    cairo_new_sub_path(cr);
    cairo_arc(cr, ax.px(xy_ref[2 * i]), ax.py(xy_ref[2 * i + 1]), 3.6, 0.0, 2.0 * kPi);
  }
  cairo_stroke(cr);
  segments(xy_model, 1.0, model_color, 0.85);
  ax.unclip();
  const double r = n <= 400 ? 2.0 : 1.4;
  detail::draw_dots(ax, xy_base.data(), n, r, style::kStart, 0.9);
  detail::draw_dots(ax, xy_model.data(), n, r, style::kEnd, 0.9);
  ax.frame();
  ax.ticks();
  ax.title(title);
  std::vector<std::pair<double, double>> avoid;
  for (const auto* v : {&xy_base, &xy_model, &xy_ref})
    for (std::size_t i = 0; i < n; ++i)
      if (finite(*v, i)) avoid.emplace_back(ax.px((*v)[2 * i]), ax.py((*v)[2 * i + 1]));
  ax.legend({{"base point x", style::kStart, true, 0.9},
             {label_model, style::kEnd, true, 0.9},
             {label_ref, ref_color, false, 0.6}},
            avoid);
  info.axes.push_back(ax.info());
  fig.save(path);
  return info;
}

FigureInfo curves(const std::string& path, const std::vector<Series>& series, const std::string& x_label,
                  const std::string& y_label, const std::string& title, bool log_y) {
  constexpr const char* fn = "plot::curves";
  for (const auto& s : series) check_series(s, fn);
  CurvePanel panel{series, y_label, title, log_y, std::nullopt};
  const XRange xr = curves_x_range({panel});
  Figure fig(700, 450);
  const Rect area{84.0, 44.0, 700.0 - 84.0 - 24.0, 450.0 - 44.0 - 58.0};
  FigureInfo info{fig.width(), fig.height(), {}};
  info.axes.push_back(curve_panel(fig, area, panel, xr, true, x_label, fn));
  fig.save(path);
  return info;
}

FigureInfo curve_panels(const std::string& path, const std::vector<CurvePanel>& panels, const std::string& x_label,
                        const std::string& title) {
  constexpr const char* fn = "plot::curve_panels";
  if (panels.empty()) throw std::invalid_argument(fmt::format("{}: at least one panel is required", fn));
  for (const auto& p : panels)
    for (const auto& s : p.series) check_series(s, fn);
  const XRange xr = curves_x_range(panels);
  const double top = title.empty() ? 20.0 : 44.0;
  const double slot = 240.0;
  const int height = int(top + slot * double(panels.size()) + 50.0);
  Figure fig(700, height);
  if (!title.empty())
    fig.text(0.5 * fig.width(), 28.0, title, style::kTitleFont + 1.0, HAlign::Center, VAlign::Baseline, true);
  FigureInfo info{fig.width(), fig.height(), {}};
  for (std::size_t k = 0; k < panels.size(); ++k) {
    const Rect area{84.0, top + slot * double(k) + 30.0, 700.0 - 84.0 - 24.0, 200.0};
    const bool last = k + 1 == panels.size();
    info.axes.push_back(curve_panel(fig, area, panels[k], xr, last, x_label, fn));
  }
  fig.save(path);
  return info;
}

}  // namespace plot
