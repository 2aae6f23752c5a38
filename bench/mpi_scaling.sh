#!/usr/bin/env bash
# MPI scaling on this machine (docs/scaling.md): training steps/s at shapes B and C for
# 1 rank × 1 thread, 1 rank × 2 threads and 2 ranks × 1 thread (interleaved rounds, medians),
# the gradient allreduce's time per step and share of a step, and MPI_Allreduce's latency and
# bandwidth over message sizes (bench/allreduce_bench.cpp) for the α–β model.
#
#   bench/mpi_scaling.sh [--rounds 3] [--out DIR]      (about 6 minutes on 2 quiet cores)
#
# Uses build/apps/trflow (scripts/build.sh) and mpicxx. Raw results: DIR (default
# build/mpi-scaling/): one result.json per run, allreduce.jsonl, summary.json; then
# bench/scaling_model.py DIR/summary.json prints the α–β projections of docs/scaling.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
out=build/mpi-scaling
while (($#)); do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "mpi_scaling.sh: unknown option '$1' (expected --rounds N or --out DIR)" >&2; exit 2 ;;
  esac
done
[ -x build/apps/trflow ] || scripts/build.sh
command -v mpirun >/dev/null || { echo "mpi_scaling.sh: no mpirun; run scripts/install-deps.sh" >&2; exit 1; }
mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# --bind-to none: each rank may use either core (as a one-process run's threads do).
mpi=(mpirun --bind-to none)

mpicxx -O2 -o "$out/allreduce_bench" bench/allreduce_bench.cpp
"${mpi[@]}" -np 2 "$out/allreduce_bench" --reps 50 >"$out/allreduce.jsonl"

# The shapes of bench/train_bench.cpp: B = gaussian:16, 8 couplings 128×2, batch 1024;
# C = gaussian:64, 16 couplings 512×2, batch 2048. No validation, no figures: the loop alone.
shape_args() {
  case "$1" in
    B) echo "--data gaussian:16 --layers 8 --hidden 128 --depth 2 --batch 1024 --steps 120" ;;
    C) echo "--data gaussian:64 --layers 16 --hidden 512 --depth 2 --batch 2048 --steps 14" ;;
  esac
}
common="--val-fraction 0 --eval-n 256 --log-every 1000000 --checkpoint-every 1000000 --no-plots --quiet --force"
for r in $(seq 1 "$rounds"); do
  for shape in B C; do
    args="$(shape_args $shape) $common"
    build/apps/trflow train $args --threads 1 --out "$out/$shape-r1t1-$r" >/dev/null
    build/apps/trflow train $args --threads 2 --out "$out/$shape-r1t2-$r" >/dev/null
    "${mpi[@]}" -np 2 build/apps/trflow train $args --threads 1 --out "$out/$shape-r2t1-$r" >/dev/null
    echo "mpi_scaling.sh: round $r shape $shape done" >&2
  done
done

/usr/bin/python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys, os
out, rounds = sys.argv[1], int(sys.argv[2])
def med(shape, cfg, key):
    vals = [json.load(open(f"{out}/{shape}-{cfg}-{r}/result.json")).get(key, 0.0) for r in range(1, rounds + 1)]
    return statistics.median(vals), vals
summary = {"rounds": rounds, "shapes": {}}
print("| shape | 1 rank × 1 thread | 1 rank × 2 threads | 2 ranks × 1 thread | speed-up 2 ranks | 2 ranks / 2 threads | allreduce ms/step | allreduce share |")
print("|---|---|---|---|---|---|---|---|")
for shape in "BC":
    s11, v11 = med(shape, "r1t1", "steps_per_s")
    s12, v12 = med(shape, "r1t2", "steps_per_s")
    s21, v21 = med(shape, "r2t1", "steps_per_s")
    ar, _ = med(shape, "r2t1", "allreduce_ms_per_step")
    share, _ = med(shape, "r2t1", "allreduce_share")
    summary["shapes"][shape] = {"r1t1": v11, "r1t2": v12, "r2t1": v21, "allreduce_ms_per_step": ar, "allreduce_share": share}
    print(f"| {shape} | {s11:.3f} | {s12:.3f} | {s21:.3f} | {s21 / s11:.2f}× | {s21 / s12:.2f} | {ar:.3f} | {100 * share:.1f} % |")
rows = [json.loads(l) for l in open(f"{out}/allreduce.jsonl")]
summary["allreduce"] = rows
print("\n| bytes | median µs | GB/s |\n|---|---|---|")
for r in rows:
    print(f"| {r['bytes']} | {r['median_us']:.2f} | {r['gb_per_s']:.3f} |")
summary["params_C"] = json.load(open(f"{out}/C-r1t1-1/result.json"))["parameters"]
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
PY
