#!/usr/bin/env bash
# The demo: installs and builds lvd, makes a pool of a few thousand real pictures (Fashion-MNIST, upscaled
# and coloured, as JPEG/PNG/WebP, with exact and near duplicates and a handful of hostile files), serves it
# from a loopback HTTP server, crawls it, decodes it, embeds it with a random model, shows lvd-status, and
# shows that a rerun does nothing; then decontaminates it against a benchmark, deduplicates it, retrieves
# pool images near two seed datasets, balances the deduplicated pool by hierarchical k-means (lvd-balance),
# writes the audit page, and ends with the curated corpus as a manifest (lvd-manifest build) and its stats,
# and the balanced sample as a second manifest; then it trains the tiny preset briefly on that manifest and
# runs lvd-embed, lvd-dedup and lvd-retrieve again with the trained teacher (the loop closed).
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
model="$dir/vit_pico_random.safetensors"
echo "== lvd-embed with a RANDOMLY INITIALISED model: no pretrained weights are on this machine, so the demo"
echo "   embeds with a deterministic random vit_pico (lvd-vit init --seed 0). The pipeline is real; the vectors"
echo "   carry no learned meaning. Pass a DINOv2 checkpoint (safetensors) to --model for real embeddings."
build/lvd-vit init --arch vit_pico --seed 0 --img 224 --out "$model"
build/lvd-embed --work "$work" --model "$model" --name vit_pico_random
echo "== lvd-status"
build/lvd-status --work "$work"
echo "== rerunning the stages: nothing new to do"
build/lvd-crawl --work "$work" --allow-private "$dir/lists/urls.csv" "$dir/lists/special.txt"
build/lvd-decode --work "$work" --size 256
build/lvd-embed --work "$work" --model "$model" --name vit_pico_random
echo "== done: catalog $work/catalog.db, shards in $work/shards/, embeddings in $work/embeddings/"

echo "== benchmark decontamination and near-duplicate removal (lvd-dedup)"
# A held-out benchmark (Fashion-MNIST t10k pictures) and near copies of some of its pictures planted in the pool.
nb=${LVD_DEMO_BENCH:-200}
$py scripts/fixtures.py pool "$dir/bench" --n "$nb" --seed 2 --split t10k --dup-exact 0 --dup-near 0 >/dev/null
$py - "$dir/bench" "$dir/planted" <<'PY'
import json, os, sys
sys.path.insert(0, "scripts")
import fixtures
from PIL import Image
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
entries = json.load(open(os.path.join(src, "manifest.json")))
for k, e in enumerate(entries[:20]):
    t = fixtures.NEAR_TRANSFORMS[k % len(fixtures.NEAR_TRANSFORMS)]
    with Image.open(e["path"]) as im:
        fixtures._near(im.convert("RGB"), t).save(os.path.join(out, "bench_copy_%02d_%s.jpg" % (k, t)), quality=90)
PY
rm -f "$dir/bench/manifest.json"
build/lvd-import --work "$work" --collection fmnist-t10k --role benchmark --dir "$dir/bench"
build/lvd-import --work "$work" --collection planted --role pool --dir "$dir/planted"
build/lvd-decode --work "$work" --size 256
build/lvd-embed --work "$work" --model "$model" --name vit_pico_random
echo "== dedup embeds with a pixel-space copy descriptor (scripts/pixel_embed.py: gradient-orientation histograms"
echo "   of 8 nested centre views; tolerates re-encoding, resizing, mirroring, brightness and 90% centre crops),"
echo "   imported with lvd-embed --import: the random ViT above puts every picture near every other, so its"
echo "   similarities would join the whole pool. With a DINOv2 or copy-detection checkpoint, use DINOv2's"
echo "   thresholds (0.6 within the pool, 0.45 against benchmarks); this descriptor needs 0.996: copies score"
echo "   above it, distinct pictures below but for a few near-identical Fashion-MNIST pictures."
for c in pool planted fmnist-t10k; do
    $py scripts/pixel_embed.py "$work" "$c" "$dir/pixels-$c.npy" "$dir/pixels-$c.txt" >/dev/null
    build/lvd-embed --work "$work" --collection "$c" --import "$dir/pixels-$c.npy" --keys "$dir/pixels-$c.txt" \
        --name pixel-hog
