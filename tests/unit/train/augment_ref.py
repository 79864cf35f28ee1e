#!/usr/bin/python3
"""Reference check for tests/unit/train/test_augment.c: applies the parameters the C code used with
torchvision.transforms.functional on PIL images (what DINOv2's DataAugmentationDINO runs) and compares with the
C outputs. Never uses lvd code.

  augment_ref.py check DIR
  augment_ref.py boxes FILE
  augment_ref.py dino DIR

dino: DINOv2's per-sample pipeline (the structure of dinov2/data/augmentations.py: Compose / RandomApply /
RandomGrayscale / RandomSolarize / GaussianBlur of torchvision, blur wrapped as RandomApply(p = 1 - p) as in
dinov2/data/transforms.py) run with torch's generator on DIR/src.raw. The torchvision functions the transforms
call are wrapped to record their arguments, so each crop's drawn parameters are known: they go to DIR/dino.txt
(chain.txt's format, the output naming the crop's float32 tensor) for the C side to apply and compare. Then a
second run on small crop sizes counts how often each crop kind is blurred and solarized.

boxes: FILE has lines "sw sh scale0 scale1 top left height width", many per (sw, sh, scale); for each group
torchvision's RandomResizedCrop.get_params draws as many boxes, and two-sample Kolmogorov-Smirnov tests compare
the area fraction, the aspect ratio and the horizontal and vertical centre of the boxes at level 1e-4; the share
of boxes that are the whole-image fallback is compared as two binomial proportions (5 standard errors).

DIR/ops.txt, one single operation per line:
  NAME OP PARAM IN.raw OUT.raw
    OP: resized_crop (PARAM top,left,height,width,size), flip, brightness, contrast, saturation, hue (PARAM the
    float32 factor), grayscale, blur (PARAM sigma), solarize, to_tensor (OUT is float32 (3, H, W))
DIR/chain.txt, one whole crop per line:
  NAME SRC.raw size top left height width flip ops b c s h gray blur sigma solarize OUT_U8.raw OUT_F32.bin
    ops: the ColorJitter adjustments in order as digits (0 brightness, 1 contrast, 2 saturation, 3 hue), or -
A NAME starting with '!' is a negative control: its C output was made with other parameters than the line
states, and the check must see a mismatch.

A .raw file is u32 LE width, u32 LE height, then width*height*3 bytes of RGB. Prints one summary line per
operation; exits 1 if any comparison is outside its tolerance:
  every operation but the blur: byte-exact; the float tensor within 1e-6 of torchvision's;
  blur: within 1 level, on at most 0.1% of the values: torchvision convolves in float32 in an order the C code
  cannot reproduce, so a value within ~1e-5 of a rounding boundary may round the other way.
"""
import os
import struct
import sys

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BLUR_FRACTION = 1e-3  # share of values allowed to differ by one level after a blur
FLOAT_TOL = 1e-6


def read_raw(path):
    with open(path, "rb") as f:
        w, h = struct.unpack("<II", f.read(8))
        a = np.frombuffer(f.read(), dtype=np.uint8)
    assert a.size == w * h * 3, path
    return a.reshape(h, w, 3)


def read_f32(path, shape):
    a = np.fromfile(path, dtype="<f4")
    assert a.size == int(np.prod(shape)), path
    return a.reshape(shape)


def pil(a):
    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def blur(img, sigma):
    return F.gaussian_blur(img, [9, 9], [sigma, sigma])


def single(op, param, img):
    """The torchvision result of one operation, as a uint8 array (or float32 for to_tensor)."""
    if op == "resized_crop":
        top, left, h, w, size = (int(v) for v in param.split(","))
        out = F.resized_crop(img, top, left, h, w, [size, size], InterpolationMode.BICUBIC)
    elif op == "flip":
        out = F.hflip(img)
    elif op == "brightness":
        out = F.adjust_brightness(img, float(param))
    elif op == "contrast":
        out = F.adjust_contrast(img, float(param))
    elif op == "saturation":
        out = F.adjust_saturation(img, float(param))
    elif op == "hue":
        out = F.adjust_hue(img, float(param))
    elif op == "grayscale":
        out = F.rgb_to_grayscale(img, num_output_channels=3)
    elif op == "blur":
        out = blur(img, float(param))
    elif op == "solarize":
        out = F.solarize(img, 128)
    elif op == "to_tensor":
        return F.normalize(F.to_tensor(img), MEAN, STD).numpy()
    else:
        raise ValueError("unknown op " + op)
    return np.asarray(out)


