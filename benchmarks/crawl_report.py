#!/usr/bin/python3
"""Prints the crawl + decode benchmark table from the files benchmarks/crawl.sh leaves in its temporary
directory: NAME.time ("wall_s user_s sys_s maxrss_kb" from GNU time) and NAME.out (the JSON summary
printed by lvd-crawl/lvd-decode --json or by baseline_img2dataset.py) for NAME in lvd_crawl.R,
lvd_decode.R, baseline.R (R = 1..--reps), mem_small and mem_big; also samples the last run's outputs
(WORK/shards/img-*.tar, baseline.tar) to check that every resized image has a shorter side of 256.

Definitions (images = images that came out as resized JPEGs, counted from the summaries):
  images/s end to end   images / wall seconds (lvd: crawl wall + decode wall)
  CPU s / 1000 images   (user + sys of the measured processes) / images * 1000
  images/s per core     images / CPU seconds (= throughput per CPU-second)
  peak RSS              maximum resident set of any measured process (lvd: max of crawl, decode)
The comparison uses the median of each metric over the repetitions.
"""
import argparse
import glob
import io
import json
import os
import statistics
import tarfile

from PIL import Image

TARGET_RATIO = 3.0        # lvd images per CPU-second / baseline images per CPU-second
TARGET_PER_CORE = 300.0   # lvd images per CPU-second


def load(dir, name):
    with open(os.path.join(dir, name + ".time")) as f:
        wall, user, sys_, rss = f.read().split()[:4]
    with open(os.path.join(dir, name + ".out")) as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip().startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    return {"wall": float(wall), "cpu": float(user) + float(sys_), "user": float(user), "sys": float(sys_),
            "rss_mb": int(rss) / 1024.0, "summary": summary}


def machine():
    """'N CPUs (model), R GiB RAM' from /proc."""
    model, mem_kb = "unknown CPU", 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    return "%d CPUs (%s), %.1f GiB RAM" % (os.cpu_count(), model, mem_kb / 1048576)


def median(xs):
    return statistics.median(xs)


