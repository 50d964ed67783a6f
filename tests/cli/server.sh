#!/usr/bin/env bash
# server.sh: chunkgrpo-server end to end over loopback with curl: tokens and roles, experiment
# create / list / get / cancel / retry / clone / diff / delete with their error paths, the
# worker protocol (register, lease, heartbeat, events with sequence numbers, artifacts with
# ranges, complete), lease expiry, limits, static files, /metrics, SSE with resume, a restart
# that keeps everything, and every JSON answer checked against schema/openapi.json.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
. tests/cli/server_lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/server.XXXXXX") || exit 1
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
RECORDS=$TMP/records.jsonl

start_server "$TMP/data" --max-body 65536 --max-string 4096 || { fail "server starts" "see above"; summary server; exit 1; }
pass "server starts on a free port"
check "the admin token file is mode 0600" [ "$(stat -c %a "$TMP/data/admin.token")" = 600 ]
check "  and the log says where it is" grep -qF "$TMP/data/admin.token" "$TMP/data.log"

# ---- auth and roles
TOKEN= api GET /api/v1/health
expect "health needs no token" 200
TOKEN= api GET /api/v1/experiments
expect "no token: 401" 401 unauthorized
check "  with WWW-Authenticate" curl -s -D - -o /dev/null "$BASE/api/v1/experiments" | grep -qi '^WWW-Authenticate: Bearer'
TOKEN=cgp_nope api GET /api/v1/experiments
expect "an unknown token: 401" 401 unauthorized
for role in read write worker; do
    api POST /api/v1/tokens "{\"name\": \"t-$role\", \"role\": \"$role\"}"
    declare "T_$role=$(jget "j['token']")"
done
expect "admin makes tokens" 201
api POST /api/v1/tokens '{"name": "x", "role": "root"}'
expect "a bad role is named" 400 bad_request role
TOKEN=$T_write api POST /api/v1/tokens '{"name": "x", "role": "read"}'
expect "only admin makes tokens" 403 forbidden

CFG='{"kind": "grpo", "model": "models/shapes-small.safetensors", "iterations": 3, "prompts_per_iter": 2}'
TOKEN=$T_read api POST /api/v1/experiments "{\"config\": $CFG}"
expect "a read token may not create" 403 forbidden
TOKEN=$T_worker api POST /api/v1/experiments "{\"config\": $CFG}"
expect "a worker token may not create" 403 forbidden

# ---- create and its errors
TOKEN=$T_write api POST /api/v1/experiments "{\"config\": $CFG, \"name\": \"first\"}" -D "$TMP/headers"
expect "create: 201" 201
E1=$(jget "j['id']")
check "  with a Location" grep -qi "^Location: /api/v1/experiments/$E1" "$TMP/headers"
check "  queued, with the effective config (defaults filled)" [ "$(jget "j['status'], j['config']['lr'], j['config']['iterations'], j['name']")" = "('queued', 2e-05, 3, 'first')" ]
api POST /api/v1/experiments '{"config": {"kind": "grpo", "lr": "fast"}}'
expect "a wrong type names config.lr" 400 invalid_config config.lr
api POST /api/v1/experiments '{"config": {"kind": "grpo", "lr": 5}}'
expect "out of range names config.lr" 400 invalid_config config.lr
api POST /api/v1/experiments '{"config": {"kind": "grpo", "colour": 5}}'
expect "an unknown field is named" 400 invalid_config config.colour
api POST /api/v1/experiments '{"config": {"lr": 1}}'
expect "a missing kind names config.kind" 400 invalid_config config.kind
api POST /api/v1/experiments '{"config": {"kind": "grpo", "chunks": "2,2"}}'
expect "chunks that do not fit the steps name config.chunks" 400 invalid_config config.chunks
api POST /api/v1/experiments "{\"config\": $CFG, \"priority\": \"high\"}"
expect "a bad priority is named" 400 bad_request priority
api POST /api/v1/experiments "{\"config\": $CFG, \"extra\": 1}"
expect "an unknown body field is named" 400 bad_request extra
api POST /api/v1/experiments '{"config": '
expect "broken JSON: 400 invalid_json" 400 invalid_json
api POST /api/v1/experiments "[$CFG]"
expect "a body that is not an object: 400" 400 invalid_json
api POST /api/v1/experiments '' --data-binary "{\"config\": $CFG}" -H 'Content-Type: text/plain'
expect "a body that is not JSON: 415" 415 unsupported_media_type
deep=$(printf '[%.0s' $(seq 40))$(printf ']%.0s' $(seq 40))
api POST /api/v1/experiments "{\"config\": $deep}"
expect "JSON nested deeper than --max-depth: 400" 400 invalid_json
long=$(head -c 5000 /dev/zero | tr '\0' a)
api POST /api/v1/experiments "{\"config\": $CFG, \"name\": \"$long\"}"
expect "a string over --max-string: 400" 400 invalid_json
big=$(head -c 70000 /dev/zero | tr '\0' ' ')
api POST /api/v1/experiments "{\"config\": $CFG}$big"
expect "a body over --max-body: 413" 413 payload_too_large

