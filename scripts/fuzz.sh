#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.cpp) with clang, ASan and
# UBSan, seeds them with valid files and runs each one in turn:
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 600 s; npy csv model)
#
# Self-contained: it compiles the autodiff/nn/flows sources itself into
# $FUZZ_DIR (default build-fuzz/), independent of the CMake builds. Corpora,
# crash artifacts and logs stay there; a finding is an artifact under
# $FUZZ_DIR/artifacts/<target>/ (copy it to tests/fuzz/regressions/<target>/
# once fixed, and tests/test_fuzz_regressions.cpp replays it). The fuzzers run
# one at a time under `nice -n 19`. Environment:
#   FUZZ_DIR=build-fuzz  JOBS=<make -j, default 2>  FUZZ_ARGS="extra libFuzzer flags"
#   BUILD_ONLY=1 (build and write the seeds, run nothing)
# Needs clang 14 with its libFuzzer runtime: scripts/install-deps.sh --fuzz.
# docs/fuzzing.md describes the targets and the runs done so far.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=${1:-600}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(npy csv model)
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS_PER_TARGET must be an integer, got '$seconds'" >&2; exit 2; }
for t in "${targets[@]}"; do
  [ -f "tests/fuzz/fuzz_$t.cpp" ] || { echo "fuzz.sh: no target '$t' (tests/fuzz/fuzz_$t.cpp)" >&2; exit 2; }
done

CXX=${CXX_FUZZ:-clang++}
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
  "$CXX" -x c++ -fsanitize=fuzzer,address,undefined -o /dev/null - 2>/dev/null; then
  echo "fuzz.sh: '$CXX -fsanitize=fuzzer' does not work; run scripts/install-deps.sh --fuzz (clang, libclang-rt-14-dev)" >&2
  exit 1
fi

dir=${FUZZ_DIR:-build-fuzz}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
jobs=${JOBS:-2}

# ---------------------------------------------------------------- build
# Library objects get coverage instrumentation (fuzzer-no-link) and both
# sanitizers; the targets link libFuzzer's main. make tracks header dependencies.
cat >"$dir/Makefile" <<EOF
CXX := $CXX
ROOT := $root
COMMON := -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \\
  -DXTENSOR_USE_XSIMD -DTRFLOW_TEST_DATA=\\"\$(ROOT)/tests/data\\" \\
  -I\$(ROOT)/autodiff/include -I\$(ROOT)/nn/include -I\$(ROOT)/flows/include -isystem /usr/include/x86_64-linux-gnu \\
  -Wall -Wextra -Wno-unused-parameter -MMD -MP
CXXFLAGS := \$(COMMON) -fsanitize=fuzzer-no-link
LIBS := -lopenblas -lfmt -lz -lpthread
SRCS := \$(wildcard \$(ROOT)/autodiff/src/*.cpp \$(ROOT)/nn/src/*.cpp \$(ROOT)/flows/src/*.cpp)
OBJS := \$(patsubst \$(ROOT)/%.cpp,obj/%.o,\$(SRCS))
TARGETS := \$(patsubst \$(ROOT)/tests/fuzz/%.cpp,%,\$(wildcard \$(ROOT)/tests/fuzz/fuzz_*.cpp))

all: \$(TARGETS) make_seeds
obj/%.o: \$(ROOT)/%.cpp
	@mkdir -p \$(dir \$@)
	\$(CXX) \$(CXXFLAGS) -c \$< -o \$@
obj/tests/fuzz/%.o: \$(ROOT)/tests/fuzz/%.cpp
	@mkdir -p \$(dir \$@)
	\$(CXX) \$(CXXFLAGS) -c \$< -o \$@
fuzz_%: obj/tests/fuzz/fuzz_%.o \$(OBJS)
	\$(CXX) \$(COMMON) -fsanitize=fuzzer \$^ \$(LIBS) -o \$@
make_seeds: obj/tests/fuzz/make_seeds.o \$(OBJS)
	\$(CXX) \$(COMMON) \$^ \$(LIBS) -o \$@
-include \$(shell find obj -name '*.d' 2>/dev/null)
EOF
echo "fuzz.sh: building in $dir" >&2
nice -n 19 make -s -C "$dir" -j "$jobs" "${targets[@]/#/fuzz_}" make_seeds

# ---------------------------------------------------------------- seeds
rm -rf "$dir/seeds"
"$dir/make_seeds" "$dir/seeds"
[ "${BUILD_ONLY:-0}" = 1 ] && exit 0

# ---------------------------------------------------------------- run
export OPENBLAS_NUM_THREADS=1
# The targets' scratch files (libFuzzer does not always exit through the
# destructors that remove them): a directory of our own, on tmpfs when there is one.
scratch_root=/dev/shm
[ -w "$scratch_root" ] || scratch_root=${TMPDIR:-/tmp}
export TRFLOW_FUZZ_TMPDIR
TRFLOW_FUZZ_TMPDIR=$(mktemp -d "$scratch_root/trflow-fuzz.XXXXXX")
trap 'rm -rf "$TRFLOW_FUZZ_TMPDIR"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0:handle_abort=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$dir/logs"
summary="$dir/logs/summary.txt"
printf '%-6s %8s %12s %10s %8s  %s\n' target seconds executions corpus crashes log | tee "$summary"
status=0
for t in "${targets[@]}"; do
  corpus="$dir/corpus/$t" artifacts="$dir/artifacts/$t"
  mkdir -p "$corpus" "$artifacts" "tests/fuzz/regressions/$t"
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  log="$dir/logs/$t-$(date +%Y%m%d-%H%M%S).log"
  before=$(find "$artifacts" -type f | wc -l)
  start=$(date +%s)
  # -timeout: one input over 10 s is a hang. -rss_limit_mb (and the malloc
  # limit it implies): a hostile file must not make the loader take gigabytes.
  # shellcheck disable=SC2086
  nice -n 19 "$dir/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict[@]}" ${FUZZ_ARGS:-} \
    "$corpus" "$dir/seeds/$t" "tests/fuzz/regressions/$t" >"$log" 2>&1 || status=1
  elapsed=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corp=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2)
  crashes=$(($(find "$artifacts" -type f | wc -l) - before))
  ((crashes == 0)) || status=1
  printf '%-6s %8s %12s %10s %8s  %s\n' "$t" "$elapsed" "${execs:-?}" "${corp:-?}" "$crashes" "$log" | tee -a "$summary"
done
if ((status)); then
  echo "fuzz.sh: findings: see the logs and $dir/artifacts/" >&2
fi
exit $status
