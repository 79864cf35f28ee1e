#!/usr/bin/env bash
# Whole-stage retrieval benchmark: `lvd-retrieve` on a catalog of 1,000,000 pool images with 384-d float16
# embeddings and a seed collection of 10,000 images, one `sample` row (k 32) and one `cluster` row (k-means with
# 1,000 centroids), timed end to end with GNU time (wall, CPU, peak RSS), with the time of each phase read from
# its log. In the same run, the baseline: FAISS's own k-means, assignment, IVF index and search called from
# Python (python3-faiss) on the same vectors (benchmarks/retrieve_stage.py faiss). Goals: k-means and search
# within 1.2x of FAISS's time, the whole stage under 10 minutes at 1,000,000 on 2 cores.
#
# THE CATALOG ROWS ARE SYNTHETIC; ONLY lvd-retrieve IS MEASURED. The pool is dedup_stage.py's (dedup_knn's
# Gaussian mixture, benchmarks/.cache/dedup_knn-N-D.npy); seeds are evenly spaced pool rows plus noise
# (cosine ~0.94 to their source), so each seed has a real neighbourhood to find. The pool is every pool image
# (--no-dedup): lvd-dedup is benchmarked by dedup_stage.sh.
#
# Usage: benchmarks/retrieve_stage.sh [--quick] [--n 1000000] [--seeds 10000] [--k 32] [--clusters 1000]
#                                     [--keep] [-- extra lvd-retrieve options]
#   --quick      100,000 pool images, 2,000 seeds, 200 centroids (IVF forced with --exact-max 1, as at 1M)
#   --keep       keep the work directory (printed) instead of deleting it
# Environment: LVD_BUILD (default build) is the meson build directory that is built and measured; TMPDIR
# (default /tmp) holds the work directory (about 1 GB of .npy files and a 0.6 GB catalog at 1,000,000).
set -euo pipefail
cd "$(dirname "$0")/.."
n=1000000
seeds=10000
k=32
clusters=1000
d=384
keep=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=100000; seeds=2000; clusters=200; extra+=(--exact-max 1); shift ;;
    --n) n=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --k) k=$2; shift 2 ;;
    --clusters) clusters=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; extra+=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "retrieve_stage.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bdir=${LVD_BUILD:-build}
scripts/bootstrap.sh "$bdir" >/dev/null
[ -x /usr/bin/time ] || { echo "retrieve_stage.sh: needs GNU time (apt-get install time)" >&2; exit 1; }
ninja -C "$bdir" lvd-import lvd-retrieve dedup_knn >/dev/null
py=/usr/bin/python3
model=bench384

mkdir -p benchmarks/.cache
data=benchmarks/.cache/dedup_knn-$n-$d.npy
if [ ! -f "$data" ] || [ ! -f "$data.dups" ]; then
  echo "== generating $data (once)"
  "$bdir/dedup_knn" gen --out "$data.tmp" --n "$n" --d "$d"
  mv "$data.tmp.dups" "$data.dups"
  mv "$data.tmp" "$data"
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lvd-retrievestage.XXXXXX")
if [ "$keep" = 1 ]; then
  trap 'echo "== work directory kept: $tmp/work"' EXIT
else
  trap 'rm -rf "$tmp"' EXIT
fi
work=$tmp/work

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM"
echo "== synthetic catalog (rows only): $n pool images, $seeds seed images, $d-d float16 embeddings"
mkdir -p "$tmp/empty"
"$bdir/lvd-import" --quiet --work "$work" --collection pool --role pool --dir "$tmp/empty"
"$py" benchmarks/retrieve_stage.py build --npy "$data" --n "$n" --seeds "$seeds" --work "$work" --model "$model"
cat >"$tmp/registry.yaml" <<EOF
rows:
  - name: bench-sample
    dataset: bench
    collection: bench-seeds
    method: sample
    k: $k
  - name: bench-cluster
    dataset: bench
    collection: bench-seeds
    method: cluster
    clusters: $clusters
    per_cluster: 1000
    cap: 1000000
    min_seeds: 3
EOF
sync

cmd=("$bdir/lvd-retrieve" --work "$work" --model "$model" --registry "$tmp/registry.yaml" --no-dedup --scale none
     --json "${extra[@]}")
echo "== measured: ${cmd[*]}"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -v -o "$tmp/time" "${cmd[@]}" >"$tmp/summary.json" 2> >(tee "$tmp/log" >&2)
sleep 1
echo "== load average after lvd-retrieve: $(cut -d' ' -f1-3 /proc/loadavg)"
rusage() {
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n = split($2, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i] }
    /User time/ { u = $2 } /System time/ { s = $2 } /Maximum resident/ { r = $2 }
    END { printf "{\"wall_s\": %.1f, \"cpu_s\": %.1f, \"max_rss_mb\": %.0f}\n", w, u + s, r / 1024 }' "$1"
}
rusage "$tmp/time" >"$tmp/rusage"
# The index lvd chose (the baseline builds the same one): "against IVF4096,Flat nprobe 16, ..." or
# "against IndexFlatIP (exact), ...".
factory=$(sed -n 's/.*seed searches against \([^ ,]*,[^ ,]*\) nprobe \([0-9]*\).*/\1/p' "$tmp/log" | head -1)
nprobe=$(sed -n 's/.*seed searches against [^ ,]*,[^ ,]* nprobe \([0-9]*\).*/\1/p' "$tmp/log" | head -1)
if [ -z "$factory" ]; then factory=Flat; nprobe=0; fi
echo "== baseline: FAISS from Python, $factory nprobe $nprobe, k-means $clusters centroids"
/usr/bin/time -v -o "$tmp/time_faiss" "$py" benchmarks/retrieve_stage.py faiss --work "$work" --model "$model" \
  --k "$k" --clusters "$clusters" --factory "$factory" --nprobe "$nprobe" | tee "$tmp/faiss.json"