done
build/lvd-dedup --work "$work" --model pixel-hog --threshold 0.996 --benchmark-threshold 0.996 --json
echo "== rerunning lvd-dedup: nothing new"
build/lvd-dedup --work "$work" --model pixel-hog --threshold 0.996 --benchmark-threshold 0.996
echo "== retrieval (lvd-retrieve): two seed datasets, 25 held-out trousers and 25 held-out bags (Fashion-MNIST"
echo "   t10k), imported as seed collections and embedded with the same pixel descriptor; a small registry asks"
echo "   for the trousers as they are, each trouser's 4 nearest pool images, and the pool clusters holding bags."
$py - "$dir/seeds" <<'PY'
import os, sys
sys.path.insert(0, "scripts")
import fixtures
import numpy as np
out = sys.argv[1]
_, labels = fixtures.fashion("t10k")
for name, cls in (("trouser", 1), ("bag", 8)):
    os.makedirs(os.path.join(out, name), exist_ok=True)
    for i in np.flatnonzero(labels == cls)[-25:]:
        fixtures.picture(int(i), "t10k", (224, 224)).save(os.path.join(out, name, "t10k_%05d.png" % i))
PY
for c in trouser bag; do
    build/lvd-import --work "$work" --collection "seeds-$c" --role seed --dir "$dir/seeds/$c"
done
build/lvd-decode --work "$work" --size 256
for c in seeds-trouser seeds-bag; do
    $py scripts/pixel_embed.py "$work" "$c" "$dir/pixels-$c.npy" "$dir/pixels-$c.txt" >/dev/null
    build/lvd-embed --work "$work" --collection "$c" --import "$dir/pixels-$c.npy" --keys "$dir/pixels-$c.txt" \
        --name pixel-hog
done
cat > "$dir/registry.yaml" <<'YAML'
# A demo registry in the format of schemas/lvd142m.yaml (the paper's 27 rows, for real seed datasets).
rows:
  - {name: trouser-as-is, dataset: trousers, method: as_is, collection: seeds-trouser}
  - {name: trouser-sample, dataset: trousers, method: sample, k: 4, collection: seeds-trouser}
  - {name: bag-cluster, dataset: bags, method: cluster, collection: seeds-bag, clusters: 40, per_cluster: 60,
     cap: 150, min_seeds: 3}
YAML
mkdir -p "$work/reports"  # for --csv
build/lvd-retrieve --work "$work" --model pixel-hog --registry "$dir/registry.yaml" --scale none \
    --csv "$work/reports/retrieval.csv"
$py - "$dir/files/manifest.json" "$work/reports/retrieval.csv" <<'PY'
import csv, json, sys
label = {e["sha256"]: e["label"] for e in json.load(open(sys.argv[1]))}
rows = {}
for r in csv.DictReader(open(sys.argv[2])):
    if r["image_sha256"] in label:  # pool images (as_is rows select the seeds themselves)
        rows.setdefault(r["row"], []).append(label[r["image_sha256"]])
for row, want in (("trouser-sample", 1), ("bag-cluster", 8)):
    got = rows.get(row, [])
    print("   %s: %d pool images retrieved, %.0f%% of them %s" % (row, len(got), 100.0 * sum(l == want for l in got) /
          max(1, len(got)), "trousers" if want == 1 else "bags"))
