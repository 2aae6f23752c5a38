#pragma once
// plot: a small figure library that writes PNG figures (through cairo) of
// 2-D normalizing flows: sample scatters, density heat maps, transport
// trajectories and loss curves. It takes plain data only (pointers and
// std::vector<double>), never trflow's own types.
//
// Conventions used throughout:
//  * point sets are n×2 row-major: point i is (xy[2i], xy[2i+1]);
//  * every figure function writes one PNG (white background, antialiased) and
//    returns a FigureInfo telling the image size and where each plot area
//    landed, so callers and tests can map data to pixels;
//  * malformed input (sizes that do not match, null pointers with a non-zero
//    count, empty or non-finite explicit ranges) throws std::invalid_argument;
//    a PNG that cannot be written throws std::runtime_error naming the path;
//  * without explicit limits, axes use robust auto-limits (robust_limits), so
//    a few outliers do not squash the picture; what falls outside is clipped;
//  * non-finite values (NaN, ±Inf) are skipped wherever data is drawn.
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace plot {

/// A rectangle in data units: x in [x0, x1], y in [y0, y1]. Valid limits are
/// finite with x0 < x1 and y0 < y1.
struct Limits {
  double x0 = 0.0;  ///< left
  double x1 = 1.0;  ///< right
  double y0 = 0.0;  ///< bottom
  double y1 = 1.0;  ///< top
};

/// An RGB colour, components in [0, 1].
struct Rgb {
  double r = 0.0;
  double g = 0.0;
  double b = 0.0;
};

/// Where one plot area (axes) landed in the PNG: its pixel rectangle (origin
/// at the image's top-left corner, y pointing down) and the data limits it
/// shows.
struct AxesInfo {
  double left = 0.0;    ///< pixel x of the plot area's left edge
  double top = 0.0;     ///< pixel y of the plot area's top edge
  double width = 0.0;   ///< plot area width in pixels
  double height = 0.0;  ///< plot area height in pixels
  Limits limits;        ///< data limits shown (for a log y axis: the data values, not their logs)
  bool log_y = false;   ///< whether the y axis is logarithmic

  /// Pixel coordinates (x, y) of the data point (x, y) in this plot area.
  std::pair<double, double> to_pixel(double x, double y) const;
};

/// What a figure function wrote: the PNG size in pixels and its plot areas,
/// left to right, then top to bottom (a heat map's colour bar comes last).
struct FigureInfo {
  int width = 0;               ///< PNG width in pixels
  int height = 0;              ///< PNG height in pixels
  std::vector<AxesInfo> axes;  ///< the plot areas drawn
};

// ---------------------------------------------------------------------------
// Scales, ticks and colours (the building blocks, public so they can be tested)

/// Tick positions for the interval [lo, hi] by the 1-2-5 rule: the step is
/// the smallest of {1, 2, 5}×10^k that puts at most `max_ticks` of its
/// multiples inside [lo, hi]; the ticks are those multiples, ascending (a
/// relative tolerance of 1e-9 keeps end points that are multiples). lo == hi
/// gives {lo}; lo > hi, non-finite bounds or max_ticks < 1 give {}.
/// Example: nice_ticks(0, 1) == {0, 0.2, 0.4, 0.6, 0.8, 1}.
std::vector<double> nice_ticks(double lo, double hi, int max_ticks = 7);

/// The step nice_ticks(lo, hi, max_ticks) uses ({1, 2, 5}×10^k), or 0 when it
/// returns no ticks or a single one.
double nice_step(double lo, double hi, int max_ticks = 7);

/// Tick positions for a logarithmic axis over [lo, hi] (0 < lo < hi): the
/// powers of ten inside the interval (every 2nd, 3rd, ... decade when more
/// than `max_ticks` would fit); when fewer than two powers of ten fall inside,
/// the 1-2-5 multiples of each decade inside it; when that still gives fewer
/// than two, nice_ticks(lo, hi, max_ticks). Invalid intervals give {}.
std::vector<double> log_ticks(double lo, double hi, int max_ticks = 7);

/// Text for a tick value on an axis whose tick step is `step`: as many
/// decimals as the step needs (format_tick(0.25, 0.05) == "0.25",
/// format_tick(3, 1) == "3"), never "-0", and compact scientific notation
/// ("2e6", "1.5e6", "5e-5") when |v| >= 1e6 or the step is below 1e-4; step
/// <= 0 (a lone tick) uses "%g". Uses an ASCII minus.
std::string format_tick(double v, double step);

/// Robust limits of the n points xy[2i], xy[2i+1]: per axis, the q and 1−q
/// quantiles of the finite values (linear interpolation between order
/// statistics), widened by `pad` times the span on each side. A degenerate
/// axis (zero span) becomes value ± max(0.5, 0.1·|value|); an axis without
/// finite values becomes [−1, 1]. Requires xy != nullptr when n > 0.
Limits robust_limits(const double* xy, std::size_t n, double q = 0.005, double pad = 0.05);

/// robust_limits over the points of an n×2 row-major vector (size must be even).
Limits robust_limits(const std::vector<double>& xy, double q = 0.005, double pad = 0.05);

/// `l` with its shorter side widened (about the same centre) to the span of
/// the longer one, e.g. to give a density heat map the same square view as
/// scatter_compare's auto-limits.
Limits square_limits(const Limits& l);

/// The viridis colour map at t ∈ [0, 1] (t is clamped; NaN reads as 0):
/// matplotlib's 256-entry table, linearly interpolated. viridis(0) is dark
/// purple (#440154), viridis(1) yellow (#fde725).
Rgb viridis(double t);

/// The figure palette (ten distinguishable colours in the style of
/// matplotlib's tab10: blue, orange, green, red, purple, ...); i wraps around.
/// Target samples use palette(0), model samples palette(1).
Rgb palette(std::size_t i);

/// The n centres of n equal cells covering [lo, hi]: lo + (i + 0.5)(hi − lo)/n.
/// These are the points at which to evaluate a density for density_heatmap.
std::vector<double> cell_centers(double lo, double hi, std::size_t n);

// ---------------------------------------------------------------------------
// Figures

/// Two square panels side by side, `title_target` (left) and `title_model`
/// (right), scatter plots of the n target points and the m model points
/// (n×2 and m×2 row-major) as small translucent dots (about 1 px at alpha
/// 0.3 for a few thousand points, larger and more opaque for a few hundred),
/// with the same axis limits in both panels: `limits` if given, otherwise
/// robust limits of the target points (of the model points when there is no
/// target), widened to a square, so that a model that scatters a few percent
/// of its samples far away cannot shrink the picture; model points outside
/// are clipped. The PNG is 1000×500 pixels.
FigureInfo scatter_compare(const std::string& path, const double* target, std::size_t n, const double* model,
                           std::size_t m, const std::string& title_target = "target samples",
                           const std::string& title_model = "model samples",
                           const std::optional<Limits>& limits = std::nullopt);

/// scatter_compare over n×2 row-major vectors (sizes must be even).
FigureInfo scatter_compare(const std::string& path, const std::vector<double>& target,
                           const std::vector<double>& model, const std::string& title_target = "target samples",
                           const std::string& title_model = "model samples",
                           const std::optional<Limits>& limits = std::nullopt);

/// Extra settings for density_heatmap.
struct HeatmapOptions {
  /// Label of the colour bar, e.g. "density" or "log density".
  std::string colorbar_label;
  /// Value shown at the bottom of the colour map (default: the 1st percentile
  /// of the finite values, so a few very low log-densities do not wash the
  /// picture out); lower values are clamped to it.
  std::optional<double> vmin;
  /// Value shown at the top of the colour map (default: the largest finite
  /// value); higher values are clamped to it.
  std::optional<double> vmax;
  /// Points to overlay (n×2 row-major), drawn as small white dots.
  std::vector<double> points;
  /// Bilinear interpolation between cell centres (true) or flat cells (false).
  bool smooth = true;
};

/// A heat map of a grid of values (density or log-density) in viridis, with a
/// colour bar and its ticks on the right. `values` holds ny rows of nx values:
/// values[j*nx + i] belongs to the cell centred at (cell_centers(extent.x0,
/// extent.x1, nx)[i], cell_centers(extent.y0, extent.y1, ny)[j]), so row 0 is
/// the bottom of the picture. NaN cells are drawn light grey, −Inf as the
/// bottom colour and +Inf as the top one. The plot area keeps the extent's
/// aspect ratio. The PNG is 600×500 pixels.
FigureInfo density_heatmap(const std::string& path, const std::vector<double>& values, std::size_t ny, std::size_t nx,
                           const Limits& extent, const std::string& title, const HeatmapOptions& options = {});

/// density_heatmap over a pointer to ny·nx values.
FigureInfo density_heatmap(const std::string& path, const double* values, std::size_t ny, std::size_t nx,
                           const Limits& extent, const std::string& title, const HeatmapOptions& options = {});

/// How trajectories colour their polylines.
enum class PathColor {
  StartAngle,  ///< each point's path by the angle of its start around the starts' centroid (cyclic hues)
  Step,        ///< each segment by its step in viridis, from dark purple (first) to yellow-green (last)
  Group,       ///< each point's path by its group (TrajectoryOptions::groups), one hue per group
};

/// Trajectories of `points` points through `states` states (the base point,
/// then after each layer), flattened state-major: coordinate d of point i at
/// state s is xy[(s*points + i)*2 + d]; xy.size() must be states*points*2.
struct Trajectories {
  std::vector<double> xy;      ///< (states × points × 2) coordinates
  std::size_t states = 0;      ///< number of states K+1 (at least 1)
  std::size_t points = 0;      ///< number of points N
};

/// Extra settings for trajectories and trajectories_compare.
struct TrajectoryOptions {
  /// Panel title of the single-panel figure (trajectories_compare takes its titles as arguments).
  std::string title;
  /// Target samples to draw faintly behind the paths (n×2 row-major; may be empty).
  std::vector<double> background;
  /// Axis limits (default: robust limits of every state and the background, widened to a square).
  std::optional<Limits> limits;
  /// How the polylines are coloured.
  PathColor color = PathColor::StartAngle;
  /// PathColor::Group: each point's group, 0 … G − 1 (one per point).
  std::vector<int> groups;
  /// Legend label of the start points (state 0).
  std::string start_label = "base point";
  /// Legend label of the end points (last state).
  std::string end_label = "pushed forward";
  /// Legend label of the background samples (no entry when empty).
  std::string background_label = "target samples";
  /// An obstacle to draw under everything: the density of N(centre, diag(sx², sy²)) as three
  /// filled, translucent ellipses at one, two and three standard deviations.
  struct Obstacle {
    double cx = 0, cy = 0, sx = 1, sy = 1;
  };
  std::optional<Obstacle> obstacle;
  /// Legend label of the obstacle.
  std::string obstacle_label = "obstacle";
};

/// One square panel drawing each point's polyline through its states (thin
/// lines coloured as options.color says), its start as a small dark dot and
/// its end as a small red dot, with a legend naming both (and the background
/// samples, when given) placed in the corner that hides the fewest paths.
/// Empty labels get no legend entry. The PNG is 500×500 pixels.
FigureInfo trajectories(const std::string& path, const Trajectories& traj, const TrajectoryOptions& options = {});

/// trajectories over a flat (states × points × 2) vector.
FigureInfo trajectories(const std::string& path, const std::vector<double>& traj, std::size_t states,
                        std::size_t points, const TrajectoryOptions& options = {});

/// Two trajectory panels side by side (e.g. with and without transport
/// regularization), titled `title_a` and `title_b`, each on axes that fit its
/// own paths (robust limits of its states and the background, widened to a
/// square), or both on options.limits when given; options.title is not used.
/// Points are coloured by their start (options.color), so the same base point
/// has the same colour in both panels. The sets may differ in their numbers of
/// states and points. The PNG is 1000×500 pixels.
FigureInfo trajectories_compare(const std::string& path, const Trajectories& a, const Trajectories& b,
                                const std::string& title_a, const std::string& title_b,
                                const TrajectoryOptions& options = {});

/// A learned map against a reference map, for n base points: from each base point x
/// (xy_base, n×2 row-major) a line to the reference image (xy_ref, e.g. the optimal-transport
/// map T*(x)), drawn light and dashed-looking with a hollow ring at its end, and a line to
/// the learned image (xy_model, F(x)) with a filled red dot; background samples (n×2, may be
/// empty) drawn faintly behind. Axis limits: `limits`, or robust limits of all points widened
/// to a square. One square panel titled `title`, a legend naming `label_model` and
/// `label_ref`. The PNG is 500×500 pixels.
FigureInfo map_compare(const std::string& path, const std::vector<double>& xy_base,
                       const std::vector<double>& xy_model, const std::vector<double>& xy_ref,
                       const std::string& title, const std::string& label_model = "learned map F(x)",
                       const std::string& label_ref = "optimal-transport map T*(x)",
                       const std::vector<double>& background = {},
                       const std::optional<Limits>& limits = std::nullopt);

/// One named line of a curve plot. xs may be empty, meaning 0, 1, 2, ...;
/// otherwise it must have ys.size() values. Points with a non-finite x or y
/// (or y <= 0 on a log axis) are skipped and break the line.
struct Series {
  std::string name;        ///< legend entry (series with an empty name get none)
  std::vector<double> xs;  ///< x values (e.g. iterations), or empty
  std::vector<double> ys;  ///< y values (e.g. losses)
};

/// One panel of curve_panels: its series, y axis label, optional title and scale.
struct CurvePanel {
  std::vector<Series> series;  ///< lines, coloured palette(0), palette(1), ... in order
  std::string y_label;         ///< y axis title
  std::string title;           ///< panel title (may be empty)
  bool log_y = false;          ///< logarithmic y axis (falls back to linear when no value is positive)
  /// Explicit y range (default: robust limits of the finite values).
  std::optional<std::pair<double, double>> y_range;
};

/// A line plot of one or more series (e.g. loss curves) with a legend, axis
/// titles and a title; the y range is robust, so an early spike does not
/// flatten the rest. Empty series are allowed. The PNG is 700×450 pixels.
FigureInfo curves(const std::string& path, const std::vector<Series>& series, const std::string& x_label,
                  const std::string& y_label, const std::string& title, bool log_y = false);

/// Several curve panels stacked one above the other, sharing the x axis (same
/// x range; tick labels and `x_label` only under the bottom panel), each with
/// its own y axis, legend and optional title, under an optional figure
/// `title`. The PNG is 700 pixels wide and 70 + 240·k (+ 24 with a title)
/// pixels high for k panels. At least one panel is required.
FigureInfo curve_panels(const std::string& path, const std::vector<CurvePanel>& panels, const std::string& x_label,
                        const std::string& title = "");

}  // namespace plot
