"""lvd-manifest build / stats / diff end to end.

A work directory is made once per class: two pool collections (one sharing images with the other, one
crawled from the test server so that URLs and captions exist), two seed collections (one holding a truncated
image that cannot be decoded), working images in several small shards (lvd-decode --shard-size), synthetic
clustered embeddings (lvd-embed --import), lvd-dedup and lvd-retrieve with as_is, sample and cluster rows.

Oracles are independent of lvd-manifest: the retrieval union, first memberships and URLs are computed here by
SQL on the catalog (and Python), the bytes are read back from the shards with open/seek and decoded with
Pillow, and stats/diff numbers are recomputed from the manifests' rows in Python."""
import csv
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time

import numpy as np
from PIL import Image

import lvdtest
from lvdtest import Server, WorkTestCase, db, run

MODEL = "vec"
D = 16
REGISTRY_ROWS = [
    dict(name="one-as-is", dataset="one", method="as_is", collection="seeds-one"),
    dict(name="one-sample", dataset="one", method="sample", k=6, collection="seeds-one"),
    dict(name="two-cluster", dataset="two", method="cluster", collection="seeds-two", clusters=5,
         per_cluster=25, cap=60, min_seeds=2),
]
NEW_ROWS = [dict(name="three-sample", dataset="three", method="sample", k=4, collection="seeds-three")]


def picture(seed):
    """A PNG of a size that depends on the seed (so working images differ in size), distinct bytes per seed."""
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(24, 90)), int(rng.integers(24, 90))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def write_registry(path, rows):
    lines = ["rows:"]
    for r in rows:
        lines.append("  - " + ", ".join("%s: %s" % (k, v) for k, v in r.items()).join("{}"))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def embed(tmp, work, collection, keys, vectors, tag):
    npy = os.path.join(tmp, "%s-%s.npy" % (collection, tag))
    np.save(npy, np.asarray(vectors, dtype=np.float32))
    with open(npy + ".txt", "w") as f:
        f.write("".join(k + "\n" for k in keys))
    run("lvd-embed", "--work", work, "--collection", collection, "--import", npy, "--keys", npy + ".txt",
        "--name", MODEL, "--dtype", "float32", "--quiet")


def import_dir(tmp, work, collection, role, files, label=False):
    """Imports {name: bytes} as a collection (labels: the name's prefix before '_', as a parent folder)."""
    d = os.path.join(tmp, "src-" + collection)
    for name, data in files.items():
        sub = os.path.join(d, name.split("_")[0]) if label else d
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, name), "wb") as f:
            f.write(data)
    extra = ["--label-from", "parent-dir"] if label else []
    run("lvd-import", "--work", work, "--collection", collection, "--role", role, "--dir", d, "--quiet", *extra)
    keys = [r[0] for r in db(work).execute(
        "SELECT m.key FROM members m JOIN collections c ON c.id = m.collection_id WHERE c.name = ? ORDER BY m.key",
        (collection,))]
    return keys


def keyname(k):
    return k.rsplit("/", 1)[-1]


