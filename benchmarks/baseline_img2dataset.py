#!/usr/bin/python3
"""The img2dataset-style baseline: download every URL of a list, keep each as a resized JPEG in a tar.

What it does per URL, as img2dataset does with resize_mode=keep_ratio, image_size=256, encode_quality=95,
compute_hash=sha256, output_format=webdataset:
  urllib.request download (User-Agent set, timeout) -> sha256 of the raw bytes -> Pillow decode at full
  size -> RGB -> resize so the shorter side is 256 (keep ratio; BICUBIC, or LANCZOS with --lanczos) ->
  JPEG quality 95 -> <key>.jpg and <key>.json (url, status, sizes, sha256) appended to one tar.
Differences from img2dataset, all in the baseline's favour: the decode/resize/encode runs inside the
download threads (img2dataset runs it in the process's main loop and gets parallelism from several
processes; Pillow releases the GIL, so here one process can use every core), no EXIF extraction, no
caption/parquet side files, no retries.

Usage: baseline_img2dataset.py --urls LIST --out TAR [--threads 32] [--size 256] [--lanczos]
Prints a JSON summary on stdout: {"ok": n, "failed": n, "errors": {message: count}, ...}.
"""
import argparse
import concurrent.futures
import hashlib
import io
import json
import sys
import tarfile
import time
import urllib.request

from PIL import Image

USER_AGENT = "img2dataset-style-baseline/1.0"


def download(url, timeout):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        if r.headers.get("X-Robots-Tag", "").lower() in ("noai", "noimageai", "noindex", "none"):
            raise ValueError("X-Robots-Tag opt-out")
        return r.read()


def process(url, size, resample, timeout):
    """One URL -> (jpeg bytes, metadata dict) or raises."""
    raw = download(url, timeout)
    sha = hashlib.sha256(raw).hexdigest()
    img = Image.open(io.BytesIO(raw))
    img.load()
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = img.resize((nw, nh), resample)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=95)
    meta = {"url": url, "status": "success", "error_message": None, "width": nw, "height": nh,
            "original_width": w, "original_height": h, "sha256": sha}
    return buf.getvalue(), meta


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--urls", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--lanczos", action="store_true")
    a = ap.parse_args()
    resample = Image.LANCZOS if a.lanczos else Image.BICUBIC
    with open(a.urls) as f:
        urls = [line.strip() for line in f if line.strip()]

    ok, failed, errors = 0, 0, {}
    window = 4 * a.threads   # futures in flight: bounded memory whatever the list length
    with tarfile.open(a.out, "w") as tar, \
            concurrent.futures.ThreadPoolExecutor(max_workers=a.threads) as pool:
        pending = {}
        it = iter(enumerate(urls))
        done_iter = False
        while pending or not done_iter:
            while not done_iter and len(pending) < window:
                try:
                    k, url = next(it)
                except StopIteration:
                    done_iter = True
                    break
                pending[pool.submit(process, url, a.size, resample, a.timeout)] = k
            if not pending:
                break
            finished, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in finished:
                k = pending.pop(fut)
                key = "%09d" % k
                try:
                    jpg, meta = fut.result()
                except Exception as e:  # noqa: BLE001 -- every failure is counted, the run goes on
                    failed += 1
                    msg = "%s: %s" % (type(e).__name__, e)
                    errors[msg] = errors.get(msg, 0) + 1
                    continue
                meta["key"] = key
                add(tar, key + ".jpg", jpg)
                add(tar, key + ".json", json.dumps(meta).encode())
                ok += 1
    json.dump({"ok": ok, "failed": failed, "errors": errors, "threads": a.threads,
               "resample": "LANCZOS" if a.lanczos else "BICUBIC"}, sys.stdout)
    print()
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
