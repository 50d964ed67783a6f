#!/usr/bin/env bash
# pretrain.sh: `chunkgrpo-worker run` with kind "pretrain" on the tiny preset:
#   config errors name the field; a stopped run (SIGTERM at a random step) and a crashed run
#   (SIGKILL) both resume to weights bit-identical to an uninterrupted run; the metrics log holds
#   every step once; resume refuses a changed config; a fresh run refuses a used folder.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pretrain.XXXXXX") || exit 1
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT

config() { # config FILE STEPS [EXTRA_JSON_FIELDS]
    cat >"$1" <<JSON
{"kind": "pretrain", "preset": "tiny", "steps": $2, "batch_size": 4, "warmup_steps": 10,
 "log_every": 1, "checkpoint_every": 50, "sample_every": 0, "threads": 2, "seed": 7${3:+, $3}}
JSON
}
run() { timeout 120 "$WORKER" run "$@" >"$TMP/stdout" 2>"$TMP/stderr"; rc=$?; }
expect_config_error() { # NAME PATTERN EXTRA_FIELDS
    config "$TMP/bad.json" 10 "$3"
    run "$TMP/bad.json" --out "$TMP/bad"
    if [ "$rc" -eq 3 ] && grep -qF -- "$2" "$TMP/stderr"; then pass "$1"
    else fail "$1" "exit $rc; stderr: $(head -c 300 "$TMP/stderr")"; fi
}
expect_config_error "unknown field named" 'config.learning_rate' '"learning_rate": 1'
expect_config_error "wrong type named" 'config.lr: expected a number' '"lr": "fast"'
expect_config_error "out of range named" 'config.ema_decay: 1.5 is out of range' '"ema_decay": 1.5'
printf '{"kind": "pretrain", "preset": "huge"}' >"$TMP/preset.json"
run "$TMP/preset.json" --out "$TMP/bad"
check "bad preset named with the choices" grep -qF 'config.preset: "huge" is not one of "tiny" "small" "base"' "$TMP/stderr"
expect_config_error "bad model shape named" 'config.heads' '"heads": 3'
printf '{"kind": "pretrain", "steps": 5,}' >"$TMP/syntax.json"
run "$TMP/syntax.json" --out "$TMP/bad"
check "JSON syntax error has line and column" grep -qE 'syntax.json:1:[0-9]+' "$TMP/stderr"

STEPS=300
config "$TMP/a.json" $STEPS
run "$TMP/a.json" --out "$TMP/a"
check "uninterrupted run succeeds" [ "$rc" -eq 0 ]
check "final weights and EMA written" [ -s "$TMP/a/model.safetensors" -a -s "$TMP/a/model_ema.safetensors" ]
check "metrics has one line per step" [ "$(wc -l <"$TMP/a/metrics.jsonl")" -eq $STEPS ]
check "loss falls" $PYTHON -c "
import json,sys; l=[json.loads(x)['loss'] for x in open('$TMP/a/metrics.jsonl')]
sys.exit(0 if sum(l[-20:])/20 < 0.8*sum(l[:20])/20 else 1)"

# interrupt with SIGTERM twice (checkpoint at the current step) or SIGKILL (last periodic checkpoint),
# then resume: the result must equal the uninterrupted run byte for byte
for sig in TERM KILL; do
    out=$TMP/b-$sig
    timeout 120 "$WORKER" run "$TMP/a.json" --out "$out" >/dev/null 2>"$TMP/stderr" &
    pid=$!
    wait_for 60 test -f "$out/checkpoints/latest"
    # SIGKILL cannot be forwarded: `timeout` would die and leave the worker running beside the
    # resumed one, so it goes to the worker itself (timeout's child); SIGTERM goes through timeout
    if [ $sig = KILL ]; then pkill -KILL -P $pid; else kill -TERM $pid; fi
    # a second SIGTERM (as supervisors send to process and group) must not turn the stop into a kill
    [ $sig = TERM ] && kill -TERM $pid 2>/dev/null
    { wait $pid; } 2>/dev/null # no "Killed" notice from the shell
    rc=$?
    want=130; [ $sig = KILL ] && want=137
    check "SIG$sig stops the run (exit $want)" [ "$rc" -eq $want ]
    run "$TMP/a.json" --out "$out" --resume
    check "SIG$sig: resumed run finishes" [ "$rc" -eq 0 ]
    check "SIG$sig: weights equal the uninterrupted run's" cmp -s "$TMP/a/model.safetensors" "$out/model.safetensors"
    check "SIG$sig: EMA equals the uninterrupted run's" cmp -s "$TMP/a/model_ema.safetensors" "$out/model_ema.safetensors"
    check "SIG$sig: metrics hold each step once" [ "$(grep -o '"step":[0-9]*' "$out/metrics.jsonl" | sort -u | wc -l)" -eq $STEPS -a "$(wc -l <"$out/metrics.jsonl")" -eq $STEPS ]
done
check "old checkpoints pruned" [ "$(ls "$TMP/a/checkpoints" | grep -c step-)" -eq 2 ]

config "$TMP/changed.json" $STEPS '"lr": 0.002'
run "$TMP/changed.json" --out "$TMP/a" --resume
check "resume refuses a changed config, naming the field" grep -qF 'config.lr' "$TMP/stderr"
run "$TMP/a.json" --out "$TMP/a"
check "a fresh run refuses a folder that holds a run" grep -qF -- '--resume' "$TMP/stderr"
config "$TMP/longer.json" $((STEPS + 20))
run "$TMP/longer.json" --out "$TMP/a" --resume
check "resume may extend steps" [ "$rc" -eq 0 -a "$(wc -l <"$TMP/a/metrics.jsonl")" -eq $((STEPS + 20)) ]

summary pretrain
