"""PyTorch CPU peer for the engine benchmark: times the reference model (tests/reference/dit.py).

    /usr/bin/python3 tests/bench/engine_torch.py --preset small --batch 32 --runs 10 --threads 2

Builds the model in float32 with random non-zero weights (so no path is skipped as zero), random
inputs (tokens with some PAD), warms up, then times `runs` forward passes under no_grad and `runs`
forward+backward passes (loss = sum(v * dv)). Prints one JSON line:
{"peer":"pytorch","torch":...,"threads":...,"openblas_threads":...,"omp_wait_policy":...,
 "preset":...,"batch":...,"forward_ms":[...],"fwdbwd_ms":[...]}
"""

import argparse
import json
import os
import sys
import time

# torch and the reference modules are imported in main(), after the thread environment is set.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))

PRESETS = {
    "tiny": {"image_size": 16, "channels": 3, "patch": 4, "dim": 32, "depth": 2, "heads": 2,
             "mlp_ratio": 4, "text_len": 8, "vocab_size": 25},
    "small": {"image_size": 32, "channels": 3, "patch": 4, "dim": 128, "depth": 4, "heads": 4,
              "mlp_ratio": 4, "text_len": 12, "vocab_size": 64},
    "base": {"image_size": 64, "channels": 3, "patch": 4, "dim": 384, "depth": 12, "heads": 6,
             "mlp_ratio": 4, "text_len": 16, "vocab_size": 64},
}


def positive(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--batch", type=positive, default=32)
    ap.add_argument("--runs", type=positive, default=10)
    ap.add_argument("--threads", type=positive, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    # Debian's torch does its GEMMs in OpenBLAS (pthreads build), which starts its own pool of
    # nproc threads beside torch's OpenMP pool; both spin while idle, and on 2 cores the two pools
    # fight (fwd+bwd measured 2-10x slower, very noisy). Give OpenBLAS the same thread count and
    # make idle OpenMP threads sleep, so that `threads` cores are busy at any time. These are read
    # when the libraries load, hence before `import torch`; a value set by the caller wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    import dit
    from make_fixtures import randomize

    torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset]
    model = dit.DiT(cfg)
    randomize(model, args.seed)

    g = torch.Generator().manual_seed(args.seed + 1)
    B, S, C, T = args.batch, cfg["image_size"], cfg["channels"], cfg["text_len"]
    x = torch.randn(B, S, S, C, generator=g)
    t = torch.rand(B, generator=g)
    tokens = torch.randint(2, cfg["vocab_size"], (B, T), generator=g)
    lengths = torch.randint(0, T + 1, (B,), generator=g)  # 0 = all PAD (unconditional)
    tokens[torch.arange(T)[None, :] >= lengths[:, None]] = 0
    dv = torch.randn(B, S, S, C, generator=g)

    def forward():
        with torch.no_grad():
            model(x, t, tokens)

    def fwdbwd():
        (model(x, t, tokens) * dv).sum().backward()

    def timed(fn):
        ms = []
        for _ in range(args.runs):
            model.zero_grad(set_to_none=False)  # outside the timed region
            t0 = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - t0) * 1e3)
        return ms

    for _ in range(2):  # warm-up: allocator, thread pool, first-call dispatch
        forward()
        fwdbwd()
    forward_ms = timed(forward)
    fwdbwd_ms = timed(fwdbwd)
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "threads": args.threads,
                      "openblas_threads": os.environ["OPENBLAS_NUM_THREADS"],
                      "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                      "preset": args.preset, "batch": B,
                      "forward_ms": [round(v, 3) for v in forward_ms],
                      "fwdbwd_ms": [round(v, 3) for v in fwdbwd_ms]}))


if __name__ == "__main__":
    main()
