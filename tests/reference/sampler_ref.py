"""Reference PyTorch samplers for the chunkgrpo DiT (spec/algorithm.md sections 1 and 2).

The executable definition the C samplers (worker/engine/sampler.c) are tested against. Written
straight from the formulas, not from the C code's factored form (mu = cx x + cv v), so that the
two derivations check each other. Works in whatever dtype the model and inputs have (the fixtures
use float64).

    model, vocab = dit.load_checkpoint("model.safetensors", dtype=torch.float64)
    out = sample(model, tokens, x_init, steps=17, shift=3.0, kind="sde", sde="flow", eta=0.7,
                 z=noise)       # z [steps, n, S, S, C]; out["x"], out["logp"], out["x0_hat"]
"""

import math

import torch


def flow_schedule(steps, shift, dtype=torch.float64):
    """sigma_i = shift*s_i / (1 + (shift-1)*s_i), s_i = 1 - i/N, i = 0..N."""
    s = 1.0 - torch.arange(steps + 1, dtype=dtype) / steps
    return shift * s / (1.0 + (shift - 1.0) * s)


def sde_sigma_t(sigmas, i, sde, eta):
    """The SDE noise strength of transition i: flow eta*sqrt(sigma/(1-sigma_g)) with sigma_g =
    sigma except sigmas[1] at sigma == 1; dance: eta. (cps is its own form in sde_step.)"""
    sigma = float(sigmas[i])
    if sde == "dance":
        return float(eta)
    if sde != "flow":
        raise ValueError(f"unknown sde {sde!r}")
    sigma_g = float(sigmas[1]) if sigma == 1.0 else sigma
    return eta * math.sqrt(sigma / (1.0 - sigma_g))


def sde_step(x, v, sigmas, i, sde, eta):
    """(mu, std) of transition i from x with velocity v."""
    sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
    if sde == "cps":
        # coefficients-preserving sampling (Wang and Yu 2025, arXiv:2509.05952): the next state
        # holds (1 - sigma_next) of the predicted clean image and noise of total scale
        # sigma_next, a cos(theta) part of the predicted noise and a sin(theta) part fresh
        theta = eta * math.pi / 2.0
        x0_hat, eps_hat = x - sigma * v, x + (1.0 - sigma) * v
        mu = (1.0 - sigma_next) * x0_hat + sigma_next * math.cos(theta) * eps_hat
        return mu, sigma_next * math.sin(theta)
    h = sigma - sigma_next
    st = sde_sigma_t(sigmas, i, sde, eta)
    mu = x - h * (v + st ** 2 / (2.0 * sigma) * (x + (1.0 - sigma) * v))
    return mu, st * math.sqrt(h)


def sde_logp(x_next, mu, std):
    """Per-sample MEAN over the image elements of the Gaussian log-density: [n]. A
    deterministic transition (std 0: the last cps step) has no density and records 0."""
    if std == 0.0:
        return torch.zeros(x_next.shape[0], dtype=x_next.dtype)
    lp = -(x_next - mu) ** 2 / (2.0 * std ** 2) - math.log(std) - 0.5 * math.log(2.0 * math.pi)
    return lp.reshape(lp.shape[0], -1).mean(1)


def velocity(model, x, t, tokens, cfg_scale=None):
    """v = model(x, t, tokens); with cfg_scale w: v_u + w (v_c - v_u), v_u from all-PAD tokens."""
    v = model(x, t, tokens)
    if cfg_scale is None:
        return v
    vu = model(x, t, torch.zeros_like(tokens))
    return vu + cfg_scale * (v - vu)


@torch.no_grad()
def sample(model, tokens, x_init, steps, shift, kind="ode", sde="flow", eta=0.7, z=None,
           cfg_scale=None, generator=None):
    """Runs N = steps transitions from x_init [n,S,S,C] (one batch, no padding). The SDE's noise
    is z[i] for transition i, or, when z is None, drawn per step with torch.randn(generator).
    Returns {"sigmas" [N+1], "x" [N+1,n,S,S,C], "logp" [N,n] (0 for the ODE), "x0_hat" [n,S,S,C]}
    where x0_hat = x_{N-1} - sigma_{N-1} v_{N-1} (the image handed to rewards)."""
    sigmas = flow_schedule(steps, shift, x_init.dtype)
    n = x_init.shape[0]
    xs, logps = [x_init], []
    x = x_init
    x0_hat = None
    for i in range(steps):
        t = torch.full((n,), float(sigmas[i]), dtype=x.dtype)
        v = velocity(model, x, t, tokens, cfg_scale)
        if i == steps - 1:
            x0_hat = x - sigmas[i] * v
        if kind == "ode":
            x = x - (sigmas[i] - sigmas[i + 1]) * v
            logps.append(torch.zeros(n, dtype=x.dtype))
        elif kind == "sde":
            mu, std = sde_step(x, v, sigmas, i, sde, eta)
            zi = z[i] if z is not None else torch.randn(x.shape, generator=generator,
                                                        dtype=x.dtype)
            x = mu + std * zi
            logps.append(sde_logp(x, mu, std))
        else:
            raise ValueError(f"unknown sampler {kind!r}")
        xs.append(x)
    return {"sigmas": sigmas, "x": torch.stack(xs), "logp": torch.stack(logps),
            "x0_hat": x0_hat}
