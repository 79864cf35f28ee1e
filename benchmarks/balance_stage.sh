#!/usr/bin/env bash
# Whole-stage balance benchmark: `lvd-balance` on a synthetic catalog (20 skewed concepts with sub-structure,
# frequencies 20:1 from the most to the least frequent), a tree of the given levels with resampling, then a
# balanced sample; timed end to end with GNU time (wall, CPU, peak RSS), with the tree's build time read from the
# catalog. In the same run, the baseline: the same hierarchy (levels, n_iters, resampling steps and sizes) with
# FAISS's k-means called from Python on the same vectors (benchmarks/balance_stage.py faiss). Prints the ratios,
# and the concept entropy of the sample against that of the pool. With --reference R, also the reference
# implementation, ssl-data-curation's hierarchical_kmeans_with_resampling run on CPU with PyTorch
# (benchmarks/balance_reference.py), with R resampling steps at every level on both sides (the reference takes
# one number) and 50 iterations (the reference's fixed n_iters).
#
# THE CATALOG ROWS ARE SYNTHETIC; ONLY lvd-balance IS MEASURED. The vectors are balance_stage.py gen's.
#
# Usage: benchmarks/balance_stage.sh [--n 1000000] [--d 384] [--levels 1000,100,20] [--iters 50]
#                                    [--resampling 1,10,10] [--sample-size 2,5,3] [--target N] [--keep]
#   --quick      100,000 x 64, levels 1000,100,20 (the reference's timing in the issue), 10 iterations
#   --keep       keep the work directory (printed) instead of deleting it
#   --reference R  also run the reference (python3-torch, python3-sklearn, python3-tqdm); it is cloned once into
#                benchmarks/.cache/ssl-data-curation from $LVD_SSL_DATA_CURATION_GIT (default its GitHub URL)
# Environment: LVD_BUILD (default build) is the meson build directory that is built and measured; TMPDIR
# (default /tmp) holds the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
n=1000000
d=384
levels=1000,100,20
iters=50
resampling=1,10,10
sample_size=2,5,3
target=0
keep=0
reference=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=100000; d=64; iters=10; shift ;;
    --n) n=$2; shift 2 ;;
    --d) d=$2; shift 2 ;;
    --levels) levels=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --resampling) resampling=$2; shift 2 ;;
    --sample-size) sample_size=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --reference) reference=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "balance_stage.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$target" -gt 0 ] || target=$((n / 4))
if [ "$reference" -gt 0 ]; then
  iters=50
  resampling=$(echo "$levels" | sed "s/[0-9]\+/$reference/g")
  repo=benchmarks/.cache/ssl-data-curation
  [ -d "$repo" ] || git clone -q "${LVD_SSL_DATA_CURATION_GIT:-https://github.com/facebookresearch/ssl-data-curation}" "$repo"
fi
bdir=${LVD_BUILD:-build}
scripts/bootstrap.sh "$bdir" >/dev/null
[ -x /usr/bin/time ] || { echo "balance_stage.sh: needs GNU time (apt-get install time)" >&2; exit 1; }
ninja -C "$bdir" lvd-import lvd-balance >/dev/null
py=/usr/bin/python3
model=bench
nl=$(echo "$levels" | tr ',' '\n' | wc -l)
list() { echo "$1" | sed 's/,/, /g; s/^/[/; s/$/]/'; }

mkdir -p benchmarks/.cache
data=benchmarks/.cache/balance-$n-$d.npy
if [ ! -f "$data" ]; then
  echo "== generating $data (once)"
  "$py" benchmarks/balance_stage.py gen --out "$data" --n "$n" --d "$d"
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lvd-balancestage.XXXXXX")
if [ "$keep" = 1 ]; then
  trap 'echo "== work directory kept: $tmp/work"' EXIT
else
  trap 'rm -rf "$tmp"' EXIT