def chain(img, f):
    """One DINOv2 crop with fixed parameters: f holds the fields of a chain.txt line after SRC."""
    size, top, left, height, width, flip = (int(v) for v in f[0:6])
    ops, b, c, s, h = f[6], float(f[7]), float(f[8]), float(f[9]), float(f[10])
    gray, do_blur, sigma, solarize = int(f[11]), int(f[12]), float(f[13]), int(f[14])
    img = F.resized_crop(img, top, left, height, width, [size, size], InterpolationMode.BICUBIC)
    if flip:
        img = F.hflip(img)
    for op in "" if ops == "-" else ops:
        if op == "0":
            img = F.adjust_brightness(img, b)
        elif op == "1":
            img = F.adjust_contrast(img, c)
        elif op == "2":
            img = F.adjust_saturation(img, s)
        else:
            img = F.adjust_hue(img, h)
    if gray:
        img = F.rgb_to_grayscale(img, num_output_channels=3)
    if do_blur:
        img = blur(img, sigma)
    if solarize:
        img = F.solarize(img, 128)
    u8 = np.asarray(img)
    ten = F.normalize(F.to_tensor(img), MEAN, STD).numpy()
    return u8, ten, do_blur


def compare_u8(got, want, blurred):
    """(ok, max abs diff, values differing)."""
    if got.shape != want.shape:
        return False, -1, -1
    d = np.abs(got.astype(np.int16) - want.astype(np.int16))
    mx, n = int(d.max()), int(np.count_nonzero(d))
    if blurred:
        return mx <= 1 and n <= BLUR_FRACTION * d.size, mx, n
    return mx == 0, mx, n


def compare_f32(got, want, u8_got, u8_want):
    """Float tensors: within FLOAT_TOL where the bytes agree; where a blur left a byte 1 away, within one
    level's step (1 / 255 / std)."""
    same = np.transpose(u8_got == u8_want, (2, 0, 1))
    d = np.abs(got.astype(np.float64) - want.astype(np.float64))
    mx_same = float(d[same].max()) if same.any() else 0.0
    mx_other = float(d[~same].max()) if (~same).any() else 0.0
    ok = mx_same <= FLOAT_TOL and mx_other <= 1.0 / 255.0 / min(STD) + FLOAT_TOL
    return ok, mx_same


class Summary:
    def __init__(self):
        self.rows = {}
        self.failures = []

    def add(self, key, name, ok, mx, n, total, negative):
        r = self.rows.setdefault(key, [0, 0, 0, 0])  # cases, max diff, differing values, values
        r[0] += 1
        r[1] = max(r[1], mx)
        r[2] += max(n, 0)
        r[3] += total
        if negative:
            if ok:
                self.failures.append("%s: negative control not detected" % name)
        elif not ok:
            self.failures.append("%s: max diff %s, %d of %d values differ" % (name, mx, n, total))