def check_shorter_side(tars, size, sample=300):
    """(checked, wrong) over about `sample` image members of the tars: wrong = shorter side != size."""
    members = []
    for path in tars:
        with tarfile.open(path) as t:
            members += [(path, m.name) for m in t.getmembers()
                        if m.isfile() and m.name.rsplit(".", 1)[-1] in ("jpg", "jpeg", "webp")]
    step = max(1, len(members) // sample)
    picked = members[::step]
    wrong = 0
    opened = {}
    for path, name in picked:
        t = opened.get(path) or opened.setdefault(path, tarfile.open(path))
        im = Image.open(io.BytesIO(t.extractfile(name).read()))
        if min(im.size) != size:
            wrong += 1
    for t in opened.values():
        t.close()
    return len(picked), len(members), wrong


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--files", type=int, required=True)
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--big", type=int, required=True)
    ap.add_argument("--crawl-opts", required=True)
    ap.add_argument("--threads", type=int, required=True)
    a = ap.parse_args()
    ncpu = os.cpu_count()
    runs = []
    for r in range(1, a.reps + 1):
        crawl, decode, base = (load(a.dir, "%s.%d" % (n, r)) for n in ("lvd_crawl", "lvd_decode", "baseline"))
        lvd = {"wall": crawl["wall"] + decode["wall"], "cpu": crawl["cpu"] + decode["cpu"],
               "rss_mb": max(crawl["rss_mb"], decode["rss_mb"])}
        runs.append({"crawl": crawl, "decode": decode, "lvd": lvd, "base": base,
                     "n_crawl": int(crawl["summary"].get("ok", 0)),
                     "n_lvd": int(decode["summary"].get("ok", 0)),
                     "n_base": int(base["summary"].get("ok", 0))})
    small, big = load(a.dir, "mem_small"), load(a.dir, "mem_big")

    print("machine: " + machine())
    print("crawl + decode: %d distinct JPEGs, %.1f MB (mean %.1f KB), nginx on 127.0.0.1, %d CPUs"
          % (a.files, a.bytes / 1e6, a.bytes / a.files / 1024, ncpu))
    print("lvd:      lvd-crawl %s (robots.txt on), then" % a.crawl_opts.replace(" --json --quiet", ""))
    print("          lvd-decode --size 256 (keep_ratio, JPEG q95, decode threads = %d CPUs; also validates," % ncpu)
    print("          computes the perceptual hash and writes the catalog)")
    print("baseline: img2dataset-style Python, %d download threads, urllib + sha256 + Pillow full decode +"
          % a.threads)
    print("          BICUBIC resize shorter side 256 + JPEG q95 + tarfile (decode in the threads: uses both CPUs)")
    print("images = resized JPEGs written; CPU = user + sys of the measured processes (not nginx's);")
    print("lvd wall/CPU = crawl + decode; RSS = peak resident set (lvd: max of crawl and decode)")
    print()
    hdr = "%-24s %7s %8s %9s %8s %11s %7s"
    row = "%-24s %7d %8.1f %9.1f %8.1f %11.2f %7.0f"
    print(hdr % ("", "images", "wall s", "images/s", "CPU s", "CPU s/1000", "RSS MB"))
    for r, run in enumerate(runs, 1):
        for label, n, m in (("lvd-crawl", run["n_crawl"], run["crawl"]),
                            ("lvd-decode", run["n_lvd"], run["decode"]),
                            ("lvd (crawl + decode)", run["n_lvd"], run["lvd"]),
                            ("baseline", run["n_base"], run["base"])):
            print(row % ("#%d %s" % (r, label), n, m["wall"], n / m["wall"] if m["wall"] else 0, m["cpu"],
                         1000 * m["cpu"] / n if n else 0, m["rss_mb"]))

    def med(side, key, count):
        vals = []
        for run in runs:
            n = run[count]
            m = run[side]
            vals.append({"ips": n / m["wall"] if m["wall"] else 0.0,
                         "per_cpu": n / m["cpu"] if m["cpu"] else 0.0,
                         "cpu_k": 1000 * m["cpu"] / n if n else float("inf"),
                         "rss": m["rss_mb"]}[key])
        return median(vals)

    lvd_pc, base_pc = med("lvd", "per_cpu", "n_lvd"), med("base", "per_cpu", "n_base")
    lvd_ips, base_ips = med("lvd", "ips", "n_lvd"), med("base", "ips", "n_base")
    lvd_rss, base_rss = med("lvd", "rss", "n_lvd"), med("base", "rss", "n_base")
    ratio = lvd_pc / base_pc if base_pc else float("inf")
    print()
    print("medians over %d repetition(s):" % a.reps)
    print("  %-28s %10s %10s %8s" % ("", "lvd", "baseline", "ratio"))
    print("  %-28s %10.1f %10.1f %7.2fx" % ("images/s end to end", lvd_ips, base_ips, lvd_ips / base_ips))
    print("  %-28s %10.2f %10.2f %7.2fx" % ("CPU s per 1000 images", med("lvd", "cpu_k", "n_lvd"),
                                          med("base", "cpu_k", "n_base"),
                                          med("lvd", "cpu_k", "n_lvd") / med("base", "cpu_k", "n_base")))
    print("  %-28s %10.1f %10.1f %7.2fx" % ("images per CPU-second", lvd_pc, base_pc, ratio))
    print("  %-28s %10.0f %10.0f %7.2fx" % ("peak RSS MB", lvd_rss, base_rss, lvd_rss / base_rss))
    print("target >= %.0fx the baseline per CPU-second:    %s (%.2fx)"
          % (TARGET_RATIO, "MET" if ratio >= TARGET_RATIO else "NOT MET", ratio))
    print("target >= %.0f images/s per core end to end: %s (%.1f images per CPU-second)"
          % (TARGET_PER_CORE, "MET" if lvd_pc >= TARGET_PER_CORE else "NOT MET", lvd_pc))

    problems = []
    for r, run in enumerate(runs, 1):
        if run["n_lvd"] != a.files:
            problems.append("#%d lvd wrote %d resized images, expected %d" % (r, run["n_lvd"], a.files))
        if run["n_base"] != a.files:
            problems.append("#%d baseline wrote %d resized images, expected %d" % (r, run["n_base"], a.files))
        for label in ("crawl", "decode"):
            other = {k: v for k, v in run[label]["summary"].get("status", {}).items() if k != "ok"}
            if other:
                problems.append("#%d lvd-%s statuses other than ok: %s" % (r, label, json.dumps(other)))
        if run["base"]["summary"].get("errors"):
            problems.append("#%d baseline errors: %s" % (r, json.dumps(run["base"]["summary"]["errors"])))
    for label, m in (("memory small", small), ("memory big", big)):
        other = {k: v for k, v in m["summary"].get("status", {}).items() if k != "ok"}
        if other:
            problems.append("%s statuses other than ok: %s" % (label, json.dumps(other)))
    print("statuses: " + ("every URL ok in every run" if not problems else "; ".join(problems)))
    lvd_tars = sorted(glob.glob(os.path.join(a.dir, "work-lvd", "shards", "img-*.tar")))
    for label, tars in (("lvd", lvd_tars), ("baseline", [os.path.join(a.dir, "baseline.tar")])):
        checked, total, wrong = check_shorter_side(tars, 256)
        print("output check (%s, last run): %d of %d images sampled, %d with a shorter side other than 256"
              % (label, checked, total, wrong))

    print()
    print("memory flatness (lvd-crawl alone, same options, fresh work dirs):")
    k = a.big // a.files
    print("  URLs are the %d files with query strings ?r=0..%d (nginx ignores them): the %dx list fetches"
          % (a.files, k - 1, k))
    print("  every file %d times; repeated bytes are content-addressed, so both runs store the same %d"
          % (k, a.files))
    print("  images and the difference is the crawler's per-URL memory.")
    print("  %-10s %8s %8s %9s %8s %12s" % ("URLs", "ok", "wall s", "URLs/s", "CPU s", "peak RSS MB"))
    for m in (small, big):
        s = m["summary"]
        n = int(s.get("listed", 0))
        print("  %-10d %8d %8.1f %9.0f %8.1f %12.1f"
              % (n, int(s.get("ok", 0)), m["wall"], n / m["wall"] if m["wall"] else 0, m["cpu"], m["rss_mb"]))
    print("  peak RSS %dx URLs / 1x URLs: %.2f" % (k, big["rss_mb"] / small["rss_mb"]))


if __name__ == "__main__":
    main()