api POST /api/v1/experiments "{\"config\": $CFG}" -H 'Idempotency-Key: k-1'
K1=$(jget "j['id']")
api POST /api/v1/experiments "{\"config\": $CFG}" -H 'Idempotency-Key: k-1'
check "the same Idempotency-Key and body return the first experiment" [ "$status" = 200 -a "$(jget "j['id']")" = "$K1" ]
api POST /api/v1/experiments "{\"config\": $CFG, \"priority\": 3}" -H 'Idempotency-Key: k-1'
expect "the same key with another body: 409" 409 conflict

# ---- list, get, 404 and 405
api POST /api/v1/experiments '{"config": {"kind": "eval", "model": "models/shapes-small.safetensors"}, "priority": 5}'
E_EVAL=$(jget "j['id']")
api GET '/api/v1/experiments?kind=grpo&status=queued'
check "list filters by kind and status" [ "$(jget "sorted(x['id'] for x in j['items'])")" = "[$E1, $K1]" ]
check "  and leaves the config out" [ "$(jget "'config' in j['items'][0]")" = False ]
ids=() cursor=
while :; do
    api GET "/api/v1/experiments?limit=1${cursor:+&cursor=$cursor}"
    ids+=("$(jget "j['items'][0]['id'] if j['items'] else ''")")
    cursor=$(jget "j['next_cursor'] or ''")
    [ -z "$cursor" ] && break
done
check "cursor pagination visits every experiment once, newest first" [ "${ids[*]}" = "$E_EVAL $K1 $E1" ]
api GET '/api/v1/experiments?status=done'
expect "a bad status filter is named" 400 bad_request status
api GET '/api/v1/experiments?limit=0'
expect "a bad limit is named" 400 bad_request limit
api GET /api/v1/experiments/999999
expect "an unknown experiment: 404" 404 not_found
api GET /api/v1/experiments/abc
expect "a malformed id: 404" 404 not_found
api GET /api/v1/nothing
expect "an unknown endpoint: 404" 404 not_found
api DELETE /api/v1/experiments '' -D "$TMP/headers"
expect "a wrong method: 405" 405 method_not_allowed
check "  with Allow" grep -qi '^Allow: POST, GET' "$TMP/headers"

