#!/usr/bin/env bash
# valgrind memcheck on one short training run (plus eval, sample and plot), the
# data-parallel paths included (--threads 2).
# Valgrind 3.19 cannot decode AVX-512, so this uses the portable build
# (-DTRFLOW_NATIVE=OFF, plain x86-64) in build-portable/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
BUILD_DIR=build-portable BUILD_TYPE=RelWithDebInfo scripts/build.sh -DTRFLOW_NATIVE=OFF -DTRFLOW_BUILD_TESTS=OFF
out=$(mktemp -d)
vg="valgrind --tool=memcheck --suppressions=scripts/valgrind.supp --error-exitcode=3 --leak-check=full --errors-for-leak-kinds=definite --track-origins=yes"
export OPENBLAS_NUM_THREADS=1
$vg build-portable/apps/trflow train --steps 20 --batch 256 --layers 2 --hidden 16 --eval-n 200 --threads 2 --out "$out/m" --quiet
$vg build-portable/apps/trflow eval --model "$out/m" --n 500 --threads 2
$vg build-portable/apps/trflow sample --model "$out/m" --n 300 --threads 2 --out "$out/s.npy" --trajectories "$out/t.npy"
$vg build-portable/apps/trflow plot --model "$out/m" --n 300
rm -rf "$out"
echo "memcheck: clean"
