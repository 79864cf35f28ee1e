"""lvd-decode end to end: crawled real and hostile images, statuses, working images checked with Pillow."""
import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import time

from PIL import Image, ImageOps

from lvdtest import Server, WorkTestCase, db, exe, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import fixtures  # noqa: E402

CRAWL = ["--allow-private", "--timeout", "10", "--retries", "0"]


def working_image(work, con, sha):
    """The working image of the image with this SHA-256, as a PIL image."""
    path, off, size = con.execute(
        "SELECT s.path, d.offset, d.size FROM decodes d JOIN images i ON i.id = d.image_id"
        " JOIN shards s ON s.id = d.shard_id WHERE i.sha256 = ?", (sha,)).fetchone()
    with open(os.path.join(work, path), "rb") as f:
        f.seek(off)
        return Image.open(io.BytesIO(f.read(size))).convert("RGB")


def mean_abs_diff(a, b):
    import numpy as np
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean())


def decodes(work):
    with db(work) as con:
        return {r[0]: r[1:] for r in con.execute(
            "SELECT i.sha256, d.status, d.error, d.width, d.height, d.out_width, d.out_height, d.phash"
            " FROM decodes d JOIN images i ON i.id = d.image_id")}


class DecodeTest(WorkTestCase):
    def setUp(self):
        super().setUp()
        self.files = os.path.join(self.tmp, "files")
        self.pool = fixtures.write_pool(self.files, 30, seed=5, dup_exact=0, dup_near=10)
        self.special = fixtures.special(self.files)
        with Server(root=self.files) as s:
            names = [p["name"] for p in self.pool] + sorted(n for n in self.special if n != "notimage.html")
            lst = os.path.join(self.tmp, "urls.txt")
            with open(lst, "w") as f:
                f.write("".join(s.url("/files/" + n) + "\n" for n in names))
            run("lvd-crawl", "--work", self.work, *CRAWL, lst)
        self.sha = {n: hashlib.sha256(open(os.path.join(self.files, n), "rb").read()).hexdigest()
                    for n in list(self.special) + [p["name"] for p in self.pool]}

    def test_statuses_and_working_images(self):
        p = run("lvd-decode", "--work", self.work, "--size", "128")
        d = decodes(self.work)
        st = {n: d[self.sha[n]][0] for n in self.special if n != "notimage.html"}
        expect = {"cmyk.jpg": "ok", "exif_rot6.jpg": "ok", "alpha.png": "ok", "palette.png": "ok",
                  "gray.png": "ok", "bomb.png": "too_many_pixels", "truncated.jpg": "truncated",
                  "tiny.png": "too_small", "wide.jpg": "bad_aspect",
                  "gif.gif": "unsupported", "big.jpg": "ok"}
        # Random bytes after a real JPEG header run out before an end marker: either reading is honest.
        for n in ("truncated.png", "truncated.webp", "corrupt.jpg"):
            self.assertIn(st.pop(n), ("truncated", "corrupt"), n)
        self.assertEqual(st, expect)
        for n in ("truncated.png", "truncated.webp", "corrupt.jpg"):
            self.assertTrue(d[self.sha[n]][1], n)
        for n, s in expect.items():
            err = d[self.sha[n]][1]
            self.assertEqual(err is None, s == "ok", (n, err))
        self.assertIn("50000x50000", d[self.sha["bomb.png"]][1])
        for p_ in self.pool:
            self.assertEqual(d[p_["sha256"]][0], "ok", p_["name"])
        # Sizes: originals after EXIF orientation; working images keep_ratio with the shorter side 128.
        self.assertEqual(d[self.sha["exif_rot6.jpg"]][2:6], (200, 300, 128, 192))
        self.assertEqual(d[self.sha["big.jpg"]][2:6], (3000, 2000, 192, 128))
        with db(self.work) as con:
            # Orientation applied: matches Pillow's exif_transpose, resized the same way.
            for name in ("exif_rot6.jpg", "cmyk.jpg", "big.jpg", "palette.png", "gray.png"):
                ref = ImageOps.exif_transpose(Image.open(self.special[name])).convert("RGB")
                got = working_image(self.work, con, self.sha[name])
                ref = ref.resize(got.size, Image.BICUBIC)
                self.assertLess(mean_abs_diff(got, ref), 6.0, name)
            # Alpha composited on white.
            rgba = Image.open(self.special["alpha.png"]).convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            ref = Image.alpha_composite(white, rgba).convert("RGB")
            got = working_image(self.work, con, self.sha["alpha.png"])
            self.assertLess(mean_abs_diff(got, ref.resize(got.size, Image.BICUBIC)), 4.0)
            self.assertTrue(all(c > 240 for c in got.getpixel((2, got.size[1] // 2))), "left band is white")
            self.assertEqual(con.execute("PRAGMA integrity_check").fetchone()[0], "ok")

    def test_phash_separates_near_duplicates(self):
        run("lvd-decode", "--work", self.work, "--size", "128")
        d = decodes(self.work)
        by_name = {p["name"]: p for p in self.pool}
        near, other = [], []
        for p_ in self.pool:
            if p_["kind"] != "near_dup":
                continue
            a = int(d[p_["sha256"]][6], 16)
            b = int(d[by_name[p_["dup_of"]]["sha256"]][6], 16)
            near.append(bin(a ^ b).count("1"))
        origs = [p_ for p_ in self.pool if p_["kind"] == "orig"]
        for i in range(len(origs) - 1):
            a = int(d[origs[i]["sha256"]][6], 16)
            b = int(d[origs[i + 1]["sha256"]][6], 16)
            other.append(bin(a ^ b).count("1"))
        # A DCT hash survives re-encoding, rescaling and brightness; a flip or a 90% crop moves the
        # picture's structure and is for embeddings (lvd-dedup) to catch, not pHash.
        close = [h for h, p_ in zip(near, [p for p in self.pool if p["kind"] == "near_dup"])
                 if p_["transform"] in ("jpeg_q60", "resize90", "bright15")]
        self.assertTrue(close)
        self.assertLessEqual(max(close), 6, near)
        self.assertGreater(sum(other) / len(other), 20, other)

    def test_resize_modes(self):
        run("lvd-decode", "--work", self.work, "--size", "96", "--resize-mode", "center_crop")
        d = decodes(self.work)
        for p_ in self.pool:
            self.assertEqual(d[p_["sha256"]][4:6], (96, 96))
        # New parameters redo every image once; keep_ratio_largest bounds the longer side.
        p = run("lvd-decode", "--work", self.work, "--size", "100", "--resize-mode", "keep_ratio_largest",
                "--format", "webp", "--json")
        d = decodes(self.work)
        for p_ in self.pool:
            w, h = d[p_["sha256"]][4:6]
            self.assertEqual(max(w, h), 100)
            self.assertAlmostEqual(w / h, p_["width"] / p_["height"], delta=0.05)
        with db(self.work) as con:
            img = working_image(self.work, con, self.pool[0]["sha256"])
            self.assertEqual(max(img.size), 100)

    def test_incremental_zero_new(self):
        run("lvd-decode", "--work", self.work, "--size", "64")
        before = decodes(self.work)
        p = run("lvd-decode", "--work", self.work, "--size", "64", "--json")
        self.assertIn("0 new", p.stderr)
        self.assertIn('"decoded":0', p.stdout)
        self.assertEqual(decodes(self.work), before)

    def test_kill_and_resume(self):
        args = [exe("lvd-decode"), "--work", self.work, "--size", "512", "--batch", "4", "--threads", "2"]
        rng = random.Random(11)
        for _ in range(3):
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.1, 0.6))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        run("lvd-decode", *args[1:])
        d = decodes(self.work)
        with db(self.work) as con:
            n_images = con.execute("SELECT count(*) FROM images").fetchone()[0]
            self.assertEqual(len(d), n_images)
            self.assertEqual(con.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            for sha, row in d.items():
                if row[0] == "ok":
                    img = working_image(self.work, con, sha)
                    self.assertEqual(img.size, row[4:6])

    def test_two_parts_and_merge_equal_one_run(self):
        import shutil
        one = os.path.join(self.tmp, "one")
        shutil.copytree(self.work, one)
        run("lvd-decode", "--work", one, "--size", "64")
        run("lvd-decode", "--work", self.work, "--size", "64", "--part", "0/2")
        run("lvd-decode", "--work", self.work, "--size", "64", "--part", "1/2")
        self.assertEqual(decodes(self.work), {}, "parts do not write catalog.db")
        run("lvd-decode", "--work", self.work, "--merge")
        a, b = decodes(self.work), decodes(one)
        self.assertEqual(a, b)
        with db(self.work) as con:
            for sha, row in a.items():
                if row[0] == "ok":
                    self.assertEqual(working_image(self.work, con, sha).size, row[4:6])
        p = run("lvd-decode", "--work", self.work, "--size", "64")
        self.assertIn("0 new", p.stderr)
