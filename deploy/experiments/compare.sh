#!/usr/bin/env bash
# The paper's comparison on our model: base vs step-level GRPO vs Chunk-GRPO (auto chunks) vs
# Chunk-GRPO with weighted sampling, plus the fixed-chunk ablation, same seeds and compute, each
# scored on the held-out prompts with the ODE sampler and fixed seeds. Writes every run under
# OUT (default var/compare) and prints the table (also OUT/table.md). Finished runs are kept, so
# a second call continues an interrupted comparison; a call whose settings differ from those a
# finished run (or the base evaluation) was made with stops rather than mix the two.
#   deploy/experiments/compare.sh [ITERATIONS=150] [SEEDS="1 2 3"]
# Environment: OUT, WORKER (bin/chunkgrpo-worker), BASE (models/shapes-small.safetensors),
#              EXTRA (extra JSON fields for every GRPO run, e.g. '"lr": 5e-5'),
#              RUNS (run names to do, default all), JOBS (runs at once, default 1),
#              BACKEND (cpu or cuda, for every run), EVAL_EVERY (default 0: the end only),
#              EVAL_SEEDS (seeds per held-out prompt, default 2: 128 images, the README's table;
#              8 gives 512 and halves the error of a gain) and EVAL_SEED (their noise seed, default 0).
set -euo pipefail
cd "$(dirname "$0")/../.."
iterations=${1:-150} seeds=${2:-1 2 3}
out=${OUT:-var/compare} worker=${WORKER:-bin/chunkgrpo-worker}
base=${BASE:-models/shapes-small.safetensors} extra=${EXTRA:-} jobs=${JOBS:-1}
backend=${BACKEND:+--backend $BACKEND} eval_every=${EVAL_EVERY:-0}
eval_seeds=${EVAL_SEEDS:-2} eval_seed=${EVAL_SEED:-0}
mkdir -p "$out"

# name | JSON fields of the run
runs=(
  'grpo|"method": "grpo"'
  'chunk_grpo_auto|"method": "chunk_grpo", "chunks": "auto"'
  'chunk_grpo_auto_weighted|"method": "chunk_grpo", "chunks": "auto", "weighted_sampling": true'
  'chunks_2_3_4_7|"method": "chunk_grpo", "chunks": "2,3,4,7"'
  'chunks_uniform_4|"method": "chunk_grpo", "chunks": "uniform:4"'
  'chunks_one_16|"method": "chunk_grpo", "chunks": "16", "train_fraction": 1.0'
)
# config_for FILE DONE: FILE.new holds the config wanted. A run whose result DONE exists is kept
# only if FILE, what it ran with, is that config: a changed ITERATIONS, EXTRA or evaluation must
# not mix old results into the table. Returns 0 when the run is still to do, 1 when it is done,
# 2 when it was done with another config (said on stderr).
config_for() {
  if [ -f "$2" ]; then
    local state=1; cmp -s "$1" "$1.new" || state=2
    rm -f "$1.new"
    [ "$state" -eq 2 ] && echo "compare.sh: $2 comes from another config than $1 (ITERATIONS," \
      "EXTRA, EVAL_SEEDS or EVAL_SEED changed?); use another OUT" >&2
    return "$state"
  fi
  mv "$1.new" "$1"
}

# the base model, evaluated exactly as the GRPO runs evaluate (same prompts, noise and batching)
printf '{"kind": "eval", "model": "%s", "ode_seeds": %s, "max_prompts": 64, "sde_prompts": 0, "seed": %s}\n' \
  "$base" "$eval_seeds" "$eval_seed" >"$out/base.json.new"
state=0; config_for "$out/base.json" "$out/base/eval.json" || state=$?
[ "$state" -eq 2 ] && exit 1
[ "$state" -eq 0 ] && "$worker" run "$out/base.json" --out "$out/base" $backend

one_run() { # one_run NAME SEED FIELDS: a GRPO run, resumed if it was interrupted
  local dir=$out/$1-$2
  printf '{"kind": "grpo", "model": "%s", "iterations": %s, "seed": %s, "eval_every": %s, "eval_prompts": 64, "eval_seeds": %s, "eval_seed": %s, %s%s}\n' \
    "$base" "$iterations" "$2" "$eval_every" "$eval_seeds" "$eval_seed" "$3" "${extra:+, $extra}" >"$dir.json.new"
  local state=0; config_for "$dir.json" "$dir/model.safetensors" || state=$?
  [ "$state" -eq 1 ] && return 0
  [ "$state" -eq 2 ] && return 1
  local resume=; [ -f "$dir/checkpoints/latest" ] && resume=--resume
  if "$worker" run "$dir.json" --out "$dir" $backend $resume >"$dir.log" 2>&1; then echo "done $1-$2"
  else echo "FAILED $1-$2 (see $dir.log)" >&2; return 1; fi
}
# Each run that fails or is refused names itself in $failed, so that an outcome counts however
# soon its job ends (wait -n only reports jobs still running when it is called).
failed=$out/failed.txt
: >"$failed"
for r in "${runs[@]}"; do # every seed of the paper's methods first, the ablation after
  name=${r%%|*} fields=${r#*|}
  [ -n "${RUNS:-}" ] && [[ " $RUNS " != *" $name "* ]] && continue
  for seed in $seeds; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    { one_run "$name" "$seed" "$fields" || echo "$name-$seed" >>"$failed"; } &
  done
done
wait
[ -s "$failed" ] && { echo "compare.sh: runs failed or refused: $(tr '\n' ' ' <"$failed")" >&2; exit 1; }
python3 - "$out" "$iterations" $seeds <<'PY' | tee "$out/table.md"
import json, statistics, sys, glob, os
out, iters, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
def final(path):  # the last held-out evaluation of a run folder
    evals = sorted(glob.glob(os.path.join(path, "eval", "iter-*", "eval.json")))
    return json.load(open(evals[-1]))["ode"]["align_mean"]
rows = [("base model", [json.load(open(f"{out}/base/eval.json"))["ode"]["align_mean"]])]
names = [("step-level GRPO", "grpo"), ("Chunk-GRPO (auto chunks)", "chunk_grpo_auto"),
         ("Chunk-GRPO + weighted sampling", "chunk_grpo_auto_weighted"),
         ("chunks [2,3,4,7]", "chunks_2_3_4_7"), ("chunks uniform 4x4", "chunks_uniform_4"),
         ("one chunk [16]", "chunks_one_16")]
for label, name in names:
    vals = [final(f"{out}/{name}-{s}") for s in seeds if os.path.isdir(f"{out}/{name}-{s}/eval")]
    if vals: rows.append((label, vals))
b = statistics.mean(rows[0][1]); g = statistics.mean(rows[1][1]) if len(rows) > 1 else None
ode = json.load(open(f"{out}/base/eval.json"))["ode"]
print(f"held-out align (ODE, 64 prompts x {ode['seeds']} seeds of noise seed {ode.get('noise_seed', 0)}), "
      f"{iters} iterations, seeds {' '.join(seeds)}\n")
print("| method | held-out align | spread over seeds | gain over base | relative gain |")
print("|---|---|---|---|---|")
for label, vals in rows:
    m = statistics.mean(vals); sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    rel = "" if g is None or g == b or label == "base model" else f"{(m - b) / (g - b):.2f}"
    spread = f"±{sd:.3f} (n={len(vals)})" if label != "base model" else "(deterministic)"
    print(f"| {label} | {m:.3f} | {spread} | {m - b:+.3f} | {rel} |")
PY
