"""The scripts/slurm/ templates on a real single-node Slurm (slurm_cluster.py: Debian's slurm-wlm and munge,
started for the test).

- Curation: scripts/slurm/curate.sh submits lvd-crawl as a 3-task array job over a URL list served on 127.0.0.1
  and the merge after it; the merged catalog equals one lvd-crawl process's on the same list (URLs, keys,
  statuses, images, members).
- Training: scripts/slurm/train.sbatch with 2 tasks starts lvd-train through srun --mpi=pmix; its state equals,
  bit for bit, that of `mpirun -np 2` with the same options. Then a job stopped by SIGTERM (what --signal and
  preemption send) saves its state; the job submitted again resumes it and ends with the same bytes as a run
  left alone.
"""
import os
import sqlite3
import subprocess
import time
import unittest

import lvdtest
from lvdtest import Server, WorkTestCase, exe, run
import slurm_cluster
from test_train import PRESET, fixtures, fmnist_manifest, metrics, read_safetensors
from test_crawl import FAST
from test_train_mpi import MPI_ENV, MPIRUN

ROOT = os.path.dirname(lvdtest.TESTS)
SLURM = os.path.join(ROOT, "scripts", "slurm")



def contents(work):
    con = sqlite3.connect(os.path.join(work, "catalog.db"))
    try:
        return (sorted(con.execute("SELECT url, key, status, http_status, sha256, bytes FROM urls")),
                sorted(con.execute("SELECT sha256, bytes, format FROM images")),
                sorted(con.execute("SELECT c.name, m.key, i.sha256 FROM members m JOIN images i ON i.id ="
                                   " m.image_id JOIN collections c ON c.id = m.collection_id")))
    finally:
        con.close()


