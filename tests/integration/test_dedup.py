"""lvd-dedup end to end: pool images imported with lvd-import, decoded with lvd-decode, embeddings imported with
lvd-embed --import, deduplicated; the catalog's decisions are compared with a brute-force computation in numpy
over the same stored embedding rows.

Controlled embeddings (mechanism): planted duplicate groups, a chain that connects only transitively, benchmark
matches just above and below the threshold; incremental rounds, partitioned runs, kill -9, parameter changes.
Real pictures: Fashion-MNIST pool (scripts/fixtures.py) with planted near copies (JPEG q60, resize 90%, crop 90%,
flip, brightness), embedded with the pixel-space copy descriptor of scripts/pixel_embed.py; precision and
recall measured.

Embeddings of one model name come from several lvd-embed --import runs, one per collection and round, each
with its own .npy holding the rows of that collection's members. "anchor.png" is in the pool and in the
benchmark (the same bytes: one image); the benchmark import finds its row already present. It must be removed
for the benchmark with similarity 1.
"""
import io
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
from PIL import Image, ImageEnhance

from lvdtest import WorkTestCase, db, exe, read_image_bytes, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import fixtures  # noqa: E402
import pixel_embed  # noqa: E402  (the demo's copy descriptor, for the real-image test)

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


def nearest_rows(work):
    """{(collection_id, pool image): (nearest_image_id, sim)} of dedup_nearest (collection 0: the pool)."""
    with db(work) as con:
        return {(c, i): (n, s) for c, i, n, s in con.execute(
            "SELECT collection_id, image_id, nearest_image_id, sim FROM dedup_nearest")}