# ---- the worker protocol
TOKEN=$T_worker api POST /api/v1/workers/register '{"name": "w1", "backend": "cpu", "device": "test", "memory_mb": 1024, "threads": 2, "version": "t"}'
expect "a worker registers" 201
W1=$(jget "j['worker_id']")
TOKEN=$T_worker api POST /api/v1/workers/register '{"name": 5}'
expect "a bad registration field is named" 400 bad_request name
TOKEN=$T_worker api POST "/api/v1/workers/$W1/lease?wait=0"
check "the lease takes the highest priority first" [ "$status" = 200 -a "$(jget "j['experiment']['id'], j['attempt'], j['next_seq']")" = "($E_EVAL, 1, 1)" ]
api GET /api/v1/experiments/$E_EVAL
check "  and it is running under the worker" [ "$(jget "j['status'], j['worker_id']")" = "('running', '$W1')" ]
TOKEN=$T_worker api POST "/api/v1/workers/$W1/lease?wait=0"
check "then the oldest of equal priority" [ "$(jget "j['experiment']['id']")" = "$E1" ]
TOKEN=$T_worker api POST "/api/v1/workers/$W1/heartbeat" "{\"experiment_id\": $E1, \"progress\": {\"iteration\": 1, \"total\": 3}}"
check "a heartbeat renews the lease and says no cancel" [ "$status" = 200 -a "$(jget "j['cancel']")" = False ]
TOKEN=$T_read api POST "/api/v1/workers/$W1/heartbeat" "{\"experiment_id\": $E1}"
expect "a read token cannot heartbeat" 403 forbidden
api POST /api/v1/tokens '{"name": "w2", "role": "worker"}'
T_worker2=$(jget "j['token']")
TOKEN=$T_worker2 api POST "/api/v1/workers/$W1/heartbeat" "{\"experiment_id\": $E1}"
expect "another worker token cannot act as this worker" 403 forbidden worker_id

ev() { # ev SEQ ITERATION: a metrics event
    printf '{"seq": %d, "type": "metrics", "data": {"iteration": %d, "values": {"reward_mean": %s, "loss": %s}}}' "$1" "$2" "0.$2" "-$2"
}
TOKEN=$T_worker api POST /api/v1/experiments/$E1/events "{\"worker_id\": \"$W1\", \"events\": [$(ev 1 1), $(ev 2 2), $(ev 3 3)]}"
check "a batch of events is accepted" [ "$status" = 200 -a "$(jget "j['accepted'], j['duplicates'], j['next_seq']")" = "(3, 0, 4)" ]
TOKEN=$T_worker api POST /api/v1/experiments/$E1/events "{\"worker_id\": \"$W1\", \"events\": [$(ev 2 2), $(ev 3 3), $(ev 4 4), {\"seq\": 5, \"type\": \"log\", \"data\": {\"level\": \"info\", \"message\": \"hello\"}}]}"
check "a retried batch stores only what is new" [ "$(jget "j['accepted'], j['duplicates'], j['next_seq']")" = "(2, 2, 6)" ]
TOKEN=$T_worker api POST /api/v1/experiments/$E1/events "{\"worker_id\": \"$W1\", \"events\": [{\"seq\": 0, \"type\": \"metrics\"}]}"
expect "a malformed event is named" 400 bad_request
check "  by its index" grep -qF 'events[0]' <<<"$body"
TOKEN=$T_worker api POST /api/v1/experiments/$K1/events "{\"worker_id\": \"$W1\", \"events\": [$(ev 1 1)]}"
expect "events for an experiment the worker does not hold: 409" 409 conflict
api GET "/api/v1/experiments/$E1/metrics?keys=reward_mean"
check "metrics history: one series per asked key, each iteration once" [ "$(jget "list(j['series']), j['series']['reward_mean']['iteration'], j['series']['reward_mean']['value']")" = "(['reward_mean'], [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])" ]
api GET "/api/v1/experiments/$E1/metrics?max_points=2"
check "  downsampled to max_points, first and last kept" [ "$(jget "j['series']['loss']['iteration']")" = "[1, 4]" ]
api GET "/api/v1/experiments/$E1/metrics?max_points=1"
expect "  a bad max_points is named" 400 bad_request max_points
api GET /api/v1/experiments/$E1
check "the experiment shows the latest metrics and the progress" [ "$(jget "j['latest']['reward_mean'], j['progress']['iteration']")" = "(0.4, 1)" ]
api GET /api/v1/experiments/$E1/logs
check "logs" [ "$(jget "[x['message'] for x in j['items']]")" = "['hello']" ]

