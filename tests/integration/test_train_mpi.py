"""lvd-train data parallel under a real mpirun (OpenMPI, 2 ranks on this machine), on the Fashion-MNIST manifest of
test_train.py and the fmnist-pico preset.

Oracles, independent of the run under test:
- one process with the same global batch (train.batch_size_per_gpu doubled). The loader keys every crop by the
  entry's index in the epoch's whole shuffled list, so both runs see the same crops; with iBOT's masks, drop path
  and KoLeo off (the masks are drawn per rank's collate, drop path per rank, KoLeo over each rank's batch, as in
  dinov2) the two runs must agree: loss terms, schedules and the teacher checkpoint to 1e-5;
- an exact resume: 2 ranks stopped at a save and resumed with 2 ranks end with the same bytes of every tensor
  of the state as 2 ranks left alone, with the full iBOT + KoLeo recipe and drop path on;
- the files: only rank 0 writes (one metrics line per iteration), the state records both ranks' positions;
  resuming with another number of processes is refused with what to do.
"""
import json
import os
import shutil
import subprocess
import unittest

import numpy as np

import lvdtest
from lvdtest import WorkTestCase, exe, run
from test_train import PRESET, fixtures, fmnist_manifest, metrics, read_safetensors, TERMS

MPIRUN = shutil.which("mpirun")
# As tests/meson.build runs OpenMPI: as root in containers, shared memory without cross-process copies.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none", "OMPI_MCA_btl": "self,vader",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}

# Off what a one-process run cannot reproduce (see the top).
SAME = ["ibot.loss_weight=0", "ibot.mask_sample_probability=0", "student.drop_path_rate=0",
        "dino.koleo_loss_weight=0"]


