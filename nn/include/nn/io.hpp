#pragma once
// Files: numpy's .npy and .npz formats (what np.save / np.savez write and
// np.load reads), atomic file replacement, and whole-file reads.
//
// .npy (NEP 1): the magic "\x93NUMPY", a version (1.0 written; 1.0, 2.0, 3.0
// read), a little-endian header length, a Python dict literal
//   {'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }
// padded with spaces and a '\n' so the data start on a 64-byte boundary, then
// the elements in C (row-major) order.
// .npz: a ZIP archive with one NAME.npy entry per array. We write stored
// (uncompressed) entries, as np.savez does; np.savez_compressed's deflated
// entries are reported as unsupported.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nn {

/// A malformed or unsupported file. what() is the whole sentence
///   "<file>: <where>: expected <expected>"
/// e.g. "model.npz: byte offset 123: expected a .npy magic string '\x93NUMPY'"
/// or   "data.csv: line 7: expected a number in column 3, got 'abc'".
struct FormatError : std::runtime_error {
  FormatError(std::string file, std::string where, std::string expected);
  std::string file;      ///< the file (for an .npz member: "model.npz (entry 'w.npy')")
  std::string where;     ///< "line 7", "byte offset 123", ...
  std::string expected;  ///< what the reader expected to find
};

/// Element types we write. uint8 is for byte blobs (e.g. JSON text), read back
/// with np.load(...)[name].tobytes().
enum class Dtype { float32, float64, uint8 };

/// One array read from a .npy file or an .npz entry. Every element type we read
/// ('<f4', '<f8', '|u1', '<i4', '<i8') is converted to double (64-bit integers
/// beyond 2^53 are rounded).
struct NpyArray {
  std::string name;                ///< the .npz entry name without ".npy"; empty for a .npy file
  std::string descr;               ///< the element type as the file states it, e.g. "<f4"
  std::vector<std::size_t> shape;  ///< empty for a 0-d array (one element)
  std::vector<double> data;        ///< Π shape elements, C order
};

/// The bytes of a .npy file (version 1.0, header laid out exactly as numpy
/// 1.24 lays it out) holding data[0 .. Π shape) in C order, stored as `dtype`.
/// Converting to float32 rounds; to uint8 requires integers in [0, 255]
/// (std::invalid_argument otherwise).
std::string encode_npy(const double* data, const std::vector<std::size_t>& shape, Dtype dtype = Dtype::float64);
std::string encode_npy(const float* data, const std::vector<std::size_t>& shape, Dtype dtype = Dtype::float32);
/// As above for bytes, stored as uint8 ('|u1').
std::string encode_npy(const std::uint8_t* data, const std::vector<std::size_t>& shape);

/// Parses the bytes of a .npy file. Every length and offset is checked; a
/// malformed, truncated or unsupported file (big-endian, Fortran order, other
/// dtypes, trailing bytes) raises FormatError naming file_for_errors and the
/// byte offset.
NpyArray parse_npy(std::string_view bytes, const std::string& file_for_errors);

/// read_file(path) then parse_npy.
NpyArray read_npy(const std::string& path);

/// Writes an .npz archive (atomically, see write_file_atomic): one stored
/// entry NAME.npy per (NAME, bytes of a .npy file) pair, with CRC-32, local
/// headers, central directory and end record, so that np.load(path)[NAME]
/// works. Names must be non-empty and distinct (std::invalid_argument).
void write_npz(const std::string& path, const std::vector<std::pair<std::string, std::string>>& name_to_npy_bytes);

/// Reads every entry of an .npz archive, in archive order, names without
/// ".npy". Offsets, sizes and CRC-32s are validated (Zip64 records are
/// understood); compressed or encrypted entries and non-.npy entries raise
/// FormatError.
std::vector<NpyArray> read_npz(const std::string& path);

/// read_npz on the bytes of an archive already in memory.
std::vector<NpyArray> parse_npz(std::string_view bytes, const std::string& file_for_errors);

/// Replaces the file at `path` by `bytes` so that a reader sees either the old
/// or the new content, never a mix: write to path + ".tmp.<pid>" in the same
/// directory, fsync, rename over path, fsync the directory. The old file is
/// never truncated. On failure the temporary is removed and
/// std::runtime_error names the path and the system's reason.
void write_file_atomic(const std::string& path, std::string_view bytes);
/// The same for content given as consecutive pieces (written one after another, never joined
/// in memory: write_npz passes each array's bytes where they are).
void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces);

/// The system's text for errno value `err`, with the symbolic name for the usual file errors:
/// "No space left on device (ENOSPC)".
std::string os_error(int err);

/// The whole content of a regular file; std::runtime_error naming the path and
/// the system's reason when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace nn
