"""Checks an engine-written checkpoint and forward output against the PyTorch reference.

    /usr/bin/python3 tests/reference/check_checkpoint.py MODEL.safetensors INPUTS.safetensors \
        OUTPUT.safetensors [--tol 1e-4]

MODEL is loaded strictly (format and config from its metadata; every model.md tensor present, F32,
with its shape; no extra tensors). The reference forward runs in float64 on INPUTS' x, t, tokens and
is compared with OUTPUT's `v`: max_rel_err = max|v_engine - v_ref| / max|v_ref|.
Exit status: 0 when max_rel_err <= tol, 1 when above, 2 when a file is missing or malformed.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dit  # noqa: E402
import safetensors_io  # noqa: E402


def fail(msg):
    print(f"check_checkpoint: {msg}", file=sys.stderr)
    sys.exit(2)


def need(tensors, path, name, shape, kinds):
    """tensors[name], checked for presence, shape and dtype kind ('f' float, 'i' integer)."""
    if name not in tensors:
        fail(f"{path}: missing tensor {name!r}")
    arr = tensors[name]
    if list(arr.shape) != list(shape) or arr.dtype.kind not in kinds:
        fail(f"{path}: tensor {name!r} is {arr.dtype} {list(arr.shape)}, expected {list(shape)}")
    return arr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("inputs")
    ap.add_argument("output")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    try:
        model, _ = dit.load_checkpoint(args.model, dtype=torch.float64)
        inputs, _ = safetensors_io.read(args.inputs)
        output, _ = safetensors_io.read(args.output)
    except (OSError, ValueError) as e:  # SafetensorsError is a ValueError
        fail(str(e))

    cfg = model.cfg
    S, C = cfg["image_size"], cfg["channels"]
    B = inputs["x"].shape[0] if "x" in inputs and inputs["x"].ndim == 4 else 1  # batch from x
    x = need(inputs, args.inputs, "x", [B, S, S, C], "f")
    t = need(inputs, args.inputs, "t", [B], "f")
    tokens = need(inputs, args.inputs, "tokens", [B, cfg["text_len"]], "i")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= cfg["vocab_size"]):
        fail(f"{args.inputs}: token ids outside [0, {cfg['vocab_size']})")
    v = need(output, args.output, "v", [B, S, S, C], "f").astype(np.float64)

    with torch.no_grad():
        ref = model(torch.from_numpy(x).double(), torch.from_numpy(t).double(),
                    torch.from_numpy(tokens.astype(np.int64))).numpy()
    if not np.all(np.isfinite(v)):
        print("max_rel_err=nan (engine output has non-finite values)")
        sys.exit(1)
    err = float(np.abs(v - ref).max() / max(np.abs(ref).max(), 1e-30))
    print(f"max_rel_err={err:.3e}")
    sys.exit(0 if err <= args.tol else 1)


if __name__ == "__main__":
    main()
