"""Writes the engine test fixtures for the `tiny` config (deterministic: same bytes on every run).

    /usr/bin/python3 tests/reference/make_fixtures.py --out tests/reference/fixtures

tiny_model.safetensors     every weight (F32, model.md order) + metadata format/config/vocab
tiny_inputs.safetensors    x [3,16,16,3], t [3], tokens I32 [3,8], dv [3,16,16,3]
tiny_expected.safetensors  v = model(x, t, tokens) and grad.<P> = d sum(v*dv) / dP for every
                           parameter P, computed in float64 and stored as F32

The weights are random and non-zero everywhere (adaLN-Zero init would make the blocks the identity
and hide bugs in ada, the gates, attention and the MLP), scaled so activations stay O(1).
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dit  # noqa: E402
import safetensors_io  # noqa: E402

TINY = {"image_size": 16, "channels": 3, "patch": 4, "dim": 32, "depth": 2, "heads": 2,
        "mlp_ratio": 4, "text_len": 8}
VOCAB = ["<pad>", "<unk>", "a", "an", "the", "red", "green", "blue", "yellow", "purple",
         "orange", "circle", "square", "triangle", "two", "three", "left", "right", "of",
         "above", "below", "top", "bottom", "large", "small"]


@torch.no_grad()
def randomize(model, seed):
    """Seeded random, non-zero values for every parameter, in checkpoint order (so the values do
    not depend on PyTorch's registration order). Weight matrices ~ gain * randn / sqrt(fan_in):
    gain 1 keeps a linear's output at the scale of its input; the modulation layers get 0.3 so
    that scale/shift/gate are O(0.3) and every path still contributes."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    for name, shape in dit.tensor_specs(model.cfg):
        r = torch.randn(shape, generator=g, dtype=torch.float32)
        mod = name.startswith("final.") or ".ada." in name
        if name.endswith("norm.weight"):
            v = 1 + 0.2 * r
        elif name.endswith(".weight"):
            v = (0.3 if mod else 1.0) * r / shape[1] ** 0.5
        elif name.endswith(".bias"):
            v = 0.1 * r
        else:  # embeddings
            v = 0.5 * r
        params[name].copy_(v)


def make_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    ids = {w: i for i, w in enumerate(VOCAB)}
    rows = [["a", "red", "circle", "above", "two", "blue", "<pad>", "<pad>"],  # trailing PAD
            ["large", "<pad>", "green", "<unk>", "<pad>", "left", "of", "triangle"],  # PAD inside
            ["<pad>"] * 8]  # all PAD: the unconditional branch
    return {
        "x": torch.randn(3, 16, 16, 3, generator=g),
        "t": torch.tensor([0.93, 0.41, 0.05], dtype=torch.float32),
        "tokens": torch.tensor([[ids[w] for w in r] for r in rows], dtype=torch.int32),
        "dv": torch.randn(3, 16, 16, 3, generator=g),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "fixtures"))
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.set_num_threads(1)  # fixed reduction order, so the bytes do not vary between runs
    os.makedirs(args.out, exist_ok=True)

    model = dit.DiT(dict(TINY, vocab_size=len(VOCAB)))
    randomize(model, args.seed)
    inp = make_inputs(args.seed + 1)

    paths = {k: os.path.join(args.out, f"tiny_{k}.safetensors")
             for k in ("model", "inputs", "expected")}
    dit.save_checkpoint(model, VOCAB, paths["model"])
    safetensors_io.write(paths["inputs"], [(k, v.numpy()) for k, v in inp.items()])

    # Reference values in float64 from the float32 weights as stored.
    model = model.double()
    x, t, dv = inp["x"].double(), inp["t"].double(), inp["dv"].double()
    v = model(x, t, inp["tokens"])
    (v * dv).sum().backward()
    params = dict(model.named_parameters())
    out = [("v", v.detach().float().numpy())]
    out += [("grad." + n, params[n].grad.float().numpy()) for n, _ in dit.tensor_specs(model.cfg)]
    safetensors_io.write(paths["expected"], out)

    print(f"config {model.cfg}")
    print(f"tokens {inp['tokens'].tolist()}")
    print(f"v: mean|v| {v.abs().mean().item():.4f} max|v| {v.abs().max().item():.4f}")
    for n, g in out[1:]:
        print(f"  {n:34s} {str(list(g.shape)):10s} max|g| {np.abs(g).max():.3e}")
    for p in paths.values():
        print(f"wrote {p} ({os.path.getsize(p)} bytes)")


if __name__ == "__main__":
    main()
