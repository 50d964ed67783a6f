#!/usr/bin/env bash
# make bench-grpo: seconds per Chunk-GRPO iteration by phase, the product against a PyTorch
# implementation of the same iteration (tests/bench/grpo_torch.py), on this machine, in one run.
# The C side is the real runner: `chunkgrpo-worker run CONFIG.json --out DIR` with a grpo config on
# MODEL (chunk_grpo, fixed chunks 2,1,2,11 so that no profile runs, train fraction 0.5, 4 prompts
# x 8 trajectories, 17 steps, batch 32, lr 1e-5, clip 1e-3), its phase seconds read from
# DIR/metrics.jsonl (sec_sampling, sec_reward, sec_optimize). The peer runs the same iteration on
# the same weights with the same batch shapes (see grpo_torch.py for what it does and does not do:
# its rewards are random numbers, so it has no reward phase).
# Rounds alternate chunkgrpo and PyTorch so that both see the same machine state; each round runs
# ITERATIONS iterations of which the first WARMUP are dropped; the table gives medians over all
# kept iterations, the ratio of medians, and the per-round ratio range.
#   tests/bench/bench_grpo.sh WORKER_BINARY PYTHON_WITH_TORCH
# On a machine shared with other busy processes, export OMP_WAIT_POLICY=PASSIVE for both peers
# (see bench_sample.sh); the table shows the policy each peer ran with.
# SHAPE=demo benchmarks the shipped demo's iteration instead (deploy/experiments/demo-chunk-grpo.json:
# 16 prompts x 8 trajectories, 11 steps, eta 1.2, chunks 1,1,1,7 all trained, batch 64, one AdamW
# step per iteration with beta1 0.98, lr 2e-5).
# Environment: SHAPE (paper), MODEL (models/shapes-small.safetensors), ROUNDS (3), ITERATIONS (6
#              per round), WARMUP (1 dropped per round), THREADS (nproc), OUT
#              (build/bench/grpo[-demo].json), WORK (build/bench/grpo[-demo]: configs, run folders
#              and logs)
set -euo pipefail
worker=$1 py=$2
shape=${SHAPE:-paper}
case $shape in
    paper) P=4 steps=17 chunks=2,1,2,11 frac=0.5 eta=0.7 lr=1e-5 beta1=0.9 opt_step=group batch=32 suffix= ;;
    demo) P=16 steps=11 chunks=1,1,1,7 frac=1.0 eta=1.2 lr=2e-5 beta1=0.98 opt_step=iteration batch=64 suffix=-demo ;;
    *) echo "bench-grpo: SHAPE must be paper or demo, not '$shape'" >&2; exit 1 ;;
esac
model=${MODEL:-models/shapes-small.safetensors} rounds=${ROUNDS:-3} iters=${ITERATIONS:-6}
warmup=${WARMUP:-1} threads=${THREADS:-$(nproc)} out=${OUT:-build/bench/grpo$suffix.json}
work=${WORK:-build/bench/grpo$suffix}
if ! "$py" -c 'import torch' 2>/dev/null; then
    echo "bench-grpo: $py cannot import torch; install it with CHUNKGRPO_WITH_TORCH=1 deploy/install-deps.sh" >&2
    exit 1
fi
if [ "$iters" -le "$warmup" ]; then
    echo "bench-grpo: ITERATIONS ($iters) must exceed WARMUP ($warmup)" >&2
    exit 1
fi
[ -f "$model" ] || { echo "bench-grpo: no model at $model" >&2; exit 1; }
mkdir -p "$(dirname "$out")" "$work"
: >"$out"
"$worker" render --list train >"$work/prompts.txt"
# The end-of-run evaluation (always done by the runner) and the final checkpoint fall outside the
# phase timers; eval_prompts 1 and eval_seeds 1 keep them short.
cat >"$work/config.json" <<EOF
{
  "kind": "grpo",
  "model": "$model",
  "method": "chunk_grpo",
  "chunks": "$chunks",
  "train_fraction": $frac,
  "iterations": $iters,
  "prompts_per_iter": $P,
  "group_size": 8,
  "same_noise": true,
  "steps": $steps,
  "shift": 3,
  "eta": $eta,
  "sde": "flow",
  "lr": $lr,
  "beta1": $beta1,
  "clip_eps": 1e-3,
  "adv_clip": 5,
  "weight_decay": 1e-4,
  "grad_clip": 1.0,
  "kl_coef": 0,
  "optimizer_step": "$opt_step",
  "eval_every": 0,
  "eval_prompts": 1,
  "eval_seeds": 1,
  "checkpoint_every": 1000000,
  "batch": $batch,
  "threads": $threads,
  "seed": 1
}
EOF
for r in $(seq "$rounds"); do
    echo "round $r/$rounds" >&2
    dir="$work/run-$r"
    rm -rf "$dir"
    if ! "$worker" run "$work/config.json" --out "$dir" </dev/null >"$work/run-$r.log" 2>&1; then
        echo "bench-grpo: the worker failed (round $r); the end of $work/run-$r.log:" >&2
        tail -n 20 "$work/run-$r.log" >&2
        exit 1
    fi
    "$py" -B - "$dir/metrics.jsonl" "$threads" "${OMP_WAIT_POLICY:-default}" >>"$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if "sec_sampling" in r]
