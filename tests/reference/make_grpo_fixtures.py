"""Writes the GRPO / Chunk-GRPO test fixture (deterministic: same bytes on every run).

    /usr/bin/python3 tests/reference/make_grpo_fixtures.py --out tests/reference/fixtures

Needs tiny_model.safetensors (make_fixtures.py) in the same folder: its weights are theta0, the
policy that recorded the rollout (and the frozen reference of the KL case). theta1 is theta0
moved by grpo_ref.perturbation(num_params, PERTURB, PERTURB_SEED), which the C test recomputes
(no second model file). Everything is computed in float64 by grpo_ref.py and stored as F32; every
input is stored as F32 first and read back, so both sides start from the same values.

The rollout: 2 groups x 3 trajectories (each group shares its prompt and its initial noise), a
6-step flow SDE (shift 3, eta 0.7), hence 5 trainable transitions. grpo.safetensors holds:

  tokens            I32 [6,8]         prompt of every trajectory
  sigmas            [7]               the schedule as the C side holds it (float32)
  x                 [7,6,16,16,3]     the recorded trajectory (Trajectory.x layout)
  logp_old          [6,6]             per-transition logp at theta0 (Trajectory.logp layout)
  rewards           [6]               arbitrary rewards, group-major
  advantages        [6]               advantages(rewards, clip 5)
  logp_theta1       [5,6]             per-transition logp at theta1 (trainable steps only)
  adv.rewards       [4,4]             advantage cases: ordinary, all equal, clipped by 1.2,
  adv.expected      [4,4]             nearly equal (std far below 1e-8's scale)
  <case>.items      I32 [n,3]         (trajectory, start, size) of every item
  <case>.adv        [n]               the item's advantage (= advantages[trajectory])
  <case>.ratio      [n]               chunk ratio at theta1
  <case>.loss       [n]               item loss (clipped surrogate + kl_coef * KL)
  <case>.kl         [n]               mean KL of the chunk's steps (0 without a reference)
  <case>.clipped    I32 [n]           1 where the clipped branch is the max (no gradient)
  <case>.grad       [num_params]      d sum_i(scale * loss_i) / d theta at theta1, flat, in
                                      checkpoint (model.md) order
for the cases (chunk sizes, clip eps, kl_coef, scale in __metadata__ as "<case>.sizes" etc.):
  step   sizes 1,1,1,1,1  3 steps per trajectory  eps ~1.8e-4, "gap" (the clip binds for 2 of 18)
  chunk  sizes 2,3        1 or 2 chunks each      eps ~1.7e-4, "gap" (the clip binds for 1 of 7)
  seq    sizes 5          the whole trajectory    eps 0.2   (GSPO-like, no clipping)
  kl     sizes 2,3        1 or 2 chunks each      eps 0.2   kl_coef 10 against theta0 (large
                                                  enough that the KL part of the gradient is as
                                                  large as the policy part)
  cfg    sizes 2,3        1 or 2 chunks each      eps "gap", classifier-free guidance 2.5
  cfgkl  sizes 2,3        1 or 2 chunks each      eps 0.2, guidance 2.5, kl_coef 10 (the
                                                  reference guided too)
  cps    sizes 2,3        1 or 2 chunks each      eps "gap", the cps SDE (eta 0.7)
The guided cases and cps score the same recorded x under their own policy: their logp_old is that
policy's log-probability at theta0 (<case>.logp_old [5,6], trainable steps only);
"<case>.cfg_scale" in the metadata says a case is guided, "<case>.sde" names its SDE when it is
not the rollout's.
A "gap" eps sits in the middle of the widest gap between the items' |r - 1| (see gap_eps), so
that some items are clipped and some not. The script checks that every ratio is at least MARGIN
from a clip bound (float32 cannot flip a decision) and that the gap cases hold both clipped and
unclipped items. The rewards of the second group, {0.875, 0.125, 0.5}, give trajectory 5 an
advantage of exactly 0: its items are ties of torch.maximum (no policy gradient).
The perturbation (uniform in +-1e-2 per weight) moves the step ratios by 1.8e-4 (median) and
at most 1.5e-3; the file is about 1 MB, most of it the four gradients.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dit  # noqa: E402
import grpo_ref  # noqa: E402
import safetensors_io  # noqa: E402
import sampler_ref  # noqa: E402

STEPS, SHIFT, ETA, SDE = 6, 3.0, 0.7, "flow"
GROUPS, GROUP_SIZE = 2, 3
ADV_CLIP = 5.0
PERTURB, PERTURB_SEED = 1e-2, 20251027
PROMPTS = [["a", "red", "circle", "above", "two", "blue", "<pad>", "<pad>"],
           ["large", "green", "triangle", "left", "of", "<unk>", "<pad>", "<pad>"]]
REWARDS = [0.25, 0.75, 0.375, 0.875, 0.125, 0.5]
ADV_CASES = ([[0.1, 0.4, 0.2, 0.9], [0.3, 0.3, 0.3, 0.3], [1.0, 0.0, 0.0, 0.0],
              [0.5, 0.5, 0.5, 0.50000006]], 1.2)
# name, chunk sizes, chunks trained per trajectory (None: all of one chunk, else 1 or 2 of the
# two at random), eps ("gap": see gap_eps), kl_coef, classifier-free guidance (None: unguided),
# the SDE of the policy (the rollout's unless named)
CASES = [("step", [1, 1, 1, 1, 1], 3, "gap", 0.0, None, SDE),
         ("chunk", [2, 3], None, "gap", 0.0, None, SDE),
         ("seq", [5], None, 0.2, 0.0, None, SDE),
         ("kl", [2, 3], None, 0.2, 10.0, None, SDE),
         ("cfg", [2, 3], None, "gap", 0.0, 2.5, SDE),
         ("cfgkl", [2, 3], None, 0.2, 10.0, 2.5, SDE),
         ("cps", [2, 3], None, "gap", 0.0, None, "cps")]
MARGIN = 2e-6  # minimum |r - bound| of a clip decision (C's ratios agree to about 1e-7)


def f32(t):
    return np.asarray(t.detach().to(torch.float32).numpy() if torch.is_tensor(t) else t,
                      dtype=np.float32)


def as_f32(t):  # round to float32 and come back: what the C side reads
    return t.to(torch.float32).to(torch.float64)


def flat_params(model):
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1) for n, _ in dit.tensor_specs(model.cfg)])


def flat_grads(model):
    params = dict(model.named_parameters())
    return torch.cat([params[n].grad.reshape(-1) for n, _ in dit.tensor_specs(model.cfg)])


def set_flat(model, flat):
    params = dict(model.named_parameters())
    off = 0
    with torch.no_grad():
        for n, shape in dit.tensor_specs(model.cfg):
            k = int(np.prod(shape))
            params[n].copy_(flat[off:off + k].reshape(shape))
            off += k


def choose_items(sizes, per_traj, adv, g):
    starts = np.cumsum([0] + sizes[:-1]).tolist()
    items = []
    for b in range(GROUPS * GROUP_SIZE):
        if per_traj is None:  # 1 or 2 chunks for [2,3], the only chunk for [5]
            k = len(sizes) if len(sizes) == 1 else 1 + int(torch.randint(2, (1,), generator=g))
        else:
            k = per_traj
        chosen = sorted(torch.randperm(len(sizes), generator=g)[:k].tolist())
        items += [(b, starts[j], sizes[j], float(adv[b])) for j in chosen]
    return items


def gap_eps(ratios, advs):
    """A clip range that splits the items: the clip can bind only where the ratio moved in the
    direction of the advantage (A > 0 and r > 1, or A < 0 and r < 1). eps goes in the middle of
    the widest gap between consecutive sorted |r - 1| (of all items) that has such an item on
    each side, so that some items are clipped and some not, and no ratio lies near a bound."""
    d = sorted((abs(r - 1.0), a * (r - 1.0) > 0) for r, a in zip(ratios, advs))
    best = None
    for i in range(len(d) - 1):
        if any(e for _, e in d[:i + 1]) and any(e for _, e in d[i + 1:]):
            if best is None or d[i + 1][0] - d[i][0] > d[best + 1][0] - d[best][0]:
                best = i
    if best is None:
        sys.exit("fewer than 2 items can be clipped; change the seed or the perturbation")
    return 0.5 * (d[best][0] + d[best + 1][0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    ap.add_argument("--out", default=here)
    ap.add_argument("--seed", type=int, default=2718)
    args = ap.parse_args()
    torch.set_num_threads(1)
    theta0, vocab = dit.load_checkpoint(os.path.join(args.out, "tiny_model.safetensors"),
                                        dtype=torch.float64)
    ids = {w: i for i, w in enumerate(vocab)}
    g = torch.Generator().manual_seed(args.seed)
    n, S, C = GROUPS * GROUP_SIZE, theta0.cfg["image_size"], theta0.cfg["channels"]
    out, meta = [], {"format": "chunkgrpo-grpo-fixture/1", "steps": str(STEPS),
                     "shift": str(SHIFT), "eta": str(ETA), "sde": SDE,
                     "groups": str(GROUPS), "group_size": str(GROUP_SIZE),
                     "adv_clip": str(ADV_CLIP), "perturb_scale": repr(PERTURB),
                     "perturb_seed": str(PERTURB_SEED), "adv.clip": str(ADV_CASES[1])}

    # the rollout at theta0, recorded as float32
    tokens = torch.tensor([[ids[w] for w in PROMPTS[b // GROUP_SIZE]] for b in range(n)],
                          dtype=torch.int32)
    x0 = torch.randn(GROUPS, S, S, C, generator=g, dtype=torch.float32).double()
    x_init = x0.repeat_interleave(GROUP_SIZE, 0)
    z = torch.randn(STEPS, n, S, S, C, generator=g, dtype=torch.float32).double()
    sigmas = as_f32(sampler_ref.flow_schedule(STEPS, SHIFT))
    x, logp = grpo_ref.rollout(theta0, tokens, x_init, z, sigmas, SDE, ETA, as_f32)
    traj = {"x": x, "logp_old": as_f32(logp), "sigmas": sigmas, "tokens": tokens}
    out += [("tokens", tokens.numpy()), ("sigmas", f32(sigmas)), ("x", f32(x)),
            ("logp_old", f32(logp))]

    rewards = as_f32(torch.tensor(REWARDS, dtype=torch.float64))
    adv = as_f32(grpo_ref.advantages(rewards.view(GROUPS, GROUP_SIZE), ADV_CLIP).reshape(-1))
    out += [("rewards", f32(rewards)), ("advantages", f32(adv))]
    ar = as_f32(torch.tensor(ADV_CASES[0], dtype=torch.float64))
    out += [("adv.rewards", f32(ar)), ("adv.expected", f32(grpo_ref.advantages(ar, ADV_CASES[1])))]

    # (a) recomputing at theta0 gives the recorded log-probabilities back
    trainable = STEPS - 1
    every = [(b, k, 1, 1.0) for b in range(n) for k in range(trainable)]
    with torch.no_grad():
        _, st0 = grpo_ref.items_loss(theta0, traj, every, 0.2, SDE, ETA, 1.0)
    worst = max(abs(s["ratio"] - 1.0) for s in st0)
    print(f"theta0: max |ratio - 1| over all steps {worst:.2e} (logp_old stored as float32)")

    # theta1 = theta0 + the fixed perturbation, rounded to float32
    p0 = flat_params(theta0)
    delta = torch.from_numpy(grpo_ref.perturbation(p0.numel(), PERTURB, PERTURB_SEED))
    theta1, _ = dit.load_checkpoint(os.path.join(args.out, "tiny_model.safetensors"),
                                    dtype=torch.float64)
    set_flat(theta1, as_f32(p0 + delta))
    with torch.no_grad():
        _, st1 = grpo_ref.items_loss(theta1, traj, every, 0.2, SDE, ETA, 1.0)
    lp1 = torch.tensor([s["logp_new"][0].item() for s in st1]).view(n, trainable).t()
    out.append(("logp_theta1", f32(lp1)))
    steplr = (lp1 - traj["logp_old"][:trainable]).abs()
    print(f"theta1: |log step ratio| median {steplr.median().item():.2e} "
          f"max {steplr.max().item():.2e}")

    for name, sizes, per_traj, eps, kl_coef, cfg, sde in CASES:
        items = choose_items(sizes, per_traj, adv, g)
        case_traj = traj
        if cfg is not None or sde != SDE:  # its policy's log-probabilities of x at theta0
            with torch.no_grad():
                _, stc = grpo_ref.items_loss(theta0, traj, every, 0.2, sde, ETA, 1.0,
                                             cfg_scale=cfg)
            lpc = as_f32(torch.tensor([s["logp_new"][0].item() for s in stc])
                         .view(n, trainable).t())
            case_traj = dict(traj, logp_old=lpc)
            out.append((f"{name}.logp_old", f32(lpc)))
        if cfg is not None:
            meta[f"{name}.cfg_scale"] = repr(cfg)
        if sde != SDE:
            meta[f"{name}.sde"] = sde
        if eps == "gap":
            with torch.no_grad():
                _, st = grpo_ref.items_loss(theta1, case_traj, items, 1.0, sde, ETA, 1.0,
                                            cfg_scale=cfg)
            eps = gap_eps([s["ratio"] for s in st], [i[3] for i in items])
        eps = float(np.float32(eps))  # the C side holds eps as a float
        per = per_traj if per_traj is not None else len(items) / n
        scale = float(np.float32(1.0 / (GROUP_SIZE * per * GROUPS)))
        theta1.zero_grad()
        total, st = grpo_ref.items_loss(theta1, case_traj, items, eps, sde, ETA, scale, kl_coef,
                                        theta0 if kl_coef > 0 else None, cfg)
        total.backward()
        grad = flat_grads(theta1)
        ratios = [s["ratio"] for s in st]
        clipped = [s["clipped"] for s in st]
        for (b, _, _, a), r in zip(items, ratios):
            for bound in (1.0 - eps, 1.0 + eps):
                if abs(r - bound) < MARGIN:
                    sys.exit(f"{name}: ratio {r!r} of trajectory {b} is within {MARGIN} of the "
                             f"clip bound {bound!r}; change the seed or the perturbation")
        if eps < 1e-2 and not (0 < sum(clipped) < len(items)):
            sys.exit(f"{name}: {sum(clipped)} of {len(items)} items clipped; need some of each")
        out += [(f"{name}.items", np.array([i[:3] for i in items], dtype=np.int32)),
                (f"{name}.adv", f32(torch.tensor([i[3] for i in items]))),
                (f"{name}.ratio", f32(torch.tensor(ratios))),
                (f"{name}.loss", f32(torch.tensor([s["loss"] for s in st]))),
                (f"{name}.kl", f32(torch.tensor([s["kl"] for s in st]))),
                (f"{name}.clipped", np.array(clipped, dtype=np.int32)),
                (f"{name}.grad", f32(grad))]
        meta.update({f"{name}.sizes": ",".join(map(str, sizes)), f"{name}.eps": repr(eps),
                     f"{name}.kl_coef": repr(kl_coef), f"{name}.scale": repr(scale)})
        margin = min(abs(r - b) for r in ratios for b in (1.0 - eps, 1.0 + eps))
        print(f"{name:5s} eps {eps:.3e} (margin {margin:.1e}) {len(items):2d} items, "
              f"{sum(clipped)} clipped, ratio "
              f"[{min(ratios):.6f}, {max(ratios):.6f}], total loss {total.item():+.6e}, "
              f"|grad|max {grad.abs().max().item():.3e}")

    meta["cases"] = ",".join(c[0] for c in CASES)
    path = os.path.join(args.out, "grpo.safetensors")
    safetensors_io.write(path, out, meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
