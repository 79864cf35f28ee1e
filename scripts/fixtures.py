#!/usr/bin/python3
"""Test and demo images made from real pictures: the Fashion-MNIST set of Debian's dataset-fashion-mnist.

Run with /usr/bin/python3 (needs python3-pil and python3-numpy). Everything is deterministic for a given
seed: the same call writes the same bytes (with the same Pillow/libjpeg/libwebp build).

Module API
  fashion(split="train") -> (images uint8 (N,28,28), labels uint8 (N,))
  picture(i, split="train", size=(W, H)) -> PIL RGB image
  write_pool(dir, n, seed=0, formats=("jpg","png","webp"), dup_exact=None, dup_near=None, split="train")
      -> list of dicts, also written to dir/manifest.json
  special(dir, seed=0) -> {file name: path} of hostile/edge files (SPECIAL_INFO says what each one is)
  url_for(base_url, name) -> URL of a file served from base_url
  url_lists(dir, base_url, entries) -> dict of list paths and expectations, also written to dir/lists.json

Command line
  fixtures.py pool DIR [--n N] [--seed S] [--formats jpg,png,webp] [--dup-exact K] [--dup-near K]
  fixtures.py special DIR [--seed S]
  fixtures.py lists DIR --base-url URL [--pool POOLDIR]
Each prints a JSON summary on stdout.
"""
import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import struct
import sys
import zlib
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageEnhance

DATA_DIR = "/usr/share/datasets/fashion-mnist"

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# Per class: (background top, background bottom, foreground) RGB. The garment (bright in Fashion-MNIST)
# takes the foreground colour, the empty area a vertical background gradient, so every class has its
# own distinct colours and no picture is gray.
CLASS_COLOURS = (
    ((250, 236, 214), (235, 200, 160), (190, 30, 40)),
    ((214, 234, 250), (160, 200, 240), (20, 50, 140)),
    ((226, 250, 214), (180, 225, 160), (30, 120, 40)),
    ((250, 214, 240), (225, 160, 210), (140, 20, 110)),
    ((245, 245, 200), (215, 215, 140), (110, 80, 20)),
    ((210, 250, 245), (150, 220, 215), (10, 110, 120)),
    ((240, 220, 250), (200, 170, 235), (80, 30, 160)),
    ((255, 228, 200), (250, 190, 130), (200, 90, 10)),
    ((236, 226, 252), (190, 170, 240), (30, 60, 20)),
    ((252, 246, 226), (200, 225, 245), (150, 40, 90)),
)

NEAR_TRANSFORMS = ("jpeg_q60", "resize90", "crop90", "hflip", "bright15")

_SAVE_OPTS = {"jpg": {"format": "JPEG", "quality": 90},
              "png": {"format": "PNG"},
              "webp": {"format": "WEBP", "quality": 85, "method": 4},
              "gif": {"format": "GIF"}}

_cache = {}


