#!/usr/bin/env bash
# Ingestion benchmark (crawl + decode): lvd-crawl + lvd-decode against an img2dataset-style Python baseline
# (benchmarks/baseline_img2dataset.py) on the same URL list, served by nginx on 127.0.0.1, in the same run.
# Prints images/s, CPU seconds per 1000 images and peak RSS for both, the ratios, and whether the targets
# (>= 3x the baseline per CPU-second, >= 300 images/s per core) are met; then lvd-crawl's peak RSS for
# N and 10N URLs (memory flatness).
#
# Usage: benchmarks/crawl.sh [--quick] [--reps N] [--keep] [--per-host N] [--concurrency N] [--threads N]
#   --quick          2,000 files / 20,000 URLs instead of 10,000 / 100,000, one repetition (smoke run)
#   --reps N         repetitions of the lvd and baseline runs, alternating; medians are compared (3)
#   --keep           keep the temporary work directories (printed at the end)
#   --per-host N, --concurrency N   passed to lvd-crawl (default: lvd's own defaults, 4 and 64; on
#                    loopback 4 connections are not the limit: the crawl is a few % of lvd's time)
#   --threads N      baseline download threads (32)
# Environment: LVD_BENCH_CACHE (default benchmarks/.cache) holds the generated pictures between runs;
#   LVD_BUILD (default build) is the meson build directory that is built and measured.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=/usr/bin/python3

n_files=10000
url_factor=10
keep=0
reps=3
per_host=""
concurrency=""
threads=32
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n_files=2000; reps=1; shift ;;
    --reps) reps=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --per-host) per_host=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "crawl.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
n_big=$((n_files * url_factor))

# Dependencies: nginx (Debian's nginx-light) and GNU time, then lvd itself.
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  echo "crawl.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
nginx_bin=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
bdir=${LVD_BUILD:-build}
scripts/bootstrap.sh "$bdir" >/dev/null

cache=${LVD_BENCH_CACHE:-benchmarks/.cache}
images=$cache/images
echo "== pictures: $n_files distinct JPEGs in $images (generated once, reused)"
$py benchmarks/gen_images.py "$images" "$n_files"
images=$(cd "$images" && pwd)

tmp=$(mktemp -d /tmp/lvd-bench.XXXXXX)
nginx_pid=""
cleanup() {
  if [ -n "$nginx_pid" ]; then kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; fi
  if [ "$keep" -eq 1 ]; then echo "crawl.sh: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$tmp/nginx"
cat > "$tmp/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  types { image/jpeg jpg; }
  default_type application/octet-stream;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  server {
    listen 127.0.0.1:$port;
    root $images;
    location = /robots.txt { default_type text/plain; return 200 ""; }
  }
}
EOF
"$nginx_bin" -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" &
nginx_pid=$!
for _ in $(seq 100); do
  $py -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null && break
  sleep 0.1
done
base="http://127.0.0.1:$port"
$py -c "import urllib.request; urllib.request.urlopen('$base/img_000000.jpg', timeout=5).read()" 2>/dev/null || { echo "crawl.sh: nginx does not serve $base" >&2; cat "$tmp/nginx/error.log" >&2; exit 1; }
echo "== nginx $("$nginx_bin" -v 2>&1 | sed 's|.*/||') on $base (1 worker, access_log off, empty robots.txt)"

# URL lists. urls.txt: one URL per distinct file. Memory lists: the files again with ?r=R query strings
# (nginx ignores them), R-major, so small.txt (R = 0) has n_files URLs and big.txt 10x as many.
$py - "$base" "$n_files" "$url_factor" "$tmp" "$images" <<'EOF'
import os, sys
base, n, f, tmp, images = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
with open(tmp + "/bytes", "w") as o:
    o.write("%d\n" % sum(os.path.getsize("%s/img_%06d.jpg" % (images, i)) for i in range(n)))
name = lambda i: "%s/img_%06d.jpg" % (base, i)
with open(tmp + "/urls.txt", "w") as o:
    o.writelines(name(i) + "\n" for i in range(n))
with open(tmp + "/small.txt", "w") as o:
    o.writelines("%s?r=0\n" % name(i) for i in range(n))
with open(tmp + "/big.txt", "w") as o:
    for r in range(f):
        o.writelines("%s?r=%d\n" % (name(i), r) for i in range(n))
EOF
bytes=$(cat "$tmp/bytes")

# measure NAME CMD...: runs CMD under GNU time; NAME.time gets "wall user sys maxrss_kb",
# NAME.out its stdout, NAME.err its stderr.
measure() {
  local name=$1; shift
  if ! /usr/bin/time -f '%e %U %S %M' -o "$tmp/$name.time" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"; then
    echo "crawl.sh: $name failed: $*" >&2
    tail -n 20 "$tmp/$name.err" >&2
    exit 1
  fi
  echo "   $name: $(cut -d' ' -f1 "$tmp/$name.time") s wall"
}

lvd_crawl_opts=(--allow-private)
[ -n "$per_host" ] && lvd_crawl_opts+=(--per-host "$per_host")
[ -n "$concurrency" ] && lvd_crawl_opts+=(--concurrency "$concurrency")
lvd_crawl_opts+=(--json --quiet)
echo "== $reps repetition(s), alternating, each in fresh work directories:"
echo "   lvd:      $bdir/lvd-crawl --work W ${lvd_crawl_opts[*]} urls.txt"
echo "             $bdir/lvd-decode --work W --size 256 --json --quiet"
echo "   baseline: $py benchmarks/baseline_img2dataset.py --urls urls.txt --out T.tar --threads $threads --size 256"
for r in $(seq "$reps"); do
  rm -rf "$tmp/work-lvd" "$tmp/baseline.tar"
  measure "lvd_crawl.$r" "$bdir"/lvd-crawl --work "$tmp/work-lvd" "${lvd_crawl_opts[@]}" "$tmp/urls.txt"
  measure "lvd_decode.$r" "$bdir"/lvd-decode --work "$tmp/work-lvd" --size 256 --json --quiet
  measure "baseline.$r" $py benchmarks/baseline_img2dataset.py --urls "$tmp/urls.txt" --out "$tmp/baseline.tar" \
    --threads "$threads" --size 256
done
echo "== memory flatness: lvd-crawl alone, fresh work dirs, $n_files and $n_big URLs (?r=N query strings)"
measure mem_small "$bdir"/lvd-crawl --work "$tmp/work-small" "${lvd_crawl_opts[@]}" "$tmp/small.txt"
measure mem_big "$bdir"/lvd-crawl --work "$tmp/work-big" "${lvd_crawl_opts[@]}" "$tmp/big.txt"

lvd_status=$("$bdir"/lvd-status --work "$tmp/work-lvd" 2>&1 || true)
echo
$py benchmarks/crawl_report.py --dir "$tmp" --reps "$reps" --files "$n_files" --bytes "$bytes" --big "$n_big" \
  --crawl-opts "${lvd_crawl_opts[*]}" --threads "$threads"
echo
echo "lvd-status of the last lvd work dir:"
echo "$lvd_status" | sed 's/^/  /'
