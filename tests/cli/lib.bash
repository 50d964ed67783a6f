# lib.bash: what the command-line test scripts share (source it after `cd` to the repo root).
# Counts results and prints the closing line "SUITE: N passed, N failed, N skipped".
WORKER=${WORKER:-bin/chunkgrpo-worker}
PYTHON=${PYTHON:-python3}
passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; shift; printf '  %s\n' "$@"; }
skip() { skipped=$((skipped + 1)); echo "SKIP $1"; echo "  skipped: $2"; }
# check NAME CONDITION-COMMAND... : passes when the command succeeds.
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "failed: $*"; fi; }
# wait_for SECONDS COMMAND...: polls (every 0.1 s) until the command succeeds; 1 on time-out.
wait_for() {
    local limit=$1 i=0; shift
    while ! "$@"; do
        i=$((i + 1))
        [ "$i" -ge $((limit * 10)) ] && return 1
        sleep 0.1
    done
}
summary() {
    echo "$1: $passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]
}
