#!/usr/bin/python3
"""Reference fixtures for tests/unit/common/test_image.c, produced with Pillow and numpy (never with lvd code).

  image_ref.py gen DIR          writes input images and their expected decodes / resizes / hashes into DIR
  image_ref.py decode IN OUT    writes Pillow's RGB decode of IN as a .raw file

A .raw file is u32 LE width, u32 LE height, then width*height*3 bytes of RGB.
"""
import gzip
import io
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image, ImageOps

BICUBIC = Image.Resampling.BICUBIC
LANCZOS = Image.Resampling.LANCZOS
FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
FASHION_LABELS = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"


def write_raw(path, im):
    im = im.convert("RGB")
    with open(path, "wb") as f:
        f.write(struct.pack("<II", im.width, im.height))
        f.write(im.tobytes())


def write_raw_array(path, arr):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack("<II", arr.shape[1], arr.shape[0]))
        f.write(arr.tobytes())


def synth(w, h, seed):
    """A deterministic photo-like RGB picture: smooth colour fields, a few discs and bars, mild noise."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.005, 0.05), rng.uniform(0.005, 0.05), rng.uniform(0, 6.28)
        img[..., c] = 128 + 90 * np.sin(x * fx * 6.28 / 4 + ph) * np.cos(y * fy * 6.28 / 4 - ph)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.3) * min(w, h)
        col = rng.uniform(0, 255, 3)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        img[mask] = col
    x0, x1 = sorted(rng.randint(0, w, 2))
    img[:, x0:x1 + 1] = img[:, x0:x1 + 1] * 0.4
    img += rng.normal(0, 3, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def on_white(im):
    """Pillow's alpha_composite of an RGBA picture over opaque white, as RGB."""
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width, height, depth, color_type, raw_rows):
    """A PNG written from the specification: signature, IHDR, one IDAT of filter-0 rows, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw_rows))
            + png_chunk(b"IEND", b""))


def jpeg_with_app1(jpeg, payload):
    """Inserts an APP1 segment with the given payload right after SOI."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def load_fashion(n_wanted):
    """n_wanted pictures of distinct Fashion-MNIST classes (28x28 grey), or None if the package is absent."""
    if not (os.path.exists(FASHION) and os.path.exists(FASHION_LABELS)):
        return None
    with gzip.open(FASHION) as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 0x803
        data = np.frombuffer(f.read(n * rows * cols), np.uint8).reshape(n, rows, cols)
    with gzip.open(FASHION_LABELS) as f:
        magic, n2 = struct.unpack(">II", f.read(8))
        assert magic == 0x801 and n2 == n
        labels = np.frombuffer(f.read(n2), np.uint8)
    out, seen = [], set()
    for i in range(n):
        if labels[i] not in seen:
            seen.add(labels[i])
            out.append(data[i])
        if len(out) == n_wanted:
            break
    return out


def ref_phash(im):
    """imagehash.phash: L, Lanczos ("ANTIALIAS") to 32x32, DCT-II over axis 0 then 1, 8x8, > median."""
    try:
        import imagehash  # noqa: F401  (preferred when installed)
        return int(str(imagehash.phash(im)), 16)
    except ImportError:
        pass
    g = np.asarray(im.convert("L").resize((32, 32), LANCZOS), dtype=np.float64)
    n = np.arange(32)
    c = 2.0 * np.cos(np.pi * n[:, None] * (2 * n[None, :] + 1) / 64.0)  # c[k, n]: scipy's unnormalised DCT-II
    d = (c @ g) @ c.T
    low = d[:8, :8]
    bits = (low > np.median(low)).flatten()
    h = 0
    for b in bits:
        h = (h << 1) | int(b)
    return h


