"""PyTorch peer of the GPU benchmark: the same two workloads as the CUDA backend's benchmark, on the
reference model (tests/reference/dit.py) with the reference SDE (sampler_ref) and advantages
(grpo_ref), written the way a PyTorch user would write them.

    python3 tests/gpu/bench_torch.py --preset small,base --mode eager,compile --precision tf32
    /usr/bin/python3 tests/gpu/bench_torch.py --preset small --device cpu --repeat 1 --warmup 0

Model. Preset small (image 32, patch 4, dim 128, depth 4, heads 4, mlp 4, text_len 12) or base
  (image 64, patch 4, dim 384, depth 12, heads 6, mlp 4, text_len 16); channels 3, vocab_size 64.
  Every parameter tensor ~ normal(0, 0.02) from a seeded CPU generator in checkpoint order (speed
  does not depend on the values; no zero adaLN init, so nothing is trivially zero). float32
  parameters; --precision sets the matmul precision: fp32 (TF32 off), tf32 (TF32 on for matmul
  and cuDNN), bf16 (torch.autocast bfloat16 around every forward; the SDE arithmetic stays fp32).
Tokens. Trajectory (or prompt) k: position i < 5 holds 2 + ((k*7 + i*3) % 62), the rest PAD (0).
Sampling. n = 64 trajectories (--n overrides), trajectory k with the tokens of k; one model call
  of batch n per step; flow SDE, 17 steps, shift 3, eta 0.7, no guidance, under torch.no_grad;
  records every x_i ([18, n, S, S, 3]) and each step's log-probability (sampler_ref.sde_step and
  sde_logp: logp = MEAN over the image elements); initial and step noise from torch.randn on the
  device, drawn inside the timed run. Metric: image-steps per second = n*17 / seconds.
Training iteration (one Chunk-GRPO iteration). Sample P=4 prompts x G=8 = 32 trajectories as
  above (n = 32, batch 32, trajectory k has the tokens of prompt k//8, the 8 of a group share
  their initial noise). Rewards r_k = ((k*37) % 11) / 10 (no reward model); advantages per group
  of 8 (grpo_ref.advantages, clip 5). Chunks: 4 uniform chunks of 4 over the 16 trainable
  transitions 0..15; every trajectory trains chunks 0 and 2 (transitions 0-3 and 8-11), 8 rows
  per trajectory, 64 per group. Per group: zero the gradients; two model calls of 32 rows (4
  trajectories x 8 rows, in trajectory order, each trajectory's rows 0,1,2,3,8,9,10,11), each a
  forward with grad at (x_k, sigma_k, prompt), mu = SDE mean, logp_new = sde_logp of the recorded
  x_{k+1}; per (trajectory, chunk) ratio r = exp(mean logp_new - mean logp_old) and loss =
  max(-A r, -A clamp(r, 1-1e-3, 1+1e-3)) (grpo_ref.chunk_loss), summed and scaled by 1/(8*2)
  (G x chunks trained), one backward; after the group clip_grad_norm_(1.0) and one
  torch.optim.AdamW step (lr 1e-5, betas 0.9/0.999, eps 1e-8, weight_decay 1e-4; the fused
  implementation on CUDA). One iteration = 17 sampling calls of 32 rows + 8 forward+backward
  calls of 32 rows + 4 AdamW steps. Metric: seconds per iteration.
Timing. --warmup runs (default 2), then --repeat timed runs (default 7), each between
  torch.cuda.synchronize() calls; the median is reported with all the times. Warm-up covers
  torch.compile's compilation (its seconds are reported as warmup_secs).
Modes. eager, or compile: torch.compile(model, dynamic=False) used for every forward (three
  graphs: sampling batch n, sampling batch 32, training batch 32 with its backward). When compile
  is unavailable (torch 1.x) or fails, that (preset, mode) prints a JSON line with "error".
FLOPs. F = forward FLOPs per sample, the formula of worker/engine/model.c model_forward_flops;
  sample_tflops = n*17*F / median seconds; iter_tflops = (32*17*F + 3*256*F) / median seconds
  (256 training rows, backward counted as twice the forward).

Prints one JSON line per (preset, mode):
{"peer":"pytorch","torch":...,"device":...,"preset":...,"mode":...,"precision":...,
 "sample_image_steps_per_s":...,"sample_secs":[...],"iter_secs_median":...,"iter_secs":[...],
 "sample_tflops":...,"iter_tflops":..., "sample_n":...,"flops_per_forward_sample":...,
 "warmup_secs":...,"sample_logp_mean":...,"iter_ratio_maxdev":...,"adamw":...}
sample_logp_mean (mean logp of the last sampling run) and iter_ratio_maxdev (max |r - 1| over
the last iteration's chunks) are sanity values to set beside the C side's, not speeds.
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time

# torch and the reference modules are imported in main(), after the thread environment is set.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))

PRESETS = {
    "small": {"image_size": 32, "channels": 3, "patch": 4, "dim": 128, "depth": 4, "heads": 4,
              "mlp_ratio": 4, "text_len": 12, "vocab_size": 64},
    "base": {"image_size": 64, "channels": 3, "patch": 4, "dim": 384, "depth": 12, "heads": 6,
             "mlp_ratio": 4, "text_len": 16, "vocab_size": 64},
}
STEPS, SHIFT, ETA = 17, 3.0, 0.7
P, G = 4, 8                          # prompts x group size per iteration
TRAIN_STEPS = [0, 1, 2, 3, 8, 9, 10, 11]  # chunks 0 and 2 of 4 uniform chunks of 4
CHUNKS_TRAINED, CHUNK_SIZE = 2, 4
TRAJ_PER_CALL = 4                    # 4 trajectories x 8 rows = 32 rows per training call
CLIP_EPS, ADV_CLIP, GRAD_CLIP = 1e-3, 5.0, 1.0
FREQ_DIM = 256


def positive(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def non_negative(s):
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return v


def choice_list(allowed):
    def parse(s):
        items = [x for x in s.split(",") if x]
        bad = [x for x in items if x not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"{s!r}: expected a comma-separated list of "
                                             f"{'/'.join(allowed)}")
        return items
    return parse


def forward_flops(cfg):
    """FLOPs of one sample's forward pass: worker/engine/model.c model_forward_flops."""
    d, F = cfg["dim"], cfg["dim"] * cfg["mlp_ratio"]
    N = (cfg["image_size"] // cfg["patch"]) ** 2
    P_ = cfg["patch"] ** 2 * cfg["channels"]
    S = cfg["text_len"] + N
    f = 2 * d * d + 2 * N * P_ * d + 2 * FREQ_DIM * d + 2 * d * d + 2 * d * 2 * d + 2 * N * d * P_
    block = 2 * d * 6 * d + 2 * S * d * 3 * d + 2 * 2 * S * S * d + 2 * S * d * d + 2 * 2 * S * d * F
    return float(f + cfg["depth"] * block)


def token_rows(torch, ks, T, device):
    """[len(ks), T] int64: row j has 2 + ((k*7 + i*3) % 62) at positions i < 5, PAD after."""
    rows = [[2 + (k * 7 + i * 3) % 62 if i < 5 else 0 for i in range(T)] for k in ks]
    return torch.tensor(rows, dtype=torch.int64, device=device)


def run_one(torch, dit, sampler_ref, grpo_ref, args, preset, mode, device):
    """Benchmarks one (preset, mode); returns the result dict."""
    cfg = PRESETS[preset]
    S, C, T = cfg["image_size"], cfg["channels"], cfg["text_len"]
    F = forward_flops(cfg)
    n_s = args.n
    n_t = P * G

    model = dit.DiT(cfg)
    g_cpu = torch.Generator().manual_seed(args.seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, shape in dit.tensor_specs(cfg):
            params[name].copy_(torch.randn(shape, generator=g_cpu) * 0.02)
    model.to(device)
    plist = list(model.parameters())

    fn = model
    if mode == "compile":
        if not hasattr(torch, "compile"):
            raise RuntimeError(f"torch.compile is not available in torch {torch.__version__}")
        torch._dynamo.reset()
        fn = torch.compile(model, dynamic=False)
    if args.precision == "bf16":
        amp = lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    else:
        amp = contextlib.nullcontext

    def velocity(x, t, tok):
        with amp():
            v = fn(x, t, tok)
        return v.float()

    adamw_kind = "default"
    opt = None
    if device.type == "cuda":
        try:
            opt = torch.optim.AdamW(plist, lr=1e-5, betas=(0.9, 0.999), eps=1e-8,
                                    weight_decay=1e-4, fused=True)
            adamw_kind = "fused"
        except (TypeError, RuntimeError):
            opt = None
    if opt is None:
        opt = torch.optim.AdamW(plist, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)

    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    sigmas = sampler_ref.flow_schedule(STEPS, SHIFT, torch.float32)  # CPU: floats for sde_step
    t_rows = {n: [torch.full((n,), float(sigmas[i]), device=device) for i in range(STEPS)]
              for n in sorted({n_s, n_t})}

    def sample(tokens, x_init):
        """The flow SDE from x_init [n,S,S,C]: x [STEPS+1,n,S,S,C], logp [STEPS,n]."""
        n = x_init.shape[0]
        xs = torch.empty((STEPS + 1,) + tuple(x_init.shape), device=device)
        logp = torch.empty(STEPS, n, device=device)
        xs[0] = x_init
        for i in range(STEPS):
            x = xs[i]
            v = velocity(x, t_rows[n][i], tokens)
            mu, std = sampler_ref.sde_step(x, v, sigmas, i, "flow", ETA)
            xs[i + 1] = mu + std * torch.randn(x.shape, device=device, generator=gen)
            logp[i] = sampler_ref.sde_logp(xs[i + 1], mu, std)
        return xs, logp

    # -- sampling workload
    tok_s = token_rows(torch, range(n_s), T, device)

    def sampling_run():
        x_init = torch.randn((n_s, S, S, C), device=device, generator=gen)
        with torch.no_grad():
            return sample(tok_s, x_init)

    # -- training workload: constants built once, on the device
    tok_t = token_rows(torch, [k // G for k in range(n_t)], T, device)
    rewards = torch.tensor([((k * 37) % 11) / 10.0 for k in range(n_t)], device=device)
    k_rows = torch.tensor(TRAIN_STEPS * TRAJ_PER_CALL, device=device)          # [32]
    h, st, sd = [], [], []
    for k in TRAIN_STEPS * TRAJ_PER_CALL:
        s0, s1 = float(sigmas[k]), float(sigmas[k + 1])
        st_k = sampler_ref.sde_sigma_t(sigmas, k, "flow", ETA)
        h.append(s0 - s1), st.append(st_k), sd.append(st_k * math.sqrt(s0 - s1))
    col = lambda a: torch.tensor(a, device=device).view(-1, 1, 1, 1)
    h_r, st_r, sd_r = col(h), col(st), col(sd)
    sig_rows = sigmas[k_rows.cpu()].to(device)                                  # [32]
    sig_r = sig_rows.view(-1, 1, 1, 1)
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    calls = []  # per group g: two (b_rows [32], trajectories [4])
    for g in range(P):
        for c in range(G // TRAJ_PER_CALL):
            trajs = [g * G + c * TRAJ_PER_CALL + j for j in range(TRAJ_PER_CALL)]
            b_rows = [b for b in trajs for _ in TRAIN_STEPS]
            calls.append((g, torch.tensor(b_rows, device=device),
                          torch.tensor(trajs, device=device)))
    scale = 1.0 / (G * CHUNKS_TRAINED)

    def iteration():
        x_init = torch.randn((P, 1, S, S, C), device=device, generator=gen)
        x_init = x_init.expand(P, G, S, S, C).reshape(n_t, S, S, C)
        with torch.no_grad():
            xs, logp_old = sample(tok_t, x_init)
        adv = grpo_ref.advantages(rewards.view(P, G), clip=ADV_CLIP).reshape(n_t)
        devs = []
        for idx, (g, b_rows, trajs) in enumerate(calls):
            if idx % 2 == 0:
                opt.zero_grad(set_to_none=True)
            x, x_next = xs[k_rows, b_rows], xs[k_rows + 1, b_rows]
            v = velocity(x, sig_rows, tok_t[b_rows])
            mu = x - h_r * (v + st_r ** 2 / (2.0 * sig_r) * (x + (1.0 - sig_r) * v))
            lp = (-(x_next - mu) ** 2 / (2.0 * sd_r ** 2)).flatten(1).mean(1)
            lp = lp - sd_r.flatten().log() - half_log_2pi                          # [32]
            shape = (TRAJ_PER_CALL, CHUNKS_TRAINED, CHUNK_SIZE)
            new = lp.view(shape).mean(-1)                                           # [4, 2]
            old = logp_old[k_rows, b_rows].view(shape).mean(-1)
            ratio = torch.exp(new - old)
            a = adv[trajs].view(-1, 1)
            loss = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1.0 - CLIP_EPS,
                                                              1.0 + CLIP_EPS))
            (scale * loss.sum()).backward()
            devs.append((ratio.detach() - 1.0).abs().max())
            if idx % 2 == 1:
                torch.nn.utils.clip_grad_norm_(plist, GRAD_CLIP)
                opt.step()
        return torch.stack(devs).max()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn_run, count):
        secs, out = [], None
        for _ in range(count):
            sync()
            t0 = time.perf_counter()
            out = fn_run()
            sync()
            secs.append(time.perf_counter() - t0)
        return secs, out

    w0 = time.perf_counter()
    timed(sampling_run, args.warmup)
    sample_secs, (_, logp) = timed(sampling_run, args.repeat)
    w1 = time.perf_counter()
    timed(iteration, args.warmup)
    w2 = time.perf_counter()
    iter_secs, ratio_dev = timed(iteration, args.repeat)
    warmup_secs = (w1 - w0 - sum(sample_secs)) + (w2 - w1)

    s_med, i_med = statistics.median(sample_secs), statistics.median(iter_secs)
    return {"sample_image_steps_per_s": round(n_s * STEPS / s_med, 3),
            "sample_secs": [round(s, 6) for s in sample_secs],
            "iter_secs_median": round(i_med, 6),
            "iter_secs": [round(s, 6) for s in iter_secs],
            "sample_tflops": round(n_s * STEPS * F / s_med / 1e12, 4),
            "iter_tflops": round((n_t * STEPS * F + 3 * 256 * F) / i_med / 1e12, 4),
            "sample_n": n_s, "flops_per_forward_sample": F,
            "warmup_secs": round(warmup_secs, 3),
            "sample_logp_mean": round(float(logp.mean()), 6),
            "iter_ratio_maxdev": float(ratio_dev), "adamw": adamw_kind}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", type=choice_list(sorted(PRESETS)), default=["small"],
                    help="small, base, or a comma-separated list (default small)")
    ap.add_argument("--mode", type=choice_list(["eager", "compile"]), default=["eager"],
                    help="eager, compile, or a comma-separated list (default eager)")
    ap.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="tf32")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--repeat", type=positive, default=7)
    ap.add_argument("--warmup", type=non_negative, default=2)
    ap.add_argument("--n", type=positive, default=64,
                    help="sampling trajectories (default 64; smaller only for a quick test)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.device == "cpu":  # Debian's OpenBLAS torch: see tests/bench/engine_torch.py
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(os.cpu_count() or 1))
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    import dit
    import grpo_ref
    import sampler_ref

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA device visible to torch")
        if device.index is None:  # "cuda" alone: the current device
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        name = f"cpu ({torch.get_num_threads()} threads)"
    else:
        ap.error(f"--device {args.device}: expected cuda, cuda:N or cpu")
    tf32 = args.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32

    for preset in args.preset:
        for mode in args.mode:
            head = {"peer": "pytorch", "torch": torch.__version__, "device": name,
                    "preset": preset, "mode": mode, "precision": args.precision}
            try:
                res = run_one(torch, dit, sampler_ref, grpo_ref, args, preset, mode, device)
            except Exception as e:  # a compile failure must not stop the other runs
                if mode != "compile":
                    raise
                msg = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
                res = {"error": msg[:600]}
            print(json.dumps({**head, **res}), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
