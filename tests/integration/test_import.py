"""lvd-import: directory trees, path lists and webdataset tars into a collection, incremental and kill -9 safe.

Expectations come from the inputs themselves (hashlib over the files, Pillow's format, tarfile over the
shards), never from lvd's own output.
"""
import gzip
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import tarfile
import time
import unittest

import lvdtest

FMNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
PIL_FORMAT = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}

_pictures = None


def pictures():
    """Fashion-MNIST test pictures as 28x28 uint8 arrays (loaded once)."""
    global _pictures
    if _pictures is None:
        import numpy as np
        with gzip.open(FMNIST) as f:
            _pictures = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    return _pictures


def encode(i, fmt="PNG"):
    """Bytes of picture i in a Pillow format."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pictures()[i]).save(buf, format=fmt)
    return buf.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def pil_format(data):
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        return PIL_FORMAT[im.format]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def import_(work, *args, check=True):
    """Runs lvd-import --json; returns (CompletedProcess, summary dict or None)."""
    p = lvdtest.run("lvd-import", "--work", work, "--json", *args, check=check)
    summary = json.loads(p.stdout) if p.returncode == 0 else None
    return p, summary


def members(work, collection):
    """{key: (sha256, label, source)} of a collection."""
    with lvdtest.db(work) as con:
        rows = con.execute(
            "SELECT m.key, i.sha256, m.label, m.source FROM members m JOIN images i ON i.id = m.image_id "
            "JOIN collections c ON c.id = m.collection_id WHERE c.name = ?", (collection,)).fetchall()
    return {k: (s, l, src) for k, s, l, src in rows}


def table(work, sql):
    with lvdtest.db(work) as con:
        return con.execute(sql).fetchall()


class ImportTest(lvdtest.WorkTestCase):

    def check_store(self, work):
        """Every image's bytes, read back from its shard, hash to its sha256; the shards are valid tars that
        hold "<sha>.<ext>" and "<sha>.json" for every image, with metadata naming collection and key."""
        con = lvdtest.db(work)
        try:
            images = con.execute("SELECT id, sha256, bytes, format FROM images").fetchall()
            for image_id, digest, size, fmt in images:
                data = lvdtest.read_image_bytes(work, con, image_id)
                self.assertEqual(len(data), size)
                self.assertEqual(sha(data), digest)
                self.assertEqual(pil_format(data), fmt)
            names = {}
            for (path,) in con.execute("SELECT path FROM shards WHERE kind = 'raw'"):
                with tarfile.open(os.path.join(work, path)) as t:
                    for m in t.getmembers():
                        names[m.name] = t.extractfile(m).read()
            for image_id, digest, size, fmt in images:
                ext = {"jpeg": "jpg"}.get(fmt, fmt)
                self.assertEqual(sha(names[digest + "." + ext]), digest)
                meta = json.loads(names[digest + ".json"])
                self.assertEqual(set(meta), {"collection", "key", "source", "label"})
                key_rows = con.execute(
                    "SELECT m.key FROM members m JOIN collections c ON c.id = m.collection_id "
                    "WHERE c.name = ? AND m.key = ?", (meta["collection"], meta["key"])).fetchall()
                self.assertEqual(len(key_rows), 1, meta)
            self.assertEqual(len(names), 2 * len(images))
            self.assertEqual(con.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        finally:
            con.close()

    def make_tree(self):
        """A nested tree with an exact duplicate under another name, a top-level file and a non-image.
        Returns {key: bytes} of the image files."""
        src = os.path.join(self.tmp, "src")
        files = {
            "shirts/0001.png": encode(0),
            "shirts/0002.jpg": encode(1, "JPEG"),
            "shirts/deep/0003.png": encode(2),
            "shoes/0004.webp": encode(3, "WEBP"),
            "shoes/copy-of-0001.png": encode(0),
            "top.gif": encode(4, "GIF"),
            "bags/0005.bmp": encode(5, "BMP"),
        }
        for k, v in files.items():
            write(os.path.join(src, k), v)
        write(os.path.join(src, "shoes", "notes.txt"), b"not an image at all\n")
        os.symlink(os.path.join(src, "shirts", "0001.png"), os.path.join(src, "link.png"))
        return src, files

    def test_dir_import(self):
        src, files = self.make_tree()
        p, s = import_(self.work, "--collection", "fm", "--role", "seed", "--dir", src,
                       "--label-from", "parent-dir")
        distinct = {sha(v) for v in files.values()}
        self.assertEqual(len(distinct), len(files) - 1)
        self.assertEqual(table(self.work, "SELECT count(*) FROM images")[0][0], len(distinct))
        got = members(self.work, "fm")
        self.assertEqual(set(got), set(files))  # no symlink, no non-image
        for key, data in files.items():
            digest, label, source = got[key]
            self.assertEqual(digest, sha(data), key)
            parent = os.path.basename(os.path.dirname(key)) or None
            self.assertEqual(label, parent, key)
            self.assertEqual(source, os.path.join(os.path.realpath(src), key))
        self.assertEqual(table(self.work, "SELECT role FROM collections WHERE name = 'fm'"), [("seed",)])
        self.assertEqual(s, {"files": len(files) + 1, "new_images": len(distinct), "already_present": 1,
                             "changed": 0, "skipped_not_image": 1, "skipped_long_name": 0, "errors": 0,
                             "new_members": len(files)})
        self.assertIn(os.path.join("shoes", "notes.txt"), p.stderr)
        self.assertIn("not an image", p.stderr)
        self.assertIn("import: 8 files, 6 new images, 1 already present, 0 changed, 1 skipped (not an image), "
                      "0 errors", p.stderr)
        self.check_store(self.work)
        runs = table(self.work, "SELECT stage, status, summary FROM runs")
        self.assertEqual(len(runs), 1)
        self.assertEqual(runs[0][:2], ("import", "done"))
        self.assertEqual(json.loads(runs[0][2])["new_images"], len(distinct))

    def snapshot(self):
        shards = table(self.work, "SELECT path, committed, members FROM shards ORDER BY id")
        blobs = [open(os.path.join(self.work, p), "rb").read() for p, _, _ in shards]
        return (table(self.work, "SELECT * FROM images ORDER BY id"),
                table(self.work, "SELECT * FROM members ORDER BY collection_id, key"), shards, blobs)

    def test_rerun_add_and_change(self):
        src, files = self.make_tree()
        args = ["--collection", "fm", "--role", "seed", "--dir", src, "--label-from", "parent-dir"]
        import_(self.work, *args)
        before = self.snapshot()
        p, s = import_(self.work, *args)
        self.assertIn(" 0 new images", p.stderr)
        self.assertEqual((s["new_images"], s["new_members"], s["changed"], s["already_present"]),
                         (0, 0, 0, len(files)))
        self.assertEqual(self.snapshot(), before)

        # One new file: only it is stored.
        write(os.path.join(src, "shoes", "0006.png"), encode(6))
        p, s = import_(self.work, *args)
        self.assertEqual((s["new_images"], s["new_members"], s["changed"]), (1, 1, 0))
        after = self.snapshot()
        self.assertEqual(len(after[0]), len(before[0]) + 1)
        self.assertEqual(after[0][:len(before[0])], before[0])
        self.assertEqual(members(self.work, "fm")["shoes/0006.png"][0], sha(encode(6)))

        # Different bytes under an existing key: the member moves to the new image.
        write(os.path.join(src, "shirts", "0002.jpg"), encode(7, "JPEG"))
        p, s = import_(self.work, *args)
        self.assertEqual((s["new_images"], s["new_members"], s["changed"]), (1, 0, 1))
        got = members(self.work, "fm")
        self.assertEqual(got["shirts/0002.jpg"][0], sha(encode(7, "JPEG")))
        self.assertEqual(len(got), len(files) + 1)
        self.check_store(self.work)

        # The same collection with another role is refused and changes nothing.
        snap = self.snapshot()
        p, _ = import_(self.work, "--collection", "fm", "--role", "benchmark", "--dir", src, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("seed", p.stderr)
        self.assertIn("benchmark", p.stderr)
        self.assertEqual(self.snapshot(), snap)

    def test_webdataset(self):
        def tar_bytes(entries):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
                for name, data in entries:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
            return buf.getvalue()

        a = [("s/000.jpg", encode(10, "JPEG")), ("s/000.cls", b"7\n"),
             ("s/001.png", encode(11)), ("s/001.json", json.dumps({"label": "sandal"}).encode()),
             ("s/002.cls", b"3"), ("s/002.png", encode(12)), ("s/002.txt", b"a caption"),
             ("s/003.jpg", b"plain text, not a jpeg"), ("s/003.cls", b"1"),
             ("s/004.txt", b"a sample without an image"),
             ("s/005.webp", encode(13, "WEBP")), ("s/005.png", encode(14))]
        tar_a = os.path.join(self.tmp, "a.tar")
        write(tar_a, tar_bytes(a))
        b_entries = [("100.png", encode(20)), ("100.cls", b"4"), ("101.png", encode(21)), ("101.cls", b"5"),
                     ("102.png", encode(22)), ("102.cls", b"6")]
        b = tar_bytes(b_entries)
        # Torn inside the data of 102.png: the first two samples are complete.
        with tarfile.open(fileobj=io.BytesIO(b)) as t:
            m = t.getmember("102.png")
            cut = m.offset_data + m.size // 2
        tar_b = os.path.join(self.tmp, "b.tar")
        write(tar_b, b[:cut])

        p, s = import_(self.work, "--collection", "bench", "--role", "benchmark", "--webdataset", tar_a, tar_b)
        got = members(self.work, "bench")
        expect = {"s/000": (encode(10, "JPEG"), "7"), "s/001": (encode(11), "sandal"),
                  "s/002": (encode(12), "3"), "s/005": (encode(13, "WEBP"), None),
                  "100": (encode(20), "4"), "101": (encode(21), "5")}
        self.assertEqual(set(got), set(expect))
        for key, (data, label) in expect.items():
            self.assertEqual(got[key][0], sha(data), key)
            self.assertEqual(got[key][1], label, key)
        self.assertEqual(got["s/000"][2], tar_a + ":s/000.jpg")
        self.assertIn(tar_b, p.stderr)
        self.assertIn("torn", p.stderr)
        self.assertIn("s/003.jpg", p.stderr)  # not an image
        self.assertEqual((s["new_images"], s["skipped_not_image"], s["errors"]), (6, 1, 1))
        self.check_store(self.work)

        p, s = import_(self.work, "--collection", "bench", "--role", "benchmark", "--webdataset", tar_a, tar_b)
        self.assertEqual((s["new_images"], s["new_members"], s["already_present"]), (0, 0, 6))

    def test_webdataset_long_names(self):
        """A member whose path is over 255 bytes is skipped, logged with its offset and counted; the members
        after it are imported, and a sidecar never joins another sample because its partner was skipped.
        Python's tarfile writes the tars (GNU 'L' records and pax "path" records) and gives the offsets."""
        k = "s/" + "k" * 249   # 251-byte keys: "<k>.jpeg" is 256 bytes, "<k>.cls" 255
        j = "s/" + "m" * 249
        x = "x" * 289 + "/005"  # 293 bytes: both members of the sample are too long
        entries = [("s/000.jpg", encode(40, "JPEG")),        # no label of its own
                   (k + ".jpeg", encode(41, "JPEG")),        # 256 bytes: skipped
                   (k + ".cls", b"9"),                       # its label: must not go to s/000 nor s/004
                   (j + ".png", encode(42)),                 # imported without its label
                   (j + ".json", json.dumps({"label": "wrong"}).encode()),  # 256 bytes: skipped
                   ("s/004.json", json.dumps({"label": "sandal"}).encode()), ("s/004.png", encode(43)),
                   (x + ".jpg", encode(44, "JPEG")), (x + ".cls", b"8"),   # 297 and 297 bytes: skipped
                   ("s/006.png", encode(45)), ("s/006.cls", b"3")]
        expect = {"s/000": (encode(40, "JPEG"), None), j: (encode(42), None), "s/004": (encode(43), "sandal"),
                  "s/006": (encode(45), "3")}
        for fmt, fmt_name in ((tarfile.GNU_FORMAT, "gnu"), (tarfile.PAX_FORMAT, "pax")):
            with self.subTest(fmt=fmt_name):
                tar = os.path.join(self.tmp, "long-%s.tar" % fmt_name)
                with tarfile.open(tar, "w", format=fmt) as t:
                    for name, data in entries:
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        t.addfile(info, io.BytesIO(data))
                with tarfile.open(tar) as t:
                    listed = [(m.name, m.offset) for m in t.getmembers()]
                self.assertEqual([n for n, _ in listed], [n for n, _ in entries])
                too_long = [(n, off) for n, off in listed if len(n.encode()) > 255]
                self.assertEqual(len(too_long), 4)

                work = os.path.join(self.tmp, "work-" + fmt_name)
                p, s = import_(work, "--collection", "wds", "--role", "benchmark", "--webdataset", tar)
                got = members(work, "wds")
                self.assertEqual(set(got), set(expect))
                for key, (data, label) in expect.items():
                    self.assertEqual(got[key][:2], (sha(data), label), key)
                self.assertEqual(got["s/000"][2], tar + ":s/000.jpg")
                self.assertEqual((s["files"], s["new_images"], s["new_members"], s["skipped_not_image"],
                                  s["skipped_long_name"], s["errors"]), (4, 4, 4, 0, 4, 0))
                for name, off in too_long:
                    self.assertIn("%s: member at offset %d has a name of %d bytes" % (tar, off, len(name)),
                                  p.stderr)
                self.assertEqual(p.stderr.count("has a name of"), 4, p.stderr)
                self.assertIn("4 skipped (name too long)", p.stderr)
                runs = table(work, "SELECT status, summary FROM runs")
                self.assertEqual(len(runs), 1)
                self.assertEqual(runs[0][0], "done")
                self.assertEqual(json.loads(runs[0][1])["skipped_long_name"], 4)
                self.check_store(work)

                # A rerun finds everything present and skips the same members again.
                p, s = import_(work, "--collection", "wds", "--role", "benchmark", "--webdataset", tar)
                self.assertEqual((s["new_images"], s["new_members"], s["already_present"],
                                  s["skipped_long_name"]), (0, 0, 4, 4))

    def test_list_csv_and_txt(self):
        lists = os.path.join(self.tmp, "lists")
        data = {"imgs/a.png": encode(30), "imgs/b, with comma.png": encode(31), "other/c.jpg": encode(32, "JPEG"),
                "imgs/e.png": encode(34)}
        for k, v in data.items():
            write(os.path.join(lists, k), v)
        abs_d = os.path.join(self.tmp, "elsewhere", "d.png")
        write(abs_d, encode(33))
        csv_path = os.path.join(lists, "set.csv")
        with open(csv_path, "w") as f:
            f.write("id,file,cls\n")                       # line 1
            f.write("1,imgs/a.png,coat\n")                 # line 2
            f.write('2,"imgs/b, with comma.png",bag\n')    # line 3
            f.write('3,imgs/e.png,"two\nlines"\n')          # lines 4-5
            f.write("4,imgs/missing.png,shirt\n")          # line 6
            f.write("\n")                                  # line 7
            f.write("5,other/c.jpg,\n")                    # line 8
            f.write("6,%s,dress\n" % abs_d)                # line 9
        p, s = import_(self.work, "--collection", "seedset", "--role", "seed", "--list", csv_path,
                       "--path-col", "file", "--label-col", "cls")
        got = members(self.work, "seedset")
        self.assertEqual(set(got), {"imgs/a.png", "imgs/b, with comma.png", "imgs/e.png", "other/c.jpg", abs_d})
        self.assertEqual(got["imgs/e.png"][:2], (sha(data["imgs/e.png"]), "two\nlines"))
        self.assertEqual(got["imgs/a.png"][:2], (sha(data["imgs/a.png"]), "coat"))
        self.assertEqual(got["imgs/b, with comma.png"][:2], (sha(data["imgs/b, with comma.png"]), "bag"))
        self.assertEqual(got["other/c.jpg"][:2], (sha(data["other/c.jpg"]), None))
        self.assertEqual(got[abs_d][:2], (sha(encode(33)), "dress"))
        self.assertIn("set.csv:6:", p.stderr)
        self.assertIn("missing.png", p.stderr)
        self.assertEqual((s["files"], s["new_images"], s["errors"]), (6, 5, 1))
        self.check_store(self.work)

        # A .txt list into another collection: same bytes, no new images, new members.
        txt = os.path.join(lists, "paths.txt")
        with open(txt, "w") as f:
            f.write("imgs/a.png\n\nother/c.jpg\r\n")
        p, s = import_(self.work, "--collection", "pool", "--role", "pool", "--list", txt)
        self.assertEqual((s["files"], s["new_images"], s["new_members"], s["already_present"]), (2, 0, 2, 2))
        self.assertEqual({k: v[1] for k, v in members(self.work, "pool").items()},
                         {"imgs/a.png": None, "other/c.jpg": None})

    def test_usage_errors(self):
        p = lvdtest.run("lvd-import", "--work", self.work, "--collection", "x", "--role", "seed", "--dir",
                        os.path.join(self.tmp, "nope"), check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn(os.path.join(self.tmp, "nope"), p.stderr)
        p = lvdtest.run("lvd-import", "--work", self.work, "--collection", "x", "--role", "train", "--dir",
                        self.tmp, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("train", p.stderr)
        p = lvdtest.run("lvd-import", "--work", self.work, "--collection", "x", "--role", "seed", "--list",
                        os.path.join(self.tmp, "absent.csv"), check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("absent.csv", p.stderr)
        csv_path = os.path.join(self.tmp, "nopath.csv")
        write(csv_path, b"url,label\nx.png,1\n")
        p = lvdtest.run("lvd-import", "--work", self.work, "--collection", "x", "--role", "seed", "--list",
                        csv_path, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("'path'", p.stderr)
        p = lvdtest.run("lvd-import", "--work", self.work, "--collection", "x", "--role", "seed", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertFalse(os.path.exists(os.path.join(self.work, "catalog.db")))

    def test_collection_names(self):
        """A collection name becomes a directory name (WORK/embeddings/<model>/<collection>/): a name that cannot
        be one is a usage error at import, before anything is written; UTF-8 names are fine."""
        src = os.path.join(self.tmp, "src")
        write(os.path.join(src, "a.png"), encode(0))
        write(os.path.join(src, "b.png"), encode(1))
        bad = {
            "a/b": "'/'",
            "..": "'..'",
            ".": "'.'",
            "": "empty",
            "tab\there": "control character",
            "bell\x07": "control character",
            "del\x7f": "control character",
            " lead": "space",
            "trail ": "space",
            "x" * 201: "201 bytes",
            "caf\udce9": "UTF-8",  # the byte 0xe9 alone (Latin-1 'é'), passed through as it is
        }

        def refused(work):
            for name, why in bad.items():
                p = lvdtest.run("lvd-import", "--work", work, "--collection", name, "--role", "pool", "--dir", src,
                                check=False)
                self.assertEqual(p.returncode, 2, (name, p.stderr))
                self.assertIn("collection name", p.stderr)
                self.assertIn(why, p.stderr, name)
                self.assertIn("allowed", p.stderr, name)
            # The name is quoted as given, with control characters and stray bytes shown as \xNN.
            p = lvdtest.run("lvd-import", "--work", work, "--collection", "a/b", "--role", "pool", "--dir", src,
                            check=False)
            self.assertIn("'a/b'", p.stderr)
            p = lvdtest.run("lvd-import", "--work", work, "--collection", "bell\x07", "--role", "pool", "--dir",
                            src, check=False)
            self.assertIn("'bell\\x07'", p.stderr)
            self.assertNotIn("\x07", p.stderr)

        refused(self.work)
        self.assertFalse(os.path.exists(self.work), "nothing is written, not even the work directory")
        ok = ["café", "ImageNet val (2012)", "x" * 200, "名前", "a.b", "..a", "50%_[x]*?"]
        for name in ok:
            p, s = import_(self.work, "--collection", name, "--role", "pool", "--dir", src)
            self.assertEqual(s["new_members"], 2, name)
        self.assertEqual(sorted(r[0] for r in table(self.work, "SELECT name FROM collections")), sorted(ok))
        before = (table(self.work, "SELECT * FROM collections ORDER BY id"),
                  table(self.work, "SELECT * FROM runs ORDER BY id"),
                  table(self.work, "SELECT * FROM shards ORDER BY id"),
                  sorted(os.listdir(os.path.join(self.work, "shards"))))
        refused(self.work)
        after = (table(self.work, "SELECT * FROM collections ORDER BY id"),
                 table(self.work, "SELECT * FROM runs ORDER BY id"),
                 table(self.work, "SELECT * FROM shards ORDER BY id"),
                 sorted(os.listdir(os.path.join(self.work, "shards"))))
        self.assertEqual(after, before)

    def test_small_shards_roll_over(self):
        src = os.path.join(self.tmp, "many")
        data = {"%03d.png" % i: encode(100 + i) for i in range(60)}
        for k, v in data.items():
            write(os.path.join(src, k), v)
        # 4 KiB shards with one 256-file batch: dozens of shards inside what would be one transaction.
        p, s = import_(self.work, "--collection", "m", "--role", "pool", "--dir", src, "--shard-size", "4K")
        self.assertEqual(s["new_images"], len({sha(v) for v in data.values()}))
        shards = table(self.work, "SELECT path, committed, members FROM shards ORDER BY path")
        self.assertGreater(len(shards), 10)
        for path, committed, nmembers in shards:
            with tarfile.open(os.path.join(self.work, path)) as t:
                self.assertEqual(len(t.getmembers()), nmembers, path)
            self.assertGreaterEqual(os.path.getsize(os.path.join(self.work, path)), committed)
        self.assertEqual({k: v[0] for k, v in members(self.work, "m").items()},
                         {k: sha(v) for k, v in data.items()})
        self.check_store(self.work)

    def test_kill9_then_rerun(self):
        n = 3000
        src = os.path.join(self.tmp, "big")
        for i in range(n):
            write(os.path.join(src, "c%d" % (i % 10), "%05d.png" % i), encode(i))
        args = ["--collection", "big", "--role", "pool", "--dir", src, "--label-from", "parent-dir",
                "--batch", "25", "--shard-size", "64K"]

        clean = os.path.join(self.tmp, "clean")
        import_(clean, *args)

        cmd = [lvdtest.exe("lvd-import"), "--work", self.work, "--quiet"] + args
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        db_path = os.path.join(self.work, "catalog.db")
        deadline = time.monotonic() + 30
        committed = 0
        # Kill once a few batches are committed, while the run is surely far from done.
        while time.monotonic() < deadline and proc.poll() is None and committed < 100:
            time.sleep(0.01)
            if os.path.exists(db_path):
                try:
                    with sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=1) as con:
                        committed = con.execute("SELECT count(*) FROM members").fetchone()[0]
                except sqlite3.Error:
                    pass
        self.assertIsNone(proc.poll(), "the import finished before it could be killed")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        partial = table(self.work, "SELECT count(*) FROM members")[0][0]
        self.assertGreater(partial, 0)
        self.assertLess(partial, n)

        p, s = import_(self.work, *args)
        self.assertEqual(s["new_members"], n - partial)
        self.assertEqual(members(self.work, "big"), members(clean, "big"))
        q = "SELECT sha256, bytes, format FROM images ORDER BY sha256"
        self.assertEqual(table(self.work, q), table(clean, q))
        self.check_store(self.work)
        p, s = import_(self.work, *args)
        self.assertEqual((s["new_images"], s["new_members"]), (0, 0))


if __name__ == "__main__":
    unittest.main()
