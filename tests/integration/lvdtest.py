"""Shared helpers for integration tests: run lvd executables, start the test HTTP server, inspect catalogs."""
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
BUILD = os.environ.get("LVD_BUILD", os.path.join(os.path.dirname(TESTS), "build"))
PYTHON = "/usr/bin/python3"


def exe(name):
    return os.path.join(BUILD, name)


def run(name, *args, check=True, timeout=600, env=None):
    """Runs lvd executable `name` with args; returns CompletedProcess (text). check: exit 0 required."""
    e = dict(os.environ)
    for k in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
              "PMI_RANK", "PMI_SIZE"):
        e.pop(k, None)
    if env:
        e.update(env)
    p = subprocess.run([exe(name)] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=e)
    if check and p.returncode != 0:
        raise AssertionError("%s %s exited %d\nstdout:\n%s\nstderr:\n%s" %
                             (name, " ".join(map(str, args)), p.returncode, p.stdout[-4000:], p.stderr[-4000:]))
    return p


class Server:
    """The fault-injecting HTTP server (tests/server.py) on 127.0.0.1; use as a context manager."""

    def __init__(self, root=None):
        args = [PYTHON, os.path.join(TESTS, "server.py")]
        if root:
            args += ["--root", root]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError("test server did not start: %r" % line)
        self.port = int(line.split()[1])
        self.base = "http://127.0.0.1:%d" % self.port

    def url(self, path):
        return self.base + path

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def db(work):
    """A read-only connection to WORK/catalog.db."""
    return sqlite3.connect("file:%s?mode=ro" % os.path.join(work, "catalog.db"), uri=True)


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_image_bytes(work, con, image_id):
    """Original bytes of an image, read back from its shard through the catalog's location."""
    path, off, n = con.execute(
        "SELECT s.path, i.offset, i.bytes FROM images i JOIN shards s ON s.id = i.shard_id WHERE i.id = ?",
        (image_id,)).fetchone()
    with open(os.path.join(work, path), "rb") as f:
        f.seek(off)
        return f.read(n)


class WorkTestCase(unittest.TestCase):
    """A test case with a fresh temporary directory in self.tmp (removed afterwards)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lvd-it-")
        self.work = os.path.join(self.tmp, "work")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def eval_preprocess(img, resize=256, crop=224):
    """DINOv2's evaluation transform as torchvision applies it to a PIL image, written with Pillow and NumPy:
    Resize(resize, BICUBIC) of the shorter side (the longer side truncated), CenterCrop(crop) with Python's
    rounding, ToTensor, Normalize(ImageNet mean, std). Returns (3, crop, crop) float32."""
    import numpy as np
    from PIL import Image
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    w, h = img.size
    if w <= h:
        nw, nh = resize, int(resize * h / w)
    else:
        nw, nh = int(resize * w / h), resize
    img = img.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
    a = np.asarray(img, dtype=np.float32)[top:top + crop, left:left + crop] / 255.0
    return ((a - mean) / std).transpose(2, 0, 1)
