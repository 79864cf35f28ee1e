#!/usr/bin/env bash
# The demo: installs and builds lvd, makes a pool of a few thousand real pictures (Fashion-MNIST, upscaled
# and coloured, as JPEG/PNG/WebP, with exact and near duplicates and a handful of hostile files), serves it
# from a loopback HTTP server, crawls it, decodes it, shows lvd-status, and shows that a rerun does nothing.
# Usage: scripts/demo.sh [DIR]   (default build/demo; it is recreated)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh build
dir=${1:-build/demo}
n=${LVD_DEMO_N:-3000}
rm -rf "$dir"
mkdir -p "$dir"
py=/usr/bin/python3

echo "== making a demo pool of $n real pictures (+ duplicates and hostile files) in $dir/files"
$py scripts/fixtures.py pool "$dir/files" --n "$n" --seed 1 >/dev/null
$py scripts/fixtures.py special "$dir/files" >/dev/null

$py scripts/serve_dir.py --root "$dir/files" > "$dir/server.out" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q '^PORT ' "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
port=$(awk '/^PORT /{print $2}' "$dir/server.out")
echo "== serving it on http://127.0.0.1:$port/"
$py scripts/fixtures.py lists "$dir/lists" --base-url "http://127.0.0.1:$port" --pool "$dir/files" >/dev/null
# The hostile files too, and a URL that does not exist.
ls "$dir/files" | grep -vE '^(img|copy|near)_|manifest' | sed "s|^|http://127.0.0.1:$port/|" > "$dir/lists/special.txt"
echo "http://127.0.0.1:$port/missing.jpg" >> "$dir/lists/special.txt"

work="$dir/work"
echo "== lvd-crawl (loopback is private: the demo passes --allow-private)"
build/lvd-crawl --work "$work" --allow-private --timeout 10 "$dir/lists/urls.csv" "$dir/lists/special.txt"
echo "== lvd-decode (keep_ratio 256)"
build/lvd-decode --work "$work" --size 256
echo "== lvd-status"
build/lvd-status --work "$work"
echo "== rerunning both stages: nothing new to do"
build/lvd-crawl --work "$work" --allow-private "$dir/lists/urls.csv" "$dir/lists/special.txt"
build/lvd-decode --work "$work" --size 256
echo "== done: catalog $work/catalog.db, shards in $work/shards/"