head -c 3000 /dev/urandom >"$TMP/blob.png"
TOKEN=$T_worker api PUT "/api/v1/experiments/$E1/artifacts/samples/iter-1.png?worker_id=$W1&iteration=1" '' --data-binary @"$TMP/blob.png"
check "an artifact uploads" [ "$status" = 201 -a "$(jget "j['size'], j['sha256']")" = "(3000, '$(sha256sum "$TMP/blob.png" | cut -c1-64)')" ]
TOKEN=$T_worker api PUT "/api/v1/experiments/$E1/artifacts/../escape.png?worker_id=$W1" '' --data-binary @"$TMP/blob.png" --path-as-is
check "an artifact name with .. is refused" [ "$status" = 400 -o "$status" = 404 ]
TOKEN=$T_worker api PUT "/api/v1/experiments/$E1/artifacts/a%20b.png?worker_id=$W1" '' --data-binary @"$TMP/blob.png"
expect "an artifact name with a space is refused" 400 bad_request name
api GET /api/v1/experiments/$E1/artifacts
check "artifacts list" [ "$(jget "[(a['name'], a['content_type'], a['iteration']) for a in j['items']]")" = "[('samples/iter-1.png', 'image/png', 1)]" ]
curl -s -H "Authorization: Bearer $ADMIN" -D "$TMP/h" -o "$TMP/dl" "$BASE/api/v1/experiments/$E1/artifacts/samples/iter-1.png"
check "download returns the bytes" cmp -s "$TMP/dl" "$TMP/blob.png"
check "  as image/png with an ETag" grep -qi '^Content-Type: image/png' "$TMP/h"
check "  with an ETag" grep -qi '^ETag: "' "$TMP/h"
code=$(curl -s -H "Authorization: Bearer $ADMIN" -H 'Range: bytes=10-19' -D "$TMP/h" -o "$TMP/part" -w '%{http_code}' "$BASE/api/v1/experiments/$E1/artifacts/samples/iter-1.png")
check "a byte range: 206 with those bytes" eval '[ "$code" = 206 ] && cmp -s "$TMP/part" <(tail -c +11 "$TMP/blob.png" | head -c 10)'
check "  and Content-Range" grep -qi '^Content-Range: bytes 10-19/3000' "$TMP/h"
code=$(curl -s -H "Authorization: Bearer $ADMIN" -H 'Range: bytes=5000-' -o /dev/null -w '%{http_code}' "$BASE/api/v1/experiments/$E1/artifacts/samples/iter-1.png")
check "a range past the end: 416" [ "$code" = 416 ]
# checkpoint retention: each new checkpoints/latest leaves the newest keep_checkpoints (2) folders
for it in 1 2 3; do
    for f in a.bin b.bin; do
        TOKEN=$T_worker api PUT "/api/v1/experiments/$E1/artifacts/checkpoints/iter-000000$it/$f?worker_id=$W1&iteration=$it" '' --data-binary @"$TMP/blob.png"
    done
    printf 'iter-000000%s' $it >"$TMP/latest"
    TOKEN=$T_worker api PUT "/api/v1/experiments/$E1/artifacts/checkpoints/latest?worker_id=$W1&iteration=$it" '' --data-binary @"$TMP/latest"
done
api GET /api/v1/experiments/$E1/artifacts
check "checkpoints: the server keeps the newest 2 folders" [ "$(jget "[a['name'] for a in j['items'] if a['name'].startswith('checkpoints/')]")" = "['checkpoints/iter-0000002/a.bin', 'checkpoints/iter-0000002/b.bin', 'checkpoints/iter-0000003/a.bin', 'checkpoints/iter-0000003/b.bin', 'checkpoints/latest']" ]
check "  and deletes the older folder's files" [ "$(ls "$TMP/data/artifacts/$E1/checkpoints" | tr '\n' ' ')" = "iter-0000002 iter-0000003 latest " ]
printf 'iter-0000002' >"$TMP/latest" # a resumed run may point back: its folder stays
TOKEN=$T_worker api PUT "/api/v1/experiments/$E1/artifacts/checkpoints/iter-0000004/a.bin?worker_id=$W1&iteration=4" '' --data-binary @"$TMP/blob.png"
TOKEN=$T_worker api PUT "/api/v1/experiments/$E1/artifacts/checkpoints/latest?worker_id=$W1&iteration=2" '' --data-binary @"$TMP/latest"
check "  and never the folder latest names, kept beside the newest 2" [ "$(ls "$TMP/data/artifacts/$E1/checkpoints" | tr '\n' ' ')" = "iter-0000002 iter-0000003 iter-0000004 latest " ]
TOKEN=$T_worker api POST /api/v1/experiments/$E1/complete "{\"worker_id\": \"$W1\", \"status\": \"succeeded\"}"
check "complete: succeeded" [ "$status" = 200 -a "$(jget "j['status']")" = succeeded ]
TOKEN=$T_worker api POST /api/v1/experiments/$E1/complete "{\"worker_id\": \"$W1\", \"status\": \"failed\"}"
expect "completing again: 409" 409 conflict
api GET /api/v1/workers
check "workers list shows the worker with its heartbeat age" [ "$(jget "[(w['id'], w['backend'], w['heartbeat_age_s'] < 60) for w in j['items']]")" = "[('$W1', 'cpu', True)]" ]

