#!/usr/bin/env bash
# k-NN graph benchmark (the search part of lvd-dedup): 1,000,000 x 384 L2-normalised float32 vectors, every
# row's 64 nearest neighbours by cosine, through FAISS as common/knn.c drives it (the automatic index choice,
# or --factory/--nprobe). The same run measures the baseline, exact FAISS IndexFlatIP search: its neighbours of
# 1,000 sample rows give the graph's recall@64, and its time on --queries more rows, extrapolated to all rows,
# is the exact graph's cost. Targets: graph in well under 15 minutes, recall@64 >= 0.95.
#
# Usage: benchmarks/dedup_knn.sh [--quick] [--n 1000000] [--d 384] [--k 64] [--factory F] [--nprobe P]
#                                [--exact-max E] [--queries 10000] [--sample 1000] [--threads N] [--scan-baseline]
#   --quick     100,000 vectors, IVF forced (--exact-max 0), 2,000 baseline queries (a smoke run, minutes)
#   --factory   a FAISS index_factory string instead of knn.c's automatic choice (e.g. "IVF8192,Flat")
#   --exact-max flat (exact) search up to this many vectors (knn.c's default otherwise)
#   --queries   rows the exact baseline searches to extrapolate from (default 10,000)
#   --threads   default: every core (nproc)
#   --scan-baseline  also build and search the same IVF-Flat index with FAISS's own per-query list scan
#               (knn_opts.faiss_scan), the search's second baseline, and print the search-time ratio
# Data: benchmarks/.cache/dedup_knn-N-D.npy (+ .dups), generated once by `dedup_knn gen` (a Gaussian mixture
# of themes, topics and sub-topics with 1% planted near-duplicates), then memory-mapped by each step.
# Environment: LVD_BUILD (default build) is the meson build directory that is built and measured.
set -euo pipefail
cd "$(dirname "$0")/.."
n=1000000
d=384
k=64
queries=10000
sample=1000
threads=$(nproc)
scan_baseline=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=100000; queries=2000; extra+=(--exact-max 0); shift ;;
    --n) n=$2; shift 2 ;;
    --d) d=$2; shift 2 ;;
    --k) k=$2; shift 2 ;;
    --factory) extra+=(--factory "$2"); shift 2 ;;
    --nprobe) extra+=(--nprobe "$2"); shift 2 ;;
    --exact-max) extra+=(--exact-max "$2"); shift 2 ;;
    --queries) queries=$2; shift 2 ;;
    --sample) sample=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --scan-baseline) scan_baseline=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "dedup_knn.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bdir=${LVD_BUILD:-build}
