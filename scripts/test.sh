#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole doctest suite through ctest.
# SANITIZE=1 builds in build-asan/ with AddressSanitizer + UndefinedBehaviorSanitizer;
# CLANG=1 builds in build-clang/ with clang 14 instead of GCC.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SANITIZE:-0}" = 1 ]; then
  # -O1 -g1: quick to compile, still readable stack traces.
  BUILD_DIR=build-asan BUILD_TYPE=RelWithDebInfo scripts/build.sh -DTRFLOW_SANITIZE=ON \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  dir=build-asan
elif [ "${CLANG:-0}" = 1 ]; then
  CC=clang CXX=clang++ BUILD_DIR=build-clang scripts/build.sh
  dir=build-clang
else
  scripts/build.sh
  dir=build
fi
# OpenBLAS's own threads fight a parallel test run.
export OPENBLAS_NUM_THREADS=1
# One line to start, ctest's summary at the end; every test's line and the output of the
# failing ones are in $dir/test.log, printed when a test fails (VERBOSE=1: as they run).
count=$(ctest --test-dir "$dir" -N 2>/dev/null | sed -n 's/^Total Tests: //p')
echo "trflow: testing: ${count:-the} tests on $(nproc) jobs (log: $dir/test.log)" >&2
if [ "${VERBOSE:-0}" = 1 ]; then
  ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" --timeout 600 2>&1 | tee "$dir/test.log"
  exit "${PIPESTATUS[0]}"
fi
if ! ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" --timeout 600 >"$dir/test.log" 2>&1; then
  cat "$dir/test.log"
  echo "trflow: tests failed (log: $dir/test.log)" >&2
  exit 1
fi
grep -E "tests passed|Total Test time" "$dir/test.log"