def gen(d):
    j = lambda name: os.path.join(d, name)  # noqa: E731
    base = synth(96, 64, 1)

    # --- sniffing: every format Pillow writes
    base.save(j("sniff.jpg"), quality=90)
    base.save(j("sniff.png"))
    base.save(j("sniff.webp"), quality=80)
    base.save(j("sniff.gif"))
    base.save(j("sniff.tif"))
    base.save(j("sniff.bmp"))
    base.save(j("sniff.ico"), sizes=[(32, 32)])

    # Pillow's own round trip at quality 95: the yardstick for our encoders (4:2:0 chroma and lossy WebP
    # lose a lot on this picture's saturated edges, whoever encodes)
    for fmt, ext in (("JPEG", "jpg"), ("WEBP", "webp")):
        buf = io.BytesIO()
        base.save(buf, fmt, quality=95)
        write_raw(j("enc_pil95_%s.raw" % ext), Image.open(buf))

    # --- JPEG decodes
    base.save(j("jpeg_rgb.jpg"), quality=90)
    write_raw(j("jpeg_rgb.raw"), Image.open(j("jpeg_rgb.jpg")))
    base.save(j("jpeg_prog.jpg"), quality=90, progressive=True)
    write_raw(j("jpeg_prog.raw"), Image.open(j("jpeg_prog.jpg")))
    base.convert("L").save(j("jpeg_gray.jpg"), quality=90)
    write_raw(j("jpeg_gray.raw"), Image.open(j("jpeg_gray.jpg")))
    base.convert("CMYK").save(j("jpeg_cmyk.jpg"), quality=95)
    write_raw(j("jpeg_cmyk.raw"), Image.open(j("jpeg_cmyk.jpg")))

    # --- PNG decodes
    base.save(j("png_rgb.png"))
    write_raw(j("png_rgb.raw"), base)
    rgba = base.convert("RGBA")
    a = np.asarray(synth(96, 64, 7).convert("L"))
    rgba.putalpha(Image.fromarray(a))
    rgba.save(j("png_rgba.png"))
    write_raw(j("png_rgba.raw"), on_white(rgba))
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.save(j("png_p.png"))
    write_raw(j("png_p.raw"), Image.open(j("png_p.png")))
    pal.save(j("png_ptrns.png"), transparency=3)
    write_raw(j("png_ptrns.raw"), on_white(Image.open(j("png_ptrns.png")).convert("RGBA")))
    base.convert("L").save(j("png_l.png"))
    write_raw(j("png_l.raw"), Image.open(j("png_l.png")))
    rng = np.random.RandomState(3)
    a16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257 + rng.randint(0, 257, (64, 96))).astype(np.uint16)
    Image.fromarray(a16).save(j("png_i16.png"))  # mode I;16
    assert Image.open(j("png_i16.png")).mode.startswith("I")
    g8 = (a16 >> 8).astype(np.uint8)
    write_raw_array(j("png_i16.raw"), np.stack([g8, g8, g8], axis=2))
    rgb16 = np.asarray(base, dtype=np.uint16) * 257 + rng.randint(0, 257, (64, 96, 3)).astype(np.uint16)
    rows = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(64))
    with open(j("png_rgb16.png"), "wb") as f:
        f.write(png_bytes(96, 64, 16, 2, rows))
    write_raw_array(j("png_rgb16.raw"), (rgb16 >> 8).astype(np.uint8))

    # --- WebP decodes
    base.save(j("webp_lossy.webp"), quality=80)
    write_raw(j("webp_lossy.raw"), Image.open(j("webp_lossy.webp")))
    base.save(j("webp_lossless.webp"), lossless=True)
    write_raw(j("webp_lossless.raw"), base)
    rgba.save(j("webp_alpha.webp"), lossless=True)
    write_raw(j("webp_alpha.raw"), on_white(rgba))

    # --- EXIF orientation: stored 48x32, expected = Pillow's exif_transpose of the same file
    small = synth(48, 32, 11)
    for o in range(1, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        small.save(j("exif_%d.jpg" % o), quality=92, exif=ex.tobytes())
        write_raw(j("exif_%d.raw" % o), ImageOps.exif_transpose(Image.open(j("exif_%d.jpg" % o))))
    # big-endian TIFF header variant (Pillow writes little-endian)
    plain = io.BytesIO()
    small.save(plain, "JPEG", quality=92)
    mm = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01" + b"\x01\x12\0\x03\0\0\0\x01\0\x06\0\0" + b"\0\0\0\0"
    with open(j("exif_mm6.jpg"), "wb") as f:
        f.write(jpeg_with_app1(plain.getvalue(), mm))
    write_raw(j("exif_mm6.raw"), ImageOps.exif_transpose(Image.open(j("exif_mm6.jpg"))))

    # --- hostile EXIF: each must decode as orientation 1 (= the plain decode)
    write_raw(j("hostile.raw"), Image.open(plain))
    hostile = [
        b"Exif\0\0II\x2a\0\xf0\xff\xff\xff",                               # IFD0 offset far past the end
        b"Exif\0\0II\x2a\0\x08\0\0\0\xff\xff" + b"\x12\x01\x03\0\x01\0\0\0\x06",  # count 65535, entry cut short
        b"Exif\0\0MM\0\x2a\0\0\0\x08\xff\xff" + b"\x01\x12\0\x03\0\0\0\x01\0",    # same, big-endian
        b"Exif\0\0II\x2a\0\x02\0\0\0",                                     # IFD0 inside the TIFF header
        b"Exif\0\0XX\x2a\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0",  # bad byte order mark
        b"Exif\0\0II",                                                     # TIFF header cut short
        b"Exif\0\0II\x2a\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x09\0\0\0",  # orientation 9 (invalid)
    ]
    for i, payload in enumerate(hostile):
        with open(j("hostile_%d.jpg" % i), "wb") as f:
            f.write(jpeg_with_app1(plain.getvalue(), payload))

    # --- DCT scaling: 1600x1200, expected 1/8 decode = Pillow's draft() (same libjpeg scaling)
    big = synth(1600, 1200, 5)
    big.save(j("big.jpg"), quality=90)
    im = Image.open(j("big.jpg"))
    im.draft("RGB", (200, 150))
    assert im.size == (200, 150)
    write_raw(j("big_8.raw"), im)
    # 5/8 has no Pillow draft(); the reference is Pillow's full decode resized to the 5/8 size.
    write_raw(j("big_5of8.raw"), Image.open(j("big.jpg")).convert("RGB").resize((1000, 750), Image.BICUBIC))
    ex = Image.Exif()
    ex[0x0112] = 6
    big.save(j("big_o6.jpg"), quality=90, exif=ex.tobytes())

    # --- decompression bombs: headers declaring huge sizes over a few bytes of data
    with open(j("bomb.png"), "wb") as f:
        f.write(png_bytes(50000, 50000, 8, 2, b"\x00" * 64))
    jb = bytearray(open(j("jpeg_rgb.jpg"), "rb").read())
    sof = jb.find(b"\xff\xc0")
    assert sof > 0
    jb[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    open(j("bomb.jpg"), "wb").write(bytes(jb))
    wb = bytearray(open(j("webp_lossless.webp"), "rb").read())
    assert wb[12:16] == b"VP8L" and wb[20] == 0x2F
    v = int.from_bytes(wb[21:25], "little")
    v = (v & ~((1 << 28) - 1)) | 16383 | (16383 << 14)  # 16384 x 16384
    wb[21:25] = v.to_bytes(4, "little")
    open(j("bomb.webp"), "wb").write(bytes(wb))

    # --- resampling against Image.resize(..., BICUBIC)
    src = synth(200, 150, 9)
    src.save(j("rsrc.png"))
    for name, size in [("down2", (100, 75)), ("down73", (round(200 / 7.3), round(150 / 7.3))),
                       ("up2", (400, 300)), ("honly", (77, 150)), ("vonly", (200, 41))]:
        write_raw(j("r_%s.raw" % name), src.resize(size, BICUBIC))
    # center_crop 64 as img2dataset does it: shorter side 64, then the centred 64x64 window
    rw = round(200 * 64 / 150)
    left = (rw - 64) // 2
    write_raw(j("r_plan.raw"), src.resize((rw, 64), BICUBIC).crop((left, 0, left + 64, 64)))

    # --- perceptual hash: 10 unrelated pictures, each also re-encoded as JPEG q=70
    fashion = load_fashion(6)
    pics = []
    if fashion is not None:
        for g in fashion:
            pics.append(Image.fromarray(g, "L").resize((112, 112), BICUBIC).convert("RGB"))
    else:
        open(j("fashion_missing"), "w").write(FASHION + "\n")
    seed = 100
    while len(pics) < 10:
        pics.append(synth(160, 120, seed))
        seed += 1
    with open(j("ph_ref.txt"), "w") as f:
        for i, p in enumerate(pics):
            p.save(j("ph_%d.png" % i))
            p.save(j("ph_%d_q70.jpg" % i), quality=70)
            f.write("ph_%d.png %016x\n" % (i, ref_phash(Image.open(j("ph_%d.png" % i)))))
            f.write("ph_%d_q70.jpg %016x\n" % (i, ref_phash(Image.open(j("ph_%d_q70.jpg" % i)))))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "gen":
        gen(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "decode":
        write_raw(sys.argv[3], Image.open(sys.argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
