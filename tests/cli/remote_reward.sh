#!/usr/bin/env bash
# remote_reward.sh: a grpo run on the tiny model scoring its rollouts with a reward server, the
#   example deploy/reward-server/reward_server.py started on a free loopback port:
#   the remote component in the metrics and group views is what the server answered, weighed
#   into the training reward as configured (and, at weight 0, logged without changing training);
#   requests go in batches with stable request ids; 503s are retried, item errors are absorbed
#   into their group's mean and counted; too many item errors, a server that is down, slow, or
#   answers outside the protocol, and a refused request (a missing bearer token among them)
#   each stop the run with a message that names the URL and the problem.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/remote.XXXXXX") || exit 1
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT
MODEL=tests/reference/fixtures/tiny_model.safetensors
SERVER=deploy/reward-server/reward_server.py

# start_server NAME [FLAGS...]: the example server on a free port, logging to $TMP/NAME.log;
# sets URL.
start_server() {
    local name=$1; shift
    $PYTHON "$SERVER" --port 0 --log "$TMP/$name.log" "$@" >"$TMP/$name.out" 2>&1 &
    wait_for 10 grep -qs '^listening on ' "$TMP/$name.out" || { URL=; return 1; }
    URL=$(sed -n 's/^listening on //p' "$TMP/$name.out" | head -n 1)
}
# config FILE EXTRA_JSON_FIELDS: 2 iterations of 2 prompts x 3 (6 images, 2 requests of 4 + 2)
config() {
    cat >"$1" <<JSON
{"kind": "grpo", "model": "$MODEL", "iterations": 2, "prompts_per_iter": 2, "group_size": 3,
 "steps": 6, "eval_every": 0, "eval_prompts": 2, "eval_seeds": 1, "batch": 8, "threads": 2,
 "lr": 1e-3, "seed": 3, "remote_batch": 4, $2}
JSON
}
run() { timeout 120 "$WORKER" run "$@" >"$TMP/stdout" 2>"$TMP/stderr"; rc=$?; }
# stops NAME WANT: the last run failed, and its stderr holds WANT
stops() {
    if [ "$rc" -ne 0 ] && grep -qF -- "$2" "$TMP/stderr"; then pass "$1"; else
        fail "$1" "exit $rc, stderr: $(head -c 600 "$TMP/stderr")" "wanted: $2"; fi
}

start_server main || fail "the example server starts" "$(cat "$TMP/main.out")"
config "$TMP/c.json" "\"remote_url\": \"$URL/\", \"remote_reward\": \"contrast\", \"rewards\": {\"align\": 1, \"remote\": 0.5}"
run "$TMP/c.json" --out "$TMP/trained"
check "a run weighing align and the server's reward succeeds" [ "$rc" -eq 0 ]
check "the metrics are what the server answered, weighed as configured" [ "$($PYTHON - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
log = [e for e in map(json.loads, open(d + '/main.log')) if e['request_id'].count('-') == 2]
rows = [json.loads(l) for l in open(d + '/trained/metrics.jsonl')]
ok = len(rows) == 2 and len(log) == 4  # the rollouts' requests (not the evaluation's)
for row in rows:
    it = row['iteration']
    reqs = [e for e in log if e['request_id'].split('-')[-2] == str(it)]
    # two requests, of 4 and 2 images, for the named reward, ids 0..5 once each
    ok &= sorted(e['items'] for e in reqs) == [2, 4] and all(e['reward'] == 'contrast' for e in reqs)
    scores = {int(k): v for e in reqs for k, v in e['scores'].items()}
    ok &= sorted(scores) == list(range(6))
    mean = sum(scores.values()) / 6
    ok &= abs(row['reward_remote_mean'] - mean) < 1e-5 and row['reward_remote_std'] > 0
    ok &= abs(row['reward_mean'] - (row['reward_align_mean'] + 0.5 * mean)) < 1e-5
    ok &= row['remote_item_errors'] == 0 and row['remote_retries'] == 0 and row['sec_remote_reward'] > 0
    if it == 2:  # the group view shows group 0's three answers
        members = json.load(open(d + '/trained/groups/iter-0000002.json'))['members']
        ok &= all(abs(m['components']['remote'] - scores[j]) < 1e-6 for j, m in enumerate(members))
        ok &= all(abs(m['reward'] - m['components']['align'] - 0.5 * scores[j]) < 1e-5
                  for j, m in enumerate(members))
print(ok)
PY
)" = True ]
check "held-out evaluations score their samples too (eval_remote)" [ "$($PYTHON - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
log = [json.loads(l) for l in open(d + '/main.log')]
last = [json.loads(l) for l in open(d + '/trained/metrics.jsonl')][-1]
ode = json.load(open(d + '/trained/eval/iter-0000002/eval.json'))['ode']
samples = [json.loads(l) for l in open(d + '/trained/eval/iter-0000002/samples.jsonl')]
asked = [v for e in log if '-ode-s0-' in e['request_id'] for v in e['scores'].values()]
mean = sum(asked) / len(asked)
print(len(asked) == 2 and abs(last['eval_remote'] - mean) < 1e-6 and abs(ode['remote_mean'] - mean) < 1e-6
      and ode['remote_samples'] == 2 and ode['remote_reward'] == 'contrast'
      and all(abs(a - b) < 1e-6 for a, b in zip(sorted(x['remote'] for x in samples), sorted(asked))))
PY
)" = True ]
cat >"$TMP/eval.json" <<JSON
{"kind": "eval", "model": "$MODEL", "max_prompts": 3, "ode_seeds": 2, "sde_prompts": 1,
 "group_size": 2, "steps": 4, "threads": 2, "remote_url": "$URL", "remote_batch": 2}
