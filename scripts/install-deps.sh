#!/usr/bin/env bash
# Installs the Debian packages trflow needs to build, test and benchmark.
# Idempotent: installs only what is missing. Needs root (or sudo) on Debian 12.
set -euo pipefail

packages=(
  cmake g++ ninja-build pkg-config
  xtensor-dev libxsimd-dev libxtensor-blas-dev libopenblas-dev
  doctest-dev libfmt-dev libcli11-dev nlohmann-json3-dev libcairo2-dev zlib1g-dev
  libopenmpi-dev openmpi-bin
)
# Optional extras: `install-deps.sh --bench` adds Google Benchmark and PyTorch,
# `--clang` adds clang 14 (CI's second compiler), `--fuzz` clang with its libFuzzer runtime.
for arg in "$@"; do
  case "$arg" in
    --bench) packages+=(libbenchmark-dev python3-torch python3-numpy) ;;
    --clang) packages+=(clang) ;;
    --fuzz)  packages+=(clang libclang-rt-14-dev) ;;
    --sanitize) packages+=(libclang-rt-14-dev) ;;
    *) echo "install-deps.sh: unknown option '$arg' (expected --bench, --clang, --fuzz or --sanitize)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
