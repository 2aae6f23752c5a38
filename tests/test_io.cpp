// nn/io: .npy and .npz against numpy's own bytes, malformed input, atomic writes.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>

#include <doctest/doctest.h>

#include "nn/io.hpp"

namespace fs = std::filesystem;

namespace {

// Bytes written by numpy 1.24 (np.save of the array named in the comment).
// kNumpyF8: np.array([[1.5, -2.0, 3.25]]); kNumpyF4: np.array([1, 2], 'f4');
// kNumpyU1: np.frombuffer(b'{"a": 1}', 'u1'); kNumpyScalar: np.float64(2.0);
// kNumpyI8: np.array([-3, 7]); kNumpyI4: np.array([[-5], [6]], 'i4');
// kNumpyFortran: np.asfortranarray([[1., 2.], [3., 4.]]); kNumpyBigEndian: np.array([1.], '>f8').
const char kNumpyF8[] =
    "\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1, 3), }                                                          \x0a\x00\x00\x00\x00\x00\x00\xf8\x3f\x00\x00\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x0a@";
const char kNumpyF4[] =
    "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }                                                            \x0a\x00\x00\x80\x3f\x00\x00\x00@";
const char kNumpyU1[] =
    "\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': False, 'shape': (8,), }                                                            \x0a{\x22" "a\x22: 1}";
const char kNumpyScalar[] =
    "\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (), }                                                              \x0a\x00\x00\x00\x00\x00\x00\x00@";
const char kNumpyI8[] =
    "\x93NUMPY\x01\x00v\x00{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }                                                            \x0a\xfd\xff\xff\xff\xff\xff\xff\xff\x07\x00\x00\x00\x00\x00\x00\x00";
const char kNumpyI4[] =
    "\x93NUMPY\x01\x00v\x00{'descr': '<i4', 'fortran_order': False, 'shape': (2, 1), }                                                          \x0a\xfb\xff\xff\xff\x06\x00\x00\x00";
const char kNumpyFortran[] =
    "\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }                                                           \x0a\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x00\x00\x00\x00\x00\x08@\x00\x00\x00\x00\x00\x00\x00@\x00\x00\x00\x00\x00\x00\x10@";
const char kNumpyBigEndian[] =
    "\x93NUMPY\x01\x00v\x00{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }                                                            \x0a\x3f\xf0\x00\x00\x00\x00\x00\x00";

template <std::size_t N>
std::string bytes(const char (&s)[N]) {
  return std::string(s, N - 1);
}

/// A fresh, empty directory under the system temporary directory.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() / ("trflow_io_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

/// The message of the nn::FormatError that f throws (fails the test if it throws nothing else).
template <class F>
std::string format_error(F&& f) {
  try {
    f();
  } catch (const nn::FormatError& e) {
    return e.what();
  }
  FAIL("expected nn::FormatError");
  return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("encode_npy writes exactly the bytes numpy writes") {
  const double f8[] = {1.5, -2.0, 3.25};
  CHECK(nn::encode_npy(f8, {1, 3}) == bytes(kNumpyF8));
  const float f4[] = {1.0f, 2.0f};
  CHECK(nn::encode_npy(f4, {2}) == bytes(kNumpyF4));
  const double f4_from_double[] = {1.0, 2.0};
  CHECK(nn::encode_npy(f4_from_double, {2}, nn::Dtype::float32) == bytes(kNumpyF4));
  const std::string json = "{\"a\": 1}";
  CHECK(nn::encode_npy(reinterpret_cast<const std::uint8_t*>(json.data()), {json.size()}) == bytes(kNumpyU1));
  const double scalar = 2.0;
  CHECK(nn::encode_npy(&scalar, {}) == bytes(kNumpyScalar));
  // Every header ends on a 64-byte boundary with '\n'.
  const std::string e = nn::encode_npy(f8, {1, 3});
  CHECK((e.size() - 3 * 8) % 64 == 0);
  CHECK(e[e.size() - 3 * 8 - 1] == '\n');
}

TEST_CASE("encode_npy rejects uint8 values that are not bytes") {
  const double bad[] = {1.0, 256.0};
  CHECK_THROWS_AS(nn::encode_npy(bad, {2}, nn::Dtype::uint8), std::invalid_argument);
  const double frac[] = {1.5};
  CHECK_THROWS_AS(nn::encode_npy(frac, {1}, nn::Dtype::uint8), std::invalid_argument);
}

TEST_CASE("parse_npy reads numpy's float, integer and byte arrays") {
  const nn::NpyArray f8 = nn::parse_npy(bytes(kNumpyF8), "f8.npy");
  CHECK(f8.descr == "<f8");
  CHECK(f8.shape == std::vector<std::size_t>{1, 3});
  CHECK(f8.data == std::vector<double>{1.5, -2.0, 3.25});
  const nn::NpyArray f4 = nn::parse_npy(bytes(kNumpyF4), "f4.npy");
  CHECK(f4.shape == std::vector<std::size_t>{2});
  CHECK(f4.data == std::vector<double>{1.0, 2.0});
  const nn::NpyArray i8 = nn::parse_npy(bytes(kNumpyI8), "i8.npy");
  CHECK(i8.data == std::vector<double>{-3.0, 7.0});
  const nn::NpyArray i4 = nn::parse_npy(bytes(kNumpyI4), "i4.npy");
  CHECK(i4.shape == std::vector<std::size_t>{2, 1});
  CHECK(i4.data == std::vector<double>{-5.0, 6.0});
  const nn::NpyArray u1 = nn::parse_npy(bytes(kNumpyU1), "u1.npy");
  std::string text;
  for (double v : u1.data) text.push_back(char(v));
  CHECK(text == "{\"a\": 1}");
  const nn::NpyArray s = nn::parse_npy(bytes(kNumpyScalar), "s.npy");
  CHECK(s.shape.empty());
  CHECK(s.data == std::vector<double>{2.0});
}

TEST_CASE("npy round trip is exact for float64 and float32") {
  const std::vector<double> d = {0.0, -0.0, 1.0 / 3.0, -1e300, 4.9e-324, std::numeric_limits<double>::max(),
                                 std::numeric_limits<double>::infinity(), 123456789.123456789};
  const nn::NpyArray a = nn::parse_npy(nn::encode_npy(d.data(), {2, 4}), "a.npy");
  CHECK(a.shape == std::vector<std::size_t>{2, 4});
  REQUIRE(a.data.size() == d.size());
  for (std::size_t i = 0; i < d.size(); ++i) {
    CHECK(a.data[i] == d[i]);
    CHECK(std::signbit(a.data[i]) == std::signbit(d[i]));
  }
  const std::vector<float> f = {0.1f, -3.5f, 1e-45f, 3.4e38f, -0.0f, 7.0f};
  const nn::NpyArray b = nn::parse_npy(nn::encode_npy(f.data(), {3, 1, 2}), "b.npy");
  CHECK(b.descr == "<f4");
  CHECK(b.shape == std::vector<std::size_t>{3, 1, 2});
  for (std::size_t i = 0; i < f.size(); ++i) CHECK(static_cast<float>(b.data[i]) == f[i]);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(nn::parse_npy(nn::encode_npy(&nan, {1}), "n.npy").data[0]));
  const nn::NpyArray empty = nn::parse_npy(nn::encode_npy(d.data(), {0, 5}), "e.npy");
  CHECK(empty.shape == std::vector<std::size_t>{0, 5});
  CHECK(empty.data.empty());
}

TEST_CASE("parse_npy rejects Fortran order and big-endian data with a clear message") {
  const std::string fortran = format_error([] { nn::parse_npy(bytes(kNumpyFortran), "f.npy"); });
  CHECK(contains(fortran, "f.npy: byte offset 10: "));
  CHECK(contains(fortran, "fortran_order True"));
  const std::string big = format_error([] { nn::parse_npy(bytes(kNumpyBigEndian), "big.npy"); });
  CHECK(contains(big, "big.npy: byte offset 10: "));
  CHECK(contains(big, "big-endian '>f8'"));
}

TEST_CASE("parse_npy names the file and byte offset of malformed headers") {
  const std::string good = bytes(kNumpyF4);
  auto with_header = [&](const std::string& dict) {
    std::string s = good.substr(0, 8);
    s.push_back(char(dict.size() & 0xff));
    s.push_back(char(dict.size() >> 8));
    return s + dict + good.substr(128);
  };
  struct Case {
    std::string dict, offset, expected;
  };
  const Case cases[] = {
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", "", ""},  // valid control
      {"{'descr': '<f4', 'fortran_order': False, }\n", "byte offset 51", "the key 'shape' before '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}\n", "byte offset 66", "got 'x' (unknown key)"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", "byte offset 27", "got 'descr' twice"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2), }\n", "byte offset 62", "'(n,)'"},
      {"{'descr': '<f4', 'fortran_order': Nope, 'shape': (2,), }\n", "byte offset 44", "True or False"},
      {"{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }\n", "byte offset 10", "got '<f2'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }\n", "byte offset 61", "non-negative integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } x\n", "byte offset 68", "only space padding"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", "byte offset 68", "12 bytes of data for shape (3,) and dtype '<f4', found 8"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }\n", "byte offset 61",
       "fits in 64 bits"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4), }\n", "byte offset 91",
       "more than 2^64"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.dict);
    if (c.offset.empty()) {
      CHECK(nn::parse_npy(with_header(c.dict), "h.npy").data == std::vector<double>{1.0, 2.0});
      continue;
    }
    const std::string msg = format_error([&] { nn::parse_npy(with_header(c.dict), "h.npy"); });
    CHECK(contains(msg, "h.npy: " + c.offset + ": expected "));
    CHECK(contains(msg, c.expected));
  }
}

