#!/usr/bin/env bash
# k-means benchmark (common/kmeans, for lvd-retrieve's cluster retrieval and lvd-balance): 1,000,000 x 384
# L2-normalised float32 vectors, spherical k-means into 1,000 centroids (20 iterations, random-row init, a
# uniform training sample of 256 rows per centroid = 256,000 rows, as FAISS subsamples), then every row
# assigned to its nearest centroid. The same run measures the baseline, FAISS's own k-means
# (faiss.Kmeans(spherical=True, niter=20, seed fixed, max_points_per_centroid=256)) and assignment
# (index.search(x, 1)) from Python on the same vectors, and prints the ratios lvd / FAISS. Target: within
# 1.2x of FAISS's time for training and for assignment. Also compared: the objective (mean cosine of every row
# to its centroid) and how far the two clusterings agree; and lvd's assignment of FAISS's own centroids
# against FAISS's labels (a check of kmeans_assign at scale).
#
# Usage: benchmarks/kmeans.sh [--quick] [--n 1000000] [--d 384] [--k 1000] [--iterations 20] [--mppc 256]
#                             [--seed 1234] [--threads N] [--reps 1]
#   --quick     100,000 vectors, k 100 (a smoke run, under a minute)
#   --reps      repetitions, lvd and FAISS alternating; the summary takes the median of each time (and shows
#               the ratio of the best times too, the steadier figure when other jobs share the cores)
#   --threads   default: every core (nproc), for both sides
# Data: benchmarks/.cache/dedup_knn-N-D.npy, the Gaussian mixture of benchmarks/dedup_knn.sh (N/1000 topics of
# 20 sub-topics each, 1% near-duplicates), generated once by `dedup_knn gen` and shared with it.
# Environment: LVD_BUILD (default build) is the meson build directory that is built and measured.
set -euo pipefail
cd "$(dirname "$0")/.."
n=1000000
d=384
k=1000
iterations=20
mppc=256
seed=1234
threads=$(nproc)
reps=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=100000; k=100; shift ;;
    --n) n=$2; shift 2 ;;
    --d) d=$2; shift 2 ;;
    --k) k=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --mppc) mppc=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "kmeans.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bdir=${LVD_BUILD:-build}