scripts/bootstrap.sh "$bdir" >/dev/null
[ -x /usr/bin/time ] || { echo "dedup_knn.sh: needs GNU time (apt-get install time)" >&2; exit 1; }
bin="$bdir/dedup_knn"
ninja -C "$bdir" dedup_knn >/dev/null
tmp=$(mktemp -d /tmp/lvd-knnbench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

mkdir -p benchmarks/.cache
data=benchmarks/.cache/dedup_knn-$n-$d.npy
if [ ! -f "$data" ] || [ ! -f "$data.dups" ]; then
  echo "== generating $data (once)"
  "$bin" gen --out "$data.tmp" --n "$n" --d "$d"
  mv "$data.tmp.dups" "$data.dups"
  mv "$data.tmp" "$data"
fi
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM; threads $threads"
echo "== data: $data ($(du -h "$data" | cut -f1)), k $k"

# Runs one step under GNU time; prints its JSON line, then wall, CPU and peak RSS as JSON.
timed() {
  local name=$1; shift
  /usr/bin/time -v -o "$tmp/$name.time" "$@" >"$tmp/$name.json"
  cat "$tmp/$name.json"
  awk -F': ' -v name="$name" '
    /Elapsed \(wall clock\)/ { n = split($2, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i] }
    /User time/ { u = $2 } /System time/ { s = $2 } /Maximum resident/ { r = $2 }
    END { printf "{\"step\": \"%s\", \"wall_s\": %.1f, \"cpu_s\": %.1f, \"max_rss_mb\": %.0f}\n", name, w, u + s, r / 1024 }
  ' "$tmp/$name.time" | tee "$tmp/$name.rusage"
}

echo "== lvd k-NN graph: $bin graph --npy $data --k $k ${extra[*]}"
timed graph "$bin" graph --npy "$data" --k "$k" --sample "$sample" --out-sample "$tmp/sample.bin" \
  --threads "$threads" "${extra[@]}"
if [ "$scan_baseline" = 1 ]; then
  echo "== baseline: the same index searched by FAISS's own IVF list scan (--faiss-scan 1)"
  timed scan "$bin" graph --npy "$data" --k "$k" --sample "$sample" --out-sample "$tmp/sample-scan.bin" \
    --threads "$threads" --faiss-scan 1 "${extra[@]}"
fi
echo "== baseline: exact FAISS IndexFlatIP: the $sample sample rows (recall) and $queries more (extrapolated)"
timed exact "$bin" exact --npy "$data" --k "$k" --sample "$sample" --in-sample "$tmp/sample.bin" \
  --queries "$queries" --threads "$threads"

/usr/bin/python3 - "$tmp" <<'EOF'
import json, sys
t = sys.argv[1]
g = json.load(open(t + "/graph.json")); gr = json.load(open(t + "/graph.rusage"))
e = json.load(open(t + "/exact.json")); er = json.load(open(t + "/exact.rusage"))
print()
print(f"k-NN graph of {g['n']} x {g['d']}, k {g['k']}, {g['threads']} threads")
print(f"lvd:      {g['index']}")
print(f"baseline: {e['index'].split(',')[0]}, {e['queries']} queries timed, extrapolated to {e['n']}")
print()
print(f"{'':28s} {'wall s':>9s} {'CPU s':>9s} {'RSS MB':>7s}")
print(f"{'lvd train':28s} {g['train_s']:9.1f} {g['train_cpu_s']:9.1f}")
print(f"{'lvd add':28s} {g['add_s']:9.1f} {g['add_cpu_s']:9.1f}")
print(f"{'lvd search (all rows)':28s} {g['search_s']:9.1f} {g['search_cpu_s']:9.1f}")
print(f"{'lvd graph (process)':28s} {gr['wall_s']:9.1f} {gr['cpu_s']:9.1f} {gr['max_rss_mb']:7.0f}")
print(f"{'baseline exact (extrapol.)':28s} {e['graph_extrapolated_s']:9.0f} {e['graph_extrapolated_cpu_s']:9.0f} {er['max_rss_mb']:7.0f}")
print()
print(f"recall@{g['k']} of the graph vs exact, {e['sample']} sample rows: {e['recall']:.4f} (recall@1 {e['recall_at_1']:.4f})")
print(f"planted near-duplicates linked in the graph: {g['near_duplicates_linked']} of {g['near_duplicates']}")
print(f"edges with cosine >= 0.95: {g['edges_ge_0.95']}")
print(f"speed-up over exact (wall): {e['graph_extrapolated_s'] / gr['wall_s']:.1f}x")
try:
    s = json.load(open(t + "/scan.json"))
    print(f"baseline FAISS IVF scan: search {s['search_s']:.1f} s wall, {s['search_cpu_s']:.1f} CPU s; "
          f"list-major search is {s['search_s'] / g['search_s']:.1f}x faster (wall), "
          f"{s['search_cpu_s'] / g['search_cpu_s']:.1f}x (CPU); planted near-duplicates linked "
          f"{s['near_duplicates_linked']}, edges >= 0.95 {s['edges_ge_0.95']}")
except FileNotFoundError:
    pass
ok_t = gr['wall_s'] < 15 * 60
ok_r = e['recall'] >= 0.95
print(f"targets: graph < 15 min: {'yes' if ok_t else 'NO'} ({gr['wall_s'] / 60:.1f} min); "
      f"recall@{g['k']} >= 0.95: {'yes' if ok_r else 'NO'}")
EOF
