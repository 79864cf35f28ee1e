"""lvd-dedup end to end: pool images imported with lvd-import, decoded with lvd-decode, embeddings imported with
lvd-embed --import, deduplicated; the catalog's decisions are compared with a brute-force computation in numpy
over the same stored embedding rows.

Controlled embeddings (mechanism): planted duplicate groups, a chain that connects only transitively, benchmark
matches just above and below the threshold; incremental rounds, partitioned runs, kill -9, parameter changes.
Real pictures: Fashion-MNIST pool (scripts/fixtures.py) with planted near copies (JPEG q60, resize 90%, crop 90%,
flip, brightness), embedded with a pixel-space descriptor computed here; precision and recall measured.

Embeddings of one model name come from several lvd-embed --import runs, one per collection and round, each
with its own .npy holding the rows of that collection's members. "anchor.png" is in the pool and in the
benchmark (the same bytes: one image); the benchmark import finds its row already present. It must be removed
for the benchmark with similarity 1.
"""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np
from PIL import Image

from lvdtest import WorkTestCase, db, exe, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import fixtures  # noqa: E402

DIM = 48
MODEL = "m"


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def e(i):
    v = np.zeros(DIM)
    v[i] = 1.0
    return v


def save_png(path, idx, size, split="t10k"):
    fixtures.picture(idx, split, size).save(path)


def import_dir(work, coll, role, d):
    run("lvd-import", "--work", work, "--collection", coll, "--role", role, "--dir", d, "--quiet")


def members(work, coll):
    """{file name: (key, image_id)} of a collection."""
    with db(work) as con:
        rows = con.execute("SELECT m.key, m.image_id FROM members m JOIN collections c ON c.id = m.collection_id"
                           " WHERE c.name = ?", (coll,)).fetchall()
    return {os.path.basename(k): (k, i) for k, i in rows}


def import_embeddings(work, tmp, names, mat, colls):
    """For each collection of colls, one lvd-embed --import under MODEL of the rows of mat (row i belongs to file
    names[i]) whose file is a member of it, from a file of its own. Members that already have a row (imported
    with another collection or in an earlier round) are skipped by lvd-embed; the summary must say so."""
    mat = np.asarray(mat, np.float32)
    for coll in colls:
        m = members(work, coll)
        rows = [i for i, n in enumerate(names) if n in m]
        stem = os.path.join(tmp, "emb-%s-%d" % (coll, len(os.listdir(tmp))))
        np.save(stem + ".npy", mat[rows])
        with open(stem + ".txt", "w") as f:
            f.write("".join(m[names[i]][0] + "\n" for i in rows))
        with db(work) as con:
            have = {i for (i,) in con.execute("SELECT e.image_id FROM embeddings e JOIN models d ON d.id = e.model_id"
                                              " WHERE d.name = ?", (MODEL,))}
        p = run("lvd-embed", "--work", work, "--collection", coll, "--import", stem + ".npy", "--keys", stem + ".txt",
                "--name", MODEL, "--json", "--quiet")
        s = json.loads(p.stdout)
        ids = {m[names[i]][1] for i in rows}
        assert (s["embedded"], s["already_present"]) == (len(ids - have), len(ids & have)), (coll, s)


def dedup(work, *args, check=True):
    p = run("lvd-dedup", "--work", work, "--model", MODEL, "--json", *args, check=check)
    return p, (json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 and p.stdout.strip() else None)


def stored_vectors(work):
    """{image_id: float64 vector} through the catalog's (file, row)."""
    with db(work) as con:
        rows = con.execute("SELECT e.image_id, e.file, e.row FROM embeddings e JOIN models m ON m.id = e.model_id"
                           " WHERE m.name = ?", (MODEL,)).fetchall()
    files, out = {}, {}
    for iid, f, r in rows:
        if f not in files:
            files[f] = np.load(os.path.join(work, f))
        out[iid] = files[f][r].astype(np.float64)
    return out


