#!/usr/bin/env bash
# The main job: install, build, then train trflow's default model (8gaussians
# with transport regularization) and write its plots and metrics to runs/default.
# Extra arguments go to `trflow train`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
# Rerunning the main job replaces its previous run in runs/default (trflow refuses an --out that
# holds another run unless --force); with an explicit --out or --resume the flags are left alone.
for a in "$@"; do
  case $a in --out | --out=* | --resume | --force) exec build/apps/trflow train "$@" ;; esac
done
exec build/apps/trflow train --force "$@"