fi
work=$tmp/work
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM"
echo "== synthetic catalog (rows only): $n pool images, $d-d float16 embeddings, every one kept by dedup"
mkdir -p "$tmp/empty"
"$bdir/lvd-import" --quiet --work "$work" --collection pool --role pool --dir "$tmp/empty"
"$py" benchmarks/balance_stage.py build --npy "$data" --n "$n" --work "$work" --model "$model" >/dev/null
cat >"$tmp/balance.yaml" <<YAML
n_levels: $nl
n_iters: $iters
n_clusters: $(list "$levels")
n_splits: $(list "$(echo "$levels" | sed 's/[0-9]\+/1/g')")
n_resampling_steps: $(list "$resampling")
sample_size: $(list "$sample_size")
sampling_strategy: c
target_size: $target
multiplier: 1
sampling: r
YAML
echo "== lvd-balance: levels $levels, n_iters $iters, resampling $resampling, sample sizes $sample_size, target $target"
/usr/bin/time -f '%e %U %S %M' -o "$tmp/time" "$bdir/lvd-balance" --work "$work" --model "$model" \
  --config "$tmp/balance.yaml" --json > "$tmp/lvd.json" 2> "$tmp/lvd.log"
cat "$tmp/lvd.log"
read -r wall user sys rss < "$tmp/time"
tree_s=$(sqlite3 "$work/catalog.db" "SELECT seconds FROM balance_trees ORDER BY id DESC LIMIT 1")
echo "== lvd-balance: $wall s wall (tree $tree_s s), $(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.1f", u+s}') s CPU, peak RSS $((rss / 1024)) MB"
echo "== FAISS (python3-faiss): the same hierarchy, random init"
"$py" benchmarks/balance_stage.py faiss --work "$work" --model "$model" --levels "$levels" --iters "$iters" \
  --resampling "$resampling" --sample-size "$sample_size" > "$tmp/faiss.json"
cat "$tmp/faiss.json"
"$py" benchmarks/balance_stage.py entropy --work "$work" --model "$model" --labels "$data.labels"
"$py" - "$tmp/faiss.json" "$tree_s" "$wall" "$tmp/lvd.log" <<'PY'
import json, re, sys
f = json.load(open(sys.argv[1]))
tree, wall = float(sys.argv[2]), float(sys.argv[3])
log = open(sys.argv[4]).read()
it = float(re.search(r"level 1: .*first run, on all items: ([0-9.]+) s per iteration", log).group(1))
pp = float(re.search(r"level 1: .*k-means\+\+ ([0-9.]+) s", log).group(1))
print("== ratios: lvd tree / FAISS tree %.2fx (lvd includes greedy k-means++ init, %.1f s at level 1; FAISS random"
      " init); lvd whole stage %.1f s (FAISS tree alone %.1f s)" % (tree / f["tree_s"], pp, wall, f["tree_s"]))
print("== one Lloyd iteration of level 1 on all %d points: lvd %.4f s, FAISS %.4f s (first run / n_iters): %.2fx"
      % (f["n"], it, f["iteration_s"], it / f["iteration_s"]))
PY
if [ "$reference" -gt 0 ]; then
  echo "== the reference (ssl-data-curation on CPU, PyTorch $($py -c 'import torch; print(torch.__version__)')): $resampling resampling steps, 50 iterations"
  "$py" benchmarks/balance_reference.py --repo "$repo" --npy "$data" --levels "$levels" --sample-size "$sample_size" \
    --resamples "$reference" --threads "$(nproc)" 2>/dev/null > "$tmp/ref.json"
  cat "$tmp/ref.json"
  "$py" - "$tmp/ref.json" "$tree_s" "$wall" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
tree, wall = float(sys.argv[2]), float(sys.argv[3])
print("== ratios: reference tree / lvd tree %.1fx, reference tree / lvd whole stage %.1fx" % (r["tree_s"] / tree, r["tree_s"] / wall))
PY
fi
