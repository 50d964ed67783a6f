"""Reference PyTorch GRPO / Chunk-GRPO objective (spec/algorithm.md sections 2 to 4).

The executable definition the C engine (worker/engine/grpo.c) is tested against. Written straight
from the formulas with torch autograd doing every derivative, so that the C code's hand-written
chain rule (d loss / d logp, d logp / d mu, d mu / d v) is checked, not copied. Works in whatever
dtype the model and inputs have (the fixtures use float64).

    adv = advantages(rewards, clip=5.0)                       # rewards [P, G] -> [P, G]
    loss, ratio = chunk_loss(logp_new, logp_old, A, eps)      # one chunk (or one step)
    total, stats = items_loss(model, traj, items, eps=1e-4, sde="flow", eta=0.7, scale=1/6)
    total.backward()                                          # d total / d every parameter

The clipped objective is written with torch.maximum and torch.clamp on purpose: the C code
reproduces their autograd semantics exactly, ties included (maximum splits the gradient half and
half on a tie; clamp passes the gradient at its bounds, which are inclusive).
"""

import numpy as np
import torch

import sampler_ref

STD_EPS = 1e-8  # added to the group's std


def advantages(rewards, clip):
    """Per group (row): A = (r - mean) / (std + 1e-8) with the UNBIASED std, clamped to
    [-clip, clip]. rewards [P, G] with G >= 2."""
    mean = rewards.mean(1, keepdim=True)
    std = rewards.std(1, unbiased=True, keepdim=True)
    return ((rewards - mean) / (std + STD_EPS)).clamp(-clip, clip)


def chunk_loss(logp_new, logp_old, adv, eps):
    """One chunk's clipped surrogate: the chunk log-probability is the MEAN of its steps' (so the
    ratio is the geometric mean of the step ratios); loss = max(-A r, -A clamp(r, 1-eps, 1+eps)).
    logp_new [size] (differentiable), logp_old [size]. Returns (loss, ratio) as 0-d tensors."""
    ratio = torch.exp(logp_new.mean() - logp_old.mean())
    loss = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - eps, 1.0 + eps))
    return loss, ratio


def rollout(model, tokens, x_init, z, sigmas, sde, eta, round_fn):
    """SDE trajectory in the model's dtype where every recorded state is passed through round_fn
    (e.g. rounding to float32) before it is used again, so that the recorded x's are exactly the
    values a float32 consumer reads back. x_init [n,S,S,C], z [N,n,S,S,C], sigmas [N+1] (as the C
    side holds them). Returns x [N+1,n,S,S,C] and logp_old [N,n], the latter taken against the
    recorded (rounded) x_{i+1} from mu of the recorded x_i."""
    N, n = z.shape[0], x_init.shape[0]
    xs, logps = [round_fn(x_init)], []
    with torch.no_grad():
        for i in range(N):
            x = xs[-1]
            v = model(x, sigmas[i].expand(n), tokens)
            mu, std = sampler_ref.sde_step(x, v, sigmas, i, sde, eta)
            xn = round_fn(mu + std * z[i])
            logps.append(sampler_ref.sde_logp(xn, mu, std))
            xs.append(xn)
    return torch.stack(xs), torch.stack(logps)


def items_loss(model, traj, items, eps, sde, eta, scale, kl_coef=0.0, ref_model=None,
               cfg_scale=None):
    """The objective of one training call: sum over items of scale * item_loss, where an item
    (b, start, size, A) is the chunk of transitions start .. start+size-1 of trajectory b and
      item_loss = chunk_loss(logp_new, logp_old, A, eps) + kl_coef * mean_k KL_k,
      KL_k = mean((mu_k - mu_ref_k)^2) / (2 std_k^2)   (mu_ref from ref_model, no gradient).
    With cfg_scale w the policy (and the reference) is the guided velocity v_u + w (v_c - v_u)
    (sampler_ref.velocity), so the gradient reaches the weights through both passes.
    traj: {"x" [N+1,n,S,S,C], "logp_old" [N,n], "sigmas" [N+1], "tokens" [n,T]}.
    Returns (total, stats) with stats a list of dicts (ratio, loss, kl, clipped, logp_new [size])."""
    x_all, sigmas, tokens = traj["x"], traj["sigmas"], traj["tokens"]
    total = 0.0
    stats = []
    for b, start, size, adv in items:
        ks = list(range(start, start + size))
        x = x_all[start:start + size, b]
        t = sigmas[start:start + size]
        tok = tokens[b:b + 1].expand(size, -1)
        v = sampler_ref.velocity(model, x, t, tok, cfg_scale)
        if ref_model is not None:
            with torch.no_grad():
                v_ref = sampler_ref.velocity(ref_model, x, t, tok, cfg_scale)
        logps, kls = [], []
        for j, k in enumerate(ks):
            mu, std = sampler_ref.sde_step(x[j:j + 1], v[j:j + 1], sigmas, k, sde, eta)
            logps.append(sampler_ref.sde_logp(x_all[k + 1, b:b + 1], mu, std)[0])
            if ref_model is not None:
                mu_ref, _ = sampler_ref.sde_step(x[j:j + 1], v_ref[j:j + 1], sigmas, k, sde, eta)
                kls.append(((mu - mu_ref) ** 2).mean() / (2.0 * std ** 2))
        logp_new = torch.stack(logps)
        loss, ratio = chunk_loss(logp_new, traj["logp_old"][start:start + size, b], adv, eps)
        kl = torch.stack(kls).mean() if kls else torch.zeros((), dtype=x.dtype)
        item = loss + kl_coef * kl
        total = total + scale * item
        r = ratio.item()
        clipped = (-adv * min(max(r, 1.0 - eps), 1.0 + eps)) > (-adv * r)
        stats.append({"ratio": r, "loss": item.item(), "kl": kl.item(), "clipped": int(clipped),
                      "logp_new": logp_new.detach()})
    return total, stats


def splitmix64(x):
    """The splitmix64 output function (Steele et al.) on a Python int, modulo 2^64."""
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def perturbation(numel, scale, seed):
    """A fixed parameter perturbation that C reproduces bit for bit without a file: for flat
    parameter index j (checkpoint order), u_j = (splitmix64(seed + j) >> 40) / 2^24 in [0, 1) and
    delta_j = scale * (2 u_j - 1), in float64. The perturbed float32 weight is
    float32(float64(w_j) + delta_j)."""
    u = np.array([splitmix64(seed + j) >> 40 for j in range(numel)], dtype=np.float64)
    return scale * (2.0 * (u / float(1 << 24)) - 1.0)