scripts/bootstrap.sh "$bdir" >/dev/null
[ -x /usr/bin/time ] || { echo "kmeans.sh: needs GNU time (apt-get install time)" >&2; exit 1; }
/usr/bin/python3 -c 'import faiss' 2>/dev/null || { echo "kmeans.sh: needs python3-faiss (scripts/bootstrap.sh)" >&2; exit 1; }
ninja -C "$bdir" kmeans dedup_knn >/dev/null
tmp=$(mktemp -d /tmp/lvd-kmeansbench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

mkdir -p benchmarks/.cache
data=benchmarks/.cache/dedup_knn-$n-$d.npy
if [ ! -f "$data" ] || [ ! -f "$data.dups" ]; then
  echo "== generating $data (once)"
  "$bdir/dedup_knn" gen --out "$data.tmp" --n "$n" --d "$d"
  mv "$data.tmp.dups" "$data.dups"
  mv "$data.tmp" "$data"
fi
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM; threads $threads"
echo "== data: $data ($(du -h "$data" | cut -f1)), k $k, $iterations iterations, $mppc training rows per centroid"

# Runs one step under GNU time; prints its JSON line, then wall, CPU and peak RSS as JSON.
timed() {
  local name=$1; shift
  echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -v -o "$tmp/$name.time" "$@" >"$tmp/$name.json"
  cat "$tmp/$name.json"
  awk -F': ' -v name="$name" '
    /Elapsed \(wall clock\)/ { n = split($2, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i] }
    /User time/ { u = $2 } /System time/ { s = $2 } /Maximum resident/ { r = $2 }
    END { printf "{\"step\": \"%s\", \"wall_s\": %.1f, \"cpu_s\": %.1f, \"max_rss_mb\": %.0f}\n", name, w, u + s, r / 1024 }
  ' "$tmp/$name.time" | tee "$tmp/$name.rusage"
}

common=(--npy "$data" --k "$k" --seed "$seed" --threads "$threads")
for r in $(seq 1 "$reps"); do
  echo "== [$r/$reps] lvd: $bdir/kmeans run ${common[*]} --iterations $iterations --mppc $mppc"
  timed "lvd.$r" "$bdir/kmeans" run "${common[@]}" --iterations "$iterations" --mppc "$mppc" \
    --out-labels "$tmp/lvd.labels"
  echo "== [$r/$reps] FAISS: benchmarks/kmeans_faiss.py ${common[*]} --niter $iterations --mppc $mppc"
  timed "faiss.$r" /usr/bin/python3 benchmarks/kmeans_faiss.py "${common[@]}" --niter "$iterations" --mppc "$mppc" \
    --out-centroids "$tmp/faiss.npy" --out-labels "$tmp/faiss.labels"
done
echo "== check: lvd's kmeans_assign of FAISS's centroids against FAISS's labels"
timed check "$bdir/kmeans" assign --npy "$data" --centroids "$tmp/faiss.npy" --labels "$tmp/faiss.labels" \
  --threads "$threads"

/usr/bin/python3 - "$tmp" "$reps" <<'EOF'
import json, statistics, sys
import numpy as np
t, reps = sys.argv[1], int(sys.argv[2])
def load(name):
    return json.load(open(f"{t}/{name}.json")), json.load(open(f"{t}/{name}.rusage"))
L = [load(f"lvd.{r}") for r in range(1, reps + 1)]
F = [load(f"faiss.{r}") for r in range(1, reps + 1)]
med = lambda runs, key, src=0: statistics.median(r[src][key] for r in runs)
l, f = L[-1][0], F[-1][0]
print()
print(f"k-means of {l['n']} x {l['d']} into {l['k']} centroids, {l['threads']} threads, {reps} repetition(s) (medians)")
print(f"lvd:   common/kmeans, spherical, random-row init, n_train {l['n_train']}, {l['iterations']} iterations run, "
      f"{l['repaired']} empty clusters repaired")
print(f"FAISS: faiss.Kmeans {f['faiss']} spherical, n_train {f['n_train']}, {f['iterations']} iterations; "
      f"index.search(x, 1)")
print()
print(f"{'':26s} {'lvd':>9s} {'FAISS':>9s} {'lvd/FAISS':>10s}   {'best of ' + str(reps):>9s}")
rows = [("train wall s", "train_s"), ("train CPU s", "train_cpu_s"),
        ("assign all wall s", "assign_s"), ("assign all CPU s", "assign_cpu_s")]
ratios = {}
for label, key in rows:
    a, b = med(L, key), med(F, key)
    ratios[key] = a / b
    lo = min(r[0][key] for r in L) / min(r[0][key] for r in F)
    print(f"{label:26s} {a:9.2f} {b:9.2f} {a / b:9.2f}x {lo:9.2f}x")
a = med(L, "train_s") / l["iterations"]; b = med(F, "train_s") / f["iterations"]
print(f"{'train wall s / iteration':26s} {a:9.3f} {b:9.3f} {a / b:9.2f}x")
for label, key in (("process wall s", "wall_s"), ("process CPU s", "cpu_s"), ("peak RSS MB", "max_rss_mb")):
    a, b = med(L, key, 1), med(F, key, 1)
    print(f"{label:26s} {a:9.1f} {b:9.1f} {a / b:9.2f}x")
print()
print(f"objective, mean cosine of all rows to their centroid: lvd {l['mean_cos']:.5f}, FAISS {f['mean_cos']:.5f} "
      f"(difference {l['mean_cos'] - f['mean_cos']:+.5f})")
print(f"training objective, last iteration: lvd {l['objective'][-1]:.5f}, FAISS {f['objective'][-1]:.5f}")
print(f"cluster sizes: lvd {l['size_min']}..{l['size_max']} ({l['empty']} empty), "
      f"FAISS {f['size_min']}..{f['size_max']} ({f['empty']} empty)")
la = np.fromfile(f"{t}/lvd.labels", dtype="<i4"); fa = np.fromfile(f"{t}/faiss.labels", dtype="<i4")
k = l["k"]
cont = np.bincount(la.astype(np.int64) * k + fa, minlength=k * k).reshape(k, k).astype(np.float64)
pxy = cont / cont.sum(); px = pxy.sum(1); py = pxy.sum(0); nz = pxy > 0
mi = (pxy[nz] * np.log(pxy[nz] / np.outer(px, py)[nz])).sum()
hx = -(px[px > 0] * np.log(px[px > 0])).sum(); hy = -(py[py > 0] * np.log(py[py > 0])).sum()
print(f"agreement of the two clusterings: NMI {2 * mi / (hx + hy):.4f}; purity (lvd clusters in their majority FAISS "
      f"cluster) {cont.max(1).sum() / cont.sum():.4f}")
c = json.load(open(f"{t}/check.json"))
print(f"check: lvd's assignment of FAISS's centroids gives FAISS's label for {c['same_label']} of {c['n']} rows "
      f"(mean cosine {c['mean_cos']:.6f} vs FAISS {f['mean_cos']:.6f}), in {c['assign_s']:.2f} s")
ok_t = ratios["train_s"] <= 1.2; ok_a = ratios["assign_s"] <= 1.2
print(f"targets: training within 1.2x of FAISS: {'yes' if ok_t else 'NO'} ({ratios['train_s']:.2f}x); "
      f"assignment within 1.2x: {'yes' if ok_a else 'NO'} ({ratios['assign_s']:.2f}x)")
EOF
