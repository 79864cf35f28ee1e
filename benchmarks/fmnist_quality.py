#!/usr/bin/python3
"""Fashion-MNIST pretraining quality: lvd-train on the 60,000 training pictures, lvd-eval knn (k = 20) of the
teacher on the 10,000 test pictures at intervals of training time, against the raw-pixel k-NN floor measured
in the same run (the same weighted vote on the L2-normalised pixels, NumPy).

    fmnist_quality.py --dir B [--minutes 60 | --iterations N] [--evals 6] [--config PRESET] [key=value ...]

B caches what does not depend on the training: B/fm.db (the manifest: every training picture upscaled to 56
pixels, a JPEG q95, labels c0..c9), B/work (the evaluation work directory: train and test collections of
64-pixel PNGs imported with their labels and decoded). Each run writes B/run-<stamp>/ (the lvd-train run,
its checkpoints after each interval, curve.json) and prints the curve. Training minutes are the wall time of
the lvd-train processes alone (the evaluations between them are not counted); the schedules are those of
optim.epochs x OFFICIAL_EPOCH_LENGTH iterations, sized from a probe of the first iterations so that the run
ends at --minutes (or --iterations N, rounded down to whole epochs: a probe on a busy machine misjudges).
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import fixtures  # noqa: E402

SCHEMA = os.path.join(ROOT, "schemas", "manifest-001.sql")
BUILD = os.environ.get("LVD_BUILD_DIR", os.path.join(ROOT, "build"))


def exe(name):
    return os.path.join(BUILD, name)


def sh(*args, **kw):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit("%s exited %d:\n%s" % (" ".join(map(str, args)), p.returncode, p.stderr[-3000:]))
    return p


def write_manifest(folder, size=56):
    """folder/fm.db and its shards: all 60,000 training pictures, JPEG q95 at size x size RGB."""
    db = os.path.join(folder, "fm.db")
    if os.path.exists(db):
        return db
    x, y = fixtures.fashion("train")
    items = []
    for i in range(len(y)):
        buf = io.BytesIO()
        Image.fromarray(x[i], "L").convert("RGB").resize((size, size), Image.BICUBIC).save(buf, "JPEG", quality=95)
        data = buf.getvalue()
        items.append({"data": data, "label": "c%d" % y[i], "key": hashlib.sha256(data).hexdigest()})
    items.sort(key=lambda s: s["key"])
    os.makedirs(os.path.join(folder, "shards"), exist_ok=True)
    shards, per = [], 10000
    for si in range(0, len(items), per):
        rel = "shards/img-%06d.tar" % (si // per)
        with tarfile.open(os.path.join(folder, rel), "w", format=tarfile.USTAR_FORMAT) as tf:
            for s in items[si:si + per]:
                ti = tarfile.TarInfo(s["key"] + ".jpg")
                ti.size = len(s["data"])
                s["offset"], s["shard"] = tf.offset + 512, len(shards) + 1
                tf.addfile(ti, io.BytesIO(s["data"]))
            end = tf.offset
        with open(os.path.join(folder, rel), "rb") as f:
            shards.append((len(shards) + 1, rel, end, hashlib.sha256(f.read(end)).hexdigest()))
    tmp = db + ".tmp"
    con = sqlite3.connect(tmp)
    with open(SCHEMA) as f:
        con.executescript(f.read())
    con.executemany("INSERT INTO info VALUES (?, ?)", [("schema_version", "1"), ("name", "fashion-mnist-train"),
                                                     ("created_at", "2026-12-04T00:00:00Z")])
    con.executemany("INSERT INTO shards VALUES (?, ?, ?, ?)", shards)
    con.executemany("INSERT INTO samples (id, key, image_sha256, data_sha256, shard_id, offset, length, format,"
                    " width, height, orig_width, orig_height, url, caption, label, weight)"
                    " VALUES (?,?,?,?,?,?,?,'jpeg',?,?,28,28,NULL,NULL,?,1)",
                    [(i + 1, s["key"], s["key"], s["key"], s["shard"], s["offset"], len(s["data"]), size, size,
                      s["label"]) for i, s in enumerate(items)])
    con.commit()
    con.close()
    os.rename(tmp, db)
    return db


def write_eval_work(folder, size=64):
    """folder/work: collections fm-train (60,000) and fm-test (10,000) with their labels, decoded."""
    work = os.path.join(folder, "work")
    done = os.path.join(work, ".ready")
    if os.path.exists(done):
        return work
    shutil.rmtree(work, ignore_errors=True)
    for split, name in (("train", "fm-train"), ("t10k", "fm-test")):
        x, y = fixtures.fashion(split)
        d = os.path.join(folder, "png-" + split)
        for c in range(10):
            os.makedirs(os.path.join(d, "c%d" % c), exist_ok=True)
        for i in range(len(y)):
            Image.fromarray(x[i], "L").convert("RGB").resize((size, size), Image.BICUBIC).save(
                os.path.join(d, "c%d" % y[i], "%05d.png" % i))
        sh(exe("lvd-import"), "--work", work, "--collection", name, "--role", "benchmark", "--dir", d,
           "--label-from", "parent-dir", "--quiet")
        shutil.rmtree(d)
    sh(exe("lvd-decode"), "--work", work, "--size", str(size), "--quiet")
    open(done, "w").close()
    return work


def raw_pixel_knn(k=20, T=0.07):
    """DINOv2's weighted k-NN vote on L2-normalised raw pixels: top-1 accuracy on the test split."""
    xtr, ytr = fixtures.fashion("train")
    xte, yte = fixtures.fashion("t10k")
    a = xtr.reshape(len(ytr), -1).astype(np.float32)
    b = xte.reshape(len(yte), -1).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    right = 0
    for s in range(0, len(yte), 1000):
        sim = b[s:s + 1000] @ a.T
        idx = np.argpartition(-sim, k, axis=1)[:, :k]
        w = np.exp(np.take_along_axis(sim, idx, axis=1) / T)
        votes = np.zeros((len(idx), 10))
        for j in range(k):
            np.add.at(votes, (np.arange(len(idx)), ytr[idx[:, j]]), w[:, j])
        right += int((votes.argmax(axis=1) == yte[s:s + 1000]).sum())
    return right / len(yte)