# ---- cancel, retry, clone, diff, delete
TOKEN=$T_write api POST /api/v1/experiments/$K1/cancel
check "cancel of a queued experiment: canceled at once" [ "$(jget "j['status']")" = canceled ]
TOKEN=$T_write api POST /api/v1/experiments/$E_EVAL/cancel
check "cancel of a running one asks the worker" [ "$(jget "j['status'], j['cancel_requested']")" = "('running', True)" ]
TOKEN=$T_worker api POST "/api/v1/workers/$W1/heartbeat" "{\"experiment_id\": $E_EVAL}"
check "  who learns it at the next heartbeat" [ "$(jget "j['cancel']")" = True ]
TOKEN=$T_worker api POST /api/v1/experiments/$E_EVAL/complete "{\"worker_id\": \"$W1\", \"status\": \"canceled\"}"
check "  and ends it canceled" [ "$(jget "j['status']")" = canceled ]
TOKEN=$T_write api POST /api/v1/experiments/$E1/cancel
expect "cancel of a finished experiment: 409" 409 conflict
TOKEN=$T_write api POST /api/v1/experiments/$K1/retry
check "retry puts a canceled experiment back in the queue" [ "$(jget "j['status']")" = queued ]
TOKEN=$T_write api POST /api/v1/experiments/$K1/retry
expect "retry of a queued experiment: 409" 409 conflict
TOKEN=$T_write api POST /api/v1/experiments/$E1/clone '{"changes": {"lr": 1e-4, "method": "grpo"}, "name": "clone"}'
check "clone with changes" [ "$status" = 201 -a "$(jget "j['parent_id'], j['config']['lr'], j['config']['method'], j['config']['iterations']")" = "($E1, 0.0001, 'grpo', 3)" ]
C1=$(jget "j['id']")
TOKEN=$T_write api POST /api/v1/experiments/$E1/clone '{"changes": {"iterations": null, "lr": 5e-5}}'
check "a clone's change to null removes the field (its default applies)" [ "$status" = 201 -a "$(jget "j['config']['iterations'], j['config']['lr']")" = "(100, 5e-05)" ]
E_NULL=$(jget "j['id']") # out of the queue again, as the counts below expect
TOKEN=$T_write api POST /api/v1/experiments/$E_NULL/cancel && TOKEN=$T_write api DELETE /api/v1/experiments/$E_NULL
check "  (and deleted again)" [ "$status" = 200 -o "$status" = 204 ]
TOKEN=$T_write api POST /api/v1/experiments/$E1/clone '{"changes": {"lr": -1}}'
expect "a clone's bad change is named" 400 invalid_config config.lr
api GET /api/v1/experiments/$E1/diff/$C1
check "diff lists the changed fields only" [ "$(jget "sorted(j['changed'].items())")" = "[('lr', [2e-05, 0.0001]), ('method', ['chunk_grpo', 'grpo'])]" ]
TOKEN=$T_write api DELETE /api/v1/experiments/$K1
expect "delete of a queued experiment: 409" 409 conflict
TOKEN=$T_write api DELETE /api/v1/experiments/$E1
expect "delete of a finished experiment: 204" 204
api GET /api/v1/experiments/$E1
expect "  then it is gone" 404 not_found
check "  with its artifact files" [ ! -e "$TMP/data/artifacts/$E1" ]

