#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole doctest suite through ctest.
# SANITIZE=1 builds in build-asan/ with AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SANITIZE:-0}" = 1 ]; then
  # -O1 -g1: quick to compile, still readable stack traces.
  BUILD_DIR=build-asan BUILD_TYPE=RelWithDebInfo scripts/build.sh -DTRFLOW_SANITIZE=ON \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  dir=build-asan
else
  scripts/build.sh
  dir=build
fi
# OpenBLAS's own threads fight a parallel test run.
export OPENBLAS_NUM_THREADS=1
ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" --timeout 600
