#!/usr/bin/env bash
# reward_train.sh: `kind: "reward_train"` trains the learned rewards on the tiny preset: pref
#   learns to prefer clean renderings over degraded ones on held-out captions, per degradation,
#   and clip to match held-out images to their captions; a stopped run resumes to the
#   uninterrupted run's weights bit for bit; grpo runs weigh both models' scores into their
#   reward (and log them, and their evaluations too); bad configs and models are refused with a
#   message naming the field.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/reward_train.XXXXXX") || exit 1
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT

config() { # config FILE STEPS [EXTRA_JSON_FIELDS]
    cat >"$1" <<JSON
{"kind": "reward_train", "preset": "tiny", "dim": 0, "depth": 0, "steps": $2, "batch_size": 16,
 "lr": 2e-3, "warmup_steps": 20, "eval_every": 200, "eval_pairs": 300, "checkpoint_every": 20,
 "threads": 1, "seed": 4${3:+, $3}}
JSON
}
run() { timeout 300 "$WORKER" run "$@" >"$TMP/stdout" 2>"$TMP/stderr"; rc=$?; }
stops() {
    if [ "$rc" -ne 0 ] && grep -qF -- "$2" "$TMP/stderr"; then pass "$1"; else
        fail "$1" "exit $rc, stderr: $(head -c 600 "$TMP/stderr")" "wanted: $2"; fi
}

