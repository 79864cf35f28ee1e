"""Using a manifest: lvd-manifest verify, export and order against manifests built here in Python (sqlite3 with
schemas/manifest-001.sql, tar shards written with tarfile holding real JPEG/WebP bytes made with Pillow), so
these tests do not depend on `lvd-manifest build`.

Oracles: the bytes and metadata the builder wrote; Python tarfile reading the exports back; hashlib; and a
Python reimplementation of the epoch order from common/manifest.h's text."""
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tarfile
import time

import numpy as np
from PIL import Image

from lvdtest import TESTS, WorkTestCase, exe, run

SCHEMA = os.path.join(os.path.dirname(TESTS), "schemas", "manifest-001.sql")
M64 = (1 << 64) - 1


def image_bytes(rng, fmt, w, h):
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, "RGB").save(buf, format="JPEG" if fmt == "jpeg" else "WEBP", quality=90)
    return buf.getvalue()


def build_manifest(folder, n, nshards=2, seed=0, version=1, weights=None, name="m"):
    """Writes folder/m.db and folder/shards/img-NNNNNN.tar; returns the samples (dicts, in id order) and the
    shards ({path (absolute), bytes})."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "shards"), exist_ok=True)
    items = []
    for i in range(n):
        fmt = "webp" if i % 4 == 3 else "jpeg"
        w, h = 8 + int(rng.integers(0, 24)), 8 + int(rng.integers(0, 24))
        data = image_bytes(rng, fmt, w, h)
        items.append({"data": data, "key": hashlib.sha256(data).hexdigest(), "format": fmt, "width": w,
                      "height": h, "orig_width": 3 * w, "orig_height": 3 * h})
    items.sort(key=lambda s: s["key"])
    for i, s in enumerate(items):
        s["id"] = i + 1
        s["weight"] = weights[i] if weights else 1 + i % 3
        s["url"] = "http://example.org/%d.jpg" % i if i % 2 == 0 else None
        s["caption"] = "caption \"%d\" é" % i if i % 3 == 0 else None
        s["label"] = "class%d" % (i % 5) if i % 5 else None
        s["sources"] = [{"row": "r%d" % (i % 2), "method": "sample", "seed_key": "%064x" % (i + 7),
                         "rank": i % 4, "similarity": 0.5 + i / 1000.0 + 1e-9, "cluster": None}]
        if i % 3 == 0:
            s["sources"].append({"row": "zz", "method": "cluster", "seed_key": None, "rank": None,
                                 "similarity": None, "cluster": i % 7})
        s["sources"].sort(key=lambda r: r["row"])
    shards = []
    for k in range(nshards):
        rel = "shards/img-%06d.tar" % k
        path = os.path.join(folder, rel)
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
            for s in items[k::nshards]:
                ti = tarfile.TarInfo(s["key"] + (".jpg" if s["format"] == "jpeg" else ".webp"))
                ti.size = len(s["data"])
                s["shard_id"], s["offset"] = k + 1, tf.offset + 512  # one ustar header block, then the data
                tf.addfile(ti, io.BytesIO(s["data"]))
            end = tf.offset
        with open(path, "rb") as f:
            sha = hashlib.sha256(f.read(end)).hexdigest()
        shards.append({"rel": rel, "path": path, "bytes": end, "sha256": sha})
    db = os.path.join(folder, "m.db")
    con = sqlite3.connect(db)
    with open(SCHEMA) as f:
        con.executescript(f.read())
    con.executemany("INSERT INTO info VALUES (?, ?)", [("schema_version", str(version)), ("name", name),
                                                     ("created_at", "2026-05-01T12:00:00Z")])
    for k, sh in enumerate(shards):
        con.execute("INSERT INTO shards VALUES (?, ?, ?, ?)", (k + 1, sh["rel"], sh["bytes"], sh["sha256"]))
    for s in items:
        con.execute("INSERT INTO samples (id, key, image_sha256, data_sha256, shard_id, offset, length, format,"
                    " width, height, orig_width, orig_height, url, caption, label, weight)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (s["id"], s["key"], s["key"], hashlib.sha256(s["data"]).hexdigest(), s["shard_id"],
                     s["offset"], len(s["data"]), s["format"], s["width"], s["height"], s["orig_width"],
                     s["orig_height"], s["url"], s["caption"], s["label"], s["weight"]))
        for r in s["sources"]:
            con.execute("INSERT INTO sample_sources (sample_id, row, method, seed_key, rank, similarity, cluster)"
                        " VALUES (?,?,?,?,?,?,?)", (s["id"], r["row"], r["method"], r["seed_key"], r["rank"],
                                                     r["similarity"], r["cluster"]))
    con.commit()
    con.close()
    return db, items, shards


def reference_epoch(weights, seed, epoch):
    """manifest.h's epoch order, literally: ids repeated weight times, splitmix64, Fisher-Yates."""
    lst = [i + 1 for i, w in enumerate(weights) for _ in range(w)]
    state = (seed * 0x9e3779b97f4a7c15 + epoch) & M64

    def nxt():
        nonlocal state
        state = (state + 0x9e3779b97f4a7c15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
        return z ^ (z >> 31)

    for i in range(len(lst) - 1, 0, -1):
        j = nxt() % (i + 1)
        lst[i], lst[j] = lst[j], lst[i]
    return lst


def read_tar(path):
    """[(name, bytes)] of a tar, in member order."""
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


class VerifyTest(WorkTestCase):
    def setUp(self):
        super().setUp()
        self.folder = os.path.join(self.tmp, "corpus")
        self.db, self.samples, self.shards = build_manifest(self.folder, 24, nshards=3)

    def verify(self, *args):
        return run("lvd-manifest", "verify", self.db, *args, check=False)

    def test_clean(self):
        for args in ((), ("--deep",), ("--deep", "--threads", "3")):
            p = self.verify(*args)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("0 failures", p.stdout)
        p = self.verify("--deep", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        j = json.loads(p.stdout)
        self.assertTrue(j["ok"])
        self.assertEqual((j["samples"], j["shards"], j["checked"], j["failures"]), (24, 3, 24, []))
        # tarfile's end-of-archive blocks past the recorded bytes are the shard as built: not "grown".
        self.assertEqual(j["grown"], [])

    def test_flipped_byte(self):
        s = self.samples[5]
        flip_byte(self.shards[s["shard_id"] - 1]["path"], s["offset"] + len(s["data"]) // 2)
        # Not the shallow check's job: it looks at shards' presence and sizes only.
        p = self.verify()
        self.assertEqual(p.returncode, 0, p.stdout)
        p = self.verify("--deep")
        self.assertEqual(p.returncode, 1, p.stdout)
        lines = [l for l in p.stdout.splitlines() if l.startswith("FAIL")]
        self.assertIn("FAIL key %s: data SHA-256 mismatch" % s["key"], p.stdout)
        shard_path = self.shards[s["shard_id"] - 1]["path"]
        self.assertTrue(any(l.startswith("FAIL shard %s: SHA-256 of its first" % shard_path) for l in lines), lines)
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("2 failures", p.stdout)

    def test_truncated_shard(self):
        sh = self.shards[1]
        with open(sh["path"], "r+b") as f:
            f.truncate(sh["bytes"] - 700)
        want = "FAIL shard %s: %d bytes, manifest records %d (truncated?)" % (sh["path"], sh["bytes"] - 700,
                                                                           sh["bytes"])
        p = self.verify()
        self.assertEqual(p.returncode, 1)
        self.assertIn(want, p.stdout)
        p = self.verify("--deep")
        self.assertEqual(p.returncode, 1)
        self.assertIn(want, p.stdout)
        # The samples past the new end are named; those before it still pass.
        cut = sh["bytes"] - 700
        lost = [s for s in self.samples if s["shard_id"] == 2 and s["offset"] + len(s["data"]) > cut]
        self.assertTrue(lost)
        for s in self.samples:
            self.assertEqual(("FAIL key %s:" % s["key"]) in p.stdout, s in lost, s["key"])
        # The strict reader refuses it outright, naming the shard.
        p = run("lvd-manifest", "export", self.db, "--webdataset", os.path.join(self.tmp, "out"), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("shard %s: %d bytes, manifest records %d (truncated?)" % (sh["path"], cut, sh["bytes"]),
                      p.stderr)

    def test_missing_and_moved_shard(self):
        sh = self.shards[2]
        moved = os.path.join(self.tmp, "elsewhere.tar")
        os.rename(sh["path"], moved)
        p = self.verify("--deep")
        self.assertEqual(p.returncode, 1)
        n2 = sum(1 for s in self.samples if s["shard_id"] == 3)
        self.assertIn("FAIL shard %s: missing (No such file or directory); its %d samples cannot be read"
                      % (sh["path"], n2), p.stdout)
        self.assertEqual(len([l for l in p.stdout.splitlines() if l.startswith("FAIL")]), 1, p.stdout)
        j = json.loads(self.verify("--json").stdout)
        self.assertFalse(j["ok"])
        self.assertEqual([f["shard"] for f in j["failures"]], [sh["path"]])
        os.rename(moved, sh["path"])
        # The whole folder moved: shard paths are relative to the manifest, so it still verifies.
        dest = os.path.join(self.tmp, "moved", "corpus")
        os.makedirs(os.path.dirname(dest))
        shutil.move(self.folder, dest)
        p = run("lvd-manifest", "verify", os.path.join(dest, "m.db"), "--deep", check=False)
        self.assertEqual(p.returncode, 0, p.stdout)

    def test_grown_shard(self):
        with open(self.shards[0]["path"], "ab") as f:
            f.write(b"\0" * 4096)
        p = self.verify("--deep")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("note: shard %s has grown" % self.shards[0]["path"], p.stdout)

    def test_wrong_size_and_format(self):
        con = sqlite3.connect(self.db)
        a, b = self.samples[2], self.samples[3]
        con.execute("UPDATE samples SET width = width + 1 WHERE id = ?", (a["id"],))
        con.execute("UPDATE samples SET format = ? WHERE id = ?", ("webp" if b["format"] == "jpeg" else "jpeg",
                                                                   b["id"]))
        con.commit()
        con.close()
        p = self.verify("--deep")
        self.assertEqual(p.returncode, 1)
        self.assertIn("FAIL key %s: decodes to %dx%d, manifest records %dx%d" % (
            a["key"], a["width"], a["height"], a["width"] + 1, a["height"]), p.stdout)
        self.assertIn("FAIL key %s: bytes are %s" % (b["key"], b["format"]), p.stdout)

    def test_bad_files(self):
        con = sqlite3.connect(self.db)
        con.execute("UPDATE info SET value = '2' WHERE key = 'schema_version'")
        con.commit()
        con.close()
        for cmd in (["verify", self.db], ["export", self.db, "--webdataset", os.path.join(self.tmp, "o")],
                    ["order", self.db, "--seed", "1", "--epoch", "0"]):
            p = run("lvd-manifest", *cmd, check=False)
            self.assertEqual(p.returncode, 1, cmd)
            self.assertIn("manifest %s: schema version 2 is newer than this lvd reads (1)" % self.db,
                          p.stdout + p.stderr)
        junk = os.path.join(self.tmp, "junk.db")
        with open(junk, "wb") as f:
            f.write(b"not a database " * 300)
        p = run("lvd-manifest", "verify", junk, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("manifest %s: not an SQLite database" % junk, p.stdout)
        p = run("lvd-manifest", "verify", os.path.join(self.tmp, "none.db"), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("none.db: No such file", p.stdout)
        p = run("lvd-manifest", "verify", check=False)
        self.assertEqual(p.returncode, 2)


class ExportTest(WorkTestCase):
    def setUp(self):
        super().setUp()
        self.folder = os.path.join(self.tmp, "corpus")
        self.db, self.samples, self.shards = build_manifest(self.folder, 30, nshards=2, seed=3)

    def export(self, out, *args, check=True, env=None):
        return run("lvd-manifest", "export", self.db, "--webdataset", out, *args, check=check, env=env)

    def check_export(self, out, order, shard_size):
        """The tars hold exactly `order`'s samples (bytes, JSON) in order; index.json describes the tars."""
        with open(os.path.join(out, "index.json")) as f:
            index = json.load(f)
        self.assertEqual(index["samples"], len(order))
        self.assertEqual(index["name"], "m")
        members = []
        for k, sh in enumerate(index["shards"]):
            self.assertEqual(sh["path"], "shard-%06d.tar" % k)
            path = os.path.join(out, sh["path"])
            self.assertEqual(os.path.getsize(path), sh["bytes"])
            with open(path, "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), sh["sha256"])
            m = read_tar(path)
            self.assertEqual(len(m), 2 * sh["samples"])
            self.assertEqual(len(m), sh["members"])
            # Data and headers of a shard stay within the limit unless it holds one sample.
            data = sum(512 + (len(d) + 511) // 512 * 512 for _, d in m)
            self.assertTrue(sh["samples"] == 1 or data <= shard_size, (data, shard_size))
            members += m
        self.assertEqual(len(members), 2 * len(order))
        # Each shard was closed only because the next sample would have taken it past the limit.
        first = 0
        for sh, nxt in zip(index["shards"], index["shards"][1:]):
            first += sh["samples"]
            m = read_tar(os.path.join(out, sh["path"]))
            data = sum(512 + (len(d) + 511) // 512 * 512 for _, d in m)
            key = order[first]
            nm = [d for n, d in members[2 * first:2 * first + 2]]
            self.assertTrue(members[2 * first][0].startswith(key))
            self.assertGreater(data + sum(512 + (len(d) + 511) // 512 * 512 for d in nm), shard_size)
        by_key = {s["key"]: s for s in self.samples}
        for i, key in enumerate(order):
            s = by_key[key]
            (n1, d1), (n2, d2) = members[2 * i], members[2 * i + 1]
            self.assertEqual(n1, key + (".jpg" if s["format"] == "jpeg" else ".webp"))
            self.assertEqual(d1, s["data"])
            self.assertEqual(n2, key + ".json")
            j = json.loads(d2)
            want = {k: s[k] for k in ("key", "id", "width", "height", "orig_width", "orig_height", "url", "caption",
                                      "label", "weight", "sources")}
            self.assertEqual(j, want)
        return index

    def test_export_key_order(self):
        out = os.path.join(self.tmp, "out")
        self.export(out, "--shard-size", "8KB")
        index = self.check_export(out, [s["key"] for s in self.samples], 8000)
        self.assertGreater(len(index["shards"]), 2)
        self.assertIsNone(index["shuffle"])
        # Rerun: nothing to write, same bytes.
        before = {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)}
        p = self.export(out, "--shard-size", "8KB", "--json")
        self.assertEqual(json.loads(p.stdout)["written"], 0)
        self.assertEqual(before, {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)})

    def test_export_shuffle(self):
        out = os.path.join(self.tmp, "out")
        self.export(out, "--shard-size", "20K", "--shuffle", "77")
        ref, seen = [], set()
        for i in reference_epoch([s["weight"] for s in self.samples], 77, 0):
            if i not in seen:
                seen.add(i)
                ref.append(self.samples[i - 1]["key"])
        index = self.check_export(out, ref, 20000)
        self.assertEqual(index["shuffle"], "77")

    def test_other_options_refused(self):
        out = os.path.join(self.tmp, "out")
        self.export(out, "--shard-size", "8KB")
        p = self.export(out, "--shard-size", "9KB", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("use --force", p.stderr)
        self.export(out, "--shard-size", "1MB", "--force")
        self.check_export(out, [s["key"] for s in self.samples], 10 ** 6)
        self.assertEqual(len([f for f in os.listdir(out) if f.endswith(".tar")]), 1)
        p = self.export(out, "--shard-size", "12XB", check=False)
        self.assertEqual(p.returncode, 2)

    def test_kill_and_resume(self):
        clean = os.path.join(self.tmp, "clean")
        self.export(clean, "--shard-size", "6KB")
        out = os.path.join(self.tmp, "out")
        # Stalled (test hook) once shard 0 is committed and shard 1 has members written, then killed.
        env = dict(os.environ, LVD_EXPORT_TEST_STALL_AFTER="1")
        proc = subprocess.Popen([exe("lvd-manifest"), "export", self.db, "--webdataset", out, "--shard-size", "6KB"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state = os.path.join(out, "export-state.json")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with open(state) as f:
                    if len(json.load(f)["shards"]) == 1 and os.path.exists(os.path.join(out, "shard-000001.tar")):
                        break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.assertFalse(os.path.exists(os.path.join(out, "index.json")))
        # A torn tail in the incomplete shard, as a crash would leave.
        with open(os.path.join(out, "shard-000001.tar"), "ab") as f:
            f.write(b"torn" * 100)
        p = self.export(out, "--shard-size", "6KB", "--json")
        j = json.loads(p.stdout)
        self.assertEqual(j["kept"], 1)
        self.assertEqual(j["written"] + 1, j["shards"])
        names = sorted(os.listdir(clean))
        self.assertEqual(names, sorted(os.listdir(out)))
        for name in names:
            with open(os.path.join(clean, name), "rb") as a, open(os.path.join(out, name), "rb") as b:
                self.assertEqual(a.read(), b.read(), name)

    def test_copy_original(self):
        # A work directory whose catalog holds the samples' bytes as originals.
        src = os.path.join(self.tmp, "orig")
        os.makedirs(src)
        for s in self.samples:
            with open(os.path.join(src, s["key"][:12] + (".jpg" if s["format"] == "jpeg" else ".webp")), "wb") as f:
                f.write(s["data"])
        work = os.path.join(self.tmp, "work")
        run("lvd-import", "--work", work, "--collection", "pool", "--role", "pool", "--dir", src, "--quiet")
        out = os.path.join(self.tmp, "out")
        p = self.export(out, "--copy-original", check=False)
        self.assertEqual(p.returncode, 2)
        self.export(out, "--copy-original", "--work", work)
        members = read_tar(os.path.join(out, "shard-000000.tar"))
        self.assertEqual(len(members), 3 * len(self.samples))
        for i, s in enumerate(self.samples):
            name, data = members[3 * i + 2]
            self.assertEqual(name, s["key"] + ".orig." + ("jpg" if s["format"] == "jpeg" else "webp"))
            self.assertEqual(hashlib.sha256(data).hexdigest(), s["key"])


class OrderTest(WorkTestCase):
    def test_order(self):
        weights = [1, 2, 3, 1, 5, 1, 1, 2, 4, 1, 1, 1, 3]
        db, samples, _ = build_manifest(os.path.join(self.tmp, "c"), len(weights), nshards=1, weights=weights)
        keys = [s["key"] for s in samples]
        L = sum(weights)
        for seed, epoch in ((0, 0), (5, 3), (2 ** 64 - 1, 2 ** 63)):
            ref = [keys[i - 1] for i in reference_epoch(weights, seed, epoch)]
            for R in (1, 2, 3, 7):
                parts = []
                for r in range(R):
                    args = ("order", db, "--seed", seed, "--epoch", epoch, "--rank", r, "--ranks", R)
                    got = run("lvd-manifest", *args).stdout.split()
                    self.assertEqual(got, run("lvd-manifest", *args).stdout.split())
                    self.assertEqual(got, ref[r::R])
                    self.assertEqual(len(got), L // R + (1 if r < L % R else 0))
                    parts += got
                self.assertEqual(sorted(parts), sorted(k for k, w in zip(keys, weights) for _ in range(w)))
        e0 = run("lvd-manifest", "order", db, "--seed", 9, "--epoch", 0).stdout
        e1 = run("lvd-manifest", "order", db, "--seed", 9, "--epoch", 1).stdout
        self.assertNotEqual(e0, e1)
        self.assertEqual(run("lvd-manifest", "order", db, "--seed", 9, "--epoch", 0, "--limit", 4).stdout.split(),
                         e0.split()[:4])
        p = run("lvd-manifest", "order", db, "--seed", 1, "--epoch", 0, "--rank", 2, "--ranks", 2, check=False)
        self.assertEqual(p.returncode, 2)
