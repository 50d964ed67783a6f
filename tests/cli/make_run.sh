#!/usr/bin/env bash
# make_run.sh: deploy/run.sh (what `make run` runs) on a tiny experiment: it starts the server
# with a local worker, submits the experiment, shows its iterations; SIGTERM (as Ctrl-C) stops
# everything with a checkpoint, and a second start continues from there instead of starting over.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/make-run.XXXXXX") || exit 1
trap 'kill -KILL -- -$(cat "$TMP/pgid" 2>/dev/null) 2>/dev/null; rm -rf "$TMP"' EXIT
PORT=$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$TMP/tiny.json" <<JSON
{"kind": "grpo", "model": "tests/reference/fixtures/tiny_model.safetensors", "iterations": 100000,
 "prompts_per_iter": 2, "group_size": 3, "steps": 6, "eval_every": 1000, "eval_prompts": 4,
 "eval_seeds": 1, "checkpoint_every": 2, "batch": 8, "threads": 1, "lr": 1e-3, "clip_eps": 1e-2}
JSON
start() { # start OUT: deploy/run.sh in its own process group
    PORT=$PORT DATA=$TMP/var EXPERIMENT=$TMP/tiny.json setsid deploy/run.sh >"$1" 2>&1 &
    echo $! >"$TMP/pgid"
}
last_iteration() { grep -oE 'iteration +[0-9]+  reward' "$1" | awk '{print $2}' | tail -n 1; }
stop() { kill -TERM -- -"$(cat "$TMP/pgid")"; wait_for 60 eval '! kill -0 $(cat $TMP/pgid) 2>/dev/null'; }

start "$TMP/out1"
check "make run says where the server and the experiment are" wait_for 30 grep -q "experiment: http://127.0.0.1:$PORT/api/v1/experiments/1" "$TMP/out1"
check "  and shows the iterations as they come" wait_for 90 eval '[ "$(last_iteration $TMP/out1)" -ge 6 ] 2>/dev/null'
check "  after the base model's held-out align, by caption template too" grep -qE "by template: plain [0-9.]+  positioned [0-9.]+  pair [0-9.]+  relation [0-9.]+$" "$TMP/out1"
stop
check "stopping says so" grep -q 'make run: stopped' "$TMP/out1"
check "  and leaves no process behind" [ -z "$(pgrep -f "data $TMP/var")" ]
first=$(last_iteration "$TMP/out1")
start "$TMP/out2"
check "a second make run continues the same experiment" wait_for 90 eval '[ "$(grep -cE "iteration +[0-9]+  reward" $TMP/out2)" -gt "$first" ]'
check "  from its checkpoint, not from the start" grep -q "resuming from the checkpoint of iteration" "$TMP/var/workers/0/exp-1/runner.log"
check "  and no second experiment was submitted" grep -q "experiments/1 " "$TMP/out2"
stop
check "the second stop leaves no process behind either" [ -z "$(pgrep -f "$TMP/var")" ]
summary make-run
