"""lvd-audit on a work directory with real dedup results: real pictures (Fashion-MNIST via scripts/fixtures.py)
imported, decoded and given controlled embeddings (lvd-embed --import), deduplicated by lvd-dedup. The
embeddings are built from orthonormal directions so that the similarities are known: near duplicates of the
pool at 0.62..0.97, a chain of three pool images (0.8, 0.8, but 0.3 end to end), and benchmark images
matching pool images at 0.47..0.99, one of them through a component.

Every expectation is computed here from the catalog with sqlite3 (bands, orders, counts, keys), never from
lvd-audit's own output. The HTML page is loaded in headless Chromium (through chromedriver's WebDriver HTTP
API, with urllib): pairs are counted in the DOM after its script ran, every thumbnail must have decoded
(naturalWidth > 0), and the screenshot must not be blank.

The retrieval section is tested on a second work directory (AuditRetrievalTest): real pictures (some seeds
without a working image) with clustered embeddings, lvd-dedup, then lvd-retrieve with as_is, sample, cluster
and skipped rows (and once more with --no-dedup, without dedup results). Its expectations come from the
retrieve_* tables and from NumPy over the stored embeddings and centroids (test_retrieve.py's oracles).
"""
import base64
import csv
import io
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

from lvdtest import WorkTestCase, db, exe, run, sha256_file
import test_retrieve as tr  # its fixture helpers; as a module attribute, its test cases are not collected here

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import fixtures  # noqa: E402

DIM = 96
THRESHOLD = 0.6
BENCH_THRESHOLD = 0.45
ODD_NAME = 'odd, <b>&amp; "key".jpg'  # a pool file name that needs escaping in HTML and quoting in CSV
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


class Basis:
    """Hands out orthonormal directions of R^DIM, so constructed cosines are exact."""

    def __init__(self):
        self.next = 0

    def new(self):
        v = np.zeros(DIM, dtype=np.float64)
        v[self.next] = 1.0
        self.next += 1
        return v

    def near(self, anchor, s):
        """A unit vector whose cosine to the unit vector anchor is s."""
        return s * anchor + math.sqrt(1.0 - s * s) * self.new()


def build_files(base):
    """Pool and two benchmark folders; returns (pool_dir, {bench: dir}, plan) where plan maps file names to
    their embeddings."""
    files = os.path.join(base, "pool")
    pool = fixtures.write_pool(files, 24, seed=5, formats=("jpg", "webp", "png"), dup_exact=0, dup_near=6)
    origs = [p for p in pool if p["kind"] == "orig"]
    nears = [p for p in pool if p["kind"] == "near_dup"]
    B = Basis()
    vec = {p["name"]: B.new() for p in origs}
    # Near duplicates at decreasing similarity to their original; one gets a name that needs escaping.
    for p, s in zip(nears, (0.97, 0.9, 0.8, 0.7, 0.65, 0.62)):
        vec[p["name"]] = B.near(vec[p["dup_of"]], s)
    odd = nears[2]
    os.rename(odd["path"], os.path.join(files, ODD_NAME))
    vec[ODD_NAME] = vec.pop(odd["name"])
    with_near = {p["dup_of"] for p in nears}
    free = [p for p in origs if p["name"] not in with_near]
    # A chain: a~b 0.8, b~c 0.8, a~c 0.3: one component through b only.
    a, b, c = free[0]["name"], free[1]["name"], free[2]["name"]
    e1, e2, e3 = B.new(), B.new(), B.new()
    vec[a] = e1
    vec[b] = 0.8 * e1 + 0.6 * e2
    cb = (0.8 - 0.8 * 0.3) / 0.6
    vec[c] = 0.3 * e1 + cb * e2 + math.sqrt(1 - 0.09 - cb * cb) * e3
    # A pair of duplicates (0.75) of which only one matches a benchmark image (0.5; the other 0.375): the
    # component rule removes the other through it.
    vec[free[10]["name"]] = B.near(vec[free[9]["name"]], 0.75)
    # Benchmarks: the same pictures at another size (they look alike), plus unrelated ones.
    benches = {}
    plan = {}
    for name, targets in (("bench-a", [(free[3], 0.99), (free[4], 0.83), (free[5], 0.55), (free[6], 0.47)]),
                          ("bench-b", [(nears[0]["dup_of"], 0.7), (free[7], 0.6), (free[8], 0.46), (free[9], 0.5)])):
        d = os.path.join(base, name)
        os.makedirs(d)
        bvec = {}
        for k, (t, s) in enumerate(targets):
            t = next(p for p in origs if p["name"] == t) if isinstance(t, str) else t
            fn = "%s_%d.png" % (name, k)
            fixtures.picture(t["index"], t["split"], (t["width"] + 37, t["height"] + 21)).save(os.path.join(d, fn))
            bvec[fn] = B.near(vec[t["name"]], s)
        for k, idx in enumerate((3, 9) if name == "bench-a" else (4, 12)):
            fn = "%s_own_%d.png" % (name, k)
            fixtures.picture(idx, "t10k", (120 + 30 * k, 140)).save(os.path.join(d, fn))
            bvec[fn] = B.new()
        benches[name] = d
        plan[name] = bvec
    plan["pool"] = vec
    return files, benches, plan


def import_embeddings(work, tmp, plan, name="ctl"):
    """Every collection's rows under one model name: one lvd-embed --import per collection (pool first), each
    from its own .npy and key list."""
    for coll in ["pool"] + sorted(c for c in plan if c != "pool"):
        e, k = os.path.join(tmp, "%s-%s.npy" % (name, coll)), os.path.join(tmp, "%s-%s.txt" % (name, coll))
        keys = sorted(plan[coll])
        np.save(e, np.stack([plan[coll][key] for key in keys]).astype(np.float32))
        with open(k, "w") as f:
            f.write("".join(key + "\n" for key in keys))
        p = run("lvd-embed", "--work", work, "--collection", coll, "--import", e, "--keys", k, "--name", name,
                "--json", "--quiet")
        assert json.loads(p.stdout)["embedded"] == len(keys), (coll, p.stdout)


# ---- fallback dedup (only when lvd-dedup is not built): the rows lvd-dedup writes, per catalog-003.sql ----

def sql_dedup(work, model, t, bt):
    """Exact dedup of `model` written straight into the catalog: component rule, keep rule 'pixels'."""
    con = sqlite3.connect(os.path.join(work, "catalog.db"))
    mid = con.execute("SELECT id FROM models WHERE name = ?", (model,)).fetchone()[0]
    rows = con.execute("SELECT e.image_id, e.file, e.row, c.role, c.id, d.width * d.height FROM embeddings e"
                       " JOIN members m ON m.image_id = e.image_id JOIN collections c ON c.id = m.collection_id"
                       " JOIN decodes d ON d.image_id = e.image_id WHERE e.model_id = ? AND d.status = 'ok'",
                       (mid,)).fetchall()
    arrays, vec, pool, bench, pixels = {}, {}, [], {}, {}
    for iid, f, r, role, cid, px in rows:
        if f not in arrays:
            arrays[f] = np.load(os.path.join(work, f)).astype(np.float64)
        vec[iid] = arrays[f][r]
        if role == "pool":
            pool.append(iid)
            pixels[iid] = px
        elif role == "benchmark":
            bench.setdefault(cid, []).append(iid)
    pool = sorted(set(pool))
    sim = lambda i, j: float(np.dot(vec[i], vec[j]))  # noqa: E731
    edges = [(sim(i, j), i, j) for n, i in enumerate(pool) for j in pool[n + 1:] if sim(i, j) > t]
    parent = {i: i for i in pool}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    forest = []
    for s, i, j in sorted(edges, key=lambda e: (-e[0], e[1], e[2])):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
            forest.append((s, i, j))
    comp = {i: min(m for m in pool if find(m) == find(i)) for i in pool}
    matches = [(i, cid, b, sim(i, b)) for i in pool for cid, bs in bench.items() for b in bs if sim(i, b) > bt]
    now = "2026-01-01T00:00:00.000Z"
    cur = con.cursor()
    cur.execute("INSERT INTO runs (stage, params, fingerprint, started_at, finished_at, status)"
                " VALUES ('dedup', '{}', 'f', ?, ?, 'done')", (now, now))
    run_id = cur.lastrowid
    cur.execute("INSERT INTO dedup_runs (run_id, model_id, fingerprint, k, threshold, benchmark_threshold,"
                " benchmark_rule, keep_rule, phash_distance, index_desc, created_at)"
                " VALUES (?, ?, 'f', 64, ?, ?, 'component', 'pixels', NULL, 'exact (test fixture)', ?)",
                (run_id, mid, t, bt, now))
    dr = cur.lastrowid
    for s, i, j in edges:
        cur.execute("INSERT INTO dedup_edges VALUES (?, ?, ?, ?, 'knn', NULL, ?)", (mid, i, j, s, dr))
    for i, cid, b, s in matches:
        cur.execute("INSERT INTO dedup_benchmark_matches VALUES (?, ?, ?, ?, ?, ?)", (mid, i, cid, b, s, dr))
    for c in sorted(set(comp.values())):
        members = [i for i in pool if comp[i] == c]
        own = {i: max(((s, -b, cid, b) for (m, cid, b, s) in matches if m == i), default=None) for i in members}
        best = max(((v, i) for i, v in own.items() if v), default=None)
        kept = None if best else sorted(members, key=lambda i: (-pixels[i], i))[0]
        inner = [e for e in edges if comp[e[1]] == c]
        tree = [e for e in forest if comp[e[1]] == c]
        weak = min(tree, key=lambda e: (e[0], e[1], e[2])) if tree else None
        for i in members:
            ie = [(s, -(j if a == i else a), j if a == i else a) for s, a, j in inner if i in (a, j)]
            strongest = max(ie) if ie else None
            mine = own[i] if own[i] else (best[0] if best else None)
            via = i if own[i] else (best[1] if best else None)
            decision = "kept" if i == kept else ("benchmark" if best else "duplicate")
            cur.execute("INSERT INTO dedup_decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'knn', ?, ?, ?, ?, ?)",
                        (mid, i, decision, c, kept, sim(i, kept) if kept else None,
                         strongest[2] if strongest else None, strongest[0] if strongest else None,
                         mine[3] if mine else None, mine[2] if mine else None, mine[0] if mine else None,
                         via if mine else None, dr))
        cur.execute("INSERT INTO dedup_components VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (mid, c, len(members), kept, len(members) - 1 if kept else 0, 0 if kept else len(members),
                     weak[0] if weak else None, weak[1] if weak else None, weak[2] if weak else None,
                     "knn" if weak else None, max(e[0] for e in inner) if inner else None,
                     best[0][3] if best else None, best[1] if best else None, best[0][0] if best else None, dr))
    # Nearest neighbours (catalog-004.sql): collection 0 = the pool; ties to the smaller image id.
    for i in pool:
        for cid, cands in [(0, [j for j in pool if j != i])] + sorted(bench.items()):
            if cands:
                s, j = max((sim(i, j), -j) for j in cands)
                cur.execute("INSERT INTO dedup_nearest VALUES (?, ?, ?, ?, ?, ?)", (mid, cid, i, -j, s, dr))
    con.commit()
    con.close()


