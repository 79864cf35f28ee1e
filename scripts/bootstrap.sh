#!/usr/bin/env bash
# Installs lvd's build and test dependencies from Debian 12 and builds it. Idempotent: packages already
# present are skipped, the build is incremental. Usage: scripts/bootstrap.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}

# Every package is a deliberate choice; README.md's dependency table says why.
packages=(
  build-essential meson ninja-build pkg-config    # C17 compiler and the build
  libcurl4-openssl-dev                            # HTTP fetching (multi interface, HTTP/2)
  libsqlite3-dev sqlite3                          # the catalog
  libjpeg62-turbo-dev                             # JPEG decode (DCT scaling) and encode
  libspng-dev                                     # PNG decode with size and chunk limits
  libwebp-dev                                     # WebP decode and encode
  libssl-dev                                      # SHA-256 (libcrypto)
  libcjson-dev                                    # JSON in URL lists, metadata and summaries
  libyaml-dev                                     # --config files
  zlib1g-dev                                      # .gz URL lists
  libcmocka-dev                                   # unit tests
  libopenmpi-dev openmpi-bin                      # lvd-train's data parallelism (mpirun), and its tests
  slurm-wlm munge                                 # a real single-node Slurm for the scripts/slurm/ tests
  libopenblas-openmp-dev                          # SGEMM for the ViT, OpenMP build (one thread pool)
  libfaiss-dev                                    # k-NN search for dedup (static lib + C API headers)
  python3 python3-pil python3-numpy               # test servers, fixtures, reference checks
  python3-torch                                   # the PyTorch reference the ViT is checked against
  python3-torchvision                             # the reference the trainer's augmentation is checked against
  python3-faiss                                   # baselines in benchmarks
  python3-sklearn python3-tqdm                    # what the ssl-data-curation reference of balance_stage.sh imports
  dataset-fashion-mnist                           # real pictures for tests and the demo
  chromium chromium-driver                        # headless browser: tests load lvd-audit's HTML page
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" >/dev/null
fi
ninja -C "$build" >/dev/null
echo "bootstrap: built into $build/"