def brute_nearest(work, pool=None):
    """What dedup_nearest must hold, by brute force over the stored embedding rows: for every pool image of
    `pool` (default: every pool image with an embedding), its most similar other pool image (key collection 0)
    and the most similar image of each benchmark collection (key its id), as (ids tied within 1e-9 at the top,
    sim). Only images with an embedding count on either side."""
    vec = stored_vectors(work)
    with db(work) as con:
        allpool = sorted({i for (i,) in con.execute(
            "SELECT m.image_id FROM members m JOIN collections c ON c.id = m.collection_id"
            " WHERE c.role = 'pool'") if i in vec})
        bench = {}
        for i, c in con.execute("SELECT m.image_id, m.collection_id FROM members m JOIN collections c"
                                " ON c.id = m.collection_id WHERE c.role = 'benchmark'"):
            if i in vec:
                bench.setdefault(c, set()).add(i)
    out = {}
    for i in (allpool if pool is None else pool):
        for coll, cands in [(0, [j for j in allpool if j != i])] + [(c, sorted(b)) for c, b in bench.items()]:
            if not cands:
                continue
            sims = {j: float(vec[i] @ vec[j]) for j in cands}
            best = max(sims.values())
            out[(coll, i)] = (sorted(j for j, v in sims.items() if v >= best - 1e-9), best)
    return out


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

    def unfold(self, path):
        """Puts the catalog at `path` where a search killed after its last committed batch, before folding,
        leaves it: its k-NN edges staged in dedup_edges_found (each twice, as if found from both sides) and
        nothing decided. Returns the number of edges moved."""
        con = sqlite3.connect(path)
        with con:
            n = con.execute("SELECT count(*) FROM dedup_edges WHERE kind = 'knn'").fetchone()[0]
            for _ in range(2):
                con.execute("INSERT INTO dedup_edges_found SELECT model_id, image_a, image_b, sim FROM dedup_edges"
                            " WHERE kind = 'knn'")
            for t in ("dedup_edges", "dedup_decisions", "dedup_components", "dedup_runs"):
                con.execute("DELETE FROM %s" % t)
        con.close()
        return n

    def test_staged_edges_are_folded_on_rerun(self):
        """Edges staged by a search that was killed before moving them into dedup_edges are moved by the next
        run (which has nothing left to search), and the result equals a clean run; likewise for a part file
        whose staged edges reach --merge."""
        clean = os.path.join(self.tmp, "clean")
        shutil.copytree(self.full, clean)
        dedup(clean)
        w = self.copy_full()
        dedup(w)
        n = self.unfold(os.path.join(w, "catalog.db"))
        self.assertGreater(n, 0)
        _, s = dedup(w)
        self.assertEqual(s["searched"], 0)
        self.assertEqual(s["edges_found"], n)
        self.assertEqual(state(w), state(clean))
        with db(w) as con:
            self.assertEqual(con.execute("SELECT count(*) FROM dedup_edges_found").fetchone()[0], 0)
        # A part file with staged edges: --merge moves them.
        w2 = os.path.join(self.tmp, "parts")
        shutil.copytree(self.full, w2)
        for i in range(2):
            run("lvd-dedup", "--work", w2, "--model", MODEL, "--part", "%d/2" % i)
        part = os.path.join(w2, "parts", "dedup-0-of-2.db")
        con = sqlite3.connect(part)
        with con:
            staged = con.execute("SELECT count(*) FROM dedup_edges").fetchone()[0]
            con.execute("INSERT INTO dedup_edges_found SELECT model_id, image_a, image_b, sim FROM dedup_edges")
            con.execute("DELETE FROM dedup_edges")
        con.close()
        self.assertGreater(staged, 0)
        dedup(w2, "--merge")
        self.assertEqual(state(w2), state(clean))

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


    def assert_nearest(self, work, want, what):
        """dedup_nearest equals brute_force's expectation: same keys, the same similarity, and the smallest of
        the images tied at the top."""
        got = nearest_rows(work)
        self.assertEqual(set(got), set(want), what)
        for key, (tied, sim) in want.items():
            self.assertEqual(got[key][0], tied[0], (what, key, tied))
            self.assertAlmostEqual(got[key][1], sim, places=6, msg=(what, key))

    def test_nearest_equal_brute_force(self):
        w = self.copy_full()
        _, s = dedup(w)
        want = brute_nearest(w)
        self.assert_nearest(w, want, "one run")
        ids = self.ids(w)
        pool = {i for (c, i) in want if c == 0}
        with db(w) as con:
            bench = [c for (c,) in con.execute("SELECT id FROM collections WHERE role = 'benchmark'")]
            drun = con.execute("SELECT max(id) FROM dedup_runs").fetchone()[0]
            runs = set(con.execute("SELECT DISTINCT dedup_run_id FROM dedup_nearest"))
            edges = con.execute("SELECT image_a, image_b, sim FROM dedup_edges WHERE kind = 'knn'").fetchall()
            matches = con.execute("SELECT image_id, collection_id, sim FROM dedup_benchmark_matches").fetchall()
        self.assertEqual(len(bench), 1)
        # One pool row and one row per benchmark for every pool image, above the thresholds or not.
        self.assertEqual(len(pool), len(ids) - 3)  # b1..b3 are benchmark-only; the anchor is in both
        self.assertEqual(set(want), {(c, i) for i in pool for c in [0] + bench})
        self.assertEqual(s["nearest_written"], len(pool) * (1 + len(bench)))
        self.assertEqual(s["nearest_updated"], 0)
        self.assertEqual(runs, {(drun,)})
        got = nearest_rows(w)
        below = [i for i in pool if got[(0, i)][1] <= 0.6]
        self.assertIn(ids["s0.png"], below)
        self.assertIn(ids["p2.png"], below)
        self.assertLessEqual(got[(bench[0], ids["p2.png"])][1], 0.45)
        self.assertAlmostEqual(got[(bench[0], ids["p2.png"])][1], 0.43, places=3)
        self.assertEqual(got[(bench[0], ids["p2.png"])][0], ids["b2.png"])
        # A singleton is orthogonal to every other image: ties at 0 go to the smallest image id.
        self.assertEqual(got[(0, ids["s3.png"])], (min(pool - {ids["s3.png"]}), 0.0))
        # The same value as the edges and matches: an image's row is its strongest one, bit for bit.
        strongest = {}
        for a, b, sim in edges:
            for i in (a, b):
                strongest[i] = max(strongest.get(i, -2), sim)
        for i in pool:
            if i in strongest:
                self.assertEqual(got[(0, i)][1], strongest[i], i)
            else:
                self.assertLessEqual(got[(0, i)][1], 0.6, i)
        best = {}
        for i, c, sim in matches:
            best[(c, i)] = max(best.get((c, i), -2), sim)
        for (c, i), (n, sim) in got.items():
            if c:
                if (c, i) in best:
                    self.assertEqual(sim, best[(c, i)], i)
                else:
                    self.assertLessEqual(sim, 0.45, i)
        # Nothing new: the rows stay as they are.
        with db(w) as con:
            before = sorted(con.execute("SELECT * FROM dedup_nearest"))
        dedup(w)
        with db(w) as con:
            self.assertEqual(sorted(con.execute("SELECT * FROM dedup_nearest")), before)

    def test_nearest_force_drops_and_recomputes(self):
        w = self.copy_full()
        dedup(w)
        ids = self.ids(w)
        with sqlite3.connect(os.path.join(w, "catalog.db")) as con:
            con.execute("UPDATE dedup_nearest SET sim = 0.123, nearest_image_id = ? WHERE collection_id = 0",
                        (ids["anchor.png"],))
            con.execute("INSERT INTO dedup_nearest(model_id, collection_id, image_id, nearest_image_id, sim)"
                        " SELECT id, 999, ?, ?, 0.5 FROM models", (ids["s0.png"], ids["s1.png"]))
        con.close()
        _, s = dedup(w, "--threshold", "0.75", "--force")
        self.assert_nearest(w, brute_nearest(w), "--force")
        with db(w) as con:
            self.assertEqual(con.execute("SELECT count(*) FROM dedup_nearest WHERE collection_id = 999").fetchone()[0],
                             0)
            drun = con.execute("SELECT max(id) FROM dedup_runs").fetchone()[0]
            self.assertEqual(con.execute("SELECT DISTINCT dedup_run_id FROM dedup_nearest").fetchall(), [(drun,)])
        # The rows do not depend on the threshold.
        clean = os.path.join(self.tmp, "clean")
        shutil.copytree(self.full, clean)
        dedup(clean)
        self.assertEqual(nearest_rows(w), nearest_rows(clean))

    def test_nearest_incremental_and_parts(self):
        t = os.path.join(self.tmp, "t")
        os.makedirs(t)
        self.c.round1(self.work, t)
        dedup(self.work)
        ids = self.ids(self.work)
        old = {i for (c, i) in nearest_rows(self.work) if c == 0}
        self.assert_nearest(self.work, brute_nearest(self.work), "round 1")
        with db(self.work) as con:
            run1 = con.execute("SELECT max(id) FROM dedup_runs").fetchone()[0]
        # Round 2 searched in two parts: p1d (new) is p1's (old) nearest now at 0.9; the part that found it
        # updates p1's row and the merge takes the more similar row.
        both = os.path.join(self.tmp, "both")
        # Copied by another process: closing this process's descriptors of a catalog it still holds open
        # connections to would drop their POSIX locks (the copy's reads are harmless elsewhere).
        subprocess.run(["cp", "-a", self.work, both], check=True)
        self.c.round2(self.work, t)
        _, s = dedup(self.work)
        self.c.round2(both, os.path.join(self.tmp, "t"))
        for i in range(2):
            run("lvd-dedup", "--work", both, "--model", MODEL, "--part", "%d/2" % i, "--quiet")
        dedup(both, "--merge")
        want = brute_nearest(self.work)
        self.assert_nearest(self.work, want, "incremental")
        self.assert_nearest(both, want, "incremental in parts")
        clean = os.path.join(self.tmp, "clean")
        shutil.copytree(self.full, clean)
        dedup(clean)
        self.assertEqual(nearest_rows(self.work), nearest_rows(clean))
        self.assertEqual(nearest_rows(both), nearest_rows(clean))
        p1, p1d = ids["p1.png"], self.ids(self.work)["p1d.png"]
        self.assertIn(p1, old)
        self.assertEqual(nearest_rows(self.work)[(0, p1)][0], p1d)
        self.assertGreaterEqual(s["nearest_updated"], 1)
        with db(self.work) as con:
            run2 = con.execute("SELECT max(id) FROM dedup_runs").fetchone()[0]
            by_run = dict(((c, i), r) for c, i, r in con.execute(
                "SELECT collection_id, image_id, dedup_run_id FROM dedup_nearest"))
        self.assertEqual(by_run[(0, p1)], run2)  # re-stamped by the run that moved it
        self.assertEqual(by_run[(0, ids["s0.png"])], run1)  # untouched: nothing newer is nearer
        # Parts and merge of a first run: the rows of one run.
        w2 = os.path.join(self.tmp, "w2")
        shutil.copytree(self.full, w2)
        for i in range(3):
            run("lvd-dedup", "--work", w2, "--model", MODEL, "--part", "%d/3" % i, "--quiet")
        with db(w2) as con:
            self.assertEqual(con.execute("SELECT count(*) FROM dedup_nearest").fetchone()[0], 0)
        dedup(w2, "--merge")
        self.assertEqual(nearest_rows(w2), nearest_rows(clean))
        with db(w2) as con:
            self.assertEqual(con.execute("SELECT count(*) FROM dedup_nearest WHERE dedup_run_id IS NULL").fetchone()[0],
                             0)


