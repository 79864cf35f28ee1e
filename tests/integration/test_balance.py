"""lvd-balance end to end: a pool imported with lvd-import, embeddings imported with lvd-embed --import
(clustered synthetic vectors), deduplicated with lvd-dedup, then balanced.

Oracles are NumPy, computed from the embedding rows lvd-embed stored and the centroids lvd-balance stored
(WORK/balance/<model>/*.npy): every stored assignment is recomputed as the nearest centroid, the tree's parents
as the nearest next-level centroid of each centroid, and the sample is checked against the sampler's invariants
(total = target, copies <= multiplier, quotas add up level by level, the water-filling rule at the top level).
Incremental runs are checked the same way, and against a rebuild."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time

import numpy as np

from lvdtest import WorkTestCase, db, exe, run
from test_retrieve import D, MODEL, Data, add_collection, stored_vectors

CONFIG = """# two levels, resampling at both
n_levels: 2
n_iters: 10
n_clusters: [12, 3]
n_splits: [1, 1]
n_resampling_steps: [2, 2]
sample_size: [6, 2]
sampling_strategy: c
target_size: 150
multiplier: 2
sampling: r
seed: 7
"""


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


HEAVY = """# enough k-means work to be interrupted
n_levels: 2
n_iters: 50
n_clusters: [150, 8]
n_splits: [1, 1]
n_resampling_steps: [40, 10]
sample_size: [10, 3]
sampling_strategy: c
target_size: 900
multiplier: 1
sampling: r
seed: 3
"""


def result_state(con):
    """What a balance run decides (the tree, its centroid files, the sample), without times and run ids."""
    return [sorted(con.execute(q)) for q in (
        "SELECT id, n_levels, built_points, fingerprint FROM balance_trees",
        "SELECT tree_id, level, k, path, sha256, objective, runs FROM balance_levels",
        "SELECT * FROM balance_clusters", "SELECT * FROM balance_points",
        "SELECT id, tree_id, target, total, distinct_images, points FROM balance_samples",
        "SELECT * FROM balance_sample", "SELECT * FROM balance_quotas")]


def balance_state(con):
    """Everything lvd-balance recorded, for before / after comparisons."""
    return [sorted(con.execute("SELECT * FROM %s" % t)) for t in
            ("balance_trees", "balance_levels", "balance_clusters", "balance_points", "balance_samples",
             "balance_sample", "balance_quotas")]


class BalanceTest(WorkTestCase):
    def setUp(self):
        super().setUp()
        self.config = write(os.path.join(self.tmp, "b.yaml"), CONFIG)

    def balance(self, *args, check=True, work=None):
        p = run("lvd-balance", "--work", work or self.work, "--model", MODEL, "--json", *args, check=check)
        return p, (json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None)

    def pool(self, data, n, first):
        add_collection(self, self.work, "web", "pool", data.points(n), first)
        run("lvd-dedup", "--work", self.work, "--model", MODEL, "--threshold", "0.999", "--quiet")

    def kept(self, con):
        return sorted(r[0] for r in con.execute(
            "SELECT d.image_id FROM dedup_decisions d JOIN models m ON m.id = d.model_id WHERE m.name = ?"
            " AND d.decision = 'kept'", (MODEL,)))

    def check_tree(self, con):
        """The stored tree against NumPy: returns (tree id, {image: [cluster per level]})."""
        tree, L = con.execute("SELECT id, n_levels FROM balance_trees ORDER BY id DESC LIMIT 1").fetchone()
        cent = {}
        for lvl, k, path in con.execute("SELECT level, k, path FROM balance_levels WHERE tree_id = ?", (tree,)):
            c = np.load(os.path.join(self.work, path))
            self.assertEqual(c.shape, (k, D))
            self.assertEqual(c.dtype, np.float32)
            cent[lvl] = c.astype(np.float64)
        self.assertEqual(sorted(cent), list(range(1, L + 1)))
        parent = {(l, c): p for l, c, p in con.execute(
            "SELECT level, cluster, parent FROM balance_clusters WHERE tree_id = ?", (tree,))}
        # Each level-l centroid's parent is its nearest level-(l+1) centroid (no splits: the last reassignment).
        for (l, c), p in parent.items():
            if l == L:
                self.assertIsNone(p)
                continue
            d2 = ((cent[l + 1] - cent[l][c]) ** 2).sum(axis=1)
            self.assertEqual(p, int(np.argmin(d2)), (l, c))
        pts = {}
        for img, lvl, cl, dist in con.execute(
                "SELECT image_id, level, cluster, dist FROM balance_points WHERE tree_id = ?", (tree,)):
            pts.setdefault(img, {})[lvl] = (cl, dist)
        vec = stored_vectors(self.work, con, pts)
        for img, by_level in pts.items():
            self.assertEqual(sorted(by_level), list(range(1, L + 1)))
            d2 = ((cent[1] - vec[img]) ** 2).sum(axis=1)
            self.assertEqual(by_level[1][0], int(np.argmin(d2)), img)
            for l in range(1, L + 1):
                cl, dist = by_level[l]
                if l > 1:
                    self.assertEqual(cl, parent[(l - 1, by_level[l - 1][0])])
                want = ((cent[l][cl] - vec[img]) ** 2).sum()
                self.assertAlmostEqual(dist, want, delta=1e-6 * max(1.0, want))
        return tree, {img: [by_level[l][0] for l in range(1, L + 1)] for img, by_level in pts.items()}

    def check_sample(self, con, labels, target, mult):
        """The current sample's invariants; returns {image: copies}."""
        sid, total, distinct, points = con.execute(
            "SELECT id, total, distinct_images, points FROM balance_samples ORDER BY id DESC LIMIT 1").fetchone()
        copies = {i: (c, cl) for i, c, cl in con.execute(
            "SELECT image_id, copies, cluster FROM balance_sample WHERE sample_id = ?", (sid,))}
        self.assertEqual(con.execute("SELECT count(DISTINCT sample_id) FROM balance_sample").fetchone()[0], 1)
        self.assertEqual(points, len(labels))
        want_total = min(target, len(labels) * mult)
        self.assertEqual(sum(c for c, _ in copies.values()), want_total)
        self.assertEqual(total, want_total)
        self.assertEqual(distinct, len(copies))
        self.assertTrue(all(1 <= c <= mult for c, _ in copies.values()))
        self.assertTrue(set(copies) <= set(labels))
        for i, (c, cl) in copies.items():
            self.assertEqual(cl, labels[i][0])
        L = len(next(iter(labels.values())))
        quota = {}
        for l, c, size, q in con.execute("SELECT level, cluster, size, quota FROM balance_quotas WHERE sample_id = ?",
                                         (sid,)):
            quota[(l, c)] = (size, q)
        for l in range(1, L + 1):
            # sizes are the tree's point counts, quotas add up to the total at every level
            sizes = {}
            for lab in labels.values():
                sizes[lab[l - 1]] = sizes.get(lab[l - 1], 0) + 1
            self.assertEqual({c: s for (ll, c), (s, q) in quota.items() if ll == l and s}, sizes)
            self.assertEqual(sum(q for (ll, c), (s, q) in quota.items() if ll == l), want_total)
            self.assertTrue(all(q <= s * mult for (ll, c), (s, q) in quota.items() if ll == l))
        # a leaf's quota is the copies of its points; a parent's the sum of its children's
        got = {}
        for i, (c, cl) in copies.items():
            got[cl] = got.get(cl, 0) + c
        self.assertEqual({c: q for (l, c), (s, q) in quota.items() if l == 1 and q}, got)
        parent = dict(((l, c), p) for l, c, p in con.execute(
            "SELECT c.level, c.cluster, c.parent FROM balance_clusters c JOIN balance_samples s ON s.tree_id ="
            " c.tree_id WHERE s.id = ?", (sid,)))
        for l in range(2, L + 1):
            for (ll, c), (s, q) in quota.items():
                if ll == l:
                    kids = sum(qq for (lk, ck), (sk, qq) in quota.items() if lk == l - 1 and parent[(lk, ck)] == c)
                    self.assertEqual(kids, q, (l, c))
        # water-filling at the top: below-capacity clusters are within one of each other and not below the
        # capped ones' capacity minus one
        top = [(s * mult, q) for (l, c), (s, q) in quota.items() if l == L and s]
        free = [q for cap, q in top if q < cap]
        if free:
            x = min(free)
            self.assertLessEqual(max(free) - x, 1)
            self.assertTrue(all(cap <= x + 1 for cap, q in top if q == cap))
        return {i: c for i, (c, _) in copies.items()}

    def test_tree_and_sample_against_numpy(self):
        self.pool(Data(11, n_centers=5), 400, 0)
        p, out = self.balance("--config", self.config)
        with db(self.work) as con:
            kept = self.kept(con)
            tree, labels = self.check_tree(con)
            self.assertEqual(sorted(labels), kept)
            copies = self.check_sample(con, labels, 150, 2)
        self.assertEqual(out["pool"], len(kept))
        self.assertTrue(out["tree"]["built_now"])
        self.assertEqual(out["tree"]["built_points"], len(kept))
        self.assertEqual([lv["k"] for lv in out["levels"]], [12, 3])
        for lv in out["levels"]:
            l = lv["level"]
            sizes = np.bincount([v[l - 1] for v in labels.values()], minlength=lv["k"])
            s = np.sort(sizes)
            self.assertEqual((lv["size_min"], lv["size_median"], lv["size_max"]),
                             (int(s[0]), int(s[(len(s) - 1) // 2]), int(s[-1])))
            self.assertGreater(lv["objective"], 0)
        smp = out["sample"]
        self.assertEqual((smp["size"], smp["distinct"], smp["target"]), (150, len(copies), 150))
        with db(self.work) as con:
            q = [r[0] for r in con.execute("SELECT quota FROM balance_quotas WHERE level = 1 AND size > 0")]
        self.assertEqual((smp["leaf_quota_max"], smp["leaf_quota_min"]), (max(q), min(q)))
        # The sample is balanced: the top clusters' shares are far closer than their sizes.
        top = np.bincount([v[1] for v in labels.values()], minlength=3)
        share = np.bincount([labels[i][1] for i in copies], weights=[copies[i] for i in copies], minlength=3)
        self.assertLess(share.max() - share.min(), max(2, top.max() - top.min()))
        # Nothing new: nothing done, nothing written.
        with db(self.work) as con:
            before = balance_state(con)
        p, out2 = self.balance("--config", self.config)
        self.assertIn("nothing new to balance", p.stderr)
        self.assertFalse(out2["tree"]["built_now"])
        self.assertFalse(out2["sample"]["sampled_now"])
        with db(self.work) as con:
            self.assertEqual(balance_state(con), before)

    def test_incremental_assignment_and_new_target(self):
        data = Data(12, n_centers=5)
        self.pool(data, 300, 0)
        _, out = self.balance("--config", self.config)
        with db(self.work) as con:
            tree, labels = self.check_tree(con)
            old = sorted(con.execute("SELECT * FROM balance_points"))
        # New pool images are assigned down the existing tree: same tree, same centroids, old rows untouched.
        self.pool(data, 90, 500000)
        _, out = self.balance("--config", self.config)
        self.assertFalse(out["tree"]["built_now"])
        self.assertEqual(out["tree"]["id"], tree)
        self.assertEqual((out["tree"]["added_now"], out["tree"]["added_since_built"]), (90, 90))
        self.assertEqual(out["tree"]["built_points"], 300)
        self.assertAlmostEqual(out["tree"]["growth"], 0.3)
        self.assertTrue(out["sample"]["sampled_now"])
        with db(self.work) as con:
            tree2, labels2 = self.check_tree(con)
            self.assertEqual(tree2, tree)
            self.assertEqual(sorted(labels2), self.kept(con))
            self.assertEqual([r for r in sorted(con.execute("SELECT * FROM balance_points")) if r[5] == 0], old)
            self.check_sample(con, labels2, 150, 2)
        # A new target reuses the tree and draws the sample again.
        _, out = self.balance("--config", self.config, "--target", "500")
        self.assertFalse(out["tree"]["built_now"])
        self.assertEqual((out["tree"]["added_now"], out["sample"]["size"]), (0, 500))
        with db(self.work) as con:
            self.check_sample(con, labels2, 500, 2)
        # Beyond points x multiplier: every point twice.
        _, out = self.balance("--config", self.config, "--target", "5000")
        self.assertEqual(out["sample"]["size"], 2 * 390)
        # --rebuild: a new tree of all 390 points, the older tree's points dropped.
        _, out = self.balance("--config", self.config, "--rebuild")
        self.assertTrue(out["tree"]["built_now"])
        self.assertNotEqual(out["tree"]["id"], tree)
        self.assertEqual((out["tree"]["built_points"], out["tree"]["added_since_built"]), (390, 0))
        with db(self.work) as con:
            self.assertEqual(con.execute("SELECT count(DISTINCT tree_id) FROM balance_points").fetchone()[0], 1)
            _, labels3 = self.check_tree(con)
            self.check_sample(con, labels3, 150, 2)

    def test_removed_images_leave(self):
        data = Data(13, n_centers=4)
        pool = data.points(250)
        near = pool[:30] + 0.02 * data.rng.normal(size=(30, D))
        near /= np.linalg.norm(near, axis=1, keepdims=True)
        add_collection(self, self.work, "web", "pool", np.concatenate([pool, near]), 0)
        run("lvd-dedup", "--work", self.work, "--model", MODEL, "--threshold", "0.9999", "--quiet")
        self.balance("--config", self.config)
        run("lvd-dedup", "--work", self.work, "--model", MODEL, "--threshold", "0.99", "--force", "--quiet")
        _, out = self.balance("--config", self.config)
        self.assertGreater(out["tree"]["removed_now"], 0)
        with db(self.work) as con:
            kept = self.kept(con)
            _, labels = self.check_tree(con)
            self.assertEqual(sorted(labels), kept)
            copies = self.check_sample(con, labels, 150, 2)
        self.assertTrue(set(copies) <= set(kept))

    def test_from_retrieve(self):
        data = Data(14, n_centers=5)
        add_collection(self, self.work, "web", "pool", data.points(300), 0)
        add_collection(self, self.work, "seeds", "seed", data.points(10, [0, 1]), 100000)
        reg = write(os.path.join(self.tmp, "r.yaml"),
                    "rows:\n  - {name: s, dataset: s, method: sample, k: 12, collection: seeds}\n")
        p, _ = self.balance("--config", self.config, "--from", "retrieve", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("empty pool", p.stderr)
        run("lvd-retrieve", "--work", self.work, "--model", MODEL, "--registry", reg, "--no-dedup", "--quiet")
        _, out = self.balance("--config", self.config, "--from", "retrieve", "--target", "40")
        with db(self.work) as con:
            sel = sorted(r[0] for r in con.execute("SELECT DISTINCT image_id FROM retrieve_selections"))
            _, labels = self.check_tree(con)
            self.assertEqual(sorted(labels), sel)
            self.check_sample(con, labels, 40, 2)
        self.assertEqual(out["from"], "retrieve")

    def test_errors(self):
        cases = [("n_levels: 2\nn_clusters: [4]\n", ":2:", "n_clusters"),
                 ("n_levels: 1\nn_clusters: [4]\nbogus_key: 3\n", ":3:", "bogus_key"),
                 ("n_levels: 1\nn_clusters: [4]\nmultiplier: 0\n", ":3:", "multiplier")]
        add_collection(self, self.work, "web", "pool", Data(15).points(60), 0)
        for i, (text, line, key) in enumerate(cases):
            path = write(os.path.join(self.tmp, "bad%d.yaml" % i), text)
            p, _ = self.balance("--config", path, "--target", "10", check=False)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(path + line, p.stderr)
            self.assertIn(key, p.stderr)
        ok = write(os.path.join(self.tmp, "ok.yaml"), "n_levels: 1\nn_clusters: [4]\nn_iters: 5\n")
        p, _ = self.balance("--config", ok, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("target", p.stderr)
        p, _ = self.balance("--config", ok, "--target", "10", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no model has dedup results: run lvd-dedup first", p.stderr)
        p, _ = self.balance("--config", ok, "--target", "10", "--dedup-model", MODEL, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("model '%s' has no dedup results (run lvd-dedup --model %s first)" % (MODEL, MODEL), p.stderr)
        p = run("lvd-balance", "--work", self.work, "--model", "nope", "--config", ok, "--target", "10", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("lvd-embed --name nope", p.stderr)
        p = run("lvd-balance", "--work", os.path.join(self.tmp, "none"), "--model", MODEL, "--config", ok,
                "--target", "10", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no catalog", p.stderr)
        # A tree built with other parameters: an error naming --rebuild, and nothing recorded changes.
        run("lvd-dedup", "--work", self.work, "--model", MODEL, "--threshold", "0.999", "--quiet")
        self.balance("--config", ok, "--target", "10")
        with db(self.work) as con:
            before = balance_state(con)
        other = write(os.path.join(self.tmp, "other.yaml"), "n_levels: 1\nn_clusters: [5]\nn_iters: 5\n")
        p, _ = self.balance("--config", other, "--target", "10", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--rebuild", p.stderr)
        # Changed centroids: new pool images cannot be assigned; the committed tree and sample stay.
        with db(self.work) as con:
            path = con.execute("SELECT path FROM balance_levels").fetchone()[0]
        c = np.load(os.path.join(self.work, path))
        np.save(os.path.join(self.work, path), c * 0.5)
        add_collection(self, self.work, "web", "pool", Data(16).points(10), 900000)
        run("lvd-dedup", "--work", self.work, "--model", MODEL, "--threshold", "0.999", "--quiet")
        p, _ = self.balance("--config", ok, "--target", "10", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("changed since they were recorded", p.stderr)
        with db(self.work) as con:
            self.assertEqual(balance_state(con), before)
            self.assertEqual(con.execute("SELECT status FROM runs WHERE stage = 'balance' ORDER BY id DESC"
                                         " LIMIT 1").fetchone()[0], "failed")

    def test_manifest_weights_are_copies(self):
        self.pool(Data(17, n_centers=5), 200, 0)
        run("lvd-decode", "--work", self.work, "--size", "16", "--min-side", "8", "--quiet")
        _, out = self.balance("--config", self.config, "--target", "260")
        m = os.path.join(self.tmp, "bal.db")
        run("lvd-manifest", "build", "--work", self.work, "--out", m, "--from", "balance")
        with db(self.work) as con:
            want = {sha: (c, cl) for sha, c, cl in con.execute(
                "SELECT i.sha256, b.copies, b.cluster FROM balance_sample b JOIN images i ON i.id = b.image_id")}
        mc = sqlite3.connect(m)
        got = {k: w for k, w in mc.execute("SELECT key, weight FROM samples")}
        self.assertEqual(got, {k: c for k, (c, _) in want.items()})
        self.assertEqual(sum(got.values()), 260)
        self.assertGreater(max(got.values()), 1, "the target needs copies")
        src = {k: (row, cl) for k, row, cl in mc.execute(
            "SELECT s.key, x.row, x.cluster FROM sample_sources x JOIN samples s ON s.id = x.sample_id")}
        self.assertEqual(src, {k: ("balance", cl) for k, (_, cl) in want.items()})
        info = dict(mc.execute("SELECT key, value FROM info"))
        mc.close()
        self.assertEqual(info["source"], "balance")
        bal = json.loads(info["balance"])
        self.assertEqual((bal["sample"], bal["total"], bal["target"]), (out["sample"]["id"], 260, 260))

    def test_audit_section(self):
        self.pool(Data(18, n_centers=5), 240, 0)
        run("lvd-decode", "--work", self.work, "--size", "16", "--min-side", "8", "--quiet")
        self.balance("--config", self.config, "--target", "120")
        rep = json.loads(run("lvd-audit", "--work", self.work, "--json").stdout)
        b = rep["balance"]
        with db(self.work) as con:
            _, labels = self.check_tree(con)
            copies = {i: c for i, c in con.execute("SELECT image_id, copies FROM balance_sample")}
            sha = dict(con.execute("SELECT id, sha256 FROM images"))
        self.assertEqual((b["model"], b["tree"]["points"], b["sample"]["total"]), (MODEL, len(labels), 120))
        for lv in b["levels"]:
            l = lv["level"] - 1
            sizes, quota = {}, {}
            for i, lab in labels.items():
                sizes[lab[l]] = sizes.get(lab[l], 0) + 1
                quota[lab[l]] = quota.get(lab[l], 0) + copies.get(i, 0)
            s = np.sort(list(sizes.values()))
            q = np.sort([quota[c] for c in sizes])
            for name, v in (("before", s), ("after", q)):
                want = {k: int(v[int((len(v) - 1) * f)]) for k, f in
                        (("min", 0), ("p25", 0.25), ("median", 0.5), ("p90", 0.9), ("max", 1))}
                self.assertEqual({k: lv[name][k] for k in want}, want, (lv["level"], name))
            self.assertEqual(lv["clusters"], len(sizes))
        # Largest / smallest top-level clusters, with sampled images of their own.
        top = {}
        for i, lab in labels.items():
            top[lab[-1]] = top.get(lab[-1], 0) + 1
        by = sorted(top, key=lambda c: (-top[c], c))
        self.assertEqual([c["cluster"] for c in b["largest"]], by[:3])
        self.assertEqual([c["cluster"] for c in b["smallest"]], sorted(top, key=lambda c: (top[c], c))[:3])
        for c in b["largest"] + b["smallest"]:
            self.assertEqual(c["size"], top[c["cluster"]])
            self.assertTrue(c["images"])
            for im in c["images"]:
                i = im["image"]["id"]
                self.assertEqual(labels[i][-1], c["cluster"])
                self.assertEqual(im["copies"], copies[i])
        text = run("lvd-audit", "--work", self.work).stdout
        self.assertIn("balance (model %s)" % MODEL, text)
        self.assertIn("sample %d: 120 of target 120" % b["sample"]["id"], text)
        html = os.path.join(self.tmp, "html")
        run("lvd-audit", "--work", self.work, "--html", html, "--quiet")
        with open(os.path.join(html, "index.html")) as f:
            page = f.read()
        sec = page[page.index('<section class="balance" id="balance">'):]
        self.assertEqual(sec.count('data-kind="largest"'), 3)
        self.assertEqual(sec.count('data-kind="smallest"'), 3)
        self.assertEqual(sec.count("<tr data-level="), 2)
        for c in b["largest"] + b["smallest"]:
            for im in c["images"]:
                thumb = sha[im["image"]["id"]][:16]
                self.assertIn("thumbs/" + thumb, sec)
                self.assertTrue(any(n.startswith(thumb) for n in os.listdir(os.path.join(html, "thumbs"))))

    def test_failed_build_commits_nothing(self):
        self.pool(Data(19), 120, 0)
        # The centroids cannot be written (a file where their folder goes): the run fails and records no tree.
        os.makedirs(os.path.join(self.work, "balance"))
        blocker = os.path.join(self.work, "balance", MODEL)
        write(blocker, "not a folder\n")
        p, _ = self.balance("--config", self.config, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(blocker, p.stderr)
        with db(self.work) as con:
            self.assertEqual(balance_state(con), [[]] * 7)
            self.assertEqual(con.execute("SELECT status FROM runs WHERE stage = 'balance'").fetchall(), [("failed",)])
        os.remove(blocker)
        _, out = self.balance("--config", self.config)
        self.assertTrue(out["tree"]["built_now"])
        with db(self.work) as con:
            _, labels = self.check_tree(con)
            self.check_sample(con, labels, 150, 2)

    def test_kill_9_and_rerun(self):
        # kill -9 at spread times of a run: the catalog holds either no tree or the whole result, and the run
        # after gives the uninterrupted run's tree, files and sample.
        self.pool(Data(23), 1500, 0)
        heavy = write(os.path.join(self.tmp, "heavy.yaml"), HEAVY)
        ref = os.path.join(self.tmp, "ref-work")
        shutil.copytree(self.work, ref)
        t0 = time.monotonic()
        self.balance("--config", heavy, work=ref)
        took = time.monotonic() - t0
        with db(ref) as con:
            want = result_state(con)
        self.assertTrue(want[0] and want[3] and want[5], "the reference run recorded a tree and a sample")
        files = {row[3]: row[4] for row in want[1]}
        args = [exe("lvd-balance"), "--work", self.work, "--model", MODEL, "--config", heavy, "--quiet"]
        seen = set()
        for frac in (0.1, 0.3, 0.5, 0.7, 0.85, 0.95):
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(frac * took)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            with db(self.work) as con:
                got = result_state(con)
            if got[0]:
                self.assertEqual(got, want, "a committed tree is the whole result")
                seen.add("committed")
                break
            self.assertEqual(got, [[]] * 7, "an interrupted run leaves nothing in the catalog")
            seen.add("nothing")
        if "committed" not in seen:
            # Once more, killed as soon as the first centroid file appears: the files are written inside the
            # catalog transaction, so the kill lands in it (or, if late, after the commit).
            first = os.path.join(self.work, sorted(files)[0])
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while not os.path.exists(first) and proc.poll() is None:
                time.sleep(0.0005)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            with db(self.work) as con:
                got = result_state(con)
            self.assertIn(got, (want, [[]] * 7))
            seen.add("in the transaction" if not got[0] else "committed")
        print("# lvd-balance run %.2f s; states seen after the kills: %s" % (took, sorted(seen)))
        self.assertIn("nothing", seen, "some kill landed before the commit")
        _, out = self.balance("--config", heavy)
        with db(self.work) as con:
            self.assertEqual(result_state(con), want)
            _, labels = self.check_tree(con)
            self.check_sample(con, labels, 900, 1)
        for rel, sha in files.items():
            with open(os.path.join(self.work, rel), "rb") as f, open(os.path.join(ref, rel), "rb") as g:
                self.assertEqual(f.read(), g.read(), rel)
