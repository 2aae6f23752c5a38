#pragma once
// The entry points the libFuzzer targets (tests/fuzz/fuzz_*.cpp) drive, shared
// with tests/test_fuzz_regressions.cpp, which replays every saved input in the
// normal test build. See docs/fuzzing.md.
//
// Each run_* function feeds the bytes to the loaders. A loader may accept the
// input or reject it with one of the *expected* exceptions:
//   nn::FormatError (a std::runtime_error), std::invalid_argument (ad::ShapeError
//   included), any other std::runtime_error, nlohmann::json::exception.
// Anything else -- a crash, a sanitizer report, a hang, an abort, another
// exception escaping (std::bad_alloc, std::length_error, std::out_of_range, ...)
// or a broken invariant (std::logic_error thrown by FUZZ_INVARIANT) -- is a bug.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>
#include <zlib.h>

#include <nlohmann/json.hpp>

#include "flows/checkpoint.hpp"
#include "flows/datasets.hpp"
#include "nn/io.hpp"

namespace trflow_fuzz {

/// A broken invariant is a bug: an exception type no caller expects.
#define FUZZ_INVARIANT(cond)                                                                          \
  do {                                                                                                \
    if (!(cond)) throw std::logic_error(std::string("fuzz invariant broken: ") + #cond + " at " + \
                                        __FILE__ + ":" + std::to_string(__LINE__));                   \
  } while (0)

/// What a loader did with one input: accepted it, or rejected it with an
/// expected exception whose what() is `error`.
struct Outcome {
  bool accepted = false;
  std::string error;
};

/// Runs f(); an expected exception becomes a rejection, everything else propagates.
template <class F>
Outcome outcome_of(F&& f) {
  Outcome o;
  try {
    f();
    o.accepted = true;
  } catch (const nlohmann::json::exception& e) {
    o.error = e.what();
  } catch (const std::invalid_argument& e) {
    o.error = e.what();
  } catch (const std::runtime_error& e) {  // nn::FormatError included
    o.error = e.what();
  }
  return o;
}

/// A per-process scratch file name: $TRFLOW_FUZZ_TMPDIR, else /dev/shm (no
/// disk traffic), else /tmp. The files are removed when the process exits normally.
inline std::string temp_path(const std::string& tag, const std::string& ext) {
  struct Scratch {
    std::set<std::string> paths;
    ~Scratch() {
      for (const std::string& p : paths) ::unlink(p.c_str());
    }
  };
  static Scratch scratch;
  std::string dir;
  if (const char* d = std::getenv("TRFLOW_FUZZ_TMPDIR"); d && *d) dir = d;
  else if (::access("/dev/shm", W_OK) == 0) dir = "/dev/shm";
  else dir = "/tmp";
  std::string path = dir + "/trflow_fuzz_" + tag + "_" + std::to_string(::getpid()) + ext;
  scratch.paths.insert(path);
  return path;
}

/// Writes bytes to path (plain fwrite: no fsync per execution).
inline void write_bytes(const std::string& path, std::string_view bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    std::perror(path.c_str());
    std::abort();  // the harness cannot run: not a finding
  }
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) std::abort();
  std::fclose(f);
}

/// Equal as stored bits, so NaN == NaN.
inline bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

