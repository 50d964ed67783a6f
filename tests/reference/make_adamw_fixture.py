"""Writes the AdamW fixture: four optimizer steps of torch.optim.AdamW with global-norm clipping.

    /usr/bin/python3 tests/reference/make_adamw_fixture.py [--out tests/reference/fixtures]

adamw.safetensors (deterministic: same bytes on every run), every tensor F32 [N]:
  param.0           the starting parameters: random, every tenth exactly zero
  grad.0 .. grad.3  the raw gradient of each step, before clipping; every seventh is zero (so
                    those parameters move by weight decay alone). Their global L2 norms are
                    4.0, 0.6, 2.5, 0.3 against grad_clip 1.0: clipping binds on steps 0 and 2
                    only, which is what makes it visible (one Adam step is invariant to the
                    scale of its gradient; a sequence of differently scaled steps is not)
  param.1 .. param.4  the parameters after each step
  update.1 .. update.4  param.k - param.(k-1), taken in float64 before rounding to F32, so a test
                    can check the step itself more tightly than the parameters
__metadata__: format "chunkgrpo-adamw-fixture/1", n, steps, lr, beta1, beta2, eps, weight_decay,
  grad_clip (decimal strings), and norm.0 .. norm.3: the unclipped global norm that
  clip_grad_norm_ returned for each step ("%.17g").

The reference runs in float64 from the F32 values as stored: torch.nn.utils.clip_grad_norm_
(coefficient max_norm / (norm + 1e-6), applied only when below 1) and then torch.optim.AdamW
(decoupled weight decay: p *= 1 - lr * wd, then the Adam step with bias correction).
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

N = 3001  # odd, so no vector width or chunk divides it
HYPER = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.1,
         "grad_clip": 1.0}
TARGET_NORMS = [4.0, 0.6, 2.5, 0.3]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "fixtures"))
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.arange(N)

    param0 = (0.5 * torch.randn(N, generator=g)).float()
    param0[idx % 10 == 3] = 0.0
    grads = []
    for target in TARGET_NORMS:
        # heavy-tailed magnitudes, so the per-element second moments differ widely
        r = torch.randn(N, generator=g, dtype=torch.float64)
        r = r * torch.exp(torch.randn(N, generator=g, dtype=torch.float64))
        r[idx % 7 == 5] = 0.0
        grads.append((r * (target / r.norm())).float())

    p = torch.nn.Parameter(param0.double().clone())
    opt = torch.optim.AdamW([p], lr=HYPER["lr"], betas=(HYPER["beta1"], HYPER["beta2"]),
                            eps=HYPER["eps"], weight_decay=HYPER["weight_decay"])
    tensors = [("param.0", param0.numpy())]
    tensors += [(f"grad.{k}", gk.numpy()) for k, gk in enumerate(grads)]
    meta = {"format": "chunkgrpo-adamw-fixture/1", "n": str(N), "steps": str(len(grads))}
    meta.update({k: repr(v) for k, v in HYPER.items()})
    params, updates = [], []
    for k, gk in enumerate(grads):
        before = p.detach().clone()
        p.grad = gk.double().clone()
        norm = torch.nn.utils.clip_grad_norm_([p], max_norm=HYPER["grad_clip"])
        clipped = norm.item() > HYPER["grad_clip"]
        meta[f"norm.{k}"] = "%.17g" % norm.item()
        opt.step()
        params.append((f"param.{k + 1}", p.detach().float().numpy().copy()))
        updates.append((f"update.{k + 1}", (p.detach() - before).float().numpy()))
        print(f"step {k + 1}: norm {norm.item():.6f} ({'clipped' if clipped else 'not clipped'}), "
              f"max|update| {(p.detach() - before).abs().max().item():.3e}")
    tensors += params + updates

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "adamw.safetensors")
    safetensors_io.write(path, tensors, meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
