#!/usr/bin/env bash
# Fashion-MNIST pretraining quality (benchmarks/fmnist_quality.py): lvd-train of the fmnist-small preset on
# the 60,000 training pictures for a time budget, lvd-eval knn (k = 20) of the teacher on the 10,000 test
# pictures after each of --evals intervals, against the raw-pixel k-NN floor computed in the same run.
#
# Usage: benchmarks/fmnist_quality.sh [--dir B] [--minutes 60 | --iterations N] [--evals 6] [--config PRESET]
#                                     [key=value ...]
#   --dir B     where the data cache and the runs go (default benchmarks/.cache/fmnist)
#   --quick     a smoke run: 3 minutes of training, 1 evaluation
#   --iterations N   train N iterations (whole epochs of 500) instead of sizing the run by a speed probe
# Environment: LVD_BUILD (default build) is the meson build directory that is built and measured.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${LVD_BUILD:-build}
scripts/bootstrap.sh "$build" >/dev/null
args=()
dir=benchmarks/.cache/fmnist
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --quick) args+=(--minutes 3 --evals 1); shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
LVD_BUILD_DIR=$build exec /usr/bin/python3 benchmarks/fmnist_quality.py --dir "$dir" "${args[@]}"