def dedup(work, model="ctl"):
    if os.path.exists(exe("lvd-dedup")):
        run("lvd-dedup", "--work", work, "--model", model, "--threshold", THRESHOLD, "--benchmark-threshold",
            BENCH_THRESHOLD, "--quiet")
        return "lvd-dedup"
    sql_dedup(work, model, THRESHOLD, BENCH_THRESHOLD)
    return "sql"


# ---- what the catalog holds, independently of lvd-audit ----

def bands_of(t):
    edges = [t] + [k / 10.0 for k in range(1, 10) if k / 10.0 > t] + ([0.95] if 0.95 > t else []) + [1.0]
    return edges


def band_index(edges, v):
    if v < edges[0]:
        return -1
    i = len(edges) - 2
    while i > 0 and v < edges[i]:
        i -= 1
    return i


class Catalog:
    """Reads what lvd-audit should report straight from the dedup tables."""

    def __init__(self, work, model="ctl"):
        self.con = db(work)
        self.mid = self.con.execute("SELECT id FROM models WHERE name = ?", (model,)).fetchone()[0]

    def key(self, iid, prefer=None):
        """(key, collection) of image iid in collection `prefer`, else its first pool membership."""
        if iid is None:
            return None
        rows = self.con.execute("SELECT m.collection_id, m.key, c.name, c.role FROM members m JOIN collections c"
                                " ON c.id = m.collection_id WHERE m.image_id = ?", (iid,)).fetchall()
        rows.sort(key=lambda r: (r[0] != prefer, r[3] != "pool", r[0], r[1]))
        return (rows[0][1], rows[0][2])

    def params(self):
        return self.con.execute("SELECT threshold, benchmark_threshold FROM dedup_runs WHERE model_id = ?"
                                " ORDER BY id DESC LIMIT 1", (self.mid,)).fetchone()

    def benchmarks(self):
        return self.con.execute("SELECT id, name FROM collections WHERE role = 'benchmark' ORDER BY name").fetchall()

    def bench_removals(self, cid):
        """[(image_id, bench_image_id, bench_sim, via)] sorted by similarity descending, then image id."""
        rows = self.con.execute("SELECT image_id, bench_image_id, bench_sim, bench_via_image_id FROM dedup_decisions"
                                " WHERE model_id = ? AND decision = 'benchmark' AND bench_collection_id = ?",
                                (self.mid, cid)).fetchall()
        return sorted(rows, key=lambda r: (-r[2], r[0]))

    def duplicates(self):
        rows = self.con.execute("SELECT image_id, edge_image_id, edge_sim, kept_image_id, kept_sim FROM"
                                " dedup_decisions WHERE model_id = ? AND decision = 'duplicate'",
                                (self.mid,)).fetchall()
        return sorted(rows, key=lambda r: (-r[2], r[0]))

    def components(self):
        return self.con.execute("SELECT component, size, weakest_sim, kept_image_id FROM dedup_components"
                                " WHERE model_id = ?", (self.mid,)).fetchall()

    def nearest(self, cid):
        """{pool image: nearest similarity} of dedup_nearest in collection cid (0: the pool)."""
        return dict(self.con.execute("SELECT image_id, sim FROM dedup_nearest WHERE model_id = ? AND"
                                     " collection_id = ?", (self.mid, cid)).fetchall())

    def removals(self):
        return self.con.execute("SELECT image_id, reason, component, ref_image_id, ref_sim, cause_image_id,"
                                " cause_sim, bench_collection_id FROM dedup_removals WHERE model_id = ?",
                                (self.mid,)).fetchall()


def hist_bins(lo_value, t):
    """The bin edges lvd-audit documents for a histogram of values >= lo_value around threshold t
    (curate/audit/report.h, audit_hist_bins)."""
    lo = min(lo_value, t)
    lo = -1.0 if not math.isfinite(lo) or lo < -1.0 else min(lo, 0.99)
    for w in (0.01, 0.02, 0.025, 0.05, 0.1, 0.2):
        start = math.floor(lo / w) * w
        if abs(start - t) < 1e-12:
            start -= w
        nb = math.ceil((1.0 - start) / w - 1e-9)
        if nb <= 40:
            break
    nb = max(1, min(nb, 64))
    return [start + i * w for i in range(nb)] + [1.0]


def flag_thresholds(t):
    """t - 0.2 .. t + 0.15 in steps of 0.05 within [-1, 1) (audit_flag_thresholds)."""
    out = [t if i == 0 else round((t + 0.05 * i) * 1e9) / 1e9 for i in range(-4, 4)]
    return [v for v in out if -1.0 <= v < 1.0]


def brute_nearest(work, model="ctl"):
    """{collection id (0: the pool): {pool image: nearest similarity}} by brute force over the stored rows."""
    con = db(work)
    mid = con.execute("SELECT id FROM models WHERE name = ?", (model,)).fetchone()[0]
    rows = con.execute("SELECT e.image_id, e.file, e.row, c.role, c.id FROM embeddings e JOIN members m"
                       " ON m.image_id = e.image_id JOIN collections c ON c.id = m.collection_id"
                       " WHERE e.model_id = ?", (mid,)).fetchall()
    con.close()
    arrays, vec, coll = {}, {}, {}
    for iid, f, r, role, cid in rows:
        if f not in arrays:
            arrays[f] = np.load(os.path.join(work, f)).astype(np.float64)
        vec[iid] = arrays[f][r]
        coll.setdefault(0 if role == "pool" else cid, set()).add(iid)
    out = {}
    for i in sorted(coll[0]):
        for cid, members in coll.items():
            cands = [j for j in members if j != i]
            if cands:
                out.setdefault(cid, {})[i] = max(float(vec[i] @ vec[j]) for j in cands)
    return out


def split_pairs(rows, top):
    """The top list and the nearest-the-threshold list (lowest first) of rows sorted descending."""
    n_top = min(len(rows), top)
    n_low = min(len(rows) - n_top, top)
    return rows[:n_top], list(reversed(rows))[:n_low]


