#!/usr/bin/env bash
# The paper's comparison on our model: base vs step-level GRPO vs Chunk-GRPO (auto chunks) vs
# Chunk-GRPO with weighted sampling, plus the fixed-chunk ablation, same seeds and compute, each
# scored on the held-out prompts with the ODE sampler and fixed seeds. Every run is the BASIS
# config with its method's fields, the seed, the iterations and EXTRA on top, so the comparison is
# made at the demo's settings unless told otherwise. Writes every run under OUT (default
# var/compare) and prints the table (also OUT/table.md). Finished runs are kept, so a second call
# continues an interrupted comparison; a call whose settings differ from those a finished run (or
# the base evaluation) was made with stops rather than mix the two.
#   deploy/experiments/compare.sh [ITERATIONS=the basis's, else the runner's] [SEEDS="5 6 7"]
# Environment: OUT, WORKER (bin/chunkgrpo-worker), BASE (the basis's model),
#              BASIS (the grpo config every run starts from, default
#                     deploy/experiments/demo-chunk-grpo.json; "none": the runner's defaults, the
#                     paper's settings: 17 steps, half of the chunks trained, eta 0.7),
#              EXTRA (extra JSON fields for every GRPO run, e.g. '"lr": 5e-5'),
#              RUNS (run names to do, default all), JOBS (runs at once, default 1),
#              BACKEND (cpu or cuda, for every run), EVAL_EVERY (default 0: the end only),
#              EVAL_SEEDS (seeds per held-out prompt) and EVAL_SEED (their noise seed): the
#              basis's unless given (the demo's: 8 seeds = 512 images, noise seed 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
basis=${BASIS-deploy/experiments/demo-chunk-grpo.json}
[ "$basis" = none ] && basis=
[ -n "$basis" ] && [ ! -r "$basis" ] && { echo "compare.sh: BASIS $basis: cannot read it" >&2; exit 2; }
out=${OUT:-var/compare} worker=${WORKER:-bin/chunkgrpo-worker} jobs=${JOBS:-1}
backend=${BACKEND:+--backend $BACKEND}
mkdir -p "$out"
# One comparison per folder: a second one would start the same unfinished runs again beside them.
exec 9>"$out/.lock"
flock -n 9 || { echo "compare.sh: another comparison is running in $out" >&2; exit 1; }

