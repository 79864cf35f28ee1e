#!/usr/bin/env bash
# ViT benchmark: lvd's C ViT (lvd-vit bench) against the same model in PyTorch (benchmarks/vit_torch.py,
# Debian's python3-torch) at the same thread count, batch and fp32, in one run; the machine's SGEMM rate
# (OpenBLAS, lvd-vit sgemm) measured in the same run as the peak; then lvd-embed end to end (read + decode +
# preprocess + forward + write) on real decoded images against lvd-vit bench's forward throughput.
# Prints each figure, the ratios and whether the targets are met:
#   forward >= 2.0x PyTorch, forward + backward >= 1.5x PyTorch, forward >= 70% of the SGEMM rate,
#   lvd-embed within 15% of lvd-vit bench forward.
#
# Usage: benchmarks/vit.sh [--quick] [--arch vit_small] [--img 224] [--batch 32] [--threads N] [--iters 5]
#   --quick     batch 8, 2 iterations, 256 images for lvd-embed (a smoke run)
#   --threads   default: every core (nproc)
# Environment: LVD_BUILD (default build) is the meson build directory that is built and measured.
set -euo pipefail
cd "$(dirname "$0")/.."
py=/usr/bin/python3
arch=vit_small
img=224
batch=32
iters=5
threads=$(nproc)
n_embed=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) batch=8; iters=2; n_embed=256; shift ;;
    --arch) arch=$2; shift 2 ;;
    --img) img=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "vit.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bdir=${LVD_BUILD:-build}
scripts/bootstrap.sh "$bdir" >/dev/null
vit="$bdir/lvd-vit"
tmp=$(mktemp -d /tmp/lvd-vitbench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads $threads"
common=(--arch "$arch" --img "$img" --batch "$batch" --iters "$iters" --threads "$threads")
echo "== SGEMM rate (OpenBLAS, 2048^3, best of 5)"
"$vit" sgemm --n 2048 --iters 5 --threads "$threads" | tee "$tmp/sgemm.json"
# The two implementations alternate so that a slow phase of the machine hits both.
for kind in forward train; do
  flag=""
  [ "$kind" = train ] && flag=--train
  echo "== $kind: lvd"
  "$vit" bench "${common[@]}" $flag | tee "$tmp/lvd-$kind.json"
  echo "== $kind: pytorch"
  OMP_NUM_THREADS=$threads $py benchmarks/vit_torch.py "${common[@]}" $flag | tee "$tmp/torch-$kind.json"
done

echo "== lvd-embed end to end: $n_embed Fashion-MNIST pictures (upscaled to 256..640 px JPEGs), $arch random"
work=$tmp/work
$py scripts/fixtures.py pool "$tmp/pics" --n "$n_embed" --formats jpg --dup-exact 0 --dup-near 0 >/dev/null
"$bdir/lvd-import" --work "$work" --collection bench --role pool --dir "$tmp/pics" --quiet
"$bdir/lvd-decode" --work "$work" --quiet
"$vit" init --arch "$arch" --img "$img" --out "$tmp/model.safetensors" --quiet
start=$(date +%s.%N)
"$bdir/lvd-embed" --work "$work" --model "$tmp/model.safetensors" --name bench --batch "$batch" \
  --threads "$threads" --json > "$tmp/embed-run.json"
end=$(date +%s.%N)
embedded=$(sqlite3 "$work/catalog.db" "SELECT count(*) FROM embeddings")
$py - "$tmp" "$embedded" "$start" "$end" <<'PYEOF'
import json, sys
tmp, n, t0, t1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
with open(tmp + "/embed-run.json") as f:
    lines = [l for l in f if l.strip()]
json.dump({"images": n, "seconds": round(t1 - t0, 3), "images_per_s": round(n / (t1 - t0), 3)},
          open(tmp + "/embed.json", "w"))
PYEOF
cat "$tmp/embed.json"; echo

$py - "$tmp" <<'PYEOF'
import json, sys
tmp = sys.argv[1]
r = {k: json.load(open("%s/%s.json" % (tmp, k)))
     for k in ["sgemm", "lvd-forward", "torch-forward", "lvd-train", "torch-train", "embed"]}
def cpu_ratio(a, b):
    return r[a]["images_per_cpu_s"] / r[b]["images_per_cpu_s"]
fwd = r["lvd-forward"]["images_per_s"] / r["torch-forward"]["images_per_s"]
trn = r["lvd-train"]["images_per_s"] / r["torch-train"]["images_per_s"]
peak = r["lvd-forward"]["gflops"] / r["sgemm"]["gflops"]
emb = r["embed"]["images_per_s"] / r["lvd-forward"]["images_per_s"]
def line(name, value, target, ok):
    print("%-44s %8s   target %-8s %s" % (name, value, target, "met" if ok else "NOT met"))
print("== summary")
print("forward  images/s: lvd %.2f  pytorch %.2f" % (r["lvd-forward"]["images_per_s"], r["torch-forward"]["images_per_s"]))
print("fwd+bwd  images/s: lvd %.2f  pytorch %.2f" % (r["lvd-train"]["images_per_s"], r["torch-train"]["images_per_s"]))
print("forward GFLOP/s: lvd %.1f  pytorch %.1f  SGEMM %.1f" % (r["lvd-forward"]["gflops"], r["torch-forward"]["gflops"], r["sgemm"]["gflops"]))
print("lvd-embed images/s (decode + preprocess + forward + write): %.2f" % r["embed"]["images_per_s"])
lvd_gf_cpu = r["lvd-forward"]["gflop_per_image"] * r["lvd-forward"]["images_per_cpu_s"]
print("per CPU-second (robust when other jobs share the machine): forward %.2fx, fwd+bwd %.2fx pytorch;"
      " forward %.1f GFLOP per CPU-s = %.0f%% of SGEMM's %.1f" % (
          cpu_ratio("lvd-forward", "torch-forward"), cpu_ratio("lvd-train", "torch-train"), lvd_gf_cpu,
          100 * lvd_gf_cpu / r["sgemm"]["gflop_per_cpu_s"], r["sgemm"]["gflop_per_cpu_s"]))
print("(the targets below use wall-clock rates at the same thread count)")
line("forward, lvd / pytorch", "%.2fx" % fwd, ">= 2.0x", fwd >= 2.0)
line("forward + backward, lvd / pytorch", "%.2fx" % trn, ">= 1.5x", trn >= 1.5)
line("forward GFLOP/s / SGEMM GFLOP/s", "%.0f%%" % (100 * peak), ">= 70%", peak >= 0.70)
line("lvd-embed / lvd-vit bench forward", "%.0f%%" % (100 * emb), ">= 85%", emb >= 0.85)
PYEOF
