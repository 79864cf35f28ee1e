"""The stage contract shared by every curation executable (common/stage.h, common/catalog.h), driven through
lvd-crawl and lvd-decode against the test server on 127.0.0.1: one writer per catalog (a second instance says
at once who holds it, --wait waits), a killed run marked interrupted at its last commit, and --merge checking
the parts it finds against the N they were written for."""
import datetime
import json
import os
import signal
import socket
import subprocess
import time

from lvdtest import Server, WorkTestCase, db, exe, run

FAST = ["--allow-private", "--connect-timeout", "2", "--timeout", "10", "--retries", "0"]


def write_list(path, urls):
    with open(path, "w") as f:
        f.write("".join(u + "\n" for u in urls))
    return path


def utc_now():
    """The catalog's time format (ISO 8601 UTC with milliseconds), so timestamps compare as strings."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def query(path, sql, args=()):
    """Rows of sql on the SQLite file at path, opened read-only; [] if the file does not exist yet."""
    if not os.path.exists(path):
        return []
    import sqlite3
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []  # the schema is not there yet
    finally:
        con.close()


def wait_for(pred, what, timeout=60):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class StageTest(WorkTestCase):
    def setUp(self):
        super().setUp()
        self.server = Server()
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.server.close()
        super().tearDown()

    def slow_list(self, n, ms, name="slow.txt"):
        """n distinct URLs, each answered after ms milliseconds."""
        return write_list(os.path.join(self.tmp, name),
                          [self.server.url("/delay/%d?v=%d" % (ms, i)) for i in range(n)])

    def start(self, *args):
        p = subprocess.Popen([exe(args[0])] + [str(a) for a in args[1:]], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def cat(self):
        return os.path.join(self.work, "catalog.db")

    # -- one writer per catalog ---------------------------------------------------------------------------

    def test_second_instance_is_refused_at_once_naming_the_holder(self):
        lst = self.slow_list(40, 250)
        a = self.start("lvd-crawl", "--work", self.work, *FAST, "--concurrency", "1", "--batch", "1", lst)
        run_a = wait_for(lambda: query(self.cat(), "SELECT id, stage, started_at FROM runs WHERE status = 'running'"),
                         "the first crawl's run")[0]
        host = socket.gethostname()
        # Another crawl and another stage alike: refused before the 30 s a locked SQLite file would wait (the
        # timeout below), exit 1, with the holder's program, stage, run, pid, host and start time.
        for args in (["lvd-crawl", "--work", self.work, *FAST, lst], ["lvd-decode", "--work", self.work]):
            p = run(*args, check=False, timeout=20)
            self.assertEqual(p.returncode, 1, p.stderr)
            for want in ("lvd-crawl", "run %d" % run_a[0], "pid %d" % a.pid, host, run_a[2], "crawl", "--wait"):
                self.assertIn(want, p.stderr, args[0])
        self.assertIsNone(a.poll(), "the first crawl goes on")
        self.assertEqual([r[0] for r in query(self.cat(), "SELECT stage FROM runs")], ["crawl"],
                         "a refused instance records no run")
        a.kill()
        a.wait()

    def test_wait_waits_for_the_holder_then_runs(self):
        lst = self.slow_list(12, 250)
        a = self.start("lvd-crawl", "--work", self.work, *FAST, "--concurrency", "1", "--batch", "1", lst)
        wait_for(lambda: query(self.cat(), "SELECT id FROM runs WHERE status = 'running'"), "the first crawl's run")
        b = self.start("lvd-crawl", "--work", self.work, *FAST, "--wait", lst)
        _, err_a = a.communicate(timeout=120)
        self.assertEqual(a.returncode, 0, err_a)
        _, err_b = b.communicate(timeout=120)
        self.assertEqual(b.returncode, 0, err_b)
        self.assertIn("waiting", err_b)
        self.assertIn("pid %d" % a.pid, err_b)
        runs = query(self.cat(), "SELECT id, status, started_at, finished_at FROM runs ORDER BY id")
        self.assertEqual([r[1] for r in runs], ["done", "done"])
        self.assertGreaterEqual(runs[1][2], runs[0][3], "the waiting run starts after the first one ended")

    # -- killed runs -------------------------------------------------------------------------------------

    def test_killed_run_is_marked_interrupted_at_its_last_commit(self):
        lst = self.slow_list(30, 200)
        a = self.start("lvd-crawl", "--work", self.work, *FAST, "--concurrency", "1", "--batch", "1", lst)
        wait_for(lambda: query(self.cat(), "SELECT count(*) FROM urls WHERE status = 'ok' HAVING count(*) >= 3"),
                 "three committed fetches")
        a.send_signal(signal.SIGKILL)
        a.wait()
        t_kill = utc_now()
        (rid, status, started, finished), = query(self.cat(), "SELECT id, status, started_at, finished_at FROM runs")
        self.assertEqual((status, finished), ("running", None), "a kill -9 leaves the row as it was")
        last_row = query(self.cat(), "SELECT max(last_at) FROM urls WHERE run_id = ?", (rid,))[0][0]

        # lvd-status, read-only, already tells a dead run from a live one: nobody holds the catalog.
        st = json.loads(run("lvd-status", "--work", self.work, "--json").stdout)
        (srun,) = [r for r in st["runs"] if r["id"] == rid]
        self.assertEqual(srun["status"], "interrupted")
        self.assertIn("interrupted", run("lvd-status", "--work", self.work).stdout)

        # The next run marks it, with the time of its last commit, and goes on.
        run("lvd-crawl", "--work", self.work, *FAST, "--concurrency", "8", "--per-host", "8", lst)
        rows = query(self.cat(), "SELECT id, status, started_at, finished_at FROM runs ORDER BY id")
        self.assertEqual([r[1] for r in rows], ["interrupted", "done"])
        fin = rows[0][3]
        self.assertIsNotNone(fin)
        # Its last commit came after the rows it committed were stamped and before the kill.
        self.assertLessEqual(last_row, fin)
        self.assertLessEqual(fin, t_kill)
        self.assertLessEqual(started, fin)
        st = json.loads(run("lvd-status", "--work", self.work, "--json").stdout)
        (srun,) = [r for r in st["runs"] if r["id"] == rid]
        self.assertEqual((srun["status"], srun["finished"]), ("interrupted", fin))
        self.assertEqual(query(self.cat(), "SELECT count(*) FROM urls WHERE status = 'ok'")[0][0], 30)

    # -- --part and --merge ------------------------------------------------------------------------------

    def png_list(self, n):
        return write_list(os.path.join(self.tmp, "png.txt"), [self.server.url("/png?v=%d" % i) for i in range(n)])

    def test_merge_checks_the_parts_against_their_count(self):
        lst = self.png_list(12)
        for i in (0, 2):
            run("lvd-crawl", "--work", self.work, *FAST, "--part", "%d/3" % i, lst)
        parts = os.path.join(self.work, "parts")
        # Part 1 of 3 is missing: nothing is merged, and the message says what is there and what is not.
        p = run("lvd-crawl", "--work", self.work, "--merge", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("missing 1", p.stderr)
        self.assertIn("--part 1/3", p.stderr)
        self.assertIn("--allow-partial", p.stderr)
        self.assertEqual(query(self.cat(), "SELECT count(*) FROM urls"), [] if not os.path.exists(self.cat())
                         else [(0,)])
        self.assertTrue(os.path.exists(os.path.join(parts, "crawl-0-of-3.db")), "parts left as they were")
        self.assertTrue(os.path.exists(os.path.join(parts, "crawl-2-of-3.db")))

        # --allow-partial merges what is there and still says what is missing.
        p = run("lvd-crawl", "--work", self.work, "--merge", "--allow-partial", "--json")
        summary = json.loads(p.stdout)
        self.assertEqual((summary["merged_parts"], summary["missing_parts"]), (2, ["1/3"]))
        self.assertIn("missing 1", p.stderr)
        n02 = query(self.cat(), "SELECT count(*) FROM urls")[0][0]
        self.assertGreater(n02, 0)
        self.assertLess(n02, 12)

        # The missing part, then a merge that now finds the set complete.
        run("lvd-crawl", "--work", self.work, *FAST, "--part", "1/3", lst)
        p = run("lvd-crawl", "--work", self.work, "--merge", "--json")
        summary = json.loads(p.stdout)
        self.assertEqual((summary["merged_parts"], summary["missing_parts"]), (1, []))
        self.assertEqual(query(self.cat(), "SELECT count(*) FROM urls WHERE status = 'ok'")[0][0], 12)
        # Nothing left: a further merge changes nothing and says so.
        p = run("lvd-crawl", "--work", self.work, "--merge", "--json")
        self.assertEqual(json.loads(p.stdout)["merged_parts"], 0)
        self.assertIn("nothing to merge", p.stderr)

    def test_merge_refuses_a_work_directory_without_catalog_or_parts(self):
        missing = os.path.join(self.tmp, "no-such-work")
        p = run("lvd-crawl", "--work", missing, "--merge", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(missing, p.stderr)
        self.assertFalse(os.path.exists(missing), "a merge creates no work directory")
        os.makedirs(self.work)
        p = run("lvd-decode", "--work", self.work, "--merge", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("nothing to merge", p.stderr)
        self.assertFalse(os.path.exists(self.cat()), "a merge creates no empty catalog")

    def test_merge_refuses_a_part_still_being_written(self):
        # A one-part crawl killed first leaves a dead 'running' row in catalog.db itself.
        a = self.start("lvd-crawl", "--work", self.work, *FAST, "--concurrency", "1", "--batch", "1",
                       write_list(os.path.join(self.tmp, "a.txt"), [self.server.url("/delay/400?a=%d" % i)
                                                                   for i in range(20)]))
        wait_for(lambda: query(self.cat(), "SELECT id FROM runs"), "the crawl's run")
        a.kill()
        a.wait()
        part = os.path.join(self.work, "parts", "crawl-1-of-2.db")
        lst = self.slow_list(40, 400)
        b = self.start("lvd-crawl", "--work", self.work, *FAST, "--concurrency", "1", "--batch", "1",
                       "--part", "1/2", lst)
        wait_for(lambda: query(part, "SELECT id FROM runs"), "the part's run")
        run("lvd-crawl", "--work", self.work, *FAST, "--part", "0/2", self.png_list(2))
        p = run("lvd-crawl", "--work", self.work, "--merge", check=False, timeout=20)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("pid %d" % b.pid, p.stderr)
        self.assertTrue(os.path.exists(part), "nothing merged while a part runs")
        self.assertTrue(os.path.exists(os.path.join(self.work, "parts", "crawl-0-of-2.db")))
        # Killed, the part is merged as it stands, its run marked interrupted.
        b.send_signal(signal.SIGKILL)
        b.wait()
        run("lvd-crawl", "--work", self.work, "--merge")
        statuses = sorted(r[0] for r in query(self.cat(), "SELECT status FROM runs WHERE part = '1/2'"))
        self.assertEqual(statuses, ["interrupted"])
        self.assertIn("interrupted", [r[0] for r in query(self.cat(), "SELECT status FROM runs WHERE part = '0/1'")])

    def test_part_index_is_zero_based(self):
        lst = self.png_list(2)
        for bad in ("2/2", "3/2", "0/0", "-1/2", "1", "a/b"):
            p = run("lvd-crawl", "--work", self.work, *FAST, "--part", bad, lst, check=False)
            self.assertEqual(p.returncode, 2, (bad, p.stderr))
            self.assertIn(bad, p.stderr)
        p = run("lvd-crawl", "--work", self.work, *FAST, "--part", "2/2", lst, check=False)
        self.assertIn("0..1", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.work, "parts")), "nothing written")
