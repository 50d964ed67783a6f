#!/usr/bin/env bash
# worker_serve.sh: `chunkgrpo-worker serve` against a real chunkgrpo-server, on the tiny model:
#   (a) a grpo experiment runs to succeeded with one metrics point per iteration, its logs,
#       progress and artifacts (PNGs that decode, config, checkpoints, the final model);
#   (b) the worker is SIGKILLed after its first checkpoint reached the server; the lease expires
#       and a second worker with another work folder resumes from the server's checkpoint: no
#       iteration stored twice, and the final model equals the uninterrupted run's (a);
#   (c) the server is SIGKILLed mid-run and restarted on the same port: the run goes on (its
#       backlog sent) and succeeds with the same model;
#   (d) a cancel mid-run ends canceled, with a checkpoint on the server;
#   (e) two workers share a queue of four experiments: each runs once, all succeed;
#   (f) a wrong token (or none) is refused with a clear message and exit 3 (2);
#   (g) SIGTERM to a worker mid-run puts the experiment back in the queue (the worker exits 0)
#       and a new worker finishes it with the same model;
#   (h) a pretraining experiment (metrics by step, sample grids), a learned reward's (metrics
#       by step, evaluations in them), and a runner that fails (the experiment fails with the
#       runner's last line as the reason).
# Runs are frozen (SIGSTOP of the runner) where a race with their end would otherwise decide.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
. tests/cli/server_lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/worker-serve.XXXXXX") || exit 1
FROZEN=() # runners stopped with SIGSTOP: a stopped process ignores its parent's death
trap 'for p in "${FROZEN[@]}"; do kill -KILL $p 2>/dev/null; done; kill -KILL $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
MODEL=tests/reference/fixtures/tiny_model.safetensors
ITERS=24

