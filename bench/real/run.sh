#!/usr/bin/env bash
# The real-data benchmark: small data sets that Debian's python3-sklearn ships (bench/real/prepare.py),
# a fixed train/test split each; trflow trains on the training rows with its own validation split
# (--val-fraction, early stopping, best model) and is scored on the untouched test rows.
#
#   bench/real/run.sh [OUT]          # default OUT: build/real; prints and writes OUT/results.md
#
# Needs python3-sklearn and python3-numpy (apt-get install python3-sklearn) and a built trflow.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$root/build/real}
trflow=${TRFLOW:-$root/build/apps/trflow}
py=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1
mkdir -p "$out"
$py "$root/bench/real/prepare.py" --out "$out" >/dev/null
variants=("default|" "default without dropout|--dropout 0"
  "4 spline couplings, batch 512 (the large-file default)|--coupling rqs --layers 4 --batch 512"
  "4 spline couplings, half-rows batch|--coupling rqs --layers 4"
  "4 spline couplings, half-rows batch, β = 0|--coupling rqs --layers 4 --transport-weight 0"
  "8 affine couplings, half-rows batch|--coupling affine --layers 8"
  "8 affine couplings, half-rows batch, β = 0|--coupling affine --layers 8 --transport-weight 0"
  "default, β = 0|--transport-weight 0" "default, Gaussian start|--init gaussian")
{
  echo "| data | variant | test NLL | val NLL | best step | steps | seconds |"
  echo "|---|---|---|---|---|---|---|"
  for name in breast_cancer wine diabetes digits; do
    gauss=$($py -c "import json; print('%.3f' % json.load(open('$out/gaussian.json'))['$name']['gaussian_test_nll'])")
    echo "| $name | full-covariance Gaussian (fit to the training rows) | $gauss | | | | |"
    for v in "${variants[@]}"; do
      label=${v%%|*} flags=${v#*|}
      dir="$out/runs/$name/${label//[^a-z0-9]/_}"
      mkdir -p "$out/runs/$name"
      start=$(date +%s.%N)
      # shellcheck disable=SC2086
      "$trflow" train --data "$out/${name}_train.npy" --out "$dir" --no-plots --quiet --threads 1 --force $flags >"$dir.json"
      secs=$(echo "$(date +%s.%N) - $start" | bc)
      test_nll=$("$trflow" eval --model "$dir" --data "$out/${name}_test.npy" --n 20000 | $py -c "import json,sys; print('%.3f' % json.load(sys.stdin)['nll'])")
      $py - "$dir.json" "$name" "$label" "$test_nll" "$secs" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {r.get('val_nll', float('nan')):.3f} | {r.get('best_step', '')} | {r['steps']} | {float(sys.argv[5]):.0f} |")
PY
    done
    # The PyTorch yardstick: the default flow and validation procedure (bench/real/torch_yardstick.py).
    if $py -c "import torch" 2>/dev/null; then
      $py "$root/bench/real/torch_yardstick.py" --data "$out" --name "$name" | $py -c "
import json, sys
r = json.loads(sys.stdin.read())
print(f\"| $name | PyTorch yardstick (the default flow and validation, float64) | {r['test_nll']:.3f} | {r['val_nll']:.3f} | {r['best_step']} | {r['steps']} | {r['seconds']:.0f} |\")"
    fi
  done
} | tee "$out/results.md"