def ks_two_sample(a, b):
    """The Kolmogorov-Smirnov statistic D = sup |F_a - F_b| and its critical value at level 1e-4."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    d = np.max(np.abs(np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size))
    n, m = a.size, b.size
    crit = np.sqrt(-np.log(1e-4 / 2) / 2) * np.sqrt((n + m) / (n * m))
    return d, crit


def boxes(path):
    rows = np.loadtxt(path, ndmin=2)
    torch.manual_seed(0)
    failures = []
    for key in sorted({tuple(r[:4]) for r in rows}):
        sw, sh, s0, s1 = int(key[0]), int(key[1]), key[2], key[3]
        ours = rows[np.all(rows[:, :4] == key, axis=1)][:, 4:]
        img = torch.empty(1, sh, sw)
        theirs = np.array([T.RandomResizedCrop.get_params(img, [s0, s1], [3.0 / 4.0, 4.0 / 3.0])
                           for _ in range(len(ours))], dtype=np.float64)
        feats = {}
        for name, b in (("ours", ours), ("theirs", theirs)):
            top, left, h, w = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
            feats[name] = {"area": h * w / (sw * sh), "aspect": w / h, "cx": (left + w / 2) / sw,
                           "cy": (top + h / 2) / sh}
            fb_w, fb_h = sw, sh  # the fallback box: the whole image clamped to the ratio range
            if sw / sh < 0.75:
                fb_h = int(round(sw / 0.75))
            elif sw / sh > 4.0 / 3.0:
                fb_w = int(round(sh * 4.0 / 3.0))
            feats[name]["fallback"] = np.mean((w == fb_w) & (h == fb_h) & (top == (sh - fb_h) // 2)
                                              & (left == (sw - fb_w) // 2))
        line = "boxes %dx%d scale (%g, %g), %d each:" % (sw, sh, s0, s1, len(ours))
        for f in ("area", "aspect", "cx", "cy"):
            dd, crit = ks_two_sample(feats["ours"][f], feats["theirs"][f])
            line += " %s D %.4f" % (f, dd)
            if dd > crit:
                failures.append("%dx%d %s: KS D %.4f above %.4f" % (sw, sh, f, dd, crit))
        p1, p2, n = feats["ours"]["fallback"], feats["theirs"]["fallback"], len(ours)
        pp = (p1 + p2) / 2
        se = np.sqrt(max(pp * (1 - pp), 1e-12) * 2 / n)
        line += " (crit %.4f); fallback %.4f vs %.4f" % (crit, p1, p2)
        if abs(p1 - p2) > 5 * se + 1e-9:
            failures.append("%dx%d fallback share %.4f vs torchvision's %.4f" % (sw, sh, p1, p2))
        print(line)
    for msg in failures:
        print("FAIL " + msg)
    sys.exit(1 if failures else 0)


class Recorder:
    """Wraps the torchvision functions the transform classes call and records each crop's parameters."""

    def __init__(self):
        self.p = None
        import torchvision.transforms.transforms as tt
        self.tt = tt
        orig = {n: getattr(tt.F, n) for n in ("resized_crop", "hflip", "adjust_brightness", "adjust_contrast",
                                              "adjust_saturation", "adjust_hue", "rgb_to_grayscale",
                                              "gaussian_blur", "solarize")}
        rec = self

        def resized_crop(img, top, left, height, width, size, *a, **k):
            rec.p = {"size": size[0], "box": (top, left, height, width), "flip": 0, "ops": "", "f": [1.0, 1.0, 1.0, 0.0],
                     "gray": 0, "blur": 0, "sigma": 0.0, "solarize": 0}
            return orig["resized_crop"](img, top, left, height, width, size, *a, **k)

        def hflip(img):
            rec.p["flip"] = 1
            return orig["hflip"](img)

        def adjust(i, name):
            def fn(img, factor):
                rec.p["ops"] += str(i)
                rec.p["f"][i] = factor
                return orig[name](img, factor)
            return fn

        def gray(img, num_output_channels=1):
            rec.p["gray"] = 1
            return orig["rgb_to_grayscale"](img, num_output_channels)

        def blur(img, kernel_size, sigma=None):
            assert list(kernel_size) == [9, 9] and sigma[0] == sigma[1]
            rec.p["blur"], rec.p["sigma"] = 1, sigma[0]
            return orig["gaussian_blur"](img, kernel_size, sigma)

        def solarize(img, threshold):
            assert threshold == 128
            rec.p["solarize"] = 1
            return orig["solarize"](img, threshold)

        wrapped = {"resized_crop": resized_crop, "hflip": hflip, "adjust_brightness": adjust(0, "adjust_brightness"),
                   "adjust_contrast": adjust(1, "adjust_contrast"), "adjust_saturation": adjust(2, "adjust_saturation"),
                   "adjust_hue": adjust(3, "adjust_hue"), "rgb_to_grayscale": gray, "gaussian_blur": blur,
                   "solarize": solarize}
        for n, fn in wrapped.items():
            setattr(tt.F, n, fn)


def dino_blur(p):
    """dinov2/data/transforms.py's GaussianBlur(p): RandomApply(GaussianBlur(9, (0.1, 2.0)), p = 1 - p)."""
    return T.RandomApply([T.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))], p=1 - p)


def dino_transforms(gsize, lsize, paper):
    """Per crop kind, the transform DataAugmentationDINO applies (paper: the blur probabilities the paper and
    augmentations.py state, applied as written instead of through dino_blur's inversion)."""
    blur = (lambda p: T.RandomApply([T.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))], p=p)) if paper else dino_blur
    geo = lambda size, scale: T.Compose([T.RandomResizedCrop(size, scale=scale, interpolation=InterpolationMode.BICUBIC),
                                         T.RandomHorizontalFlip(p=0.5)])
    color = T.Compose([T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
                       T.RandomGrayscale(p=0.2)])
    norm = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    g1 = T.Compose([geo(gsize, (0.32, 1.0)), color, blur(1.0), norm])
    g2 = T.Compose([geo(gsize, (0.32, 1.0)), color, blur(0.1), T.RandomSolarize(threshold=128, p=0.2), norm])
    loc = T.Compose([geo(lsize, (0.05, 0.32)), color, blur(0.5), norm])
    return g1, g2, loc


