#!/usr/bin/env bash
# server_local_workers.sh: chunkgrpo-server --local-workers N starts N `chunkgrpo-worker serve`
# processes itself with their own token, runs experiments on them, starts a crashed one again,
# and on SIGTERM stops them so that a running experiment goes back to the queue.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
. tests/cli/server_lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/local-workers.XXXXXX") || exit 1
trap 'kill $(jobs -p) 2>/dev/null; pkill -KILL -f "work $TMP/" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
MODEL=tests/reference/fixtures/tiny_model.safetensors
tiny() { # tiny ITERATIONS: a grpo config on the tiny model that runs in seconds
    printf '{"config": {"kind": "grpo", "model": "%s", "iterations": %d, "prompts_per_iter": 2, "group_size": 3, "steps": 6, "eval_every": 2, "eval_prompts": 4, "eval_seeds": 1, "checkpoint_every": 2, "batch": 8, "threads": 1, "lr": 1e-3, "clip_eps": 1e-2}}' "$MODEL" "$1"
}
status_of() { curl -s -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/experiments/$1" | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["status"])'; }
workers_named() { curl -s -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/workers" | $PYTHON -c 'import json,sys; print(" ".join(sorted(w["name"] for w in json.load(sys.stdin)["items"])))'; }

start_server "$TMP/data" --local-workers 2 --worker-threads 1 || { fail "server starts" "see above"; summary local-workers; exit 1; }
check "two local workers register" wait_for 20 eval '[ "$(workers_named)" = "local-0 local-1" ]'
check "  each with its own log" [ -f "$TMP/data/workers/0.log" -a -f "$TMP/data/workers/1.log" ]
api POST /api/v1/experiments "$(tiny 4)"
X=$(jget "j['id']")
check "an experiment runs on them to succeeded" wait_for 120 eval '[ "$(status_of $X)" = succeeded ]'

pid=$(pgrep -f "serve --server $BASE --work $TMP/data/workers/0" | head -n 1)
kill -KILL "$pid"
check "a worker that dies is started again" wait_for 20 eval '[ "$(workers_named)" = "local-0 local-0 local-1" ]'
check "  as a new process" wait_for 5 eval '[ -n "$(pgrep -f "serve --server $BASE --work $TMP/data/workers/0")" ] && [ "$(pgrep -f "serve --server $BASE --work $TMP/data/workers/0" | head -n 1)" != "$pid" ]'

api POST /api/v1/experiments "$(tiny 100000)"
Y=$(jget "j['id']")
wait_for 60 eval '[ "$(status_of $Y)" = running ]'
wait_for 60 eval 'curl -s -H "Authorization: Bearer $ADMIN" $BASE/api/v1/experiments/$Y/artifacts | grep -q checkpoints/latest'
stop_server
check "SIGTERM stops the server and its workers" [ -z "$(pgrep -f "work $TMP/data/workers/")" ]
start_server "$TMP/data" || fail "restart" "see above"
api GET /api/v1/experiments/$Y
check "  and the running experiment went back to the queue" [ "$(jget "j['status']")" = queued ]
stop_server
start_server "$TMP/data" --local-workers 1 --worker-threads 1 || fail "restart with a worker" "see above"
api GET /api/v1/tokens
check "each start makes a worker token and revokes the last one" [ "$(jget "sorted(t['revoked'] for t in j['items'] if t['name'] == 'local-workers')")" = "[False, True]" ]
stop_server
summary local-workers