TEST_CASE("parse_npy: every truncation and every single-byte corruption is a FormatError or a valid array") {
  const std::string good = bytes(kNumpyF8);
  for (std::size_t n = 0; n < good.size(); ++n) {
    CAPTURE(n);
    const std::string msg = format_error([&] { nn::parse_npy(good.substr(0, n), "t.npy"); });
    CHECK(contains(msg, "t.npy: byte offset "));
  }
  const std::string first = format_error([&] { nn::parse_npy("PK\x03\x04", "t.npy"); });
  CHECK(contains(first, "t.npy: byte offset 0: expected a .npy magic string"));
  CHECK(contains(format_error([&] { nn::parse_npy(good + "x", "t.npy"); }), "found 25"));
  for (std::size_t i = 0; i < good.size(); ++i)
    for (int v : {0x00, 0xff, 0x20, 0x27, 0x28, 0x2c, 0x7b, 0x7d, 0x31}) {
      std::string s = good;
      s[i] = char(v);
      try {
        const nn::NpyArray a = nn::parse_npy(s, "c.npy");
        std::size_t count = 1;
        for (std::size_t d : a.shape) count *= d;
        CHECK(a.data.size() == count);
      } catch (const nn::FormatError& e) {
        CHECK(contains(e.what(), "c.npy: byte offset "));
      }
    }
}