inline std::size_t product(const std::vector<std::size_t>& shape) {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------- npy / npz

/// Checks what parse_npy returned and that encoding it again and parsing gives
/// the same array (for the float types encode_npy writes).
inline void check_npy_array(const nn::NpyArray& a) {
  FUZZ_INVARIANT(a.data.size() == product(a.shape));
  if (a.descr != "<f8" && a.descr != "<f4") return;
  if (a.data.size() > (1u << 16)) return;
  const std::string again =
      nn::encode_npy(a.data.data(), a.shape, a.descr == "<f8" ? nn::Dtype::float64 : nn::Dtype::float32);
  const nn::NpyArray b = nn::parse_npy(again, "round trip");
  FUZZ_INVARIANT(b.shape == a.shape && b.descr == a.descr && b.data.size() == a.data.size());
  for (std::size_t i = 0; i < a.data.size(); ++i)
    FUZZ_INVARIANT(same_bits(a.data[i], b.data[i]) || (std::isnan(a.data[i]) && std::isnan(b.data[i])));
}

/// load_matrix(path) with and without drop_nonfinite: a result is N x D with
/// N, D >= 1 and finite values; a file accepted strictly is accepted the same
/// when dropping, with nothing dropped.
inline void check_load_matrix(const std::string& path) {
  std::size_t dropped = 12345;
  xt::xtensor<double, 2> strict;
  const Outcome s = outcome_of([&] { strict = flows::load_matrix(path, false, &dropped); });
  if (s.accepted) FUZZ_INVARIANT(dropped == 0);
  xt::xtensor<double, 2> lenient;
  const Outcome l = outcome_of([&] { lenient = flows::load_matrix(path, true, &dropped); });
  if (s.accepted) {
    FUZZ_INVARIANT(l.accepted && dropped == 0 && lenient.shape() == strict.shape());
    for (std::size_t i = 0; i < strict.size(); ++i) FUZZ_INVARIANT(same_bits(strict.data()[i], lenient.data()[i]));
  }
  for (const auto* m : {s.accepted ? &strict : nullptr, l.accepted ? &lenient : nullptr}) {
    if (!m) continue;
    FUZZ_INVARIANT(m->shape()[0] >= 1 && m->shape()[1] >= 1);
    for (std::size_t i = 0; i < m->size(); ++i) FUZZ_INVARIANT(std::isfinite(m->data()[i]));
  }
}

/// fuzz_npy: parse_npy, parse_npz and read_npz on the bytes; an accepted .npy
/// also goes through load_matrix (as a .npy file).
inline void run_npy(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  nn::NpyArray npy;
  const Outcome o = outcome_of([&] { npy = nn::parse_npy(bytes, "fuzz.npy"); });
  if (o.accepted) {
    check_npy_array(npy);
    const std::string path = temp_path("npy", ".npy");
    write_bytes(path, bytes);
    check_load_matrix(path);
  }
  std::vector<nn::NpyArray> arrays;
  const Outcome z = outcome_of([&] { arrays = nn::parse_npz(bytes, "fuzz.npz"); });
  if (z.accepted)
    for (const nn::NpyArray& a : arrays) FUZZ_INVARIANT(!a.name.empty() && a.data.size() == product(a.shape));
  // read_npz = read_file + parse_npz: only worth the file write when the bytes look like a ZIP.
  if (size >= 4 && bytes.substr(0, 2) == "PK") {
    const std::string path = temp_path("npz", ".npz");
    write_bytes(path, bytes);
    const Outcome r = outcome_of([&] { arrays = nn::read_npz(path); });
    FUZZ_INVARIANT(r.accepted == z.accepted);
  }
}

// ---------------------------------------------------------------- csv

/// fuzz_csv: load_matrix on the bytes as a .csv file.
inline void run_csv(const std::uint8_t* data, std::size_t size) {
  const std::string path = temp_path("csv", ".csv");
  write_bytes(path, std::string_view(reinterpret_cast<const char*>(data), size));
  check_load_matrix(path);
}

// ---------------------------------------------------------------- model

/// The ZIP archive with every CRC-32 (central directory and local header)
/// recomputed from the entry's bytes, so that mutated entries get past the CRC
/// check to the .npy and JSON parsers. Best effort on malformed archives:
/// anything that does not fit is left alone.
inline std::string fix_zip_crcs(std::string_view in) {
  std::string out(in);
  auto le = [&](std::size_t at, int n) -> std::uint64_t {
    std::uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(out[at + i]);
    return v;
  };
  auto put32 = [&](std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
  };
  auto crc32 = [](std::string_view s) {  // zlib's, as nn::write_npz uses it
    return static_cast<std::uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(s.data()), s.size()));
  };
  const std::size_t n = out.size();
  if (n < 22) return out;
  std::size_t end = std::string::npos;
  for (std::size_t i = n - 22 + 1; i-- > 0 && n - i <= 22 + 0xffff;)
    if (le(i, 4) == 0x06054b50) {
      end = i;
      break;
    }
  if (end == std::string::npos) return out;
  const std::size_t count = le(end + 10, 2), dir_offset = le(end + 16, 4);
  std::size_t p = dir_offset;
  for (std::size_t k = 0; k < count && k < 4096; ++k) {
    if (p > n || n - p < 46 || le(p, 4) != 0x02014b50) break;
    const std::size_t csize = le(p + 20, 4), name_len = le(p + 28, 2), extra_len = le(p + 30, 2),
                      comment_len = le(p + 32, 2), lo = le(p + 42, 4);
    if (lo <= n && n - lo >= 30 && le(lo, 4) == 0x04034b50) {
      const std::size_t data = lo + 30 + le(lo + 26, 2) + le(lo + 28, 2);
      if (data <= n && csize <= n - data) {
        const std::uint32_t crc = crc32(std::string_view(out).substr(data, csize));
        put32(p + 16, crc);
        put32(lo + 14, crc);
      }
    }
    p += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

/// Runs a loaded flow on a few rows, both ways: a model the loader accepts
/// must be usable (NaN/Inf results are fine, exceptions and crashes are not).
template <class T>
void exercise(flows::Flow<T>& flow) {
  const std::size_t d = flow.dim();
  if (d > 256 || flow.parameter_count() > (1u << 20)) return;
  ad::Array<T> x({3, d});
  for (std::size_t i = 0; i < x.size(); ++i) x.data()[i] = T(0.25) * T(int(i % 7) - 3);
  ad::Tape<T> tape;
  const ad::Var<T> lp = flow.log_prob(tape.constant(x));
  FUZZ_INVARIANT(lp.rows() == 3 && lp.cols() == 1);
  const flows::Mapped<T> y = flow.forward(tape.constant(x));
  FUZZ_INVARIANT(y.out.rows() == 3 && y.out.cols() == d);
  ad::Rng rng(1);
  ad::Array<T> z;
  flow.base().sample(2, rng, z);
  FUZZ_INVARIANT(z.shape()[0] == 2 && z.shape()[1] == d);
}

/// load_model and read_architecture on the bytes as an .npz file; for a small
/// model that loads, also load_checkpoint (what --resume reads: the optimizer's
/// moments and the trainer's state) and one training step from it.
inline Outcome load_model_bytes(std::string_view bytes) {
  const std::string path = temp_path("model", ".npz");
  write_bytes(path, bytes);
  flows::LoadedModel m;
  const Outcome o = outcome_of([&] { m = flows::load_model(path); });
  if (o.accepted) {
    FUZZ_INVARIANT(m.flow != nullptr);
    exercise(*m.flow);
    FUZZ_INVARIANT(outcome_of([&] { flows::read_architecture(path); }).accepted);
    if (m.flow->dim() <= 16 && m.flow->parameter_count() <= (1u << 14)) {
      flows::GaussianDataset data(m.flow->dim());
      flows::TrainConfig cfg;
      cfg.batch = 4;
      flows::Trainer<float> trainer(*m.flow, data, cfg);
      outcome_of([&] {
        flows::load_checkpoint(path, *m.flow, trainer);
        trainer.step();
      });
    }
  }
  return o;
}

/// The bytes are an architecture record {"format", "version", "flow", "meta"}:
/// Flow::from_config on its "flow" (float and double), then load_model on an
/// .npz holding the record alone, and, when from_config accepted it, the
/// record plus every parameter (zeros, the right shapes), which must load.
/// A record with a "trainer" member (not part of the format) also becomes a
/// checkpoint: that member as the "trainer" entry plus zero optimizer moments,
/// through load_checkpoint and one training step.
inline void run_architecture(std::string_view text) {
  const nlohmann::json arch = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  std::unique_ptr<flows::Flow<float>> flow;
  if (!arch.is_discarded() && arch.is_object() && arch.contains("flow")) {
    outcome_of([&] { flows::Flow<double>::from_config(arch["flow"]); });
    outcome_of([&] { flow = flows::Flow<float>::from_config(arch["flow"]); });
  }
  std::vector<std::pair<std::string, std::string>> entries;
  entries.emplace_back("architecture",
                       nn::encode_npy(reinterpret_cast<const std::uint8_t*>(text.data()), {text.size()}));
  const std::string path = temp_path("arch", ".npz");
  nn::write_npz(path, entries);
  outcome_of([&] { flows::load_model(path); });
  if (!flow || flow->parameter_count() > (1u << 20)) return;
  auto add_zeros = [&](const std::string& name, const ad::Array<float>& like) {
    const std::vector<float> zeros(like.size(), 0.0f);
    entries.emplace_back(name, nn::encode_npy(zeros.data(), {like.shape()[0], like.shape()[1]}));
  };
  for (const auto& [name, p] : flow->named_parameters()) add_zeros(name, p->value);

  const bool checkpoint = arch.contains("trainer") && flow->dim() <= 16 && flow->parameter_count() <= (1u << 14);
  flows::GaussianDataset data(checkpoint ? flow->dim() : 1);
  flows::TrainConfig cfg;
  cfg.batch = 4;
  std::unique_ptr<flows::Trainer<float>> trainer;
  if (checkpoint) {
    trainer = std::make_unique<flows::Trainer<float>>(*flow, data, cfg);
    for (const auto& [name, a] : trainer->optimizer().state()) add_zeros("optimizer." + name, *a);
    const std::string state = arch["trainer"].dump();
    entries.emplace_back("trainer", nn::encode_npy(reinterpret_cast<const std::uint8_t*>(state.data()), {state.size()}));
  }
  nn::write_npz(path, entries);
  // The record's format and version are not from_config's business: only a
  // record that passes them must load.
  const bool versioned = arch.value("format", nlohmann::json()) == "trflow-model" &&
                         arch.value("version", nlohmann::json()) == 1;
  const Outcome o = outcome_of([&] {
    flows::LoadedModel m = flows::load_model(path);
    exercise(*m.flow);
  });
  if (versioned && !o.accepted) throw std::logic_error("from_config accepted the flow, load_model did not: " + o.error);
  if (trainer)
    outcome_of([&] {
      flows::load_checkpoint(path, *flow, *trainer);
      trainer->step();
    });
}

/// fuzz_model: text starting with '{' is an architecture record
/// (run_architecture); anything else is an .npz file, loaded as it is and,
/// if that changes it, with its CRC-32s recomputed.
inline void run_model(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (!bytes.empty() && bytes[0] == '{') {
    run_architecture(bytes);
    return;
  }
  load_model_bytes(bytes);
  const std::string fixed = fix_zip_crcs(bytes);
  if (fixed != bytes) load_model_bytes(fixed);
}

}  // namespace trflow_fuzz
