#!/usr/bin/env bash
# make bench-engine: the engine against PyTorch's CPU forward/backward of the same module
# (tests/reference/dit.py) and against OpenBLAS's own sgemm, on this machine, in one run.
# Rounds alternate engine and PyTorch so that both see the same machine state; the table gives
# medians over all timed calls, the ratios of medians, and the per-round ratio range.
#   tests/bench/bench_engine.sh BENCH_BINARY PYTHON_WITH_TORCH
# Environment: PRESET (small), BATCH (32), ROUNDS (5), RUNS (5 timed calls per round),
#              THREADS (nproc), OUT (build/bench/engine.json)
set -euo pipefail
bench=$1 py=$2
preset=${PRESET:-small} batch=${BATCH:-32} rounds=${ROUNDS:-5} runs=${RUNS:-5}
threads=${THREADS:-$(nproc)} out=${OUT:-build/bench/engine.json}
if ! "$py" -c 'import torch' 2>/dev/null; then
    echo "bench-engine: $py cannot import torch; install it with CHUNKGRPO_WITH_TORCH=1 deploy/install-deps.sh" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
: >"$out"
for r in $(seq "$rounds"); do
    echo "round $r/$rounds" >&2
    "$bench" --preset "$preset" --batch "$batch" --runs "$runs" --threads "$threads" >>"$out"
    "$py" -B tests/bench/engine_torch.py --preset "$preset" --batch "$batch" --runs "$runs" \
        --threads "$threads" >>"$out"
done
"$py" -B - "$out" <<'PY'
import json, platform, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
eng = [r for r in rows if r["peer"] == "chunkgrpo"]
pt = [r for r in rows if r["peer"] == "pytorch"]
med = lambda rs, k: statistics.median([v for r in rs for v in r[k]])
gflop = eng[0]["forward_gflop"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"\nengine vs PyTorch {pt[0]['torch']} (CPU), preset {eng[0]['preset']}, batch {eng[0]['batch']}, "
      f"{eng[0]['threads']} threads, {len(eng)} rounds x {len(eng[0]['forward_ms'])} calls; {cpu}")
print("| pass | chunkgrpo ms | PyTorch ms | speed-up (median) | per-round range | chunkgrpo GFLOP/s |")
print("|---|---|---|---|---|---|")
for key, name, mult in (("forward_ms", "forward", 1), ("fwdbwd_ms", "forward + backward", 3)):
    e, p = med(eng, key), med(pt, key)
    per_round = [statistics.median(b[key]) / statistics.median(a[key]) for a, b in zip(eng, pt)]
    print(f"| {name} | {e:.1f} | {p:.1f} | {p / e:.2f}x | {min(per_round):.2f}x to {max(per_round):.2f}x "
          f"| {mult * gflop / (e / 1e3):.0f} |")
sg = statistics.median(r["sgemm_gflops"] for r in eng)
fb = 3 * gflop / (med(eng, "fwdbwd_ms") / 1e3)
print(f"\nOpenBLAS sgemm {eng[0]['sgemm_shape']} (M, K, N) with {eng[0]['threads']} threads: {sg:.0f} GFLOP/s "
      f"(median of rounds); the engine's forward + backward reaches {100 * fb / sg:.0f}% of it "
      f"(backward counted as 2x forward FLOPs, {gflop:.2f} GFLOP per forward).")
PY