def dino(d):
    torch.set_num_threads(1)
    torch.manual_seed(13)
    rec = Recorder()
    img = pil(read_raw(os.path.join(d, "src.raw")))
    g1, g2, loc = dino_transforms(224, 96, False)
    with open(os.path.join(d, "dino.txt"), "w") as f:
        for s in range(3):
            for k in range(10):
                ten = (g1 if k == 0 else g2 if k == 1 else loc)(img).numpy()
                p = rec.p
                name = "dino_s%d_c%d" % (s, k)
                ten.astype("<f4").tofile(os.path.join(d, name + ".f32"))
                f.write("%s src.raw %d %d %d %d %d %d %s %r %r %r %r %d %d %r %d - %s.f32\n" % (
                    name, p["size"], *p["box"], p["flip"], p["ops"] or "-", *p["f"], p["gray"], p["blur"],
                    p["sigma"], p["solarize"], name))
    # How often each kind of crop is blurred / solarized by the pipeline as released, and as the paper states.
    small = img.resize((48, 40))
    for paper in (False, True):
        ts = dino_transforms(16, 8, paper)
        n = 1000
        counts = [[0, 0], [0, 0], [0, 0]]
        for _ in range(n):
            for k, t in enumerate(ts):
                t(small)
                counts[k][0] += rec.p["blur"]
                counts[k][1] += rec.p["solarize"]
        # "rates SETTING N BLUR_GLOBAL1 BLUR_GLOBAL2 BLUR_LOCAL SOLARIZE_GLOBAL1 SOLARIZE_GLOBAL2 SOLARIZE_LOCAL"
        print("rates %s %d %d %d %d %d %d %d" % ("paper" if paper else "released", n, counts[0][0], counts[1][0],
                                                counts[2][0], counts[0][1], counts[1][1], counts[2][1]))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "boxes":
        return boxes(sys.argv[2])
    if len(sys.argv) == 3 and sys.argv[1] == "dino":
        return dino(sys.argv[2])
    if len(sys.argv) != 3 or sys.argv[1] != "check":
        sys.exit(__doc__)
    d = sys.argv[2]
    torch.set_num_threads(1)
    summ = Summary()
    negatives = 0
    with open(os.path.join(d, "ops.txt")) as f:
        for line in f:
            name, op, param, src, out = line.split()
            neg = name.startswith("!")
            negatives += neg
            img = pil(read_raw(os.path.join(d, src)))
            want = single(op, param, img)
            if op == "to_tensor":
                got = read_f32(os.path.join(d, out), want.shape)
                mx = float(np.abs(got.astype(np.float64) - want).max())
                summ.add(op, name, mx <= FLOAT_TOL, mx, int(np.count_nonzero(got != want)), got.size, neg)
                continue
            got = read_raw(os.path.join(d, out))
            ok, mx, n = compare_u8(got, want, op == "blur")
            summ.add("neg" if neg else op, name, ok, mx, n, want.size, neg)
    with open(os.path.join(d, "chain.txt")) as f:
        for line in f:
            fields = line.split()
            name, src = fields[0], fields[1]
            neg = name.startswith("!")
            negatives += neg
            u8_want, ten_want, blurred = chain(pil(read_raw(os.path.join(d, src))), fields[2:17])
            u8_got = read_raw(os.path.join(d, fields[17]))
            ok, mx, n = compare_u8(u8_got, u8_want, blurred)
            key = "neg" if neg else "chain" + ("+blur" if blurred else "")
            summ.add(key, name, ok, mx, n, u8_want.size, neg)
            if u8_got.shape == u8_want.shape and not neg:
                ten_got = read_f32(os.path.join(d, fields[18]), ten_want.shape)
                fok, fmx = compare_f32(ten_got, ten_want, u8_got, u8_want)
                summ.add("tensor", name + " tensor", fok, fmx, 0, ten_want.size, False)
    for key, (cases, mx, n, total) in summ.rows.items():
        print("%-13s %3d cases, max diff %-10.3g %d of %d values differ" % (key, cases, mx, n, total))
    print("%d negative controls" % negatives)
    for msg in summ.failures:
        print("FAIL " + msg)
    sys.exit(1 if summ.failures else 0)


if __name__ == "__main__":
    main()