TEST_CASE("npz round trip keeps names, order, shapes and values") {
  TempDir dir;
  const std::vector<double> w = {1.0, -2.5, 3.25, 1e-300, 0.0, 6.0};
  const std::vector<float> b = {0.5f, -0.25f};
  const std::string json = R"({"flow": {"layers": 4}})";
  nn::write_npz(dir / "m.npz", {{"layers.0.w", nn::encode_npy(w.data(), {2, 3})},
                                {"layers.0.b", nn::encode_npy(b.data(), {2})},
                                {"architecture", nn::encode_npy(reinterpret_cast<const std::uint8_t*>(json.data()),
                                                                {json.size()})}});
  const std::vector<nn::NpyArray> a = nn::read_npz(dir / "m.npz");
  REQUIRE(a.size() == 3);
  CHECK(a[0].name == "layers.0.w");
  CHECK(a[0].shape == std::vector<std::size_t>{2, 3});
  CHECK(a[0].data == w);
  CHECK(a[1].name == "layers.0.b");
  CHECK(a[1].descr == "<f4");
  CHECK(a[1].data == std::vector<double>{0.5, -0.25});
  CHECK(a[2].name == "architecture");
  std::string text;
  for (double v : a[2].data) text.push_back(char(v));
  CHECK(text == json);
  // Equal contents give byte-identical files (fixed timestamps).
  const std::string first = nn::read_file(dir / "m.npz");
  nn::write_npz(dir / "m.npz", {{"layers.0.w", nn::encode_npy(w.data(), {2, 3})},
                                {"layers.0.b", nn::encode_npy(b.data(), {2})},
                                {"architecture", nn::encode_npy(reinterpret_cast<const std::uint8_t*>(json.data()),
                                                                {json.size()})}});
  CHECK(nn::read_file(dir / "m.npz") == first);
  nn::write_npz(dir / "empty.npz", {});
  CHECK(nn::read_npz(dir / "empty.npz").empty());
  CHECK_THROWS_AS(nn::write_npz(dir / "x.npz", {{"a", first}, {"a", first}}), std::invalid_argument);
  CHECK_THROWS_AS(nn::write_npz(dir / "x.npz", {{"", first}}), std::invalid_argument);
}

TEST_CASE("read_npz reads numpy's np.savez output and reports np.savez_compressed clearly") {
  const std::string data = TRFLOW_TEST_DATA;
  // np.savez(w=[[1, 2], [3, 4.5]] f4, b=[-1, 0.5], meta=b'{"a": 1}' u1, step=int64 7); zip64 extra fields.
  const std::vector<nn::NpyArray> a = nn::read_npz(data + "/numpy_savez.npz");
  REQUIRE(a.size() == 4);
  CHECK(a[0].name == "w");
  CHECK(a[0].shape == std::vector<std::size_t>{2, 2});
  CHECK(a[0].data == std::vector<double>{1.0, 2.0, 3.0, 4.5});
  CHECK(a[1].name == "b");
  CHECK(a[1].data == std::vector<double>{-1.0, 0.5});
  CHECK(a[2].name == "meta");
  CHECK(a[2].descr == "|u1");
  CHECK(a[2].data.size() == 8);
  CHECK(a[3].name == "step");
  CHECK(a[3].shape.empty());
  CHECK(a[3].data == std::vector<double>{7.0});
  const std::string msg = format_error([&] { nn::read_npz(data + "/numpy_savez_compressed.npz"); });
  CHECK(contains(msg, "numpy_savez_compressed.npz: byte offset "));
  CHECK(contains(msg, "deflate-compressed (np.savez_compressed), which is not supported"));
}