PY
echo "== rerunning lvd-retrieve: nothing new"
build/lvd-retrieve --work "$work" --model pixel-hog --registry "$dir/registry.yaml" --scale none
echo "== balance (lvd-balance): a 2-level hierarchical k-means of the deduplicated pool (30 / 5 clusters, with"
echo "   resampling, as ssl-data-curation), then a balanced sample of 1000 with up to 2 copies of an image"
cat > "$dir/balance.yaml" <<'YAML'
n_levels: 2
n_iters: 20
n_clusters: [30, 5]
n_splits: [1, 1]
n_resampling_steps: [2, 2]
sample_size: [20, 3]
sampling_strategy: c
target_size: 1000
multiplier: 2
sampling: r
YAML
build/lvd-balance --work "$work" --model pixel-hog --config "$dir/balance.yaml" --json
echo "== rerunning lvd-balance: nothing new"
build/lvd-balance --work "$work" --model pixel-hog --config "$dir/balance.yaml"
if [ -x build/lvd-audit ]; then
    build/lvd-audit --work "$work" --html "$work/reports/audit"
    echo "== audit report: $work/reports/audit/index.html"
fi
echo "== the curated corpus as a manifest (lvd-manifest build): the union of the registry rows' selections,"
echo "   one self-contained SQLite file beside the work directory; the image bytes stay in its img shards"
build/lvd-manifest build --work "$work" --out "$dir/lvd-demo.db"
echo "== lvd-manifest verify --deep: every sample's bytes against its SHA-256, decoded at its recorded size"
build/lvd-manifest verify --deep "$dir/lvd-demo.db"
echo "== lvd-manifest stats $dir/lvd-demo.db"
build/lvd-manifest stats "$dir/lvd-demo.db"
echo "== the balanced sample as a manifest (--from balance: weight = copies in the sample)"
build/lvd-manifest build --work "$work" --out "$dir/lvd-balanced.db" --from balance
build/lvd-manifest stats "$dir/lvd-balanced.db"
echo "== lvd-train: DINOv2 pretraining (DINO + iBOT + KoLeo, EMA teacher) of the tiny CPU preset on the manifest,"
echo "   40 iterations; RUN/metrics.jsonl has every loss term and schedule value per iteration"
rm -rf "$dir/run"
build/lvd-train --config schemas/train/fmnist-pico.yaml --manifest "$dir/lvd-demo.db" --out "$dir/run" \
    --max-iter 40 --save-every 20
$py - "$dir/run/metrics.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
for m in (lines[0], lines[len(lines) // 2], lines[-1]):
    print("   iteration %2d: total loss %.3f (dino local %.3f, global %.3f, koleo %.3f, ibot %.3f), lr %.2e, "
          "teacher temperature %.3f" % (m["iteration"], m["total_loss"], m["dino_local_crops_loss"],
                                        m["dino_global_crops_loss"], m["koleo_loss"], m["ibot_loss"], m["lr"],
                                        m["teacher_temp"]))
PY
echo "== the trained teacher embeds the work directory for the next curation (lvd-embed --model RUN/teacher_checkpoint)"
build/lvd-embed --work "$work" --model "$dir/run/teacher_checkpoint.safetensors" --name pico-trained \
    --resize 64 --crop 56
echo "== ... and the next curation runs on its embeddings: lvd-dedup and lvd-retrieve with --model pico-trained"
echo "   (recorded under that model's name: the manifests above stay as they are). 40 iterations are DINO's early"
echo "   phase, in which the teacher's features are still close to one point (pairwise cosine about 1): dedup"
echo "   removes nearly every image and the seeds retrieve the same few. This shows the loop's mechanics, not"
echo "   its quality; benchmarks/RESULTS.md has the Fashion-MNIST benchmark (84% k-NN after 51 minutes)."
build/lvd-dedup --work "$work" --model pico-trained --threshold 0.999 --benchmark-threshold 0.999 \
    --benchmark-rule image --json
build/lvd-retrieve --work "$work" --model pico-trained --dedup-model pixel-hog --registry "$dir/registry.yaml" \
    --scale none --json
