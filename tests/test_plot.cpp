// plot: ticks, limits, colour map, and every figure written as a PNG and read
// back (size, not blank, colours where they belong, errors on bad input).
#if __has_include("plot/plot.hpp")

#include <cairo.h>
#include <unistd.h>
#include <cerrno>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "plot/plot.hpp"
#include "nn/io.hpp"

namespace fs = std::filesystem;

namespace {

/// A fresh temporary directory, removed with everything in it at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("trflow_test_plot_" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

struct Pixel {
  int r, g, b;
};

/// A PNG read back through cairo.
class Image {
 public:
  explicit Image(const std::string& path) : s_(cairo_image_surface_create_from_png(path.c_str())) {
    ok_ = cairo_surface_status(s_) == CAIRO_STATUS_SUCCESS;
    if (ok_) cairo_surface_flush(s_);
  }
  ~Image() { cairo_surface_destroy(s_); }
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;
  bool ok() const { return ok_; }
  int width() const { return cairo_image_surface_get_width(s_); }
  int height() const { return cairo_image_surface_get_height(s_); }
  Pixel at(int x, int y) const {
    const unsigned char* d = cairo_image_surface_get_data(s_);
    const int stride = cairo_image_surface_get_stride(s_);
    const std::uint32_t v = *reinterpret_cast<const std::uint32_t*>(d + std::size_t(y) * std::size_t(stride) + 4 * std::size_t(x));
    return {int((v >> 16) & 255), int((v >> 8) & 255), int(v & 255)};
  }
  /// Pixels in [x0, x1) × [y0, y1) for which pred holds.
  template <class Pred>
  long count(int x0, int y0, int x1, int y1, Pred pred) const {
    long n = 0;
    for (int y = std::max(0, y0); y < std::min(height(), y1); ++y)
      for (int x = std::max(0, x0); x < std::min(width(), x1); ++x)
        if (pred(at(x, y))) ++n;
    return n;
  }

 private:
  cairo_surface_t* s_;
  bool ok_ = false;
};

bool non_white(Pixel p) { return p.r < 235 || p.g < 235 || p.b < 235; }
/// Close to palette(0) blue (31, 119, 180) blended on white.
bool bluish(Pixel p) { return p.b > p.r + 30 && p.b > p.g + 10; }
/// Orange-ish: red high, blue low (palette(1) blended on white).
bool orangish(Pixel p) { return p.r > 200 && p.r > p.g + 25 && p.g > p.b + 15; }
/// The trajectory end colour (red).
bool reddish(Pixel p) { return p.r > 150 && p.g < 90 && p.b < 90; }
/// The trajectory start colour (near black).
bool darkish(Pixel p) { return p.r < 80 && p.g < 80 && p.b < 90; }
/// The top of viridis (#fde725) give or take.
bool yellowish(Pixel p) { return p.r > 220 && p.g > 200 && p.b < 90; }
/// The bottom of viridis (#440154) give or take.
bool dark_purple(Pixel p) { return p.r > 50 && p.r < 90 && p.g < 25 && p.b > 60 && p.b < 110; }

std::vector<double> gaussian_points(std::size_t n, double mx, double my, double s, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<double> v(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    v[2 * i] = mx + s * g(rng);
    v[2 * i + 1] = my + s * g(rng);
  }
  return v;
}

bool same_limits(const plot::Limits& a, const plot::Limits& b) {
  return a.x0 == b.x0 && a.x1 == b.x1 && a.y0 == b.y0 && a.y1 == b.y1;
}

}  // namespace

