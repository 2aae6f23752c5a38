#pragma once
// Internal drawing layer of the plot library: a Figure (a cairo image surface
// with text helpers) and Axes (a plot area mapping data to pixels, with
// ticks, grid, frame, titles and a legend). Not part of the public API.
#include <cairo.h>

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "plot/plot.hpp"

namespace plot::detail {

/// Shared look: fonts, sizes and greys used by every figure.
namespace style {
inline constexpr const char* kFont = "sans-serif";
inline constexpr double kTickFont = 12.0;
inline constexpr double kLabelFont = 13.5;
inline constexpr double kTitleFont = 15.0;
inline constexpr double kLegendFont = 12.5;
inline constexpr Rgb kText{0.13, 0.13, 0.13};
inline constexpr Rgb kTickText{0.25, 0.25, 0.25};
inline constexpr Rgb kFrame{0.30, 0.30, 0.30};
inline constexpr Rgb kGrid{0.91, 0.91, 0.91};
inline constexpr Rgb kStart{0.16, 0.16, 0.20};      ///< trajectory start points
inline constexpr Rgb kEnd{0.84, 0.15, 0.16};        ///< trajectory end points
inline constexpr Rgb kBackground{0.55, 0.55, 0.58}; ///< faint background samples
inline constexpr double kTickLength = 4.0;
}  // namespace style

/// A rectangle in pixels (x, y = top-left corner).
struct Rect {
  double x = 0.0;
  double y = 0.0;
  double w = 0.0;
  double h = 0.0;
};

/// Horizontal anchor of a text.
enum class HAlign { Left, Center, Right };
/// Vertical anchor of a text (Top/Middle/Bottom refer to the cap height, so
/// digits and capitals line up whatever the string).
enum class VAlign { Top, Middle, Baseline, Bottom };

/// Sets the cairo source colour.
void set_color(cairo_t* cr, Rgb c, double alpha = 1.0);

/// Shrinks r (centred) so that its width/height ratio is `aspect`.
Rect fit_aspect(Rect r, double aspect);

/// Throws std::invalid_argument (naming `what`) unless l is finite with x0 < x1, y0 < y1.
void check_limits(const Limits& l, const char* what);

/// The q-quantile (linear interpolation) of the finite values of v (v is
/// reordered); NaN when there is none.
double quantile(std::vector<double>& v, double q);

/// Robust range of the finite values of v: [q, 1−q] quantiles widened by pad
/// times the span each side; zero span becomes value ± max(0.5, 0.1·|value|);
/// no finite value gives `fallback`.
std::pair<double, double> robust_range(std::vector<double> v, double q, double pad,
                                       std::pair<double, double> fallback = {-1.0, 1.0});

/// A colour on a cyclic hue wheel at t ∈ [0, 1) (t wraps), of moderate
/// saturation so thin lines over it stay readable.
Rgb cyclic_color(double t);

/// A white image surface with antialiased drawing and text helpers.
class Figure {
 public:
  /// A width×height white canvas.
  Figure(int width, int height);
  ~Figure();
  Figure(const Figure&) = delete;
  Figure& operator=(const Figure&) = delete;

  /// The cairo context to draw with.
  cairo_t* cr() const { return cr_; }
  /// Canvas width in pixels.
  int width() const { return width_; }
  /// Canvas height in pixels.
  int height() const { return height_; }

  /// Draws `s` anchored at (x, y), rotated by `angle` radians (counter-clockwise
  /// on screen for positive angles). "a^{b}" draws b as a superscript.
  void text(double x, double y, const std::string& s, double size, HAlign h, VAlign v, bool bold = false,
            Rgb color = style::kText, double angle = 0.0) const;
  /// Advance width of `s` (superscripts included) in pixels.
  double text_width(const std::string& s, double size, bool bold = false) const;

  /// Writes the PNG; throws std::runtime_error naming `path` on failure.
  void save(const std::string& path) const;

 private:
  int width_;
  int height_;
  cairo_surface_t* surface_ = nullptr;
  cairo_t* cr_ = nullptr;
};

/// One legend entry: a short line or a dot in `color`.
struct LegendEntry {
  std::string label;
  Rgb color;
  bool dot = false;    ///< dot marker instead of a line sample
  double alpha = 1.0;  ///< opacity of the sample
};

/// A plot area in a Figure showing `limits` (optionally with a log y axis).
class Axes {
 public:
  /// Axes in `area` (pixels) of `fig` showing `limits`; ticks default to
  /// nice_ticks / log_ticks of the limits.
  Axes(Figure& fig, Rect area, Limits limits, bool log_y = false);

  /// Pixel x of data x.
  double px(double x) const;
  /// Pixel y of data y (NaN for y <= 0 on a log axis).
  double py(double y) const;
  /// The plot area in pixels.
  const Rect& area() const { return area_; }
  /// The data limits.
  const Limits& limits() const { return limits_; }
  /// Whether y is logarithmic.
  bool log_y() const { return log_y_; }
  /// The figure's cairo context.
  cairo_t* cr() const { return fig_.cr(); }
  /// The figure drawn on.
  Figure& figure() const { return fig_; }
  /// Public description of this plot area.
  AxesInfo info() const;

  /// Replaces the x ticks.
  void set_xticks(std::vector<double> t) { xticks_ = std::move(t); }
  /// Replaces the y ticks.
  void set_yticks(std::vector<double> t) { yticks_ = std::move(t); }

  /// Light grid lines at the ticks (draw first).
  void grid() const;
  /// Thin frame around the plot area (draw after the data).
  void frame() const;
  /// Outward tick marks, with labels on the bottom (x) and left (y) unless disabled.
  void ticks(bool x_labels = true, bool y_labels = true);
  /// Axis title under the x tick labels.
  void xlabel(const std::string& s) const;
  /// Axis title left of the y tick labels, rotated.
  void ylabel(const std::string& s) const;
  /// Panel title above the plot area.
  void title(const std::string& s) const;
  /// Restricts drawing to the plot area until unclip().
  void clip() const;
  /// Ends clip().
  void unclip() const;
  /// A legend box in the corner of the plot area that covers the fewest of
  /// `avoid` (pixel points), preferring top-right, top-left, bottom-left,
  /// bottom-right.
  void legend(const std::vector<LegendEntry>& entries, const std::vector<std::pair<double, double>>& avoid) const;

 private:
  Figure& fig_;
  Rect area_;
  Limits limits_;
  bool log_y_;
  std::vector<double> xticks_;
  std::vector<double> yticks_;
  double ylabel_offset_ = 40.0;  ///< distance of the y title from the frame (set by ticks())
};

/// Draws the finite points xy[2i], xy[2i+1] as filled discs (each composited
/// on its own, so overlaps darken), clipped to the axes.
void draw_dots(const Axes& ax, const double* xy, std::size_t n, double radius, Rgb color, double alpha);

}  // namespace plot::detail
