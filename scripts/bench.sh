#!/usr/bin/env bash
# trflow benchmarks against the PyTorch reference, in one command:
#
#   scripts/bench.sh                 # build (Release, -DTRFLOW_BUILD_BENCH=ON) and run everything
#   scripts/bench.sh --no-build      # reuse build-bench/
#   scripts/bench.sh --shapes "A B"  # a subset of the shapes
#   scripts/bench.sh --no-profile --no-micro
#   scripts/bench.sh --quick         # smoke test of the pipeline: tiny runs, figures meaningless;
#                                    # writes its table to <out>/RESULTS.md, not bench/RESULTS.md
#   scripts/bench.sh --out DIR       # raw results somewhere else than build-bench/bench-results
#   scripts/bench.sh --only-spline   # only the spline-coupling part (below); replaces only the spline
#                                    # section of bench/RESULTS.md; raw results in build-bench/bench-results-spline
#   scripts/bench.sh --no-spline     # everything but the spline part
#   scripts/bench.sh --spline-rounds 3 --bins 8
#   scripts/bench.sh --no-check      # skip the PyTorch-vs-trflow log-density agreement check
#
# Needs `scripts/install-deps.sh --bench` (Google Benchmark, python3-torch, python3-numpy) and
# ../shared/bench/torch_realnvp.py. It builds build-bench/ (Release plus -g, which changes no
# code), then, shape by shape, runs trflow's train_bench (1 and 2 OpenBLAS threads) interleaved
# with torch_realnvp.py (--beta 0.01, --threads 1 and 2) and bench/torch_throughput.py, so both
# sides see the same machine load, and three rounds of train_bench at 1 and 2 threads back to
# back for trflow's own 2-thread scaling (about 2 minutes); then micro_bench (Google Benchmark), the allocation-site
# trace, and a perf profile of shapes A and B (callgrind if perf cannot record). It prints one
# table and writes bench/RESULTS.md (table, date, machine, commit, profile summary); raw logs
# go to build-bench/bench-results/. Whole run: about 10-11 minutes on the 2-core dev machine when
# it is quiet (shape C and the 2-thread torch runs dominate), longer under load.
#
# Spline couplings (shapes A and B; about 7 more minutes when quiet): --spline-rounds rounds (default 3) of
# train_bench --coupling rqs --bins K --threads 1, then bench/torch_spline.py (the same flow in
# PyTorch, with trflow's tail bound) --threads 1, then torch_spline.py --no-polish (closed-form
# inverse without the Newton step), all with OPENBLAS_NUM_THREADS=1; medians over the rounds; then
# the spline op alone (micro_bench rq_spline/*, torch_spline.py --op-bench) and the allocation
# sites of the spline flow. The agreement check then trains two small spline models with
# build-bench/apps/trflow (8gaussians, gaussian:8; 8 layers, 300 steps) and compares torch_spline.py's log p,
# F(x) and gradients with trflow's (bench/logprob_dump), float32 and float64.
# summarize.py writes all of it as its own section of bench/RESULTS.md.
#
# Measurement hygiene: before every measurement it waits (up to $BENCH_WAIT_S seconds, default
# 15) for the 1-minute load average to drop below $BENCH_MAX_LOAD (default 1.5), and records
# the load it measured under; the table quotes medians and trflow/torch ratios.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${TRFLOW_BENCH_BUILD:-$root/build-bench}
shared=${TRFLOW_SHARED:-$root/../shared}
py=/usr/bin/python3
max_load=${BENCH_MAX_LOAD:-1.5}
wait_s=${BENCH_WAIT_S:-15}
shapes="A B C"
do_build=1 do_profile=1 do_micro=1 quick=0 out_arg=""
do_spline=1 only_spline=0 spline_rounds=3 bins=8 do_check=1

while (($#)); do
  case "$1" in
    --no-build) do_build=0 ;;
    --no-profile) do_profile=0 ;;
    --no-micro) do_micro=0 ;;
    --quick) quick=1 ;;
    --shapes) shapes=$2; shift ;;
    --out) out_arg=$2; shift ;;
    --no-spline) do_spline=0 ;;
    --only-spline) only_spline=1 ;;
    --spline-rounds) spline_rounds=$2; shift ;;
    --bins) bins=$2; shift ;;
    --no-check) do_check=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "bench.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done

