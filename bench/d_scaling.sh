#!/usr/bin/env bash
# Cost in the dimension: `trflow train --data gaussian:D` with the default flow (4 spline
# couplings, 64×2 conditioners, batch 512, β = 0.01) for D = 16 … 1024, one thread:
# training steps/s (the loop alone, from result.json), peak RSS of the whole process, and
# each step's GEMM flops, so that time per step can be compared with the flop count.
#
#   bench/d_scaling.sh [OUT]      (default OUT: build/d-scaling; about 2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/d-scaling}
[ -x build/apps/trflow ] || scripts/build.sh
mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1
echo "| D | steps | steps/s | ms/step | GEMM GFLOP/step | GFLOP/s | ms per GFLOP | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|"
for d in 16 32 64 128 256 512 1024; do
  steps=$(( 16384 / d < 10 ? 10 : 16384 / d ))
  /usr/bin/time -f "%M" -o "$out/rss-$d" build/apps/trflow train --data "gaussian:$d" --steps "$steps" --val-fraction 0 \
    --eval-n 256 --log-every 1000000 --checkpoint-every 1000000 --no-plots --quiet --force --threads 1 \
    --out "$out/run-$d" >"$out/result-$d.json"
  /usr/bin/python3 - "$d" "$steps" "$out" <<'PY'
import json, math, sys
d, steps, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
r = json.loads(open(f"{out}/result-{d}.json").read().strip().splitlines()[-1])
rss = int(open(f"{out}/rss-{d}").read().split()[-1]) / 1024
# GEMM flops of a step: per coupling the conditioner b → 64 → 64 → 23·a (a = ⌈d/2⌉, b = d − a),
# forward 2·B·(b·h + h·h + h·out), backward twice that; 4 couplings; two passes (NLL and the
# transport pass of base samples through F).
B, h, a = 512, 64, math.ceil(d / 2)
b, o = max(1, d - a), 23 * a
gflop = 3 * 2 * B * (b * h + h * h + h * o) * 4 * 2 / 1e9
sps = r["steps_per_s"]
print(f"| {d} | {steps} | {sps:.2f} | {1e3 / sps:.1f} | {gflop:.3f} | {gflop * sps:.1f} | {1e3 / sps / gflop:.1f} | {rss:.0f} |")
PY
done