# ---- /metrics, the OpenAPI document, the config schema
api GET /metrics
check "/metrics: the queue by status" grep -q '^chunkgrpo_experiments{status="queued"} 2$' <<<"$body"
check "  requests and latencies by route" grep -q '^chunkgrpo_http_request_seconds_count{route="POST /api/v1/experiments"}' <<<"$body"
TOKEN= api GET /metrics
expect "  needs a token" 401 unauthorized
api GET /api/v1/openapi.json
check "the OpenAPI document is served" [ "$status" = 200 -a "$(jget "j['openapi']")" = 3.1.0 ]
api GET /api/v1/schema/experiment
check "the config schema is served" eval '[ "$status" = 200 ] && grep -q "\"grpo\"" <<<"$body"'

# ---- static files stay inside web/
mkdir -p "$TMP/web/assets" && echo '<h1>dash</h1>' >"$TMP/web/index.html" && echo 'x=1' >"$TMP/web/assets/app.js"
echo secret >"$TMP/secret.txt" && ln -s "$TMP/secret.txt" "$TMP/web/link.txt"
stop_server
start_server "$TMP/data" --web "$TMP/web" || fail "restart" "see above"
get() { curl -s --path-as-is -o "$TMP/got" -w '%{http_code} %{content_type}' "$BASE$1"; }
check "the dashboard's index needs no token" [ "$(get /)" = "200 text/html; charset=utf-8" ]
check "assets with their content type" [ "$(get /assets/app.js)" = "200 text/javascript; charset=utf-8" ]
check "a dashboard route falls back to index.html" eval '[ "$(get /experiments/3 | cut -c1-3)" = 200 ] && grep -q dash "$TMP/got"'
check "../ cannot leave web/" [ "$(get /../secret.txt | cut -c1-3)" = 404 ]
check "  nor %2e%2e" [ "$(get /%2e%2e/secret.txt | cut -c1-3)" = 404 ]
check "  nor a symbolic link" [ "$(get /link.txt | cut -c1-3)" = 404 ]

# ---- restart keeps everything; SSE with resume
api GET /api/v1/experiments/$C1
check "after a restart the experiments are there" [ "$status" = 200 -a "$(jget "j['config']['lr']")" = 0.0001 ]
TOKEN=$T_worker api POST "/api/v1/workers/$W1/lease?wait=0"
LEASED=$(jget "j['experiment']['id']")
TOKEN=$T_worker api POST /api/v1/experiments/$LEASED/events "{\"worker_id\": \"$W1\", \"events\": [$(ev 1 1), $(ev 2 2)]}"
curl -s -N -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/experiments/$LEASED/events" >"$TMP/sse1" &
sse=$!
wait_for 5 grep -q '"iteration":2' "$TMP/sse1"
TOKEN=$T_worker api POST /api/v1/experiments/$LEASED/events "{\"worker_id\": \"$W1\", \"events\": [$(ev 3 3)]}"
check "SSE streams status and metrics events as they come" wait_for 5 grep -q '"iteration":3' "$TMP/sse1"
kill $sse
first=$(grep -m1 '^id: ' "$TMP/sse1" | cut -d' ' -f2)
curl -s -N -m 2 -H "Authorization: Bearer $ADMIN" -H "Last-Event-ID: $first" "$BASE/api/v1/experiments/$LEASED/events" >"$TMP/sse2"
check "Last-Event-ID resumes after that event with no gap and no repeat" [ "$(grep '^id: ' "$TMP/sse1" | tail -n +2)" = "$(grep '^id: ' "$TMP/sse2")" ]
check "  each event typed" grep -q '^event: metrics' "$TMP/sse2"
curl -s -N -m 2 -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/events?last_event_id=0" >"$TMP/sse3"
check "the all-experiments stream carries every experiment's events" [ "$(grep -c '^event: status' "$TMP/sse3")" -ge 5 ]
curl -s -N -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/events" >/dev/null &
sleep 0.3
t0=$(date +%s%N)
stop_server
rc=$? ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "SIGTERM with a stream open stops cleanly ($ms ms)" [ "$rc" -eq 0 -a "$ms" -lt 5000 ]