realnvp=$shared/bench/torch_realnvp.py
[[ -f $realnvp ]] || { echo "bench.sh: $realnvp not found (set TRFLOW_SHARED)" >&2; exit 1; }
out=${out_arg:-$build/bench-results}
((only_spline)) && out=${out_arg:-$build/bench-results-spline}
results=$out/runs.jsonl
results_md=$root/bench/RESULTS.md
((quick)) && results_md=$out/RESULTS.md

if ((do_build)); then
  "$root/scripts/install-deps.sh" --bench
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTRFLOW_BUILD_BENCH=ON \
    -DTRFLOW_BUILD_TESTS=OFF -DCMAKE_CXX_FLAGS=-g >/dev/null
  cmake --build "$build" --target train_bench micro_bench logprob_dump trflow
fi
tb=$build/bench/train_bench
mb=$build/bench/micro_bench
[[ -x $tb && -x $mb ]] || { echo "bench.sh: $tb or $mb missing (build first)" >&2; exit 1; }

mkdir -p "$out"
: >"$results"
start_time=$(date +%s)

load1() { cut -d' ' -f1 /proc/loadavg; }
# Waits until the 1-minute load is below $max_load, at most $wait_s seconds; echoes the load.
quiet() {
  local waited=0
  while awk -v l="$(load1)" -v m="$max_load" 'BEGIN { exit !(l >= m) }' && ((waited < wait_s)); do
    sleep 5
    waited=$((waited + 5))
  done
  load1
}
# Appends one JSON result line, tagged with the load it ran under.
record() {  # record LOAD JSON
  $py -c 'import json,sys; j=json.loads(sys.argv[2]); j["load_before"]=float(sys.argv[1]); print(json.dumps(j))' "$1" "$2" >>"$results"
}

# Per-shape settings (shape C is ~100x the work of A: fewer steps). trflow: steps per timed
# repetition, repetitions, allocation window; torch_realnvp.py: steps of its whole-run average;
# torch_throughput.py (1 thread): warm-started training reps, and samples per timed pass.
declare -A tb_args=([A]="--steps 40 --reps 5" [B]="--steps 20 --reps 5"
                    [C]="--steps 2 --reps 3 --alloc-window 3:4 --eval-n 4096")
# trflow's 1- vs 2-thread pairs (below): steps x reps per run, rounds of pairs.
declare -A scaling_args=([A]="--steps 40 --reps 5" [B]="--steps 40 --reps 5"
                         [C]="--steps 3 --reps 3 --warmup-steps 3 --alloc-window 2:3")
scaling_rounds=3
declare -A torch_steps=([A]=150 [B]=100 [C]=6)
declare -A tt_args=([A]="--train-steps 20 --train-warmup 10 --reps 3" [B]="--train-steps 10 --train-warmup 5 --reps 3"
                    [C]="--train-steps 2 --train-warmup 1 --reps 3 --n 4096")
declare -A tt_n=([A]="" [B]="" [C]="--n 4096")
declare -A torch_limit=([A]=90 [B]=90 [C]=240)  # seconds per torch process
if ((quick)); then
  tb_args=([A]="--steps 2 --reps 1 --eval-n 1024" [B]="--steps 2 --reps 1 --eval-n 1024"
           [C]="--steps 1 --reps 1 --alloc-window 2:2 --eval-n 1024")
  torch_steps=([A]=3 [B]=3 [C]=1)
  scaling_args=([A]="--steps 2 --reps 1" [B]="--steps 2 --reps 1" [C]="--steps 1 --reps 1 --warmup-steps 2 --alloc-window 2:2")
  scaling_rounds=1
  tt_args=([A]="--train-steps 1 --train-warmup 1 --reps 1 --n 1024" [B]="--train-steps 1 --train-warmup 1 --reps 1 --n 1024"
           [C]="--train-steps 1 --train-warmup 0 --reps 1 --n 1024")
  tt_n=([A]="--n 1024 --reps 1" [B]="--n 1024 --reps 1" [C]="--n 1024 --reps 1")
  wait_s=0
  torch_limit=([A]=60 [B]=60 [C]=120)
fi
declare -A torch_data=([A]="" [B]="$out/gaussian16.npy" [C]="$out/gaussian64.npy")
# Spline couplings: trflow train_bench steps x reps; torch_spline.py steps x reps after warm-up.
declare -A rqs_tb_args=([A]="--steps 40 --reps 5" [B]="--steps 20 --reps 5" [C]="--steps 2 --reps 3 --alloc-window 3:4 --eval-n 4096")
declare -A rqs_torch_args=([A]="--steps 20 --reps 5 --warmup 10" [B]="--steps 10 --reps 5 --warmup 5"
                           [C]="--steps 2 --reps 3 --warmup 1 --test-n 4096")
