#pragma once
// A counting heap allocator for finding allocations in code that should make none (a
// steady-state training step): bench/train_bench.cpp and tests/alloc/test_alloc.cpp use it.
//
// Every heap allocation of the process is counted while `alloc_count::counting` is set: C++
// operator new (replaced below) and the C allocator (malloc, calloc, realloc, posix_memalign,
// aligned_alloc, memalign, interposed below and forwarded to glibc's __libc_* entry points),
// which is what xtensor's aligned arrays (xsimd::aligned_allocator → posix_memalign) and
// OpenBLAS use. With `trace` set (and `records` preallocated), each counted allocation also
// records its call stack; sites_report() groups them by their innermost project frames
// (symbolized with dladdr: link the executable with ENABLE_EXPORTS).
//
// This header DEFINES the global allocation functions: include it in exactly one translation
// unit of an executable, and never in a sanitizer build (ASan and UBSan interpose malloc
// themselves).
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include <cxxabi.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <unistd.h>
// Declared here, before the definitions below, as SIMD libraries include it: clang's copy
// redeclares posix_memalign without noexcept, which it refuses after a noexcept definition.
#if __has_include(<mm_malloc.h>)
#include <mm_malloc.h>
#endif

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace alloc_count {
enum Kind { cxx_new = 0, c_malloc = 1 };
inline std::atomic<bool> counting{false};
inline std::atomic<std::uint64_t> count[2], bytes[2];
inline bool abort_on_first = false;
inline bool trace = false;
inline thread_local bool in_hook = false;

constexpr int kFrames = 24;
struct Record {
  void* frames[kFrames];
  int depth;
  int kind;
};
inline Record* records = nullptr;  // preallocated only when tracing
inline std::size_t records_cap = 0;
inline std::atomic<std::size_t> records_n{0};

inline void reset() {
  for (int k = 0; k < 2; ++k) count[k] = 0, bytes[k] = 0;
}
inline std::uint64_t total() { return count[0].load() + count[1].load(); }

inline void on_alloc(std::size_t n, Kind kind) {
  if (!counting.load(std::memory_order_relaxed) || in_hook) return;
  count[kind].fetch_add(1, std::memory_order_relaxed);
  bytes[kind].fetch_add(n, std::memory_order_relaxed);
  if (abort_on_first) {
    static const char msg[] = "heap allocation inside the counting window; aborting (alloc_count::abort_on_first)\n";
    (void)!write(2, msg, sizeof msg - 1);
    std::abort();
  }
  if (trace) {
    in_hook = true;  // backtrace() may allocate
    const std::size_t i = records_n.fetch_add(1, std::memory_order_relaxed);
    if (i < records_cap) {
      records[i].depth = backtrace(records[i].frames, kFrames);
      records[i].kind = kind;
    }
    in_hook = false;
  }
}

inline void* allocate(std::size_t n) {
  on_alloc(n, cxx_new);
  if (void* p = __libc_malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
inline void* allocate_aligned(std::size_t n, std::align_val_t al) {
  on_alloc(n, cxx_new);
  const std::size_t a = std::max(static_cast<std::size_t>(al), sizeof(void*));
  if (void* p = __libc_memalign(a, n ? n : 1)) return p;
  throw std::bad_alloc();
}
}  // namespace alloc_count

extern "C" {
void* malloc(std::size_t n) noexcept {
  alloc_count::on_alloc(n, alloc_count::c_malloc);
  return __libc_malloc(n);
}
void* calloc(std::size_t k, std::size_t n) noexcept {
  alloc_count::on_alloc(k * n, alloc_count::c_malloc);
  return __libc_calloc(k, n);
}
void* realloc(void* p, std::size_t n) noexcept {
  alloc_count::on_alloc(n, alloc_count::c_malloc);
  return __libc_realloc(p, n);
}
void free(void* p) noexcept { __libc_free(p); }
int posix_memalign(void** out, std::size_t al, std::size_t n) noexcept {
  alloc_count::on_alloc(n, alloc_count::c_malloc);
  void* p = __libc_memalign(al, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
void* aligned_alloc(std::size_t al, std::size_t n) noexcept {
  alloc_count::on_alloc(n, alloc_count::c_malloc);
  return __libc_memalign(al, n);
}
void* memalign(std::size_t al, std::size_t n) noexcept {
  alloc_count::on_alloc(n, alloc_count::c_malloc);
  return __libc_memalign(al, n);
}
}

void* operator new(std::size_t n) { return alloc_count::allocate(n); }
void* operator new[](std::size_t n) { return alloc_count::allocate(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try { return alloc_count::allocate(n); } catch (...) { return nullptr; }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try { return alloc_count::allocate(n); } catch (...) { return nullptr; }
}
void* operator new(std::size_t n, std::align_val_t a) { return alloc_count::allocate_aligned(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return alloc_count::allocate_aligned(n, a); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try { return alloc_count::allocate_aligned(n, a); } catch (...) { return nullptr; }
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try { return alloc_count::allocate_aligned(n, a); } catch (...) { return nullptr; }
}
void operator delete(void* p) noexcept { __libc_free(p); }
void operator delete[](void* p) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::size_t) noexcept { __libc_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { __libc_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { __libc_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { __libc_free(p); }

namespace alloc_count {

inline std::string symbol_at(void* addr) {
  Dl_info info{};
  if (!dladdr(addr, &info) || !info.dli_sname) {
    const char* lib = info.dli_fname ? std::strrchr(info.dli_fname, '/') : nullptr;
    return std::string("?? (") + (lib ? lib + 1 : "?") + ")";
  }
  int status = 0;
  char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : info.dli_sname;
  std::free(d);
  // Drop the parameter list, keep the qualified name: "flows::Trainer<float>::step".
  int depth = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<') ++depth;
    else if (s[i] == '>') --depth;
    else if (s[i] == '(' && depth == 0 && i > 0) return s.substr(0, i);
  }
  return s;
}

inline bool is_project_frame(const std::string& s) {
  return s.rfind("ad::", 0) == 0 || s.rfind("nn::", 0) == 0 || s.rfind("flows::", 0) == 0;
}

/// The recorded stacks grouped by their innermost three project frames: one line per site,
/// "  <allocations per step>  <kind>  <frames>", most frequent first (steps: what to divide by).
inline std::string sites_report(double steps) {
  const std::size_t n = std::min(records_n.load(), records_cap);
  std::map<std::string, std::size_t> sites;
  std::map<void*, std::string> names;
  auto name = [&](void* a) -> const std::string& {
    auto it = names.find(a);
    if (it == names.end()) it = names.emplace(a, symbol_at(a)).first;
    return it->second;
  };
  for (std::size_t r = 0; r < n; ++r) {
    const auto& rec = records[r];
    std::string first_lib, chain;
    int found = 0;
    // The innermost frames are this file's hooks (on_alloc, allocate: how many of them show
    // depends on inlining and tail calls) and the allocation function itself: skipped by name.
    for (int f = 0; f < rec.depth && found < 3; ++f) {
      const std::string& s = name(rec.frames[f]);
      if (s.rfind("alloc_count::", 0) == 0 || s.rfind("operator new", 0) == 0 || s == "malloc" ||
          s == "posix_memalign" || s == "calloc" || s == "realloc" || s == "aligned_alloc" || s == "memalign")
        continue;
      if (!found && first_lib.empty() && !is_project_frame(s)) first_lib = s;  // the library call that allocated
      if (is_project_frame(s)) {
        chain += (found ? "  <-  " : "") + s;
        ++found;
      }
    }
    if (!first_lib.empty() && chain.find(first_lib) == std::string::npos) chain = "[" + first_lib + "]  " + chain;
    if (chain.empty()) chain = "(no project frame)";
    ++sites[(rec.kind == cxx_new ? "new     " : "malloc  ") + chain];
  }
  std::vector<std::pair<std::size_t, std::string>> sorted;
  for (auto& [k, v] : sites) sorted.emplace_back(v, k);
  std::sort(sorted.rbegin(), sorted.rend());
  std::string out = "allocation sites in the counting window (" + std::to_string(n) + " recorded" +
                    (records_n.load() > records_cap ? ", truncated" : "") + "), per step (kind, site):\n";
  char line[64];
  for (auto& [count, site] : sorted) {
    std::snprintf(line, sizeof line, "  %8.1f  ", double(count) / steps);
    out += line + site + "\n";
  }
  return out;
}

}  // namespace alloc_count