# ---- lease expiry
start_server "$TMP/exp" --lease-seconds 1 --max-attempts 2 || fail "expiry server" "see above"
TOKEN= api GET /api/v1/health
api POST /api/v1/workers/register '{"name": "admin-worker"}'
WA=$(jget "j['worker_id']")
api POST /api/v1/experiments "{\"config\": $CFG}"
X=$(jget "j['id']")
api POST "/api/v1/workers/$WA/lease?wait=0"
wait_for 10 eval '[ "$(curl -s -H "Authorization: Bearer $ADMIN" $BASE/api/v1/experiments/$X | $PYTHON -c "import json,sys; print(json.load(sys.stdin)[\"status\"])")" = queued ]'
api GET /api/v1/experiments/$X
check "an expired lease puts the experiment back with its attempt count" [ "$(jget "j['status'], j['attempts']")" = "('queued', 1)" ]
api POST "/api/v1/workers/$WA/lease?wait=5"
check "a long poll gets it again" [ "$status" = 200 ]
api POST "/api/v1/workers/$WA/heartbeat" "{\"experiment_id\": $X}"
wait_for 10 eval '[ "$(curl -s -H "Authorization: Bearer $ADMIN" $BASE/api/v1/experiments/$X | $PYTHON -c "import json,sys; print(json.load(sys.stdin)[\"status\"])")" = failed ]'
api GET /api/v1/experiments/$X
check "after max attempts it fails with the reason" [ "$(jget "j['status'], 'lease expired' in j['error']")" = "('failed', True)" ]
api POST "/api/v1/workers/$WA/heartbeat" "{\"experiment_id\": $X}"
expect "a heartbeat after the lease is gone: 409" 409 conflict
( sleep 1; curl -s -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' --data-binary "{\"config\": $CFG}" "$BASE/api/v1/experiments" >/dev/null ) &
t0=$(date +%s%N)
api POST "/api/v1/workers/$WA/lease?wait=10"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "a long poll wakes as soon as work is queued ($ms ms)" [ "$status" = 200 -a "$ms" -lt 4000 ]
api POST "/api/v1/experiments/$(jget "j['experiment']['id']")/complete" "{\"worker_id\": \"$WA\", \"status\": \"succeeded\"}"
t0=$(date +%s%N)
api POST "/api/v1/workers/$WA/lease?wait=1"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "  and answers 204 when none comes ($ms ms)" [ "$status" = 204 -a "$ms" -ge 900 ]
stop_server

# ---- the connection limit
start_server "$TMP/conn" --max-connections 4 || fail "connection-limit server" "see above"
streams=()
for _ in 1 2 3 4; do curl -s -N -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/events" >/dev/null & streams+=($!); done
sleep 0.5
refused() { ! curl -s -m 3 -o /dev/null "$BASE/api/v1/health"; }
check "past --max-connections a new connection is refused" refused
kill "${streams[@]}" 2>/dev/null; wait "${streams[@]}" 2>/dev/null
check "  and served again once connections close" wait_for 5 curl -sf -o /dev/null "$BASE/api/v1/health"
stop_server

# ---- every JSON answer above against the OpenAPI document
if $PYTHON -c 'import jsonschema' 2>/dev/null; then
    if $PYTHON tests/server/openapi_check.py "$RECORDS" >"$TMP/openapi.out" 2>&1; then
        pass "every JSON answer ($(wc -l <"$RECORDS")) fits schema/openapi.json"
    else fail "every JSON answer fits schema/openapi.json" "$(grep -v passed "$TMP/openapi.out" | head -20)"; fi
else
    skip "JSON answers against schema/openapi.json" "python3-jsonschema is not installed"
fi
summary server