TEST_SUITE("plot") {

TEST_CASE("nice_ticks follows the 1-2-5 rule with exact decimal ticks") {
  CHECK(plot::nice_ticks(0.0, 1.0) == std::vector<double>{0.0, 0.2, 0.4, 0.6, 0.8, 1.0});
  CHECK(plot::nice_ticks(-3.0, 3.0) == std::vector<double>{-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0});
  CHECK(plot::nice_ticks(0.0, 10000.0) == std::vector<double>{0.0, 2000.0, 4000.0, 6000.0, 8000.0, 10000.0});
  CHECK(plot::nice_ticks(0.013, 0.087) == std::vector<double>{0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08});
  CHECK(plot::nice_ticks(-4.7, 12.3) == std::vector<double>{0.0, 5.0, 10.0});
  CHECK(plot::nice_ticks(-1.25, 2.25) == std::vector<double>{-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0});
  CHECK(plot::nice_ticks(-1.25, 2.25, 5) == std::vector<double>{-1.0, 0.0, 1.0, 2.0});
  CHECK(plot::nice_ticks(1.0, 1.5) == std::vector<double>{1.0, 1.1, 1.2, 1.3, 1.4, 1.5});
  CHECK(plot::nice_ticks(-0.3, 0.3, 3) == std::vector<double>{-0.2, 0.0, 0.2});
  CHECK(plot::nice_step(0.0, 1.0) == 0.2);
  CHECK(plot::nice_step(0.0, 10000.0) == 2000.0);
  CHECK(plot::nice_step(-4.7, 12.3) == 5.0);
  // Degenerate and invalid ranges.
  CHECK(plot::nice_ticks(2.5, 2.5) == std::vector<double>{2.5});
  CHECK(plot::nice_ticks(1.0, 0.0).empty());
  CHECK(plot::nice_ticks(0.0, NAN).empty());
  CHECK(plot::nice_ticks(0.0, INFINITY).empty());
  CHECK(plot::nice_ticks(0.0, 1.0, 0).empty());
  CHECK(plot::nice_step(2.5, 2.5) == 0.0);
  // Never more ticks than asked for, always inside the range.
  for (double hi : {0.37, 1.0, 9.99, 123.4, 5e5}) {
    for (int m = 2; m <= 10; ++m) {
      const auto t = plot::nice_ticks(-0.1 * hi, hi, m);
      CHECK(int(t.size()) <= m);
      CHECK(t.size() >= 1);
      for (double v : t) CHECK((v >= -0.1 * hi - 1e-12 && v <= hi + 1e-12));
    }
  }
}

TEST_CASE("log_ticks: decades, strided decades, and 1-2-5 inside one decade") {
  CHECK(plot::log_ticks(1e-3, 1e2) == std::vector<double>{1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0});
  CHECK(plot::log_ticks(0.05, 0.8) == std::vector<double>{0.05, 0.1, 0.2, 0.5});
  CHECK(plot::log_ticks(1e-10, 1e10) == std::vector<double>{1e-9, 1e-6, 1e-3, 1.0, 1e3, 1e6, 1e9});
  CHECK(plot::log_ticks(1e-10, 1e10, 5) == std::vector<double>{1e-10, 1e-5, 1.0, 1e5, 1e10});
  CHECK(plot::log_ticks(0.0, 1.0).empty());
  CHECK(plot::log_ticks(2.0, 1.0).empty());
}

TEST_CASE("format_tick gives just enough decimals and no negative zero") {
  CHECK(plot::format_tick(0.6, 0.2) == "0.6");
  CHECK(plot::format_tick(0.25, 0.05) == "0.25");
  CHECK(plot::format_tick(3.0, 1.0) == "3");
  CHECK(plot::format_tick(2000.0, 1000.0) == "2000");
  CHECK(plot::format_tick(-1.5, 0.5) == "-1.5");
  CHECK(plot::format_tick(-1e-17, 0.2) == "0");
  CHECK(plot::format_tick(-0.0, 1.0) == "0");
  CHECK(plot::format_tick(2e6, 1e6) == "2e6");
  CHECK(plot::format_tick(1.5e6, 5e5) == "1.5e6");
  CHECK(plot::format_tick(5e-5, 1e-5) == "5e-5");
}

TEST_CASE("robust_limits ignore a few outliers and non-finite values") {
  std::vector<double> xy = gaussian_points(2000, 1.0, -2.0, 0.5, 7);
  xy.insert(xy.end(), {1e6, -1e6, NAN, INFINITY, 3.0, NAN});
  const plot::Limits l = plot::robust_limits(xy);
  CHECK(l.x0 < -0.2);
  CHECK(l.x0 > -1.0);
  CHECK(l.x1 > 2.2);
  CHECK(l.x1 < 3.0);
  CHECK(l.y0 < -3.2);
  CHECK(l.y0 > -4.0);
  CHECK(l.y1 > -0.8);
  CHECK(l.y1 < 0.0);
  // Degenerate and empty sets.
  const plot::Limits same = plot::robust_limits(std::vector<double>{2.0, 3.0, 2.0, 3.0});
  CHECK(same.x0 == doctest::Approx(1.5));
  CHECK(same.x1 == doctest::Approx(2.5));
  const plot::Limits none = plot::robust_limits(std::vector<double>{});
  CHECK(none.x0 == -1.0);
  CHECK(none.y1 == 1.0);
  CHECK_THROWS_AS(plot::robust_limits(std::vector<double>{1.0, 2.0, 3.0}), std::invalid_argument);
}

TEST_CASE("viridis runs from dark purple to yellow with rising lightness") {
  const plot::Rgb lo = plot::viridis(0.0), hi = plot::viridis(1.0);
  CHECK(lo.r == doctest::Approx(0.267004));
  CHECK(lo.g == doctest::Approx(0.004874));
  CHECK(lo.b == doctest::Approx(0.329415));
  CHECK(hi.r == doctest::Approx(0.993248));
  CHECK(hi.g == doctest::Approx(0.906157));
  CHECK(hi.b == doctest::Approx(0.143936));
  CHECK(plot::viridis(-3.0).r == lo.r);
  CHECK(plot::viridis(7.0).g == hi.g);
  CHECK(plot::viridis(NAN).b == lo.b);
  double prev = -1.0;
  for (int k = 0; k <= 100; ++k) {
    const plot::Rgb c = plot::viridis(k / 100.0);
    const double lum = 0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b;
    CHECK(lum > prev);
    prev = lum;
  }
}

TEST_CASE("square_limits widens the shorter side about its centre") {
  const plot::Limits wide = plot::square_limits({-3.0, 3.0, 0.0, 2.0});
  CHECK(wide.x0 == -3.0);
  CHECK(wide.x1 == 3.0);
  CHECK(wide.y0 == -2.0);
  CHECK(wide.y1 == 4.0);
  const plot::Limits tall = plot::square_limits({0.0, 1.0, -2.0, 2.0});
  CHECK(tall.x0 == -1.5);
  CHECK(tall.x1 == 2.5);
  CHECK(tall.y0 == -2.0);
  CHECK(tall.y1 == 2.0);
}

TEST_CASE("cell_centers split the range into equal cells") {
  CHECK(plot::cell_centers(0.0, 4.0, 4) == std::vector<double>{0.5, 1.5, 2.5, 3.5});
  CHECK(plot::cell_centers(-1.0, 1.0, 1) == std::vector<double>{0.0});
}

TEST_CASE("scatter_compare writes two same-limit panels with blue and orange dots") {
  TempDir dir;
  const auto target = gaussian_points(3000, 0.0, 0.0, 1.0, 1);
  auto model = gaussian_points(3000, 0.5, 0.0, 1.2, 2);
  model.insert(model.end(), {500.0, -800.0});  // an outlier must not squash the picture
  const std::string path = dir.file("scatter.png");
  const plot::FigureInfo info = plot::scatter_compare(path, target, model);
  REQUIRE(fs::exists(path));
  Image img(path);
  REQUIRE(img.ok());
  CHECK(img.width() == 1000);
  CHECK(img.height() == 500);
  CHECK(info.width == 1000);
  CHECK(info.height == 500);
  REQUIRE(info.axes.size() == 2);
  CHECK(same_limits(info.axes[0].limits, info.axes[1].limits));
  CHECK(info.axes[0].limits.x1 < 10.0);  // robust: the outlier is clipped away
  CHECK(info.axes[0].width == doctest::Approx(info.axes[0].height));
  CHECK(img.count(0, 0, 1000, 500, non_white) > 20000);
  CHECK(img.count(0, 0, 500, 500, bluish) > 5000);
  CHECK(img.count(500, 0, 1000, 500, orangish) > 5000);
  CHECK(img.count(0, 0, 500, 500, orangish) == 0);
  CHECK(img.count(500, 0, 1000, 500, bluish) == 0);

  // Explicit limits are used as given; pointer form; empty sets are fine.
  const plot::Limits lim{-2.0, 2.0, -1.0, 3.0};
  const auto info2 = plot::scatter_compare(dir.file("scatter2.png"), target.data(), 3000, nullptr, 0, "a", "b", lim);
  CHECK(same_limits(info2.axes[1].limits, lim));
  CHECK_NOTHROW(plot::scatter_compare(dir.file("empty.png"), std::vector<double>{}, std::vector<double>{}));

  // Auto-limits follow the target: a model with 10% of its samples far away
  // does not shrink the picture.
  auto diverged = gaussian_points(1000, 0.0, 0.0, 1.0, 5);
  for (std::size_t i = 0; i < 100; ++i) diverged[2 * i] = 1e5;
  const auto info3 = plot::scatter_compare(dir.file("diverged.png"), target, diverged);
  CHECK(info3.axes[1].limits.x1 < 10.0);
}

TEST_CASE("density_heatmap of a Gaussian: yellow at the mode, dark purple in the far corner, colour bar") {
  TempDir dir;
  const std::size_t nx = 90, ny = 60;
  const plot::Limits ext{-3.0, 3.0, -2.0, 2.0};
  const double mx = 0.8, my = -0.5;
  const auto xc = plot::cell_centers(ext.x0, ext.x1, nx);
  const auto yc = plot::cell_centers(ext.y0, ext.y1, ny);
  std::vector<double> logp(nx * ny);
  for (std::size_t j = 0; j < ny; ++j)
    for (std::size_t i = 0; i < nx; ++i)
      logp[j * nx + i] = -0.5 * ((xc[i] - mx) * (xc[i] - mx) + (yc[j] - my) * (yc[j] - my)) / 0.36;
  plot::HeatmapOptions opt;
  opt.colorbar_label = "log density";
  const std::string path = dir.file("heat.png");
  const plot::FigureInfo info = plot::density_heatmap(path, logp, ny, nx, ext, "Gaussian", opt);
  Image img(path);
  REQUIRE(img.ok());
  CHECK(img.width() == 600);
  CHECK(img.height() == 500);
  REQUIRE(info.axes.size() == 2);
  const plot::AxesInfo& a = info.axes[0];
  CHECK(a.width / a.height == doctest::Approx(1.5).epsilon(0.01));  // extent's aspect kept

  // The mode's pixel is the top of viridis; the brightest pixel of the map is there.
  const auto [px, py] = a.to_pixel(mx, my);
  CHECK(yellowish(img.at(int(px), int(py))));
  double best = -1.0;
  int bx = 0, by = 0;
  for (int y = int(a.top) + 2; y < int(a.top + a.height) - 2; ++y)
    for (int x = int(a.left) + 2; x < int(a.left + a.width) - 2; ++x) {
      const Pixel p = img.at(x, y);
      const double lum = 0.2126 * p.r + 0.7152 * p.g + 0.0722 * p.b;
      if (lum > best) {
        best = lum;
        bx = x;
        by = y;
      }
    }
  CHECK(std::hypot(bx - px, by - py) < 12.0);
  // The corner farthest from the mode is the bottom of the map.
  CHECK(dark_purple(img.at(int(a.left) + 3, int(a.top) + 3)));
  // The colour bar: yellow at its top, dark purple at its bottom.
  const plot::AxesInfo& cb = info.axes[1];
  CHECK(cb.left > a.left + a.width);
  CHECK(yellowish(img.at(int(cb.left + cb.width / 2), int(cb.top) + 2)));
  CHECK(dark_purple(img.at(int(cb.left + cb.width / 2), int(cb.top + cb.height) - 2)));
  CHECK(cb.limits.y1 == *std::max_element(logp.begin(), logp.end()));  // default vmax: the largest value
  CHECK(cb.limits.y0 > *std::min_element(logp.begin(), logp.end()));   // default vmin: the 1st percentile

  // Overlay points, flat cells, NaN/Inf cells and explicit colour limits all draw.
  opt.points = gaussian_points(300, 0.0, 0.0, 1.0, 3);
  opt.smooth = false;
  opt.vmin = -10.0;
  opt.vmax = 0.0;
  logp[0] = NAN;
  logp[1] = -INFINITY;
  logp[2] = INFINITY;
  CHECK_NOTHROW(plot::density_heatmap(dir.file("heat2.png"), logp, ny, nx, ext, "with points", opt));
  // Constant grid: no division by zero.
  CHECK_NOTHROW(plot::density_heatmap(dir.file("flat.png"), std::vector<double>(4, 1.0), 2, 2, ext, "flat"));
}

TEST_CASE("trajectories draw paths with dark start points and red end points") {
  TempDir dir;
  const std::size_t side = 12, N = side * side, K = 6;
  plot::Trajectories t{std::vector<double>((K + 1) * N * 2), K + 1, N};
  for (std::size_t s = 0; s <= K; ++s)
    for (std::size_t i = 0; i < N; ++i) {
      const double z0 = -2.0 + 4.0 * double(i % side) / double(side - 1);
      const double z1 = -2.0 + 4.0 * double(i / side) / double(side - 1);
      const double f = double(s) / double(K);
      const double a = 1.2 * std::sin(3.14159 * f);  // a swirl that undoes itself
      const double x = z0 * (1.0 - 0.5 * f), y = z1 * (1.0 - 0.5 * f);
      t.xy[(s * N + i) * 2] = std::cos(a) * x - std::sin(a) * y;
      t.xy[(s * N + i) * 2 + 1] = std::sin(a) * x + std::cos(a) * y;
    }
  plot::TrajectoryOptions opt;
  opt.title = "paths";
  opt.background = gaussian_points(1000, 0.0, 0.0, 0.7, 4);
  const std::string path = dir.file("traj.png");
  const plot::FigureInfo info = plot::trajectories(path, t, opt);
  Image img(path);
  REQUIRE(img.ok());
  CHECK(img.width() == 500);
  CHECK(img.height() == 500);
  REQUIRE(info.axes.size() == 1);
  const plot::AxesInfo& a = info.axes[0];
  CHECK(img.count(0, 0, 500, 500, non_white) > 15000);
  CHECK(img.count(0, 0, 500, 500, reddish) > 300);
  CHECK(img.count(0, 0, 500, 500, darkish) > 300);
  // A start point's pixel is dark, an end point's pixel is red.
  const auto [sx, sy] = a.to_pixel(t.xy[0], t.xy[1]);
  CHECK(darkish(img.at(int(std::floor(sx)), int(std::floor(sy)))));
  const std::size_t last = K * N * 2;
  const auto [ex, ey] = a.to_pixel(t.xy[last], t.xy[last + 1]);
  CHECK(reddish(img.at(int(std::floor(ex)), int(std::floor(ey)))));

  // Flat-vector form, step colouring.
  opt.color = plot::PathColor::Step;
  CHECK_NOTHROW(plot::trajectories(dir.file("traj_step.png"), t.xy, K + 1, N, opt));

  // Two panels, each on axes that fit its own paths (the second's reach 10× farther), even
  // with different numbers of states; explicit limits apply to both.
  plot::Trajectories straight{std::vector<double>(2 * N * 2), 2, N};
  for (std::size_t i = 0; i < N; ++i)
    for (int d = 0; d < 2; ++d) {
      straight.xy[i * 2 + std::size_t(d)] = t.xy[i * 2 + std::size_t(d)];
      straight.xy[(N + i) * 2 + std::size_t(d)] = t.xy[(K * N + i) * 2 + std::size_t(d)];
    }
  plot::Trajectories far = t;
  for (double& v : far.xy) v *= 10.0;
  opt.background.clear();
  const std::string cpath = dir.file("traj_cmp.png");
  const auto cinfo = plot::trajectories_compare(cpath, straight, far, "with", "without", opt);
  Image cimg(cpath);
  REQUIRE(cimg.ok());
  CHECK(cimg.width() == 1000);
  CHECK(cimg.height() == 500);
  REQUIRE(cinfo.axes.size() == 2);
  const plot::Limits la = cinfo.axes[0].limits, lb = cinfo.axes[1].limits;
  CHECK((lb.x1 - lb.x0) > 5.0 * (la.x1 - la.x0));
  for (std::size_t k = 0; k < straight.xy.size() / 2; ++k) {
    CHECK(straight.xy[2 * k] >= la.x0);
    CHECK(straight.xy[2 * k] <= la.x1);
  }
  plot::TrajectoryOptions shared = opt;
  shared.limits = plot::Limits{-30, 30, -30, 30};
  const auto sinfo = plot::trajectories_compare(dir.file("traj_cmp2.png"), straight, far, "a", "b", shared);
  CHECK(same_limits(sinfo.axes[0].limits, sinfo.axes[1].limits));
  CHECK(cimg.count(0, 0, 500, 500, reddish) > 300);
  CHECK(cimg.count(500, 0, 1000, 500, reddish) > 300);

  // A single state (no lines) and no points are fine.
  CHECK_NOTHROW(plot::trajectories(dir.file("one.png"), std::vector<double>{0.0, 1.0}, 1, 1));
  CHECK_NOTHROW(plot::trajectories(dir.file("none.png"), std::vector<double>{}, 3, 0));
}

TEST_CASE("map_compare: the learned map's dots land at F(x), the reference's rings at T*(x), sizes checked") {
  TempDir dir;
  // Base points on a 5×5 grid; the learned map shifts right by 3, the reference shifts up by 3.
  std::vector<double> base, model, ref;
  for (int a = 0; a < 5; ++a)
    for (int b = 0; b < 5; ++b) {
      base.insert(base.end(), {double(a), double(b)});
      model.insert(model.end(), {a + 3.0, double(b)});
      ref.insert(ref.end(), {double(a), b + 3.0});
    }
  model[0] = NAN;  // skipped, not drawn
  const std::string path = dir.file("map.png");
  const plot::Limits lim{-1.0, 9.0, -1.0, 9.0};
  const auto info = plot::map_compare(path, base, model, ref, "F against T*", "F(x)", "T*(x)", {}, lim);
  Image img(path);
  REQUIRE(img.ok());
  CHECK(img.width() == 500);
  CHECK(img.height() == 500);
  REQUIRE(info.axes.size() == 1);
  const auto& ax = info.axes[0];
  // A red dot at F(x) for a point off the reference's paths: x = (4, 4), F(x) = (7, 4).
  const auto [fx, fy] = ax.to_pixel(7.0, 4.0);
  CHECK(reddish(img.at(int(std::floor(fx)), int(std::floor(fy)))));
  // Greenish ring pixels around T*(x) = (0, 7) (top-left, away from every F(x)).
  const auto [tx, ty] = ax.to_pixel(0.0, 7.0);
  const auto greenish = [](Pixel p) { return p.g > p.r + 30 && p.g > p.b + 10; };
  CHECK(img.count(int(tx) - 6, int(ty) - 6, int(tx) + 7, int(ty) + 7, greenish) > 10);
  // Nothing red near (8, 0): no point maps there.
  const auto [ex, ey] = ax.to_pixel(8.5, 0.0);
  CHECK(img.count(int(ex) - 4, int(ey) - 4, int(ex) + 5, int(ey) + 5, reddish) == 0);

  std::vector<double> short_ref(ref.begin(), ref.end() - 2);
  CHECK_THROWS_AS(plot::map_compare(dir.file("bad.png"), base, model, short_ref, "t"), std::invalid_argument);
  CHECK_THROWS_AS(plot::map_compare(dir.file("bad.png"), std::vector<double>(3), std::vector<double>(3),
                                    std::vector<double>(3), "t"),
                  std::invalid_argument);
  CHECK_FALSE(fs::exists(dir.file("bad.png")));
}

TEST_CASE("curves and curve_panels: legend colours, NaN/Inf and empty series, sizes") {
  TempDir dir;
  std::vector<double> it, loss, val_it, val;
  for (int k = 0; k < 500; ++k) {
    it.push_back(10.0 * k);
    loss.push_back(k < 2 ? 1e3 : 2.0 * std::exp(-k / 80.0) + 1.0);  // an early spike
    if (k % 25 == 0) {
      val_it.push_back(10.0 * k);
      val.push_back(2.0 * std::exp(-k / 80.0) + 1.1);
    }
  }
  loss[100] = NAN;
  loss[101] = INFINITY;
  loss[102] = -INFINITY;
  const std::string path = dir.file("curves.png");
  const auto info = plot::curves(path, {{"train", it, loss}, {"validation", val_it, val}, {"nothing", {}, {}}},
                                 "iteration", "loss", "training");
  Image img(path);
  REQUIRE(img.ok());
  CHECK(img.width() == 700);
  CHECK(img.height() == 450);
  REQUIRE(info.axes.size() == 1);
  CHECK(info.axes[0].limits.y1 < 10.0);  // robust: the spike does not flatten the curve
  CHECK(info.axes[0].limits.x0 == 0.0);
  CHECK(info.axes[0].limits.x1 == 4990.0);
  CHECK(img.count(0, 0, 700, 450, bluish) > 500);
  CHECK(img.count(0, 0, 700, 450, orangish) > 200);

  // Log axis, with non-positive values skipped; all-negative values fall back to linear.
  std::vector<double> tr;
  for (int k = 0; k < 500; ++k) tr.push_back(k == 7 ? -1.0 : 0.8 * std::exp(-k / 100.0) + 1e-3);
  const auto linfo = plot::curves(dir.file("log.png"), {{"transport", {}, tr}}, "step", "T", "log", true);
  CHECK(linfo.axes[0].log_y);
  CHECK(linfo.axes[0].limits.y0 > 0.0);
  const auto finfo = plot::curves(dir.file("neg.png"), {{"nll", {}, {-1.0, -2.0, -3.0}}}, "step", "NLL", "", true);
  CHECK_FALSE(finfo.axes[0].log_y);
  // Nothing to draw at all.
  CHECK_NOTHROW(plot::curves(dir.file("empty.png"), {}, "x", "y", "empty"));
  CHECK_NOTHROW(plot::curves(dir.file("nan.png"), {{"nan", {}, {NAN, NAN}}}, "x", "y", "nan"));

  // Stacked panels share the x range.
  const std::string ppath = dir.file("panels.png");
  const auto pinfo = plot::curve_panels(ppath,
                                        {{{{"loss", it, loss}}, "loss", "", false, std::nullopt},
                                         {{{"NLL", it, loss}}, "NLL", "", false, std::nullopt},
                                         {{{"transport", {}, tr}}, "transport", "", true, std::nullopt}},
                                        "iteration");
  Image pimg(ppath);
  REQUIRE(pimg.ok());
  CHECK(pimg.width() == 700);
  CHECK(pimg.height() == 70 + 240 * 3);
  REQUIRE(pinfo.axes.size() == 3);
  CHECK(pinfo.axes[0].limits.x0 == pinfo.axes[2].limits.x0);
  CHECK(pinfo.axes[0].limits.x1 == pinfo.axes[2].limits.x1);
  CHECK(pinfo.axes[0].top < pinfo.axes[1].top);
  CHECK(pinfo.axes[1].top < pinfo.axes[2].top);
  const auto tinfo = plot::curve_panels(dir.file("panels_t.png"),
                                        {{{{"loss", it, loss}}, "loss", "", false, std::pair<double, double>{0.5, 4.0}}},
                                        "iteration", "title");
  CHECK(tinfo.height == 70 + 240 + 24);
  CHECK(tinfo.axes[0].limits.y0 == 0.5);
  CHECK(tinfo.axes[0].limits.y1 == 4.0);
}

TEST_CASE("bad sizes and ranges throw std::invalid_argument") {
  TempDir dir;
  const std::string p = dir.file("bad.png");
  const std::vector<double> odd{1.0, 2.0, 3.0}, pts{0.0, 0.0, 1.0, 1.0};
  CHECK_THROWS_AS(plot::scatter_compare(p, odd, pts), std::invalid_argument);
  CHECK_THROWS_AS(plot::scatter_compare(p, pts, odd), std::invalid_argument);
  CHECK_THROWS_AS(plot::scatter_compare(p, nullptr, 3, pts.data(), 2), std::invalid_argument);
  CHECK_THROWS_AS(plot::scatter_compare(p, pts, pts, "a", "b", plot::Limits{1.0, 0.0, 0.0, 1.0}),
                  std::invalid_argument);
  CHECK_THROWS_AS(plot::scatter_compare(p, pts, pts, "a", "b", plot::Limits{0.0, NAN, 0.0, 1.0}),
                  std::invalid_argument);

  const plot::Limits ext{0.0, 1.0, 0.0, 1.0};
  CHECK_THROWS_AS(plot::density_heatmap(p, std::vector<double>(11), 3, 4, ext, "t"), std::invalid_argument);
  CHECK_THROWS_AS(plot::density_heatmap(p, std::vector<double>{}, 0, 0, ext, "t"), std::invalid_argument);
  CHECK_THROWS_AS(plot::density_heatmap(p, std::vector<double>(4), 2, 2, plot::Limits{0, 0, 0, 1}, "t"),
                  std::invalid_argument);
  plot::HeatmapOptions hb;
  hb.points = odd;
  CHECK_THROWS_AS(plot::density_heatmap(p, std::vector<double>(4), 2, 2, ext, "t", hb), std::invalid_argument);
  plot::HeatmapOptions hv;
  hv.vmin = 1.0;
  hv.vmax = 1.0;
  CHECK_THROWS_AS(plot::density_heatmap(p, std::vector<double>(4), 2, 2, ext, "t", hv), std::invalid_argument);

  // Trajectories: length must be states*points*2, with at least one state.
  CHECK_THROWS_AS(plot::trajectories(p, std::vector<double>(11), 3, 2), std::invalid_argument);
  CHECK_THROWS_AS(plot::trajectories(p, std::vector<double>(12), 2, 2), std::invalid_argument);
  CHECK_THROWS_AS(plot::trajectories(p, std::vector<double>{}, 0, 0), std::invalid_argument);
  plot::TrajectoryOptions tb;
  tb.background = odd;
  CHECK_THROWS_AS(plot::trajectories(p, std::vector<double>(12), 3, 2, tb), std::invalid_argument);
  const plot::Trajectories good{std::vector<double>(12), 3, 2};
  const plot::Trajectories bad{std::vector<double>(10), 3, 2};
  CHECK_THROWS_AS(plot::trajectories_compare(p, good, bad, "a", "b"), std::invalid_argument);
  CHECK_THROWS_AS(plot::trajectories_compare(p, bad, good, "a", "b"), std::invalid_argument);
  try {
    plot::trajectories(p, std::vector<double>(11), 3, 2);
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("expected states*points*2") != std::string::npos);
  }

  // Curves: xs and ys sizes must agree (unless xs is empty); panels must not be empty.
  CHECK_THROWS_AS(plot::curves(p, {{"s", {1.0, 2.0}, {1.0}}}, "x", "y", "t"), std::invalid_argument);
  CHECK_THROWS_AS(plot::curve_panels(p, {}, "x"), std::invalid_argument);
  CHECK_THROWS_AS(
      plot::curve_panels(p, {{{{"s", {}, {1.0}}}, "y", "", true, std::pair<double, double>{-1.0, 1.0}}}, "x"),
      std::invalid_argument);
  CHECK_FALSE(fs::exists(p));
}

