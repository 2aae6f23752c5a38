#!/usr/bin/env bash
# Cost in the dimension: `trflow train --data gaussian:D` with the default flow (4 spline
# couplings, 64×2 conditioners, batch 512, β = 0.01) for D = 16 … 1024, one thread:
# training steps/s (the loop alone, from result.json), peak RSS of the whole process, and
# each step's GEMM flops, so that time per step can be compared with the flop count.
#
#   bench/d_scaling.sh [OUT]      (default OUT: build/d-scaling; about a minute a round)
#   ROUNDS=3 bench/d_scaling.sh   sweeps D = 16 … 1024 three times, one sweep after another
#
# The table gives each D's median over the rounds; the last line, the growth from D = 16 to
# 1024 in time per GEMM flop, is taken within each round and then its median. On a shared
# VM the machine's speed drifts by several per cent within minutes, more than most code
# changes move a step, so growth figures are compared within a round, and two builds only
# in rounds that alternate between them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/d-scaling}
rounds=${ROUNDS:-1}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "d_scaling.sh: ROUNDS must be a positive integer, got '$rounds'" >&2; exit 2; }
[ -x build/apps/trflow ] || scripts/build.sh
mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1
dims=(16 32 64 128 256 512 1024)
steps_of() { echo $(( 16384 / $1 < 10 ? 10 : 16384 / $1 )); }  # ~16 k rows of training data per D
for ((r = 1; r <= rounds; r++)); do
  for d in "${dims[@]}"; do
    steps=$(steps_of "$d")
    /usr/bin/time -f "%M" -o "$out/rss-$d-$r" build/apps/trflow train --data "gaussian:$d" --steps "$steps" \
      --val-fraction 0 --eval-n 256 --log-every 1000000 --checkpoint-every 1000000 --no-plots --quiet --force \
      --threads 1 --out "$out/run-$d" >"$out/result-$d-$r.json"
  done
done
/usr/bin/python3 - "$out" "$rounds" $(for d in "${dims[@]}"; do echo "$d:$(steps_of "$d")"; done) <<'PY'
import json, math, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
steps_of = {int(d): int(s) for d, s in (a.split(":") for a in sys.argv[3:])}  # D:steps, as run above
dims = list(steps_of)

def gflop(d):
    # GEMM flops of a step: per coupling the conditioner b → 64 → 64 → 23·a (a = ⌈d/2⌉,
    # b = d − a), forward 2·B·(b·h + h·h + h·out), backward twice that; 4 couplings; two
    # passes (NLL and the transport pass of base samples through F).
    B, h, a = 512, 64, math.ceil(d / 2)
    b, o = max(1, d - a), 23 * a
    return 3 * 2 * B * (b * h + h * h + h * o) * 4 * 2 / 1e9

sps = {d: [] for d in dims}
rss = {d: 0.0 for d in dims}
for d in dims:
    for r in range(1, rounds + 1):
        lines = open(f"{out}/result-{d}-{r}.json").read().strip().splitlines()
        sps[d].append(json.loads(lines[-1])["steps_per_s"])
        rss[d] = max(rss[d], int(open(f"{out}/rss-{d}-{r}").read().split()[-1]) / 1024)

print("| D | steps | steps/s | ms/step | GEMM GFLOP/step | GFLOP/s | ms per GFLOP | peak RSS MB |")
print("|---|---|---|---|---|---|---|---|")
for d in dims:
    s, g = statistics.median(sps[d]), gflop(d)
    print(f"| {d} | {steps_of[d]} | {s:.2f} | {1e3 / s:.1f} | {g:.3f} | {g * s:.1f} | {1e3 / s / g:.1f} | {rss[d]:.0f} |")
lo, hi = dims[0], dims[-1]
growth = [(sps[lo][r] / sps[hi][r]) * (gflop(lo) / gflop(hi)) for r in range(rounds)]
each = ", ".join(f"{x:.2f}" for x in growth)
label = "median of the rounds" if rounds > 1 else "one round"
print(f"\nTime per GEMM flop, D = {lo} → {hi}: {statistics.median(growth):.2f}× ({label}: {each}; "
      f"steps/s at D = {lo}: {', '.join(f'{x:.1f}' for x in sps[lo])}; at D = {hi}: {', '.join(f'{x:.3f}' for x in sps[hi])})")
PY
