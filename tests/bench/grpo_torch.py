"""PyTorch CPU peer for the GRPO iteration benchmark (make bench-grpo): one Chunk-GRPO iteration
of worker/runners/grpo_runner.c, written the way a PyTorch user would write it, on the same model
weights (tests/reference/dit.py's load_checkpoint), timed by phase.

    /usr/bin/python3 tests/bench/grpo_torch.py --model models/shapes-small.safetensors \
        --prompts prompts.txt --iterations 6 --threads 2

One iteration (spec/algorithm.md sections 2 to 4, the C runner's order and batch shapes):
  sampling  P prompts drawn at random from --prompts (one per line, tokenized like
            worker/engine/tokenizer.c), G trajectories each with the group's shared initial
            noise; the flow SDE (eta, shift, steps) of tests/reference/sampler_ref.sample under
            no_grad, in model calls of at most `batch` rows, recording every x and every step's
            log-probability (logp_old).
  reward    NOT MEASURED. The C side's `align` reward has no Python implementation; it costs the
            C side about 1 ms per iteration. Rewards here are uniform random numbers, drawn
            outside every timer, so the peer's iteration has no reward phase.
  optimize  advantages per group (tests/reference/grpo_ref.advantages, clip adv_clip); per
            trajectory, round(train_fraction * K) of the K chunks chosen uniformly without
            replacement (sorted, as chunk_select returns them); then per group: zero the
            gradients; pack the items (trajectory, chunk) greedily into model calls of at most
            `batch` rows, one row per transition of the chunk (x_k of that trajectory, sigma_k,
            its prompt); per call one forward, mu and logp_new per row (MEAN over the image
            elements), per item the chunk ratio exp(mean logp_new - mean logp_old) and the
            clipped loss max(-A r, -A clamp(r, 1-eps, 1+eps)), scaled by 1 / (G x chunks
            trained), one backward; after the group, global gradient-norm clip and one AdamW
            step (--optimizer-step iteration: the gradients of every group accumulate, scaled
            by 1 / (P x G x chunks trained), into one step after the last group, as the demo
            trains). Items with advantage exactly 0 are skipped, as in C.
Like the C engine (acts_set_batch), this peer runs only the packed rows of each training call, so
both do the same model work for the same items.

Prints one JSON line with per-iteration lists:
{"peer":"pytorch","torch":...,"threads":...,"openblas_threads":...,"omp_wait_policy":...,
 "sec_sampling":[...],"sec_optimize":[...],"rows":[...],"calls":[...],"ratio_min":[...],
 "ratio_max":[...], ...config...}
rows = transitions trained (forward + backward rows), calls = training model calls.
"""

import argparse
import json
import math
import os
import re
import sys
import time

# torch and the reference modules are imported in main(), after the thread environment is set.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))


