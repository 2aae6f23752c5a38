#include "nn/io.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include <fcntl.h>
#include <sys/stat.h>
#include <zlib.h>
#include <unistd.h>

#include <fmt/format.h>

namespace nn {

FormatError::FormatError(std::string file_, std::string where_, std::string expected_)
    : std::runtime_error(file_ + ": " + (where_.empty() ? "" : where_ + ": ") + "expected " + expected_),
      file(std::move(file_)),
      where(std::move(where_)),
      expected(std::move(expected_)) {}

namespace {

// ---------------------------------------------------------------- bytes

std::string at_offset(std::size_t offset) { return fmt::format("byte offset {}", offset); }

/// Little-endian loads from raw bytes (no alignment or aliasing assumptions).
std::uint64_t load_le(const char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void store_le(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

/// A printable rendering of a few bytes for error messages.
std::string shown(std::string_view s, std::size_t max = 24) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    out += (c >= 32 && c < 127 && c != '\\') ? std::string(1, char(c)) : fmt::format("\\x{:02x}", c);
  }
  if (s.size() > max) out += "...";
  return out;
}

// ---------------------------------------------------------------- .npy

constexpr std::string_view kMagic{"\x93NUMPY", 6};
constexpr std::size_t kAlign = 64;              // numpy's ARRAY_ALIGN
constexpr std::size_t kGrowthAxisDigits = 21;   // numpy's GROWTH_AXIS_MAX_DIGITS

struct DtypeInfo {
  std::string_view descr;
  std::size_t size;
  char kind;  // 'f' float, 'u' unsigned, 'i' signed
};
constexpr std::array<DtypeInfo, 5> kReadable{{
    {"<f4", 4, 'f'}, {"<f8", 8, 'f'}, {"|u1", 1, 'u'}, {"<i4", 4, 'i'}, {"<i8", 8, 'i'}}};

/// Python's repr of a tuple of ints: "()", "(3,)", "(2, 3)".
std::string shape_repr(const std::vector<std::size_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

std::size_t element_count(const std::vector<std::size_t>& shape) {
  // A zero dimension makes the array empty whatever the others are, as parse_npy reads it.
  if (std::find(shape.begin(), shape.end(), std::size_t{0}) != shape.end()) return 0;
  std::size_t n = 1;
  for (std::size_t d : shape) {
    if (d != 0 && n > std::numeric_limits<std::size_t>::max() / d)
      throw std::invalid_argument("encode_npy: the shape " + shape_repr(shape) + " has too many elements");
    n *= d;
  }
  return n;
}

/// Magic, version and the header dict padded exactly as numpy 1.24's
/// _write_array_header / _wrap_header do.
std::string npy_header(const std::vector<std::size_t>& shape, std::string_view descr) {
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr, shape_repr(shape));
  if (!shape.empty()) dict.append(kGrowthAxisDigits - std::min(kGrowthAxisDigits, std::to_string(shape[0]).size()), ' ');
  // Version 1.0 unless the padded header does not fit its 2-byte length.
  const std::size_t hlen = dict.size() + 1;
  const bool v1 = hlen + kAlign - (10 + hlen) % kAlign <= 0xffff;
  const std::size_t prefix = kMagic.size() + 2 + (v1 ? 2 : 4);
  const std::size_t pad = kAlign - (prefix + hlen) % kAlign;
  std::string out(kMagic);
  out.push_back(v1 ? 1 : 2);
  out.push_back(0);
  store_le(out, hlen + pad, v1 ? 2 : 4);
  out += dict;
  out.append(pad, ' ');
  out.push_back('\n');
  return out;
}

template <class T>
std::string encode(const T* data, const std::vector<std::size_t>& shape, Dtype dtype) {
  const std::size_t n = element_count(shape);
  const std::string_view descr = dtype == Dtype::float32 ? "<f4" : dtype == Dtype::float64 ? "<f8" : "|u1";
  std::string out = npy_header(shape, descr);
  const std::size_t size = dtype == Dtype::float32 ? 4 : dtype == Dtype::float64 ? 8 : 1;
  out.reserve(out.size() + n * size);
  for (std::size_t i = 0; i < n; ++i) {
    if (dtype == Dtype::float64) {
      const double v = static_cast<double>(data[i]);
      std::uint64_t bits;
      std::memcpy(&bits, &v, 8);
      store_le(out, bits, 8);
    } else if (dtype == Dtype::float32) {
      const float v = static_cast<float>(data[i]);
      std::uint32_t bits;
      std::memcpy(&bits, &v, 4);
      store_le(out, bits, 4);
    } else {
      const double v = static_cast<double>(data[i]);
      if (!(v >= 0 && v <= 255 && v == std::floor(v)))
        throw std::invalid_argument(fmt::format("encode_npy: element {} is {}, not an integer in [0, 255] (uint8)", i, v));
      out.push_back(static_cast<char>(static_cast<unsigned char>(v)));
    }
  }
  return out;
}

/// A strict reader of the header dict, a Python literal such as
///   {'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }
/// Errors report the absolute byte offset in the file.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, std::size_t base, const std::string& file) : s_(text), base_(base), file_(file) {}