@unittest.skipIf(MPIRUN is None, "mpirun is not installed (openmpi-bin)")
class TrainMpiTest(WorkTestCase):
    def setUp(self):
        super().setUp()
        if not os.path.isdir(fixtures.DATA_DIR):
            self.skipTest("dataset-fashion-mnist is not installed")
        self.db = fmnist_manifest(os.path.join(self.tmp, "m"), 20)

    def mpi(self, np_, out, *args, check=True):
        cmd = [MPIRUN, "-np", str(np_), "--oversubscribe", exe("lvd-train"), "--config", PRESET, "--manifest",
               self.db, "--out", out, "--threads", "1", *args]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600,
                           env={**os.environ, **MPI_ENV})
        if check and p.returncode != 0:
            raise AssertionError("mpirun exited %d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, p.stdout, p.stderr))
        return p

    def test_two_ranks_equal_one_process(self):
        two, one = os.path.join(self.tmp, "two"), os.path.join(self.tmp, "one")
        steps = ["--max-iter", "16", "--save-every", "16", "train.num_workers=1"]
        p = self.mpi(2, two, *steps, "train.batch_size_per_gpu=8", *SAME)
        run("lvd-train", "--config", PRESET, "--manifest", self.db, "--out", one, "--threads", "2", *steps,
            "train.batch_size_per_gpu=16", *SAME)
        a, b = metrics(two), metrics(one)
        self.assertEqual([m["iteration"] for m in a], list(range(16)))  # rank 0 alone writes
        for x, y in zip(a, b):
            for k in TERMS[:2] + ("total_loss",):
                self.assertAlmostEqual(x[k], y[k], delta=1e-5 * abs(y[k]), msg=(x["iteration"], k))
            for k in ("lr", "wd", "momentum", "teacher_temp", "last_layer_lr"):
                self.assertAlmostEqual(x[k], y[k], delta=1e-12 + 1e-9 * abs(y[k]), msg=(x["iteration"], k))
            for k in x["grad_norm"]:
                self.assertAlmostEqual(x["grad_norm"][k], y["grad_norm"][k], delta=1e-5 * y["grad_norm"][k])
        # The lr scaling rule saw the global batch: base_lr * sqrt(16 / 1024) in both.
        for d in (two, one):
            with open(os.path.join(d, "config.yaml")) as f:
                text = f.read()
            self.assertIn("lr: 0.0005\n", text.replace("0.00050000000000000001", "0.0005"))
        ta, _ = read_safetensors(os.path.join(two, "teacher_checkpoint.safetensors"))
        tb, _ = read_safetensors(os.path.join(one, "teacher_checkpoint.safetensors"))
        self.assertEqual(sorted(ta), sorted(tb))
        num = max(float(np.abs(ta[k].astype(np.float64) - tb[k]).max()) for k in ta)
        den = max(float(np.abs(tb[k]).max()) for k in tb)
        print("\n  2 ranks x 8 against 1 process x 16, 16 iterations: teacher max |diff| / max |w| %.2e, final "
              "loss %.6f / %.6f" % (num / den, a[-1]["total_loss"], b[-1]["total_loss"]), file=__import__("sys").stderr)
        self.assertLess(num / den, 1e-5)
        # Rank 1 says only warnings and errors, marked with its rank.
        for line in p.stderr.splitlines():
            if "[rank 1/2]" in line:
                self.assertNotIn(": info:", line)

    def test_resume_same_ranks_exact(self):
        a, b = os.path.join(self.tmp, "a"), os.path.join(self.tmp, "b")
        args = ["--save-every", "5", "train.batch_size_per_gpu=4", "train.num_workers=1"]
        self.mpi(2, a, "--max-iter", "15", *args)
        self.mpi(2, b, "--max-iter", "10", *args)
        _, meta = read_safetensors(os.path.join(b, "training_state.safetensors"))
        self.assertEqual(meta["ranks"], "2")
        pos = [tuple(int(v) for v in pair.split(":")) for pair in meta["rank_positions"].split(",")]
        # 200 samples, 100 per rank, 4 per step: 10 steps put both ranks at position 40 of epoch 0.
        self.assertEqual(pos, [(0, 40), (0, 40)])
        self.assertEqual((meta["epoch"], meta["position"]), ("0", "40"))
        self.mpi(2, b, "--max-iter", "15", "--resume", *args)
        sa, ma = read_safetensors(os.path.join(a, "training_state.safetensors"))
        sb, mb = read_safetensors(os.path.join(b, "training_state.safetensors"))
        self.assertEqual(sorted(sa), sorted(sb))
        for k in sa:
            self.assertEqual(sa[k].tobytes(), sb[k].tobytes(), k)
        self.assertEqual(ma["rank_positions"], mb["rank_positions"])
        la, lb = metrics(a), metrics(b)
        self.assertEqual([m["iteration"] for m in lb], list(range(15)))
        for x, y in zip(la, lb):
            for k in TERMS + ("n_masked",):
                self.assertEqual(x[k], y[k], (x["iteration"], k))
        # Another number of processes: refused, with what to do; the state is left as it was.
        before = open(os.path.join(b, "training_state.safetensors"), "rb").read()
        p = run("lvd-train", "--manifest", self.db, "--out", b, "--resume", "--max-iter", "20", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("written by 2 processes and this run has 1", p.stderr)
        self.assertIn("mpirun -np 2", p.stderr)
        self.assertEqual(open(os.path.join(b, "training_state.safetensors"), "rb").read(), before)

    def test_epoch_boundary_positions(self):
        """An odd number of samples: the ranks' parts of an epoch differ by one, their positions drift apart
        after the boundary, and the state keeps both."""
        db = fmnist_manifest(os.path.join(self.tmp, "odd"), 20, bad=1)  # 201 samples: parts of 101 and 100
        out = os.path.join(self.tmp, "run")
        cmd = ["--max-iter", "26", "--save-every", "26", "train.batch_size_per_gpu=4", "train.num_workers=1"]
        self.db = db
        p = self.mpi(2, out, *cmd)
        _, meta = read_safetensors(os.path.join(out, "training_state.safetensors"))
        pos = [tuple(int(v) for v in pair.split(":")) for pair in meta["rank_positions"].split(",")]
        self.assertEqual([e for e, _ in pos], [1, 1])
        # 26 steps of 4 = 104 good entries per rank from parts of 101 (rank 0) and 100 (rank 1): positions 3 and
        # 4 of epoch 1, each further by the entries it skipped.
        failed = int(meta["failed"])
        self.assertGreater(failed, 0)
        self.assertEqual(pos[0][1] - 3 + pos[1][1] - 4, failed, pos)
        self.assertTrue(pos[0][1] >= 3 and pos[1][1] >= 4, pos)
        self.assertIn("does not decode", p.stderr)


if __name__ == "__main__":
    unittest.main()