def working_image(work, con, image_id):
    path, off, n = con.execute("SELECT s.path, d.offset, d.size FROM decodes d JOIN shards s ON s.id = d.shard_id"
                               " WHERE d.image_id = ?", (image_id,)).fetchone()
    import io
    with open(os.path.join(work, path), "rb") as f:
        f.seek(off)
        return Image.open(io.BytesIO(f.read(n))).convert("L")


def pixel_embedding(img):
    """The copy descriptor of scripts/pixel_embed.py (the demo's): gradient-orientation histograms of 8 nested
    centre views (zoom-tolerant: a 90% centre crop shares 7 of them), mirror-symmetrised, normalised per view
    (brightness and contrast), summed, square-rooted, L2-normalised. Its docstring says why each step."""
    return pixel_embed.descriptor(img)


class RealImagesTest(WorkTestCase):
    N, NEAR, EXACT, NBENCH, NPLANT = 300, 60, 5, 30, 8
    # Measured over 7 draws of this fixture (this one and pool seeds 6-11): near copies have cosine >= 0.996
    # with their originals but for a few 90% crops (down to 0.9944); distinct pictures < 0.996 but for two
    # near-identical pairs of Fashion-MNIST trousers (0.9966, 0.998; every pair above 0.9955 is trousers). The
    # pool threshold sits between them. Against the benchmark, planted copies score >= 0.995 but one crop
    # (0.9947), other pool pictures <= 0.9948. On this draw: copies >= 0.9961, distinct pictures <= 0.9948;
    # planted copies >= 0.997 against the benchmark, other pool pictures <= 0.990.
    THR, BTHR = 0.996, 0.995

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
        return ("--threshold", str(self.THR), "--benchmark-threshold", str(self.BTHR))

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
        print("\n# dedup on Fashion-MNIST pixel embeddings (threshold %g, benchmark %g): pairs precision %.3f "
              "recall %.3f; removals precision %.3f recall %.3f; benchmark removals precision %.3f recall %.3f" %
              (self.THR, self.BTHR, precision, recall, rprec, rrec, bprec, brec), file=sys.stderr)
        # Measured on this draw: 1.000 for all six (pairs, removals, benchmark removals; precision and recall).
        # Over 6 other draws of the fixture (pool seeds 6-11, other benchmark pictures) the lowest were: pairs
        # precision 0.967 recall 0.983, removals precision 0.983 recall 0.983, benchmark precision 1.0 recall
        # 0.889 (one 90% crop at 0.9947). The misses are 90% crops, the false pairs near-identical trousers.
        # The bounds are those lows less ~0.03, so a libjpeg/libwebp build that writes other bytes still passes;
        # the former 16x16-pixel descriptor (0.770 / 0.783 pairs, 0.778 benchmark recall here: it lost every
        # 90% crop) fails them.
        self.assertGreaterEqual(recall, 0.95)
        self.assertGreaterEqual(precision, 0.93)
        self.assertGreaterEqual(rrec, 0.95)
        self.assertGreaterEqual(rprec, 0.95)
        self.assertGreaterEqual(brec, 0.85)
        self.assertGreaterEqual(bprec, 0.97)
        # Copies that change encoding, size, orientation or brightness (x1.15, clipping the light background) are
        # all found: >= 0.9967 from their originals over the 7 draws (>= 0.998 but for JPEG q60). The 90% crops
        # are the ones that straddle the threshold, counted by the recall bounds.
        for p in self.pool:
            if p["kind"] == "near_dup" and p["transform"] in ("jpeg_q60", "resize90", "hflip", "bright15"):
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