config() { # config ITERATIONS: the run every case shares (checkpoints every 4 iterations)
    printf '{"kind": "grpo", "model": "%s", "iterations": %d, "prompts_per_iter": 2, "group_size": 3, "steps": 6, "eval_every": 8, "eval_prompts": 4, "eval_seeds": 1, "checkpoint_every": 4, "batch": 8, "threads": 2, "lr": 1e-3, "clip_eps": 1e-2, "seed": 3}' "$MODEL" "$1"
}
submit() { # submit ITERATIONS: queues an experiment, sets X
    api POST /api/v1/experiments "{\"config\": $(config "$1")}"
    X=$(jget "j['id']")
}
worker() { # worker NAME [FLAGS...]: a worker with work folder $TMP/NAME, its log $TMP/NAME.log; sets WPID
    local name=$1; shift
    "$WORKER" serve --server "$BASE" --token-file "$TOKEN_FILE" --name "$name" --work "$TMP/$name" "$@" 2>>"$TMP/$name.log" &
    WPID=$!
}
field() { api GET "/api/v1/experiments/$1"; jget "$2"; }
status_is() { [ "$(field "$1" "j['status']")" = "$2" ]; }
has_artifact() { api GET "/api/v1/experiments/$1/artifacts"; [ "$(jget "any(a['name'] == '$2' for a in j['items'])")" = True ]; }
fetch() { curl -sf -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/experiments/$1/artifacts/$2" -o "$3"; }
# iterations_once ID KEY FIRST: the series of KEY holds iterations FIRST..ITERS, each once
iterations_once() {
    api GET "/api/v1/experiments/$1/metrics?keys=$2&max_points=100000"
    [ "$(jget "j['series']['$2']['iteration'] == list(range($3, $ITERS + 1))")" = True ]
}
same_model() { fetch "$1" model.safetensors "$TMP/model-$1.safetensors" && cmp -s "$TMP/model-$1.safetensors" "$TMP/reference.safetensors"; }
runner_line() { grep -qF "$2" "$1/runner.log" 2>/dev/null; }
# freeze NAME ID: once the worker's run has written its first checkpoint, stops its runner (RUNNER)
freeze() {
    wait_for 60 test -f "$TMP/$1/exp-$2/run/checkpoints/latest" || return 1
    RUNNER=$(pgrep -P "$WPID") && kill -STOP "$RUNNER" && FROZEN+=("$RUNNER")
}
thaw() { kill -CONT "$RUNNER"; }
not() { ! "$@"; }
# await PID: the exit status of a worker, which is killed (137) if it is still there after 120 s
await() { wait_for 120 not kill -0 "$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null; wait "$1"; }
fail_log() { fail "$1" "$(tail -n 15 "$2")"; }

# the main server: heartbeats every 3 s (lease 10 s); its port is kept for the restart in (c)
start_server "$TMP/data" --lease-seconds 10 || { fail "server starts" "see above"; summary worker-serve; exit 1; }
PORT=${BASE##*:}
api POST /api/v1/tokens '{"name": "w", "role": "worker"}'
jget "j['token']" >"$TMP/token"
TOKEN_FILE=$TMP/token

# ---- (a) an experiment to the end
submit $ITERS
A=$X
worker a --once
if await $WPID; then pass "(a) the worker exits 0 after one experiment (--once)"; else fail_log "(a) the worker exits 0 after one experiment (--once)" "$TMP/a.log"; fi
check "(a) the experiment succeeded" status_is $A succeeded
check "(a) the final progress is the last iteration" [ "$(field $A "(j['progress']['iteration'], j['progress']['total'])")" = "($ITERS, $ITERS)" ]
check "(a) one metrics point per iteration" iterations_once $A reward_mean 1
check "(a) the evaluations at 0, 8, 16, 24" [ "$(api GET "/api/v1/experiments/$A/metrics?keys=eval_align"; jget "j['series']['eval_align']['iteration']")" = "[0, 8, 16, 24]" ]
api GET "/api/v1/experiments/$A/logs"
check "(a) the runner's output is in the logs" [ "$(jget "sum('step $ITERS/$ITERS' in i['message'] for i in j['items'])")" = 1 ]
api GET "/api/v1/experiments/$A/artifacts"
jget "'\n'.join(a['name'] for a in j['items'])" >"$TMP/a.artifacts"
all_listed() { for n in "$@"; do grep -qxF "$n" "$TMP/a.artifacts" || return 1; done; }
check "(a) config, evaluations, group views and the model are artifacts" all_listed config.json eval/iter-0000024/eval.json eval/iter-0000024/ode_grid.png groups/iter-0000024.json groups/iter-0000001.png model.safetensors
check "(a) metrics.jsonl is no artifact (it is sent as events)" not grep -q metrics "$TMP/a.artifacts"
fetch $A checkpoints/latest "$TMP/latest"
check "(a) checkpoints/latest names the last checkpoint, whose files are artifacts" grep -qxF "checkpoints/$(cat "$TMP/latest")/train_state.safetensors" "$TMP/a.artifacts"
fetch $A model.safetensors "$TMP/reference.safetensors"
check "(a) the model artifact is the run's model" cmp -s "$TMP/reference.safetensors" "$TMP/a/exp-$A/run/model.safetensors"
pngs=0 bad=
for name in $(grep '\.png$' "$TMP/a.artifacts"); do
    fetch $A "$name" "$TMP/image.png" || { bad="$bad $name(download)"; continue; }
    pngs=$((pngs + 1))
    # every chunk's CRC, the IHDR, and the inflated IDAT: one filter byte + a row per line
    $PYTHON - "$TMP/image.png" <<'PY' || bad="$bad $name"
import struct, sys, zlib
d = open(sys.argv[1], "rb").read()
assert d[:8] == b"\x89PNG\r\n\x1a\n", "signature"
pos, idat, ihdr = 8, b"", None
while pos < len(d):
    n, kind = struct.unpack(">I4s", d[pos:pos + 8])
    body = d[pos + 8:pos + 8 + n]
    assert zlib.crc32(kind + body) == struct.unpack(">I", d[pos + 8 + n:pos + 12 + n])[0], kind
    if kind == b"IHDR": ihdr = struct.unpack(">IIBBBBB", body)
    if kind == b"IDAT": idat += body
    pos += 12 + n
w, h, depth, ctype = ihdr[:4]
assert w > 0 and h > 0 and depth == 8
assert len(zlib.decompress(idat)) == h * (1 + w * {0: 1, 2: 3, 4: 2, 6: 4}[ctype])
PY
done
check "(a) the PNG artifacts decode ($pngs of them)" [ "$pngs" -ge 6 -a -z "$bad" ]

# ---- (b) SIGKILL of the worker; the lease expires; another machine resumes
start_server_b() { # a second server with 2 s leases, beside the main one
    local base=$BASE admin=$ADMIN pid=$SERVER_PID
    start_server "$TMP/data-b" --lease-seconds 2 || return 1
    BASE_B=$BASE ADMIN_B=$ADMIN PID_B=$SERVER_PID BASE=$base ADMIN=$admin SERVER_PID=$pid
}
on_b() { # on_b COMMAND...: runs the command against server b
    local base=$BASE admin=$ADMIN; BASE=$BASE_B ADMIN=$ADMIN_B
    "$@"; local rc=$?
    BASE=$base ADMIN=$admin; return $rc
}
if start_server_b; then
    on_b api POST /api/v1/tokens '{"name": "w", "role": "worker"}'
    on_b jget "j['token']" >"$TMP/token-b"
    TOKEN_FILE=$TMP/token-b
    on_b submit $ITERS
    B=$X
    on_b worker b1
    freeze b1 $B && on_b wait_for 30 has_artifact $B checkpoints/latest
    check "(b) the first checkpoint reached the server before the kill" on_b has_artifact $B checkpoints/latest
    kill -KILL $WPID $RUNNER; wait $WPID 2>/dev/null
    check "(b) the run was not over" on_b status_is $B running
    on_b worker b2 --once
    if await $WPID; then pass "(b) the second worker ends its experiment"; else fail_log "(b) the second worker ends its experiment" "$TMP/b2.log"; fi
    check "(b) succeeded on the second attempt" [ "$(on_b field $B "(j['status'], j['attempts'])")" = "('succeeded', 2)" ]
    check "(b) resumed from the server's checkpoint" runner_line "$TMP/b2/exp-$B" "from the server"
    check "(b) no iteration stored twice" on_b iterations_once $B reward_mean 1
    check "(b) the model equals the uninterrupted run's" on_b same_model $B
    kill -TERM $PID_B; wait $PID_B 2>/dev/null
    TOKEN_FILE=$TMP/token
else
    fail "(b) the second server starts" "see above"
fi

# ---- (c) SIGKILL of the server mid-run, restarted on the same port
submit $ITERS
C=$X
worker c --once
freeze c $C
kill -KILL $SERVER_PID; wait $SERVER_PID 2>/dev/null
thaw # the run goes on while the server is away
sleep 1.5
start_server "$TMP/data" --lease-seconds 10 --listen "127.0.0.1:$PORT" || fail "(c) the server restarts on port $PORT" "see above"
if await $WPID; then pass "(c) the worker ends its experiment"; else fail_log "(c) the worker ends its experiment" "$TMP/c.log"; fi
check "(c) succeeded in one attempt" [ "$(field $C "(j['status'], j['attempts'])")" = "('succeeded', 1)" ]
check "(c) the worker retried while the server was away" grep -q "next try in" "$TMP/c.log"
check "(c) every iteration stored once" iterations_once $C reward_mean 1
check "(c) the model equals the uninterrupted run's" same_model $C

# ---- (d) cancel mid-run
submit $ITERS
D=$X
worker d --once
freeze d $D && wait_for 30 has_artifact $D checkpoints/latest
api POST "/api/v1/experiments/$D/cancel"
# the runner goes on once the worker has asked it to stop
wait_for 30 runner_line "$TMP/d/exp-$D" "canceled on the server"
thaw
if await $WPID; then pass "(d) the worker ends its experiment"; else fail_log "(d) the worker ends its experiment" "$TMP/d.log"; fi
check "(d) canceled" status_is $D canceled
check "(d) with a checkpoint on the server" has_artifact $D checkpoints/latest
check "(d) and no final model" not has_artifact $D model.safetensors

# ---- (e) two workers, four experiments
ids=()
for i in 1 2 3 4; do submit 6; ids+=($X); done
worker e1; E1=$WPID
worker e2; E2=$WPID
all_done() { for x in "${ids[@]}"; do status_is $x succeeded || return 1; done; }
check "(e) four experiments succeed" wait_for 120 all_done
check "(e) each was leased once" [ "$(for x in "${ids[@]}"; do field $x "j['attempts']"; done | sort -u)" = 1 ]
check "(e) each ran on one worker" [ "$(cat "$TMP/e1.log" "$TMP/e2.log" | grep -c 'leased experiment')" = 4 ]
check "(e) both workers worked" [ "$(for x in "${ids[@]}"; do field $x "j['worker_id']"; done | sort -u | wc -l)" = 2 ]
# idle workers let their long poll run out (<= 20 s; (f) runs meanwhile) and then exit 0
kill -TERM $E1 $E2

# ---- (f) tokens
echo "not-a-token" >"$TMP/bad-token"
timeout 30 "$WORKER" serve --server "$BASE" --token-file "$TMP/bad-token" --work "$TMP/f" 2>"$TMP/f.log"
check "(f) a wrong token exits 3" [ $? = 3 ]
check "(f) with a clear message" grep -q "refused this worker's token" "$TMP/f.log"
api POST /api/v1/tokens '{"name": "r", "role": "read"}'
CHUNKGRPO_TOKEN=$(jget "j['token']") timeout 30 "$WORKER" serve --server "$BASE" --work "$TMP/f" 2>"$TMP/f.log"
check "(f) a token of another role exits 3" [ $? = 3 ]
env -u CHUNKGRPO_TOKEN "$WORKER" serve --server "$BASE" --work "$TMP/f" 2>"$TMP/f.log"
rc=$?
check "(f) no token at all is a usage error that says so" eval '[ $rc = 2 ] && grep -q CHUNKGRPO_TOKEN "$TMP/f.log"'

await $E1; rc1=$?
await $E2; rc2=$?
check "(e) idle workers exit 0 on SIGTERM" [ $rc1 = 0 -a $rc2 = 0 ]
check "(e) and hold no lease" [ "$(api GET /api/v1/experiments?status=running; jget "len(j['items'])")" = 0 ]

# ---- (g) SIGTERM to the worker mid-run: back to the queue, then a new worker finishes it
submit $ITERS
G=$X
worker g
freeze g $G
kill -TERM $WPID
wait_for 30 runner_line "$TMP/g/exp-$G" "the worker is stopping"
thaw
if await $WPID; then pass "(g) the stopped worker exits 0"; else fail_log "(g) the stopped worker exits 0" "$TMP/g.log"; fi
check "(g) the experiment is queued again, the attempt not counted" [ "$(field $G "(j['status'], j['attempts'])")" = "('queued', 0)" ]
check "(g) its checkpoint is on the server" has_artifact $G checkpoints/latest
worker g --once # the same work folder: it resumes from its own checkpoint
if await $WPID; then pass "(g) a new worker ends the experiment"; else fail_log "(g) a new worker ends the experiment" "$TMP/g.log"; fi
check "(g) succeeded" status_is $G succeeded
check "(g) resumed from the local checkpoint" runner_line "$TMP/g/exp-$G" "resuming from the checkpoint"
check "(g) every iteration stored once" iterations_once $G reward_mean 1
check "(g) the model equals the uninterrupted run's" same_model $G

# ---- (h) other kinds, and a runner that fails
api POST /api/v1/experiments '{"config": {"kind": "pretrain", "preset": "tiny", "steps": 20, "batch_size": 4, "warmup_steps": 2, "log_every": 5, "checkpoint_every": 10, "sample_every": 10, "threads": 2, "seed": 7}}'
P=$(jget "j['id']")
worker h --once
await $WPID
check "(h) a pretraining experiment succeeds" status_is $P succeeded
check "(h) its metrics are keyed by step" [ "$(api GET "/api/v1/experiments/$P/metrics?keys=loss"; jget "j['series']['loss']['iteration']")" = "[5, 10, 15, 20]" ]
check "(h) its sample grids and EMA model are artifacts" eval 'has_artifact $P samples/step-0000020-ema.png && has_artifact $P model_ema.safetensors'
api POST /api/v1/experiments '{"config": {"kind": "reward_train", "preset": "tiny", "dim": 0, "depth": 0, "steps": 20, "batch_size": 4, "warmup_steps": 2, "eval_every": 10, "eval_pairs": 8, "log_every": 5, "checkpoint_every": 10, "threads": 2}}'
R=$(jget "j['id']")
worker h --once
await $WPID
check "(h) a learned-reward experiment succeeds, its model an artifact" eval 'status_is $R succeeded && has_artifact $R model.safetensors'
check "(h) its final progress counts its steps" [ "$(field $R "(j['progress']['iteration'], j['progress']['total'])")" = "(20, 20)" ]
check "(h) its metrics are keyed by step, evaluations by degradation among them" [ "$(api GET "/api/v1/experiments/$R/metrics?keys=loss,eval_accuracy,eval_accuracy_by.noise"; jget "(j['series']['loss']['iteration'], j['series']['eval_accuracy']['iteration'], j['series']['eval_accuracy_by.noise']['iteration'])")" = "([5, 10, 15, 20], [10, 20], [10, 20])" ]
api POST /api/v1/experiments "{\"config\": $(config 4 | sed 's#"model": "[^"]*"#"model": "/nonexistent/m.safetensors"#')}"
F=$(jget "j['id']")
worker h --once
await $WPID
check "(h) a runner that fails ends the experiment failed" status_is $F failed
check "(h) with the runner's last line as the reason" [ "$(field $F "'/nonexistent/m.safetensors' in j['error'] and j['error'].startswith('chunkgrpo-worker:')")" = True ]
api GET "/api/v1/experiments/$F/logs"
check "(h) and that line logged as an error" [ "$(jget "[i['level'] for i in j['items'] if 'nonexistent' in i['message']]")" = "['error']" ]

stop_server
summary worker-serve