rusage "$tmp/time_faiss" >"$tmp/rusage_faiss"
echo "== load average after the baseline: $(cut -d' ' -f1-3 /proc/loadavg)"

"$py" - "$tmp" <<'EOF'
import json, re, sys
t = sys.argv[1]
log = open(t + "/log").read()
r = json.load(open(t + "/rusage")); rf = json.load(open(t + "/rusage_faiss")); f = json.load(open(t + "/faiss.json"))
s = json.load(open(t + "/summary.json"))
def num(pat):
    m = re.search(pat, log)
    return float(m.group(1)) if m else None
lvd = {
    "kmeans": num(r"k-means: \d+ clusters of \d+ pool images trained on \d+ in ([0-9.]+) s"),
    "assign": num(r"assigned in [0-9.]+ s \(([0-9.]+) s of nearest-centroid search\)"),
    "assign_all": num(r"assigned in ([0-9.]+) s"),
    "index": num(r"index built in ([0-9.]+) s"),
    "search": num(r"candidates each in ([0-9.]+) s"),
    "search_all": num(r"candidates each in [0-9.]+ s \(([0-9.]+) s with"),
}
base = {"kmeans": f["kmeans_s"], "assign": f["assign_s"], "index": f["index_s"], "search": f["search_s"]}
print()
print(f"lvd-retrieve on {f['pool']} pool images x {f['d']}, {f['seeds']} seeds, {f['threads']} threads")
print(f"{'phase':<34}{'lvd s':>9}{'FAISS s':>9}{'lvd/FAISS':>11}")
names = {"kmeans": f"k-means training ({f['kmeans_train_points']} points)",
         "assign": f"assignment ({f['assign_rows']} rows)", "index": "IVF index (train + add)",
         "search": f"search ({f['seeds']} seeds, {f['search_k']} each)"}
for p in ("kmeans", "assign", "index", "search"):
    a, b = lvd[p], base[p]
    ratio = f"{a / b:.2f}x" if a is not None and b else "n/a"
    print(f"{names[p]:<34}{a if a is not None else float('nan'):>9.1f}{b:>9.1f}{ratio:>11}")
it = num(r"trained on \d+ in [0-9.]+ s \((\d+) iterations")
if it and lvd["kmeans"]:
    print(f"k-means per Lloyd iteration: lvd {lvd['kmeans'] / it:.2f} s ({it:.0f} iterations: it stops at a fixed point, "
          f"common/kmeans.h), FAISS {base['kmeans'] / f['kmeans_iterations']:.2f} s ({f['kmeans_iterations']} "
          f"iterations); mean cosine to the centroid: lvd {num(r'mean cosine to the centroid ([0-9.]+)')}, FAISS "
          f"{f['kmeans_objective']}")
print(f"assignment with catalog writes: {lvd['assign_all']} s; search with exact re-ranking and writes: "
      f"{lvd['search_all']} s")
print(f"whole stage: {r['wall_s']:.1f} s wall ({r['wall_s'] / 60:.1f} min), {r['cpu_s']:.1f} s CPU, peak RSS "
      f"{r['max_rss_mb']:.0f} MB; FAISS baseline process: {rf['wall_s']:.1f} s wall (vector loading "
      f"{f['load_s']} s included), peak RSS {rf['max_rss_mb']:.0f} MB")
k = next((row["k"] for row in s.get("rows", []) if "k" in row), "k")
print(f"neighbours: lvd's top-{k} overlap with FAISS's {f['overlap_with_lvd']}; recall against exact "
      f"brute force on {f['recall_probe_seeds']} seeds: lvd {f['recall_lvd']}, FAISS {f['recall_faiss']}")
for row in s.get("rows", []):
    print(f"row {row['row']} ({row['method']}): seeds {row['seeds']}, retrieved {row['retrieved']}, "
          f"collisions {row['collisions']}, final {row['final']}")
km = lvd["kmeans"] / base["kmeans"] if lvd["kmeans"] and base["kmeans"] else None
se = lvd["search"] / base["search"] if lvd["search"] and base["search"] else None
print("goals: k-means within 1.2x of FAISS: " + (f"{'yes' if km <= 1.2 else 'NO'} ({km:.2f}x)" if km else "n/a")
      + "; search within 1.2x: " + (f"{'yes' if se <= 1.2 else 'NO'} ({se:.2f}x)" if se else "n/a")
      + f"; stage under 10 min: {'yes' if r['wall_s'] < 600 else 'NO'} ({r['wall_s'] / 60:.1f} min)")
EOF