# ---- headless Chromium ----

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class WebDriver:
    """A chromedriver process and one headless Chromium session, driven over the W3C WebDriver HTTP API."""

    def __init__(self, tmp, log_requests=False):
        self.port = free_port()
        self.log = open(os.path.join(tmp, "chromedriver.log"), "w")
        self.proc = subprocess.Popen([CHROMEDRIVER, "--port=%d" % self.port], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.base = "http://127.0.0.1:%d" % self.port
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.call("GET", "/status")["value"].get("ready"):
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromedriver did not become ready")
            time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless", "--disable-gpu", "--no-sandbox", "--window-size=1200,900",
                     "--user-data-dir=" + os.path.join(tmp, "chrome-profile")]}}}}
        if log_requests:  # chromedriver's performance log: the DevTools network events, for requests()
            caps["capabilities"]["alwaysMatch"]["goog:loggingPrefs"] = {"performance": "ALL"}
        try:
            self.session = self.call("POST", "/session", caps, timeout=60)["value"]["sessionId"]
        except Exception:
            self.close()
            raise

    def call(self, method, path, body=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError("WebDriver %s %s: %s" % (method, path, e.read()[:2000]))

    def s(self, method, path, body=None):
        return self.call(method, "/session/%s%s" % (self.session, path), body)["value"]

    def js(self, script):
        return self.s("POST", "/execute/sync", {"script": script, "args": []})

    def requests(self):
        """[(URL, URL of the document that asked for it)] the browser requested since the last call (needs
        log_requests)."""
        out = []
        for e in self.s("POST", "/se/log", {"type": "performance"}):
            m = json.loads(e["message"])["message"]
            if m.get("method") == "Network.requestWillBeSent":
                out.append((m["params"]["request"]["url"], m["params"].get("documentURL", "")))
        return out

    def close(self):
        if getattr(self, "session", None):
            try:
                self.call("DELETE", "/session/" + self.session)
            except Exception:
                pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def chromium_starts(tmp):
    """None if headless Chromium renders a trivial page, else why not."""
    if not CHROMIUM:
        return "chromium is not installed (scripts/bootstrap.sh installs it)"
    page = os.path.join(tmp, "probe.html")
    with open(page, "w") as f:
        f.write("<p id=probe>ok</p>")
    try:
        p = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox",
                            "--user-data-dir=" + os.path.join(tmp, "probe-profile"), "--dump-dom",
                            "file://" + page], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "chromium cannot start: %s" % e
    if 'id="probe"' not in p.stdout:
        return "chromium cannot start: exit %d, %s" % (p.returncode, p.stderr[-500:])
    return None