  void parse(std::string& descr, bool& fortran, std::vector<std::size_t>& shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_ws();
    expect('{', "'{' opening the header dict");
    for (;;) {
      skip_ws();
      if (peek() == '}') break;
      const std::size_t key_at = i_;
      const std::string key = string_literal("a quoted key ('descr', 'fortran_order' or 'shape') or '}'");
      skip_ws();
      expect(':', "':' after the key '" + key + "'");
      skip_ws();
      if (key == "descr" && !have_descr) {
        if (peek() != '\'' && peek() != '"')
          fail("a string for 'descr' (structured dtypes are not supported)");
        descr = string_literal("a string for 'descr'");
        have_descr = true;
      } else if (key == "fortran_order" && !have_fortran) {
        fortran = boolean();
        have_fortran = true;
      } else if (key == "shape" && !have_shape) {
        shape = tuple();
        have_shape = true;
      } else {
        i_ = key_at;
        fail(fmt::format("one each of the keys 'descr', 'fortran_order', 'shape', got '{}' {}", key,
                         key == "descr" || key == "fortran_order" || key == "shape" ? "twice" : "(unknown key)"),
             false);
      }
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != '}') fail("',' or '}' after the value of '" + key + "'");
    }
    if (!(have_descr && have_fortran && have_shape))
      fail(fmt::format("the key '{}' before '}}'", !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape"));
    ++i_;
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
    if (i_ != s_.size()) fail("only space padding and '\\n' after the header dict");
  }

 private:
  /// Throws "expected <expected>, got <the next few bytes>" (without the "got" part when show_got is false).
  [[noreturn]] void fail(const std::string& expected, bool show_got = true) const {
    std::string got;
    if (show_got) got = i_ < s_.size() ? fmt::format(", got '{}'", shown(s_.substr(i_), 12)) : ", got the end of the header";
    throw FormatError(file_, at_offset(base_ + i_), expected + got);
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && s_[i_] == ' ') ++i_;
  }
  void expect(char c, const std::string& what) {
    if (peek() != c) fail(what);
    ++i_;
  }
  std::string string_literal(const std::string& what) {
    const char q = peek();
    if (q != '\'' && q != '"') fail(what);
    const std::size_t start = ++i_;
    while (i_ < s_.size() && s_[i_] != q) {
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '\\' || c < 32 || c >= 127) fail("a plain string without escapes");
      ++i_;
    }
    if (i_ >= s_.size()) fail("a closing quote");
    return std::string(s_.substr(start, i_++ - start));
  }
  bool boolean() {
    if (s_.substr(i_, 4) == "True") return i_ += 4, true;
    if (s_.substr(i_, 5) == "False") return i_ += 5, false;
    fail("True or False for 'fortran_order'");
  }
  std::size_t integer() {
    if (!(peek() >= '0' && peek() <= '9')) fail("a non-negative integer in 'shape'");
    std::size_t v = 0;
    const std::size_t start = i_;
    while (peek() >= '0' && peek() <= '9') {
      const std::size_t digit = static_cast<std::size_t>(peek() - '0');
      if (v > (std::numeric_limits<std::size_t>::max() - digit) / 10) i_ = start, fail("a dimension that fits in 64 bits");
      v = v * 10 + digit;
      ++i_;
    }
    return v;
  }
  std::vector<std::size_t> tuple() {
    expect('(', "a tuple '(...)' for 'shape'");
    std::vector<std::size_t> dims;
    bool trailing_comma = false;
    for (;;) {
      skip_ws();
      if (peek() == ')') break;
      dims.push_back(integer());
      skip_ws();
      trailing_comma = peek() == ',';
      if (trailing_comma) {
        ++i_;
        continue;
      }
      if (peek() != ')') fail("',' or ')' in 'shape'");
    }
    if (dims.size() == 1 && !trailing_comma) fail("a one-element tuple written '(n,)'");
    ++i_;
    return dims;
  }

