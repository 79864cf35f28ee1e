"""lvd-retrieve end to end: pools and seed collections imported with lvd-import, embeddings imported with
lvd-embed --import (clustered synthetic vectors, or PCA of Fashion-MNIST pixels for the real-image test).

Oracles are NumPy, computed from the embedding rows lvd-embed stored (read back from the .npy files the
catalog points at) and, for cluster rows, from the centroids lvd-retrieve stored (assignment and selection
recomputed here). Incremental runs and --part/--merge are compared with runs from scratch."""
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
from PIL import Image

import lvdtest
from lvdtest import TESTS, WorkTestCase, db, run

sys.path.insert(0, os.path.join(os.path.dirname(TESTS), "scripts"))
import fixtures  # noqa: E402

MODEL = "vec"
D = 16


def png(seed):
    """A small PNG whose bytes differ for every seed (so every image is its own catalog image)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


class Data:
    """Clustered unit vectors: `centers` directions, points spread around them."""

    def __init__(self, seed=0, n_centers=6, spread=0.35):
        self.rng = np.random.default_rng(seed)
        self.centers = self.rng.normal(size=(n_centers, D))
        self.spread = spread

    def points(self, n, centers=None):
        c = self.rng.choice(len(self.centers) if centers is None else centers, size=n)
        return unit(self.centers[c] + self.spread * self.rng.normal(size=(n, D)))


def add_collection(test, work, name, role, vectors, first_seed, extra=()):
    """Imports len(vectors) distinct images into collection `name` and their embeddings (row i = key i)."""
    d = os.path.join(test.tmp, "img-%s-%d" % (name, first_seed))
    os.makedirs(d, exist_ok=True)
    keys = []
    for i in range(len(vectors)):
        k = "%s-%06d.png" % (name, first_seed + i)
        with open(os.path.join(d, k), "wb") as f:
            f.write(png(first_seed + i))
        keys.append(k)
    run("lvd-import", "--work", work, "--collection", name, "--role", role, "--dir", d, "--quiet", *extra)
    npy = os.path.join(test.tmp, "%s-%d.npy" % (name, first_seed))
    np.save(npy, np.asarray(vectors, dtype=np.float32))
    kf = npy + ".txt"
    with open(kf, "w") as f:
        f.write("".join(k + "\n" for k in keys))
    run("lvd-embed", "--work", work, "--collection", name, "--import", npy, "--keys", kf, "--name", MODEL,
        "--dtype", "float32", "--quiet")
    shutil.rmtree(d)
    return keys


def write_registry(path, rows):
    lines = ["rows:"]
    for r in rows:
        lines.append("  - " + ", ".join("%s: %s" % (k, v) for k, v in r.items()).join("{}"))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def stored_vectors(work, con, ids):
    """{image id: the embedding row lvd-embed stored for it}, read from the .npy files the catalog names."""
    out, cache = {}, {}
    q = "SELECT e.file, e.row FROM embeddings e JOIN models m ON m.id = e.model_id WHERE m.name = ? AND e.image_id = ?"
    for i in ids:
        f, r = con.execute(q, (MODEL, i)).fetchone()
        if f not in cache:
            cache[f] = np.load(os.path.join(work, f))
        out[i] = cache[f][r].astype(np.float64)
    return out


def collection_ids(con, name):
    return sorted(r[0] for r in con.execute(
        "SELECT m.image_id FROM members m JOIN collections c ON c.id = m.collection_id WHERE c.name = ?", (name,)))


def pool_ids(con, dedup=None):
    """Pool images, kept by the dedup model `dedup` unless None."""
    ids = set(r[0] for r in con.execute("SELECT m.image_id FROM members m JOIN collections c ON c.id = m.collection_id"
                                       " WHERE c.role = 'pool'"))
    if dedup:
        ids &= set(r[0] for r in con.execute("SELECT d.image_id FROM dedup_decisions d JOIN models m ON m.id = d.model_id"
                                            " WHERE m.name = ? AND d.decision = 'kept'", (dedup,)))
    return sorted(ids)


def oracle_sample(vec, pool, seeds, k):
    """{image: (seed, rank, sim, collisions)} by brute force: each seed's k most similar pool images (ties: lower
    image id); an image found by several seeds keeps its most similar (ties: lower seed id)."""
    P = np.stack([vec[i] for i in pool])
    found = {}
    for s in seeds:
        sims = P @ vec[s]
        order = sorted(range(len(pool)), key=lambda j: (-sims[j], pool[j]))[:k]
        for rank, j in enumerate(order):
            found.setdefault(pool[j], []).append((s, rank, float(sims[j])))
    out = {}
    for img, hits in found.items():
        best = min(hits, key=lambda h: (-h[2], h[0]))
        out[img] = (best[0], best[1], best[2], len(hits) - 1)
    return out


def oracle_cluster(vec, pool, seeds, cent, per_cluster, cap, min_seeds):
    """{image: (cluster, rank, sim)} given the centroids: nearest centroid by inner product (ties: lower index);
    clusters with more than min_seeds seeds give their per_cluster images nearest the centroid; the row keeps the
    cap images nearest their centroid (ties: lower image id)."""
    def assign(i):
        s = cent @ vec[i]
        c = int(np.argmax(s))
        return c, float(s[c])
    a = {i: assign(i) for i in pool}
    counts = {}
    for s in seeds:
        c = assign(s)[0]
        counts[c] = counts.get(c, 0) + 1
    chosen = {c for c, n in counts.items() if n > min_seeds}
    taken = []
    for c in sorted(chosen):
        members = sorted((i for i in pool if a[i][0] == c), key=lambda i: (-a[i][1], i))[:per_cluster]
        taken += [(i, c, r, a[i][1]) for r, i in enumerate(members)]
    taken.sort(key=lambda t: (-t[3], t[0]))
    return {t[0]: (t[1], t[2], t[3]) for t in taken[:cap]}, counts, chosen


def selections(con, row):
    return {r[0]: r[1:] for r in con.execute(
        "SELECT s.image_id, s.seed_image_id, s.rank, s.sim, s.cluster, s.collisions FROM retrieve_selections s"
        " JOIN retrieve_rows r ON r.id = s.row_id WHERE r.name = ?", (row,))}


def selections_by_sha(con):
    """Every selection keyed by (row, image sha256), seeds as sha256 too: comparable across work directories."""
    return sorted(con.execute(
        "SELECT r.name, i.sha256, si.sha256, s.rank, round(s.sim, 9), s.cluster, s.collisions FROM retrieve_selections s"
        " JOIN retrieve_rows r ON r.id = s.row_id JOIN images i ON i.id = s.image_id"
        " LEFT JOIN images si ON si.id = s.seed_image_id"), key=lambda t: tuple("" if v is None else str(v) for v in t))


class RetrieveTest(WorkTestCase):
    ROWS = [dict(name="one-as-is", dataset="one", method="as_is", collection="seeds-one"),
            dict(name="one-sample", dataset="one", method="sample", k=5, collection="seeds-one"),
            dict(name="two-cluster", dataset="two", method="cluster", collection="seeds-two", clusters=6,
                 per_cluster=30, cap=70, min_seeds=2),
            dict(name="absent", dataset="nowhere", method="sample", k=2)]

    @staticmethod
    def vectors(data, n_pool=400):
        """The pool and the two seed collections of ROWS: (name, role, vectors, first image seed)."""
        return [("web", "pool", data.points(n_pool), 0), ("seeds-one", "seed", data.points(15, [0, 1]), 100000),
                ("seeds-two", "seed", data.points(20, [2]), 200000)]

    def build(self, work, sets):
        for name, role, v, first in sets:
            add_collection(self, work, name, role, v, first)

    def retrieve(self, work, registry, *args, check=True):
        p = run("lvd-retrieve", "--work", work, "--model", MODEL, "--registry", registry, "--scale", "none", "--json",
                *args, check=check)
        return p, (json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None)

    def check_against_oracles(self, work, dedup=None):
        with db(work) as con:
            pool = pool_ids(con, dedup)
            one, two = collection_ids(con, "seeds-one"), collection_ids(con, "seeds-two")
            vec = stored_vectors(work, con, set(pool) | set(one) | set(two))
            # as_is: the seeds themselves
            got = selections(con, "one-as-is")
            self.assertEqual(sorted(got), one)
            self.assertTrue(all(v[0] == i and v[1] == 0 for i, v in got.items()))
            # sample: brute force
            want = oracle_sample(vec, pool, one, 5)
            got = selections(con, "one-sample")
            self.assertEqual(sorted(got), sorted(want))
            for img, (s, rank, sim, coll) in want.items():
                g = got[img]
                self.assertEqual((g[0], g[1], g[4]), (s, rank, coll), img)
                self.assertAlmostEqual(g[2], sim, places=9)
            self.assertGreater(sum(v[3] for v in want.values()), 0, "the data has collisions")
            # cluster: NumPy given the stored centroids
            path, per, cap, mins = con.execute(
                "SELECT k.path, r.per_cluster, r.cap, r.min_seeds FROM retrieve_rows r JOIN retrieve_kmeans k"
                " ON k.id = r.kmeans_id WHERE r.name = 'two-cluster'").fetchone()
            cent = np.load(os.path.join(work, path)).astype(np.float64)
            want, counts, chosen = oracle_cluster(vec, pool, two, cent, per, cap, mins)
            got = selections(con, "two-cluster")
            self.assertEqual(sorted(got), sorted(want))
            for img, (c, rank, sim) in want.items():
                self.assertEqual((got[img][3], got[img][1]), (c, rank), img)
                self.assertAlmostEqual(got[img][2], sim, places=6)
            stored = {r[0]: (r[1], r[2]) for r in con.execute(
                "SELECT c.cluster, c.seeds, c.chosen FROM retrieve_clusters c JOIN retrieve_rows r ON r.id = c.row_id"
                " WHERE r.name = 'two-cluster'")}
            self.assertEqual(stored, {c: (n, int(c in chosen)) for c, n in counts.items()})
            return pool, want

    def test_methods_against_numpy(self):
        self.build(self.work, self.vectors(Data(1)))
        reg = write_registry(os.path.join(self.tmp, "r.yaml"), self.ROWS)
        p, out = self.retrieve(self.work, reg, "--no-dedup")
        rows = {r["row"]: r for r in out["rows"]}
        self.assertEqual(rows["absent"]["status"], "skipped")
        self.assertIn("no collection 'nowhere'", rows["absent"]["reason"])
        self.assertEqual((rows["one-sample"]["seeds"], rows["one-sample"]["retrieved"]), (15, 75))
        self.assertEqual(rows["one-sample"]["retrieved"] - rows["one-sample"]["collisions"],
                         rows["one-sample"]["final"])
        pool, want = self.check_against_oracles(self.work)
        self.assertEqual(rows["two-cluster"]["final"], len(want))
        self.assertEqual(out["pool"], len(pool))
        # CSV: every selection, keys of the imported files.
        csv_path = os.path.join(self.tmp, "sel.csv")
        p2, out2 = self.retrieve(self.work, reg, "--no-dedup", "--csv", csv_path)
        self.assertIn("nothing new to retrieve", p2.stderr)
        with open(csv_path) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "row,method,image_sha256,image_key,seed_key,rank,similarity,cluster,collisions")
        with db(self.work) as con:
            n = con.execute("SELECT count(*) FROM retrieve_selections").fetchone()[0]
        self.assertEqual(len(lines) - 1, n)
        self.assertTrue(any(l.startswith("one-sample,sample,") and ",web-" in l and ",seeds-one-" in l for l in lines))
        # --recluster trains a new k-means (another seed here, so other centroids) and selects again with it.
        p3, out3 = self.retrieve(self.work, reg, "--no-dedup", "--recluster", "--kmeans-seed", "99", "--force",
                                 "--only", "two-cluster")
        with db(self.work) as con:
            ids = [r[0] for r in con.execute("SELECT id FROM retrieve_kmeans ORDER BY id")]
            self.assertEqual(len(ids), 2)
            self.assertEqual({r[0] for r in con.execute("SELECT DISTINCT kmeans_id FROM retrieve_assign")}, {ids[1]})
        self.check_against_oracles(self.work)

    def test_incremental_equals_from_scratch(self):
        data = Data(2)
        reg = write_registry(os.path.join(self.tmp, "r.yaml"), self.ROWS[:2])
        scratch = os.path.join(self.tmp, "scratch")
        first, later = data.points(300), data.points(120)
        seeds = data.points(15, [0, 1])
        for w in (self.work, scratch):
            add_collection(self, w, "web", "pool", first, 0)
            add_collection(self, w, "seeds-one", "seed", seeds, 100000)
        self.retrieve(self.work, reg, "--no-dedup")
        # New pool images: only they are searched against the seeds, and the result is the from-scratch one.
        add_collection(self, self.work, "web", "pool", later, 500000)
        add_collection(self, scratch, "web", "pool", later, 500000)
        p, out = self.retrieve(self.work, reg, "--no-dedup")
        self.assertIn("pool images newer than the seeds' last search", p.stderr)
        self.assertEqual(out["pool_new"], 120)
        self.retrieve(scratch, reg, "--no-dedup")
        with db(self.work) as a, db(scratch) as b:
            self.assertEqual(selections_by_sha(a), selections_by_sha(b))
        # A new row with a new seed collection runs alone.
        two = data.points(10, [3])
        add_collection(self, self.work, "seeds-two", "seed", two, 200000)
        add_collection(self, scratch, "seeds-two", "seed", two, 200000)
        reg2 = write_registry(os.path.join(self.tmp, "r2.yaml"),
                              self.ROWS[:2] + [dict(name="two-sample", dataset="two", method="sample", k=3,
                                                    collection="seeds-two")])
        with db(self.work) as con:
            before = dict(con.execute("SELECT name, retrieve_run_id FROM retrieve_rows"))
        p, out = self.retrieve(self.work, reg2, "--no-dedup")
        self.assertEqual({r["row"]: r["searched_now"] for r in out["rows"]},
                         {"one-as-is": 0, "one-sample": 0, "two-sample": 10})
        with db(self.work) as con:
            after = dict(con.execute("SELECT name, retrieve_run_id FROM retrieve_rows"))
        self.assertEqual({k: v for k, v in after.items() if k != "two-sample"}, before, "other rows untouched")
        self.retrieve(scratch, reg2, "--no-dedup", "--force")
        with db(self.work) as a, db(scratch) as b:
            self.assertEqual(selections_by_sha(a), selections_by_sha(b))
        # Nothing new: nothing done.
        p, out = self.retrieve(self.work, reg2, "--no-dedup")
        self.assertIn("nothing new to retrieve", p.stderr)
        self.assertTrue(all(r["searched_now"] == 0 for r in out["rows"]))

    def test_parts_and_merge_equal_one_run(self):
        sets = self.vectors(Data(3))
        reg = write_registry(os.path.join(self.tmp, "r.yaml"), self.ROWS)
        one = os.path.join(self.tmp, "one")
        self.build(one, sets)
        self.build(self.work, sets)
        self.retrieve(one, reg, "--no-dedup")
        # Parts need the pool and the k-means recorded first.
        p, _ = self.retrieve(self.work, reg, "--no-dedup", "--part", "0/2", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--prepare", p.stderr)
        self.retrieve(self.work, reg, "--no-dedup", "--prepare")
        for i in range(2):
            self.retrieve(self.work, reg, "--no-dedup", "--part", "%d/2" % i)
        with db(self.work) as con:
            self.assertEqual(con.execute("SELECT count(*) FROM retrieve_selections").fetchone()[0], 0)
        p, out = self.retrieve(self.work, reg, "--no-dedup", "--merge")
        self.assertTrue(all(r["searched_now"] == 0 for r in out["rows"] if r["method"] == "sample"),
                        "the merge finds every search done")
        with db(self.work) as a, db(one) as b:
            self.assertEqual(selections_by_sha(a), selections_by_sha(b))
        self.check_against_oracles(self.work)

    def test_dedup_defines_the_pool_and_removals_leave(self):
        data = Data(4)
        pool = data.points(300)
        # Planted near-copies: 40 pool images twice, a hair apart.
        near = unit(pool[:40] + 0.002 * data.rng.normal(size=(40, D)))
        add_collection(self, self.work, "web", "pool", np.concatenate([pool, near]), 0)
        add_collection(self, self.work, "seeds-one", "seed", data.points(15, [0, 1]), 100000)
        add_collection(self, self.work, "seeds-two", "seed", data.points(20, [2]), 200000)
        reg = write_registry(os.path.join(self.tmp, "r.yaml"), self.ROWS[:3])
        p, _ = self.retrieve(self.work, reg, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--no-dedup", p.stderr)
        run("lvd-dedup", "--work", self.work, "--model", MODEL, "--threshold", "0.999", "--quiet")
        self.retrieve(self.work, reg)
        with db(self.work) as con:
            kept = pool_ids(con, MODEL)
        self.assertEqual(len(kept), 300, "the near copies are not in the pool")
        self.check_against_oracles(self.work, dedup=MODEL)
        # A stricter dedup removes more: those images leave every selection, which equals a search from scratch.
        run("lvd-dedup", "--work", self.work, "--model", MODEL, "--threshold", "0.97", "--force", "--quiet")
        p, out = self.retrieve(self.work, reg)
        self.assertGreater(out["pool_left"], 0)
        with db(self.work) as con:
            kept2 = pool_ids(con, MODEL)
            self.assertLess(len(kept2), len(kept))
            gone = set(kept) - set(kept2)
            sel = {r[0] for r in con.execute("SELECT image_id FROM retrieve_selections")}
        self.assertFalse(sel & gone)
        self.check_against_oracles(self.work, dedup=MODEL)

    def test_kill_and_rerun_equals_clean_run(self):
        data = Data(6)
        sets = [("web", "pool", data.points(1500), 0), ("seeds-one", "seed", data.points(800, [0, 1]), 100000),
                ("seeds-two", "seed", data.points(20, [2]), 200000)]
        reg = write_registry(os.path.join(self.tmp, "r.yaml"), self.ROWS[:3])
        clean = os.path.join(self.tmp, "clean")
        self.build(clean, sets)
        self.build(self.work, sets)
        self.retrieve(clean, reg, "--no-dedup")
        cat = os.path.join(self.work, "catalog.db")
        args = [os.path.join(lvdtest.BUILD, "lvd-retrieve"), "--work", self.work, "--model", MODEL, "--registry", reg,
                "--scale", "none", "--no-dedup", "--batch", "1"]
        killed = False
        for attempt in range(5):  # one search committed per seed: kill after the first commits, before the last
            # An attempt that finished first leaves nothing to do: the next one searches everything again.
            proc = subprocess.Popen(args + (["--force"] if attempt else []), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            n = 0
            while proc.poll() is None:
                try:
                    with sqlite3.connect("file:%s?mode=ro" % cat, uri=True, timeout=5) as con:
                        n = con.execute("SELECT count(*) FROM retrieve_seeds").fetchone()[0]
                except sqlite3.OperationalError:
                    n = 0
                if n >= 10:
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.002)
            proc.wait()
            if proc.returncode == -signal.SIGKILL and n < 800:
                killed = True
                break
        self.assertTrue(killed, "the run was never caught between two commits")
        with db(self.work) as con:
            self.assertEqual(con.execute("SELECT status FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0], "running")
            self.assertEqual(con.execute("SELECT count(*) FROM retrieve_selections").fetchone()[0], 0)
        p, out = self.retrieve(self.work, reg, "--no-dedup")
        searched = {r["row"]: r["searched_now"] for r in out["rows"]}
        self.assertLess(searched["one-sample"], 800, "the rerun resumes: searches committed before the kill stay")
        with db(self.work) as a, db(clean) as b:
            self.assertEqual(selections_by_sha(a), selections_by_sha(b))
            self.assertEqual(a.execute("SELECT status FROM runs WHERE stage = 'retrieve' ORDER BY id").fetchall()[-2:],
                             [("interrupted",), ("done",)])

    def test_errors(self):
        self.build(self.work, self.vectors(Data(5), n_pool=60))
        bad = os.path.join(self.tmp, "bad.yaml")
        with open(bad, "w") as f:
            f.write("rows:\n  - name: a\n    dataset: x\n    method: sample\n    k: 0\n")
        p, _ = self.retrieve(self.work, bad, "--no-dedup", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn(bad + ":5:", p.stderr)
        reg = write_registry(os.path.join(self.tmp, "r.yaml"), self.ROWS)
        p, _ = self.retrieve(self.work, reg, "--no-dedup", "--only", "one-sample,nope", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("nope", p.stderr)
        # Seed images without an embedding of the model: an error naming the collection to embed.
        d = os.path.join(self.tmp, "more")
        os.makedirs(d)
        with open(os.path.join(d, "late.png"), "wb") as f:
            f.write(png(999999))
        run("lvd-import", "--work", self.work, "--collection", "seeds-one", "--role", "seed", "--dir", d, "--quiet")
        p, _ = self.retrieve(self.work, reg, "--no-dedup", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("seeds-one", p.stderr)
        self.assertIn("lvd-embed", p.stderr)
        # Other parameters on recorded rows: an error unless --force.
        p, _ = self.retrieve(self.work, reg, "--no-dedup", "--only", "two-cluster")
        p, _ = self.retrieve(self.work, reg, "--no-dedup", "--only", "two-cluster", "--cap", "5", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--force", p.stderr)
        p, out = self.retrieve(self.work, reg, "--no-dedup", "--only", "two-cluster", "--cap", "5", "--force")
        self.assertEqual(out["rows"][0]["final"], 5)


class RetrieveFashionTest(WorkTestCase):
    """Fashion-MNIST train as the pool, 50 test images of two classes as seeds, PCA of the pixels as the
    descriptor (fitted on the pool; no labels used): the fraction of retrieved pool images of a seed class."""

    POOL = 6000
    CLASSES = (1, 8)  # trouser, bag

    def test_label_precision(self):
        if not os.path.isdir(fixtures.DATA_DIR):
            self.skipTest("dataset-fashion-mnist is not installed")
        xtr, ytr = fixtures.fashion("train")
        xte, yte = fixtures.fashion("t10k")
        pool_idx = np.arange(self.POOL)
        seed_idx = np.concatenate([np.flatnonzero(yte == c)[:25] for c in self.CLASSES])
        X = xtr[pool_idx].reshape(len(pool_idx), -1).astype(np.float64) / 255.0
        mean = X.mean(axis=0)
        _, _, vt = np.linalg.svd(X - mean, full_matrices=False)
        proj = vt[:48].T

        def describe(imgs):
            return unit((imgs.reshape(len(imgs), -1).astype(np.float64) / 255.0 - mean) @ proj)

        def images(dir, arr, idx, labels):
            for i in idx:
                sub = os.path.join(dir, "c%d" % labels[i])
                os.makedirs(sub, exist_ok=True)
                Image.fromarray(arr[i], "L").save(os.path.join(sub, "%05d.png" % i))

        for name, role, arr, lab, idx in (("fmnist-train", "pool", xtr, ytr, pool_idx),
                                          ("fmnist-seeds", "seed", xte, yte, seed_idx)):
            d = os.path.join(self.tmp, name)
            images(d, arr, idx, lab)
            run("lvd-import", "--work", self.work, "--collection", name, "--role", role, "--dir", d,
                "--label-from", "parent-dir", "--quiet")
            keys = ["c%d/%05d.png" % (lab[i], i) for i in idx]
            npy = os.path.join(self.tmp, name + ".npy")
            np.save(npy, describe(arr[idx]))
            with open(npy + ".txt", "w") as f:
                f.write("".join(k + "\n" for k in keys))
            run("lvd-embed", "--work", self.work, "--collection", name, "--import", npy, "--keys", npy + ".txt",
                "--name", MODEL, "--quiet")
        reg = write_registry(os.path.join(self.tmp, "r.yaml"), [
            dict(name="fm-sample", dataset="fm", method="sample", k=8, collection="fmnist-seeds"),
            dict(name="fm-cluster", dataset="fm", method="cluster", collection="fmnist-seeds", clusters=60,
                 per_cluster=100, cap=600, min_seeds=3)])
        run("lvd-retrieve", "--work", self.work, "--model", MODEL, "--registry", reg, "--no-dedup", "--scale", "none")
        want = {"c%d" % c for c in self.CLASSES}
        with db(self.work) as con:
            for row in ("fm-sample", "fm-cluster"):
                labels = [r[0] for r in con.execute(
                    "SELECT m.label FROM retrieve_selections s JOIN retrieve_rows r ON r.id = s.row_id"
                    " JOIN members m ON m.image_id = s.image_id JOIN collections c ON c.id = m.collection_id"
                    " WHERE r.name = ? AND c.name = 'fmnist-train'", (row,))]
                precision = sum(l in want for l in labels) / len(labels)
                print("# %s: %d retrieved, label precision %.3f" % (row, len(labels), precision))
                self.assertGreater(len(labels), 50)
                self.assertGreaterEqual(precision, 0.8, row)
