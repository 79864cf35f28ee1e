"""lvd-balance and lvd-retrieve under a real mpirun (OpenMPI, 2 ranks on this machine): rank 0 runs the stage and
rank 1 serves its k-means training and assignments (common/kmeans_ranks.h: rows scattered, kmeans_train over the
ranks with float64 sums and counts all-reduced, labels gathered).

Oracle: the same stage run as one process on a copy of the same work directory. Everything the stage decides
must be equal: for lvd-balance the tree (levels, the centroid files' sha256, objectives, every point's cluster
and distance at every level) and the sample; for lvd-retrieve the k-means (its centroid file's sha256), every
pool image's cluster and similarity, and every selection. (The one-process results are themselves checked
against NumPy by test_balance.py and test_retrieve.py.) Incremental runs (new pool images assigned down the
tree, or to the stored k-means) are compared the same way. A usage error on rank 0 ends the job at once
instead of leaving rank 1 waiting."""
import json
import os
import shutil
import subprocess
import unittest

from lvdtest import WorkTestCase, db, exe, run
import test_retrieve
from test_balance import CONFIG, result_state, write
from test_retrieve import MODEL, Data, add_collection, selections_by_sha, write_registry
from test_train_mpi import MPI_ENV

MPIRUN = shutil.which("mpirun")

# Splits at level 1 (one small k-means per cluster) and resampling: many calls through the serving rank.
SPLITS = CONFIG.replace("n_splits: [1, 1]", "n_splits: [3, 1]").replace("seed: 7", "seed: 8")


def kmeans_state(con):
    """What lvd-retrieve's k-means decided, comparable across work directories (images by sha256)."""
    return [sorted(con.execute("SELECT clusters, setting, sha256, seed, iterations, train_points, pool_size, "
                               "round(objective, 12) FROM retrieve_kmeans")),
            sorted(con.execute("SELECT i.sha256, a.cluster, a.sim FROM retrieve_assign a JOIN images i "
                               "ON i.id = a.image_id"))]


@unittest.skipIf(MPIRUN is None, "mpirun is not installed (openmpi-bin)")
class CurateMpiTest(WorkTestCase):
    def mpi(self, name, *args, check=True):
        cmd = [MPIRUN, "-np", "2", "--oversubscribe", exe(name), *[str(a) for a in args]]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300,
                           env={**os.environ, **MPI_ENV})
        if check and p.returncode != 0:
            raise AssertionError("mpirun %s exited %d\nstdout:\n%s\nstderr:\n%s" % (name, p.returncode, p.stdout,
                                                                                  p.stderr[-4000:]))
        return p

    def balance_pool(self, work, data, n, first):
        add_collection(self, work, "web", "pool", data.points(n), first)
        run("lvd-dedup", "--work", work, "--model", MODEL, "--threshold", "0.999", "--quiet")

    def test_balance_two_ranks_equal_one_process(self):
        one, two = os.path.join(self.tmp, "one"), os.path.join(self.tmp, "two")
        data = Data(31, n_centers=5)
        first, later = data.points(400), data.points(90)
        for w in (one, two):
            add_collection(self, w, "web", "pool", first, 0)
            run("lvd-dedup", "--work", w, "--model", MODEL, "--threshold", "0.999", "--quiet")
        for cfg_text, name in ((CONFIG, "b.yaml"), (SPLITS, "splits.yaml")):
            cfg = write(os.path.join(self.tmp, name), cfg_text)
            args = ("--model", MODEL, "--config", cfg, "--rebuild", "--json")
            run("lvd-balance", "--work", one, *args)
            p = self.mpi("lvd-balance", "--work", two, *args)
            self.assertIn("2 processes", p.stderr)
            out = json.loads(p.stdout)
            self.assertTrue(out["tree"]["built_now"])
            with db(one) as a, db(two) as b:
                self.assertEqual(result_state(b), result_state(a), name)
        # New pool images assigned down the tree (kmr_assign), and the new sample.
        for w in (one, two):
            add_collection(self, w, "web", "pool", later, 500000)
            run("lvd-dedup", "--work", w, "--model", MODEL, "--threshold", "0.999", "--quiet")
        args = ("--model", MODEL, "--config", cfg, "--json")
        run("lvd-balance", "--work", one, *args)
        out = json.loads(self.mpi("lvd-balance", "--work", two, *args).stdout)
        self.assertEqual(out["tree"]["added_now"], 90)
        with db(one) as a, db(two) as b:
            self.assertEqual(result_state(b), result_state(a))

    def test_retrieve_two_ranks_equal_one_process(self):
        one, two = os.path.join(self.tmp, "one"), os.path.join(self.tmp, "two")
        data = Data(32)
        sets = test_retrieve.RetrieveTest.vectors(data)
        later = data.points(150)
        rows = test_retrieve.RetrieveTest.ROWS[:3]
        rows[2] = dict(rows[2], clusters=12)
        reg = write_registry(os.path.join(self.tmp, "r.yaml"), rows)
        for w in (one, two):
            for name, role, v, f in sets:
                add_collection(self, w, name, role, v, f)
        args = ("--model", MODEL, "--registry", reg, "--scale", "none", "--no-dedup", "--json")
        run("lvd-retrieve", "--work", one, *args)
        p = self.mpi("lvd-retrieve", "--work", two, *args)
        self.assertIn("2 processes", p.stderr)
        with db(one) as a, db(two) as b:
            ka = kmeans_state(a)
            self.assertEqual(len(ka[0]), 1)
            self.assertEqual(len(ka[1]), 420, "every pool image and the row's 20 seeds assigned")
            self.assertEqual(kmeans_state(b), ka)
            self.assertEqual(selections_by_sha(b), selections_by_sha(a))
        # New pool images: assigned to the stored k-means through the serving rank.
        for w in (one, two):
            add_collection(self, w, "web", "pool", later, 500000)
        run("lvd-retrieve", "--work", one, *args)
        out = json.loads(self.mpi("lvd-retrieve", "--work", two, *args).stdout)
        self.assertEqual(out["pool_new"], 150)
        with db(one) as a, db(two) as b:
            self.assertEqual(len(kmeans_state(a)[1]), 570)
            self.assertEqual(kmeans_state(b), kmeans_state(a))
            self.assertEqual(selections_by_sha(b), selections_by_sha(a))

    def test_usage_error_ends_the_job(self):
        p = self.mpi("lvd-balance", "--work", self.work, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--model NAME is required", p.stderr)
