#!/usr/bin/env bash
# The manifest stage end to end on 100,000 samples, in one run: `lvd-manifest build --from dedup` (every sample's
# working image read and hashed, every shard hashed), `lvd-manifest verify --deep` (every sample read, hashed and
# decoded, every shard hashed), and reading every sample through common/manifest.h (benchmarks/manifest_read.c,
# nproc threads, key order), each in images per second; the baseline, in the same run, is Python tarfile
# reading the same image members from the same shards (benchmarks/manifest_read_tarfile.py, one process).
#
# Data: gen_manifest.py's 100,000 small JPEGs in 10 tar shards (benchmarks/.cache/manifest-N/, shared with
# manifest_read.sh), and a work directory whose catalog rows are SYNTHETIC (manifest_work.py: images, members,
# decodes, dedup decisions 'kept') but point at those real bytes. Page cache warm for every side.
#
# Usage: benchmarks/manifest_stage.sh [--n 100000] [--threads N]
# Environment: LVD_BUILD (default build) is the meson build directory that is built and measured.
set -euo pipefail
cd "$(dirname "$0")/.."
n=100000
threads=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --n) n=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "manifest_stage.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bdir=${LVD_BUILD:-build}
[ -f "$bdir/build.ninja" ] || scripts/bootstrap.sh "$bdir" >/dev/null
ninja -C "$bdir" manifest_read lvd-manifest lvd-import >/dev/null
py=/usr/bin/python3

data=benchmarks/.cache/manifest-$n
if [ ! -f "$data/m.db" ]; then
  echo "== generating $data (once)"
  rm -rf "$data.tmp"
  "$py" benchmarks/gen_manifest.py --out "$data.tmp" --n "$n"
  mv "$data.tmp" "$data"
fi
tmp=$(mktemp -d /tmp/lvd-mstage.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/empty"
"$bdir/lvd-import" --quiet --work "$tmp/work" --collection pool --role pool --dir "$tmp/empty"
"$py" benchmarks/manifest_work.py --data "$data" --work "$tmp/work"
cat "$data"/shards/*.tar >/dev/null   # page cache warm for every side

secs() { # command...: runs it, prints its wall seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
b=$(secs "$bdir/lvd-manifest" build --work "$tmp/work" --out "$tmp/m.db" --from dedup --threads "$threads" --quiet)
v=$(secs "$bdir/lvd-manifest" verify --deep "$tmp/m.db" --threads "$threads")
"$bdir/manifest_read" "$tmp/m.db" --passes 1 --threads "$threads" >"$tmp/read.json"
"$py" benchmarks/manifest_read_tarfile.py "$tmp/m.db" >"$tmp/tar.json"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" - "$n" "$b" "$v" "$tmp/read.json" "$tmp/tar.json" "$threads" <<'PY'
import json, sys
n, b, v = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
r, t, T = json.load(open(sys.argv[4])), json.load(open(sys.argv[5])), sys.argv[6]
base = t["images_per_s"]
print(f"{'':44}{'seconds':>9}{'images/s':>12}{'vs tarfile':>12}")
for label, s in ((f"lvd-manifest build --from dedup ({T} threads)", b), (f"lvd-manifest verify --deep ({T} threads)", v),
                 (f"read through common/manifest.h ({T} threads)", r["seconds"]), ("baseline: Python tarfile, 1 process", t["seconds"])):
    print(f"{label:44}{s:9.2f}{n / s:12.0f}{n / s / base:11.1f}x")
PY
