"""lvd-status against catalogs built here row by row; every expected number is derived from the inserted rows."""
import collections
import fcntl
import hashlib
import json
import os
import sqlite3
import unittest
import urllib.parse

import lvdtest

SCHEMA_DIR = os.path.join(os.path.dirname(lvdtest.TESTS), "schemas")
# Every migration in order, as lvd applies them when it creates a catalog.
MIGRATIONS = sorted(f for f in os.listdir(SCHEMA_DIR) if f.startswith("catalog-") and f.endswith(".sql"))
T0 = "2026-01-01T00:00:00.000Z"


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


class Catalog:
    """Writes rows into WORK/catalog.db and keeps the same rows as Python lists, the source of expectations."""

    def __init__(self, work):
        os.makedirs(work, exist_ok=True)
        self.path = os.path.join(work, "catalog.db")
        self.con = sqlite3.connect(self.path)
        for name in MIGRATIONS:
            with open(os.path.join(SCHEMA_DIR, name)) as f:
                self.con.executescript(f.read())
        self.con.executescript("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                               "INSERT INTO meta VALUES('schema_version','%d');" % len(MIGRATIONS))
        self.collections, self.runs, self.urls, self.images, self.members, self.decodes, self.shards = \
            {}, [], [], {}, [], {}, []

    def collection(self, name, role):
        cid = len(self.collections) + 1
        self.con.execute("INSERT INTO collections VALUES (?,?,?,?)", (cid, name, role, T0))
        self.collections[name] = (cid, role)
        return cid

    def run(self, stage, status="done", part="0/1", summary=None, finished=True):
        rid = len(self.runs) + 1
        started = "2026-01-01T00:%02d:00.000Z" % rid
        fin = "2026-01-01T00:%02d:30.000Z" % rid if finished else None
        self.con.execute("INSERT INTO runs(id, stage, part, params, fingerprint, started_at, finished_at, status,"
                         " summary) VALUES (?,?,?,?,?,?,?,?,?)",
                         (rid, stage, part, "{}", "f" * 64, started, fin, status, summary))
        self.runs.append(dict(id=rid, stage=stage, part=part, started=started, finished=fin, status=status,
                              summary=json.loads(summary) if summary else None))
        return rid

    def shard(self, kind, committed, members):
        sid = len(self.shards) + 1
        self.con.execute("INSERT INTO shards VALUES (?,?,?,?,?)", (sid, "shards/%s-%06d.tar" % (kind, sid), kind,
                                                                    committed, members))
        self.shards.append(dict(kind=kind, committed=committed, members=members))
        return sid

    def image(self, name, nbytes, shard_id):
        iid = len(self.images) + 1
        h = sha(name)
        self.con.execute("INSERT INTO images(id, sha256, bytes, format, shard_id, offset, created_at)"
                         " VALUES (?,?,?,?,?,?,?)", (iid, h, nbytes, "jpeg", shard_id, 512 * iid, T0))
        self.images[name] = dict(id=iid, sha256=h, bytes=nbytes)
        return iid

    def url(self, coll, url, status="pending", error=None, image=None, run_id=None):
        cid = self.collections[coll][0]
        img = self.images[image] if image else None
        self.con.execute("INSERT INTO urls(url, collection_id, key, source, status, error, sha256, image_id, run_id)"
                         " VALUES (?,?,?,?,?,?,?,?,?)",
                         (url, cid, sha(url)[:16], "list.csv:1", status, error, img["sha256"] if img else None,
                          img["id"] if img else None, run_id))
        self.urls.append(dict(coll=coll, url=url, status=status, error=error, image=image, run_id=run_id))
        if image:
            self.member(coll, sha(url)[:16], image)

    def member(self, coll, key, image):
        self.con.execute("INSERT INTO members(collection_id, key, image_id) VALUES (?,?,?)",
                         (self.collections[coll][0], key, self.images[image]["id"]))
        self.members.append(dict(coll=coll, key=key, image=image))

    def decode(self, image, status, error=None, run_id=None):
        self.con.execute("INSERT INTO decodes(image_id, fingerprint, status, error, run_id, created_at)"
                         " VALUES (?,?,?,?,?,?)", (self.images[image]["id"], "d" * 64, status, error, run_id, T0))
        self.decodes[image] = dict(status=status, error=error, run_id=run_id)

    def close(self):
        self.con.commit()
        self.con.close()

    # ---- expectations, from the Python rows only ----

    def expect_collection(self, name):
        urls = [u for u in self.urls if u["coll"] == name]
        mem = [m for m in self.members if m["coll"] == name]
        imgs = {m["image"] for m in mem}
        return dict(urls=len(urls), url_status=dict(collections.Counter(u["status"] for u in urls)),
                    members=len(mem), images=len(imgs),
                    decode_status=dict(collections.Counter(self.decodes[i]["status"] for i in imgs
                                                           if i in self.decodes)),
                    decode_pending=len([i for i in imgs if i not in self.decodes]))

    def expect_errors(self):
        c = collections.Counter(("crawl", u["error"]) for u in self.urls if u["error"])
        c.update(("decode", d["error"]) for d in self.decodes.values() if d["error"])
        rows = sorted(c.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))[:10]
        return [dict(stage=s, count=n, message=m) for (s, m), n in rows]

    def expect_placeholders(self):
        hosts = collections.defaultdict(set)
        for u in self.urls:
            if u["image"]:
                hosts[self.images[u["image"]]["sha256"]].add(urllib.parse.urlsplit(u["url"]).hostname)
        return {h: len(s) for h, s in hosts.items() if len(s) >= 5}