if ((quick)); then
  rqs_tb_args=([A]="--steps 2 --reps 1 --eval-n 1024" [B]="--steps 2 --reps 1 --eval-n 1024"
               [C]="--steps 1 --reps 1 --alloc-window 2:2 --eval-n 1024")
  rqs_torch_args=([A]="--steps 2 --reps 1 --warmup 1 --test-n 1024" [B]="--steps 2 --reps 1 --warmup 1 --test-n 1024"
                  [C]="--steps 1 --reps 1 --warmup 0 --test-n 1024")
  spline_rounds=1
fi
spline_py=$root/bench/torch_spline.py
ensure_data() {  # ensure_data SHAPE: trflow's own rows of gaussian:D for the torch side
  local f=${torch_data[$1]}
  if [[ -n $f && ! -f $f ]]; then "$tb" --shape "$1" --write-data "$f" --n 100000 2>/dev/null; fi
}

# Passes the JSON line through, or stands in for a run that timeout(1) killed.
timed_out() {  # timed_out SHAPE THREADS
  local line
  line=$(tail -1)
  if [[ $line == \{* ]]; then echo "$line"
  else echo "{\"config\": \"$1\", \"threads\": $2, \"timed_out\": true, \"limit_s\": ${torch_limit[$1]:-120}}"; fi
}
tag() {  # tag KEY VALUE: adds "KEY": "VALUE" to the JSON object on stdin (last line)
  tail -1 | $py -c 'import json,sys; j=json.loads(sys.stdin.read()); j[sys.argv[1]]=sys.argv[2]; print(json.dumps(j))' "$1" "$2"
}

main_shapes=$shapes
((only_spline)) && main_shapes=""
for s in $main_shapes; do
  # Data parity: the torch side trains on rows drawn from trflow's own gaussian:D.
  ensure_data "$s"
  data_flag=()
  [[ -n ${torch_data[$s]} ]] && data_flag=(--data "${torch_data[$s]}")
  for t in 1 2; do
    l=$(quiet); echo "[bench] shape $s, $t thread(s): trflow train_bench (load $l)" >&2
    record "$l" "$("$tb" --shape "$s" --threads "$t" ${tb_args[$s]} 2>>"$out/train_bench.log" | tag kind train)"
    # PyTorch's OpenMP threads spin-wait: on a loaded 2-core machine a 2-thread run can be 10x
    # slower than a 1-thread run. A time limit keeps the whole script bounded.
    l=$(quiet); echo "[bench] shape $s, $t thread(s): torch_realnvp.py (load $l)" >&2
    # OPENBLAS_NUM_THREADS=t: torch.set_num_threads does not limit the OpenBLAS that PyTorch's
    # GEMMs run in (its worker thread computes and spin-waits beside a "1-thread" run otherwise).
    record "$l" "$(OPENBLAS_NUM_THREADS=$t timeout "${torch_limit[$s]}" $py "$realnvp" --config "$s" --beta 0.01 --threads "$t" \
      --steps "${torch_steps[$s]}" "${data_flag[@]}" | timed_out "$s" "$t" | tag impl torch | tag kind train)"
    l=$(quiet); echo "[bench] shape $s, $t thread(s): torch_throughput.py (load $l)" >&2
    train_flags=(${tt_n[$s]})
    ((t == 1)) && train_flags=(${tt_args[$s]} "${data_flag[@]}")
    record "$l" "$(OPENBLAS_NUM_THREADS=$t timeout "${torch_limit[$s]}" $py "$root/bench/torch_throughput.py" --config "$s" --threads "$t" \
      --realnvp "$realnvp" "${train_flags[@]}" | timed_out "$s" "$t" | tag impl torch | tag kind throughput)"
  done
  # trflow's own scaling, side by side: 1 and 2 threads alternating, one pair per round (the
  # runs above are minutes apart, with the torch runs between them, and this VM's speed drifts
  # by several per cent in that time; within a pair it moves less). The table quotes the median
  # of the pairs' ratios.
  for ((round = 1; round <= scaling_rounds; ++round)); do
    for t in 1 2; do
      l=$(quiet); echo "[bench] shape $s, scaling round $round, $t thread(s): trflow train_bench --no-eval (load $l)" >&2
      record "$l" "$("$tb" --shape "$s" --threads "$t" --no-eval ${scaling_args[$s]} 2>>"$out/train_bench.log" |
        tag kind train | tag variant scaling | tag round "$round")"
    done
  done
  if grep -qw avx512f /proc/cpuinfo; then
    # The same trflow run with OpenBLAS's AVX-512 kernels forced (see micro_bench below).
    l=$(quiet); echo "[bench] shape $s, 1 thread: trflow train_bench, OPENBLAS_CORETYPE=SkylakeX (load $l)" >&2
    record "$l" "$(OPENBLAS_CORETYPE=SkylakeX "$tb" --shape "$s" --threads 1 ${tb_args[$s]} 2>>"$out/train_bench.log" |
      tag kind train | tag variant skylakex)"
  fi