res = {"peer": "chunkgrpo", "threads": int(sys.argv[2]), "omp_wait_policy": sys.argv[3],
       "chunks": rows[0]["chunks"]}
for k in ("sec_sampling", "sec_reward", "sec_optimize"):
    res[k] = [r[k] for r in rows]
# transitions trained per iteration: the items of every chunk times the chunk's size
res["rows"] = [sum(c["count"] * s for c, s in zip(r["chunk_ratio"], r["chunks"])) for r in rows]
res["tied_group_fraction"] = [r["tied_group_fraction"] for r in rows]
res["ratio_min"] = [r["ratio_min"] for r in rows]
res["ratio_max"] = [r["ratio_max"] for r in rows]
print(json.dumps(res))
PY
    "$py" -B tests/bench/grpo_torch.py --model "$model" --prompts "$work/prompts.txt" \
        --iterations "$iters" --prompts-per-iter "$P" --group-size 8 --steps "$steps" --shift 3 \
        --eta "$eta" --chunks "$chunks" --train-fraction "$frac" --clip-eps 1e-3 --adv-clip 5 \
        --lr "$lr" --beta1 "$beta1" --optimizer-step "$opt_step" --weight-decay 1e-4 \
        --grad-clip 1.0 --batch "$batch" --threads "$threads" --seed 1 >>"$out"
done
"$py" -B - "$out" "$warmup" "$model" <<'PY'
import json, platform, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
warm, model = int(sys.argv[2]), sys.argv[3]
eng = [r for r in rows if r["peer"] == "chunkgrpo"]
pt = [r for r in rows if r["peer"] == "pytorch"]
for r in eng:  # total per iteration: every phase the runner times
    r["total"] = [a + b + c for a, b, c in zip(r["sec_sampling"], r["sec_reward"], r["sec_optimize"])]
for r in pt:  # no reward phase (random rewards, see grpo_torch.py)
    r["total"] = [a + b for a, b in zip(r["sec_sampling"], r["sec_optimize"])]
for r in eng + pt:  # optimize milliseconds per trained transition
    r["opt_per_row"] = [1e3 * s / max(n, 1) for s, n in zip(r["sec_optimize"], r["rows"])]
kept = lambda r, k: r[k][warm:]
med = lambda rs, k: statistics.median([v for r in rs for v in kept(r, k)])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
e0, p0 = eng[0], pt[0]
n_kept = len(kept(e0, "total"))
print(f"\nChunk-GRPO iteration, chunkgrpo-worker vs PyTorch {p0['torch']} (CPU), {model}: "
      f"{p0['prompts_per_iter']} prompts x {p0['group_size']} trajectories, {p0['steps']} steps "
      f"(flow SDE, eta {p0['eta']}, shift 3), chunks {e0['chunks']}, {p0['n_train']} of "
      f"{len(p0['chunks'])} trained, batch {p0['batch']}, AdamW per {p0['optimizer_step']}; "
      f"{e0['threads']} threads, "
      f"{len(eng)} rounds x {n_kept} iterations (first {warm} of each round dropped); "
      f"OMP_WAIT_POLICY chunkgrpo {e0['omp_wait_policy']}, PyTorch {p0['omp_wait_policy']}; {cpu}")
print("| phase | chunkgrpo s | PyTorch s | speed-up (median) | per-round range |")
print("|---|---|---|---|---|")
def line(name, key, unit=1.0, fmt="{:.3f}"):
    e, p = med(eng, key), med(pt, key)
    per_round = [statistics.median(kept(b, key)) / statistics.median(kept(a, key)) for a, b in zip(eng, pt)]
    print(f"| {name} | {fmt.format(e * unit)} | {fmt.format(p * unit)} | {p / e:.2f}x | "
          f"{min(per_round):.2f}x to {max(per_round):.2f}x |")
    return e, p
line("sampling", "sec_sampling")
print(f"| reward | {med(eng, 'sec_reward'):.4f} | not measured (random rewards) | | |")
line("optimize", "sec_optimize")
line("optimize, ms per trained transition", "opt_per_row", fmt="{:.2f}")
e, p = line("total (chunkgrpo: sampling + reward + optimize; PyTorch: sampling + optimize)", "total")
print(f"| iterations per second | {1 / e:.3f} | {1 / p:.3f} | {p / e:.2f}x | |")
re_, rp = med(eng, "rows"), med(pt, "rows")
tied = max(v for r in eng for v in kept(r, "tied_group_fraction"))
print(f"\nTrained transitions per iteration (median): chunkgrpo {re_:.0f}, PyTorch {rp:.0f} (each side "
      f"draws its own chunks at random; both pack them into calls of at most {p0['batch']} rows and "
      f"run only the packed rows). PyTorch training calls per iteration (median): "
      f"{med(pt, 'calls'):.0f}. Largest fraction of chunkgrpo groups with all-equal rewards (not "
      f"trained): {tied:.2f}. Chunk ratios seen (a check that both recompute the rollout's log-probabilities):"
      f" chunkgrpo {min(v for r in eng for v in kept(r, 'ratio_min')):.6f} to "
      f"{max(v for r in eng for v in kept(r, 'ratio_max')):.6f}, PyTorch "
      f"{min(v for r in pt for v in kept(r, 'ratio_min')):.6f} to {max(v for r in pt for v in kept(r, 'ratio_max')):.6f}.")
PY
