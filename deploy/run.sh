#!/usr/bin/env bash
# make run: the whole product on this machine. Starts the control server with one local CPU
# worker and its data in ./var, submits the demo Chunk-GRPO experiment unless it is already
# there, prints where to look, and shows the experiment's progress here. Ctrl-C stops it all
# (the worker checkpoints and hands the experiment back); the next `make run` continues it.
#   PORT (8080), DATA (var), WORKERS (1), EXPERIMENT (deploy/experiments/demo-chunk-grpo.json)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-8080} data=${DATA:-var} workers=${WORKERS:-1}
experiment=${EXPERIMENT:-deploy/experiments/demo-chunk-grpo.json}
base=http://127.0.0.1:$port
mkdir -p "$data"

bin/chunkgrpo-server --listen "127.0.0.1:$port" --data "$data" --local-workers "$workers" \
    >>"$data/server.log" 2>&1 &
server=$!
stop() {
    trap - INT TERM
    echo; echo "make run: stopping (the worker checkpoints and hands the experiment back)..."
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    if [ -n "${watch:-}" ]; then kill "$watch" 2>/dev/null || true; fi
    echo "make run: stopped; run it again to continue where it was."
    exit 0
}
trap stop INT TERM
for _ in $(seq 100); do
    curl -sf "$base/api/v1/health" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { echo "make run: the server did not start:"; tail -5 "$data/server.log"; exit 1; }
    sleep 0.1
done
token=$(cat "$data/admin.token")
auth=(-H "Authorization: Bearer $token")

# the demo, once: the idempotency key finds it again on the next run (a changed config file is
# another key, so it queues as a new experiment instead of a conflict with the old one)
key="make-run:$experiment:$(sha256sum "$experiment" | cut -c1-16)"
id=$(curl -s "${auth[@]}" -H 'Content-Type: application/json' -H "Idempotency-Key: $key" \
    --data-binary "{\"name\": \"demo: $(basename "$experiment" .json)\", \"config\": $(cat "$experiment")}" \
    "$base/api/v1/experiments" | python3 -c 'import json,sys; o=json.load(sys.stdin); print(o["id"]) if "id" in o else sys.exit(o["error"]["message"])')
status=$(curl -s "${auth[@]}" "$base/api/v1/experiments/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
if [ "$status" = canceled ] || [ "$status" = failed ]; then
    curl -s -X POST "${auth[@]}" "$base/api/v1/experiments/$id/retry" >/dev/null
fi

echo "chunkgrpo is running: server $base, $workers local worker(s), data in $data/"
if [ -f web/dist/index.html ] || [ -f web/index.html ]; then
    echo "  dashboard:  $base/#token=$token"
else
    echo "  dashboard:  not built yet; the API is at $base/api/v1 (token in $data/admin.token)"
fi
echo "  experiment: $base/api/v1/experiments/$id  (logs: $data/server.log, $data/workers/)"
echo "  Ctrl-C stops everything; make run again continues."
echo

# progress: the experiment's events (from the start), one line per iteration and evaluation
curl -sN "${auth[@]}" "$base/api/v1/experiments/$id/events" | python3 -u deploy/progress.py &
watch=$!
wait "$server"
