#!/usr/bin/env bash
# Configures and builds trflow in build/ (Release, tuned for this CPU).
# Extra arguments go to CMake, e.g. -DTRFLOW_NATIVE=OFF for a portable build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
# WERROR=1 (CI's Release build): warnings are errors.
werror=(-DTRFLOW_WERROR=OFF)
[ "${WERROR:-0}" = 1 ] && werror=(-DTRFLOW_WERROR=ON)
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} "${werror[@]}" "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
