#!/usr/bin/env bash
# Submits a crawl over N array tasks and the merge after them. Prints the two job ids.
#   scripts/slurm/curate.sh N WORK LIST... [-- sbatch options]
# Environment: LVD_BIN, LVD_CRAWL_ARGS (see crawl.sbatch), SBATCH_* as sbatch reads them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 3 ] || { echo "usage: $0 N WORK LIST... [-- sbatch options]" >&2; exit 2; }
n=$1 work=$2
shift 2
lists=() extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = -- ]; then shift; extra=("$@"); break; fi
  lists+=("$(realpath "$1")")
  shift
done
mkdir -p "$work"
work=$(realpath "$work")
export WORK=$work LISTS="${lists[*]}"
crawl=$(sbatch --parsable --export=ALL --array=0-$((n - 1)) --output="$work/slurm-crawl-%A_%a.out" \
  "${extra[@]}" "$here/crawl.sbatch")
merge=$(sbatch --parsable --export=ALL --dependency=afterany:"$crawl" --output="$work/slurm-merge-%j.out" \
  "${extra[@]}" "$here/merge.sbatch")
echo "$crawl $merge"
