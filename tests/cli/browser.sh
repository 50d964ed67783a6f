#!/usr/bin/env bash
# browser.sh: the dashboard (web/dist, built by `make web`) in headless Chromium against a real
# server: seeds experiments, a worker, metrics and images through the API, then runs
# tests/browser/dashboard.test.mjs (playwright-core) and reports its checks. Screenshots go to
# $BUILD/screenshots/. Also times an experiment page with 10,000 points per series and 200 images.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
. tests/cli/server_lib.bash
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
for need in node "$CHROMIUM" web/dist/index.html web/node_modules/playwright-core; do
    if ! command -v "$need" >/dev/null && [ ! -e "$need" ]; then
        skip "the dashboard in a browser" "$need is missing (make web; deploy/install-deps.sh)"
        summary browser; exit 0
    fi
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/browser.XXXXXX") || exit 1
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

# the seeded experiments stay leased to the test worker however long the page checks take on a
# loaded machine (with the default 30 s the server puts them back in the queue mid-test)
start_server "$TMP/data" --web web/dist --lease-seconds 3600 || { fail "server starts" "see above"; summary browser; exit 1; }
api POST /api/v1/tokens '{"name": "browser-worker", "role": "worker"}'
WTOKEN=$(jget "j['token']")
TOKEN=$WTOKEN api POST /api/v1/workers/register '{"name": "browser-w1", "backend": "cpu", "device": "test cpu", "memory_mb": 2048, "threads": 4, "version": "t"}'
WID=$(jget "j['worker_id']")

# create NAME PRIORITY CONFIG: prints the new experiment's id
create() { api POST /api/v1/experiments "{\"config\": $3, \"name\": \"$1\", \"priority\": $2}"; jget "j['id']"; }
GRPO='{"kind": "grpo", "model": "models/shapes-small.safetensors", "iterations": 50}'
A=$(create alpha-chunk 3 "$GRPO")
B=$(create beta-step 2 "${GRPO%\}}, \"method\": \"grpo\"}")
C=$(create alpha-chunk-seed7 3 "${GRPO%\}}, \"seed\": 7}") # A's config but the seed: one method over seeds
BIG=$(create big 1 '{"kind": "grpo", "model": "models/shapes-small.safetensors", "iterations": 10000}')
PREF=$(create pref-reward 1 '{"kind": "reward_train", "steps": 20}')
create queued-eval 0 '{"kind": "eval", "model": "models/shapes-small.safetensors"}' >/dev/null
for _ in 1 2 3 4 5; do TOKEN=$WTOKEN api POST "/api/v1/workers/$WID/lease?wait=0"; done
check "five experiments leased to the test worker" [ "$(jget "j['experiment']['id']")" = "$PREF" ]
# a learned reward's run: training lines by step, evaluations by degradation at 10 and 20
TOKEN=$WTOKEN api POST "/api/v1/experiments/$PREF/events" "{\"worker_id\": \"$WID\", \"events\": [$(for s in 5 10 15 20; do
    printf '{"seq": %d, "type": "metrics", "data": {"iteration": %d, "values": {"loss": %s, "accuracy": %s%s}}}%s' \
        $((s / 5)) $s "0.$((9 - s / 5))" "0.$((5 + s / 5))" \
        "$([ $((s % 10)) = 0 ] && echo ", \"eval_accuracy\": 0.8, \"eval_accuracy_by.noise\": 1, \"eval_accuracy_by.colour\": 0.6")" \
        "$([ $s = 20 ] || echo ,)"; done)]}"
check "metrics of a learned reward's run" [ "$status" = 200 ]

# metrics EXPERIMENT FIRST_SEQ FIRST_ITER COUNT SHIFT: one events body, every dashboard series
metrics() {
    $PYTHON - "$WID" "$@" <<'PY'
import json, math, sys
wid, seq, it, n, shift = sys.argv[1], *map(float, sys.argv[3:7])
events = []
for k in range(int(n)):
    i = int(it) + k
    v = {"reward_mean": 0.4 + shift + 0.3 * (1 - math.exp(-i / 300)) + 0.02 * math.sin(i), "loss": 0.1 * math.cos(i / 7),
         "clip_fraction": 0.05 + 0.01 * math.sin(i / 5), "approx_kl": 1e-4 * (1 + math.sin(i / 9)), "grad_norm": 1 + 0.2 * math.sin(i / 3),
         "sec_sampling": 1.2, "sec_reward": 0.2, "sec_optimize": 0.8, "images_per_sec": 100 + math.sin(i),
         "reward_align_mean": 0.5 + 0.1 * math.sin(i / 4), "reward_count_mean": 0.8 + 0.1 * math.cos(i / 4)}
    v.update({f"chunk_ratio.{c}.mean": 1 + 0.001 * (c + 1) * math.sin(i / 3) for c in range(3)})
    if i % 10 == 0:
        v["eval_align"] = 0.5 + shift + 0.2 * (1 - math.exp(-i / 400))
        # per caption template, held out and on the training prompts (as eval_train_prompts logs)
        v.update({"eval_template.pair": 0.3 + 0.001 * i, "eval_template.count": 0.6 + 0.002 * i,
                  "eval_train_align": 0.6 + 0.002 * i, "eval_train_template.pair": 0.5 + 0.003 * i,
                  "eval_remote": 0.2 + 0.001 * i})
    events.append({"seq": int(seq) + k, "type": "metrics", "data": {"iteration": i, "values": v}})
print(json.dumps({"worker_id": wid, "events": events}))
PY
}
post_events() { TOKEN=$WTOKEN api POST "/api/v1/experiments/$1/events" "$(cat)"; }
metrics "$A" 1 1 40 0 | post_events "$A"
TOKEN=$WTOKEN api POST "/api/v1/workers/$WID/heartbeat" "{\"experiment_id\": $A, \"progress\": {\"iteration\": 40, \"total\": 50, \"seconds_per_iteration\": 2.5}}"
metrics "$B" 1 1 40 -0.05 | post_events "$B"
metrics "$C" 1 1 40 -0.02 | post_events "$C"
TOKEN=$WTOKEN api POST "/api/v1/experiments/$A/events" "{\"worker_id\": \"$WID\", \"events\": [{\"seq\": 41, \"type\": \"log\", \"data\": {\"level\": \"info\", \"message\": \"seeded by browser.sh\"}}]}"
check "metrics for three experiments and a log line" [ "$status" = 200 ]
# the base model's evaluation at iteration 0, as a grpo runner sends it first: every run starts at 0.45
for e in "$A 42" "$B 41" "$C 41"; do
    set -- $e
    TOKEN=$WTOKEN api POST "/api/v1/experiments/$1/events" "{\"worker_id\": \"$WID\", \"events\": [{\"seq\": $2, \"type\": \"metrics\", \"data\": {\"iteration\": 0, \"values\": {\"eval_align\": 0.45, \"eval_template.pair\": 0.3, \"eval_template.count\": 0.6, \"eval_train_align\": 0.6, \"eval_train_template.pair\": 0.5}}}]}"