def status(work, *args, check=True):
    return lvdtest.run("lvd-status", "--work", work, *args, check=check)


def status_json(work):
    return json.loads(status(work, "--json").stdout)


def warnings_of(report, kind):
    return [w for w in report["warnings"] if w["kind"] == kind]


class StatusTest(lvdtest.WorkTestCase):

    def build_main(self):
        """Two crawl runs (the newer fails 45%), a decode run failing 20%, placeholder images, three collections."""
        c = Catalog(self.work)
        c.collection("web", "pool")
        c.collection("seeds", "seed")
        c.collection("bench", "benchmark")
        for i in range(8):
            c.run("import", status="failed" if i == 3 else "done")
        old_crawl = c.run("crawl")
        crawl = c.run("crawl", status="running", finished=False)
        decode = c.run("decode", summary='{"decoded": 15, "ok": 12, "failed": 3}')
        raw1, raw2 = c.shard("raw", 1 << 20, 10), c.shard("raw", 3 << 20, 14)
        c.shard("img", 777777, 15)
        # Placeholder candidates: P1 on 6 hosts (a.example three times, via case, port and userinfo),
        # P2 on exactly 5 hosts, P3 on only 4 hosts (5 URLs).
        for name, n in [("P1", 100), ("P2", 200), ("P3", 300)] + [("U%d" % i, 1000 + i) for i in range(5)]:
            c.image(name, n, raw1)
        p1 = ["http://a.example/1", "http://A.EXAMPLE:8080/2", "https://user:pw@a.example/3", "http://b.example/4?x=1",
              "http://c.example/5#f", "http://d.example/6", "https://e.example:443/7", "http://f.example/8"]
        p2 = ["http://h%d.example/x" % i for i in range(5)]
        p3 = ["http://q%d.example/y%d" % (i % 4, i) for i in range(5)]
        for urls, img in ((p1, "P1"), (p2, "P2"), (p3, "P3")):
            for u in urls:
                c.url("web", u, "ok", image=img, run_id=crawl)
        for i in range(4):
            c.url("web", "http://img.example/u%d.jpg" % i, "ok", image="U%d" % i, run_id=crawl)
        # 22 ok above; 18 failures make 45.0% of 40 attempted, dns the most common status (9).
        failures = [("dns", "could not resolve host", 7), ("dns", "no address record", 2), ("http", "HTTP 404", 5),
                    ("http", "HTTP 500", 1), ("timeout", "timed out after 30 s", 3)]
        k = 0
        for st, msg, n in failures:
            for _ in range(n):
                c.url("web", "http://bad%d.example/z" % k, st, error=msg, run_id=crawl)
                k += 1
        for i in range(4):  # listed (two by this run), never attempted: not part of the failure rate
            c.url("web", "http://later.example/p%d" % i, run_id=crawl if i < 2 else None)
        for i in range(4):  # the older crawl run failed completely; only the newest run of a stage counts
            c.url("web", "http://old%d.example/" % i, "refused", error="connection refused", run_id=old_crawl)
        c.url("web", "http://old9.example/page", "bad_type", error="content type text/html", run_id=old_crawl)
        for i in range(8):
            c.image("S%d" % i, 5000 + 7 * i, raw2)
            c.member("seeds", "s%d" % i, "S%d" % i)
        c.member("seeds", "s8", "S1")  # one image under two keys
        c.member("seeds", "s9", "U1")  # an image shared with the web pool
        c.member("seeds", "s10", "U4")  # fetched once, now only a seed
        # Decode everything but S7 and P3: 15 images, 3 failed = 20%: no decode warning.
        bad = {"S2": ("corrupt", "bad huffman code"), "S3": ("corrupt", "bad huffman code"),
               "U2": ("truncated", "premature end of JPEG data")}
        for img in ["P1", "P2", "U0", "U1", "U2", "U3", "U4", "S0", "S1", "S2", "S3", "S4", "S5", "S6"]:
            st, msg = bad.get(img, ("ok", None))
            c.decode(img, st, msg, run_id=decode)
        c.image("B0", 42, raw2)  # an image in no collection, decoded by the same run
        c.decode("B0", "ok", run_id=decode)
        c.close()
        return c, dict(crawl=crawl, decode=decode, old_crawl=old_crawl)

    def test_json_numbers(self):
        c, _ = self.build_main()
        r = status_json(self.work)
        self.assertEqual([(x["name"], x["role"]) for x in r["collections"]],
                         [("web", "pool"), ("seeds", "seed"), ("bench", "benchmark")])
        for got in r["collections"]:
            exp = c.expect_collection(got["name"])
            for key, value in exp.items():
                self.assertEqual(got[key], value, "%s.%s" % (got["name"], key))
            self.assertEqual(got["decoded"], sum(exp["decode_status"].values()))
        web = r["collections"][0]
        self.assertEqual(web["decode_pending"], 1)  # P3
        self.assertEqual(r["collections"][1]["images"], 10)
        self.assertEqual(r["collections"][1]["members"], 11)
        self.assertEqual(r["images"], len(c.images))
        self.assertEqual(r["bytes"], sum(i["bytes"] for i in c.images.values()))
        for kind in ("raw", "img"):
            sh = [s for s in c.shards if s["kind"] == kind]
            self.assertEqual(r["shards"][kind], dict(shards=len(sh), committed=sum(s["committed"] for s in sh),
                                                     members=sum(s["members"] for s in sh)))
        self.assertEqual(r["parts_not_merged"], [])

    def test_errors_top10_and_runs(self):
        c, ids = self.build_main()
        r = status_json(self.work)
        exp = c.expect_errors()
        self.assertEqual(len(exp), 9)  # all fit; test_errors_cut_at_ten tests the cut
        self.assertEqual(r["errors"], exp)
        self.assertEqual(r["errors"][0], dict(stage="crawl", count=7, message="could not resolve host"))
        counts = [e["count"] for e in r["errors"]]
        self.assertEqual(counts, sorted(counts, reverse=True))
        # Text form: "stage: count message", in the same order.
        text = status(self.work).stdout
        lines = [" ".join(l.split()) for l in text.splitlines()]
        positions = [lines.index("%s: %d %s" % (e["stage"], e["count"], e["message"])) for e in exp]
        self.assertEqual(positions, sorted(positions))

        runs = r["runs"]
        self.assertEqual([x["id"] for x in runs], [x["id"] for x in reversed(c.runs)][:10])
        for got in runs:
            want = c.runs[got["id"] - 1]
            for key in ("stage", "part", "summary"):
                self.assertEqual(got[key], want[key], "run %d %s" % (got["id"], key))
            if want["status"] == "running":
                # Nobody holds the catalog's lock: the process of that run is gone. It shows as interrupted
                # at its last commit (none recorded here: its start), and the row itself is left alone.
                self.assertEqual((got["status"], got["recorded_status"], got["finished"]),
                                 ("interrupted", "running", want["started"]), "run %d" % got["id"])
            else:
                self.assertEqual((got["status"], got["finished"]), (want["status"], want["finished"]))
        self.assertEqual(runs[0]["summary"], {"decoded": 15, "ok": 12, "failed": 3})
        dead = [x["id"] for x in runs if x["status"] == "interrupted"]
        self.assertEqual(dead, [x["id"] for x in runs if c.runs[x["id"] - 1]["status"] == "running"])
        self.assertGreater(len(dead), 0)
        self.assertEqual(sorted(w["run"] for w in r["warnings"] if w["kind"] == "interrupted"), sorted(dead))
        with lvdtest.db(self.work) as con:
            self.assertEqual(con.execute("SELECT count(*) FROM runs WHERE status = 'interrupted'").fetchone()[0],
                             0, "lvd-status only reads")

        # While a process holds the lock, the same rows are live runs, shown with the holder's text.
        with open(os.path.join(self.work, "catalog.db.lock"), "w") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            lk.write("lvd-crawl run 9 (stage crawl, part 0/1, pid 1 on host h, started %s)\n" % T0)
            lk.flush()
            live = status_json(self.work)
        for got in live["runs"]:
            if c.runs[got["id"] - 1]["status"] == "running":
                self.assertEqual((got["status"], got["finished"]), ("running", None))
                self.assertIn("pid 1 on host h", got["holder"])
        self.assertEqual([w for w in live["warnings"] if w["kind"] == "interrupted"], [])

    def test_errors_cut_at_ten(self):
        c = Catalog(self.work)
        c.collection("web", "pool")
        run = c.run("crawl")
        k = 0
        for m in range(14):  # message m occurs m+1 times: 14 distinct counts, the 10 largest are shown
            for _ in range(m + 1):
                c.url("web", "http://x%d.example/" % k, "http", error="HTTP %d" % (400 + m), run_id=run)
                k += 1
        c.close()
        r = status_json(self.work)
        self.assertEqual(r["errors"], c.expect_errors())
        self.assertEqual([e["message"] for e in r["errors"]], ["HTTP %d" % (400 + m) for m in range(13, 3, -1)])

    def test_failure_warning(self):
        c, ids = self.build_main()
        r = status_json(self.work)
        fw = warnings_of(r, "failure_rate")
        attempted = [u for u in c.urls if u["run_id"] == ids["crawl"] and u["status"] != "pending"]
        failed = [u for u in attempted if u["status"] != "ok"]
        cause, n = collections.Counter(u["status"] for u in failed).most_common(1)[0]
        self.assertEqual((len(failed), len(attempted), cause, n), (18, 40, "dns", 9))
        self.assertEqual(len(fw), 1, fw)  # decode run at 20%: no warning; old crawl run: not the latest
        self.assertEqual(fw[0]["message"], "crawl run %d: 45.0%% of 40 URLs failed; most common: dns (9 URLs)"
                         % ids["crawl"])
        self.assertEqual((fw[0]["attempted"], fw[0]["failed"]), (40, 18))
        text = status(self.work).stdout
        self.assertIn("warning: crawl run %d: 45.0%% of 40 URLs failed; most common: dns (9 URLs)\n" % ids["crawl"],
                      text)
        self.assertNotIn("warning: decode", text)

    def test_failure_threshold(self):
        # 20% and exactly 30% are quiet, 40% warns; for crawl and for decode. (Plain loop, not subTest: run.py's
        # TAP output does not report subTest failures.)
        for failed, warns in ((2, False), (3, False), (4, True)):
            work = os.path.join(self.tmp, "w%d" % failed)
            c = Catalog(work)
            c.collection("web", "pool")
            sid = c.shard("raw", 100, 10)
            crawl = c.run("crawl")
            decode = c.run("decode")
            for i in range(10):
                c.image("I%d" % i, 10, sid)
                bad = i < failed
                c.url("web", "http://h%d.example/%d" % (i % 3, i), "timeout" if bad else "ok",
                      error="timed out" if bad else None, image=None if bad else "I%d" % i, run_id=crawl)
                c.decode("I%d" % i, "corrupt" if bad else "ok", "bad data" if bad else None, run_id=decode)
            c.close()
            msgs = [w["message"] for w in warnings_of(status_json(work), "failure_rate")]
            if warns:
                self.assertEqual(msgs, [
                    "crawl run %d: 40.0%% of 10 URLs failed; most common: timeout (4 URLs)" % crawl,
                    "decode run %d: 40.0%% of 10 images failed; most common: corrupt (4 images)" % decode])
            else:
                self.assertEqual(msgs, [], "%d of 10 failed" % failed)
                self.assertNotIn("warning:", status(work).stdout)

    def test_placeholder_warning(self):
        c, _ = self.build_main()
        exp = c.expect_placeholders()
        self.assertEqual(sorted(exp.values()), [5, 6])  # P3 has 4 hosts and stays out
        r = status_json(self.work)
        pw = warnings_of(r, "placeholder")
        self.assertEqual(len(pw), 1)
        got = {h["sha256"]: h["hosts"] for h in pw[0]["hashes"]}
        self.assertEqual(got, exp)
        self.assertEqual([h["hosts"] for h in pw[0]["hashes"]], [6, 5])
        self.assertEqual(pw[0]["count"], 2)
        text = status(self.work).stdout
        self.assertIn("placeholder", text)
        for h, n in exp.items():
            self.assertIn("%s  %d hosts" % (h, n), text)
        self.assertNotIn(c.images["P3"]["sha256"], text)

    def test_placeholder_list_capped_at_five(self):
        c = Catalog(self.work)
        c.collection("web", "pool")
        sid = c.shard("raw", 100, 10)
        run = c.run("crawl")
        for p in range(7):
            c.image("X%d" % p, 10, sid)
            for h in range(5 + p):
                c.url("web", "http://s%d.example/%d" % (h, p), "ok", image="X%d" % p, run_id=run)
        c.close()
        exp = c.expect_placeholders()
        self.assertEqual(len(exp), 7)
        pw = warnings_of(status_json(self.work), "placeholder")[0]
        self.assertEqual(pw["count"], 7)
        top5 = sorted(exp.items(), key=lambda kv: -kv[1])[:5]
        self.assertEqual([(h["sha256"], h["hosts"]) for h in pw["hashes"]], top5)
        self.assertIn("... and 2 more", status(self.work).stdout)

    def test_parts_not_merged(self):
        Catalog(self.work).close()
        parts = os.path.join(self.work, "parts")
        os.makedirs(parts)
        for name in ("crawl-0-of-2.db", "crawl-1-of-2.db", "decode-0-of-2.db.merged", "crawl-0-of-2.db-wal"):
            open(os.path.join(parts, name), "w").close()
        r = status_json(self.work)
        self.assertEqual(r["parts_not_merged"], ["parts/crawl-0-of-2.db", "parts/crawl-1-of-2.db"])
        pw = warnings_of(r, "parts_not_merged")
        self.assertEqual([(w["stage"], w["files"]) for w in pw], [("crawl", ["crawl-0-of-2.db", "crawl-1-of-2.db"])])
        text = status(self.work).stdout
        self.assertIn("lvd-crawl --work %s --merge" % self.work, text)
        self.assertNotIn("decode-0-of-2", text)
        # Without unmerged parts there is no such warning.
        for name in ("crawl-0-of-2.db", "crawl-1-of-2.db"):
            os.rename(os.path.join(parts, name), os.path.join(parts, name + ".merged"))
        self.assertEqual(warnings_of(status_json(self.work), "parts_not_merged"), [])

    def test_readonly(self):
        self.build_main()
        path = os.path.join(self.work, "catalog.db")
        before = lvdtest.sha256_file(path)
        status(self.work)
        status(self.work, "--json")
        self.assertEqual(lvdtest.sha256_file(path), before)
        # An unversioned catalog is refused, not migrated.
        con = sqlite3.connect(path)
        con.execute("DELETE FROM meta")
        con.commit()
        con.close()
        before = lvdtest.sha256_file(path)
        p = status(self.work, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("schema version 0", p.stderr)
        self.assertEqual(lvdtest.sha256_file(path), before)

    def test_missing_catalog(self):
        os.makedirs(self.work)
        p = status(self.work, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(os.path.join(self.work, "catalog.db"), p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertFalse(os.path.exists(os.path.join(self.work, "catalog.db")))

    def test_usage_errors(self):
        Catalog(self.work).close()
        for args in (["--work", self.work, "--bogus"], ["--work"], [], ["--work", self.work, "extra"],
                     ["--work", self.work, "--quiet", "--verbose"]):
            p = lvdtest.run("lvd-status", *args, check=False)
            self.assertEqual(p.returncode, 2, "%s: %s" % (args, p.stderr))
            self.assertNotEqual(p.stderr, "", args)
        p = lvdtest.run("lvd-status", "--help")
        self.assertIn("--work DIR", p.stdout)
        self.assertIn("lvd-status", lvdtest.run("lvd-status", "--version").stdout)


if __name__ == "__main__":
    unittest.main()