class Corpus:
    """Builds the shared work directory (see the module docstring)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.work = os.path.join(tmp, "work")
        rng = np.random.default_rng(7)
        self.centers = rng.normal(size=(6, D))
        self.rng = rng
        w = self.work
        # web: 90 pool images; two pairs of identical vectors so dedup removes two of them.
        web = {"web_%03d.png" % i: picture(i) for i in range(90)}
        webkeys = import_dir(tmp, w, "web", "pool", web)
        vec = self.points(len(webkeys))
        vec[1] = vec[0]
        vec[3] = vec[2]
        self.web_vec = dict(zip(webkeys, vec))
        embed(tmp, w, "web", webkeys, vec, "a")
        # archive: a pool collection sharing 10 images with web (same bytes: the same catalog images), and 5 of
        # its own. "archive" < "web": it is the shared images' first membership.
        arch = {"arch_%03d.png" % i: picture(i) for i in range(80, 90)}
        arch.update({"arch_%03d.png" % i: picture(i) for i in range(1000, 1005)})
        archkeys = import_dir(tmp, w, "archive", "pool", arch)
        own = [k for k in archkeys if keyname(k) >= "arch_1000"]
        embed(tmp, w, "archive", own, self.points(len(own)), "a")
        # crawled: 8 pool images fetched from the test server, with captions (urls rows).
        files = os.path.join(tmp, "files")
        os.makedirs(files)
        names = []
        for i in range(8):
            n = "crawl_%02d.png" % i
            with open(os.path.join(files, n), "wb") as f:
                f.write(picture(2000 + i))
            names.append(n)
        with Server(root=files) as s:
            lst = os.path.join(tmp, "urls.csv")
            with open(lst, "w", newline="") as f:
                wr = csv.writer(f)
                wr.writerow(["url", "caption"])
                for i, n in enumerate(names):
                    wr.writerow([s.url("/files/" + n), "caption %d" % i])
                # a second URL with the same bytes as the first: the first URL by text is recorded
                wr.writerow([s.url("/files/" + names[0] + "?copy=1"), "the same picture again"])
            run("lvd-crawl", "--work", w, "--allow-private", "--timeout", "10", "--retries", "0", "--collection",
                "crawled", "--quiet", lst)
        ckeys = [r[0] for r in db(w).execute(
            "SELECT m.key FROM members m JOIN collections c ON c.id = m.collection_id WHERE c.name = 'crawled'"
            " AND m.image_id NOT IN (SELECT image_id FROM embeddings) GROUP BY m.image_id ORDER BY m.key")]
        embed(tmp, w, "crawled", ckeys, self.points(len(ckeys)), "a")
        # seeds-one (labels from folders) with one truncated image; seeds-two
        one = {"shirt_%02d.png" % i: picture(3000 + i) for i in range(12)}
        one["shirt_99.png"] = picture(3099)[:60]  # truncated: imported (PNG magic), never decoded
        onekeys = import_dir(tmp, w, "seeds-one", "seed", one, label=True)
        embed(tmp, w, "seeds-one", onekeys, self.points(len(onekeys), [0, 1]), "a")
        two = {"bag_%02d.png" % i: picture(4000 + i) for i in range(16)}
        twokeys = import_dir(tmp, w, "seeds-two", "seed", two)
        embed(tmp, w, "seeds-two", twokeys, self.points(len(twokeys), [2]), "a")
        run("lvd-decode", "--work", w, "--size", "40", "--min-side", "8", "--shard-size", "4K", "--batch", "2", "--quiet")
        run("lvd-dedup", "--work", w, "--model", MODEL, "--threshold", "0.9999", "--quiet")
        self.registry = write_registry(os.path.join(tmp, "registry.yaml"), REGISTRY_ROWS)
        run("lvd-retrieve", "--work", w, "--model", MODEL, "--registry", self.registry, "--scale", "none", "--quiet")

    def points(self, n, centers=None):
        c = self.rng.choice(len(self.centers) if centers is None else centers, size=n)
        return unit(self.centers[c] + 0.35 * self.rng.normal(size=(n, D)))

    def add_seed_collection(self, work, tmp):
        """seeds-three + a sample row for it, decoded, embedded, retrieved: the diff test's change."""
        three = {"hat_%02d.png" % i: picture(5000 + i) for i in range(6)}
        keys = import_dir(tmp, work, "seeds-three", "seed", three)
        embed(tmp, work, "seeds-three", keys, self.points(len(keys), [4]), "b")
        run("lvd-decode", "--work", work, "--size", "40", "--min-side", "8", "--shard-size", "4K", "--batch", "2", "--quiet")
        reg = write_registry(os.path.join(tmp, "registry2.yaml"), REGISTRY_ROWS + NEW_ROWS)
        run("lvd-retrieve", "--work", work, "--model", MODEL, "--registry", reg, "--scale", "none", "--quiet")


# ---- independent oracles on the catalog ----

def retrieval_union(work, model=MODEL):
    """{key: {row: (method, seed_key, rank, sim, cluster, collisions)}} of the model's done rows, by SQL."""
    out = {}
    with db(work) as con:
        for key, row, method, seed, rank, sim, cluster, coll in con.execute(
                "SELECT i.sha256, r.name, r.method, si.sha256, s.rank, s.sim, s.cluster, s.collisions"
                " FROM retrieve_selections s JOIN retrieve_rows r ON r.id = s.row_id"
                " JOIN models m ON m.id = r.model_id JOIN images i ON i.id = s.image_id"
                " LEFT JOIN images si ON si.id = s.seed_image_id WHERE m.name = ? AND r.status = 'done'", (model,)):
            out.setdefault(key, {})[row] = (method, seed, rank, sim, cluster, coll)
    return out


def working(work):
    """{key: (shard path, offset, size, format, w, h, orig w, orig h)} of images with a working image."""
    with db(work) as con:
        return {r[0]: r[1:] for r in con.execute(
            "SELECT i.sha256, sh.path, d.offset, d.size, d.out_format, d.out_width, d.out_height, d.width, d.height"
            " FROM decodes d JOIN images i ON i.id = d.image_id JOIN shards sh ON sh.id = d.shard_id"
            " WHERE d.status = 'ok'")}


def manifest_rows(path, table, order):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return con.execute("SELECT * FROM %s ORDER BY %s" % (table, order)).fetchall()
    finally:
        con.close()


def mcon(path):
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True)


def sources_of(path):
    """{key: {row: (method, seed_key, rank, similarity, cluster, collisions)}} of a manifest."""
    out = {}
    with mcon(path) as con:
        for r in con.execute("SELECT s.key, x.row, x.method, x.seed_key, x.rank, x.similarity, x.cluster,"
                             " x.collisions FROM sample_sources x JOIN samples s ON s.id = x.sample_id"):
            out.setdefault(r[0], {})[r[1]] = tuple(r[2:])
    return out


def tmp_files(d):
    return [n for n in os.listdir(d) if ".tmp-" in n]