def phash_py(img):
    """imagehash.phash (hash_size 8, highfreq_factor 4) in numpy, as curate/decode/phash.h defines it: luma, 32x32
    antialiased resize, 2-D DCT-II, top-left 8x8 against their median, first coefficient the top bit. Another
    resampler than lvd's, so a few bits may differ: it checks that a stored pHash belongs to its picture."""
    a = np.asarray(img.convert("L").resize((32, 32), Image.LANCZOS), np.float64)
    n = np.arange(32)
    c = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 64)
    d = (c @ a @ c.T)[:8, :8].ravel()
    return int("".join("1" if b else "0" for b in d > np.median(d)), 2)


def hamming(a, b):
    return bin(a ^ b).count("1")


def phash_pairs(hashes, dist):
    """The pHash edges lvd-dedup stores, as curate/dedup/graph.h specifies them, from {image id: pHash}: images with
    equal hashes chained in id order (distance 0), and two distinct hash values within dist joined once,
    between the lowest image ids holding them. {(a, b): distance}, a < b."""
    groups = {}
    for i in sorted(hashes):
        groups.setdefault(hashes[i], []).append(i)
    out = {}
    for g in groups.values():
        for a, b in zip(g, g[1:]):
            out[(a, b)] = 0
    reps = sorted((g[0], h) for h, g in groups.items())
    for x, (a, ha) in enumerate(reps):
        for b, hb in reps[x + 1:]:
            if hamming(ha, hb) <= dist:
                out[(a, b)] = hamming(ha, hb)
    return out