  std::string_view s_;
  std::size_t base_;
  const std::string& file_;
  std::size_t i_ = 0;
};

// ---------------------------------------------------------------- ZIP

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as ZIP uses it: zlib's. A byte-wise
/// table loop written here ran at ~0.5 GB/s, zlib's crc32_z 4× faster (50 MB: 105 → 25 ms),
/// which a D = 1024 run's 51 MB of model and checkpoint files pay at every save and load.
std::uint32_t crc32(std::string_view bytes) {
  return static_cast<std::uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

constexpr std::uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50,
                        kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr std::size_t kLocalSize = 30, kCentralSize = 46, kEndSize = 22, kZip64EndSize = 56, kZip64LocatorSize = 20;
// DOS date 1980-01-01, time 00:00: fixed, so equal contents give equal files.
constexpr std::uint16_t kDosTime = 0, kDosDate = (0 << 9) | (1 << 5) | 1;

/// Bounds-checked little-endian reads from the archive.
class ZipReader {
 public:
  ZipReader(std::string_view bytes, const std::string& file) : b_(bytes), file_(file) {}
  std::uint64_t get(std::size_t offset, int size, const char* what) const {
    if (offset > b_.size() || b_.size() - offset < static_cast<std::size_t>(size))
      fail(offset, fmt::format("{} ({} bytes), got the end of the file (size {})", what, size, b_.size()));
    return load_le(b_.data() + offset, size);
  }
  [[noreturn]] void fail(std::size_t offset, const std::string& expected) const {
    throw FormatError(file_, at_offset(offset), expected);
  }
  std::string_view bytes() const { return b_; }

 private:
  std::string_view b_;
  const std::string& file_;
};

struct CentralEntry {
  std::string name;
  std::uint16_t flags = 0, method = 0;
  std::uint32_t crc = 0;
  std::uint64_t compressed = 0, size = 0, local_offset = 0;
  std::size_t at = 0;  // offset of the central record, for messages
};

}  // namespace

// ---------------------------------------------------------------- .npy API

std::string encode_npy(const double* data, const std::vector<std::size_t>& shape, Dtype dtype) {
  return encode(data, shape, dtype);
}
std::string encode_npy(const float* data, const std::vector<std::size_t>& shape, Dtype dtype) {
  return encode(data, shape, dtype);
}
std::string encode_npy(const std::uint8_t* data, const std::vector<std::size_t>& shape) {
  return encode(data, shape, Dtype::uint8);
}