class ManifestTest(WorkTestCase):
    corpus = None
    base = None

    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.base = tempfile.mkdtemp(prefix="lvd-it-manifest-")
        cls.corpus = Corpus(cls.base)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.base, ignore_errors=True)

    def setUp(self):
        super().setUp()
        shutil.copytree(self.corpus.work, self.work)

    def build(self, out, *args, check=True, work=None):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        return run("lvd-manifest", "build", "--work", work or self.work, "--out", out, *args, check=check)

    def stats(self, path, *args, check=True):
        return run("lvd-manifest", "stats", path, *args, check=check)

    # ---- build ----

    def test_samples_equal_retrieval_union(self):
        out = os.path.join(self.tmp, "m", "corpus.db")
        # (-shm is SQLite's shared-memory index, where every reader marks what it reads: not data)
        cat = [os.path.join(self.work, n) for n in sorted(os.listdir(self.work))
               if n.startswith("catalog.db") and not n.endswith("-shm")]
        before = {n: lvdtest.sha256_file(n) for n in cat}
        p = self.build(out, "--json")
        # the catalog was only read: the same files with the same bytes, no lock taken (no new .lock file)
        self.assertEqual({n: lvdtest.sha256_file(n) for n in cat}, before)
        self.assertEqual(sorted(n for n in os.listdir(self.work) if n.startswith("catalog.db") and not n.endswith("-shm")),
                         sorted(os.path.basename(n) for n in cat))
        summary = json.loads(p.stdout)
        union = retrieval_union(self.work)
        wk = working(self.work)
        want = sorted(k for k in union if k in wk)
        self.assertGreater(len(want), 40)
        missing = sorted(k for k in union if k not in wk)
        self.assertEqual(len(missing), 1)  # the truncated seed, selected by the as_is row
        self.assertIn("no working image", p.stderr)
        self.assertIn(missing[0], p.stderr)
        samples = manifest_rows(out, "samples", "id")
        self.assertEqual([r[1] for r in samples], want)  # keys, in key order
        self.assertEqual([r[0] for r in samples], list(range(1, len(want) + 1)))
        self.assertEqual(summary["samples"], len(want))
        self.assertEqual(summary["without_working_image"], 1)
        # per-row sources with their evidence
        got = sources_of(out)
        self.assertEqual(got, {k: union[k] for k in want})
        rows_per_method = {}
        for k in want:
            for row, v in union[k].items():
                rows_per_method.setdefault((row, v[0]), 0)
                rows_per_method[(row, v[0])] += 1
        with mcon(out) as con:
            view = {(r, m): (n, s) for r, m, n, s in con.execute("SELECT * FROM row_counts")}
            info = dict(con.execute("SELECT key, value FROM info"))
        self.assertEqual({k: v[0] for k, v in view.items()}, rows_per_method)
        self.assertEqual({k: v[1] for k, v in view.items()},
                         {rm: sum(1 for k in want if rm[0] in union[k] and len(union[k]) > 1) for rm in view})
        self.assertEqual(set(m for _, m in view), {"as_is", "sample", "cluster"})
        # per-sample metadata against the catalog
        con = db(self.work)
        first = {}
        for sha, coll, key, label in con.execute(
                "SELECT i.sha256, c.name, m.key, m.label FROM members m JOIN collections c ON c.id = m.collection_id"
                " JOIN images i ON i.id = m.image_id"):
            cur = first.get(sha)
            if cur is None or (coll.encode(), key.encode()) < (cur[0].encode(), cur[1].encode()):
                first[sha] = (coll, key, label)
        urls = {}
        for sha, url, cap in con.execute("SELECT i.sha256, u.url, u.caption FROM urls u JOIN images i ON i.id = u.image_id"):
            if sha not in urls or url.encode() < urls[sha][0].encode():
                urls[sha] = (url, cap)
        orig = {r[0]: r[1:] for r in con.execute("SELECT sha256, format, bytes FROM images")}
        con.close()
        cols = [d[1] for d in mcon(out).execute("PRAGMA table_info(samples)")]
        n_url = n_label = 0
        for r in samples:
            s = dict(zip(cols, r))
            k = s["key"]
            w = wk[k]
            self.assertEqual(s["image_sha256"], k)
            self.assertEqual((s["offset"], s["length"], s["format"], s["width"], s["height"], s["orig_width"],
                              s["orig_height"]), w[1:])
            self.assertEqual((s["orig_format"], s["orig_bytes"]), orig[k])
            self.assertEqual((s["collection"], s["member_key"], s["label"]), first[k])
            self.assertEqual((s["url"], s["caption"]), urls.get(k, (None, None)))
            self.assertEqual(s["weight"], 1)
            n_url += s["url"] is not None
            n_label += s["label"] is not None
        self.assertGreater(n_url, 0)
        self.assertGreater(n_label, 0)
        # info
        self.assertEqual(info["schema_version"], "1")
        self.assertEqual(info["source"], "retrieve")
        self.assertEqual(info["name"], "corpus")
        self.assertEqual(info["registry"], open(self.corpus.registry).read())
        counts = json.loads(info["counts"])
        self.assertEqual(counts["samples"], len(want))
        self.assertEqual(counts["sources"], sum(len(union[k]) for k in want))
        self.assertEqual(counts["without_working_image"]["total"], 1)
        self.assertEqual(counts["without_working_image"]["decode_failed"], 1)
        self.assertEqual(counts["rows"], {row: n for (row, _), n in rows_per_method.items()})
        self.assertEqual(counts["bytes"], sum(wk[k][2] for k in want))
        retr = json.loads(info["retrieval"])
        self.assertEqual(retr["model"]["name"], MODEL)
        self.assertEqual(json.loads(info["dedup"])["model"]["name"], MODEL)
        self.assertEqual(json.loads(info["dedup"])["params"]["threshold"], 0.9999)
        cat = json.loads(info["catalog"])
        self.assertEqual(cat["path"], os.path.realpath(os.path.join(self.work, "catalog.db")))
        with db(self.work) as con:
            self.assertEqual(cat["images"], con.execute("SELECT count(*) FROM images").fetchone()[0])
            self.assertEqual(cat["runs"], con.execute("SELECT count(*) FROM runs").fetchone()[0])
    def test_bytes_shards_and_pixels(self):
        for args in ([], ["--from", "dedup"]):  # dedup: ~100 shards, more than the descriptors kept open
            with self.subTest(args=args):
                self.check_bytes(args)

    def check_bytes(self, args):
        out = os.path.join(self.tmp, "m%d" % len(args), "corpus.db")
        self.build(out, *args)
        mdir = os.path.dirname(out)
        with mcon(out) as con:
            shards = con.execute("SELECT id, path, bytes, sha256 FROM shards ORDER BY id").fetchall()
            samples = con.execute("SELECT key, data_sha256, shard_id, offset, length, width, height, format"
                                  " FROM samples").fetchall()
        self.assertGreater(len(shards), 20)  # --shard-size 4K spread the working images
        self.assertEqual([s[1] for s in shards], sorted(s[1] for s in shards))
        with db(self.work) as con:
            committed = dict(con.execute("SELECT path, committed FROM shards WHERE kind = 'img'"))
        used = set()
        for sid, path, nbytes, sha in shards:
            self.assertFalse(os.path.isabs(path))
            full = os.path.normpath(os.path.join(mdir, path))
            rel = os.path.relpath(full, self.work)
            self.assertEqual(nbytes, committed[rel])
            with open(full, "rb") as f:
                self.assertEqual(hashlib.sha256(f.read(nbytes)).hexdigest(), sha)
        paths = {s[0]: os.path.normpath(os.path.join(mdir, s[1])) for s in shards}
        wk = working(self.work)
        for key, dsha, sid, off, n, w, h, fmt in samples:
            with open(paths[sid], "rb") as f:
                f.seek(off)
                data = f.read(n)
            self.assertEqual(len(data), n)
            self.assertEqual(hashlib.sha256(data).hexdigest(), dsha)
            # the catalog's working image is these bytes
            cpath, coff, csize = wk[key][:3]
            self.assertEqual(os.path.relpath(paths[sid], self.work), cpath)
            with open(os.path.join(self.work, cpath), "rb") as f:
                f.seek(coff)
                self.assertEqual(f.read(csize), data)
            with Image.open(io.BytesIO(data)) as im:
                self.assertEqual(im.size, (w, h))
                self.assertEqual(im.format.lower(), fmt)
            used.add(sid)
        self.assertEqual(used, {s[0] for s in shards})  # only shards that samples use
        # the reader (common/manifest.h, through lvd-manifest verify --deep) accepts what build wrote
        p = run("lvd-manifest", "verify", out, "--deep")
        self.assertIn("%d samples, %d read and checked" % (len(samples), len(samples)), p.stdout + p.stderr)
        self.assertIn(" 0 failures", p.stdout + p.stderr)

    def test_self_contained_paths_and_absolute(self):
        rel = os.path.join(self.tmp, "manifests", "deep", "rel.db")
        ab = os.path.join(self.tmp, "manifests", "abs.db")
        self.build(rel)
        self.build(ab, "--absolute")
        rshards = manifest_rows(rel, "shards", "id")
        ashards = manifest_rows(ab, "shards", "id")
        self.assertTrue(all(p.startswith("../../work/shards/") for _, p, _, _ in rshards), rshards[:2])
        self.assertTrue(all(os.path.isabs(p) for _, p, _, _ in ashards))
        for (i, rp, rb, rs), (j, ap, ab_, as_) in zip(rshards, ashards):
            self.assertEqual((i, rb, rs), (j, ab_, as_))
            self.assertTrue(os.path.samefile(os.path.join(os.path.dirname(rel), rp), ap))
        self.assertEqual(len(rshards), len(ashards))
        # everything but the shards is inside the file: move the work directory away and read it all
        before = {t: manifest_rows(rel, t, o) for t, o in
                  (("info", "key"), ("shards", "id"), ("samples", "id"), ("sample_sources", "sample_id, row"),
                   ("row_counts", "row"))}
        moved = os.path.join(self.tmp, "elsewhere")
        os.rename(self.work, moved)
        con = sqlite3.connect(rel)  # the plain sqlite3 way, read-write open of a finished file
        for t, o in (("info", "key"), ("shards", "id"), ("samples", "id"), ("sample_sources", "sample_id, row"),
                     ("row_counts", "row")):
            self.assertEqual(con.execute("SELECT * FROM %s ORDER BY %s" % (t, o)).fetchall(), before[t], t)
        self.assertEqual(con.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        con.close()
        p = self.stats(rel, "--json")  # stats needs no shards
        self.assertEqual(json.loads(p.stdout)["samples"], len(before["samples"]))
        # a relative manifest moved together with the shards keeps resolving: same layout, other root
        os.rename(moved, self.work)
        self.assertTrue(all(os.path.exists(os.path.join(os.path.dirname(rel), p)) for _, p, _, _ in rshards))

    def test_builds_while_a_stage_holds_the_catalog(self):
        """A reader: the writer lock another process holds does not stop it, and it does not take it."""
        import fcntl
        lock = os.path.join(self.work, "catalog.db.lock")
        with open(lock, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            out = os.path.join(self.tmp, "m", "m.db")
            p = self.build(out, "--json", "--quiet")
            self.assertGreater(json.loads(p.stdout)["samples"], 0)

    def test_deterministic(self):
        """Two builds, and builds on other thread counts: the same rows; only info.created_at differs."""
        a = os.path.join(self.tmp, "a", "m.db")
        self.build(a)
        ia = [r for r in manifest_rows(a, "info", "key") if r[0] != "created_at"]
        self.assertEqual(len(ia), 9)
        for n, args in enumerate(([], ["--threads", "1"], ["--threads", "3"])):
            b = os.path.join(self.tmp, "b%d" % n, "m.db")
            time.sleep(0.01)
            self.build(b, *args)
            for t, o in (("shards", "id"), ("samples", "id"), ("sample_sources", "sample_id, row")):
                ra, rb = manifest_rows(a, t, o), manifest_rows(b, t, o)
                self.assertEqual(ra, rb, (t, args))
                self.assertTrue(ra)
            ib = [r for r in manifest_rows(b, "info", "key") if r[0] != "created_at"]
            self.assertEqual(ia, ib, args)

    def test_from_dedup_is_every_kept_pool_image(self):
        out = os.path.join(self.tmp, "m", "baseline.db")
        self.build(out, "--from", "dedup", "--name", "uncurated")
        wk = working(self.work)
        with db(self.work) as con:
            kept = {r[0] for r in con.execute(
                "SELECT i.sha256 FROM dedup_decisions d JOIN images i ON i.id = d.image_id"
                " JOIN models m ON m.id = d.model_id WHERE m.name = ? AND d.decision = 'kept'", (MODEL,))}
            pool = {r[0] for r in con.execute(
                "SELECT DISTINCT i.sha256 FROM members mb JOIN collections c ON c.id = mb.collection_id"
                " JOIN images i ON i.id = mb.image_id WHERE c.role = 'pool'")}
            removed = con.execute("SELECT count(*) FROM dedup_decisions WHERE decision <> 'kept'").fetchone()[0]
        self.assertEqual(removed, 2)
        self.assertTrue(kept <= pool)
        samples = manifest_rows(out, "samples", "id")
        self.assertEqual([r[1] for r in samples], sorted(k for k in kept if k in wk))
        self.assertEqual(len(samples), len(kept))
        src = manifest_rows(out, "sample_sources", "sample_id")
        self.assertEqual([(r[0], r[1], r[2], r[3], r[7]) for r in src],
                         [(i + 1, "dedup", "kept", None, 0) for i in range(len(samples))])
        # images in two pool collections: their first membership is the collection first by name
        with db(self.work) as con:
            shared = {r[0] for r in con.execute(
                "SELECT i.sha256 FROM images i WHERE (SELECT count(DISTINCT c.name) FROM members m"
                " JOIN collections c ON c.id = m.collection_id WHERE m.image_id = i.id"
                " AND c.name IN ('archive', 'web')) = 2")}
        self.assertEqual(len(shared), 10)
        got = {r[0]: (r[1], r[2]) for r in mcon(out).execute("SELECT key, collection, member_key FROM samples")}
        self.assertEqual({got[k][0] for k in shared}, {"archive"})
        self.assertTrue(all(keyname(got[k][1]).startswith("arch_0") for k in shared))
        info = dict(manifest_rows(out, "info", "key"))
        self.assertEqual((info["source"], info["name"]), ("dedup", "uncurated"))
        self.assertNotIn("registry", info)
        self.assertEqual(json.loads(info["counts"])["rows"], {"dedup": len(samples)})

    def test_from_balance_without_results_is_a_clear_error(self):
        out = os.path.join(self.tmp, "m", "b.db")
        p = self.build(out, "--from", "balance", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no lvd-balance results", p.stderr)
        self.assertIn("run lvd-balance first", p.stderr)
        self.assertFalse(os.path.exists(out))
        self.assertEqual(tmp_files(os.path.dirname(out)), [])

    def test_existing_out_force_and_failures(self):
        out = os.path.join(self.tmp, "m", "m.db")
        mdir = os.path.dirname(out)
        self.build(out)
        orig = lvdtest.sha256_file(out)
        p = self.build(out, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(out, p.stderr)
        self.assertIn("--force", p.stderr)
        self.assertEqual(lvdtest.sha256_file(out), orig)
        time.sleep(0.01)
        self.build(out, "--force", "--name", "again")
        self.assertEqual(dict(manifest_rows(out, "info", "key"))["name"], "again")
        orig = lvdtest.sha256_file(out)
        # a failure mid-way (a shard shorter than its committed size): the old file stays, no temporary file
        first = manifest_rows(out, "shards", "id")[0]  # a shard the manifest uses
        spath = os.path.normpath(os.path.join(mdir, first[1]))
        with db(self.work) as con:
            shard = con.execute("SELECT path, committed FROM shards WHERE path = ?",
                                (os.path.relpath(spath, self.work),)).fetchone()
        keep = open(spath, "rb").read()
        with open(spath, "r+b") as f:
            f.truncate(shard[1] // 2)
        p = self.build(out, "--force", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(spath, p.stderr)
        self.assertIn("shorter", p.stderr)
        self.assertEqual(lvdtest.sha256_file(out), orig)
        self.assertEqual(tmp_files(mdir), [])
        # killed while running (a FIFO in place of a shard blocks the build after its temporary file exists)
        os.unlink(spath)
        os.mkfifo(spath)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            proc = subprocess.Popen([lvdtest.exe("lvd-manifest"), "build", "--work", self.work, "--out", out,
                                     "--force"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            deadline = time.time() + 20
            while not tmp_files(mdir) and time.time() < deadline:
                time.sleep(0.02)
            self.assertEqual(len(tmp_files(mdir)), 1, sig)
            time.sleep(0.1)
            proc.send_signal(sig)
            proc.wait(timeout=20)
            self.assertNotEqual(proc.returncode, 0)
            proc.stdout.close()
            proc.stderr.close()
            self.assertEqual(lvdtest.sha256_file(out), orig)
            if sig == signal.SIGTERM:
                self.assertEqual(tmp_files(mdir), [])
        self.assertEqual(len(tmp_files(mdir)), 1)  # SIGKILL: nothing could remove it ...
        os.unlink(spath)
        with open(spath, "wb") as f:
            f.write(keep)
        self.build(out, "--force", "--name", "third")
        self.assertEqual(tmp_files(mdir), [])  # ... until the next build of the same file
        self.assertEqual(dict(manifest_rows(out, "info", "key"))["name"], "third")

    def test_model_choice(self):
        """Two retrieval models: no default, the error lists both; --model picks one, whose rows alone count."""
        with db(self.work) as con:
            colls = [r[0] for r in con.execute("SELECT name FROM collections ORDER BY name")]
        rng = np.random.default_rng(11)
        for c in colls:
            with db(self.work) as con:
                keys = [r[0] for r in con.execute(
                    "SELECT m.key FROM members m JOIN collections c ON c.id = m.collection_id"
                    " JOIN embeddings e ON e.image_id = m.image_id JOIN models mo ON mo.id = e.model_id"
                    " WHERE c.name = ? AND mo.name = ? ORDER BY m.key", (c, MODEL))]
            npy = os.path.join(self.tmp, "v2-%s.npy" % c)
            np.save(npy, unit(rng.normal(size=(len(keys), D))))
            with open(npy + ".txt", "w") as f:
                f.write("".join(k + "\n" for k in keys))
            run("lvd-embed", "--work", self.work, "--collection", c, "--import", npy, "--keys", npy + ".txt",
                "--name", "vec2", "--dtype", "float32", "--quiet")
        reg = write_registry(os.path.join(self.tmp, "reg-one.yaml"), REGISTRY_ROWS[1:2])
        run("lvd-retrieve", "--work", self.work, "--model", "vec2", "--dedup-model", MODEL, "--registry", reg,
            "--scale", "none", "--quiet")
        out = os.path.join(self.tmp, "m", "m.db")
        p = self.build(out, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("vec, vec2", p.stderr)
        self.assertIn("--model", p.stderr)
        self.build(out, "--model", "vec2")
        self.assertEqual(sources_of(out), {k: v for k, v in retrieval_union(self.work, "vec2").items()})
        info = dict(manifest_rows(out, "info", "key"))
        self.assertEqual(json.loads(info["retrieval"])["model"]["name"], "vec2")
        self.assertEqual(json.loads(info["dedup"])["model"]["name"], MODEL)
        self.assertEqual(json.loads(info["counts"])["rows"], {"one-sample": len(sources_of(out))})

    # ---- stats ----

    def test_stats_against_the_rows(self):
        out = os.path.join(self.tmp, "m", "m.db")
        self.build(out)
        st = json.loads(self.stats(out, "--json").stdout)
        with mcon(out) as con:
            samples = con.execute("SELECT id, length, width, height, orig_width, orig_height, weight, format"
                                  " FROM samples").fetchall()
            srcs = con.execute("SELECT sample_id, row, method, seed_key, collisions FROM sample_sources").fetchall()
            nshards = con.execute("SELECT count(*) FROM shards").fetchone()[0]
        self.assertEqual(st["samples"], len(samples))
        self.assertEqual(st["shards"], nshards)
        self.assertEqual(st["bytes"], sum(s[1] for s in samples))
        self.assertEqual(st["weight_sum"], sum(s[6] for s in samples))
        self.assertEqual(st["sources"], len(srcs))
        rows_of = {}
        for sid, row, *_ in srcs:
            rows_of.setdefault(sid, set()).add(row)
        want_rows = {}
        for sid, row, method, seed, coll in srcs:
            r = want_rows.setdefault((row, method), {"images": 0, "seeds": set(), "collisions": 0, "shared": 0})
            r["images"] += 1
            if seed is not None:
                r["seeds"].add(seed)
            r["collisions"] += coll
            r["shared"] += len(rows_of[sid]) > 1
        got_rows = {(r["row"], r["method"]): r for r in st["rows"]}
        self.assertEqual(set(got_rows), set(want_rows))
        for k, w in want_rows.items():
            g = got_rows[k]
            self.assertEqual((g["images"], g["seeds"], g["collisions"], g["shared"]),
                             (w["images"], len(w["seeds"]), w["collisions"], w["shared"]), k)
        self.assertGreater(sum(w["collisions"] for w in want_rows.values()), 0)
        multi = sum(1 for v in rows_of.values() if len(v) > 1)
        self.assertGreater(multi, 0)
        self.assertEqual(st["duplicates"]["in_several_rows"], multi)
        pairs = {}
        for v in rows_of.values():
            v = sorted(v)
            for i in range(len(v)):
                for j in range(i + 1, len(v)):
                    pairs[(v[i], v[j])] = pairs.get((v[i], v[j]), 0) + 1
        want_pairs = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        self.assertEqual([((p["a"], p["b"]), p["images"]) for p in st["duplicates"]["pairs"]], want_pairs[:10])
        # histograms by the longer side, power-of-two buckets
        def hist(sides):
            h = {}
            for s in sides:
                lo = 0 if s < 32 else 1 << (int(s).bit_length() - 1)
                h[lo] = h.get(lo, 0) + 1
            return h
        for name, idx in (("size_histogram", (2, 3)), ("orig_size_histogram", (4, 5))):
            got = {b["min_side_ge"] if "min_side_ge" in b else b["lo"]: b["count"] for b in st[name] if b["count"]}
            self.assertEqual(got, hist(max(s[idx[0]], s[idx[1]]) for s in samples), name)
            self.assertEqual(sum(b["count"] for b in st[name]), len(samples))
        self.assertEqual(st["formats"], {"jpeg": len(samples)})
        self.assertEqual(st["info"]["source"], "retrieve")
        text = self.stats(out).stdout
        self.assertIn("%d samples" % len(samples), text)
        for row, method in want_rows:
            self.assertIn(row, text)

    # ---- diff ----

    def test_diff_after_a_new_seed_collection(self):
        a = os.path.join(self.tmp, "m", "a.db")
        b = os.path.join(self.tmp, "m", "b.db")
        self.build(a)
        wk = working(self.work)
        before = {k: v for k, v in retrieval_union(self.work).items() if k in wk}
        self.corpus.add_seed_collection(self.work, self.tmp)
        self.build(b)
        wk = working(self.work)
        after = {k: v for k, v in retrieval_union(self.work).items() if k in wk}
        added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
        self.assertGreater(len(added), 0)
        d = json.loads(run("lvd-manifest", "diff", a, b, "--json").stdout)
        self.assertEqual(d["added"]["keys"], added)
        self.assertEqual(d["removed"]["keys"], removed)
        self.assertEqual((d["added"]["count"], d["removed"]["count"]), (len(added), len(removed)))
        rows = set(r for v in list(before.values()) + list(after.values()) for r in v)
        for row in rows:
            got = d["rows"][row]
            self.assertEqual(got["added"], sum(1 for k in added if row in after[k]), row)
            self.assertEqual(got["removed"], sum(1 for k in removed if row in before[k]), row)
            self.assertEqual(got["a"], sum(1 for v in before.values() if row in v))
            self.assertEqual(got["b"], sum(1 for v in after.values() if row in v))
            joined = sum(1 for k, v in after.items() if row in v and not (k in before and row in before[k]))
            left = sum(1 for k, v in before.items() if row in v and not (k in after and row in after[k]))
            self.assertEqual((got["joined"], got["left"]), (joined, left), row)
        self.assertIn("three-sample", d["changed_rows"])
        self.assertEqual(d["rows"]["three-sample"]["a"], 0)
        # text: the totals and the keys
        t = run("lvd-manifest", "diff", a, b, "--all").stdout
        self.assertIn("%d added" % len(added), t)
        for k in added:
            self.assertIn("+ " + k, t)
        # a manifest against itself: nothing
        same = json.loads(run("lvd-manifest", "diff", a, a, "--json").stdout)
        self.assertEqual((same["added"]["count"], same["removed"]["count"], same["changed_rows"]), (0, 0, []))
        rev = json.loads(run("lvd-manifest", "diff", b, a, "--json").stdout)
        self.assertEqual(rev["removed"]["keys"], added)
        # removals: a stricter dedup takes images out of the pool, so out of every selection
        run("lvd-dedup", "--work", self.work, "--model", MODEL, "--threshold", "0.97", "--force", "--quiet")
        run("lvd-retrieve", "--work", self.work, "--model", MODEL, "--registry",
            os.path.join(self.tmp, "registry2.yaml"), "--scale", "none", "--quiet")
        c = os.path.join(self.tmp, "m", "c.db")
        self.build(c)
        wk = working(self.work)
        final = {k: v for k, v in retrieval_union(self.work).items() if k in wk}
        d = json.loads(run("lvd-manifest", "diff", b, c, "--json").stdout)
        self.assertEqual(d["removed"]["keys"], sorted(set(after) - set(final)))
        self.assertEqual(d["added"]["keys"], sorted(set(final) - set(after)))
        self.assertGreater(d["removed"]["count"], 0)
        for row in set(r for v in list(after.values()) + list(final.values()) for r in v):
            self.assertEqual(d["rows"][row]["removed"],
                             sum(1 for k in d["removed"]["keys"] if row in after[k]), row)

    # ---- bad input ----

    def test_bad_inputs(self):
        out = os.path.join(self.tmp, "m", "m.db")
        os.makedirs(os.path.dirname(out))
        cases = [
            (["--work", os.path.join(self.tmp, "nope"), "--out", out], "nope"),
            (["--work", self.tmp, "--out", out], os.path.join(self.tmp, "catalog.db")),
            (["--work", self.work, "--out", os.path.join(self.tmp, "missing", "m.db")], "missing"),
            (["--work", self.work, "--out", out, "--model", "other"], "other"),
            (["--work", self.work, "--out", out, "--from", "dedup", "--model", "other"], "other"),
        ]
        for args, needle in cases:
            p = run("lvd-manifest", "build", *args, check=False)
            self.assertEqual(p.returncode, 1, args)
            self.assertIn(needle, p.stderr, args)
            self.assertFalse(os.path.exists(out))
        p = run("lvd-manifest", "build", "--work", self.work, check=False)
        self.assertEqual(p.returncode, 2)
        p = run("lvd-manifest", "build", "--work", self.work, "--out", out, "--from", "nothing", check=False)
        self.assertEqual(p.returncode, 2)
        # a work directory without retrieval results
        w2 = os.path.join(self.tmp, "w2")
        import_dir(self.tmp, w2, "pool", "pool", {"a.png": picture(1)})
        p = run("lvd-manifest", "build", "--work", w2, "--out", out, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no lvd-retrieve results", p.stderr)
        self.assertEqual(tmp_files(os.path.dirname(out)), [])
        # stats and diff on bad files
        self.build(out)
        junk = os.path.join(self.tmp, "junk.db")
        with open(junk, "wb") as f:
            f.write(os.urandom(5000))
        other = os.path.join(self.tmp, "other.db")
        sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.commit()
        newer = os.path.join(self.tmp, "newer.db")
        shutil.copy(out, newer)
        c = sqlite3.connect(newer)
        c.execute("UPDATE info SET value = '2' WHERE key = 'schema_version'")
        c.commit()
        c.close()
        empty = os.path.join(self.tmp, "empty.db")
        open(empty, "wb").close()
        truncated = os.path.join(self.tmp, "truncated.db")
        with open(out, "rb") as f, open(truncated, "wb") as g:
            g.write(f.read(8192))
        for path, needle in ((os.path.join(self.tmp, "absent.db"), "No such file"), (junk, "not an lvd manifest"),
                             (other, "not an lvd manifest"), (newer, "schema version 2 is newer"),
                             (empty, "not an lvd manifest"), (self.tmp, "directory"),
                             (truncated, "corrupt manifest")):
            for cmd in (["stats", path], ["stats", path, "--json"], ["diff", path, out], ["diff", out, path]):
                p = run("lvd-manifest", *cmd, check=False)
                self.assertEqual(p.returncode, 1, cmd)
                self.assertIn(path, p.stderr, cmd)
                self.assertIn(needle, p.stderr, cmd)
                self.assertEqual(p.stdout, "", cmd)