TEST_CASE("read_npz: truncated, corrupted and non-ZIP files raise FormatError with file and offset") {
  TempDir dir;
  const std::vector<double> w = {1.0, 2.0, 3.0};
  nn::write_npz(dir / "m.npz", {{"w", nn::encode_npy(w.data(), {3})}, {"v", nn::encode_npy(w.data(), {1, 3})}});
  const std::string good = nn::read_file(dir / "m.npz");
  const std::string path = dir / "bad.npz";

  // The data CRC: change one value byte.
  std::string bad = good;
  bad[30 + 5 + 128 + 3] ^= 0x40;
  nn::write_file_atomic(path, bad);
  std::string msg = format_error([&] { nn::read_npz(path); });
  CHECK(contains(msg, path + ": byte offset 35: expected data of 'w.npy' with CRC-32"));

  nn::write_file_atomic(path, "not a zip file at all, just some text that is long enough");
  msg = format_error([&] { nn::read_npz(path); });
  CHECK(contains(msg, path + ": byte offset "));
  CHECK(contains(msg, "end-of-central-directory"));

  // In memory from here on (parse_npz is read_npz without the file).
  for (std::size_t n = 0; n < good.size(); ++n) {
    CAPTURE(n);
    CHECK(contains(format_error([&] { nn::parse_npz(good.substr(0, n), "m.npz"); }), "m.npz: byte offset "));
  }
  // Any single corrupted byte: a FormatError or (e.g. in a time stamp) the same arrays.
  std::size_t rejected = 0;
  for (std::size_t i = 0; i < good.size(); ++i) {
    bad = good;
    bad[i] = char(~bad[i]);
    try {
      const std::vector<nn::NpyArray> a = nn::parse_npz(bad, "m.npz");
      REQUIRE(a.size() == 2);
      CHECK(a[0].data == w);
    } catch (const nn::FormatError& e) {
      CHECK(contains(e.what(), "m.npz"));
      ++rejected;
    }
  }
  CHECK(rejected > good.size() * 3 / 4);
}

TEST_CASE("read_npy and read_file name the missing path") {
  TempDir dir;
  try {
    nn::read_npy(dir / "missing.npy");
    FAIL("expected an error");
  } catch (const std::runtime_error& e) {
    CHECK(contains(e.what(), dir / "missing.npy"));
    CHECK(contains(e.what(), "No such file"));
  }
  CHECK_THROWS_WITH_AS(nn::read_file(dir.path.string()), doctest::Contains("Is a directory"), std::runtime_error);
}

TEST_CASE("write_file_atomic replaces the content and leaves no temporary file") {
  TempDir dir;
  const std::string path = dir / "out.txt";
  nn::write_file_atomic(path, "first");
  nn::write_file_atomic(path, std::string("second\0with a NUL", 17));
  CHECK(nn::read_file(path) == std::string("second\0with a NUL", 17));
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir.path)) files += entry.path().filename() == "out.txt" ? 1 : 100;
  CHECK(files == 1);
}

TEST_CASE("write_file_atomic: on failure the old file is intact and no temporary is left") {
  TempDir dir;
  const std::string path = dir / "keep.txt";
  nn::write_file_atomic(path, "old content");
  // The temporary cannot be created: a directory already has its name.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  fs::create_directory(tmp);
  try {
    nn::write_file_atomic(path, "new");
    FAIL("expected an error");
  } catch (const std::runtime_error& e) {
    CHECK(contains(e.what(), "cannot write " + path + ": creating " + tmp));
  }
  CHECK(nn::read_file(path) == "old content");
  fs::remove(tmp);
  // The rename fails (the target is a non-empty directory): the temporary is removed.
  const std::string target = dir / "adir";
  fs::create_directories(target + "/inside");
  CHECK_THROWS_WITH_AS(nn::write_file_atomic(target, "x"), doctest::Contains("renaming"), std::runtime_error);
  CHECK(!fs::exists(target + ".tmp." + std::to_string(::getpid())));
  CHECK(fs::is_directory(target + "/inside"));
  // A directory that does not exist.
  CHECK_THROWS_WITH_AS(nn::write_file_atomic(dir / "no/such/dir/f.txt", "x"), doctest::Contains("No such file"),
                       std::runtime_error);
}