NpyArray parse_npy(std::string_view bytes, const std::string& file) {
  if (bytes.size() < kMagic.size() || bytes.substr(0, kMagic.size()) != kMagic)
    throw FormatError(file, at_offset(0),
                      fmt::format("a .npy magic string '\\x93NUMPY', got '{}'", shown(bytes.substr(0, 8))));
  if (bytes.size() < 8) throw FormatError(file, at_offset(6), "a 2-byte format version, got the end of the file");
  const int major = static_cast<unsigned char>(bytes[6]), minor = static_cast<unsigned char>(bytes[7]);
  if (!(minor == 0 && (major == 1 || major == 2 || major == 3)))
    throw FormatError(file, at_offset(6), fmt::format("format version 1.0, 2.0 or 3.0, got {}.{}", major, minor));
  const int len_bytes = major == 1 ? 2 : 4;
  const std::size_t header_start = 8 + static_cast<std::size_t>(len_bytes);
  if (bytes.size() < header_start)
    throw FormatError(file, at_offset(8), fmt::format("a {}-byte header length, got the end of the file", len_bytes));
  const std::uint64_t header_len = load_le(bytes.data() + 8, len_bytes);
  if (header_len > bytes.size() - header_start)
    throw FormatError(file, at_offset(8),
                      fmt::format("a header length within the file ({} bytes remain), got {}", bytes.size() - header_start,
                                  header_len));
  const std::size_t data_start = header_start + static_cast<std::size_t>(header_len);

  std::string descr;
  bool fortran = false;
  std::vector<std::size_t> shape;
  HeaderParser(bytes.substr(header_start, header_len), header_start, file).parse(descr, fortran, shape);

  const DtypeInfo* type = nullptr;
  for (const DtypeInfo& t : kReadable)
    if (t.descr == descr) type = &t;
  if (!type) {
    if (!descr.empty() && descr[0] == '>')
      throw FormatError(file, at_offset(header_start),
                        fmt::format("little-endian data, got big-endian '{}' (convert with a.astype('<{}'))", descr,
                                    descr.substr(1)));
    throw FormatError(file, at_offset(header_start),
                      fmt::format("a dtype '<f4', '<f8', '|u1', '<i4' or '<i8', got '{}'", descr));
  }
  if (fortran)
    throw FormatError(file, at_offset(header_start),
                      "a C-ordered array, got fortran_order True (save np.ascontiguousarray(a) instead)");

  // Π shape, checked for overflow, must match the bytes that follow the header exactly.
  const std::size_t available = bytes.size() - data_start;
  std::size_t count = 1;
  bool overflow = false;
  const bool empty = std::find(shape.begin(), shape.end(), std::size_t{0}) != shape.end();
  for (std::size_t d : shape) {
    if (empty) count = 0;
    else if (count > std::numeric_limits<std::size_t>::max() / d) overflow = true;
    else count *= d;
  }
  overflow = overflow || count > std::numeric_limits<std::size_t>::max() / type->size;
  if (overflow || count * type->size != available)
    throw FormatError(file, at_offset(data_start),
                      fmt::format("{} bytes of data for shape {} and dtype '{}', found {}",
                                  overflow ? std::string("more than 2^64") : std::to_string(count * type->size),
                                  shape_repr(shape), descr, available));

  NpyArray a;
  a.descr = descr;
  a.shape = std::move(shape);
  a.data.resize(count);
  const char* p = bytes.data() + data_start;
  for (std::size_t i = 0; i < count; ++i, p += type->size) {
    const std::uint64_t bits = load_le(p, static_cast<int>(type->size));
    double v;
    if (type->kind == 'f' && type->size == 8) {
      std::memcpy(&v, &bits, 8);
    } else if (type->kind == 'f') {
      const std::uint32_t b32 = static_cast<std::uint32_t>(bits);
      float f;
      std::memcpy(&f, &b32, 4);
      v = f;
    } else if (type->kind == 'u') {
      v = static_cast<double>(bits);
    } else if (type->size == 4) {
      v = static_cast<double>(static_cast<std::int32_t>(static_cast<std::uint32_t>(bits)));
    } else {
      v = static_cast<double>(static_cast<std::int64_t>(bits));
    }
    a.data[i] = v;
  }
  return a;
}

NpyArray read_npy(const std::string& path) { return parse_npy(read_file(path), path); }

// ---------------------------------------------------------------- .npz API

