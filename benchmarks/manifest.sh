#!/usr/bin/env bash
# lvd-manifest build benchmark: a work directory of N pool images (320x240 noisy gradients, decoded at 256,
# random embeddings, every image kept by lvd-dedup), built into a manifest with --from dedup, so every image is
# a sample. A build reads every used img shard (hashing it) and every sample's working image (hashing it):
# about twice the corpus's bytes. Measured in the same run: --threads 1 and --threads T, alternating, and the
# named baseline `sha256sum` of the same shard files (coreutils, one thread: the cost of reading and hashing
# the shards once, the floor of the shard half of a build). Prints median wall times and the ratios.
#
# Usage: benchmarks/manifest.sh [--quick] [--n 20000] [--threads 2] [--reps 3]
#   --quick     2,000 images, 1 repetition (a smoke run)
# Data: benchmarks/.cache/manifest-N/ (generated once: about 3 minutes for 20,000 images on 2 cores).
# Environment: LVD_BUILD (default build) is the meson build directory that is built and measured.
set -euo pipefail
cd "$(dirname "$0")/.."
n=20000
threads=2
reps=3
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=2000; reps=1; shift ;;
    --n) n=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
build=${LVD_BUILD:-build}
scripts/bootstrap.sh "$build" >/dev/null
py=/usr/bin/python3
cache=benchmarks/.cache/manifest-$n
work=$cache/work
if [ ! -f "$cache/ready" ]; then
  echo "== generating $n images and their work directory in $cache (once)"
  rm -rf "$cache"
  mkdir -p "$cache/src"
  $py - "$n" "$cache" <<'PY'
import os, sys
import numpy as np
from PIL import Image
n, root = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
with open(os.path.join(root, "keys.txt"), "w") as keys:
    for i in range(n):
        g = np.linspace(0, 255, 320)[None, :, None] * rng.random(3)[None, None, :]
        img = np.clip(g + rng.normal(0, 40, (240, 320, 3)), 0, 255).astype(np.uint8)
        k = "p%07d.jpg" % i
        Image.fromarray(img).save(os.path.join(root, "src", k), quality=85)
        keys.write(k + "\n")
np.save(os.path.join(root, "vectors.npy"), rng.normal(size=(n, 16)).astype(np.float32))
PY
  "$build/lvd-import" --work "$work" --collection pool --role pool --dir "$cache/src" --quiet
  "$build/lvd-decode" --work "$work" --size 256 --quiet
  "$build/lvd-embed" --work "$work" --collection pool --import "$cache/vectors.npy" --keys "$cache/keys.txt" \
      --name random --quiet
  # random 16-d vectors: a threshold no pair passes keeps every image
  "$build/lvd-dedup" --work "$work" --model random --threshold 0.99999 --quiet
  rm -rf "$cache/src"
  touch "$cache/ready"
fi
shards=$(sqlite3 "$work/catalog.db" "SELECT path FROM shards WHERE kind = 'img' ORDER BY path")
bytes=$(sqlite3 "$work/catalog.db" "SELECT sum(size) FROM decodes WHERE status = 'ok'")
sbytes=$(sqlite3 "$work/catalog.db" "SELECT sum(committed) FROM shards WHERE kind = 'img'")
echo "== $n samples, $((bytes / 1000000)) MB of working images in $(echo "$shards" | wc -l) shards of" \
     "$((sbytes / 1000000)) MB; $(nproc) cores; $reps repetitions, alternating"
t1=() tt=() tb=()
wall() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); awk "BEGIN { print ($e - $s) / 1e9 }"; }
# shellcheck disable=SC2086  # the shard paths hold no spaces (shards/img-NNNNNN.tar)
baseline() { (cd "$work" && sha256sum $shards); }
for r in $(seq "$reps"); do
  tb+=("$(wall baseline)")
  rm -f "$cache/m.db"
  t1+=("$(wall "$build/lvd-manifest" build --work "$work" --out "$cache/m.db" --from dedup --threads 1 --quiet)")
  rm -f "$cache/m.db"
  tt+=("$(wall "$build/lvd-manifest" build --work "$work" --out "$cache/m.db" --from dedup --threads "$threads" \
      --quiet)")
done
"$build/lvd-manifest" stats "$cache/m.db" --json | $py -c "import json,sys; r=json.load(sys.stdin); \
assert r['samples'] == $n, r['samples']"
$py - "$bytes" "$sbytes" "$threads" "${t1[*]}" "${tt[*]}" "${tb[*]}" <<'PY'
import statistics, sys
data, shard, threads = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
one, many, base = ([float(x) for x in a.split()] for a in sys.argv[4:7])
m1, mt, mb = statistics.median(one), statistics.median(many), statistics.median(base)
read = (data + shard) / 1e6
print("%-36s %8s %10s" % ("", "wall s", "MB/s read"))
print("%-36s %8.2f %10.0f" % ("lvd-manifest build --threads 1", m1, read / m1))
print("%-36s %8.2f %10.0f" % ("lvd-manifest build --threads %s" % threads, mt, read / mt))
print("%-36s %8.2f %10.0f" % ("baseline: sha256sum of the shards", mb, shard / 1e6 / mb))
print("ratios: --threads 1 / --threads %s = %.2f; build --threads %s / sha256sum of the shards = %.2f"
      % (threads, m1 / mt, threads, mt / mb))
PY
