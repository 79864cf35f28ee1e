#!/usr/bin/python3
"""The reference of the lvd-balance benchmark: ssl-data-curation's hierarchical k-means with resampling
(src/hierarchical_kmeans_gpu.py, hierarchical_kmeans_with_resampling) run on CPU with PyTorch on the vectors
of balance_stage.sh, rounded to float16 as lvd-balance reads them.
  balance_reference.py --repo DIR --npy X.npy --levels K1,K2,.. --sample-size S1,S2,.. --resamples R
                       [--threads T]
DIR is a checkout of facebookresearch/ssl-data-curation, read and imported as it is (balance_stage.sh clones it
into benchmarks/.cache). The reference always runs 50 Lloyd iterations per k-means run, k-means++ init, float64
accumulation, and one number of resampling steps for every level. Prints one JSON line with the time of each
level (the reference logs no per-level times, so each level is timed by running the levels one at a time on
the previous level's centroids, as the reference itself does)."""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repo", required=True)
    p.add_argument("--npy", required=True)
    p.add_argument("--levels", required=True)
    p.add_argument("--sample-size", required=True)
    p.add_argument("--resamples", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    logging.disable(logging.INFO)
    sys.path.insert(0, os.path.abspath(a.repo))
    from src import hierarchical_kmeans_gpu as hk  # noqa: E402 (the reference, as it is)
    x = torch.from_numpy(np.load(a.npy).astype(np.float16).astype(np.float32))
    ks = [int(v) for v in a.levels.split(",")]
    ss = [int(v) for v in a.sample_size.split(",")]
    res = {"side": "ssl-data-curation", "torch": torch.__version__, "threads": torch.get_num_threads(),
           "n": int(x.shape[0]), "d": int(x.shape[1]), "resamples": a.resamples, "levels": []}
    items, total = x, 0.0
    out_json, sys.stdout = sys.stdout, sys.stderr  # the reference's progress bars write to stdout
    for l, k in enumerate(ks):
        t0 = time.monotonic()
        out = hk.hierarchical_kmeans_with_resampling(items, [k], 1, [ss[l]], n_resamples=a.resamples,
                                                     sample_strategy="closest", verbose=False)
        s = time.monotonic() - t0
        total += s
        c = out[0]["centroids"]
        res["levels"].append({"level": l + 1, "k": k, "items": int(items.shape[0]), "s": round(s, 1)})
        items = c if torch.is_tensor(c) else torch.from_numpy(np.asarray(c))
        print(json.dumps(res["levels"][-1]), file=sys.stderr, flush=True)
    res["tree_s"] = round(total, 1)
    sys.stdout = out_json
    print(json.dumps(res))


if __name__ == "__main__":
    main()