# configure KIND [RUN_FIELDS]: the JSON config of the base evaluation (KIND eval) or of one GRPO
# run (KIND grpo), from the basis, the environment and the run's own fields.
configure() {
  BASIS_FILE=$basis BASE=${BASE:-} EXTRA=${EXTRA:-} ITERATIONS=${iterations:-} \
    EVAL_EVERY=${EVAL_EVERY:-0} EVAL_SEEDS=${EVAL_SEEDS:-} EVAL_SEED=${EVAL_SEED:-} SEED=${seed:-0} \
    python3 - "$@" <<'PY'
import json, os, sys
kind, fields = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
e = os.environ
cfg = json.load(open(e["BASIS_FILE"])) if e["BASIS_FILE"] else {"kind": "grpo"}
if e["BASE"]: cfg["model"] = e["BASE"]
for key, default in (("EVAL_SEEDS", 2), ("EVAL_SEED", 0)):
    name = key.lower()
    cfg[name] = int(e[key]) if e[key] else cfg.get(name, default)
if kind == "eval":  # the base model, scored exactly as the runs score their policy
    ev = {"kind": "eval", "model": cfg.get("model", "models/shapes-small.safetensors"),
          "max_prompts": 64, "ode_seeds": cfg["eval_seeds"], "seed": cfg["eval_seed"],
          "sde_prompts": 0, "steps": cfg.get("eval_steps") or cfg.get("steps", 17)}
    for k in ("shift", "cfg_scale", "batch"):
        if k in cfg: ev[k] = cfg[k]
    print(json.dumps(ev))
    sys.exit()
cfg.update(json.loads("{" + fields + "}"))
cfg.update({"seed": int(e["SEED"]), "eval_every": int(e["EVAL_EVERY"]), "eval_prompts": 64})
if e["ITERATIONS"]: cfg["iterations"] = int(e["ITERATIONS"])  # else the basis's
cfg.update(json.loads("{" + e["EXTRA"] + "}"))
print(json.dumps(cfg))
PY
}
setting() { # setting FIELD: a field of a run's config (the basis with EXTRA on top), else the
  # runner's own default from the worker's schema, so that no default is restated here
  configure grpo "" | python3 -c '
import json, subprocess, sys
field, worker, cfg = sys.argv[1], sys.argv[2], json.load(sys.stdin)
if field not in cfg:
    out = subprocess.run([worker, "schema"], stdin=subprocess.DEVNULL, capture_output=True, check=True)
    kinds = json.loads(out.stdout)["oneOf"]
    cfg[field] = next(k["properties"] for k in kinds
                      if k["properties"]["kind"].get("const") == "grpo")[field]["default"]
print(cfg[field])' "$1" "$worker"
}
iterations=${1:-$(setting iterations)} seeds=${2:-5 6 7}
trainable=$(($(setting steps) - 1)) fraction=$(setting train_fraction)
# The paper's [2, 3, 4, 7] for 16 transitions, scaled to ours (largest remainders; [1, 2, 3, 4]
# for the demo's 10): small chunks at high noise.
paper_chunks=$(python3 -c '
import sys
n = int(sys.argv[1]); want = [s * n / 16 for s in (2, 3, 4, 7)]
if n < 4: sizes = [1] * n  # fewer transitions than the paper has chunks: one each
else:
    sizes = [max(1, int(w)) for w in want]
    for i in sorted(range(4), key=lambda i: sizes[i] - want[i])[: n - sum(sizes)]: sizes[i] += 1
print(",".join(map(str, sizes)))' "$trainable")

# name | label | JSON fields of the run. Weighted sampling chooses which chunks to train, so it
# needs a fraction of them trained: when the basis trains every chunk, the weighted run trains
# half and gets a twin that trains half uniformly, its fair comparison.
runs=(
  'grpo|step-level GRPO|"method": "grpo"'
  'chunk_grpo_auto|Chunk-GRPO (auto chunks)|"method": "chunk_grpo", "chunks": "auto"'
)
if [ "$fraction" = 1 ] || [ "$fraction" = 1.0 ]; then
  runs+=('chunk_grpo_auto_half|Chunk-GRPO (auto chunks), half of them trained|"method": "chunk_grpo", "chunks": "auto", "train_fraction": 0.5'
         'chunk_grpo_auto_half_weighted|Chunk-GRPO + weighted sampling, half trained|"method": "chunk_grpo", "chunks": "auto", "train_fraction": 0.5, "weighted_sampling": true')
else
  runs+=('chunk_grpo_auto_weighted|Chunk-GRPO + weighted sampling|"method": "chunk_grpo", "chunks": "auto", "weighted_sampling": true')
fi
runs+=(
  "chunks_paper|chunks [$paper_chunks] (the paper's [2,3,4,7] scaled)|\"method\": \"chunk_grpo\", \"chunks\": \"$paper_chunks\""
  'chunks_uniform_4|chunks uniform:4|"method": "chunk_grpo", "chunks": "uniform:4"'
  "chunks_one|one chunk [$trainable] (every step trained)|\"method\": \"chunk_grpo\", \"chunks\": \"$trainable\", \"train_fraction\": 1.0"
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
      "BASIS, EXTRA, EVAL_SEEDS or EVAL_SEED changed?); use another OUT" >&2
    return "$state"
  fi
  mv "$1.new" "$1"
}

configure eval >"$out/base.json.new"
state=0; config_for "$out/base.json" "$out/base/eval.json" || state=$?
[ "$state" -eq 2 ] && exit 1
[ "$state" -eq 0 ] && "$worker" run "$out/base.json" --out "$out/base" $backend

one_run() { # one_run NAME SEED FIELDS: a GRPO run, resumed if it was interrupted
  local dir=$out/$1-$2
  seed=$2 configure grpo "$3" >"$dir.json.new"
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
labels=()
for r in "${runs[@]}"; do # every seed of the paper's methods first, the ablation after
  name=${r%%|*} rest=${r#*|}; label=${rest%%|*} fields=${rest#*|}
  labels+=("$name|$label")
  [ -n "${RUNS:-}" ] && [[ " $RUNS " != *" $name "* ]] && continue
  for s in $seeds; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    { one_run "$name" "$s" "$fields" || echo "$name-$s" >>"$failed"; } &
  done
done
wait
[ -s "$failed" ] && { echo "compare.sh: runs failed or refused: $(tr '\n' ' ' <"$failed")" >&2; exit 1; }
LABELS=$(printf '%s\n' "${labels[@]}") python3 - "$out" "$iterations" $seeds <<'PY' | tee "$out/table.md"
import json, statistics, sys, glob, os
out, iters, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
def evals(path):  # {iteration: held-out align} of a finished run folder
    files = glob.glob(os.path.join(path, "eval", "iter-*", "eval.json"))
    return {int(f.split("iter-")[-1].split(os.sep)[0]): json.load(open(f))["ode"]["align_mean"]
            for f in files}
base_eval = json.load(open(f"{out}/base/eval.json"))["ode"]
rows = [("base model", [base_eval["align_mean"]], {})]
for line in os.environ["LABELS"].splitlines():
    name, label = line.split("|", 1)
    runs = [evals(f"{out}/{name}-{s}") for s in seeds
            if os.path.exists(f"{out}/{name}-{s}/model.safetensors")]
    if not runs: continue
    common = set.intersection(*(set(r) for r in runs))  # the evaluations every seed made
    curve = {it: statistics.mean(r[it] for r in runs) for it in common}
    rows.append((label, [r[max(r)] for r in runs], curve))
b = base_eval["align_mean"]  # relative gains are over step level's, as the paper's
g = next((statistics.mean(v) for label, v, _ in rows if label == "step-level GRPO"), None)
print(f"held-out align (ODE, 64 prompts x {base_eval['seeds']} seeds of noise seed "
      f"{base_eval.get('noise_seed', 0)}), {iters} iterations, seeds {' '.join(seeds)}\n")
print("| method | held-out align | per seed | spread over seeds | gain over base | relative gain |")
print("|---|---|---|---|---|---|")
for label, vals, _ in rows:
    m = statistics.mean(vals); sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    base = label == "base model"
    rel = "" if g is None or g == b or base else f"{(m - b) / (g - b):.2f}"
    spread = "(deterministic)" if base else f"±{sd:.3f} (n={len(vals)})"
    per = "" if base else " / ".join(f"{v:.3f}" for v in vals)
    gain = "" if base else f"{m - b:+.3f}"
    print(f"| {label} | {m:.3f} | {per} | {spread} | {gain} | {rel} |")
its = sorted(set.union(*(set(c) for _, _, c in rows)) - {0})
if len(its) > 1:  # with EVAL_EVERY: the mean over seeds at every evaluation
    print("\nmean over seeds at each evaluation (iteration 0 is the base model)\n")
    print("| method | " + " | ".join(str(i) for i in its) + " |")
    print("|---|" + "---|" * len(its))
    for label, _, curve in rows[1:]:
        print(f"| {label} | " + " | ".join(f"{curve[i]:.3f}" if i in curve else "" for i in its) + " |")
PY
