#!/usr/bin/env bash
# The main job: install, build, then train trflow's default model (8gaussians
# with transport regularization) and write its plots and metrics to runs/default.
# Extra arguments go to `trflow train`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
exec build/apps/trflow train "$@"