JSON
run "$TMP/eval.json" --out "$TMP/eval"
check "an eval run adds the server's mean over its ODE samples" [ "$rc" -eq 0 -a "$($PYTHON - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
ode = json.load(open(d + '/eval/eval.json'))['ode']
samples = [json.loads(l) for l in open(d + '/eval/samples.jsonl')]
scores = [x['remote'] for x in samples if x['pass'] == 'ode']
print(len(scores) == 6 and abs(ode['remote_mean'] - sum(scores) / 6) < 1e-6 and ode['remote_reward'] == 'default'
      and not any('remote' in x for x in samples if x['pass'] == 'sde'))
PY
)" = True ]
check "request ids are unique per request and name the iteration" [ "$($PYTHON -c "
import json
ids = [json.loads(l)['request_id'] for l in open('$TMP/main.log')]
train = [i.rsplit('-', 2)[1:] for i in ids if '-ode-' not in i and i.count('-') == 2]
print(len(set(ids)) == len(ids) and sorted(train) == [['1', '0'], ['1', '1'], ['2', '0'], ['2', '1']])")" = True ]

# weight 0: the server's score is logged, training is the run without a server, bit for bit
config "$TMP/c.json" "\"remote_url\": \"$URL\""
run "$TMP/c.json" --out "$TMP/logged"
config "$TMP/c.json" "\"remote_reward\": \"default\""
run "$TMP/c.json" --out "$TMP/plain"
check "at weight 0 the remote reward is logged and training is unchanged" [ "$($PYTHON - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
a = [json.loads(l) for l in open(d + '/logged/metrics.jsonl')]
b = [json.loads(l) for l in open(d + '/plain/metrics.jsonl')]
same = all(x[k] == y[k] for x, y in zip(a, b) for k in ('reward_mean', 'loss', 'grad_norm'))
print(same and all('reward_remote_mean' in x for x in a) and not any('reward_remote_mean' in y for y in b))
PY
)" = True ]
check "at weight 0 the final weights equal the run without a server" \
    $PYTHON tests/cli/st_compare.py "$TMP/logged/model.safetensors" "$TMP/plain/model.safetensors" --tol 0

start_server flaky --fail-first 2
config "$TMP/c.json" "\"remote_url\": \"$URL\", \"rewards\": {\"remote\": 1}"
run "$TMP/c.json" --out "$TMP/flaky"
check "503s are retried with the same request id, and counted" [ "$rc" -eq 0 -a "$($PYTHON - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
log = [json.loads(l) for l in open(d + '/flaky.log')]
rows = [json.loads(l) for l in open(d + '/flaky/metrics.jsonl')]
first = [e for e in log if e['request_id'] == log[0]['request_id']]
print([e['status'] for e in first] == [503, 503, 200] and [r['remote_retries'] for r in rows] == [2, 0])
PY
)" = True ]