void write_npz(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries) {
  // The archive goes to the file as a list of pieces (each entry's local header, its .npy bytes
  // by reference, then the central directory and end record) instead of being assembled in one
  // string: a checkpoint at D = 1024 (51 MB of arrays) peaked at 150 MB more heap when it was.
  std::vector<std::string> heads;  // local headers; the last one: central directory + end record
  heads.reserve(entries.size() + 1);
  std::string central;
  std::set<std::string> seen;
  std::size_t size = 0;  // bytes of the archive so far
  for (const auto& entry : entries) {
    const std::string& name = entry.first;
    const std::string& npy = entry.second;  // (not a structured binding: the lambda below captures it)
    const std::string file_name = name + ".npy";
    if (name.empty()) throw std::invalid_argument("write_npz " + path + ": an entry has an empty name");
    if (!seen.insert(name).second) throw std::invalid_argument("write_npz " + path + ": the name '" + name + "' is repeated");
    if (file_name.size() > 0xffff || npy.size() >= 0xffffffffu || size >= 0xffffffffu || entries.size() >= 0xffff)
      throw std::invalid_argument("write_npz " + path + ": the archive is too large for ZIP without Zip64");
    const std::uint32_t crc = crc32(npy);
    const std::size_t offset = size;
    auto common = [&](std::string& s) {  // version needed .. extra length
      store_le(s, 20, 2);                // version needed to extract: 2.0
      store_le(s, 0, 2);                 // flags
      store_le(s, 0, 2);                 // method: stored
      store_le(s, kDosTime, 2);
      store_le(s, kDosDate, 2);
      store_le(s, crc, 4);
      store_le(s, npy.size(), 4);  // compressed size
      store_le(s, npy.size(), 4);  // uncompressed size
      store_le(s, file_name.size(), 2);
      store_le(s, 0, 2);  // extra field length
    };
    std::string& head = heads.emplace_back();
    store_le(head, kLocalSig, 4);
    common(head);
    head += file_name;
    size += head.size() + npy.size();

    store_le(central, kCentralSig, 4);
    store_le(central, (3 << 8) | 20, 2);  // made by: Unix, ZIP 2.0
    common(central);
    store_le(central, 0, 2);                   // comment length
    store_le(central, 0, 2);                   // disk number
    store_le(central, 0, 2);                   // internal attributes
    store_le(central, 0100644u << 16, 4);      // external attributes: regular file rw-r--r--
    store_le(central, offset, 4);
    central += file_name;
  }
  if (size >= 0xffffffffu || central.size() >= 0xffffffffu)
    throw std::invalid_argument("write_npz " + path + ": the archive is too large for ZIP without Zip64");
  const std::size_t central_offset = size;
  std::string& tail = heads.emplace_back(std::move(central));
  const std::size_t central_size = tail.size();
  store_le(tail, kEndSig, 4);
  store_le(tail, 0, 2);  // this disk
  store_le(tail, 0, 2);  // disk with the central directory
  store_le(tail, entries.size(), 2);
  store_le(tail, entries.size(), 2);
  store_le(tail, central_size, 4);
  store_le(tail, central_offset, 4);
  store_le(tail, 0, 2);  // comment length
  std::vector<std::string_view> pieces;
  pieces.reserve(2 * entries.size() + 1);
  for (std::size_t e = 0; e < entries.size(); ++e) pieces.insert(pieces.end(), {heads[e], entries[e].second});
  pieces.push_back(tail);
  write_file_atomic(path, pieces);
}

std::vector<NpyArray> read_npz(const std::string& path) { return parse_npz(read_file(path), path); }