STEPS=800
config "$TMP/a.json" $STEPS
run "$TMP/a.json" --out "$TMP/a"
check "a preference model trains" [ "$rc" -eq 0 -a -s "$TMP/a/model.safetensors" ]
check "it prefers clean renderings of held-out captions, for every degradation" [ "$($PYTHON - "$TMP/a" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + '/metrics.jsonl')]
evals = [r for r in rows if 'eval_accuracy' in r]
first, last = evals[0], evals[-1]
by = last['eval_accuracy_by']
# noise, blur and ink are judged from the image alone; colour and missing need the caption
print(len(evals) == 4 and last['eval_accuracy'] >= 0.8 and last['eval_accuracy'] > first['eval_accuracy'] - 0.05
      and sorted(by) == ['blur', 'colour', 'ink', 'missing', 'noise']
      and min(by['noise'], by['blur']) >= 0.9 and min(by['ink'], by['colour'], by['missing']) >= 0.6)
PY
)" = True ]
check "training metrics carry loss, accuracy and margin" [ "$($PYTHON -c "
import json
rows = [json.loads(l) for l in open('$TMP/a/metrics.jsonl') if 'loss' in l]
print(len(rows) == $STEPS // 10 and rows[-1]['loss'] < rows[0]['loss'] and rows[-1]['accuracy'] > 0.7)")" = True ]

# SIGTERM in the middle: a checkpoint at that step, and the resumed run ends where the
# uninterrupted one did
timeout 120 "$WORKER" run "$TMP/a.json" --out "$TMP/b" >/dev/null 2>"$TMP/stderr" &
pid=$!
wait_for 60 test -f "$TMP/b/checkpoints/latest"
kill -TERM $pid
{ wait $pid; } 2>/dev/null
check "SIGTERM stops the run with a checkpoint (exit 130)" [ $? -eq 130 ]
run "$TMP/a.json" --out "$TMP/b" --resume
check "the resumed run's weights equal the uninterrupted run's" cmp -s "$TMP/a/model.safetensors" "$TMP/b/model.safetensors"

MODEL=tests/reference/fixtures/tiny_model.safetensors
grpo() { # grpo FILE EXTRA_JSON_FIELDS
    cat >"$1" <<JSON
{"kind": "grpo", "model": "$MODEL", "iterations": 2, "prompts_per_iter": 2, "group_size": 3,
 "steps": 6, "eval_every": 0, "eval_prompts": 2, "eval_seeds": 1, "batch": 8, "threads": 2,
 "lr": 1e-3, "seed": 3, $2}
JSON
}
grpo "$TMP/g.json" "\"pref_model\": \"$TMP/a/model.safetensors\", \"rewards\": {\"align\": 1, \"pref\": 0.5}"
run "$TMP/g.json" --out "$TMP/g"
check "a grpo run weighs the preference model's scores into its reward" [ "$rc" -eq 0 -a "$($PYTHON - "$TMP/g" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + '/metrics.jsonl')]
members = json.load(open(sys.argv[1] + '/groups/iter-0000002.json'))['members']
close = lambda a, b, scale: abs(a - b) <= 1e-5 * max(1, abs(scale))  # 7 digits in the files
ok = all(close(r['reward_mean'], r['reward_align_mean'] + 0.5 * r['reward_pref_mean'], r['reward_pref_mean']) for r in rows)
ok &= all(close(m['reward'], m['components']['align'] + 0.5 * m['components']['pref'], m['components']['pref']) for m in members)
print(ok and len({m['components']['pref'] for m in members}) == len(members) and 'reward_remote_mean' not in rows[0])
PY
)" = True ]
check "  ... and its evaluations score their samples with it (eval_pref)" [ "$($PYTHON - "$TMP/g" <<'PY'
import json, sys
last = [json.loads(l) for l in open(sys.argv[1] + '/metrics.jsonl')][-1]
ode = json.load(open(sys.argv[1] + '/eval/iter-0000002/eval.json'))['ode']
pref = [json.loads(l)['pref'] for l in open(sys.argv[1] + '/eval/iter-0000002/samples.jsonl')]
close = lambda a, b: abs(a - b) <= 1e-5 * max(1, abs(b))  # the metrics carry 7 digits
print(len(pref) == 2 and close(last['eval_pref'], sum(pref) / 2) and close(ode['pref_mean'], sum(pref) / 2))
PY
)" = True ]
MODEL=tests/reference/fixtures/tiny_model.safetensors
echo '{"kind": "eval", "model": "'$MODEL'", "max_prompts": 3, "ode_seeds": 2, "sde_prompts": 0, "steps": 4, "pref_model": "'$TMP/a/model.safetensors'"}' >"$TMP/e.json"
run "$TMP/e.json" --out "$TMP/e"
check "an eval run adds the preference model's mean over its ODE samples" [ "$rc" -eq 0 -a "$($PYTHON -c "
import json
ode = json.load(open('$TMP/e/eval.json'))['ode']
pref = [json.loads(l)['pref'] for l in open('$TMP/e/samples.jsonl')]
print(len(pref) == 6 and abs(ode['pref_mean'] - sum(pref) / 6) <= 1e-5 * max(1, abs(ode['pref_mean'])))")" = True ]

# clip: a contrastive model learns to find an image's caption among its batch's (16: chance 1/16)
config "$TMP/clip.json" 400 '"reward": "clip"'
run "$TMP/clip.json" --out "$TMP/clip"
check "a contrastive (clip) model learns to match held-out images to their captions" [ "$rc" -eq 0 -a "$($PYTHON - "$TMP/clip" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + '/metrics.jsonl')]
evals = [r['eval_accuracy'] for r in rows if 'eval_accuracy' in r]
print(len(evals) == 2 and evals[-1] >= 0.3 and 'cosine' in rows[-1] and 'eval_accuracy_by' not in rows[-1])
PY
)" = True ]
grpo "$TMP/g.json" "\"clip_model\": \"$TMP/clip/model.safetensors\", \"rewards\": {\"align\": 1, \"clip\": 1}"
run "$TMP/g.json" --out "$TMP/gc"
check "a grpo run weighs the clip model's cosines, and its evaluations log eval_clip" [ "$rc" -eq 0 -a "$($PYTHON - "$TMP/gc" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + '/metrics.jsonl')]
ode = json.load(open(sys.argv[1] + '/eval/iter-0000002/eval.json'))['ode']
ok = all(abs(r['reward_mean'] - r['reward_align_mean'] - r['reward_clip_mean']) < 1e-5 for r in rows)
print(ok and all(-1 <= r['reward_clip_mean'] <= 1 for r in rows) and 'reward_pref_mean' not in rows[0]
      and abs(rows[-1]['eval_clip'] - ode['clip_mean']) < 1e-6)
PY
)" = True ]

grpo "$TMP/g.json" '"rewards": {"pref": 1}'
run "$TMP/g.json" --out "$TMP/nopref"
stops "a pref weight without a model is refused" "config.rewards: weighs the pref reward, but config.pref_model names no preference model"
grpo "$TMP/g.json" "\"pref_model\": \"$TMP/none.safetensors\", \"rewards\": {\"pref\": 1}"
run "$TMP/g.json" --out "$TMP/missing"
stops "a missing pref model is named" "config.pref_model: $TMP/none.safetensors"
echo '{"kind": "reward_train", "dim": 32, "depth": 1, "steps": 2, "eval_pairs": 2}' >"$TMP/small.json"
run "$TMP/small.json" --out "$TMP/small"
grpo "$TMP/g.json" "\"pref_model\": \"$TMP/small/model.safetensors\", \"rewards\": {\"pref\": 1}"
run "$TMP/g.json" --out "$TMP/mismatch"
stops "a pref model of another image size is refused" "pref model: it scores 32x32 images, these are 16x16"
config "$TMP/bad.json" 10 '"degradations": "noise,fog"'
run "$TMP/bad.json" --out "$TMP/bad"
stops "an unknown degradation is named" 'config.degradations: "fog" is not one of noise, blur, ink, colour, missing'

summary reward_train