start_server holes --item-error-every 3
config "$TMP/c.json" "\"remote_url\": \"$URL\", \"rewards\": {\"align\": 1, \"remote\": 1}"
run "$TMP/c.json" --out "$TMP/holes"
check "an image the server fails on takes its group's mean, and is counted" [ "$rc" -eq 0 -a "$($PYTHON - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(d + '/holes/metrics.jsonl')]
m = json.load(open(d + '/holes/groups/iter-0000002.json'))['members']
r = [x['components']['remote'] for x in m]  # the request's third item is image 2, of group 0
print([x['remote_item_errors'] for x in rows] == [1, 1] and abs(r[2] - (r[0] + r[1]) / 2) < 1e-6)
PY
)" = True ]

start_server broken --item-error-every 1
config "$TMP/c.json" "\"remote_url\": \"$URL\", \"rewards\": {\"remote\": 1}"
run "$TMP/c.json" --out "$TMP/broken"
stops "a server failing on most images stops the run" \
    "remote reward: the server failed on 6 of the 6 images of iteration 1 (item 0: injected item failure)"

for mode in wrong-id:'results[0].id: "nonexistent" names no item of the request' \
    not-json:'the answer is not a JSON object' \
    missing-score:'results[0].score: missing (and no error given)' \
    wrong-request-id:'request_id: answered "other" for request'; do
    start_server "bad-${mode%%:*}" --bad-response "${mode%%:*}"
    config "$TMP/c.json" "\"remote_url\": \"$URL\", \"rewards\": {\"remote\": 1}"
    run "$TMP/c.json" --out "$TMP/bad-${mode%%:*}"
    stops "an answer outside the protocol (${mode%%:*}) stops the run, naming the field" "$URL/v1/score, request"
    stops "  ... and saying what is wrong (${mode%%:*})" "${mode#*:}"
done

start_server refuse
config "$TMP/c.json" "\"remote_url\": \"$URL\", \"remote_reward\": \"hpsv3\", \"rewards\": {\"remote\": 1}"
run "$TMP/c.json" --out "$TMP/unknown"
stops "a refused request is not retried and names the server's reason" "$URL/v1/score: HTTP 400: "
check "  ... sent once" [ "$(grep -c hpsv3 "$TMP/refuse.log")" -eq 1 ]

echo "s3cret-token" >"$TMP/token"
start_server locked --token-file "$TMP/token"
config "$TMP/c.json" "\"remote_url\": \"$URL\", \"rewards\": {\"remote\": 1}"
run "$TMP/c.json" --out "$TMP/locked"
stops "a server that wants a token refuses a run without it" "$URL/v1/score: HTTP 401: missing or wrong bearer token"
CHUNKGRPO_REMOTE_TOKEN=s3cret-token run "$TMP/c.json" --out "$TMP/unlocked"
check "  ... and scores a run given \$CHUNKGRPO_REMOTE_TOKEN" [ "$rc" -eq 0 -a "$(grep -c '"status": 200' "$TMP/locked.log")" -eq 5 ]

start_server slow --delay 3
config "$TMP/c.json" "\"remote_url\": \"$URL\", \"rewards\": {\"remote\": 1}, \"remote_timeout\": 0.5, \"remote_retries\": 1"
run "$TMP/c.json" --out "$TMP/slow"
stops "a server slower than remote_timeout stops the run after its retries" "(no more retries: config.remote_retries)"
stops "  ... saying it timed out" "timed out"

# a port nothing listens on: taken from a server that has since stopped
start_server gone && kill %% 2>/dev/null
wait_for 5 bash -c "! $PYTHON -c 'import urllib.request; urllib.request.urlopen(\"$URL/v1/health\", timeout=1)' 2>/dev/null"
config "$TMP/c.json" "\"remote_url\": \"$URL\", \"rewards\": {\"remote\": 1}, \"remote_retries\": 0"
run "$TMP/c.json" --out "$TMP/down"
stops "a server that is down stops the run before it starts, naming the URL" \
    "remote reward server (config.remote_url) not ready: $URL/v1/health: "
check "  ... and leaves no metrics" [ ! -e "$TMP/down/metrics.jsonl" ]

summary remote_reward