TEST_CASE("an unwritable path throws std::runtime_error naming the path") {
  const std::string p = "/nonexistent-dir-for-trflow-plot-test/sub/fig.png";
  const std::vector<double> pts{0.0, 0.0, 1.0, 1.0};
  const auto names_path = [&](auto&& f) {
    try {
      f();
    } catch (const std::runtime_error& e) {
      return std::string(e.what()).find(p) != std::string::npos;
    }
    return false;
  };
  CHECK(names_path([&] { plot::scatter_compare(p, pts, pts); }));
  CHECK(names_path([&] { plot::density_heatmap(p, std::vector<double>(4, 0.0), 2, 2, {0, 1, 0, 1}, "t"); }));
  CHECK(names_path([&] { plot::trajectories(p, pts, 2, 1); }));
  CHECK(names_path([&] { plot::trajectories_compare(p, {pts, 2, 1}, {pts, 1, 2}, "a", "b"); }));
  CHECK(names_path([&] { plot::curves(p, {{"s", {}, {1.0, 2.0}}}, "x", "y", "t"); }));
  CHECK(names_path([&] { plot::curve_panels(p, {{{{"s", {}, {1.0, 2.0}}}, "y", "", false, std::nullopt}}, "x"); }));
  CHECK(names_path([&] { plot::map_compare(p, pts, pts, pts, "t"); }));
  // The OS's reason, by name (a full disk reads "No space left on device (ENOSPC)").
  try {
    plot::scatter_compare(p, pts, pts);
  } catch (const std::runtime_error& e) {
    CHECK_MESSAGE(std::string(e.what()).find("(ENOENT)") != std::string::npos, e.what());
  }
  CHECK(nn::os_error(ENOSPC).find("ENOSPC") != std::string::npos);
}

TEST_CASE("figures are replaced atomically: a failed write keeps the old PNG, no temporary is left") {
  TempDir dir;
  const std::string path = dir.file("fig.png");
  const std::vector<double> pts{0.0, 0.0, 1.0, 1.0};
  plot::scatter_compare(path, pts, pts);
  const auto size = fs::file_size(path);
  // A directory where the temporary would go makes the write fail; the PNG stays as it was.
  fs::create_directories(path + ".tmp." + std::to_string(::getpid()));
  CHECK_THROWS_AS(plot::scatter_compare(path, gaussian_points(500, 0, 0, 1, 3), pts), std::runtime_error);
  CHECK(fs::file_size(path) == size);
  Image img(path);
  CHECK(img.ok());
  fs::remove(path + ".tmp." + std::to_string(::getpid()));
  plot::scatter_compare(path, gaussian_points(500, 0, 0, 1, 3), pts);
  for (const auto& e : fs::directory_iterator(dir.path)) CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
}

}  // TEST_SUITE

#endif  // __has_include("plot/plot.hpp")