class AuditTest(WorkTestCase):
    @classmethod
    def setUpClass(cls):
        cls.base = tempfile.mkdtemp(prefix="lvd-it-audit-")
        try:
            cls.build_work()
        except BaseException:
            shutil.rmtree(cls.base, ignore_errors=True)
            raise

    @classmethod
    def build_work(cls):
        files, benches, cls.plan = build_files(cls.base)
        cls.work0 = os.path.join(cls.base, "work")
        run("lvd-import", "--work", cls.work0, "--collection", "pool", "--role", "pool", "--dir", files, "--quiet")
        for name, d in sorted(benches.items()):
            run("lvd-import", "--work", cls.work0, "--collection", name, "--role", "benchmark", "--dir", d,
                "--quiet")
        run("lvd-decode", "--work", cls.work0, "--size", "256", "--quiet")
        import_embeddings(cls.work0, cls.base, cls.plan)
        cls.dedup_by = dedup(cls.work0)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.base, ignore_errors=True)

    def setUp(self):
        super().setUp()
        shutil.copytree(self.work0, self.work)

    def audit(self, *args, check=True):
        return run("lvd-audit", "--work", self.work, *args, check=check)

    def test_fixture_has_what_the_audit_must_show(self):
        """The dedup results hold every case the audit presents (else the other tests prove little)."""
        cat = Catalog(self.work)
        kinds = dict(cat.con.execute("SELECT decision, count(*) FROM dedup_decisions WHERE model_id = ?"
                                     " GROUP BY decision", (cat.mid,)).fetchall())
        self.assertGreaterEqual(kinds.get("duplicate", 0), 6, kinds)
        self.assertGreaterEqual(kinds.get("benchmark", 0), 6, kinds)
        bands = set()
        for cid, _ in cat.benchmarks():
            for r in cat.bench_removals(cid):
                bands.add(band_index(bands_of(BENCH_THRESHOLD), r[2]))
        self.assertGreaterEqual(len(bands), 4, "removals should fall in several bands")
        self.assertTrue(any(r[4] is not None and r[4] <= THRESHOLD for r in cat.duplicates()),
                        "the chain should leave a duplicate below the threshold from its kept image")
        via = cat.con.execute("SELECT count(*) FROM dedup_decisions WHERE model_id = ? AND decision = 'benchmark'"
                              " AND bench_via_image_id <> image_id", (cat.mid,)).fetchone()[0]
        self.assertGreaterEqual(via, 1, "a benchmark removal through a component member is expected")

    def test_json_matches_catalog(self):
        top = 3
        r = json.loads(self.audit("--json", "--top", top).stdout)
        cat = Catalog(self.work)
        t, bt = cat.params()
        self.assertEqual(r["model"], "ctl")
        self.assertNotIn("retrieval", r, "no retrieval results, no retrieval section")
        self.assertAlmostEqual(r["params"]["threshold"], t)
        self.assertAlmostEqual(r["params"]["benchmark_threshold"], bt)
        dec = dict(cat.con.execute("SELECT decision, count(*) FROM dedup_decisions WHERE model_id = ?"
                                   " GROUP BY decision", (cat.mid,)).fetchall())
        self.assertEqual((r["pool"]["kept"], r["pool"]["duplicate"], r["pool"]["benchmark"]),
                         (dec.get("kept", 0), dec.get("duplicate", 0), dec.get("benchmark", 0)))
        self.assertEqual(r["pool"]["undecided"], 0)
        self.assertEqual([b["name"] for b in r["benchmarks"]], [n for _, n in cat.benchmarks()])
        for (cid, name), b in zip(cat.benchmarks(), r["benchmarks"]):
            rows = cat.bench_removals(cid)
            self.assertEqual(b["removed"], len(rows), name)
            self.assertEqual(b["removed_direct"], sum(1 for x in rows if x[3] == x[0]), name)
            edges = bands_of(bt)
            want = [0] * (len(edges) - 1)
            for x in rows:
                want[band_index(edges, x[2])] += 1
            self.assertEqual([(round(x["lo"], 6), round(x["hi"], 6)) for x in b["bands"]],
                             [(round(edges[i], 6), round(edges[i + 1], 6)) for i in range(len(edges) - 1)], name)
            self.assertEqual([x["removed"] for x in b["bands"]], want, name)
            self.assertEqual(sum(b["histogram"]["counts"]), len(rows))
            # The histogram's own bins, recounted here from the catalog's similarities.
            he = b["histogram"]["edges"]
            self.assertLessEqual(he[0], bt)
            hc = [0] * (len(he) - 1)
            for x in rows:
                hc[band_index(he, x[2])] += 1
            self.assertEqual(b["histogram"]["counts"], hc)
            nm = cat.con.execute("SELECT count(*) FROM dedup_benchmark_matches WHERE model_id = ? AND"
                                 " collection_id = ?", (cat.mid, cid)).fetchone()[0]
            self.assertEqual(b["matches"], nm)
            hi, lo = split_pairs(rows, top)
            for got, want_rows in ((b["top_pairs"], hi), (b["threshold_pairs"], lo)):
                self.assertEqual([(p["image"]["id"], p["ref"]["id"]) for p in got], [(x[0], x[1]) for x in want_rows])
                for p, x in zip(got, want_rows):
                    self.assertAlmostEqual(p["sim"], x[2], places=9)
                    self.assertEqual((p["image"]["key"], p["image"]["collection"]), cat.key(x[0]))
                    self.assertEqual((p["ref"]["key"], p["ref"]["collection"]), (cat.key(x[1], cid)[0], name))
                    self.assertEqual(p["via"]["id"] if p["via"] else x[0], x[3])
            self.assertEqual(len(b["top_pairs"]) + len(b["threshold_pairs"]), min(len(rows), 2 * top))
        s = r["self"]
        comps = cat.components()
        self.assertEqual(s["components"], len(comps))
        self.assertEqual(s["multi_components"], sum(1 for c in comps if c[1] > 1))
        self.assertEqual(s["largest_size"], max(c[1] for c in comps))
        dups = cat.duplicates()
        self.assertEqual(s["removed"], len(dups))
        self.assertEqual(s["chained"], sum(1 for x in dups if x[4] is not None and x[4] <= t))
        buckets = {}
        for c in comps:
            hi_ = 1
            while hi_ < c[1]:
                hi_ *= 2
            lo_ = hi_ // 2 + 1 if hi_ > 1 else 1
            n, m = buckets.get((lo_, hi_), (0, 0))
            buckets[(lo_, hi_)] = (n + 1, m + c[1])
        self.assertEqual([((x["min"], x["max"]), (x["components"], x["images"])) for x in s["sizes"]],
                         sorted(buckets.items()))
        multi = [c for c in comps if c[1] > 1]
        self.assertEqual([x["component"] for x in s["largest"]],
                         [c[0] for c in sorted(multi, key=lambda c: (-c[1], c[0]))][:top])
        self.assertEqual([x["component"] for x in s["weakest"]],
                         [c[0] for c in sorted(multi, key=lambda c: (c[2], c[0]))][:top])
        hi, lo = split_pairs(dups, top)
        for got, want_rows in ((s["top_pairs"], hi), (s["threshold_pairs"], lo)):
            self.assertEqual([(p["image"]["id"], p["ref"]["id"], p["kept"]["id"]) for p in got],
                             [(x[0], x[1], x[3]) for x in want_rows])
            for p, x in zip(got, want_rows):
                self.assertAlmostEqual(p["sim"], x[2], places=9)
                self.assertAlmostEqual(p["kept_sim"], x[4], places=9)

    def check_nearest(self, nr, sims, brute, t, what):
        """One report "nearest" object against the dedup_nearest similarities of its collection (sims) and the
        brute-force ones (brute, {image: sim})."""
        self.assertEqual(set(sims), set(brute), what)
        for i, v in brute.items():
            self.assertAlmostEqual(sims[i], v, places=6, msg=(what, i))
        vals = list(sims.values())
        self.assertEqual(nr["images"], len(vals), what)
        self.assertAlmostEqual(nr["min_sim"], min(vals), places=12)
        self.assertAlmostEqual(nr["max_sim"], max(vals), places=12)
        edges = hist_bins(min(vals), t)
        self.assertEqual(len(nr["histogram"]["edges"]), len(edges), what)
        for a, b in zip(nr["histogram"]["edges"], edges):
            self.assertAlmostEqual(a, b, places=8, msg=what)
        self.assertLess(edges[0], t, what)  # the histogram starts below the threshold
        want = [0] * (len(edges) - 1)
        for v in vals:
            want[band_index(edges, v)] += 1
        self.assertEqual(nr["histogram"]["counts"], want, what)
        self.assertEqual(sum(want), len(vals))
        thr = flag_thresholds(t)
        self.assertEqual([round(f["threshold"], 9) for f in nr["flagged"]], [round(x, 9) for x in thr], what)
        self.assertEqual([f.get("used", False) for f in nr["flagged"]], [x == t for x in thr], what)
        for f, x in zip(nr["flagged"], thr):
            self.assertEqual(f["images"], sum(1 for v in vals if v > f["threshold"]), (what, x))
            if all(abs(v - x) > 1e-7 for v in brute.values()):  # brute force agrees away from float ties
                self.assertEqual(f["images"], sum(1 for v in brute.values() if v > x), (what, x))
        return {round(f["threshold"], 9): f["images"] for f in nr["flagged"]}

    def test_nearest_matches_catalog(self):
        r = json.loads(self.audit("--json").stdout)
        cat = Catalog(self.work)
        t, bt = cat.params()
        brute = brute_nearest(self.work)
        pool = cat.con.execute("SELECT count(*) FROM dedup_decisions WHERE model_id = ?", (cat.mid,)).fetchone()[0]
        for (cid, name), b in zip(cat.benchmarks(), r["benchmarks"]):
            sims = cat.nearest(cid)
            self.assertEqual(len(sims), pool, name)  # every searched pool image, not only those matched
            self.assertGreater(sum(1 for v in sims.values() if v <= bt), 0, name)
            flagged = self.check_nearest(b["nearest"], sims, brute[cid], bt, name)
            # At the threshold used: the pool images with a match of their own.
            self.assertEqual(flagged[round(bt, 9)], b["matched_pool_images"], name)
        sims = cat.nearest(0)
        self.assertEqual(len(sims), pool)
        flagged = self.check_nearest(r["self"]["nearest"], sims, brute[0], t, "self")
        knn = {i for (i,) in cat.con.execute("SELECT image_a FROM dedup_edges WHERE model_id = ? AND kind = 'knn'"
                                            " UNION SELECT image_b FROM dedup_edges WHERE model_id = ? AND"
                                            " kind = 'knn'", (cat.mid, cat.mid))}
        self.assertEqual(flagged[round(t, 9)], len(knn))
        self.assertGreater(sum(1 for v in sims.values() if v <= t), 0, "images without an edge have rows too")
        # The text summary shows the same table.
        out = self.audit().stdout
        sec = out.split("\nself-dedup", 1)[1]
        self.assertIn("nearest    most similar other pool image of each of %d searched pool images" % pool, sec)
        self.assertRegex(sec, r"\n    %s\s+\(used\)\s+%d\n" % (re.escape("%.4g" % t), flagged[round(t, 9)]))
        for f in r["self"]["nearest"]["flagged"]:
            self.assertRegex(sec, r"\n    %s\s+(\(used\))?\s+%d\n" % (re.escape("%.4g" % f["threshold"]), f["images"]))

    def test_text_summary(self):
        out = self.audit("--top", "2").stdout
        cat = Catalog(self.work)
        t, bt = cat.params()
        self.assertIn("model    ctl", out)
        for cid, name in cat.benchmarks():
            sec = out.split("\nbenchmark %s " % name, 1)[1].split("\nbenchmark ", 1)[0].split("\nself-dedup", 1)[0]
            rows = cat.bench_removals(cid)
            self.assertRegex(sec, r"removed\s+%d pool images" % len(rows))
            self.assertIn("cosine > %.4g" % bt, sec)
            edges = bands_of(bt)
            for i in range(len(edges) - 1):
                n = sum(1 for x in rows if band_index(edges, x[2]) == i)
                self.assertRegex(sec, r"\n  %s-%s\s+%d\n" % (re.escape("%.4g" % edges[i]),
                                                              re.escape("%.4g" % edges[i + 1]), n))
            # Top pairs in order: rank, similarity, the removed image's key.
            hi, _ = split_pairs(rows, 2)
            got = re.findall(r"\n\s+(\d+)\s+(\d\.\d{4})  (\S+)", sec.split("top pairs", 1)[1])
            self.assertEqual([(int(g[0]), g[1]) for g in got[:len(hi)]],
                             [(i + 1, "%.4f" % x[2]) for i, x in enumerate(hi)])
        sec = out.split("\nself-dedup", 1)[1]
        self.assertRegex(sec, r"removed\s+%d duplicates" % len(cat.duplicates()))
        self.assertRegex(sec, r"components %d over" % len(cat.components()))
        self.assertNotIn("\nretrieval", out)

    def test_csv_every_removal_once(self):
        path = os.path.join(self.tmp, "removals.csv")
        p = self.audit("--csv", path, "--quiet")
        self.assertIn("model    ctl", p.stdout)  # the summary still goes to stdout
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        cat = Catalog(self.work)
        rem = cat.removals()
        self.assertEqual(len(rows), len(rem))
        keys = [(r["collection"], r["image_key"]) for r in rows]
        self.assertEqual(len(set(keys)), len(keys), "a removal is listed twice")
        names = dict(cat.benchmarks())
        want = {}
        for iid, reason, comp, ref, ref_sim, cause, cause_sim, bcid in rem:
            k, col = cat.key(iid)
            rk = cat.key(ref, bcid if reason == "benchmark" else None)
            want[(col, k)] = (reason, str(comp), rk[0] if rk else "",
                              names[bcid] if reason == "benchmark" else (rk[1] if rk else ""),
                              cause_sim, ref_sim, cat.key(cause)[0] if cause else "")
        self.assertEqual(set(want), set(keys))
        for r in rows:
            w = want[(r["collection"], r["image_key"])]
            self.assertEqual((r["reason"], r["component"], r["ref_key"], r["ref_collection"], r["cause_key"]),
                             (w[0], w[1], w[2], w[3], w[6]))
            self.assertAlmostEqual(float(r["similarity"]), w[4], delta=5e-7)
            self.assertAlmostEqual(float(r["ref_similarity"]), w[5], delta=5e-7)
        self.assertIn(ODD_NAME, [r["image_key"] for r in rows], "the odd key should be a removed near duplicate")
        # '-' writes the CSV to stdout instead of the summary.
        p = self.audit("--csv", "-")
        self.assertEqual(list(csv.DictReader(io.StringIO(p.stdout, newline=""))), rows)

    def test_html_in_chromium(self):
        out = os.path.join(self.tmp, "report")
        top = 4
        self.audit("--html", out, "--top", top, "--quiet")
        page = os.path.join(out, "index.html")
        html = open(page, encoding="utf-8").read()
        # Self-contained: no URL with a scheme anywhere, every thumbnail a file beside the page.
        self.assertIsNone(re.search(r"(?i)(https?:|ftp:|//[a-z0-9])", html.replace("</", "<")))
        self.assertNotIn('class="retrieval', html)
        srcs = re.findall(r'<img src="([^"]+)"', html)
        self.assertTrue(srcs)
        for s in srcs:
            self.assertTrue(s.startswith("thumbs/") and os.path.isfile(os.path.join(out, s)), s)
        cat = Catalog(self.work)
        want = {}
        for cid, name in cat.benchmarks():
            want[name] = min(len(cat.bench_removals(cid)), 2 * top)
        multi = sum(1 for c in cat.components() if c[1] > 1)
        want_self = min(len(cat.duplicates()), 2 * top) + min(multi, top)

        why = chromium_starts(self.tmp)
        if why:
            self.skipTest(why)
        if not CHROMEDRIVER:
            self.fail("chromium runs but chromedriver is missing (Debian package chromium-driver)")
        wd = WebDriver(self.tmp)
        try:
            wd.s("POST", "/url", {"url": "file://" + os.path.abspath(page)})
            deadline = time.monotonic() + 20
            while wd.js("return document.readyState + '/' + document.body.getAttribute('data-ready')") != \
                    "complete/1":
                self.assertLess(time.monotonic(), deadline, "page did not finish loading")
                time.sleep(0.1)
            sections = wd.js("return Array.from(document.querySelectorAll('section.benchmark')).map(function(s){"
                             " return [s.querySelector('h2').textContent, s.querySelectorAll('.pair').length,"
                             " s.querySelector('p.shown').textContent]; })")
            self.assertEqual({s[0][len("Benchmark "):]: s[1] for s in sections}, want)
            for title, n, shown in sections:  # written by the page's script after load
                self.assertIn("Showing %d of " % n, shown)
            self.assertEqual(wd.js("return document.querySelectorAll('section.self .pair').length"), want_self)
            imgs = wd.js("return Array.from(document.images).map(function(i){"
                         " return [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]; })")
            self.assertEqual(len(imgs), len(srcs))
            bad = [i for i in imgs if not (i[1] and i[2] > 0 and i[3] > 0)]
            self.assertEqual(bad, [], "thumbnails that did not decode")
            # Removal histograms (one per benchmark, two for self) and one nearest-neighbour histogram each.
            self.assertEqual(wd.js("return document.querySelectorAll('svg.hist line.threshold').length"),
                             2 * len(want) + 3)
            bars = wd.js("return Array.from(document.querySelectorAll('section')).map(function(s){"
                         " var d=s.querySelector('div.nearest'); return [s.id, d ? d.querySelectorAll("
                         "'svg.hist rect.bar').length : -1, d ? d.querySelectorAll('svg.hist line.threshold')"
                         ".length : -1, d ? d.querySelectorAll('table.flagged tr.used').length : -1]; })")
            want_bars = {}
            for k, (cid, name) in enumerate(cat.benchmarks()):
                want_bars["benchmark-%d" % k] = [len(hist_bins(min(cat.nearest(cid).values()), cat.params()[1])) - 1,
                                                 1, 1]
            want_bars["self"] = [len(hist_bins(min(cat.nearest(0).values()), cat.params()[0])) - 1, 1, 1]
            self.assertEqual({b[0]: b[1:] for b in bars}, want_bars)
            # The odd key is shown as text, not parsed as markup.
            self.assertTrue(wd.js("return Array.from(document.querySelectorAll('figcaption .key'))"
                                  ".some(function(e){ return e.textContent === %s; })" % json.dumps(ODD_NAME)))
            self.assertEqual(wd.js("return document.querySelectorAll('figcaption .key *').length"), 0)
            png = base64.b64decode(wd.s("GET", "/screenshot"))
        finally:
            wd.close()
        im = Image.open(io.BytesIO(png)).convert("RGB")
        a = np.asarray(im).reshape(-1, 3)
        self.assertGreater(float(a.std()), 10.0, "screenshot looks blank")
        self.assertGreater(len(np.unique(a // 16, axis=0)), 20, "screenshot has too few colours")

    def test_read_only_and_concurrent_writer(self):
        cat_path = os.path.join(self.work, "catalog.db")
        with open(cat_path, "rb") as f:
            before = f.read()
        # A writer holds the write lock with uncommitted rows: the audit still runs and does not see them.
        w = sqlite3.connect(cat_path, timeout=1)
        w.execute("PRAGMA journal_mode=WAL")
        w.execute("BEGIN IMMEDIATE")
        w.execute("DELETE FROM dedup_decisions")
        try:
            p = self.audit("--json", "--csv", os.path.join(self.tmp, "x.csv"), "--html", os.path.join(self.tmp, "h"))
        finally:
            w.rollback()
            w.close()
        r = json.loads(p.stdout)
        self.assertGreater(r["pool"]["decided"], 0)
        with open(cat_path, "rb") as f:
            self.assertEqual(f.read(), before, "the catalog file changed")

    def test_errors(self):
        # No catalog.
        p = run("lvd-audit", "--work", os.path.join(self.tmp, "nowhere"), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("nowhere/catalog.db", p.stderr)
        # Usage errors.
        for args in (["--top", "-1"], ["--top", "x"], ["--bogus"], ["--json", "--csv", "-"], ["extra"]):
            p = self.audit(*args, check=False)
            self.assertEqual(p.returncode, 2, args)
        p = run("lvd-audit", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--work", p.stderr)
        # A model without dedup results.
        p = self.audit("--model", "nope", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("model 'nope' has no dedup results", p.stderr)
        self.assertIn("ctl", p.stderr)
        # Two models with results: one must be chosen.
        import_embeddings(self.work, self.tmp, self.plan, name="ctl2")
        dedup(self.work, "ctl2")
        p = self.audit(check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("choose one with --model", p.stderr)
        self.assertIn("ctl, ctl2", p.stderr)
        self.assertIn("model    ctl2", self.audit("--model", "ctl2").stdout)
        # The CSV target cannot be written: the error names it.
        p = self.audit("--model", "ctl", "--csv", os.path.join(self.tmp, "no", "such", "dir", "r.csv"), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no/such/dir/r.csv", p.stderr)
        # A catalog with no dedup results at all.
        fresh = os.path.join(self.tmp, "fresh")
        os.makedirs(os.path.join(self.tmp, "one"))
        fixtures.picture(1, "train", (64, 64)).save(os.path.join(self.tmp, "one", "a.png"))
        run("lvd-import", "--work", fresh, "--collection", "pool", "--role", "pool", "--dir",
            os.path.join(self.tmp, "one"), "--quiet")
        p = run("lvd-audit", "--work", fresh, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no dedup results", p.stderr)


# ---- retrieval: lvd-retrieve results in the same work directory ----

RMODEL = tr.MODEL  # the embedding name both lvd-dedup and lvd-retrieve use here
RTOP = 3
PLACEHOLDER_SEED = "seeds-one-000.gif"  # a seed without a working image (lvd-decode does not read GIF)
RROWS = [dict(name="one-as-is", dataset="one", method="as_is", collection="seeds-one", paper_seeds=1281167,
              paper_final=1281167),
         dict(name="one-sample", dataset="one", method="sample", k=4, collection="seeds-one", paper_seeds=1281167,
              paper_final=40000000),
         dict(name="absent", dataset="nowhere", method="sample", k=2, paper_final=500),
         dict(name="two-cluster", dataset="two", method="cluster", collection="seeds-two", clusters=6,
              per_cluster=6, cap=10, min_seeds=1, paper_seeds=2000, paper_final=1000000),
         dict(name="not-seed", dataset="web", method="as_is", collection="web")]


def retrieval_files(base):
    """Real pictures for a pool and two seed collections, with clustered unit vectors (tr.Data) as their
    embeddings: {collection: (role, dir, {file name: vector})}. Three pool images get near copies of another's
    vector (dedup removes them); the first seed of seeds-one is a GIF, a near copy of a pool image's vector, so
    it leads the seed pairs and is shown without a working image."""
    data = tr.Data(seed=21)
    rng = np.random.default_rng(21)
    pool = data.points(45)
    pool = np.concatenate([pool, tr.unit(pool[:3] + 0.002 * rng.normal(size=(3, tr.D)))])
    one = data.points(8, [0, 1])
    one[0] = tr.unit(pool[10:11] + 0.01 * rng.normal(size=(1, tr.D)))[0]
    sets = {"web": ("pool", "train", 0, pool, lambda k: ("png", "jpg", "webp")[k % 3]),
            "seeds-one": ("seed", "t10k", 0, one, lambda k: "gif" if k == 0 else "png"),
            "seeds-two": ("seed", "t10k", 100, data.points(10, [2, 3]), lambda k: "png")}
    out = {}
    for coll, (role, split, first, vecs, ext) in sets.items():
        d = os.path.join(base, "files-" + coll)
        os.makedirs(d)
        plan = {}
        for k, v in enumerate(vecs):
            fn = "%s-%03d.%s" % (coll, k, ext(k))
            fixtures.picture(first + k, split, (96 + 8 * (k % 5), 96 + 12 * (k % 4))).save(os.path.join(d, fn))
            plan[fn] = v
        out[coll] = (role, d, plan)
    return out


def retrieve_audit_work(base):
    """(work with dedup and retrieval, work with retrieval only (--no-dedup), registry path): both from one
    imported, decoded and embedded work directory."""
    files = retrieval_files(base)
    w0 = os.path.join(base, "w0")
    for coll, (role, d, plan) in files.items():
        run("lvd-import", "--work", w0, "--collection", coll, "--role", role, "--dir", d, "--quiet")
    run("lvd-decode", "--work", w0, "--size", "128", "--quiet")
    for coll, (role, d, plan) in files.items():
        embed_vectors(w0, base, coll, plan, RMODEL)
    reg = tr.write_registry(os.path.join(base, "rows.yaml"), RROWS)
    both, alone = os.path.join(base, "both"), os.path.join(base, "alone")
    shutil.copytree(w0, both)
    shutil.copytree(w0, alone)
    run("lvd-dedup", "--work", both, "--model", RMODEL, "--threshold", "0.99", "--quiet")
    run("lvd-retrieve", "--work", both, "--model", RMODEL, "--registry", reg, "--scale", "none", "--quiet")
    run("lvd-retrieve", "--work", alone, "--model", RMODEL, "--registry", reg, "--scale", "none", "--no-dedup",
        "--quiet")
    return both, alone, reg


def embed_vectors(work, tmp, coll, plan, name):
    npy = os.path.join(tmp, "%s-%s.npy" % (name, coll))
    keys = sorted(plan)
    np.save(npy, np.stack([plan[k] for k in keys]).astype(np.float32))
    with open(npy + ".txt", "w") as f:
        f.write("".join(k + "\n" for k in keys))
    run("lvd-embed", "--work", work, "--collection", coll, "--import", npy, "--keys", npy + ".txt", "--name", name,
        "--dtype", "float32", "--quiet")


class RetrievalCatalog:
    """What the retrieval section should say, from the catalog's tables and NumPy over the stored embeddings,
    independently of lvd-audit."""

    def __init__(self, work, dedup):
        self.work = work
        self.con = db(work)
        self.mid = self.con.execute("SELECT id FROM models WHERE name = ?", (RMODEL,)).fetchone()[0]
        self.pool = tr.pool_ids(self.con, RMODEL if dedup else None)
        ids = set(self.pool)
        for coll in ("seeds-one", "seeds-two"):
            ids |= set(tr.collection_ids(self.con, coll))
        self.vec = tr.stored_vectors(work, self.con, ids)

    def rows(self):
        """{name: retrieve_rows row as a dict}."""
        cur = self.con.execute("SELECT * FROM retrieve_rows WHERE model_id = ? ORDER BY id", (self.mid,))
        cols = [c[0] for c in cur.description]
        return {d["name"]: d for d in (dict(zip(cols, r)) for r in cur.fetchall())}

    def selections(self, row_id):
        """[(image_id, seed_image_id, rank, sim, cluster, collisions)]."""
        return self.con.execute("SELECT image_id, seed_image_id, rank, sim, cluster, collisions FROM"
                                " retrieve_selections WHERE row_id = ?", (row_id,)).fetchall()

    def seeds(self, coll):
        return [i for i in tr.collection_ids(self.con, coll) if i in self.vec]

    def nearest_pairs(self, coll):
        """[(sim, seed, nearest pool image)] by brute force, most similar first (ties: lower seed id); the
        nearest image of a seed: highest similarity, ties to the lower image id."""
        P = np.stack([self.vec[i] for i in self.pool])
        out = []
        for s in self.seeds(coll):
            sims = P @ self.vec[s]
            j = min(range(len(self.pool)), key=lambda j: (-sims[j], self.pool[j]))
            out.append((float(sims[j]), s, self.pool[j]))
        return sorted(out, key=lambda t: (-t[0], t[1]))

    def centroids(self, row):
        path = self.con.execute("SELECT path FROM retrieve_kmeans WHERE id = ?", (row["kmeans_id"],)).fetchone()[0]
        return np.load(os.path.join(self.work, path)).astype(np.float64)

    def decoded(self, image_id):
        r = self.con.execute("SELECT status FROM decodes WHERE image_id = ?", (image_id,)).fetchone()
        return r is not None and r[0] == "ok"

    def image_of(self, key, coll):
        return self.con.execute("SELECT m.image_id FROM members m JOIN collections c ON c.id = m.collection_id"
                                " WHERE m.key = ? AND c.name = ?", (key, coll)).fetchone()[0]


class AuditRetrievalTest(WorkTestCase):
    """lvd-audit's retrieval section, on real pictures with controlled embeddings, retrieved by lvd-retrieve
    after lvd-dedup (and without dedup, in a second work directory)."""

    @classmethod
    def setUpClass(cls):
        cls.base = tempfile.mkdtemp(prefix="lvd-it-audit-rt-")
        try:
            cls.both0, cls.alone0, cls.registry = retrieve_audit_work(cls.base)
        except BaseException:
            shutil.rmtree(cls.base, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.base, ignore_errors=True)

    def setUp(self):
        super().setUp()
        shutil.copytree(self.both0, self.work)

    def audit(self, *args, work=None, check=True):
        return run("lvd-audit", "--work", work or self.work, *args, check=check)

    def test_fixture_has_what_the_audit_must_show(self):
        cat = RetrievalCatalog(self.work, dedup=True)
        rows = cat.rows()
        self.assertEqual(list(rows), [r["name"] for r in RROWS])
        self.assertEqual({n for n, r in rows.items() if r["status"] == "skipped"}, {"absent", "not-seed"})
        self.assertGreater(rows["one-sample"]["collisions"], 0)
        self.assertGreater(rows["two-cluster"]["capped"], 0)
        chosen = cat.con.execute("SELECT count(*) FROM retrieve_clusters WHERE row_id = ? AND chosen = 1",
                                 (rows["two-cluster"]["id"],)).fetchone()[0]
        self.assertGreaterEqual(chosen, 2)
        removed = cat.con.execute("SELECT count(*) FROM dedup_decisions WHERE decision <> 'kept'").fetchone()[0]
        self.assertGreaterEqual(removed, 3, "the near copies are removed from the pool")
        gif = cat.image_of(PLACEHOLDER_SEED, "seeds-one")
        self.assertFalse(cat.decoded(gif), "the GIF seed has no working image")
        self.assertEqual(cat.nearest_pairs("seeds-one")[0][1], gif, "the GIF seed leads the seed pairs")

    def check_retrieval(self, rt, cat, top):
        """The report's retrieval object against the catalog and NumPy."""
        rows = cat.rows()
        self.assertEqual(rt["model"], RMODEL)
        self.assertEqual([r["name"] for r in rt["rows"]], list(rows))
        every = set()
        final_by = {"as_is": 0, "sample": 0, "cluster": 0}
        for got in rt["rows"]:
            want = rows[got["name"]]
            name = got["name"]
            for k in ("method", "collection", "status", "reason", "paper_seeds", "paper_final"):
                self.assertEqual(got[k], want[k], (name, k))
            if want["status"] == "skipped":
                for k in ("seeds", "retrieved", "collisions", "unique", "capped", "final"):
                    self.assertIsNone(got[k], (name, k))
                self.assertIsNone(got["histogram"], name)
                self.assertEqual(cat.selections(want["id"]), [], name)
                continue
            sel = cat.selections(want["id"])
            every |= {s[0] for s in sel}
            final_by[want["method"]] += len(sel)
            self.assertEqual(got["final"], len(sel), name)
            seeds = cat.seeds(want["collection"])
            self.assertEqual(got["seeds"], len(seeds), name)
            if want["method"] == "as_is":
                self.assertEqual(sorted(s[0] for s in sel), sorted(seeds))
                self.assertEqual((got["retrieved"], got["collisions"], got["capped"]), (len(seeds), 0, 0))
                self.assertIsNone(got["histogram"], name)
                continue
            # The similarity histogram: the documented bins from the lowest similarity up to 1, holding every
            # selection once.
            sims = [s[3] for s in sel]
            edges = hist_bins(min(sims), 1.0)
            self.assertEqual(len(got["histogram"]["edges"]), len(edges), name)
            for a, b in zip(got["histogram"]["edges"], edges):
                self.assertAlmostEqual(a, b, places=8)
            counts = [0] * (len(edges) - 1)
            for v in sims:
                counts[band_index(edges, v)] += 1
            self.assertEqual(got["histogram"]["counts"], counts, name)
            self.assertEqual(sum(got["histogram"]["counts"]), got["final"], name)
            self.assertAlmostEqual(got["sim_min"], min(sims), places=12)
            self.assertAlmostEqual(got["sim_max"], max(sims), places=12)
            if want["method"] == "sample":
                self.assertEqual(got["k"], 4)
                oracle = tr.oracle_sample(cat.vec, cat.pool, seeds, 4)
                self.assertEqual(sorted(oracle), sorted(s[0] for s in sel), name)
                self.assertEqual(got["retrieved"], len(seeds) * 4)
                self.assertEqual(got["collisions"], len(seeds) * 4 - len(oracle))
                self.assertEqual(got["unique"], len(oracle))
                pairs = cat.nearest_pairs(want["collection"])
                self.assertEqual(got["seeds_with_hits"], len(pairs))
                self.assertEqual(len(got["top_pairs"]), min(top, len(pairs)))
                self.assertEqual([(p["seed"]["id"], p["image"]["id"]) for p in got["top_pairs"]],
                                 [(s, i) for _, s, i in pairs[:top]])
                self.assertEqual([p["rank"] for p in got["top_pairs"]], list(range(1, len(got["top_pairs"]) + 1)))
                for p, (sim, s, i) in zip(got["top_pairs"], pairs):
                    self.assertAlmostEqual(p["sim"], sim, places=9)
                    self.assertEqual(p["seed"]["collection"], want["collection"])
                    self.assertEqual(p["image"]["collection"], "web")
                    self.assertEqual(p["collisions"], oracle[i][3])
                sims_top = [p["sim"] for p in got["top_pairs"]]
                self.assertEqual(sims_top, sorted(sims_top, reverse=True))
            else:
                self.assertEqual((got["clusters"], got["per_cluster"], got["cap"], got["min_seeds"]), (6, 6, 10, 1))
                cent = cat.centroids(want)
                sel_want, counts_c, chosen = tr.oracle_cluster(cat.vec, cat.pool, seeds, cent, 6, 10, 1)
                self.assertEqual(sorted(sel_want), sorted(s[0] for s in sel), name)
                assign = {i: int(np.argmax(cent @ cat.vec[i])) for i in cat.pool}
                size = {c: sum(1 for i in cat.pool if assign[i] == c) for c in counts_c}
                self.assertEqual(got["retrieved"], sum(min(size[c], 6) for c in chosen))
                self.assertEqual(got["capped"], got["retrieved"] - len(sel_want))
                self.assertEqual((got["clusters_with_seeds"], got["chosen"]), (len(counts_c), len(chosen)))
                order = sorted(chosen, key=lambda c: (-counts_c[c], c))[:top]
                self.assertEqual([c["cluster"] for c in got["chosen_clusters"]], order)
                for c in got["chosen_clusters"]:
                    k = c["cluster"]
                    mine = sorted((i for i, v in sel_want.items() if v[0] == k), key=lambda i: (-sel_want[i][2], i))
                    self.assertEqual((c["size"], c["seeds"], c["taken"], c["kept"]),
                                     (size[k], counts_c[k], min(size[k], 6), len(mine)))
                    self.assertEqual([x["image"]["id"] for x in c["images"]], mine[:4])
                    for x in c["images"]:
                        self.assertAlmostEqual(x["sim"], sel_want[x["image"]["id"]][2], places=6)
        tot = rt["totals"]
        self.assertEqual(tot["final_by_method"], final_by)
        self.assertEqual(tot["final"], sum(final_by.values()))
        self.assertEqual(tot["distinct_images"], len(every))
        self.assertEqual((tot["rows"], tot["skipped"]), (len(rows), 2))
        self.assertEqual(tot["paper_final"], 1281167 + 40000000 + 1000000)
        run_row = cat.con.execute("SELECT pool_size, pool_gen, registry_path, registry_sha256 FROM retrieve_runs"
                                  " WHERE model_id = ? ORDER BY id DESC LIMIT 1", (cat.mid,)).fetchone()
        self.assertEqual((rt["run"]["pool_size"], rt["run"]["pool_gen"], rt["run"]["registry_path"],
                          rt["run"]["registry_sha256"]), run_row)
        self.assertEqual(rt["run"]["registry_sha256"], sha256_file(self.registry))
        self.assertEqual(rt["run"]["pool_size"], len(cat.pool))

    def test_json_matches_catalog(self):
        r = json.loads(self.audit("--json", "--top", RTOP).stdout)
        self.assertEqual(r["model"], RMODEL)  # the dedup part is there too
        self.assertGreater(r["pool"]["duplicate"], 0)
        cat = RetrievalCatalog(self.work, dedup=True)
        self.check_retrieval(r["retrieval"], cat, RTOP)
        self.assertEqual(r["retrieval"]["run"]["dedup_model"], RMODEL)
        # --top bounds the lists: one seed pair, one cluster.
        r1 = json.loads(self.audit("--json", "--top", 1).stdout)
        self.check_retrieval(r1["retrieval"], cat, 1)

    def test_text_lists_every_row(self):
        out = self.audit().stdout
        self.assertIn("\nself-dedup", out)
        sec = out.split("\nretrieval (model %s" % RMODEL, 1)[1]
        self.assertNotIn("\nretrieval (", out.split("\nself-dedup", 1)[0], "the retrieval section comes last")
        rows = RetrievalCatalog(self.work, dedup=True).rows()

        def n(v):
            return "-" if v is None else str(v)
        for name, r in rows.items():
            skipped = r["status"] == "skipped"
            cols = [r["method"], r["status"]] + [n(None if skipped else r[k]) for k in (
                "seeds",)] + [n(r["paper_seeds"])] + [n(None if skipped else r[k]) for k in (
                    "retrieved", "collisions", "capped", "final")] + [n(r["paper_final"])]
            self.assertRegex(sec, r"\n  %s\s+%s\n" % (re.escape(name), r"\s+".join(map(re.escape, cols))), name)
        done = [r for r in rows.values() if r["status"] != "skipped"]
        self.assertRegex(sec, r"\n  total\s+%d\s+%d\n" % (sum(r["final"] for r in done),
                                                           sum(r["paper_final"] or 0 for r in done)))
        skipped = sec.split("\n  skipped rows\n", 1)[1]
        for name, r in rows.items():
            if r["status"] == "skipped":
                self.assertIn("\n    %s: %s\n" % (name, r["reason"]), "\n" + skipped)
        self.assertIn("collection 'web' has role pool, not seed", skipped)
        self.assertIn("no collection 'nowhere'", skipped)

    def test_html_in_chromium(self):
        out = os.path.join(self.tmp, "report")
        self.audit("--html", out, "--top", RTOP, "--quiet")
        page = os.path.join(out, "index.html")
        html = open(page, encoding="utf-8").read()
        self.assertIsNone(re.search(r"(?i)(https?:|ftp:|//[a-z0-9])", html.replace("</", "<")))
        cat = RetrievalCatalog(self.work, dedup=True)
        rows = cat.rows()
        r = json.loads(self.audit("--json", "--top", RTOP).stdout)
        want_pairs = sum(min(RTOP, len(cat.nearest_pairs(x["collection"]))) for x in rows.values()
                         if x["method"] == "sample" and x["status"] == "done")
        want_clusters = [min(RTOP, c["chosen"]) for c in r["retrieval"]["rows"] if c["method"] == "cluster"
                         and c["status"] == "done"]
        want_hists = sum(1 for x in rows.values() if x["method"] != "as_is" and x["status"] == "done")
        self.assertGreater(want_pairs, 0)
        self.assertGreater(sum(want_clusters), 1)

        why = chromium_starts(self.tmp)
        if why:
            self.skipTest(why)
        if not CHROMEDRIVER:
            self.fail("chromium runs but chromedriver is missing (Debian package chromium-driver)")
        wd = WebDriver(self.tmp, log_requests=True)
        try:
            wd.requests()  # what the browser's own start page asked for
            wd.s("POST", "/url", {"url": "file://" + os.path.abspath(page)})
            deadline = time.monotonic() + 20
            while wd.js("return document.readyState + '/' + document.body.getAttribute('data-ready')") != \
                    "complete/1":
                self.assertLess(time.monotonic(), deadline, "page did not finish loading")
                time.sleep(0.1)
            # One table row per registry row, in order, with its final count and the paper's.
            trs = wd.js("return Array.from(document.querySelectorAll('section.retrieval table.retrieval-rows"
                        " tbody tr')).map(function(t){ return [t.getAttribute('data-row'),"
                        " Array.from(t.cells).map(function(c){ return c.textContent; })]; })")
            self.assertEqual([t[0] for t in trs], list(rows))
            for name, cells in trs:
                x = rows[name]
                self.assertEqual(cells[-1], "\u2013" if x["paper_final"] is None else str(x["paper_final"]))
                if x["status"] == "skipped":
                    self.assertEqual(cells[3], "skipped: " + x["reason"])
                    self.assertEqual(cells[-2], "\u2013")
                else:
                    self.assertEqual(cells[-2], str(x["final"]))
            # Seed pairs: sorted by similarity, seed first; the dedup sections' pair counts are their own.
            pairs = wd.js("return Array.from(document.querySelectorAll('section.retrieval .retrieved-pair'))"
                          ".map(function(p){ return [parseFloat(p.getAttribute('data-sim')),"
                          " p.querySelectorAll('figure').length, p.querySelector('figure').className,"
                          " Array.from(p.querySelectorAll('figure .key')).map(function(k){ return k.textContent; })];"
                          " })")
            self.assertEqual(len(pairs), want_pairs)
            keys = lambda i: cat.con.execute("SELECT key FROM members WHERE image_id = ?", (i,)).fetchone()[0]  # noqa
            self.assertEqual([p[3] for p in pairs],
                             [[keys(s), keys(i)] for _, s, i in cat.nearest_pairs("seeds-one")[:RTOP]])
            for p, (sim, _, _) in zip(pairs, cat.nearest_pairs("seeds-one")):
                self.assertAlmostEqual(p[0], sim, places=5)
            self.assertEqual([p[0] for p in pairs], sorted((p[0] for p in pairs), reverse=True))
            self.assertTrue(all(p[1] == 2 and p[2] == "seed" for p in pairs))
            self.assertEqual(wd.js("return document.querySelectorAll('section.retrieval .pair').length"), want_pairs)
            self.assertEqual(wd.js("return document.querySelectorAll('section.self .retrieved-pair, "
                                   "section.benchmark .retrieved-pair').length"), 0)
            # Chosen clusters, up to AUDIT_CLUSTER_IMAGES thumbnails each.
            clusters = wd.js("return Array.from(document.querySelectorAll('section.retrieval div.cluster'))"
                             ".map(function(c){ return [parseInt(c.getAttribute('data-cluster')),"
                             " parseInt(c.getAttribute('data-kept')), c.querySelectorAll('figure').length]; })")
            self.assertEqual(len(clusters), sum(want_clusters))
            want_c = [c for x in r["retrieval"]["rows"] if x["method"] == "cluster" for c in x["chosen_clusters"]]
            self.assertEqual([c[0] for c in clusters], [c["cluster"] for c in want_c])
            self.assertEqual([c[2] for c in clusters], [min(4, c[1]) for c in clusters])
            self.assertEqual(wd.js("return document.querySelectorAll('section.retrieval svg.hist').length"),
                             want_hists)
            self.assertEqual(wd.js("return document.querySelectorAll('section.retrieval svg.hist"
                                   " line.threshold').length"), 0)
            # Every thumbnail decoded; a figure has one exactly when its image has a working image (the
            # others, the GIF seed, are placeholders); no request left the page's folder.
            imgs = wd.js("return Array.from(document.images).map(function(i){"
                         " return [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]; })")
            self.assertEqual([i for i in imgs if not (i[1] and i[2] > 0 and i[3] > 0)], [])
            figs = wd.js("return Array.from(document.querySelectorAll('section.retrieval figure')).map(function(f){"
                         " var i=f.querySelector('img'); return [f.querySelector('.key').textContent,"
                         " f.querySelector('.col').textContent, i ? i.getAttribute('src') : null,"
                         " f.querySelectorAll('.noimg').length]; })")
            self.assertEqual(len(figs), 2 * want_pairs + sum(c[2] for c in clusters))
            for key, coll, src, noimg in figs:
                iid = cat.image_of(key, coll)
                self.assertEqual(src is not None, cat.decoded(iid), (key, coll))
                self.assertEqual(noimg, 0 if src else 1)
                if src:
                    self.check_thumb(cat, iid, os.path.join(out, src))
            self.assertIn((PLACEHOLDER_SEED, "seeds-one", None, 1), [tuple(f) for f in figs])
            # Every request of the page is a file beside it, and nothing at all went to the network (the
            # browser's own pages also load chrome:// and data: resources).
            res = wd.requests()
            local = "file://" + os.path.abspath(out) + "/"
            mine = [u for u, d in res if d == local + "index.html"]
            self.assertIn(local + "index.html", mine)
            self.assertEqual(set(u for u in mine if u != local + "index.html"), {local + i[0] for i in imgs})
            self.assertEqual([u for u in res if re.match(r"(?i)(https?|ftp|wss?):", u[0])], [])
            png = base64.b64decode(wd.s("GET", "/screenshot"))
        finally:
            wd.close()
        a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
        self.assertGreater(float(a.std()), 10.0, "screenshot looks blank")

    def check_thumb(self, cat, image_id, path):
        """A thumbnail is made from the image's working image: its bytes when they fit the thumbnail size."""
        shard, off, n, w, h = cat.con.execute(
            "SELECT s.path, d.offset, d.size, d.out_width, d.out_height FROM decodes d JOIN shards s"
            " ON s.id = d.shard_id WHERE d.image_id = ?", (image_id,)).fetchone()
        with open(os.path.join(self.work, shard), "rb") as f:
            f.seek(off)
            working = f.read(n)
        with open(path, "rb") as f:
            thumb = f.read()
        if max(w, h) <= 192:
            self.assertEqual(thumb, working, path)
        else:
            self.assertEqual(Image.open(path).size[0] if w >= h else Image.open(path).size[1], 192)

    def test_without_dedup_results(self):
        """Retrieval from the whole pool (--no-dedup) and no dedup results: the audit shows the retrieval part."""
        work = self.alone0
        p = self.audit("--json", "--top", RTOP, work=work)
        r = json.loads(p.stdout)
        self.assertEqual(sorted(r), ["catalog", "model", "model_id", "retrieval", "top"])
        self.assertIsNone(r["model"])
        cat = RetrievalCatalog(work, dedup=False)
        self.assertEqual(len(cat.pool), 48)
        self.check_retrieval(r["retrieval"], cat, RTOP)
        self.assertIsNone(r["retrieval"]["run"]["dedup_model"])
        out = self.audit(work=work).stdout
        self.assertIn("\ndedup    no dedup results\n", out)
        self.assertIn("\nretrieval (model %s" % RMODEL, out)
        self.assertIn("not deduplicated (--no-dedup)", out)
        html_dir = os.path.join(self.tmp, "h")
        self.audit("--html", html_dir, "--quiet", work=work)
        html = open(os.path.join(html_dir, "index.html"), encoding="utf-8").read()
        self.assertIn('<section class="retrieval"', html)
        self.assertNotIn('<section class="self"', html)
        self.assertEqual(html.count('<div class="pair retrieved-pair"'), min(50, len(cat.nearest_pairs("seeds-one"))))
        # --csv lists dedup removals: there are none to list.
        p = self.audit("--csv", os.path.join(self.tmp, "x.csv"), work=work, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no dedup results", p.stderr)
        p = self.audit("--model", RMODEL, work=work, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no dedup results for any model", p.stderr)

    def test_retrieve_model_choice(self):
        p = self.audit("--retrieve-model", "nope", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("model 'nope' has no retrieval results (models with results: %s)" % RMODEL, p.stderr)
        # A second retrieval model: the audit asks which one.
        files = retrieval_files(os.path.join(self.tmp, "again"))
        for coll, (role, d, plan) in files.items():
            embed_vectors(self.work, self.tmp, coll, plan, "vec2")
        run("lvd-retrieve", "--work", self.work, "--model", "vec2", "--dedup-model", RMODEL, "--registry",
            self.registry, "--scale", "none", "--only", "one-as-is", "--quiet")
        p = self.audit(check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("2 models have retrieval results (%s, vec2); choose one with --retrieve-model" % RMODEL,
                      p.stderr)
        r = json.loads(self.audit("--json", "--retrieve-model", "vec2").stdout)
        self.assertEqual(r["retrieval"]["model"], "vec2")
        self.assertEqual([x["name"] for x in r["retrieval"]["rows"]], ["one-as-is"])
        self.assertEqual(r["retrieval"]["totals"]["final"], 8)
        self.assertEqual(r["model"], RMODEL)


if __name__ == "__main__":
    unittest.main()
