#!/usr/bin/python3
"""Converts an official DINOv2 PyTorch checkpoint (.pth) to safetensors with the official key names (F32).

Accepted inputs:
  - a hub backbone state dict (dinov2_vits14_pretrain.pth, ..._reg4_pretrain.pth): {"cls_token": ..., ...};
  - a training checkpoint's teacher (teacher_checkpoint.pth): {"teacher": {"backbone.cls_token": ..., "dino_head.*",
    "ibot_head.*"}}; the "backbone." prefix is removed and the head tensors dropped unless --keep-heads;
  - a full training checkpoint {"model": {"teacher.backbone.*", "student.*", ...}} (the teacher is taken);
  - any of these under "state_dict", or with a DDP "module." prefix.
Chunked blocks (block_chunks > 0), saved as blocks.{chunk}.{i}.x with the global block index i, become
blocks.{i}.x. Metadata: heads (--heads, else dim / 64, as in every released model) and pos_mode (--pos-mode, else
size_aa when register_tokens are present, offset otherwise), which lvd's loader reads (common/vit_io.h).

Needs PyTorch to read the .pth; the safetensors file is written with the standard library and numpy.

usage: convert_checkpoint.py IN.pth OUT.safetensors [--heads N] [--pos-mode offset|size_aa] [--keep-heads]
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np

HEAD_PREFIXES = ("dino_head.", "ibot_head.")
CHUNK_RE = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)$")


class ConvertError(Exception):
    pass


def find_state_dict(obj):
    """The backbone (plus heads) state dict inside a loaded .pth object."""
    import torch
    if not isinstance(obj, dict):
        raise ConvertError("the file holds a %s, not a state dict" % type(obj).__name__)
    if "state_dict" in obj and isinstance(obj["state_dict"], dict) and "cls_token" not in obj:
        obj = obj["state_dict"]
    if "teacher" in obj and isinstance(obj["teacher"], dict):
        return obj["teacher"]
    if "model" in obj and isinstance(obj["model"], dict):
        m = obj["model"]
        if any(k.startswith("teacher.") for k in m):
            return {k[len("teacher."):]: v for k, v in m.items() if k.startswith("teacher.")}
        return m
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ConvertError("no state dict found (top-level keys: %s)" % ", ".join(sorted(map(str, obj))[:10]))


def backbone_tensors(sd, keep_heads):
    """[(official name, tensor)] in state-dict order: prefixes removed, chunks flattened, heads handled."""
    import torch
    items = []
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module."):]
        items.append((k, v))
    has_backbone = any(k.startswith("backbone.") for k, _ in items)
    out, seen, stray = [], {}, []
    for k, v in items:
        if not isinstance(v, torch.Tensor):
            raise ConvertError("entry %s is a %s, not a tensor" % (k, type(v).__name__))
        if k.startswith(HEAD_PREFIXES):
            if keep_heads:
                out.append((k, v))
            continue
        if has_backbone:
            if not k.startswith("backbone."):
                stray.append(k)
                continue
            k = k[len("backbone."):]
        m = CHUNK_RE.match(k)
        if m:
            k = "blocks.%s.%s" % (m.group(2), m.group(3))
        if k in seen:
            raise ConvertError("tensor %s appears twice after flattening block chunks" % k)
        seen[k] = True
        out.append((k, v))
    if stray:
        raise ConvertError("keys outside backbone./dino_head./ibot_head.: %s" % ", ".join(stray[:10]))
    if "cls_token" not in seen:
        raise ConvertError("no cls_token: not a DINOv2 backbone")
    return out


def write_safetensors(path, tensors, meta):
    """tensors: [(name, numpy float32 array)]. F32, 8-byte aligned header, written via a temporary file."""
    header = {"__metadata__": meta}
    off = 0
    blobs = []
    for name, arr in tensors:
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for b in blobs:
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def convert(src, dst, heads=None, pos_mode=None, keep_heads=False):
    import torch
    try:
        obj = torch.load(src, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise ConvertError("cannot read %s: %s" % (src, e))
    tensors = backbone_tensors(find_state_dict(obj), keep_heads)
    names = dict(tensors)
    dim = int(names["cls_token"].shape[-1])
    if heads is None:
        if dim < 64 or dim % 64 != 0:
            raise ConvertError("dim %d is not a multiple of 64: pass --heads" % dim)
        heads = dim // 64
    if heads <= 0 or dim % heads != 0:
        raise ConvertError("heads %d does not divide dim %d" % (heads, dim))
    if pos_mode is None:
        pos_mode = "size_aa" if "register_tokens" in names else "offset"
    meta = {"format": "lvd-vit", "heads": str(heads), "pos_mode": pos_mode, "source": os.path.basename(src)}
    arrays = [(k, v.detach().to(torch.float32).contiguous().numpy()) for k, v in tensors]
    write_safetensors(dst, arrays, meta)
    depth = len({k.split(".")[1] for k in names if k.startswith("blocks.")})
    return {"tensors": len(arrays), "dim": dim, "depth": depth, "heads": heads, "pos_mode": pos_mode}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Official DINOv2 .pth -> safetensors (F32, official key names).")
    ap.add_argument("src", help="input .pth (hub backbone or training checkpoint)")
    ap.add_argument("dst", help="output .safetensors")
    ap.add_argument("--heads", type=int, help="attention heads (default: dim / 64)")
    ap.add_argument("--pos-mode", choices=["offset", "size_aa"],
                    help="positional-embedding resampling (default: size_aa with registers, else offset)")
    ap.add_argument("--keep-heads", action="store_true", help="keep dino_head.* / ibot_head.* tensors")
    a = ap.parse_args(argv)
    try:
        info = convert(a.src, a.dst, a.heads, a.pos_mode, a.keep_heads)
    except ConvertError as e:
        print("convert_checkpoint: %s: %s" % (a.src, e), file=sys.stderr)
        return 1
    print("wrote %s: %d tensors, dim %d, depth %d, heads %d, pos_mode %s" %
          (a.dst, info["tensors"], info["dim"], info["depth"], info["heads"], info["pos_mode"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
