#!/usr/bin/env bash
# Whole-stage dedup benchmark: `lvd-dedup --work W --model NAME` on a catalog of 1,000,000 pool images with
# 384-d float16 embeddings, timed end to end (index build, search, edges into the catalog, union-find,
# decisions and components) with GNU time: wall, CPU, peak RSS. Then the recall of the edges the stage stored,
# against exact brute force on 1,000 sample images. Targets: under 15 minutes on 2 cores with IVF, recall of
# the k-NN graph >= 0.95.
#
# THE CATALOG ROWS ARE SYNTHETIC; ONLY lvd-dedup IS MEASURED. No image is stored, decoded or embedded:
# lvd-import of an empty directory creates catalog.db (the real schema, with a pool collection), then
# dedup_stage.py inserts images, members, decodes (status ok, random width/height and pHash), a models row
# and embeddings rows pointing at float16 part files laid out as lvd-embed writes them. The vectors are
# dedup_knn's Gaussian mixture with 1% planted near-duplicates (benchmarks/.cache/dedup_knn-N-D.npy, see
# dedup_knn.sh); row i is image id i + 1.
#
# Usage: benchmarks/dedup_stage.sh [--quick] [--n 1000000] [--threshold 0.9] [--k 64] [--keep]
#                                  [--sample 1000] [-- extra lvd-dedup options]
#   --quick      100,000 pool images (IVF forced with --exact-max 1, as at 1,000,000)
#   --threshold  lvd-dedup --threshold (default 0.9 here, not lvd-dedup's 0.6: on this mixture every image
#                has ~64 of its 64 nearest neighbours above 0.6 (cosine ~0.8 within a sub-topic, ~0.6 within
#                a topic), so 0.6 joins whole topics and removes nearly everything; above 0.9 only the
#                planted near-duplicates (cosine ~0.999) remain, about 1% of the images)
#   --keep       keep the work directory (printed) instead of deleting it
# Environment: LVD_BUILD (default build) is the meson build directory that is built and measured; TMPDIR
# (default /tmp) holds the work directory (about 1 GB of .npy files and a 0.5 GB catalog at 1,000,000).
set -euo pipefail
cd "$(dirname "$0")/.."
n=1000000
d=384
k=64
threshold=0.9
sample=1000
keep=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=100000; extra+=(--exact-max 1); shift ;;
    --n) n=$2; shift 2 ;;
    --threshold) threshold=$2; shift 2 ;;
    --k) k=$2; shift 2 ;;
    --sample) sample=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; extra+=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "dedup_stage.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bdir=${LVD_BUILD:-build}
scripts/bootstrap.sh "$bdir" >/dev/null
[ -x /usr/bin/time ] || { echo "dedup_stage.sh: needs GNU time (apt-get install time)" >&2; exit 1; }
ninja -C "$bdir" lvd-import lvd-dedup dedup_knn >/dev/null
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
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lvd-dedupstage.XXXXXX")
if [ "$keep" = 1 ]; then
  trap 'echo "== work directory kept: $tmp/work"' EXIT
else
  trap 'rm -rf "$tmp"' EXIT
fi
work=$tmp/work

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM"
echo "== synthetic catalog (rows only, nothing decoded): $n pool images, $d-d float16 embeddings from $data"
mkdir -p "$tmp/empty"
"$bdir/lvd-import" --quiet --work "$work" --collection pool --role pool --dir "$tmp/empty"
"$py" benchmarks/dedup_stage.py build --npy "$data" --n "$n" --work "$work" --model "$model"
sync

cmd=("$bdir/lvd-dedup" --work "$work" --model "$model" --k "$k" --threshold "$threshold" --json "${extra[@]}")
echo "== measured: ${cmd[*]}"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
( while sleep 30; do cut -d' ' -f1 /proc/loadavg; done ) >"$tmp/load" &
sampler=$!
/usr/bin/time -v -o "$tmp/time" "${cmd[@]}" >"$tmp/summary.json" 2> >(tee "$tmp/log" >&2)
kill "$sampler"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$tmp/summary.json"
awk -F': ' '
  /Elapsed \(wall clock\)/ { n = split($2, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i] }
  /User time/ { u = $2 } /System time/ { s = $2 } /Maximum resident/ { r = $2 }
  END { printf "{\"wall_s\": %.1f, \"cpu_s\": %.1f, \"user_s\": %.1f, \"sys_s\": %.1f, \"max_rss_mb\": %.0f}\n", w, u + s, u, s, r / 1024 }
' "$tmp/time" | tee "$tmp/rusage"
awk '{ s += $1; c++ } END { if (c) printf "{\"load_1min_mean\": %.2f, \"load_samples\": %d}\n", s / c, c; else print "{}" }' \
  "$tmp/load" >"$tmp/loadavg"

echo "== recall of the stored edges: exact brute force on $sample sample images"
"$py" benchmarks/dedup_stage.py recall --work "$work" --model "$model" --k "$k" --threshold "$threshold" \
  --sample "$sample" --dups "$data.dups" | tee "$tmp/recall.json"
du -sh "$work/catalog.db" "$work/embeddings" | sed 's/^/== size: /'

"$py" - "$tmp" "$data.dups" "$n" <<'EOF'
import json, re, sys
t, dups, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = json.load(open(t + "/summary.json")); r = json.load(open(t + "/rusage"))
rc = json.load(open(t + "/recall.json")); la = json.load(open(t + "/loadavg"))
log = open(t + "/log").read()
m = re.search(r"pool index: .*\(built in ([0-9.]+) s\)", log)
planted = len(open(dups, "rb").read()) // 16  # int64 pairs (row, earlier row), all N rows of the file
print()
print(f"lvd-dedup on {s['pool_images']} pool images (synthetic catalog, {n} rows of the mixture)")
print(f"index:        {s['index']}")
if m:
    print(f"index built:  {float(m.group(1)):.1f} s wall (training + adding)")
print(f"whole stage:  {r['wall_s']:.1f} s wall ({r['wall_s'] / 60:.1f} min), {r['cpu_s']:.1f} s CPU "
      f"(user {r['user_s']:.1f}, sys {r['sys_s']:.1f}), peak RSS {r['max_rss_mb']:.0f} MB")
print(f"load (1-min average, sampled every 30 s during the run): {la.get('load_1min_mean', 'n/a')}")
print(f"searched {s['searched']}, edges {s['edges_found']}, components {s['components']} "
      f"({s['components_multi']} with more than one image), kept {s['kept']}, "
      f"removed as duplicates {s['removed_duplicate']} (planted near-duplicates in the data: {planted})")
if "planted_pairs" in rc:
    print(f"planted near-duplicate pairs stored as edges: {rc['planted_pairs_linked']} of {rc['planted_pairs']}")
print(f"edge recall on {rc['sample']} sample images: {rc['edge_recall']} ({rc['found']} of "
      f"{rc['exact_knn_edges_above_threshold']} exact k-NN edges above {rc['threshold']}; "
      f"{rc['exact_pairs_above_threshold_all']} pairs above it in all)")
ok_t = r["wall_s"] < 15 * 60
ok_r = rc["edge_recall"] is not None and rc["edge_recall"] >= 0.95
print(f"targets: stage < 15 min: {'yes' if ok_t else 'NO'} ({r['wall_s'] / 60:.1f} min); "
      f"edge recall >= 0.95: {'yes' if ok_r else 'NO'}")
EOF