def positive(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def tokenize(vocab_index, text, T):
    """worker/engine/tokenizer.c: lower-case, split on anything not an ASCII letter or digit,
    unknown words -> 1 (UNK), truncate or pad with 0 (PAD) to T."""
    ids = [vocab_index.get(w, 1) for w in re.split(r"[^a-z0-9]+", text.lower()) if w][:T]
    return ids + [0] * (T - len(ids))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/shapes-small.safetensors")
    ap.add_argument("--prompts", required=True, help="prompt set, one per line")
    ap.add_argument("--iterations", type=positive, default=6)
    ap.add_argument("--prompts-per-iter", type=positive, default=4)
    ap.add_argument("--group-size", type=positive, default=8)
    ap.add_argument("--steps", type=positive, default=17)
    ap.add_argument("--shift", type=float, default=3.0)
    ap.add_argument("--eta", type=float, default=0.7)
    ap.add_argument("--chunks", default="2,1,2,11", help="chunk sizes over steps-1 transitions")
    ap.add_argument("--train-fraction", type=float, default=0.5)
    ap.add_argument("--clip-eps", type=float, default=1e-3)
    ap.add_argument("--adv-clip", type=float, default=5.0)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--optimizer-step", choices=("group", "iteration"), default="group",
                    help="one AdamW step per group, or one per iteration over every group")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--batch", type=positive, default=32)
    ap.add_argument("--threads", type=positive, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    # The thread setup of engine_torch.py (see the comment there): OpenBLAS gets the same thread
    # count as torch and idle OpenMP threads sleep. Read at library load, hence before the import;
    # a value set by the caller wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    import dit
    import grpo_ref
    import sampler_ref

    torch.set_num_threads(args.threads)
    model, vocab = dit.load_checkpoint(args.model)
    cfg = model.cfg
    S, C, T = cfg["image_size"], cfg["channels"], cfg["text_len"]
    vocab_index = {w: i for i, w in enumerate(vocab)}
    prompts = [l.strip() for l in open(args.prompts) if l.strip()]
    if not prompts:
        ap.error(f"--prompts {args.prompts}: no prompts")

    P, G, N = args.prompts_per_iter, args.group_size, args.steps
    n, trainable = P * G, N - 1
    sizes = [int(s) for s in args.chunks.split(",")]
    if sum(sizes) != trainable or min(sizes) < 1:
        ap.error(f"--chunks {args.chunks} must be positive sizes summing to {trainable}")
    starts = [sum(sizes[:j]) for j in range(len(sizes))]
    K = len(sizes)
    n_train = max(1, int(math.floor(args.train_fraction * K + 0.5)))  # C's lround
    # as grpo_runner.c: the sampler batch is min(batch, n), at least the largest chunk
    batch = max(min(args.batch, n), trainable)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(args.beta1, 0.999), eps=1e-8,
                            weight_decay=args.weight_decay)
    params = [p for p in model.parameters()]
    gen = torch.Generator().manual_seed(args.seed)
    sigmas = sampler_ref.flow_schedule(N, args.shift, torch.float32)
    # per-transition constants of the SDE step (sampler_ref.sde_step / sde_sigma_t), float32
    h_k, st_k, sd_k = [], [], []
    for k in range(trainable):
        h = float(sigmas[k]) - float(sigmas[k + 1])
        st = sampler_ref.sde_sigma_t(sigmas, k, "flow", args.eta)
        h_k.append(h), st_k.append(st), sd_k.append(st * math.sqrt(h))
    h_k, st_k, sd_k = (torch.tensor(a, dtype=torch.float32) for a in (h_k, st_k, sd_k))
    sig_k = sigmas[:trainable].clone()
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)

    def sampling():
        idx = torch.randint(len(prompts), (P,), generator=gen).tolist()
        tokens = torch.tensor([tokenize(vocab_index, prompts[i], T) for i in idx for _ in range(G)],
                              dtype=torch.int64)
        x_init = torch.randn(P, 1, S, S, C, generator=gen).expand(P, G, S, S, C).reshape(n, S, S, C)
        xs, logps = [], []
        for b0 in range(0, n, batch):
            out = sampler_ref.sample(model, tokens[b0:b0 + batch], x_init[b0:b0 + batch], steps=N,
                                     shift=args.shift, kind="sde", sde="flow", eta=args.eta,
                                     generator=gen)
            xs.append(out["x"]), logps.append(out["logp"])
        return tokens, torch.cat(xs, 1), torch.cat(logps, 1)  # [N+1,n,S,S,C], [N,n]

    def train_call(x_all, logp_old, tokens, items, scale):
        """One packed model call: items [(traj, chunk, A)]. Returns (rows, ratios)."""
        b_idx, k_idx, it_idx = [], [], []
        for i, (b, ch, _) in enumerate(items):
            for k in range(starts[ch], starts[ch] + sizes[ch]):
                b_idx.append(b), k_idx.append(k), it_idx.append(i)
        b_idx, k_idx, it_idx = (torch.tensor(a) for a in (b_idx, k_idx, it_idx))
        x = x_all[k_idx, b_idx]
        x_next = x_all[k_idx + 1, b_idx]
        sigma = sig_k[k_idx]
        v = model(x, sigma, tokens[b_idx])
        e = lambda a: a[:, None, None, None]
        mu = x - e(h_k[k_idx]) * (v + e(st_k[k_idx] ** 2 / (2.0 * sigma)) * (x + e(1.0 - sigma) * v))
        std = sd_k[k_idx]
        lp = (-(x_next - mu) ** 2 / e(2.0 * std ** 2)).reshape(len(k_idx), -1).mean(1)
        lp = lp - std.log() - half_log_2pi  # [rows]
        m = len(items)
        cnt = torch.zeros(m).index_add_(0, it_idx, torch.ones(len(k_idx)))
        new = torch.zeros(m).index_add(0, it_idx, lp) / cnt
        old = torch.zeros(m).index_add_(0, it_idx, logp_old[k_idx, b_idx]) / cnt
        adv = torch.tensor([a for _, _, a in items])
        ratio = torch.exp(new - old)
        eps = args.clip_eps
        loss = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - eps, 1.0 + eps))
        (scale * loss.sum()).backward()
        return len(k_idx), ratio.detach()

    def optimize(x_all, logp_old, tokens, rewards):
        adv = grpo_ref.advantages(rewards.view(P, G), clip=args.adv_clip).reshape(n)
        chosen = [sorted(torch.randperm(K, generator=gen)[:n_train].tolist()) for _ in range(n)]
        per_iteration = args.optimizer_step == "iteration"
        scale = 1.0 / ((P if per_iteration else 1) * G * n_train)
        rows = calls = 0
        ratios = []
        for g in range(P):
            items = [(b, ch, float(adv[b])) for b in range(g * G, (g + 1) * G) for ch in chosen[b]
                     if float(adv[b]) != 0.0]
            if not per_iteration or g == 0:
                opt.zero_grad()
            first = 0
            while first < len(items):
                last, used = first, 0
                while last < len(items) and used + sizes[items[last][1]] <= batch:
                    used += sizes[items[last][1]]
                    last += 1
                r, ratio = train_call(x_all, logp_old, tokens, items[first:last], scale)
                rows, calls = rows + r, calls + 1
                ratios.append(ratio)
                first = last
            if not per_iteration or g == P - 1:
                torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
                opt.step()
        ratios = torch.cat(ratios) if ratios else torch.ones(1)
        return rows, calls, float(ratios.min()), float(ratios.max())

    res = {k: [] for k in ("sec_sampling", "sec_optimize", "rows", "calls", "ratio_min",
                           "ratio_max")}
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        tokens, x_all, logp_old = sampling()
        t1 = time.perf_counter()
        rewards = torch.rand(n, generator=gen)  # stand-in for align: not timed (see above)
        t2 = time.perf_counter()
        rows, calls, rmin, rmax = optimize(x_all, logp_old, tokens, rewards)
        t3 = time.perf_counter()
        for k, v in (("sec_sampling", t1 - t0), ("sec_optimize", t3 - t2), ("rows", rows),
                     ("calls", calls), ("ratio_min", rmin), ("ratio_max", rmax)):
            res[k].append(round(v, 6) if isinstance(v, float) else v)
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "threads": args.threads,
                      "openblas_threads": os.environ["OPENBLAS_NUM_THREADS"],
                      "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                      "model": args.model, "prompts_per_iter": P, "group_size": G, "steps": N,
                      "chunks": sizes, "n_train": n_train, "batch": batch, "eta": args.eta,
                      "optimizer_step": args.optimizer_step, **res}))


if __name__ == "__main__":
    main()