@unittest.skipIf(slurm_cluster.missing_tools(), "slurm-wlm or munge is not installed")
class SlurmTest(WorkTestCase):
    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.cluster_dir = tempfile.mkdtemp(prefix="lvd-slurm-")
        try:
            cls.cluster = slurm_cluster.SlurmCluster(cls.cluster_dir)
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:  # CalledProcessError, Timeout
            # A machine where the daemons cannot run (no root, a sandbox forbidding them) says why, visibly.
            logs = ""
            for name in ("slurmctld.log", "slurmd.log", "munged.log"):
                path = os.path.join(cls.cluster_dir, "log", name)
                if os.path.exists(path):
                    with open(path) as f:
                        logs += "\n%s: %s" % (name, " | ".join(f.read().splitlines()[-3:]))
            raise unittest.SkipTest("a single-node Slurm could not start here: %s%s" % (e, logs))

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()
        import shutil
        shutil.rmtree(cls.cluster_dir, ignore_errors=True)

    def test_curation_array_and_merge(self):
        files = os.path.join(self.tmp, "files")
        pool = fixtures.write_pool(files, 18, seed=5, dup_exact=2, dup_near=0)
        server = Server(root=files)
        self.addCleanup(server.close)
        urls = [server.url("/files/" + p["name"]) for p in pool] + [server.url("/status/404")]
        lst = os.path.join(self.tmp, "urls.txt")
        with open(lst, "w") as f:
            f.write("\n".join(urls) + "\n")
        one = os.path.join(self.tmp, "one")
        run("lvd-crawl", "--work", one, *FAST, lst)
        env = {**self.cluster.env, "LVD_BIN": lvdtest.BUILD, "LVD_CRAWL_ARGS": " ".join(FAST)}
        p = subprocess.run([os.path.join(SLURM, "curate.sh"), "3", self.work, lst], capture_output=True,
                           text=True, env=env, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        crawl, merge = p.stdout.split()
        states = self.cluster.wait_jobs([crawl, merge])
        self.assertEqual(sorted(states.values()), [("COMPLETED", "0:0")] * 4, states)  # 3 tasks, then merge
        for i in range(3):  # each task wrote its part, each part was merged (and renamed so)
            self.assertTrue(os.path.exists(os.path.join(self.work, "parts", "crawl-%d-of-3.db.merged" % i)))
            with open(os.path.join(self.work, "slurm-crawl-%s_%d.out" % (crawl, i))) as f:
                self.assertIn("URLs listed", f.read())
        self.assertEqual(contents(self.work), contents(one))
        with open(os.path.join(self.work, "slurm-merge-%s.out" % merge)) as f:
            log = f.read()
        self.assertIn("merged 3 part files", log)
        self.assertIn("ok 20, http_error 1", log)  # lvd-status's summary after the merge

    def train_job(self, out, *args):
        env = {**self.cluster.env, "LVD_BIN": lvdtest.BUILD, "CONFIG": PRESET, "MANIFEST": self.db, "OUT": out,
               "LVD_TRAIN_ARGS": " ".join(args)}
        p = subprocess.run(["sbatch", "--parsable", "--export=ALL", "--ntasks=2", "--cpus-per-task=1",
                            "--output=%s.out" % out, os.path.join(SLURM, "train.sbatch"),
                            "train.batch_size_per_gpu=4", "train.num_workers=1"],
                           capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    @unittest.skipIf(MPIRUN is None, "mpirun is not installed (openmpi-bin)")
    def test_train_two_tasks(self):
        self.db = fmnist_manifest(os.path.join(self.tmp, "m"), 10)
        args = ["--max-iter", "12", "--save-every", "6"]
        ref = os.path.join(self.tmp, "ref")
        cmd = [MPIRUN, "-np", "2", exe("lvd-train"), "--config", PRESET, "--manifest", self.db, "--out", ref,
               "--threads", "1", *args, "train.batch_size_per_gpu=4", "train.num_workers=1"]
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **MPI_ENV}, timeout=300)
        out = os.path.join(self.tmp, "slurm")
        job = self.train_job(out, *args)
        states = self.cluster.wait_jobs([job])
        with open(out + ".out") as f:
            log = f.read()
        self.assertEqual(list(states.values()), [("COMPLETED", "0:0")], log)
        self.assertIn("lvd-train[rank 0/2]", log)
        sa, ma = read_safetensors(os.path.join(ref, "training_state.safetensors"))
        sb, mb = read_safetensors(os.path.join(out, "training_state.safetensors"))
        self.assertEqual(mb["ranks"], "2")
        self.assertEqual(sorted(sa), sorted(sb))
        for k in sa:
            self.assertEqual(sa[k].tobytes(), sb[k].tobytes(), k)

    def test_train_stopped_and_resubmitted(self):
        self.db = fmnist_manifest(os.path.join(self.tmp, "m"), 10)
        args = ["--max-iter", "400", "--save-every", "1000", "optim.epochs=40"]
        alone = os.path.join(self.tmp, "alone")
        job = self.train_job(alone, *args)
        stopped = os.path.join(self.tmp, "stopped")
        job2 = self.train_job(stopped, *args)
        mpath = os.path.join(stopped, "metrics.jsonl")
        deadline = time.time() + 120
        while time.time() < deadline and not (os.path.exists(mpath) and sum(1 for _ in open(mpath)) >= 20):
            time.sleep(0.05)
        # SIGTERM to every task of the job, as --signal=TERM@120 sends before the time limit.
        self.cluster.run("scancel", "--signal=TERM", job2)
        states = self.cluster.wait_jobs([job, job2])
        self.assertEqual(states[job], ("COMPLETED", "0:0"))
        with open(stopped + ".out") as f:
            log = f.read()
        self.assertIn("interrupted, state saved", log)
        _, meta = read_safetensors(os.path.join(stopped, "training_state.safetensors"))
        saved = int(meta["iteration"])
        self.assertTrue(20 <= saved < 400, saved)
        self.assertEqual(len(metrics(stopped)), saved)
        job3 = self.train_job(stopped, *args)  # the same script again: --resume continues the state
        states = self.cluster.wait_jobs([job3])
        self.assertEqual(states[job3], ("COMPLETED", "0:0"))
        sa, _ = read_safetensors(os.path.join(alone, "training_state.safetensors"))
        sb, mb = read_safetensors(os.path.join(stopped, "training_state.safetensors"))
        self.assertEqual(mb["iteration"], "400")
        for k in sa:
            self.assertEqual(sa[k].tobytes(), sb[k].tobytes(), k)
        self.assertEqual([m["iteration"] for m in metrics(stopped)], list(range(400)))


if __name__ == "__main__":
    unittest.main()
