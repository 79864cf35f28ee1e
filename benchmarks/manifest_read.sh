#!/usr/bin/env bash
# Manifest reading benchmark (common/manifest.h, the trainer's data source): every sample of a 100,000-sample
# manifest (small JPEGs, about 2 KB each, in 10 tar shards) read through manifest_read with 1 and nproc threads,
# in key order and in the shuffled epoch order (manifest_order), with and without the SHA-256 check
# (manifest_read_checked). Baseline in the same run: Python tarfile reading the same image members from the
# same shards (iterate members, read data), one process. Prints images/s of each and the ratios lvd / tarfile.
# Shards are read once beforehand (page cache warm for both sides): this measures the reader's overhead per
# sample, not the disk.
#
# Usage: benchmarks/manifest_read.sh [--n 100000] [--per-shard 10000] [--reps 5] [--passes 5] [--threads N]
#   --reps      repetitions of each measurement; the summary takes the median
#   --passes    lvd reads the whole manifest this many times per repetition (longer, steadier runs); the
#               baseline reads it once per repetition
#   --threads   the multi-threaded runs' threads (default: nproc)
# Data: benchmarks/.cache/manifest-N/ (m.db + shards/), written once by benchmarks/gen_manifest.py.
# Environment: LVD_BUILD (default build) is the meson build directory that is built and measured.
set -euo pipefail
cd "$(dirname "$0")/.."
n=100000
per_shard=10000
reps=5
passes=5
threads=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --n) n=$2; shift 2 ;;
    --per-shard) per_shard=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --passes) passes=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "manifest_read.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bdir=${LVD_BUILD:-build}
[ -f "$bdir/build.ninja" ] || scripts/bootstrap.sh "$bdir" >/dev/null
ninja -C "$bdir" manifest_read lvd-manifest >/dev/null

data=benchmarks/.cache/manifest-$n
if [ ! -f "$data/m.db" ]; then
  echo "== generating $data (once)"
  rm -rf "$data.tmp"
  /usr/bin/python3 benchmarks/gen_manifest.py --out "$data.tmp" --n "$n" --per-shard "$per_shard"
  mv "$data.tmp" "$data"
fi
db=$data/m.db
"$bdir/lvd-manifest" verify "$db" >/dev/null   # shards present with their recorded bytes
cat "$data"/shards/*.tar >/dev/null            # page cache warm for both sides

tmp=$(mktemp -d /tmp/lvd-mreadbench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
run() { # name, command...: appends one JSON line per repetition to $tmp/<name>
  local name=$1; shift
  for _ in $(seq "$reps"); do "$@" >>"$tmp/$name"; done
  echo "   $name: $(tail -1 "$tmp/$name")"
}
echo "== $reps repetition(s) each, $db; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run lvd_1           "$bdir/manifest_read" "$db" --passes "$passes" --threads 1
run lvd_T           "$bdir/manifest_read" "$db" --passes "$passes" --threads "$threads"
run lvd_shuffled_T  "$bdir/manifest_read" "$db" --passes "$passes" --threads "$threads" --shuffle 1
run lvd_checked_1   "$bdir/manifest_read" "$db" --passes "$passes" --threads 1 --checked
run lvd_checked_T   "$bdir/manifest_read" "$db" --passes "$passes" --threads "$threads" --checked
run tarfile         /usr/bin/python3 benchmarks/manifest_read_tarfile.py "$db"

/usr/bin/python3 - "$tmp" "$threads" <<'PY'
import json, os, statistics, sys
tmp, T = sys.argv[1], int(sys.argv[2])
def med(name, key="images_per_s"):
    return statistics.median(json.loads(l)[key] for l in open(os.path.join(tmp, name)))
base = med("tarfile")
first = json.loads(open(os.path.join(tmp, "lvd_1")).readline())
print()
print("manifest read: %d samples, %.1f MB of JPEG; open (SQLite -> arena, shards opened) %.3f s" %
      (first["samples"], first["bytes"] / first["passes"] / 1e6, med("lvd_1", "open_seconds")))
print("load average after: %s (other processes share these cores: thread scaling reads low when it is high)"
      % " ".join(open("/proc/loadavg").read().split()[:3]))
print("%-44s %12s %10s" % ("", "images/s", "vs tarfile"))
for name, label in (("tarfile", "baseline: Python tarfile, 1 process"),
                    ("lvd_1", "manifest_read, 1 thread, key order"),
                    ("lvd_T", "manifest_read, %d threads, key order" % T),
                    ("lvd_shuffled_T", "manifest_read, %d threads, shuffled epoch" % T),
                    ("lvd_checked_1", "manifest_read_checked, 1 thread"),
                    ("lvd_checked_T", "manifest_read_checked, %d threads" % T)):
    v = med(name)
    print("%-44s %12.0f %9.1fx" % (label, v, v / base))
PY