class PHashTest(WorkTestCase):
    """--phash-distance on real pictures: Fashion-MNIST pictures (o0..o7) and altered copies of them (JPEG q50,
    resize 80%, brightness x1.2 as WebP, contrast x0.6, 4 px and 10 px border crops), whose pHashes (lvd-decode)
    are within a few bits of their original's while their imported embeddings are far apart (cosine 0.1..0.49,
    below the 0.6 threshold): only the pHash can join them. A few pairs are near in both (kind 'knn' with
    phash_dist), one pair only in the embedding, a copy also bridges to another picture by embedding, one copy
    matches a benchmark image (its whole component goes), and a GIF copy (lvd-decode recognises GIF but does not
    decode it: no pHash) has an embedding and must never be joined by pHash. The expected edges, components and
    decisions are computed here from the stored pHashes and embedding rows.

    Stored pHash edges follow curate/dedup/graph.h (equal hashes chained, distinct hashes joined between their lowest
    ids), so components are checked against every pair within the distance, while the spanning-forest fields
    (weakest_*, strongest_sim, edge_*) are checked against the stored edges: with equal hashes these can be
    weaker than over every pair (o2, q2, c2 share a hash here)."""
    D1, D2 = 4, 10
    PICS = (201, 200, 202, 215, 205, 221, 217, 207)  # t10k indices, eight classes
    # file, original, transform, import round
    COPIES = (("q0.jpg", 0, "jpeg50", 1), ("r0.png", 0, "resize80", 1), ("b0.webp", 0, "bright120", 1),
              ("k0.png", 0, "crop4", 1), ("K0.png", 0, "crop10", 1), ("b1.webp", 1, "bright120", 1),
              ("k1.png", 1, "crop4", 1), ("q2.jpg", 2, "jpeg50", 1), ("c2.png", 2, "contrast60", 1),
              ("r3.png", 3, "resize80", 1), ("k4.png", 4, "crop4", 1), ("g5.gif", 5, "gif", 1),
              ("q1.jpg", 1, "jpeg50", 2), ("b2.webp", 2, "bright120", 2))
    MILD = ("jpeg50", "resize80", "bright120", "contrast60")  # pHash-preserving transforms
    DIM = 48

    @staticmethod
    def altered(img, t):
        w, h = img.size
        if t == "resize80":
            return img.resize((round(w * 0.8), round(h * 0.8)), Image.BICUBIC)
        if t == "bright120":
            return ImageEnhance.Brightness(img).enhance(1.2)
        if t == "contrast60":
            return ImageEnhance.Contrast(img).enhance(0.6)
        if t.startswith("crop"):
            m = int(t[4:])
            return img.crop((m, m, w - m, h - m))
        return img

    @classmethod
    def embeddings(cls):
        """(names, rows): originals on their own axes; a copy at cosine 0.1..0.49 to its original (all distinct,
        so the spanning-forest order has no ties) except r3 (0.9) and k4 (0.8), near in both; o6 at 0.75 to o5
        (different pictures: near by embedding only); k0 also at 0.7 to o7; b1 at 0.5 to the benchmark image."""
        names = ["o%d.png" % i for i in range(len(cls.PICS))] + [c[0] for c in cls.COPIES] + ["bench.png"]
        ax = {n: i for i, n in enumerate(names)}
        vec = {}
        for n in names:
            vec[n] = np.zeros(cls.DIM)
        for i in range(len(cls.PICS)):
            vec["o%d.png" % i][ax["o%d.png" % i]] = 1.0
        vec["bench.png"][ax["bench.png"]] = 1.0
        vec["o6.png"][:] = 0
        vec["o6.png"][ax["o5.png"]] = 0.75
        vec["o6.png"][ax["o6.png"]] = np.sqrt(1 - 0.75 ** 2)
        extra = {"r3.png": {}, "k4.png": {}, "k0.png": {"o7.png": 0.7}, "b1.webp": {"bench.png": 0.5}}
        near = {"r3.png": 0.9, "k4.png": 0.8}
        for j, (n, o, _, _) in enumerate(cls.COPIES):
            c = near.get(n, 0.1 + 0.03 * j)
            parts = dict(extra.get(n, {}))
            parts["o%d.png" % o] = c
            for m, v in parts.items():
                vec[n][ax[m]] = v
            vec[n][ax[n]] = np.sqrt(1 - sum(v * v for v in parts.values()))
        return names, np.stack([unit(vec[n]) for n in names])

    @classmethod
    def setUpClass(cls):
        cls.base = tempfile.mkdtemp(prefix="lvd-it-dedup-phash-")
        dirs = {k: os.path.join(cls.base, k) for k in ("pool1", "pool2", "bench", "t")}
        for d in dirs.values():
            os.makedirs(d)
        origs = []
        for i, idx in enumerate(cls.PICS):
            img = fixtures.picture(idx, "t10k", (160 + 8 * i, 200))
            img.save(os.path.join(dirs["pool1"], "o%d.png" % i))
            origs.append(img)
        for n, o, t, rnd in cls.COPIES:
            img = cls.altered(origs[o], t)
            img.save(os.path.join(dirs["pool%d" % rnd], n), **({"quality": 50} if n.endswith(".jpg") else
                                                                 {"quality": 80} if n.endswith(".webp") else {}))
        fixtures.picture(300, "t10k", (160, 200)).save(os.path.join(dirs["bench"], "bench.png"))
        cls.names, cls.mat = cls.embeddings()
        cls.round1 = os.path.join(cls.base, "round1")
        import_dir(cls.round1, "web", "pool", dirs["pool1"])
        import_dir(cls.round1, "bench", "benchmark", dirs["bench"])
        run("lvd-decode", "--work", cls.round1, "--size", "64", "--quiet")
        import_embeddings(cls.round1, dirs["t"], cls.names, cls.mat, ["web", "bench"])
        cls.full = os.path.join(cls.base, "full")
        shutil.copytree(cls.round1, cls.full)
        import_dir(cls.full, "web", "pool", dirs["pool2"])
        run("lvd-decode", "--work", cls.full, "--size", "64", "--quiet")
        import_embeddings(cls.full, dirs["t"], cls.names, cls.mat, ["web"])
        cls.files = {n: os.path.join(dirs["pool%d" % r], n) for n, _, _, r in cls.COPIES}
        cls.files.update({"o%d.png" % i: os.path.join(dirs["pool1"], "o%d.png" % i) for i in range(len(cls.PICS))})
        m = members(cls.full, "web")
        cls.ids = {n: i for n, (_, i) in m.items()}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.base, ignore_errors=True)

    def copy_of(self, src, name="w"):
        w = os.path.join(self.tmp, name)
        shutil.copytree(src, w)
        return w

    def hashes(self, work):
        """{image id: pHash} of the images whose decode stored one."""
        with db(work) as con:
            return {i: int(p, 16) for i, p in
                    con.execute("SELECT image_id, phash FROM decodes WHERE phash IS NOT NULL")}

    def expected(self, work, dist, thr=0.6, bthr=0.45):
        """What lvd-dedup should store, computed from the stored pHashes and embedding rows (k >= pool size):
        edges {(a, b): (sim, kind, phash_dist)}, components {component: (size, kept, removed_duplicate,
        removed_benchmark, weakest (sim, a, b, kind) or None, strongest sim or None)} and decisions {image:
        (decision, component, kept, edge image, edge kind, edge sim)}."""
        vec = stored_vectors(work)
        hashes = self.hashes(work)
        with db(work) as con:
            pool = sorted(i for (i,) in con.execute(
                "SELECT DISTINCT m.image_id FROM members m JOIN collections c ON c.id = m.collection_id"
                " WHERE c.role = 'pool'") if i in vec)
            bench = [i for (i,) in con.execute("SELECT m.image_id FROM members m JOIN collections c ON"
                                               " c.id = m.collection_id WHERE c.role = 'benchmark'") if i in vec]
            # keep rule pixels: the original's width*height, 0 without a decode
            pixels = {}
            for i in pool:
                ok = con.execute("SELECT status FROM decodes WHERE image_id = ?", (i,)).fetchone()
                pixels[i] = 0
                if ok and ok[0] == "ok":
                    with Image.open(io.BytesIO(read_image_bytes(work, con, i))) as im:
                        pixels[i] = im.size[0] * im.size[1]

        def sim(a, b):
            return float(vec[a] @ vec[b])
        ph = {} if dist is None else phash_pairs({i: hashes[i] for i in pool if i in hashes}, dist)
        edges = {}
        for x, a in enumerate(pool):
            for b in pool[x + 1:]:
                if sim(a, b) > thr:
                    edges[(a, b)] = (sim(a, b), "knn", ph.get((a, b)))
        for p, d in ph.items():
            edges.setdefault(p, (sim(*p), "phash", d))
        # Components: the graph's definition (every pair within dist, not only the stored chain) ...
        parent = {i: i for i in pool}

        def find(x):
            while parent[x] != x:
                x = parent[x]
            return x

        def union(a, b):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
                return True
            return False
        for x, a in enumerate(pool):
            for b in pool[x + 1:]:
                if (a, b) in edges or (dist is not None and a in hashes and b in hashes
                                       and hamming(hashes[a], hashes[b]) <= dist):
                    union(a, b)
        comp = {i: min(j for j in pool if find(j) == find(i)) for i in pool}
        # ... and the spanning forest over the stored edges, which must connect the same components.
        parent = {i: i for i in pool}
        order = sorted(edges.items(), key=lambda t: (-t[1][0], t[0]))
        weakest, strongest, node_edge = {}, {}, {}
        for (a, b), (s, kind, _) in order:
            self.assertEqual(comp[a], comp[b])
            if union(a, b):
                weakest[comp[a]] = (s, a, b, kind)
            strongest.setdefault(comp[a], s)
            node_edge.setdefault(a, (b, kind, s))
            node_edge.setdefault(b, (a, kind, s))
        self.assertEqual({i: find(i) for i in pool}, comp)
        matched = {i for i in pool for b in bench if sim(i, b) > bthr}
        gone = {comp[i] for i in matched}
        kept = {}
        for i in pool:
            c = comp[i]
            if c not in gone and (c not in kept or pixels[i] > pixels[kept[c]]):
                kept[c] = i
        dec = {}
        for i in pool:
            c = comp[i]
            d = "benchmark" if c in gone else "kept" if kept[c] == i else "duplicate"
            dec[i] = (d, c, kept.get(c)) + node_edge.get(i, (None, None, None))
        comps = {}
        for c in set(comp.values()):
            mem = [i for i in pool if comp[i] == c]
            comps[c] = (len(mem), kept.get(c), sum(dec[i][0] == "duplicate" for i in mem),
                        sum(dec[i][0] == "benchmark" for i in mem), weakest.get(c), strongest.get(c))
        return edges, comps, dec

    @staticmethod
    def catalog(work):
        with db(work) as con:
            edges = {(a, b): (s, k, d) for a, b, s, k, d in con.execute(
                "SELECT image_a, image_b, sim, kind, phash_dist FROM dedup_edges")}
            comps = {c: (n, kp, rd, rb, None if ws is None else (ws, wa, wb, wk), ss) for
                     c, n, kp, rd, rb, ws, wa, wb, wk, ss in con.execute(
                         "SELECT component, size, kept_image_id, removed_duplicate, removed_benchmark, weakest_sim,"
                         " weakest_a, weakest_b, weakest_kind, strongest_sim FROM dedup_components")}
            dec = {i: r for i, *r in con.execute(
                "SELECT image_id, decision, component, kept_image_id, edge_image_id, edge_kind, edge_sim"
                " FROM dedup_decisions")}
        return edges, comps, {i: tuple(r) for i, r in dec.items()}

    def assert_close(self, got, want, what):
        """got == want with floats compared to 1e-6 (float32 rows summed in another order)."""
        def flat(v):
            return list(v) if isinstance(v, tuple) else [v]
        self.assertEqual(set(got), set(want), what)
        for k in want:
            g, w = flat(got[k]), flat(want[k])
            self.assertEqual(len(g), len(w), (what, k))
            for a, b in zip(g, w):
                if isinstance(b, tuple) or isinstance(a, tuple):
                    self.assertEqual(a is None, b is None, (what, k, g, w))
                    if a is not None:
                        self.assert_close({0: a}, {0: b}, (what, k))
                elif isinstance(b, float):
                    self.assertAlmostEqual(a, b, places=6, msg=(what, k, g, w))
                else:
                    self.assertEqual(a, b, (what, k, g, w))

    def check(self, work, dist):
        want = self.expected(work, dist)
        got = self.catalog(work)
        for g, w, what in zip(got, want, ("edges", "components", "decisions")):
            self.assert_close(g, w, what)
        with db(work) as con:
            self.assertEqual(con.execute("SELECT phash_distance FROM dedup_runs ORDER BY id DESC LIMIT 1").fetchone(),
                             (dist,))
        return want

    def test_phash_values(self):
        """The pictures make the test meaningful: lvd-decode stored a pHash for every PNG, JPEG and WebP (none for
        the GIF, which it does not decode), each the pHash of its picture, mild copies land within a few bits of
        their originals, the 10 px crop and unrelated pictures far away, and the bands <= D1, (D1, D2], > D2
        all hold copies."""
        h = self.hashes(self.full)
        ids = self.ids
        with db(self.full) as con:
            status = dict(con.execute("SELECT image_id, status FROM decodes"))
        self.assertEqual(status[ids["g5.gif"]], "unsupported")
        self.assertNotIn(ids["g5.gif"], h)
        for n, p in self.files.items():
            if n.endswith(".gif"):
                continue
            self.assertEqual(status[ids[n]], "ok", n)
            with Image.open(p) as im:
                self.assertLessEqual(hamming(h[ids[n]], phash_py(im)), 6, n)
        orig = ["o%d.png" % i for i in range(len(self.PICS))]
        far = [hamming(h[ids[a]], h[ids[b]]) for x, a in enumerate(orig) for b in orig[x + 1:]]
        self.assertGreater(min(far), self.D2, far)
        dist = {n: hamming(h[ids[n]], h[ids["o%d.png" % o]]) for n, o, t, _ in self.COPIES if t != "gif"}
        for n, o, t, _ in self.COPIES:
            if t in self.MILD:
                self.assertLessEqual(dist[n], 6, (n, dist))
        self.assertGreater(dist["K0.png"], self.D2, dist)
        self.assertLessEqual(dist["r3.png"], self.D1, dist)        # near in both: 'knn' with phash_dist at D1
        self.assertTrue(self.D1 < dist["k4.png"] <= self.D2, dist)  # 'knn' without phash_dist at D1, with at D2
        self.assertTrue(any(d <= self.D1 for d in dist.values()), dist)
        self.assertTrue(any(self.D1 < d <= self.D2 for d in dist.values()), dist)
        self.assertEqual(len({h[ids[n]] for n in ("o2.png", "q2.jpg", "c2.png")}), 1, dist)  # equal hashes: chained
        print("\n# pHash distances of the copies to their originals: %s" %
              ", ".join("%s %d" % kv for kv in sorted(dist.items())), file=sys.stderr)

    def test_joining_equals_brute_force(self):
        ids, emb_only = self.ids, None
        for dist in (None, self.D1, self.D2):
            w = self.copy_of(self.full, "d%s" % dist)
            p, s = dedup(w, *(() if dist is None else ("--phash-distance", dist)))
            edges, comps, dec = self.check(w, dist)
            kinds = {k for _, k, _ in edges.values()}
            a, b = sorted((ids["o3.png"], ids["r3.png"]))
            c, d = sorted((ids["o4.png"], ids["k4.png"]))
            e5 = tuple(sorted((ids["o5.png"], ids["o6.png"])))
            o0 = dec[ids["o0.png"]][1]
            if dist is None:
                # Nothing joined by pHash: only the embedding pairs, no distances.
                self.assertEqual(kinds, {"knn"})
                self.assertTrue(all(pd is None for _, _, pd in edges.values()))
                self.assertEqual(dec[ids["q0.jpg"]][1], ids["q0.jpg"])  # a pHash-equal copy stays alone
                self.assertEqual(dec[ids["b1.webp"]][0], "benchmark")
                self.assertEqual(dec[ids["o1.png"]][0], "kept")
                emb_only = sorted(edges)
            else:
                self.assertIn("phash", kinds)
                self.assertIn("pHash distance <= %d" % dist, p.stderr)
                # The copies within dist of o0 are in its component; the 10 px crop has no edge to it.
                h = self.hashes(w)
                for n in ("q0.jpg", "r0.png", "b0.webp", "k0.png"):
                    if hamming(h[ids[n]], h[ids["o0.png"]]) <= dist:
                        self.assertEqual(dec[ids[n]][1], o0, n)
                self.assertNotIn(tuple(sorted((ids["o0.png"], ids["K0.png"]))), edges)
                # b1 matches the benchmark: its pHash component (o1 and its copies) goes with it.
                if hamming(h[ids["b1.webp"]], h[ids["o1.png"]]) <= dist:
                    self.assertEqual(dec[ids["o1.png"]][0], "benchmark")
                    self.assertEqual(dec[ids["o1.png"]][1], dec[ids["b1.webp"]][1])
                self.assertEqual(len({dec[ids[n]][1] for n in ("o2.png", "q2.jpg", "c2.png")}), 1)
                # The knn edges of the run without pHash are all still there.
                self.assertTrue(set(emb_only) <= set(edges))
                self.assertEqual(s["pool_images"], len(dec))
            # Near in both: kind 'knn', with the pHash distance when within dist.
            h = self.hashes(w)
            self.assertEqual(edges[(a, b)][1:], ("knn", None if dist is None else hamming(h[a], h[b])))
            self.assertEqual(edges[(c, d)][1:], ("knn", hamming(h[c], h[d]) if dist == self.D2 else None))
            self.assertEqual(edges[e5][1:], ("knn", None))  # near only by embedding
            gif = ids["g5.gif"]
            self.assertFalse([e for e in edges if gif in e])  # no pHash, far embedding: alone
            self.assertEqual(dec[gif][:3], ("kept", gif, gif))

    def test_fingerprint_and_force(self):
        w = self.copy_of(self.full)
        dedup(w, "--phash-distance", self.D1)
        before = self.catalog(w)
        for args, old, new in ((("--phash-distance", self.D2), "pHash distance %d (" % self.D1,
                                "pHash distance %d." % self.D2),
                               ((), "pHash distance %d (" % self.D1, "pHash distance off.")):
            p, _ = dedup(w, *args, check=False)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("--force", p.stderr)
            self.assertIn(old, p.stderr)
            self.assertIn(new, p.stderr)
            self.assertEqual(self.catalog(w), before)
        # Same options: nothing new, nothing changed.
        _, s = dedup(w, "--phash-distance", self.D1)
        self.assertEqual(s["new"], 0)
        self.assertEqual(self.catalog(w), before)
        # --force recomputes with the new distance, and back to none.
        _, s = dedup(w, "--phash-distance", self.D2, "--force")
        self.assertEqual(s["new"], s["pool_images"])
        self.check(w, self.D2)
        clean = self.copy_of(self.full, "clean")
        dedup(clean, "--phash-distance", self.D2)
        self.assertEqual(state(w), state(clean))
        with db(w) as con:
            self.assertEqual(con.execute("SELECT phash_distance, forced FROM dedup_runs ORDER BY id").fetchall(),
                             [(self.D1, 0), (self.D2, 1)])
        dedup(w, "--force")
        self.check(w, None)
        p, _ = dedup(w, "--phash-distance", self.D1, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("pHash distance off (", p.stderr)
        # Bad values: usage errors naming the option.
        for bad in ("11", "-1", "four"):
            p = run("lvd-dedup", "--work", w, "--model", MODEL, "--phash-distance", bad, check=False)
            self.assertEqual(p.returncode, 2, bad)
            self.assertIn("--phash-distance", p.stderr)

    def test_incremental_equals_clean_run(self):
        w = self.copy_of(self.round1)
        dedup(w, "--phash-distance", self.D1)
        self.check(w, self.D1)
        import_dir(w, "web", "pool", os.path.dirname(self.files["q1.jpg"]))
        run("lvd-decode", "--work", w, "--size", "64", "--quiet")
        t = os.path.join(self.tmp, "t")
        os.makedirs(t)
        import_embeddings(w, t, self.names, self.mat, ["web"])
        _, s = dedup(w, "--phash-distance", self.D1)
        self.assertEqual(s["new"], 2)
        self.check(w, self.D1)
        clean = self.copy_of(self.full, "clean")
        dedup(clean, "--phash-distance", self.D1)
        self.assertEqual(state(w), state(clean))
        # The new copies were joined to round-1 images by pHash alone.
        with db(w) as con:
            got = con.execute("SELECT count(*) FROM dedup_edges WHERE kind = 'phash' AND (image_a IN (?, ?) OR"
                              " image_b IN (?, ?))", (self.ids["q1.jpg"], self.ids["b2.webp"]) * 2).fetchone()[0]
        self.assertGreater(got, 0)


if __name__ == "__main__":
    unittest.main()