def brute_force(work, thr=0.6, bthr=0.45, rule="component"):
    """Decisions by brute force over every pair (k >= pool size): {image: (decision, component, kept)}, plus
    {component: (size, weakest sim, weakest pair)} and the set of benchmark pairs above bthr."""
    vec = stored_vectors(work)
    with db(work) as con:
        pool = sorted(i for (i,) in con.execute(
            "SELECT DISTINCT m.image_id FROM members m JOIN collections c ON c.id = m.collection_id"
            " WHERE c.role = 'pool'") if i in vec)
        bench = con.execute("SELECT m.image_id, m.collection_id FROM members m JOIN collections c ON"
                            " c.id = m.collection_id WHERE c.role = 'benchmark'").fetchall()
        # Original pixel counts from the original bytes, decoded here with PIL.
        pixels = {}
        for i in pool:
            from lvdtest import read_image_bytes
            import io
            with Image.open(io.BytesIO(read_image_bytes(work, con, i))) as im:
                pixels[i] = im.size[0] * im.size[1]
    P = np.stack([vec[i] for i in pool])
    S = P @ P.T
    n = len(pool)
    edges = sorted(((S[a, b], a, b) for a in range(n) for b in range(a + 1, n) if S[a, b] > thr),
                   key=lambda t: (-t[0], t[1], t[2]))
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x
    tree = []
    for s, a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            tree.append((s, a, b))
    comp = [min(j for j in range(n) if find(j) == find(i)) for i in range(n)]
    weakest = {}
    for s, a, b in tree:
        weakest[comp[a]] = (s, pool[a], pool[b])
    strongest_edge = {}
    for s, a, b in edges:
        strongest_edge.setdefault(a, s)
        strongest_edge.setdefault(b, s)
    bmatch, pairs = {}, set()
    for bi, bc in bench:
        if bi not in vec:
            continue
        for a in range(n):
            s = float(P[a] @ vec[bi])
            if s > bthr:
                pairs.add((pool[a], bi))
                bmatch[a] = max(bmatch.get(a, -2), s)
    removed = set(bmatch)
    if rule == "component":
        bad = {comp[a] for a in bmatch}
        removed = {a for a in range(n) if comp[a] in bad}
    kept = {}
    for a in range(n):
        if a in removed:
            continue
        c = comp[a]
        if c not in kept or pixels[pool[a]] > pixels[pool[kept[c]]]:
            kept[c] = a
    dec = {}
    for a in range(n):
        c = comp[a]
        d = "benchmark" if a in removed else "kept" if kept.get(c) == a else "duplicate"
        dec[pool[a]] = (d, pool[c], pool[kept[c]] if c in kept else None)
    comps = {pool[c]: (comp.count(c), weakest.get(c)) for c in set(comp)}
    return dec, comps, pairs, {pool[a]: s for a, s in strongest_edge.items()}


def catalog_decisions(work):
    with db(work) as con:
        dec = {i: (d, c, k) for i, d, c, k in con.execute(
            "SELECT image_id, decision, component, kept_image_id FROM dedup_decisions")}
        comps = {c: (n, None if ws is None else (ws, wa, wb)) for c, n, ws, wa, wb in con.execute(
            "SELECT component, size, weakest_sim, weakest_a, weakest_b FROM dedup_components")}
        edge = {i: s for i, s in con.execute("SELECT image_id, edge_sim FROM dedup_decisions WHERE edge_sim IS NOT NULL")}
        pairs = set(con.execute("SELECT image_id, bench_image_id FROM dedup_benchmark_matches"))
    return dec, comps, pairs, edge


def state(work):
    """Everything a dedup run decides, without run ids: for comparing runs."""
    with db(work) as con:
        return (sorted(con.execute("SELECT image_id, decision, component, kept_image_id, round(kept_sim, 9),"
                                   " edge_image_id, round(edge_sim, 9), edge_kind, bench_image_id, bench_collection_id,"
                                   " round(bench_sim, 9), bench_via_image_id FROM dedup_decisions")),
                sorted(con.execute("SELECT component, size, kept_image_id, removed_duplicate, removed_benchmark,"
                                   " round(weakest_sim, 9), weakest_a, weakest_b, weakest_kind, round(strongest_sim, 9),"
                                   " bench_image_id, bench_via_image_id, round(bench_sim, 9) FROM dedup_components")),
                sorted(con.execute("SELECT image_a, image_b, round(sim, 9), kind FROM dedup_edges")),
                sorted(con.execute("SELECT image_id, collection_id, bench_image_id, round(sim, 9)"
                                   " FROM dedup_benchmark_matches")))