done
check "the base evaluations at iteration 0" [ "$status" = 200 ]
ok=1
for s in $(seq 0 1000 9000); do
    metrics "$BIG" $((s + 1)) $((s + 1)) 1000 0 >"$TMP/batch.json"
    TOKEN=$WTOKEN api POST "/api/v1/experiments/$BIG/events" '' --data-binary @"$TMP/batch.json" -H 'Content-Type: application/json'
    [ "$status" = 200 ] || ok=0
done
check "10,000 metrics events for the big experiment in batches of 1,000" [ $ok = 1 ]

# A valid 64x64 PNG per iteration (a gradient), as eval grids, and one group view.
png() {
    $PYTHON - "$1" "$2" <<'PY'
import struct, sys, zlib
n = int(sys.argv[1]); w = h = 64
raw = b"".join(b"\0" + bytes((x * 4 + n * 7) % 256 for x in range(w) for _ in range(3)) for y in range(h))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
open(sys.argv[2], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
}
put() { TOKEN=$WTOKEN api PUT "/api/v1/experiments/$1/artifacts/$2?worker_id=$WID&iteration=$3" '' --data-binary @"$4"; }
png 1 "$TMP/a.png"; png 2 "$TMP/b.png"
put "$A" eval/iter-0000010/ode_grid.png 10 "$TMP/a.png"
put "$A" eval/iter-0000020/ode_grid.png 20 "$TMP/b.png"
put "$A" groups/iter-0000020.png 20 "$TMP/a.png"
echo '{"iteration": 20, "prompt": "a red circle", "chunks": [4, 4, 8], "members": [{"reward": 0.5, "advantage": 1.0, "components": {"align": 0.5, "clean": 0.9}, "chunk_advantage": [0.25, 1.0, -0.75], "chunk_ratio": [1.001, null, 0.998]}, {"reward": 0.5, "advantage": -1.0, "components": {"align": 0.5, "clean": 0.8}, "chunk_advantage": [-0.25, -1.0, 0.75], "chunk_ratio": [0.999, 1.0, null]}], "rewards_all_equal": true}' >"$TMP/g.json"
put "$A" groups/iter-0000020.json 20 "$TMP/g.json"
check "eval grids and a group view uploaded" [ "$status" = 201 ]
put "$B" eval/iter-0000010/ode_grid.png 10 "$TMP/b.png"
$PYTHON -c 'import json, math; m = [0.02 + 0.1 * math.exp(-i / 4) for i in range(16)]
print(json.dumps({"model": "m", "rollouts": 128, "prompts": 64, "l1rel_mean": m, "l1rel_std": [x / 5 for x in m], "chunks": [4, 4, 8]}))' >"$TMP/profile.json"
put "$A" profile.json "" "$TMP/profile.json"
check "a grid for B and a profile for A uploaded" [ "$status" = 201 ]
ok=1
for i in $(seq 1 200); do
    put "$BIG" "eval/iter-$(printf %07d $((i * 50)))/ode_grid.png" $((i * 50)) "$TMP/$([ $((i % 2)) = 0 ] && echo a || echo b).png"
    [ "$status" = 201 ] || ok=0
done
check "200 eval grids for the big experiment" [ $ok = 1 ]

mkdir -p "${BUILD:-build}/screenshots"
export BASE TOKEN=$ADMIN WORKER_TOKEN=$WTOKEN WORKER_ID=$WID EXP_A=$A EXP_B=$B EXP_C=$C EXP_BIG=$BIG NEXT_SEQ_A=43 CHROMIUM \
    SCREENSHOTS="${BUILD:-build}/screenshots"
node tests/browser/dashboard.test.mjs >"$TMP/node.out" 2>&1
rc=$?
while IFS= read -r line; do
    case $line in
        "ok "*) pass "${line#ok }" ;;
        "FAIL "*) fail "${line#FAIL }" ;;
        *) echo "$line" ;;
    esac
done <"$TMP/node.out"
check "the browser test exits 0" [ $rc = 0 ]
stop_server
summary browser
