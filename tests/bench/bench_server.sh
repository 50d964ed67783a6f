#!/usr/bin/env bash
# bench_server.sh SERVER: the control server under wrk on this machine (make bench-server).
#   GET of one experiment and of its metrics history (requests/s, p50 and p99 latency),
#   event ingestion through the worker endpoint (metric points/s), and 200 SSE clients
#   connected at once (every one sees a new event; the GET rate with them open).
# Each wrk measure runs ROUNDS times (default 3) for DURATION seconds (default 10); medians.
set -u
cd "$(dirname "$0")/../.."
SERVER=${1:-bin/chunkgrpo-server}
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} CONNECTIONS=${CONNECTIONS:-64} SSE_CLIENTS=${SSE_CLIENTS:-200}
command -v wrk >/dev/null || { echo "bench-server: wrk is not installed (deploy/install-deps.sh)"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-server.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n 4096

"$SERVER" --listen 127.0.0.1:0 --data "$TMP/data" --log-level warn --max-connections 4096 --lease-seconds 86400 >"$TMP/out" 2>"$TMP/log" &
for _ in $(seq 100); do grep -q listening "$TMP/out" && break; sleep 0.1; done
BASE=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$TMP/out")
ADMIN=$(cat "$TMP/data/admin.token")
j() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
call() { curl -s -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' "$@"; }
READ=$(call -d '{"name": "bench", "role": "read"}' "$BASE/api/v1/tokens" | j "['token']")
WTOK=$(call -d '{"name": "bench-worker", "role": "worker"}' "$BASE/api/v1/tokens" | j "['token']")
ID=$(call -d '{"config": {"kind": "grpo", "model": "models/shapes-small.safetensors"}}' "$BASE/api/v1/experiments" | j "['id']")
WID=$(curl -s -H "Authorization: Bearer $WTOK" -H 'Content-Type: application/json' -d '{"name": "bench"}' "$BASE/api/v1/workers/register" | j "['worker_id']")
curl -s -o /dev/null -X POST -H "Authorization: Bearer $WTOK" "$BASE/api/v1/workers/$WID/lease?wait=0"
# a run's worth of metrics: 2,000 iterations x 20 keys
python3 - "$WID" >"$TMP/fill.json" <<'PY'
import json, sys
print(json.dumps({"worker_id": sys.argv[1], "events": [
    {"seq": i, "type": "metrics", "data": {"iteration": i, "values": {f"m{k:02d}": i * 0.001 + k for k in range(20)}}}
    for i in range(1, 2001)]}))
PY
curl -s -o /dev/null -H "Authorization: Bearer $WTOK" -H 'Content-Type: application/json' --data-binary @"$TMP/fill.json" "$BASE/api/v1/experiments/$ID/events"

H=(-H "Authorization: Bearer $READ")
# wrk_run NAME URL [ARGS]: one wrk round; prints "requests_per_s p50_ms p99_ms non2xx"
wrk_run() {
    local url=$1; shift
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" >"$TMP/wrk" 2>&1
    python3 - "$TMP/wrk" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v, unit): return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", t, re.M)}
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
print(f"{rps:.0f} {lat['50']:.2f} {lat['99']:.2f} {bad.group(1) if bad else 0}")
PY
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # measure NAME URL [ARGS]: ROUNDS rounds; median of each column
    local name=$1; shift
    : >"$TMP/rounds"
    for _ in $(seq "$ROUNDS"); do wrk_run "$@" >>"$TMP/rounds"; done
    printf '%s %s %s %s %s\n' "$name" "$(cut -d' ' -f1 "$TMP/rounds" | median)" "$(cut -d' ' -f2 "$TMP/rounds" | median)" \
        "$(cut -d' ' -f3 "$TMP/rounds" | median)" "$(cut -d' ' -f4 "$TMP/rounds" | sort -n | tail -1)"
}
{
measure "GET-experiment" "$BASE/api/v1/experiments/$ID" "${H[@]}"
measure "GET-metrics(500pts)" "$BASE/api/v1/experiments/$ID/metrics?keys=m01&max_points=500" "${H[@]}"
} >"$TMP/results"

# ingestion: batches of 100 events x 20 values
: >"$TMP/rounds"
for _ in $(seq "$ROUNDS"); do
    BATCH=100 VALUES=20 WORKER_ID=$WID CONNECTIONS=8 wrk_run "$BASE/api/v1/experiments/$ID/events" -H "Authorization: Bearer $WTOK" -s tests/bench/ingest.lua >>"$TMP/rounds"
done
ingest_rps=$(cut -d' ' -f1 "$TMP/rounds" | median)
ingest_bad=$(cut -d' ' -f4 "$TMP/rounds" | sort -n | tail -1)
ingest_p99=$(cut -d' ' -f3 "$TMP/rounds" | median)

# SSE: 200 clients at once; each must see one new event; the GET rate with them connected
last=$(curl -s "${H[@]}" "$BASE/api/v1/experiments/$ID/logs" | j "['last_event_id']") # streams start after the history
for i in $(seq "$SSE_CLIENTS"); do
    curl -s -N -H "Authorization: Bearer $READ" "$BASE/api/v1/experiments/$ID/events?last_event_id=$last" >"$TMP/sse.$i" &
done
sleep 2
open_streams=$(curl -s "${H[@]}" "$BASE/metrics" | sed -n 's/^chunkgrpo_sse_clients //p')
t0=$(date +%s%N)
curl -s -o /dev/null -H "Authorization: Bearer $WTOK" -H 'Content-Type: application/json' \
    -d "{\"worker_id\": \"$WID\", \"events\": [{\"seq\": 99999999999, \"type\": \"log\", \"data\": {\"level\": \"info\", \"message\": \"sse-probe\"}}]}" \
    "$BASE/api/v1/experiments/$ID/events"
for _ in $(seq 200); do [ "$(grep -l sse-probe "$TMP"/sse.* 2>/dev/null | wc -l)" -ge "$SSE_CLIENTS" ] && break; sleep 0.05; done
delivered=$(grep -l sse-probe "$TMP"/sse.* 2>/dev/null | wc -l)
fanout_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
measure "GET-experiment+${SSE_CLIENTS}SSE" "$BASE/api/v1/experiments/$ID" "${H[@]}" >>"$TMP/results"

echo "bench-server: $(nproc) cores, wrk -t2 -c$CONNECTIONS, $ROUNDS rounds x ${DURATION}s, medians"
printf '%-30s %12s %9s %9s %8s\n' measure "requests/s" "p50 ms" "p99 ms" non-2xx
while read -r name rps p50 p99 bad; do printf '%-30s %12s %9s %9s %8s\n' "$name" "$rps" "$p50" "$p99" "$bad"; done <"$TMP/results"
printf '%-30s %12s %9s %9s %8s\n' "POST-events(100x20)" "$ingest_rps" "" "$ingest_p99" "$ingest_bad"
echo "ingestion: $(( ${ingest_rps%.*} * 100 * 20 )) metric points/s (batches of 100 events x 20 values, 8 connections)"
echo "SSE: $open_streams streams open; a new event reached $delivered of $SSE_CLIENTS clients within ${fanout_ms} ms"
get_rps=$(head -1 "$TMP/results" | cut -d' ' -f2); get_p99=$(head -1 "$TMP/results" | cut -d' ' -f4)
echo "targets: GET >= 10000 req/s: $get_rps; p99 < 20 ms: $get_p99; ingestion >= 20000 points/s: $(( ${ingest_rps%.*} * 2000 ))"