def _read_idx(path, magic, ndim):
    """Reads one gzip'd idx file: a big-endian u32 magic (0x0803 images, 0x0801 labels), ndim big-endian
    u32 sizes, then the uint8 data in C order. Returns an ndarray of those sizes."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 + 4 * ndim:
        raise ValueError("%s: too short for an idx header" % path)
    m = struct.unpack_from(">I", raw, 0)[0]
    if m != magic:
        raise ValueError("%s: idx magic 0x%08x, expected 0x%08x" % (path, m, magic))
    dims = struct.unpack_from(">%dI" % ndim, raw, 4)
    count = int(np.prod(dims))
    off = 4 + 4 * ndim
    if len(raw) - off != count:
        raise ValueError("%s: %d data bytes, header says %d" % (path, len(raw) - off, count))
    return np.frombuffer(raw, dtype=np.uint8, offset=off).reshape(dims)


def fashion(split="train"):
    """Fashion-MNIST split "train" (60000) or "t10k" (10000): (images uint8 (N,28,28), labels uint8 (N,)),
    labels 0..9 indexing CLASS_NAMES. Parsed from the idx files once per process and cached; the arrays
    are read-only, copy them before changing them."""
    if split not in ("train", "t10k"):
        raise ValueError("split must be 'train' or 't10k', not %r" % (split,))
    if split not in _cache:
        images = _read_idx(os.path.join(DATA_DIR, "%s-images-idx3-ubyte.gz" % split), 0x0803, 3)
        labels = _read_idx(os.path.join(DATA_DIR, "%s-labels-idx1-ubyte.gz" % split), 0x0801, 1)
        if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
            raise ValueError("fashion-mnist %s: images %s vs labels %s" % (split, images.shape, labels.shape))
        _cache[split] = (images, labels)
    return _cache[split]


def picture(i, split="train", size=(28, 28)):
    """Picture i of the split as a PIL RGB image of size (W, H): the 28x28 gray picture upscaled with
    BICUBIC (stretched if size is not square), then coloured with its class's CLASS_COLOURS (background
    gradient where the picture is dark, foreground colour where it is bright)."""
    images, labels = fashion(split)
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ValueError("picture size must be positive, got %r" % (size,))
    gray = Image.fromarray(images[i], "L").resize((w, h), Image.BICUBIC)
    g = np.asarray(gray, dtype=np.float32)[:, :, None] / 255.0            # (H,W,1) in 0..1
    top, bottom, fg = (np.array(c, dtype=np.float32) for c in CLASS_COLOURS[int(labels[i])])
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]          # (H,1,1) row position
    bg = top * (1.0 - t) + bottom * t                                      # (H,1,3)
    rgb = bg * (1.0 - g) + fg * g                                          # (H,W,3)
    return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")


def _encode(img, fmt):
    """img encoded as fmt ("jpg", "png", "webp", "gif") -> bytes."""
    buf = io.BytesIO()
    img.save(buf, **_SAVE_OPTS[fmt])
    return buf.getvalue()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def _sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _random_size(rng, lo=96, hi=640, max_aspect=3.0):
    """(W, H) with both sides in lo..hi: square half the time, otherwise aspect (long/short) <= max_aspect."""
    w = rng.randint(lo, hi)
    if rng.random() < 0.5:
        return (w, w)
    while True:
        h = rng.randint(lo, hi)
        if h != w and max(w, h) / min(w, h) <= max_aspect:
            return (w, h)


def _near(img, transform):
    """The near duplicate of img (RGB) made by transform, one of NEAR_TRANSFORMS."""
    w, h = img.size
    if transform == "jpeg_q60":
        return img
    if transform == "resize90":
        return img.resize((max(1, round(w * 0.9)), max(1, round(h * 0.9))), Image.BICUBIC)
    if transform == "crop90":
        cw, ch = round(w * 0.9), round(h * 0.9)
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        return img.crop((x0, y0, x0 + cw, y0 + ch))
    if transform == "hflip":
        return img.transpose(Image.FLIP_LEFT_RIGHT)
    if transform == "bright15":
        return ImageEnhance.Brightness(img).enhance(1.15)
    raise ValueError("unknown near-duplicate transform %r" % (transform,))


def write_pool(dir, n, seed=0, formats=("jpg", "png", "webp"), dup_exact=None, dup_near=None, split="train"):
    """Writes a pool of n distinct real pictures into dir plus duplicates of some of them, and
    dir/manifest.json holding the returned list.

    Originals: img_NNNNN.<fmt>, formats rotating through `formats`, random Fashion-MNIST pictures of
    `split` (distinct dataset indices), sizes with sides 96..640, half of them non-square with aspect <= 3.
    Exact duplicates (dup_exact of them, default n // 10): copy_NNNN.<fmt>, byte copies of distinct
    originals. Near duplicates (dup_near, default n // 5): near_NNNN_<transform>.<fmt> of distinct
    originals, the transform rotating through NEAR_TRANSFORMS: jpeg_q60 (re-encoded as JPEG q=60, always
    .jpg), resize90, crop90 (centre), hflip, bright15 (brightness x1.15); the others keep the original's
    format. A near duplicate never has its original's bytes.

    Returns one dict per file, originals first: name, path (dir joined with name), sha256 (hex of the
    bytes), format ("jpg"|"png"|"webp"), width, height, label (0..9), kind ("orig"|"exact_dup"|"near_dup"),
    dup_of (name of the original, None for originals), plus index (dataset index in split), split and
    transform (None unless near_dup)."""
    if dup_exact is None:
        dup_exact = n // 10
    if dup_near is None:
        dup_near = n // 5
    if n < 1 or n > len(fashion(split)[1]):
        raise ValueError("n must be 1..%d" % len(fashion(split)[1]))
    if dup_exact > n or dup_near > n or dup_exact < 0 or dup_near < 0:
        raise ValueError("dup_exact and dup_near must be 0..n")
    for f in formats:
        if f not in ("jpg", "png", "webp"):
            raise ValueError("pool format must be jpg, png or webp, not %r" % (f,))
    os.makedirs(dir, exist_ok=True)
    rng = random.Random(seed)
    _, labels = fashion(split)
    indices = rng.sample(range(len(labels)), n)
    out = []
    for k, idx in enumerate(indices):
        fmt = formats[k % len(formats)]
        size = _random_size(rng)
        name = "img_%05d.%s" % (k, fmt)
        path = _write(os.path.join(dir, name), _encode(picture(idx, split, size), fmt))
        out.append({"name": name, "path": path, "sha256": _sha256_file(path), "format": fmt,
                    "width": size[0], "height": size[1], "label": int(labels[idx]), "kind": "orig",
                    "dup_of": None, "index": int(idx), "split": split, "transform": None})
    origs = list(out)
    for k, src in enumerate(rng.sample(origs, dup_exact)):
        name = "copy_%04d.%s" % (k, src["format"])
        path = os.path.join(dir, name)
        shutil.copyfile(src["path"], path)
        out.append(dict(src, name=name, path=path, kind="exact_dup", dup_of=src["name"]))
    for k, src in enumerate(rng.sample(origs, dup_near)):
        transform = NEAR_TRANSFORMS[k % len(NEAR_TRANSFORMS)]
        fmt = "jpg" if transform == "jpeg_q60" else src["format"]
        with Image.open(src["path"]) as im:
            img = _near(im.convert("RGB"), transform)
        data = _encode(img, fmt) if transform != "jpeg_q60" else _encode_jpeg(img, 60)
        name = "near_%04d_%s.%s" % (k, transform, fmt)
        path = _write(os.path.join(dir, name), data)
        sha = _sha256_file(path)
        if sha == src["sha256"]:
            raise AssertionError("near duplicate %s has the bytes of %s" % (name, src["name"]))
        out.append(dict(src, name=name, path=path, sha256=sha, format=fmt, width=img.size[0],
                        height=img.size[1], kind="near_dup", dup_of=src["name"], transform=transform))
    with open(os.path.join(dir, "manifest.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


def _encode_jpeg(img, quality):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png_chunk(kind, data):
    """One PNG chunk: big-endian u32 length, type, data, CRC-32 over type + data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width=50000, height=50000):
    """A tiny PNG (a few hundred bytes) whose IHDR declares width x height 8-bit RGB, with correct CRCs; the
    IDAT holds only the first scanline (filter byte + 3*width zero bytes, deflated), then IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * width), 9)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


# What each special() file is, for tests that check how it is handled. Sizes are (W, H) of the stored
# pixels; "oriented" is the size after applying EXIF orientation.
SPECIAL_INFO = {
    "cmyk.jpg": {"format": "JPEG", "mode": "CMYK", "size": (320, 240), "valid": True},
    "exif_rot6.jpg": {"format": "JPEG", "mode": "RGB", "size": (300, 200), "orientation": 6,
                      "oriented": (200, 300), "valid": True},
    "alpha.png": {"format": "PNG", "mode": "RGBA", "size": (256, 256), "valid": True,
                  "note": "alpha 0 on the picture's background and on the left 64 columns"},
    "palette.png": {"format": "PNG", "mode": "P", "size": (256, 192), "valid": True},
    "gray.png": {"format": "PNG", "mode": "L", "size": (200, 240), "valid": True},
    "bomb.png": {"format": "PNG", "size": (50000, 50000), "valid": False,
                 "note": "IHDR declares 50000x50000 RGB; only one scanline of data; decompression bomb"},
    "truncated.jpg": {"format": "JPEG", "size": (400, 300), "valid": False, "note": "first 50% of the bytes"},
    "truncated.png": {"format": "PNG", "size": (400, 300), "valid": False, "note": "first 50% of the bytes"},
    "truncated.webp": {"format": "WEBP", "size": (400, 300), "valid": False, "note": "first 50% of the bytes"},
    "corrupt.jpg": {"format": "JPEG", "valid": False,
                    "note": "the first 200 bytes of a real JPEG (starting with SOI), then random bytes"},
    "notimage.html": {"format": None, "valid": False, "note": "an HTML page"},
    "tiny.png": {"format": "PNG", "mode": "RGB", "size": (20, 20), "valid": True, "note": "below 64 px"},
    "wide.jpg": {"format": "JPEG", "mode": "RGB", "size": (1000, 100), "valid": True, "note": "aspect 10"},
    "gif.gif": {"format": "GIF", "size": (160, 120), "valid": True, "note": "recognised but unsupported"},
    "big.jpg": {"format": "JPEG", "mode": "RGB", "size": (3000, 2000), "valid": True},
}


def special(dir, seed=0):
    """Writes the hostile and edge-case files of SPECIAL_INFO into dir, each made from a real picture, and
    returns {file name: path}. seed picks the pictures and corrupt.jpg's random bytes."""
    os.makedirs(dir, exist_ok=True)
    rng = random.Random(seed)
    _, labels = fashion("t10k")
    pick = lambda: rng.randrange(len(labels))  # noqa: E731
    files = {}

    def put(name, data):
        files[name] = _write(os.path.join(dir, name), data)

    put("cmyk.jpg", _encode(picture(pick(), "t10k", (320, 240)).convert("CMYK"), "jpg"))

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    buf = io.BytesIO()
    picture(pick(), "t10k", (300, 200)).save(buf, format="JPEG", quality=90, exif=exif)
    put("exif_rot6.jpg", buf.getvalue())

    i = pick()
    rgba = picture(i, "t10k", (256, 256)).convert("RGBA")
    mask = np.asarray(Image.fromarray(fashion("t10k")[0][i], "L").resize((256, 256), Image.BICUBIC))
    alpha = np.where(mask > 24, 255, 0).astype(np.uint8)  # background of the garment is transparent
    alpha[:, :64] = 0
    rgba.putalpha(Image.fromarray(alpha, "L"))
    put("alpha.png", _encode(rgba, "png"))

    put("palette.png", _encode(picture(pick(), "t10k", (256, 192)).convert("P", palette=Image.ADAPTIVE,
                                                                           colors=64), "png"))
    put("gray.png", _encode(picture(pick(), "t10k", (200, 240)).convert("L"), "png"))
    put("bomb.png", bomb_png())

    for fmt in ("jpg", "png", "webp"):
        whole = _encode(picture(pick(), "t10k", (400, 300)), fmt)
        put("truncated." + fmt, whole[:len(whole) // 2])

    whole = _encode(picture(pick(), "t10k", (400, 300)), "jpg")
    put("corrupt.jpg", whole[:200] + bytes(rng.getrandbits(8) for _ in range(len(whole) - 200)))

    put("notimage.html", b"<!DOCTYPE html>\n<html><head><title>Not an image</title></head>\n"
                         b"<body><h1>404 - the picture you wanted is not here</h1>\n"
                         b"<p>This page is served where an image was expected.</p></body></html>\n")
    put("tiny.png", _encode(picture(pick(), "t10k", (20, 20)), "png"))
    put("wide.jpg", _encode(picture(pick(), "t10k", (1000, 100)), "jpg"))
    put("gif.gif", _encode(picture(pick(), "t10k", (160, 120)), "gif"))
    put("big.jpg", _encode(picture(pick(), "t10k", (3000, 2000)), "jpg"))
    return files


def url_for(base_url, name):
    """URL of file `name` under base_url (name percent-encoded, "/" kept)."""
    return base_url.rstrip("/") + "/" + quote(name)


def _entry_rows(base_url, entries):
    """Normalises entries (strings = file names, or dicts with "name" or "url" and optional caption, key,
    label) to dicts url, caption, key, label (all str; caption "" for every 7th entry, k % 7 == 6)."""
    rows = []
    for k, e in enumerate(entries):
        if isinstance(e, str):
            e = {"name": e}
        url = e.get("url") or url_for(base_url, e["name"])
        stem = os.path.splitext(os.path.basename(e.get("name") or url))[0]
        label = e.get("label")
        if "caption" in e:
            caption = e["caption"] or ""
        elif k % 7 == 6:
            caption = ""
        else:
            what = CLASS_NAMES[label] if isinstance(label, int) and 0 <= label < 10 else "picture"
            caption = '%s, a "%s" picture' % (what, stem)  # a comma and quotes exercise csv quoting
        rows.append({"url": url, "caption": caption, "key": str(e.get("key") or "%06d" % k),
                     "label": "" if label is None else str(label)})
    return rows


def _write_text(path, text):
    """Writes text (UTF-8) to path, gzip'd (mtime 0, so bytes are reproducible) if path ends in .gz."""
    data = text.encode("utf-8")
    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return _write(path, data)


def _csv_text(rows, header):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([r[c] for c in header])
    return buf.getvalue()


def url_lists(dir, base_url, entries):
    """Writes the same URL list in every supported format into dir, plus malformed lists, and dir/lists.json.

    entries: file names (str) or dicts such as write_pool() returns ("name", optional "label", "caption",
    "key", or a full "url"). Each becomes url = url_for(base_url, name), key = "%06d" % position unless
    given, caption = '<class name>, a "<stem>" picture' (empty for positions k % 7 == 6) unless given, and
    the extra column label (dataset class, "" if unknown).

    Files: urls.txt (URLs only), urls.csv (header url,caption,key,label; RFC 4180 quoting), urls.tsv (same
    header, fields joined by tabs, no quoting), urls.jsonl (objects with the same four keys), and each of
    those again as <name>.gz. Malformed lists, each a mix of good and bad lines:
      bad.jsonl: unparseable JSON, empty url, "not a url", url with a space, no url key, a blank line;
      bad.csv:   wrong field count, empty url, "not a url", url with a space, an unterminated quote (last);
      bad.txt:   "not a url", url with a space, a blank line.
    Line numbers are 1-based and count the csv header as line 1; blank lines are neither good nor bad.

    Returns {"entries": rows (dicts url, caption, key, label), "urls": [url], "txt", "csv", "tsv", "jsonl",
    "txt.gz", "csv.gz", "tsv.gz", "jsonl.gz": paths, "bad": {"jsonl"|"csv"|"txt": {"path", "bad_lines":
    [line], "good_lines": [line], "good_urls": [url]}}}."""
    os.makedirs(dir, exist_ok=True)
    rows = _entry_rows(base_url, entries)
    if not rows:
        raise ValueError("url_lists needs at least one entry")
    header = ["url", "caption", "key", "label"]
    texts = {
        "txt": "".join(r["url"] + "\n" for r in rows),
        "csv": _csv_text(rows, header),
        "tsv": "\t".join(header) + "\n" + "".join("\t".join(r[c] for c in header) + "\n" for r in rows),
        "jsonl": "".join(json.dumps({c: r[c] for c in header}) + "\n" for r in rows),
    }
    for c in ("caption", "key", "label"):
        if any("\t" in r[c] or "\n" in r[c] for r in rows):
            raise ValueError("a %s holds a tab or newline, which tsv cannot carry" % c)
    out = {"entries": rows, "urls": [r["url"] for r in rows]}
    for ext, text in texts.items():
        out[ext] = _write_text(os.path.join(dir, "urls." + ext), text)
        out[ext + ".gz"] = _write_text(os.path.join(dir, "urls.%s.gz" % ext), text)

    good = [r["url"] for r in rows]
    g = lambda k: good[k % len(good)]  # noqa: E731
    spaced = base_url.rstrip("/") + "/a b.jpg"
    bad = {}

    # (line text, is_bad, good url or None); None text = blank line
    jl = [(json.dumps({"url": g(0), "caption": "good"}), False, g(0)),
          ('{"url": "%s", "caption": "cut off' % g(1), True, None),
          (json.dumps({"url": g(1)}), False, g(1)),
          (json.dumps({"url": "", "caption": "empty url"}), True, None),
          (None, False, None),
          (json.dumps({"url": "not a url"}), True, None),
          (json.dumps({"url": g(2), "key": "k2"}), False, g(2)),
          (json.dumps({"url": spaced}), True, None),
          (json.dumps({"caption": "no url key"}), True, None),
          (json.dumps({"url": g(3)}), False, g(3))]
    bad["jsonl"] = _write_mixed(os.path.join(dir, "bad.jsonl"), jl, header_lines=0)

    cs = [("%s,good,k0" % g(0), False, g(0)),
          ("%s,too,many,fields,here" % g(1), True, None),
          (",empty url,k1", True, None),
          ("%s,good,k2" % g(2), False, g(2)),
          ("not a url,caption,k3", True, None),
          ("%s,space,k4" % spaced, True, None),
          ("%s,\"quoted, fine\",k5" % g(3), False, g(3)),
          ("%s,\"unterminated,k6" % g(4), True, None)]
    bad["csv"] = _write_mixed(os.path.join(dir, "bad.csv"), cs, header_lines=1, header="url,caption,key")

    tx = [(g(0), False, g(0)), ("not a url", True, None), (None, False, None), (spaced, True, None),
          (g(1), False, g(1))]
    bad["txt"] = _write_mixed(os.path.join(dir, "bad.txt"), tx, header_lines=0)
    out["bad"] = bad

    with open(os.path.join(dir, "lists.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


def _write_mixed(path, lines, header_lines, header=None):
    """Writes lines (text or None for a blank line) after an optional header and returns path, bad_lines,
    good_lines and good_urls with 1-based line numbers."""
    text = [] if header is None else [header]
    info = {"path": path, "bad_lines": [], "good_lines": [], "good_urls": []}
    for k, (line, is_bad, url) in enumerate(lines):
        lineno = header_lines + k + 1
        text.append("" if line is None else line)
        if line is None:
            continue
        if is_bad:
            info["bad_lines"].append(lineno)
        else:
            info["good_lines"].append(lineno)
            info["good_urls"].append(url)
    _write_text(path, "\n".join(text) + "\n")
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description="Test and demo images from Fashion-MNIST.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pool", help="write a pool of pictures with duplicates and manifest.json")
    p.add_argument("dir")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--formats", default="jpg,png,webp", help="comma-separated, from jpg,png,webp")
    p.add_argument("--dup-exact", type=int, default=None, help="default n/10")
    p.add_argument("--dup-near", type=int, default=None, help="default n/5")
    p.add_argument("--split", default="train", choices=("train", "t10k"))
    s = sub.add_parser("special", help="write hostile and edge-case files")
    s.add_argument("dir")
    s.add_argument("--seed", type=int, default=0)
    li = sub.add_parser("lists", help="write URL lists (all formats, malformed ones) for served files")
    li.add_argument("dir")
    li.add_argument("--base-url", required=True)
    li.add_argument("--pool", help="a pool directory (its manifest.json gives the files); default DIR")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "pool":
            items = write_pool(a.dir, a.n, a.seed, tuple(f for f in a.formats.split(",") if f),
                               a.dup_exact, a.dup_near, a.split)
            kinds = {}
            for it in items:
                kinds[it["kind"]] = kinds.get(it["kind"], 0) + 1
            summary = {"dir": a.dir, "manifest": os.path.join(a.dir, "manifest.json"), "files": len(items),
                       "kinds": kinds, "distinct_sha256": len({it["sha256"] for it in items})}
        elif a.cmd == "special":
            files = special(a.dir, a.seed)
            summary = {name: dict(SPECIAL_INFO[name], path=path, bytes=os.path.getsize(path))
                       for name, path in files.items()}
        else:
            pool = a.pool or a.dir
            with open(os.path.join(pool, "manifest.json")) as f:
                items = json.load(f)
            res = url_lists(a.dir, a.base_url, items)
            summary = {k: v for k, v in res.items() if k not in ("entries", "urls")}
            summary["entries"] = len(res["entries"])
    except (OSError, ValueError) as e:
        print("fixtures.py: %s" % e, file=sys.stderr)
        return 1
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
