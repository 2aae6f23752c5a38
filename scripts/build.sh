#!/usr/bin/env bash
# Configures and builds trflow in build/ (Release, tuned for this CPU).
# Extra arguments go to CMake, e.g. -DTRFLOW_NATIVE=OFF for a portable build.
# One line per stage; the full logs are BUILD_DIR/configure.log and BUILD_DIR/build.log,
# printed only when a stage fails. VERBOSE=1 shows everything as it happens.
# CXX=clang++ (with CC=clang) builds with clang 14, installing it if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${CXX:-}" in
  clang*) scripts/install-deps.sh --clang ;;
  *) scripts/install-deps.sh ;;
esac
BUILD_DIR=${BUILD_DIR:-build}
# WERROR=1 (CI's Release build): warnings are errors.
werror=(-DTRFLOW_WERROR=OFF)
[ "${WERROR:-0}" = 1 ] && werror=(-DTRFLOW_WERROR=ON)
mkdir -p "$BUILD_DIR"

# stage NAME LOG COMMAND...: runs the command into LOG; on failure prints LOG and stops.
stage() {
  local name=$1 log=$2
  shift 2
  if [ "${VERBOSE:-0}" = 1 ]; then
    "$@" 2>&1 | tee "$log"
    return "${PIPESTATUS[0]}"
  fi
  if ! "$@" >"$log" 2>&1; then
    echo "trflow: $name failed; its log ($log):" >&2
    cat "$log" >&2
    exit 1
  fi
}

echo "trflow: configuring $BUILD_DIR (log: $BUILD_DIR/configure.log)" >&2
stage "configuring" "$BUILD_DIR/configure.log" \
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "${werror[@]}" "$@"
echo "trflow: building in $BUILD_DIR with $(nproc) jobs (log: $BUILD_DIR/build.log)" >&2
stage "building" "$BUILD_DIR/build.log" cmake --build "$BUILD_DIR" -j "$(nproc)"
# ninja numbers its steps [k/N]; the last line's N is how many it ran.
built=$(sed -n 's/^\[[0-9]*\/\([0-9]*\)\].*/\1/p' "$BUILD_DIR/build.log" | tail -1)
echo "trflow: built ${built:-0} targets" >&2
if grep -q "warning:" "$BUILD_DIR/build.log"; then
  echo "trflow: the build printed $(grep -c 'warning:' "$BUILD_DIR/build.log") warning(s); see $BUILD_DIR/build.log" >&2
fi