std::vector<NpyArray> parse_npz(std::string_view content, const std::string& path) {
  const ZipReader z(content, path);
  const std::size_t size = content.size();

  // End of central directory: the last signature whose comment reaches the end exactly.
  if (size < kEndSize) z.fail(0, fmt::format("a ZIP archive (at least {} bytes), got {} bytes", kEndSize, size));
  std::size_t end = std::string::npos;
  for (std::size_t i = size - kEndSize + 1; i-- > 0 && size - i <= kEndSize + 0xffff;)
    if (load_le(content.data() + i, 4) == kEndSig && i + kEndSize + load_le(content.data() + i + 20, 2) == size) {
      end = i;
      break;
    }
  if (end == std::string::npos)
    z.fail(size - kEndSize, "a ZIP end-of-central-directory record (an .npz written by np.savez)");
  if (z.get(end + 4, 2, "") != 0 || z.get(end + 6, 2, "") != 0)
    z.fail(end + 4, "a single-disk archive (multi-disk ZIP is not supported)");
  std::uint64_t count = z.get(end + 10, 2, "the entry count");
  std::uint64_t dir_size = z.get(end + 12, 4, "the central directory size");
  std::uint64_t dir_offset = z.get(end + 16, 4, "the central directory offset");
  std::size_t dir_limit = end;  // the central directory ends before this
  if (count == 0xffff || dir_size == 0xffffffff || dir_offset == 0xffffffff) {
    // Zip64: a locator just before the end record points at the Zip64 end record.
    if (end < kZip64LocatorSize || z.get(end - kZip64LocatorSize, 4, "") != kZip64LocatorSig)
      z.fail(end, "a Zip64 end-of-central-directory locator before the end record");
    const std::size_t loc = end - kZip64LocatorSize;
    const std::uint64_t rec = z.get(loc + 8, 8, "the Zip64 end record offset");
    if (rec > loc || loc - rec < kZip64EndSize || z.get(rec, 4, "the Zip64 end record") != kZip64EndSig)
      z.fail(loc + 8, "the offset of a Zip64 end-of-central-directory record");
    count = z.get(rec + 32, 8, "the entry count");
    dir_size = z.get(rec + 40, 8, "the central directory size");
    dir_offset = z.get(rec + 48, 8, "the central directory offset");
    dir_limit = rec;
  }
  if (dir_offset > dir_limit || dir_size > dir_limit - dir_offset)
    z.fail(end + 16, fmt::format("a central directory within the file, got offset {} and size {}", dir_offset, dir_size));
  if (count > dir_size / kCentralSize)
    z.fail(end + 10, fmt::format("at most {} entries in a {}-byte central directory, got {}", dir_size / kCentralSize,
                                 dir_size, count));

  // Central directory.
  std::vector<CentralEntry> entries;
  std::size_t p = static_cast<std::size_t>(dir_offset);
  const std::size_t dir_end = p + static_cast<std::size_t>(dir_size);
  for (std::uint64_t k = 0; k < count; ++k) {
    CentralEntry e;
    e.at = p;
    if (dir_end - p < kCentralSize || z.get(p, 4, "") != kCentralSig)
      z.fail(p, fmt::format("central directory entry {} of {}", k + 1, count));
    e.flags = static_cast<std::uint16_t>(z.get(p + 8, 2, ""));
    e.method = static_cast<std::uint16_t>(z.get(p + 10, 2, ""));
    e.crc = static_cast<std::uint32_t>(z.get(p + 16, 4, ""));
    e.compressed = z.get(p + 20, 4, "");
    e.size = z.get(p + 24, 4, "");
    const std::size_t name_len = z.get(p + 28, 2, ""), extra_len = z.get(p + 30, 2, ""), comment_len = z.get(p + 32, 2, "");
    e.local_offset = z.get(p + 42, 4, "");
    const std::size_t record = kCentralSize + name_len + extra_len + comment_len;
    if (dir_end - p < record) z.fail(p, fmt::format("central directory entry {} within the directory", k + 1));
    e.name = std::string(content.substr(p + kCentralSize, name_len));
    // Zip64 extended information (id 1): the 0xffffffff fields, in order.
    for (std::size_t x = p + kCentralSize + name_len, x_end = x + extra_len; x + 4 <= x_end;) {
      const std::uint64_t id = z.get(x, 2, ""), len = z.get(x + 2, 2, "");
      if (len > x_end - x - 4) z.fail(x, "an extra field within its entry");
      if (id == 1) {
        std::size_t f = x + 4;
        for (std::uint64_t* field : {&e.size, &e.compressed, &e.local_offset})
          if (*field == 0xffffffff) {
            if (f + 8 > x + 4 + len) z.fail(f, "a 64-bit value in the Zip64 extra field");
            *field = z.get(f, 8, "");
            f += 8;
          }
      }
      x += 4 + len;
    }
    entries.push_back(std::move(e));
    p += record;
  }

  std::vector<NpyArray> arrays;
  std::set<std::string> seen;
  for (const CentralEntry& e : entries) {
    const std::string entry_file = path + " (entry '" + shown(e.name, 200) + "')";
    if (e.flags & 1) z.fail(e.at + 8, fmt::format("an unencrypted entry, got '{}' encrypted", shown(e.name, 200)));
    if (e.method == 8)
      z.fail(e.at + 10, fmt::format("a stored (uncompressed) entry as np.savez writes, got '{}' deflate-compressed "
                                    "(np.savez_compressed), which is not supported",
                                    shown(e.name, 200)));
    if (e.method != 0)
      z.fail(e.at + 10, fmt::format("a stored (uncompressed) entry, got compression method {}", e.method));
    if (e.name.size() <= 4 || e.name.compare(e.name.size() - 4, 4, ".npy") != 0)
      z.fail(e.at + kCentralSize, fmt::format("an entry named NAME.npy, got '{}'", shown(e.name, 200)));
    if (e.compressed != e.size)
      z.fail(e.at + 20, fmt::format("equal compressed and uncompressed sizes for a stored entry, got {} and {}",
                                    e.compressed, e.size));
    // The local header repeats the name; the data follow it and its extra field.
    const std::size_t lo = static_cast<std::size_t>(std::min<std::uint64_t>(e.local_offset, size));
    if (e.local_offset > dir_offset || dir_offset - e.local_offset < kLocalSize || z.get(lo, 4, "") != kLocalSig)
      z.fail(e.at + 42, fmt::format("the offset of a local header for '{}', got {}", shown(e.name, 200), e.local_offset));
    const std::size_t name_len = z.get(lo + 26, 2, ""), extra_len = z.get(lo + 28, 2, "");
    const std::uint64_t data = lo + kLocalSize + name_len + extra_len;
    if (data > dir_offset || e.size > dir_offset - data)
      z.fail(lo, fmt::format("the data of '{}' ({} bytes) before the central directory", shown(e.name, 200), e.size));
    if (content.substr(lo + kLocalSize, name_len) != e.name)
      z.fail(lo + kLocalSize, fmt::format("the local header to repeat the name '{}'", shown(e.name, 200)));
    const std::string_view bytes = content.substr(data, e.size);
    const std::uint32_t crc = crc32(bytes);
    if (crc != e.crc)
      z.fail(data, fmt::format("data of '{}' with CRC-32 {:08x} (central directory), got {:08x}", shown(e.name, 200),
                               e.crc, crc));
    NpyArray a = parse_npy(bytes, entry_file);
    a.name = e.name.substr(0, e.name.size() - 4);
    if (!seen.insert(a.name).second) z.fail(e.at + kCentralSize, "distinct entry names, got '" + a.name + "' twice");
    arrays.push_back(std::move(a));
  }
  return arrays;
}

