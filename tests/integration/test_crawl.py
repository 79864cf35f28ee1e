"""lvd-crawl end to end against the fault-injecting server on 127.0.0.1 (tests/server.py)."""
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

from lvdtest import Server, WorkTestCase, db, exe, read_image_bytes, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import fixtures  # noqa: E402

FAST = ["--allow-private", "--connect-timeout", "2", "--timeout", "4", "--low-speed-limit", "1",
        "--low-speed-time", "2", "--retries", "2", "--max-retry-after", "5", "--max-bytes", "1M"]


def counter(server):
    with urllib.request.urlopen(server.url("/counter")) as r:
        return json.load(r)


def total_requests(server):
    c = counter(server)
    return c["total"]  # /counter itself is not counted


def write_list(path, urls):
    with open(path, "w") as f:
        f.write("".join(u + "\n" for u in urls))
    return path


def url_rows(work):
    with db(work) as con:
        return {r[0]: r[1:] for r in con.execute(
            "SELECT url, status, http_status, sha256, bytes, attempts, error, final_url, transient FROM urls")}


def check_integrity(test, work):
    """Every ok URL points at bytes that read back with its SHA-256; the catalog passes integrity_check."""
    with db(work) as con:
        test.assertEqual(con.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        n = 0
        for url, image_id, sha in con.execute("SELECT url, image_id, sha256 FROM urls WHERE status = 'ok'"):
            data = read_image_bytes(work, con, image_id)
            test.assertEqual(hashlib.sha256(data).hexdigest(), sha, url)
            n += 1
        dup = con.execute("SELECT count(*) - count(DISTINCT url) FROM urls").fetchone()[0]
        test.assertEqual(dup, 0)
        return n


class CrawlTest(WorkTestCase):
    def setUp(self):
        super().setUp()
        self.files = os.path.join(self.tmp, "files")
        self.pool = fixtures.write_pool(self.files, 24, seed=3, dup_exact=3, dup_near=0)
        self.special = fixtures.special(self.files)
        self.server = Server(root=self.files)
        self.addCleanup(self.server.close)

    def furl(self, name, query=""):
        return self.server.url("/files/" + name) + query

    def test_fault_matrix(self):
        s = self.server
        urls = {
            "img": [self.furl(p["name"]) for p in self.pool],
            "404": s.url("/status/404"),
            "flaky": s.url("/flaky/a?fail=1"),
            "ratelimit": s.url("/ratelimit/b?after=1"),
            "slow": s.url("/slow"),
            "big_cl": s.url("/big?n=3000000&cl=1"),
            "big_nocl": s.url("/big?n=3000000&cl=0"),
            "wrongtype": self.furl(self.pool[0]["name"], "?type=text/plain"),
            "html": self.furl("notimage.html", "?type=image/jpeg"),
            "redirect": s.url("/redirect/3"),
            "loop": s.url("/loop"),
            "tofile": s.url("/tofile"),
            "noai": s.url("/noai"),
            "robots": s.url("/private/x.jpg"),
            "empty": s.url("/empty"),
            "ftp": "ftp://127.0.0.1/x.jpg",
            "truncated": self.furl("truncated.jpg"),
            "bomb": self.furl("bomb.png"),
        }
        flat = [u for v in urls.values() for u in (v if isinstance(v, list) else [v])]
        lst = write_list(os.path.join(self.tmp, "urls.txt"), flat)
        t0 = time.monotonic()
        p = run("lvd-crawl", "--work", self.work, *FAST, "--json", lst)
        elapsed = time.monotonic() - t0
        summary = json.loads(p.stdout.strip().splitlines()[-1])
        rows = url_rows(self.work)
        self.assertEqual(len(rows), len(flat))
        st = {k: rows[v][0] for k, v in urls.items() if not isinstance(v, list)}
        self.assertEqual(st, {
            "404": "http_error", "flaky": "ok", "ratelimit": "ok", "slow": "timeout", "big_cl": "too_large",
            "big_nocl": "too_large", "wrongtype": "ok", "html": "bad_type", "redirect": "ok",
            "loop": "too_many_redirects", "tofile": "bad_scheme", "noai": "opted_out", "robots": "robots",
            "empty": "empty", "ftp": "bad_scheme", "truncated": "ok", "bomb": "ok"})
        self.assertEqual(rows[urls["404"]][1], 404)
        self.assertEqual(rows[urls["404"]][4], 1, "a 404 is final: no retry")
        self.assertEqual(rows[urls["flaky"]][4], 2, "500 then 200: two attempts")
        self.assertEqual(rows[urls["ratelimit"]][4], 2)
        self.assertTrue(rows[urls["redirect"]][6].endswith("/redirect/0"), rows[urls["redirect"]][6])
        self.assertIn("file", rows[urls["tofile"]][5])
        self.assertTrue(rows[urls["slow"]][7], "a timeout is transient")
        self.assertFalse(rows[urls["404"]][7], "a 404 is not transient")
        for u in urls["img"]:
            self.assertEqual(rows[u][0], "ok", u)
        # Every served image arrived with its exact bytes; identical bytes are stored once.
        by_name = {p["name"]: p for p in self.pool}
        for name, pinfo in by_name.items():
            self.assertEqual(rows[self.furl(name)][2], pinfo["sha256"])
        with db(self.work) as con:
            distinct = len({p["sha256"] for p in self.pool})
            n_images = con.execute("SELECT count(*) FROM images").fetchone()[0]
            # pool originals + png (flaky, ratelimit, redirect, noai share one png) + truncated + bomb
            self.assertEqual(n_images, distinct + 1 + 2)
            self.assertEqual(con.execute("SELECT count(*) FROM members").fetchone()[0],
                             sum(1 for v in rows.values() if v[0] == "ok"))
        self.assertEqual(summary["status"]["ok"], sum(1 for v in rows.values() if v[0] == "ok"))
        check_integrity(self, self.work)
        self.assertLess(elapsed, 60, "no request may hang the run")
        # The raw shard is a tar readable by Python's tarfile with <sha>.<ext> + <sha>.json members.
        import tarfile
        shard = os.path.join(self.work, "shards", "raw-000000.tar")
        with tarfile.open(shard) as tf:
            names = tf.getnames()
        self.assertIn(self.pool[0]["sha256"] + ".jpg", names)
        self.assertIn(self.pool[0]["sha256"] + ".json", names)

    def test_robots_fetched_once_and_blocked_address(self):
        urls = [self.furl(p["name"]) for p in self.pool]
        lst = write_list(os.path.join(self.tmp, "a.txt"), urls)
        # Without --allow-private, loopback destinations are refused and nothing is requested.
        before = total_requests(self.server)
        run("lvd-crawl", "--work", self.work, "--connect-timeout", "2", "--retries", "0", lst)
        rows = url_rows(self.work)
        self.assertTrue(all(v[0] == "blocked_address" for v in rows.values()), set(v[0] for v in rows.values()))
        self.assertEqual(total_requests(self.server), before, "no request reaches the server")
        # With it, robots.txt is fetched exactly once for the host.
        w2 = os.path.join(self.tmp, "w2")
        run("lvd-crawl", "--work", w2, *FAST, lst)
        c = counter(self.server)
        self.assertEqual(c["counts"].get("/robots.txt"), 1, c)

    def test_incremental_and_zero_new(self):
        half = len(self.pool) // 2
        a = write_list(os.path.join(self.tmp, "a.txt"), [self.furl(p["name"]) for p in self.pool[:half]])
        b = write_list(os.path.join(self.tmp, "b.txt"), [self.furl(p["name"]) for p in self.pool[half:]])
        run("lvd-crawl", "--work", self.work, *FAST, a)
        n1 = total_requests(self.server)
        p = run("lvd-crawl", "--work", self.work, *FAST, a)
        self.assertIn("0 new", p.stderr)
        self.assertEqual(total_requests(self.server), n1, "a rerun makes no request")
        before = url_rows(self.work)
        p = run("lvd-crawl", "--work", self.work, *FAST, "--json", a, b)
        summary = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(summary["new_urls"], len(self.pool) - half)
        self.assertEqual(summary["fetched"], len(self.pool) - half)
        after = url_rows(self.work)
        for u, v in before.items():
            self.assertEqual(after[u], v, "old results unchanged")
        self.assertEqual(len(after), len(self.pool))

    def test_collection_name_checked_before_anything_is_written(self):
        a = write_list(os.path.join(self.tmp, "a.txt"), [self.furl(p["name"]) for p in self.pool[:2]])
        for name in ("a/b", "..", "x\x01y"):
            p = run("lvd-crawl", "--work", self.work, *FAST, "--collection", name, a, check=False)
            self.assertEqual(p.returncode, 2, (name, p.stderr))
            self.assertIn("collection name", p.stderr)
            self.assertIn("allowed", p.stderr)
        self.assertFalse(os.path.exists(self.work))
        self.assertEqual(total_requests(self.server), 0)
        run("lvd-crawl", "--work", self.work, *FAST, "--collection", "café", a)
        with db(self.work) as con:
            self.assertEqual(con.execute("SELECT c.name, count(*) FROM urls u JOIN collections c"
                                         " ON c.id = u.collection_id WHERE u.status = 'ok'").fetchall(), [("café", 2)])

    def test_malformed_lines_reported(self):
        lists = fixtures.url_lists(os.path.join(self.tmp, "lists"), self.server.url("/files"),
                                   [p["name"] for p in self.pool[:6]])
        for kind in ("jsonl", "csv", "txt"):
            info = lists["bad"][kind]
            w = os.path.join(self.tmp, "w-" + kind)
            p = run("lvd-crawl", "--work", w, *FAST, "--json", info["path"])
            for line in info["bad_lines"]:
                self.assertIn("%s:%d:" % (info["path"], line), p.stderr)
            summary = json.loads(p.stdout.strip().splitlines()[-1])
            self.assertEqual(summary["malformed_lines"], len(info["bad_lines"]))
            rows = url_rows(w)
            self.assertEqual(set(rows), set(info["good_urls"]))
            self.assertTrue(all(v[0] == "ok" for v in rows.values()))

    def test_every_list_format_gives_the_same_catalog(self):
        lists = fixtures.url_lists(os.path.join(self.tmp, "lists"), self.server.url("/files"),
                                   [p for p in self.pool[:8]])
        ref = None
        for kind in ("txt", "csv", "tsv", "jsonl", "csv.gz", "jsonl.gz"):
            w = os.path.join(self.tmp, "w-" + kind.replace(".", "-"))
            run("lvd-crawl", "--work", w, *FAST, lists[kind])
            with db(w) as con:
                got = sorted(con.execute("SELECT url, status, sha256 FROM urls"))
                if kind != "txt":
                    keyed = dict(con.execute("SELECT url, key FROM urls"))
                    caps = dict(con.execute("SELECT url, caption FROM urls"))
                    extra = dict(con.execute("SELECT url, extra FROM urls"))
                    for e in lists["entries"]:
                        self.assertEqual(keyed[e["url"]], e["key"])
                        self.assertEqual(caps[e["url"]] or "", e["caption"])
                        self.assertEqual(json.loads(extra[e["url"]])["label"], e["label"])
            self.assertEqual(len(got), 8)
            if ref is None:
                ref = got
            self.assertEqual(got, ref, kind)

    def test_long_keys_are_kept_whole(self):
        key = "k" + "x" * 599
        lst = os.path.join(self.tmp, "long.csv")
        with open(lst, "w") as f:
            f.write("url,key\n%s,%s\n" % (self.furl(self.pool[0]["name"]), key))
        run("lvd-crawl", "--work", self.work, *FAST, lst)
        with db(self.work) as con:
            self.assertEqual(con.execute("SELECT key FROM members").fetchall(), [(key,)])
            self.assertEqual(con.execute("SELECT key, status FROM urls").fetchall(), [(key, "ok")])

    def test_retry_failed_retries_transient_only(self):
        flaky = self.server.url("/flaky/r1?fail=1")
        gone = self.server.url("/status/404")
        lst = write_list(os.path.join(self.tmp, "r.txt"), [flaky, gone])
        args = ["--allow-private", "--retries", "0", "--timeout", "4"]
        run("lvd-crawl", "--work", self.work, *args, lst)
        rows = url_rows(self.work)
        self.assertEqual(rows[flaky][0], "http_error")
        self.assertEqual(rows[flaky][1], 500)
        p = run("lvd-crawl", "--work", self.work, *args, lst)
        self.assertIn("0 new", p.stderr)
        run("lvd-crawl", "--work", self.work, *args, "--retry-failed", lst)
        rows = url_rows(self.work)
        self.assertEqual(rows[flaky][0], "ok")
        self.assertEqual(rows[flaky][4], 2, "attempts accumulate over runs")
        self.assertEqual(rows[gone][4], 1, "a 404 is not retried")

    def test_kill_and_resume(self):
        # Enough work to be interrupted: every pool file under many distinct URLs, served with a delay.
        urls = ["%s?v=%d" % (self.furl(p["name"]), i) for i in range(25) for p in self.pool]
        lst = write_list(os.path.join(self.tmp, "k.txt"), urls)
        args = [exe("lvd-crawl"), "--work", self.work, *FAST, "--batch", "16", "--concurrency", "8", lst]
        rng = random.Random(7)
        for _ in range(3):
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 1.2))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        run("lvd-crawl", *args[1:])
        rows = url_rows(self.work)
        self.assertEqual(len(rows), len(urls))
        self.assertTrue(all(v[0] == "ok" for v in rows.values()), set(v[0] for v in rows.values()))
        self.assertEqual(check_integrity(self, self.work), len(urls))
        with db(self.work) as con:
            self.assertEqual(con.execute("SELECT count(*) FROM images").fetchone()[0],
                             len({p["sha256"] for p in self.pool}))
            # Each shard's committed size is within the file, and the file holds nothing past it.
            for path, committed in con.execute("SELECT path, committed FROM shards"):
                size = os.path.getsize(os.path.join(self.work, path))
                self.assertIn(size - committed, (0, 1024), path)

    def test_parts_fetch_what_a_killed_one_part_run_left_pending(self):
        # A one-part crawl lists every URL in catalog.db, then is killed before fetching most of them (one at a
        # time, 0.3 s each).
        urls = [self.server.url("/delay/300?v=%d" % i) for i in range(20)]
        lst = write_list(os.path.join(self.tmp, "pending.txt"), urls)
        proc = subprocess.Popen([exe("lvd-crawl"), "--work", self.work, *FAST, "--concurrency", "1", lst],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cat = os.path.join(self.work, "catalog.db")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with db(self.work) as con:
                    if os.path.exists(cat) and con.execute("SELECT count(*) FROM urls").fetchone()[0] == 20:
                        break
            except sqlite3.OperationalError:
                pass  # not created or migrated yet
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        pending = {r[0] for r in db(self.work).execute("SELECT url FROM urls WHERE status = 'pending'")}
        self.assertGreater(len(pending), 0)
        # The cluster takes over: its parts fetch those pending URLs, and the merge completes the catalog.
        for i in range(2):
            run("lvd-crawl", "--work", self.work, *FAST, "--concurrency", "8", "--per-host", "8",
                "--part", "%d/2" % i, lst)
        run("lvd-crawl", "--work", self.work, "--merge")
        rows = url_rows(self.work)
        self.assertEqual(sorted(rows), sorted(urls))
        self.assertEqual({u for u, v in rows.items() if v[0] != "ok"}, set(), "no URL left pending")
        with db(self.work) as con:
            self.assertEqual(con.execute("SELECT count(*) FROM members").fetchone()[0], 20,
                             "one member per URL, under the key catalog.db gave it")
        check_integrity(self, self.work)

    def test_two_parts_and_merge_equal_one_run(self):
        urls = [self.furl(p["name"]) for p in self.pool] + [self.server.url("/status/404"),
                                                            self.server.url("/noai")]
        lst = write_list(os.path.join(self.tmp, "p.txt"), urls)
        one = os.path.join(self.tmp, "one")
        run("lvd-crawl", "--work", one, *FAST, lst)
        run("lvd-crawl", "--work", self.work, *FAST, "--part", "0/2", lst)
        # The second part takes its index from Slurm's variables, as an array job would.
        run("lvd-crawl", "--work", self.work, *FAST, lst,
            env={"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"})
        self.assertFalse(os.path.exists(os.path.join(self.work, "catalog.db")), "parts never write catalog.db")
        self.assertTrue(os.path.exists(os.path.join(self.work, "parts", "crawl-0-of-2.db")))
        run("lvd-crawl", "--work", self.work, "--merge")

        def contents(w):
            with db(w) as con:
                return (sorted(con.execute("SELECT url, key, status, http_status, sha256, bytes FROM urls")),
                        sorted(con.execute("SELECT sha256, bytes, format FROM images")),
                        sorted(con.execute("SELECT c.name, m.key, i.sha256 FROM members m JOIN images i"
                                           " ON i.id = m.image_id JOIN collections c ON c.id = m.collection_id")))
        self.assertEqual(contents(self.work), contents(one))
        check_integrity(self, self.work)
        # Merging again finds nothing to merge and changes nothing.
        run("lvd-crawl", "--work", self.work, "--merge")
        self.assertEqual(contents(self.work), contents(one))
