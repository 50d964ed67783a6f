#!/usr/bin/env bash
# server_durability.sh: SIGKILL of the server under write load (experiments created, metric
# events posted, as fast as one client can), then a restart on the same data: every experiment
# and every event whose request was answered must be there, and the server must work on.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
. tests/cli/server_lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/server-durability.XXXXXX") || exit 1
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

start_server "$TMP/data" || { fail "server starts" "see above"; summary server-durability; exit 1; }
api POST /api/v1/workers/register '{"name": "loader"}'
W=$(jget "j['worker_id']")
api POST /api/v1/experiments '{"config": {"kind": "grpo", "model": "m.safetensors"}}'
api POST "/api/v1/workers/$W/lease?wait=0"
X=$(jget "j['experiment']['id']")

# the load: one keep-alive connection; each answered request is written to the ledger
$PYTHON - "$BASE" "$ADMIN" "$W" "$X" "$TMP/ledger" <<'PY' &
import http.client, json, sys, urllib.parse
base, token, worker, exp, ledger = sys.argv[1:]
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
h = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
out = open(ledger, "w", buffering=1)
seq = 0
try:
    while True:
        conn.request("POST", "/api/v1/experiments", json.dumps({"config": {"kind": "eval", "model": "m.safetensors"}}), h)
        r = conn.getresponse(); body = json.loads(r.read())
        if r.status == 201: out.write(f"experiment {body['id']}\n")
        events = [{"seq": seq + i + 1, "type": "metrics", "data": {"iteration": seq + i + 1, "values": {"v": 1.0}}} for i in range(10)]
        conn.request("POST", f"/api/v1/experiments/{exp}/events", json.dumps({"worker_id": worker, "events": events}), h)
        r = conn.getresponse(); r.read()
        if r.status == 200:
            seq += 10
            out.write(f"events {seq}\n")
except Exception:
    pass
PY
loader=$!
wait_for 30 test -s "$TMP/ledger"
sleep 1.5
kill -KILL "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null
wait $loader 2>/dev/null
n_exp=$(grep -c '^experiment' "$TMP/ledger") last_seq=$(grep '^events' "$TMP/ledger" | tail -n 1 | cut -d' ' -f2)
check "the load was answered before the kill ($n_exp experiments, $last_seq events)" [ "$n_exp" -gt 5 -a "${last_seq:-0}" -gt 50 ]

start_server "$TMP/data" || fail "the server restarts on the killed database" "see above"
check "every experiment whose creation was answered is there" $PYTHON - "$TMP/ledger" "$BASE" "$ADMIN" <<'PY'
import json, sys, urllib.request
ledger, base, token = sys.argv[1:]
want = {int(l.split()[1]) for l in open(ledger) if l.startswith("experiment")}
have, cursor = set(), ""
while True:
    req = urllib.request.Request(f"{base}/api/v1/experiments?kind=eval&limit=500{cursor}", headers={"Authorization": "Bearer " + token})
    page = json.load(urllib.request.urlopen(req))
    have |= {x["id"] for x in page["items"]}
    if not page["next_cursor"]: break
    cursor = "&cursor=" + page["next_cursor"]
sys.exit(0 if want <= have else 1)
PY
api GET "/api/v1/experiments/$X/metrics?keys=v&max_points=100000"
check "every event batch that was answered is there, each once" $PYTHON - "$last_seq" "$TMP/body" <<'PY'
import sys, json
it = json.load(open(sys.argv[2]))["series"]["v"]["iteration"]
n = int(sys.argv[1])
sys.exit(0 if it[:n] == list(range(1, n + 1)) and len(it) == len(set(it)) else 1)
PY
api POST "/api/v1/workers/$W/heartbeat" "{\"experiment_id\": $X}"
check "the lease survived the crash (the worker carries on)" [ "$status" = 200 ]
api POST /api/v1/experiments '{"config": {"kind": "eval", "model": "m.safetensors"}}'
check "and the server takes new work" [ "$status" = 201 ]
stop_server
summary server-durability
