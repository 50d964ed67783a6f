"""Writes the sampler test fixture (deterministic: same bytes on every run).

    /usr/bin/python3 tests/reference/make_sampler_fixtures.py --out tests/reference/fixtures

Needs tiny_model.safetensors (make_fixtures.py) in the same folder. Everything is computed in
float64 (model included) by sampler_ref.py and stored as F32. sampler.safetensors holds:

  schedule.17           [18]   flow_schedule(17, shift 3)
  schedule.5            [6]    flow_schedule(5, shift 1)   (unshifted: 1, 0.8, ... 0)
  step.x, step.v, step.z [2,4,4,3]  inputs of the single-step cases
  step.<sde>.<i>.mu     [2,4,4,3]  mean of transition i of the 17-step, shift-3 schedule, eta 0.7,
  step.<sde>.<i>.std    [1]        for sde in flow, dance, cps and i in 0 (sigma = 1), 1, 8, 15,
                                   16 (cps's last step: std 0, logp 0)
  step.<sde>.<i>.logp   [2]        (the last); logp of x' = mu + std*z
  tokens                I32 [3,8]  prompts of the full samples
  x_init                [3,16,16,3]  initial noise
  z                     [8,3,16,16,3]  SDE noise per transition
  ode.x                 [9,3,16,16,3]  8-step ODE trajectory (shift 3)
  ode.x0_hat            [3,16,16,3]
  sde_flow.x            [9,3,16,16,3]  8-step flow SDE, eta 0.7, same x_init and z
  sde_flow.logp         [8,3]
  sde_flow.x0_hat       [3,16,16,3]
  sde_dance.logp        [8,3]      dance SDE, eta 0.7
  sde_dance.x0_hat      [3,16,16,3]
  sde_cps.x             [9,3,16,16,3]  cps SDE, eta CPS_ETA (its last transition deterministic)
  sde_cps.logp          [8,3]
  sde_cps.x0_hat        [3,16,16,3]
  ode_cfg.x0_hat        [3,16,16,3]  ODE with classifier-free guidance w = 2.5
The sampling settings are also in __metadata__ (steps, shift, eta, cfg_scale).
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dit  # noqa: E402
import safetensors_io  # noqa: E402
import sampler_ref as ref  # noqa: E402

STEP_CASES = (0, 1, 8, 15, 16)
FULL_STEPS, SHIFT, ETA, CFG = 8, 3.0, 0.7, 2.5
CPS_ETA = 0.9  # cps takes eta in (0, 1]; 0.9 keeps a cos part of the predicted noise
PROMPTS = [["a", "red", "circle", "above", "two", "blue", "<pad>", "<pad>"],
           ["large", "<pad>", "green", "<unk>", "<pad>", "left", "of", "triangle"],
           ["two", "green", "triangle", "<pad>", "<pad>", "<pad>", "<pad>", "<pad>"]]


def f32(t):
    return t.detach().to(torch.float32).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    ap.add_argument("--out", default=here)
    ap.add_argument("--seed", type=int, default=4321)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, vocab = dit.load_checkpoint(os.path.join(args.out, "tiny_model.safetensors"),
                                       dtype=torch.float64)
    ids = {w: i for i, w in enumerate(vocab)}
    g = torch.Generator().manual_seed(args.seed)
    out = []

    out.append(("schedule.17", f32(ref.flow_schedule(17, 3.0))))
    out.append(("schedule.5", f32(ref.flow_schedule(5, 1.0))))

    # single transitions on small random tensors (the inputs are stored as F32 and read back
    # as float64, so both sides start from the same values)
    sx = torch.randn(2, 4, 4, 3, generator=g, dtype=torch.float32).double()
    sv = torch.randn(2, 4, 4, 3, generator=g, dtype=torch.float32).double()
    sz = torch.randn(2, 4, 4, 3, generator=g, dtype=torch.float32).double()
    out += [("step.x", f32(sx)), ("step.v", f32(sv)), ("step.z", f32(sz))]
    sig17 = ref.flow_schedule(17, 3.0).to(torch.float32).double()  # the C schedule, exactly
    for sde in ("flow", "dance", "cps"):
        for i in STEP_CASES:
            mu, std = ref.sde_step(sx, sv, sig17, i, sde, CPS_ETA if sde == "cps" else ETA)
            lp = ref.sde_logp(mu + std * sz, mu, std)
            out += [(f"step.{sde}.{i}.mu", f32(mu)),
                    (f"step.{sde}.{i}.std", np.array([std], dtype=np.float32)),
                    (f"step.{sde}.{i}.logp", f32(lp))]
            if sde == "flow" and i == 0:
                print(f"flow first-step std (17 steps, shift 3, eta {ETA}): {std:.6f}")

    tokens = torch.tensor([[ids[w] for w in r] for r in PROMPTS], dtype=torch.int32)
    n, S, C = 3, model.cfg["image_size"], model.cfg["channels"]
    x_init = torch.randn(n, S, S, C, generator=g, dtype=torch.float32).double()
    z = torch.randn(FULL_STEPS, n, S, S, C, generator=g, dtype=torch.float32).double()
    out += [("tokens", tokens.numpy()), ("x_init", f32(x_init)), ("z", f32(z))]

    common = dict(steps=FULL_STEPS, shift=SHIFT)
    ode = ref.sample(model, tokens, x_init, kind="ode", **common)
    flow = ref.sample(model, tokens, x_init, kind="sde", sde="flow", eta=ETA, z=z, **common)
    dance = ref.sample(model, tokens, x_init, kind="sde", sde="dance", eta=ETA, z=z, **common)
    cps = ref.sample(model, tokens, x_init, kind="sde", sde="cps", eta=CPS_ETA, z=z, **common)
    cfg = ref.sample(model, tokens, x_init, kind="ode", cfg_scale=CFG, **common)
    out += [("ode.x", f32(ode["x"])), ("ode.x0_hat", f32(ode["x0_hat"])),
            ("sde_flow.x", f32(flow["x"])), ("sde_flow.logp", f32(flow["logp"])),
            ("sde_flow.x0_hat", f32(flow["x0_hat"])),
            ("sde_dance.logp", f32(dance["logp"])), ("sde_dance.x0_hat", f32(dance["x0_hat"])),
            ("sde_cps.x", f32(cps["x"])), ("sde_cps.logp", f32(cps["logp"])),
            ("sde_cps.x0_hat", f32(cps["x0_hat"])),
            ("ode_cfg.x0_hat", f32(cfg["x0_hat"]))]
    meta = {"format": "chunkgrpo-sampler-fixture/1", "steps": str(FULL_STEPS),
            "shift": str(SHIFT), "eta": str(ETA), "cps_eta": str(CPS_ETA), "cfg_scale": str(CFG),
            "step_cases": ",".join(map(str, STEP_CASES))}
    path = os.path.join(args.out, "sampler.safetensors")
    safetensors_io.write(path, out, meta)

    for name, key in (("ode", ode), ("sde_flow", flow), ("sde_dance", dance), ("sde_cps", cps),
                      ("ode_cfg", cfg)):
        x0 = key["x0_hat"]
        print(f"{name:9s} mean|x0_hat| {x0.abs().mean().item():.4f} max {x0.abs().max().item():.3f}"
              f"  logp {[round(v, 4) for v in key['logp'][:, 0].tolist()]}")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
