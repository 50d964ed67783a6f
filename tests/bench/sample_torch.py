"""PyTorch CPU peer for the sampler benchmark: times tests/reference/sampler_ref.sample (the flow
SDE with per-step log-probabilities, recording every x) on the reference model.

    /usr/bin/python3 tests/bench/sample_torch.py --preset small --batch 32 --steps 17 --runs 5 --threads 2

Float32 model with random non-zero weights, prompts of varying length (some all PAD), the noise
drawn inside the timed call (as the engine does). Warms up once, then times `runs` calls under
no_grad. Prints one JSON line:
{"peer":"pytorch","torch":...,"threads":...,"openblas_threads":...,"omp_wait_policy":...,
 "preset":...,"batch":...,"steps":...,"mean_logp":...,"sample_ms":[...]}
"""

import argparse
import json
import os
import sys
import time

# torch and the reference modules are imported in main(), after the thread environment is set.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def positive(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=positive, default=32)
    ap.add_argument("--steps", type=positive, default=17)
    ap.add_argument("--runs", type=positive, default=5)
    ap.add_argument("--threads", type=positive, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    # The thread setup of engine_torch.py (see the comment there): OpenBLAS gets the same thread
    # count as torch and idle OpenMP threads sleep. Read at library load, hence before the import;
    # a value set by the caller wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    import dit
    import sampler_ref
    from engine_torch import PRESETS
    from make_fixtures import randomize

    if args.preset not in PRESETS:
        ap.error(f"--preset must be one of {sorted(PRESETS)}")
    torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset]
    model = dit.DiT(cfg)
    randomize(model, args.seed)
    model.eval()

    g = torch.Generator().manual_seed(args.seed + 1)
    B, S, C, T = args.batch, cfg["image_size"], cfg["channels"], cfg["text_len"]
    tokens = torch.zeros(B, T, dtype=torch.int64)
    for b in range(B):  # as bench_sample.c
        for i in range((b * 5) % (T + 1)):
            tokens[b, i] = 2 + (b + 3 * i) % 60

    def run():
        x_init = torch.randn(B, S, S, C, generator=g)
        return sampler_ref.sample(model, tokens, x_init, steps=args.steps, shift=3.0, kind="sde",
                                  sde="flow", eta=0.7, generator=g)

    run()  # warm-up: allocator, thread pool, first-call dispatch
    ms = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        out = run()
        ms.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "threads": args.threads,
                      "openblas_threads": os.environ["OPENBLAS_NUM_THREADS"],
                      "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                      "preset": args.preset, "batch": B, "steps": args.steps,
                      "mean_logp": round(out["logp"].mean().item(), 4),
                      "sample_ms": [round(v, 3) for v in ms]}))


if __name__ == "__main__":
    main()