done

spline_shapes=""
if ((do_spline || only_spline)); then
  for s in $shapes; do [[ $s == C ]] || spline_shapes+="$s "; done  # C: pass --shapes C --only-spline explicitly
  [[ $shapes == C ]] && spline_shapes=C
fi
for ((round = 1; round <= spline_rounds; ++round)); do
  for s in $spline_shapes; do
    ensure_data "$s"
    data_flag=()
    [[ -n ${torch_data[$s]} ]] && data_flag=(--data "${torch_data[$s]}")
    l=$(quiet); echo "[bench] spline round $round, shape $s, 1 thread: trflow train_bench --coupling rqs (load $l)" >&2
    line=$(OPENBLAS_NUM_THREADS=1 "$tb" --shape "$s" --threads 1 --coupling rqs --bins "$bins" ${rqs_tb_args[$s]} \
      2>>"$out/train_bench_rqs.log" | tag kind train | tag round "$round")
    record "$l" "$line"
    bound=$($py -c 'import json,sys; print(json.loads(sys.argv[1])["tail_bound"])' "$line") || bound=0  # 0: torch picks
    for variant in polish no_polish; do
      vflag=()
      [[ $variant == no_polish ]] && vflag=(--no-polish)
      l=$(quiet); echo "[bench] spline round $round, shape $s, 1 thread: torch_spline.py ${vflag[*]} (load $l)" >&2
      record "$l" "$(OPENBLAS_NUM_THREADS=1 timeout "${torch_limit[$s]}" $py "$spline_py" --config "$s" --threads 1 \
        --bins "$bins" --tail-bound "$bound" --realnvp "$realnvp" ${rqs_torch_args[$s]} "${vflag[@]}" "${data_flag[@]}" |
        timed_out "$s" 1 | tag impl torch | tag kind train | tag coupling rqs | tag round "$round")"
    done
  done
