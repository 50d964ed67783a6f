# server_lib.bash: what the server test scripts share (source after lib.bash): a real
# chunkgrpo-server on a free loopback port over a fresh data folder, and an `api` call that
# records every JSON exchange so the suite can check them against schema/openapi.json.
SERVER=${SERVER:-bin/chunkgrpo-server}

# start_server DATA_DIR [FLAGS...]: starts the server (its log in DATA_DIR.log); sets SERVER_PID,
# BASE (http://127.0.0.1:PORT) and, from the admin token file, ADMIN.
start_server() {
    local data=$1; shift
    rm -f "$data.out" # a restart must not read the last run's port
    "$SERVER" --listen 127.0.0.1:0 --data "$data" "$@" >"$data.out" 2>"$data.log" &
    SERVER_PID=$!
    if ! wait_for 20 grep -q 'listening on' "$data.out"; then
        echo "server did not start:"; cat "$data.log"; return 1
    fi
    BASE=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$data.out" | tail -n 1)
    ADMIN=$(cat "$data/admin.token")
}
stop_server() { kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; }

# api METHOD PATH [BODY] [CURL ARGS...]: sets status, body, ctype; TOKEN (default ADMIN) is the
# bearer ("" = none). JSON answers are appended to $RECORDS for the OpenAPI check.
RECORDS=${RECORDS:-}
api() {
    local method=$1 path=$2 data=${3-}; shift 3 2>/dev/null || shift $#
    local args=(-s -o "$TMP/body" -w '%{http_code} %{content_type}' -X "$method")
    local token=${TOKEN-$ADMIN}
    [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
    [ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
    local out
    out=$(curl "${args[@]}" "$@" "$BASE$path")
    status=${out%% *} ctype=${out#* }
    body=$(cat "$TMP/body")
    if [ -n "$RECORDS" ] && [[ $ctype == application/json* ]]; then
        $PYTHON -c 'import json,sys; print(json.dumps({"method": sys.argv[1], "path": sys.argv[2].split("?")[0], "status": int(sys.argv[3]), "content_type": sys.argv[4], "body": json.load(open(sys.argv[5]))}))' \
            "$method" "$path" "$status" "$ctype" "$TMP/body" >>"$RECORDS" 2>/dev/null
    fi
}
# jget EXPR: evaluates a Python expression over the last body (bound to j).
jget() { $PYTHON -c "import json,sys; j=json.loads(sys.stdin.read()); r=($1); print(r)" <<<"$body"; }
# expect NAME STATUS [CODE [FIELD]]: the last call answered STATUS (and that error code/field).
expect() {
    local name=$1 want=$2 code=${3-} field=${4-}
    if [ "$status" != "$want" ]; then fail "$name" "status $status, wanted $want: ${body:0:300}"; return; fi
    if [ -n "$code" ] && [ "$(jget "j['error']['code']")" != "$code" ]; then fail "$name" "error code: ${body:0:300}"; return; fi
    if [ -n "$field" ] && [ "$(jget "j['error'].get('field')")" != "$field" ]; then fail "$name" "error field: ${body:0:300}"; return; fi
    pass "$name"
}
