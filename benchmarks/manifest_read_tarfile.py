#!/usr/bin/python3
"""Baseline of benchmarks/manifest_read.sh: Python tarfile reading every image member of a manifest's shards
(iterate members, read data: what a plain webdataset-style loop does per sample), single process. Prints one
JSON line like the C driver: {"samples", "bytes", "seconds", "images_per_s", "mb_per_s"}.

    manifest_read_tarfile.py M.db
"""
import json
import os
import sqlite3
import sys
import tarfile
import time


def main():
    db = sys.argv[1]
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    paths = [os.path.join(os.path.dirname(db), p) for (p,) in con.execute("SELECT path FROM shards ORDER BY id")]
    con.close()
    t0 = time.monotonic()
    n = nbytes = 0
    for p in paths:
        with tarfile.open(p) as tf:
            for m in tf:
                if m.isfile() and not m.name.endswith(".json"):
                    data = tf.extractfile(m).read()
                    n += 1
                    nbytes += len(data)
    secs = time.monotonic() - t0
    print(json.dumps({"samples": n, "bytes": nbytes, "seconds": round(secs, 4), "images_per_s": round(n / secs),
                      "mb_per_s": round(nbytes / 1e6 / secs, 1)}))


if __name__ == "__main__":
    main()