done
if [[ -n $spline_shapes ]]; then
  l=$(quiet); echo "[bench] torch_spline.py --op-bench (load $l)" >&2
  opt=(--op-bench --threads 1 --bins "$bins")
  record "$l" "$(OPENBLAS_NUM_THREADS=1 timeout 120 $py "$spline_py" "${opt[@]}" | timed_out op 1 | tag kind op)"
  TRFLOW_BENCH_ALLOC_TRACE=1 "$tb" --shape A --coupling rqs --bins "$bins" --steps 2 --reps 1 --no-eval >/dev/null \
    2>"$out/alloc_sites_rqs.txt" || true
  cli=$build/apps/trflow
  if ((do_check)) && [[ -x $cli && -x $build/bench/logprob_dump ]]; then
    check_steps=300 check_n=8192
    ((quick)) && check_steps=20 check_n=1024
    for spec in 8gaussians gaussian:8; do
      name=${spec//:/}
      echo "[bench] agreement check: trflow train --data $spec --coupling rqs, torch_spline.py --check-logprob" >&2
      "$cli" train --data "$spec" --coupling rqs --bins "$bins" --layers 8 --steps "$check_steps" --out "$out/check_$name" \
        --force --no-plots --quiet >/dev/null 2>&1 || { echo "[bench] trflow train failed ($spec)" >&2; continue; }
      rm -f "$out/check_$name/points.npy"
      line=$(OPENBLAS_NUM_THREADS=1 $py "$spline_py" --trflow-model "$out/check_$name" --check-n "$check_n" \
        --check-logprob "$out/check_$name/points.npy" --logprob-dump "$build/bench/logprob_dump" 2>/dev/null |
        tail -1 | tag label "$spec") || true
      if [[ $line == \{* ]]; then record "$(load1)" "$line"; else echo "[bench] agreement check failed ($spec)" >&2; fi
    done
  elif ((do_check)); then
    echo "[bench] agreement check skipped: build $cli and $build/bench/logprob_dump first" >&2
  fi
  if ((only_spline)); then
    l=$(quiet); echo "[bench] micro_bench rq_spline (load $l)" >&2
    mt=0.2
    ((quick)) && mt=0.01
    "$mb" --benchmark_min_time=$mt --benchmark_filter='rq_spline' --benchmark_out="$out/micro.json" \
      --benchmark_out_format=json >"$out/micro.txt" 2>&1 || echo "[bench] micro_bench failed (see $out/micro.txt)" >&2
  fi
fi
if ((only_spline)); then
  $py "$root/bench/summarize.py" --results "$results" --out-dir "$out" --markdown "$results_md" \
    --elapsed "$(($(date +%s) - start_time))" --spline-only
  exit 0
fi

if ((do_micro)); then
  l=$(quiet); echo "[bench] micro_bench (load $l)" >&2
  mt=0.2
  ((quick)) && mt=0.01
  "$mb" --benchmark_min_time=$mt --benchmark_out="$out/micro.json" --benchmark_out_format=json \
    >"$out/micro.txt" 2>&1 || echo "[bench] micro_bench failed (see $out/micro.txt)" >&2
  if grep -qw avx512f /proc/cpuinfo; then
    # OpenBLAS 0.3.21 may not know this CPU and fall back to its AVX2 (Haswell) kernels;
    # the AVX-512 (SkylakeX) sgemm kernels, forced, for comparison.
    echo "[bench] micro_bench sgemm with OPENBLAS_CORETYPE=SkylakeX" >&2
    OPENBLAS_CORETYPE=SkylakeX "$mb" --benchmark_min_time=$mt --benchmark_filter='sgemm|linear_tanh|coupling|fma' \
      --benchmark_out="$out/micro_skylakex.json" --benchmark_out_format=json >"$out/micro_skylakex.txt" 2>&1 || true
  fi
fi

# Where the steady-state heap allocations come from (shape A; cheap).
TRFLOW_BENCH_ALLOC_TRACE=1 "$tb" --shape A --steps 2 --reps 1 --no-eval >/dev/null 2>"$out/alloc_sites.txt" || true

if ((do_profile)); then
  # perf with DWARF call graphs (no frame pointers in OpenBLAS): flat self-time report plus
  # bench/perf_phases.py's attribution to the phases of a step. Short warm-up, 40 timed steps.
  for s in A B; do
    [[ $shapes == *$s* ]] || continue
    l=$(quiet); echo "[bench] profiling shape $s, 1 thread (load $l)" >&2
    psteps=40
    ((quick)) && psteps=2
    prof_args=(--shape "$s" --threads 1 --alloc-window 2:3 --warmup-steps 5 --steps $psteps --reps 1 --no-eval)
    if /usr/bin/perf record -q -F 999 --call-graph dwarf,16384 -o "$out/perf_$s.data" -- "$tb" "${prof_args[@]}" \
         >/dev/null 2>"$out/perf_$s.log"; then
      /usr/bin/perf report -i "$out/perf_$s.data" --stdio --no-children --sort dso,symbol -g none --percent-limit 0.2 \
        2>/dev/null >"$out/perf_$s.txt" || true
      /usr/bin/perf script -i "$out/perf_$s.data" -F pid,tid,ip,sym,dso 2>/dev/null | $py "$root/bench/perf_phases.py" \
        >"$out/perf_${s}_phases.json" || true
      rm -f "$out/perf_$s.data"
    else
      echo "[bench] perf record failed (see $out/perf_$s.log); using callgrind on a short run" >&2
      valgrind --tool=callgrind --callgrind-out-file="$out/callgrind_$s.out" "$tb" --shape "$s" --threads 1 \
        --alloc-window 2:3 --warmup-steps 3 --steps 3 --reps 1 --no-eval >/dev/null 2>"$out/callgrind_$s.log" || true
      callgrind_annotate "$out/callgrind_$s.out" 2>/dev/null | head -60 >"$out/callgrind_$s.txt" || true
    fi
  done
fi

$py "$root/bench/summarize.py" --results "$results" --out-dir "$out" --markdown "$results_md" \
  --elapsed "$(($(date +%s) - start_time))"
