#!/usr/bin/env bash
# make bench-sample: SDE sampling throughput of the engine against PyTorch running the reference
# sampler (tests/reference/sampler_ref.py on tests/reference/dit.py), on this machine, in one run.
# Both sample a batch of BATCH trajectories of STEPS flow-SDE transitions (eta 0.7, shift 3),
# drawing the noise and recording every x and log-probability, as a GRPO rollout does.
# Rounds alternate engine and PyTorch so that both see the same machine state; the table gives
# medians over all timed calls, image-steps per second (BATCH * STEPS / time), the ratio of
# medians and the per-round ratio range.
#   tests/bench/bench_sample.sh BENCH_BINARY PYTHON_WITH_TORCH
# On a machine shared with other busy processes, the engine's OpenMP threads (which spin while
# idle, GOMP's default) lose whole time slices at every barrier: measured here 1.4 s per batch on
# quiet moments and 12.5 s beside another session's training run. Export OMP_WAIT_POLICY=PASSIVE
# for both peers then (the PyTorch peer uses PASSIVE anyway, see engine_torch.py); the table
# shows the policy each peer ran with.
# Environment: PRESET (small), BATCH (32), STEPS (17), ROUNDS (5), RUNS (3 timed calls per
#              round), THREADS (nproc), OUT (build/bench/sample.json)
set -euo pipefail
bench=$1 py=$2
preset=${PRESET:-small} batch=${BATCH:-32} steps=${STEPS:-17} rounds=${ROUNDS:-5} runs=${RUNS:-3}
threads=${THREADS:-$(nproc)} out=${OUT:-build/bench/sample.json}
if ! "$py" -c 'import torch' 2>/dev/null; then
    echo "bench-sample: $py cannot import torch; install it with CHUNKGRPO_WITH_TORCH=1 deploy/install-deps.sh" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
: >"$out"
for r in $(seq "$rounds"); do
    echo "round $r/$rounds" >&2
    "$bench" --preset "$preset" --batch "$batch" --steps "$steps" --runs "$runs" \
        --threads "$threads" >>"$out"
    "$py" -B tests/bench/sample_torch.py --preset "$preset" --batch "$batch" --steps "$steps" \
        --runs "$runs" --threads "$threads" >>"$out"
done
"$py" -B - "$out" <<'PY'
import json, platform, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
eng = [r for r in rows if r["peer"] == "chunkgrpo"]
pt = [r for r in rows if r["peer"] == "pytorch"]
med = lambda rs: statistics.median([v for r in rs for v in r["sample_ms"]])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
e0 = eng[0]
work = e0["batch"] * e0["steps"]
print(f"\nSDE sampling (flow, eta 0.7, shift 3), engine vs PyTorch {pt[0]['torch']} (CPU), preset {e0['preset']}, "
      f"batch {e0['batch']}, {e0['steps']} steps, {e0['threads']} threads, {len(eng)} rounds x "
      f"{len(e0['sample_ms'])} calls; OMP_WAIT_POLICY engine {e0['omp_wait_policy']}, PyTorch "
      f"{pt[0]['omp_wait_policy']}; {cpu}")
print("| sampler | ms per batch (median) | image-steps/s | speed-up (median) | per-round range |")
print("|---|---|---|---|---|")
e, p = med(eng), med(pt)
per_round = [statistics.median(b["sample_ms"]) / statistics.median(a["sample_ms"]) for a, b in zip(eng, pt)]
print(f"| chunkgrpo | {e:.1f} | {work / (e / 1e3):.0f} | {p / e:.2f}x | {min(per_round):.2f}x to {max(per_round):.2f}x |")
print(f"| PyTorch | {p:.1f} | {work / (p / 1e3):.0f} | 1.00x | |")
print(f"\nmean log-probability per transition: chunkgrpo {statistics.mean(r['mean_logp'] for r in eng):.3f}, "
      f"PyTorch {statistics.mean(r['mean_logp'] for r in pt):.3f} (different random weights; both near "
      f"-0.5 - mean log std - 0.919)")
PY