// ---------------------------------------------------------------- files

std::string os_error(int err) {
  const char* name = err == ENOSPC   ? "ENOSPC"
                     : err == EDQUOT ? "EDQUOT"
                     : err == EACCES ? "EACCES"
                     : err == EPERM  ? "EPERM"
                     : err == EROFS  ? "EROFS"
                     : err == EIO    ? "EIO"
                     : err == ENOENT ? "ENOENT"
                     : err == EISDIR ? "EISDIR"
                     : err == ENOTDIR ? "ENOTDIR"
                     : err == EFBIG  ? "EFBIG"
                     : nullptr;
  return name ? fmt::format("{} ({})", std::strerror(err), name) : std::string(std::strerror(err));
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, std::vector<std::string_view>{bytes});
}

void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  auto failure = [&](const char* step, int err, bool remove_tmp) {
    if (remove_tmp) ::unlink(tmp.c_str());
    return std::runtime_error(fmt::format("cannot write {}: {} {}: {}", path, step, tmp, os_error(err)));
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) throw failure("creating", errno, false);
  for (const std::string_view bytes : pieces) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        ::close(fd);
        throw failure("writing", err, true);
      }
      done += static_cast<std::size_t>(n);
    }
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw failure("syncing", err, true);
  }
  if (::close(fd) != 0) throw failure("closing", errno, true);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("cannot write {}: renaming {} over it: {}", path, tmp, os_error(err)));
  }
  // Make the rename itself durable.
  const std::size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) throw std::runtime_error(fmt::format("cannot sync the directory {} of {}: {}", dir, path, std::strerror(errno)));
  const int rc = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  if (rc != 0 && err != EINVAL)  // some file systems cannot sync directories
    throw std::runtime_error(fmt::format("cannot sync the directory {} of {}: {}", dir, path, std::strerror(err)));
}

std::string read_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer; the type check
  // below refuses it. Reads of a regular file ignore the flag.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw std::runtime_error(fmt::format("cannot open {}: {}", path, os_error(errno)));
  struct stat st {};
  const int err = ::fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
  if (err != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    const char* kind = S_ISFIFO(st.st_mode)  ? "a FIFO (named pipe)"
                       : S_ISCHR(st.st_mode) ? "a character device"
                       : S_ISBLK(st.st_mode) ? "a block device"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "not a regular file";
    throw std::runtime_error(fmt::format("cannot read {}: {}", path,
                                         err ? os_error(err) : fmt::format("expected a regular file, got {}", kind)));
  }
  std::string out;
  out.reserve(static_cast<std::size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw std::runtime_error(fmt::format("cannot read {}: {}", path, std::strerror(err)));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace nn