class Controlled:
    """Pool and benchmark files with planted embeddings (see the module comment)."""

    def __init__(self, base):
        self.base = base
        self.pool1, self.pool2, self.bench = (os.path.join(base, d) for d in ("pool1", "pool2", "bench"))
        for d in (self.pool1, self.pool2, self.bench):
            os.makedirs(d)
        vec = {}
        # Anchor: in every collection.
        for d in (self.pool1, self.bench):
            save_png(os.path.join(d, "anchor.png"), 0, (100, 100))
        vec["anchor.png"] = e(0)
        k = 1
        # Group G: four images pairwise 0.9025; sizes differ so the keep rule has a clear answer.
        self.group = ["g%d.png" % i for i in range(4)]
        for i, name in enumerate(self.group):
            save_png(os.path.join(self.pool1 if i < 3 else self.pool2, name), 10 + i, (100 + 20 * i, 100))
            vec[name] = 0.95 * e(1) + np.sqrt(1 - 0.95 ** 2) * e(2 + i)
        # Chain a-b 0.7, b-c 0.7, a-c 0.3.
        u, w = e(7), -0.3725 * e(7) + np.sqrt(1 - 0.3725 ** 2) * e(8)
        vec["ca.png"] = 0.7 * e(6) + np.sqrt(0.51) * u
        vec["cb.png"] = e(6)
        vec["cc.png"] = 0.7 * e(6) + np.sqrt(0.51) * w
        save_png(os.path.join(self.pool1, "ca.png"), 20, (120, 120))
        save_png(os.path.join(self.pool1, "cb.png"), 21, (110, 110))
        save_png(os.path.join(self.pool2, "cc.png"), 22, (100, 100))
        # Benchmark match just above 0.45 (p1) with a pool duplicate p1d that is below it alone; just below (p2).
        save_png(os.path.join(self.bench, "b1.png"), 30, (100, 100))
        save_png(os.path.join(self.bench, "b2.png"), 31, (100, 100))
        save_png(os.path.join(self.bench, "b3.png"), 32, (100, 100))
        vec["b1.png"], vec["b2.png"], vec["b3.png"] = e(10), e(13), e(15)
        p1 = 0.47 * e(10) + np.sqrt(1 - 0.47 ** 2) * e(11)
        vec["p1.png"] = p1
        vec["p1d.png"] = 0.9 * p1 + np.sqrt(0.19) * e(12)
        vec["p2.png"] = 0.43 * e(13) + np.sqrt(1 - 0.43 ** 2) * e(14)
        save_png(os.path.join(self.pool1, "p1.png"), 40, (100, 100))
        save_png(os.path.join(self.pool2, "p1d.png"), 41, (100, 100))
        save_png(os.path.join(self.pool1, "p2.png"), 42, (100, 100))
        # Singletons.
        for i in range(6):
            name = "s%d.png" % i
            save_png(os.path.join(self.pool1, name), 50 + i, (100, 100))
            vec[name] = e(20 + i)
        self.names = ["anchor.png"] + sorted(n for n in vec if n != "anchor.png")
        self.mat = np.stack([unit(vec[n]) for n in self.names])

    def round1(self, work, tmp):
        import_dir(work, "web", "pool", self.pool1)
        import_dir(work, "bench", "benchmark", self.bench)
        run("lvd-decode", "--work", work, "--size", "64", "--quiet")
        import_embeddings(work, tmp, self.names, self.mat, ["web", "bench"])

    def round2(self, work, tmp):
        import_dir(work, "web", "pool", self.pool2)
        run("lvd-decode", "--work", work, "--size", "64", "--quiet")
        import_embeddings(work, tmp, self.names, self.mat, ["web"])

    def full(self, work, tmp):
        self.round1(work, tmp)
        self.round2(work, tmp)


