#!/usr/bin/env bash
# Training-step benchmark: one DINOv2 pretraining iteration of lvd-train's step (benchmarks/train_step.c on
# train/step.h) against the same step in PyTorch (benchmarks/train_step_torch.py, Debian's python3-torch, fp32),
# in one run, at the same thread count and sizes: ViT-S/14, batch 16, 2 global crops of 224 and 8 local crops
# (98 pixels by default: patch 14 needs a multiple of 14; PyTorch's patch embedding would silently drop the last
# 12 pixels of 96), heads of 65,536 prototypes, no drop path. The C step is measured three times: recomputing
# every student block in the backward pass (train.recompute_blocks=-1, lvd-train's default), the first
# --blocks N (5 of ViT-S's 12) and none (every activation kept).
# Prints each side's JSON line, then the ratios against PyTorch and whether the goals are met:
#   images/s >= 1.5x PyTorch's, peak RSS <= 0.5x PyTorch's.
#
# Usage: benchmarks/train_step.sh [--quick] [--batch 16] [--local-size 98] [--blocks 5] [--threads N]
#                                 [--iters 2]
#   --quick     vit_pico on 56/28-pixel crops, 1024 prototypes (a smoke run of a few seconds)
# Environment: LVD_BUILD (default build) is the meson build directory that is built and measured.
set -euo pipefail
cd "$(dirname "$0")/.."
py=/usr/bin/python3
arch=vit_small
gsize=224
lsize=98
locals=8
protos=65536
batch=16
iters=2
threads=$(nproc)
half=5
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) arch=vit_pico; gsize=56; lsize=28; locals=4; protos=1024; half=2; shift ;;
    --blocks) half=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --local-size) lsize=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "train_step.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bdir=${LVD_BUILD:-build}
scripts/bootstrap.sh "$bdir" >/dev/null
args=(--arch "$arch" --batch "$batch" --global-size "$gsize" --local-size "$lsize" --locals "$locals"
      --prototypes "$protos" --threads "$threads" --iters "$iters" --warmup 1)
echo "== $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $threads threads; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "== lvd (train.recompute_blocks=-1: every block)"
c1=$("$bdir/train_step" "${args[@]}" --recompute -1)
echo "$c1"
echo "== lvd (train.recompute_blocks=$half)"
ch=$("$bdir/train_step" "${args[@]}" --recompute "$half")
echo "$ch"
echo "== lvd (train.recompute_blocks=0: every activation kept)"
c0=$("$bdir/train_step" "${args[@]}" --recompute 0)
echo "$c0"
echo "== pytorch"
t=$("$py" benchmarks/train_step_torch.py "${args[@]}")
echo "$t"
"$py" - "$c1" "$ch" "$c0" "$t" <<'PY'
import json, sys
c1, ch, c0, t = (json.loads(a) for a in sys.argv[1:])
for name, c in (("recompute all", c1), ("recompute %d" % ch["recompute"], ch), ("recompute none", c0)):
    sp = c["images_per_s"] / t["images_per_s"]
    mem = c["max_rss_mb"] / t["max_rss_mb"]
    cpu = t["cpu_s_per_image"] / c["cpu_s_per_image"]
    print("lvd (%s) / pytorch: images/s %.2fx (goal >= 1.5x: %s), CPU time per image %.2fx less, peak RSS %.2fx "
          "(goal <= 0.5x: %s)" % (name, sp, "met" if sp >= 1.5 else "NOT met", cpu, mem,
                                  "met" if mem <= 0.5 else "NOT met"))
PY