def knn(work, ckpt, threads):
    p = sh(exe("lvd-eval"), "knn", "--model", ckpt, "--work", work, "--train", "fm-train", "--test", "fm-test",
           "--k", "20", "--resize", "64", "--crop", "56", "--batch", "256", "--threads", str(threads), "--json")
    out = json.loads(p.stdout)
    return out


def epoch_length(config_yaml):
    with open(config_yaml) as f:
        return int([l for l in f.read().splitlines() if "OFFICIAL_EPOCH_LENGTH" in l][0].split(":")[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--evals", type=int, default=6)
    ap.add_argument("--config", default=os.path.join(ROOT, "schemas", "train", "fmnist-small.yaml"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probe", type=int, default=60, help="iterations of the speed probe")
    ap.add_argument("--continue", dest="resume_run", metavar="RUN",
                    help="continue RUN (B/run-...) after its last evaluated interval, with its settings")
    ap.add_argument("--iterations", type=int, default=0,
                    help="train this many iterations (rounded to whole epochs) instead of sizing them by a probe")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    t0 = time.time()
    db = write_manifest(a.dir)
    work = write_eval_work(a.dir)
    print("data ready in %.0f s" % (time.time() - t0), flush=True)
    floor = raw_pixel_knn()
    print("raw-pixel k-NN (k 20, T 0.07, cosine): top-1 %.2f%%" % (100 * floor), flush=True)

    prev = None
    if a.resume_run:  # a run stopped between intervals: its curve so far, its settings
        with open(os.path.join(a.resume_run, "curve.json")) as f:
            prev = json.load(f)
        a.config, a.overrides, a.evals = prev["config"], prev["overrides"], prev.get("evals", a.evals)
    base = [exe("lvd-train"), "--config", a.config, "--manifest", db, "--threads", str(a.threads)]
    if prev:
        run = a.resume_run
        epochs, curve = prev["epochs"], prev["curve"]
        total = prev.get("iterations") or epochs * epoch_length(os.path.join(run, "train", "config.yaml"))
        minutes = curve[-1]["train_minutes"] if curve else 0.0
        print("continuing %s after iteration %d of %d" % (run, curve[-1]["iteration"] if curve else 0, total))
    else:
        run = os.path.join(a.dir, "run-%s" % time.strftime("%Y%m%d-%H%M%S"))
        probe = os.path.join(run, "probe")
        sh(*base, "--out", probe, "--max-iter", str(a.probe), *a.overrides)
        with open(os.path.join(probe, "metrics.jsonl")) as f:
            m = [json.loads(l) for l in f][a.probe // 3:]  # past the first iterations' warm-up
        per_iter = 1.03 * sum(r["step_s"] + r["load_s"] for r in m) / len(m)  # a few % for saves and logging
        total = max(a.evals, a.iterations or int(a.minutes * 60 / per_iter))
        epoch_len = epoch_length(os.path.join(probe, "config.yaml"))
        epochs = max(1, total // epoch_len)
        total = epochs * epoch_len
        print("probe: %.3f s per iteration -> %d iterations (%d epochs of %d)%s" %
              (per_iter, total, epochs, epoch_len, "" if a.iterations else " for %.0f minutes" % a.minutes),
              flush=True)
        shutil.rmtree(probe)
        curve, minutes = [], 0.0
    out = os.path.join(run, "train")
    # Every interval passes the same settings: --resume refuses a configuration other than the run's.
    settings = ["optim.epochs=%d" % epochs, *a.overrides]
    for e in range(1, a.evals + 1):
        it = total * e // a.evals
        if curve and it <= curve[-1]["iteration"]:
            continue
        t = time.time()
        sh(*base, "--out", out, "--max-iter", str(it), "--save-every", str(it),
           *(["--resume"] if os.path.exists(os.path.join(out, "training_state.safetensors")) else []), *settings)
        minutes += (time.time() - t) / 60
        ck = os.path.join(run, "teacher-%06d.safetensors" % it)
        shutil.copy(os.path.join(out, "teacher_checkpoint.safetensors"), ck)
        r = knn(work, ck, a.threads)
        top1 = [x for x in r["results"] if x["k"] == 20][0]["top1"]
        curve.append({"iteration": it, "train_minutes": round(minutes, 2), "knn20_top1": top1})
        print("iteration %6d  %6.1f min  k-NN(20) top-1 %.2f%%  raw pixels %.2f%%  difference %+.2f points" %
              (it, minutes, 100 * top1, 100 * floor, 100 * (top1 - floor)), flush=True)
        with open(os.path.join(run, "curve.json"), "w") as f:
            json.dump({"raw_pixel_knn20": floor, "config": a.config, "overrides": a.overrides, "epochs": epochs,
                       "iterations": total, "evals": a.evals, "curve": curve}, f, indent=1)
    print(json.dumps({"raw_pixel_knn20": floor, "curve": curve}))


if __name__ == "__main__":
    main()