class ControlledTest(WorkTestCase):
    @classmethod
    def setUpClass(cls):
        cls.base = tempfile.mkdtemp(prefix="lvd-it-dedup-")
        cls.c = Controlled(os.path.join(cls.base, "files"))
        cls.full = os.path.join(cls.base, "full")
        os.makedirs(os.path.join(cls.base, "t"))
        cls.c.full(cls.full, os.path.join(cls.base, "t"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.base, ignore_errors=True)

    def copy_full(self):
        shutil.copytree(self.full, self.work)
        return self.work

    def ids(self, work):
        m = members(work, "web")
        m.update({n: v for n, v in members(work, "bench").items() if n not in m})
        return {n: i for n, (_, i) in m.items()}

    def test_decisions_equal_brute_force(self):
        w = self.copy_full()
        _, s = dedup(w)
        dec, comps, pairs, strongest = brute_force(w)
        got, gcomps, gpairs, gedge = catalog_decisions(w)
        self.assertEqual(got, dec)
        self.assertEqual(set(gcomps), set(comps))
        for c, (n, weak) in comps.items():
            self.assertEqual(gcomps[c][0], n, c)
            if weak is None:
                self.assertIsNone(gcomps[c][1], c)
            else:
                self.assertAlmostEqual(gcomps[c][1][0], weak[0], places=6)
                self.assertEqual(gcomps[c][1][1:], weak[1:])
        self.assertEqual(gpairs, pairs)
        self.assertEqual(set(gedge), set(strongest))
        for i, sim in strongest.items():
            self.assertAlmostEqual(gedge[i], sim, places=6)
        # The planted structure, named.
        ids = self.ids(w)
        g = [ids[n] for n in self.c.group]
        self.assertEqual(got[g[3]][0], "kept")  # the largest picture of the group
        self.assertEqual([got[i][0] for i in g[:3]], ["duplicate"] * 3)
        chain = [ids[n] for n in ("ca.png", "cb.png", "cc.png")]
        self.assertEqual(len({got[i][1] for i in chain}), 1)
        with db(w) as con:
            ws, kind = con.execute("SELECT weakest_sim, weakest_kind FROM dedup_components WHERE component = ?",
                                   (min(chain),)).fetchone()
            ac = con.execute("SELECT kept_sim FROM dedup_decisions WHERE image_id = ? AND kept_image_id = ?",
                             (ids["cc.png"], ids["ca.png"])).fetchone()
            p1d = con.execute("SELECT decision, bench_image_id, bench_via_image_id, round(bench_sim, 2)"
                              " FROM dedup_decisions WHERE image_id = ?", (ids["p1d.png"],)).fetchone()
            anchor = con.execute("SELECT decision, bench_sim FROM dedup_decisions WHERE image_id = ?",
                                 (ids["anchor.png"],)).fetchone()
            removals = con.execute("SELECT reason, ref_image_id, round(cause_sim, 2) FROM dedup_removals"
                                   " WHERE image_id = ?", (ids["p1.png"],)).fetchone()
            run_row = con.execute("SELECT k, threshold, benchmark_threshold, benchmark_rule, keep_rule, phash_distance,"
                                  " new_images FROM dedup_runs").fetchall()
        self.assertAlmostEqual(ws, 0.7, places=2)
        self.assertEqual(kind, "knn")
        if ac is not None:  # ca kept (largest): cc's direct similarity to it is the 0.3 of the chain
            self.assertAlmostEqual(ac[0], 0.3, places=2)
        self.assertEqual(p1d, ("benchmark", ids["b1.png"], ids["p1.png"], 0.47))
        self.assertEqual(anchor[0], "benchmark")
        self.assertAlmostEqual(anchor[1], 1.0, places=3)
        self.assertEqual(removals, ("benchmark", ids["b1.png"], 0.47))
        self.assertEqual(got[ids["p2.png"]][0], "kept")  # 0.43 < 0.45
        self.assertEqual(run_row, [(64, 0.6, 0.45, "component", "pixels", None, len(dec))])
        self.assertEqual(s["removed_duplicate"], sum(d == "duplicate" for d, _, _ in dec.values()))
        self.assertEqual(s["removed_per_benchmark"], {"bench": 3})
        self.assertIn("vectors", s["index"])
        # Nothing new: nothing done, nothing changed.
        before = state(w)
        p, s = dedup(w)
        self.assertEqual(s["new"], 0)
        self.assertIn("0 new", p.stderr)
        self.assertEqual(state(w), before)

    def test_image_rule_threshold_change_and_errors(self):
        w = self.copy_full()
        dedup(w)
        # Other parameters on existing decisions: refused, naming --force.
        p, _ = dedup(w, "--threshold", "0.5", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--force", p.stderr)
        self.assertIn("threshold 0.6", p.stderr)
        _, s = dedup(w, "--benchmark-rule", "image", "--force")
        dec, _, _, _ = brute_force(w, rule="image")
        got, _, _, _ = catalog_decisions(w)
        self.assertEqual(got, dec)
        ids = self.ids(w)
        self.assertEqual(got[ids["p1d.png"]][0], "kept")
        self.assertEqual(got[ids["p1.png"]][0], "benchmark")
        _, s = dedup(w, "--threshold", "0.75", "--force")
        dec, _, _, _ = brute_force(w, thr=0.75)
        got, _, _, _ = catalog_decisions(w)
        self.assertEqual(got, dec)
        self.assertEqual(len({got[ids[n]][1] for n in ("ca.png", "cb.png", "cc.png")}), 3)  # the chain's 0.7 < 0.75
        self.assertEqual(len({got[ids[n]][1] for n in self.c.group}), 1)
        # Bad input.
        p = run("lvd-dedup", "--work", w, "--model", "nope", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("nope", p.stderr)
        p = run("lvd-dedup", "--work", w, "--model", MODEL, "--benchmark-rule", "all", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--benchmark-rule", p.stderr)
        p = run("lvd-dedup", "--work", w, check=False)
        self.assertEqual(p.returncode, 2)
        p = run("lvd-dedup", "--work", os.path.join(self.tmp, "none"), "--model", MODEL, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("catalog", p.stderr)

    def test_incremental_equals_clean_run(self):
        t = os.path.join(self.tmp, "t")
        os.makedirs(t)
        self.c.round1(self.work, t)
        _, s1 = dedup(self.work)
        ids = self.ids(self.work)
        with db(self.work) as con:
            kept1 = con.execute("SELECT kept_image_id FROM dedup_decisions WHERE image_id = ?",
                                (ids["g0.png"],)).fetchone()[0]
            singles = sorted(con.execute("SELECT * FROM dedup_decisions WHERE image_id IN (%s)" % ",".join(
                str(ids["s%d.png" % i]) for i in range(6))))
        self.assertEqual(kept1, ids["g2.png"])  # largest of round 1
        self.c.round2(self.work, t)
        _, s2 = dedup(self.work)
        self.assertEqual(s2["new"], 3)
        clean = os.path.join(self.tmp, "clean")
        shutil.copytree(self.full, clean)
        dedup(clean)
        a, b = state(self.work), state(clean)
        self.assertEqual(a[0], b[0])
        self.assertEqual(a[1], b[1])
        self.assertEqual(a[3], b[3])
        ids = self.ids(self.work)
        with db(self.work) as con:
            self.assertEqual(con.execute("SELECT kept_image_id FROM dedup_decisions WHERE image_id = ?",
                                         (ids["g0.png"],)).fetchone()[0], ids["g3.png"])
            # Untouched components keep their rows, run ids included.
            self.assertEqual(sorted(con.execute("SELECT * FROM dedup_decisions WHERE image_id IN (%s)" % ",".join(
                str(ids["s%d.png" % i]) for i in range(6)))), singles)

    def test_parts_equal_one_part(self):
        w = self.copy_full()
        for i in range(2):
            p = run("lvd-dedup", "--work", w, "--model", MODEL, "--part", "%d/2" % i)
            self.assertTrue(os.path.exists(os.path.join(w, "parts", "dedup-%d-of-2.db" % i)))
        with db(w) as con:
            self.assertEqual(con.execute("SELECT count(*) FROM dedup_decisions").fetchone()[0], 0)
        _, s = dedup(w, "--merge")
        one = os.path.join(self.tmp, "one")
        shutil.copytree(self.full, one)
        dedup(one)
        self.assertEqual(state(w), state(one))
        self.assertGreater(s["decided"], 0)
        # Parts searched with other options than the merge's: refused.
        w2 = os.path.join(self.tmp, "w2")
        shutil.copytree(self.full, w2)
        run("lvd-dedup", "--work", w2, "--model", MODEL, "--part", "0/2", "--k", "8")
        run("lvd-dedup", "--work", w2, "--model", MODEL, "--part", "1/2", "--k", "8")
        p, _ = dedup(w2, "--merge", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--force", p.stderr)


def working_image(work, con, image_id):
    path, off, n = con.execute("SELECT s.path, d.offset, d.size FROM decodes d JOIN shards s ON s.id = d.shard_id"
                               " WHERE d.image_id = ?", (image_id,)).fetchone()
    import io
    with open(os.path.join(work, path), "rb") as f:
        f.seek(off)
        return Image.open(io.BytesIO(f.read(n))).convert("L")


def pixel_embedding(img):
    """16x16 grayscale of the working image, made flip-invariant, mean-centred, L2-normalised."""
    a = np.asarray(img.resize((16, 16), Image.BILINEAR), np.float64)
    a = (a + a[:, ::-1]).ravel()
    return unit(a - a.mean())


class RealImagesTest(WorkTestCase):
    N, NEAR, EXACT, NBENCH, NPLANT = 300, 60, 5, 30, 8
    THR = 0.99

    @classmethod
    def setUpClass(cls):
        cls.base = tempfile.mkdtemp(prefix="lvd-it-dedup-real-")
        files, bench = os.path.join(cls.base, "files"), os.path.join(cls.base, "bench")
        cls.pool = fixtures.write_pool(files, cls.N, seed=5, dup_exact=cls.EXACT, dup_near=cls.NEAR)
        os.makedirs(bench)
        save_png(os.path.join(files, "anchor.png"), 9000, (100, 100), "train")
        shutil.copyfile(os.path.join(files, "anchor.png"), os.path.join(bench, "anchor.png"))
        cls.planted = {}
        transforms = fixtures.NEAR_TRANSFORMS
        for k in range(cls.NBENCH):
            img = fixtures.picture(100 + k, "t10k", (160, 200))
            img.save(os.path.join(bench, "t_%02d.png" % k))
            if k < cls.NPLANT:
                t = transforms[k % len(transforms)]
                name = "bcopy_%02d_%s.jpg" % (k, t)
                fixtures._near(img, t).save(os.path.join(files, name), quality=60 if t == "jpeg_q60" else 92)
                cls.planted[name] = "t_%02d.png" % k
        cls.work0 = os.path.join(cls.base, "work")
        import_dir(cls.work0, "web", "pool", files)
        import_dir(cls.work0, "bench", "benchmark", bench)
        run("lvd-decode", "--work", cls.work0, "--size", "64", "--quiet")
        with db(cls.work0) as con:
            ids = [i for (i,) in con.execute("SELECT image_id FROM decodes WHERE status = 'ok' ORDER BY image_id")]
            vec = {i: pixel_embedding(working_image(cls.work0, con, i)) for i in ids}
        mw, mb = members(cls.work0, "web"), members(cls.work0, "bench")
        byid = {}
        for m in (mb, mw):
            for n, (_, i) in m.items():
                byid[i] = n
        names = ["anchor.png"] + sorted(n for n in set(mw) | set(mb) if n != "anchor.png" and n in
                                        {byid[i] for i in ids})
        iid = {n: i for m in (mb, mw) for n, (_, i) in m.items()}
        # The exact copies are the same images as their originals: one name per image is enough.
        seen, uniq = set(), []
        for n in names:
            if iid[n] not in seen:
                seen.add(iid[n])
                uniq.append(n)
        mat = np.stack([vec[iid[n]] for n in uniq])
        t = os.path.join(cls.base, "t")
        os.makedirs(t)
        import_embeddings(cls.work0, t, uniq, mat, ["web", "bench"])
        cls.iid = iid

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.base, ignore_errors=True)

    def args(self):
        return ("--threshold", str(self.THR), "--benchmark-threshold", str(self.THR))

    def test_precision_recall(self):
        shutil.copytree(self.work0, self.work)
        _, s = dedup(self.work, *self.args())
        # Exact copies are one image by content: N originals + near copies + planted copies + anchor.
        self.assertEqual(s["pool_images"], self.N + self.NEAR + self.NPLANT + 1)
        with db(self.work) as con:
            dec = dict(((i, (d, c)) for i, d, c in con.execute(
                "SELECT image_id, decision, component FROM dedup_decisions")))
        # True groups: an original with its near copies.
        group = {}
        for p in self.pool:
            group[self.iid[p["name"]]] = self.iid[p["dup_of"] or p["name"]]
        ids = sorted(group)
        pred = {(a, b) for i, a in enumerate(ids) for b in ids[i + 1:] if dec[a][1] == dec[b][1]}
        true = {(a, b) for i, a in enumerate(ids) for b in ids[i + 1:] if group[a] == group[b]}
        tp = len(pred & true)
        precision = tp / max(1, len(pred))
        recall = tp / max(1, len(true))
        # Removal level: every group keeps exactly one image when found whole.
        removed = {i for i in ids if dec[i][0] == "duplicate"}
        should = {i for i in ids if group[i] != i}
        rprec = len(removed & should) / max(1, len(removed))
        rrec = len(removed & should) / max(1, len(should))
        bench_removed = {i for i, (d, _) in dec.items() if d == "benchmark"}
        planted = {self.iid[n] for n in self.planted} | {self.iid["anchor.png"]}
        brec = len(bench_removed & planted) / len(planted)
        bprec = len(bench_removed & planted) / max(1, len(bench_removed))
        print("\n# dedup on Fashion-MNIST pixel embeddings (threshold %.2f): pairs precision %.3f recall %.3f; "
              "removals precision %.3f recall %.3f; benchmark removals precision %.3f recall %.3f" %
              (self.THR, precision, recall, rprec, rrec, bprec, brec), file=sys.stderr)
        # Measured: pairs precision 0.770 recall 0.783, removals precision 0.904 recall 0.783, benchmark
        # precision 1.0 recall 0.778. The misses are crop90 copies (a 10% zoom moves pixels), the false pairs are
        # Fashion-MNIST pictures that are near-identical in pixel space; a pixel descriptor separates no better.
        self.assertGreaterEqual(recall, 0.72)
        self.assertGreaterEqual(precision, 0.7)
        self.assertGreaterEqual(rrec, 0.72)
        self.assertGreaterEqual(rprec, 0.85)
        self.assertGreaterEqual(brec, 0.7)
        self.assertGreaterEqual(bprec, 0.9)
        # Copies that only change encoding, size or orientation are all found (brightness x1.15 clips some
        # pixels and a few such copies fall just below 0.99).
        for p in self.pool:
            if p["kind"] == "near_dup" and p["transform"] in ("jpeg_q60", "resize90", "hflip"):
                self.assertEqual(dec[self.iid[p["name"]]][1], dec[self.iid[p["dup_of"]]][1], p["name"])

    def kill_mid_search(self, w, at_least):
        """Starts lvd-dedup on w with one query per committed transaction and SIGKILLs it as soon as a read-only
        connection (polling every 2 ms) sees at least at_least rows in the searched-progress table. Returns
        (searched, decided) after the kill, or None if the run finished first."""
        proc = subprocess.Popen([exe("lvd-dedup"), "--work", w, "--model", MODEL, "--batch", "1", "--quiet",
                                 *self.args()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        uri = "file:%s?mode=ro" % os.path.join(w, "catalog.db")
        con, seen = None, 0
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if con is None:
                        con = sqlite3.connect(uri, uri=True, timeout=0.01)
                    seen = con.execute("SELECT count(*) FROM dedup_searched").fetchone()[0]
                except sqlite3.OperationalError:
                    seen = 0  # busy, or the WAL files not there yet: look again
                if seen >= at_least:
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.002)
        finally:
            if proc.poll() is None and seen < at_least:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            if con is not None:
                con.close()
        if proc.returncode != -signal.SIGKILL:
            return None
        with db(w) as c:
            return (c.execute("SELECT count(*) FROM dedup_searched").fetchone()[0],
                    c.execute("SELECT count(*) FROM dedup_decisions").fetchone()[0])

    def test_kill_and_rerun_equals_clean_run(self):
        clean = os.path.join(self.tmp, "clean")
        shutil.copytree(self.work0, clean)
        _, s = dedup(clean, *self.args())
        n = s["pool_images"]
        killed_mid_search = False
        for attempt in range(5):
            w = os.path.join(self.tmp, "k%d" % attempt)
            shutil.copytree(self.work0, w)
            # The first attempt lets a tenth of the pool be searched (stored edges to resume from), later ones
            # kill at the first committed query, the earliest point there is.
            got = self.kill_mid_search(w, n // 10 if attempt == 0 else 1)
            if got is not None:
                searched, decided = got
                killed_mid_search = 0 < searched < n and decided == 0
            dedup(w, *self.args())
            self.assertEqual(state(w)[:2], state(clean)[:2])
            self.assertEqual(state(w)[3], state(clean)[3])
            if killed_mid_search:
                break
        self.assertTrue(killed_mid_search, "no kill landed in the middle of the search")


if __name__ == "__main__":
    unittest.main()
