#!/usr/bin/env bash
# Runs every test suite and adds up their counts. Each suite (a C test binary under
# $BUILD/tests/, the same binaries built with ASan + UBSan under $SAN_BUILD/tests/, a script under
# tests/cli/, and the fuzz-corpus replay) prints a line "suite: N passed, N failed, N skipped";
# a suite that crashes or prints no such line counts as one failure. Ends with the total line.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD

total_pass=0 total_fail=0 total_skip=0
failed_suites=()

run_suite() {
    local name=$1; shift
    local out rc line
    out=$(mktemp)
    echo "== $name"
    "$@" >"$out" 2>&1
    rc=$?
    line=$(grep -E '^[A-Za-z0-9_./-]+: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$out" | tail -n 1)
    if [ -z "$line" ]; then
        cat "$out"
        echo "$name: crashed or printed no summary (exit $rc)"
        total_fail=$((total_fail + 1))
        failed_suites+=("$name")
    else
        # show failures and skips with their context; passing suites stay one line
        if [ "$rc" -ne 0 ] || ! grep -q ' 0 failed' <<<"$line"; then cat "$out"; else grep -E '^(SKIP|  skipped|  [a-z0-9 ()-]+:)' "$out" || true; echo "$line"; fi
        read -r p f s < <(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped/\1 \2 \3/' <<<"$line")
        total_pass=$((total_pass + p)) total_fail=$((total_fail + f)) total_skip=$((total_skip + s))
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            echo "$name: exit status $rc with no failed test"
            total_fail=$((total_fail + 1))
        fi
        [ "$f" -gt 0 ] || [ "$rc" -ne 0 ] && failed_suites+=("$name")
    fi
    rm -f "$out"
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    run_suite "$(basename "$t")" "$t"
done
if [ -n "${SAN_BUILD:-}" ]; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    for t in "$SAN_BUILD"/tests/test_*; do
        [ -x "$t" ] || continue
        run_suite "asan+ubsan $(basename "$t")" "$t"
    done
    unset ASAN_OPTIONS UBSAN_OPTIONS
fi
# Replays one libFuzzer harness (build/fuzz/fuzz_NAME) over its committed corpus
# tests/fuzz/corpus/NAME/, one input at a time: each input is a test; a crash or a violated
# invariant fails it (its output is shown). Skipped when the harness was not built (no clang).
fuzz_replay() {
    local bin=$1 name corpus f pass=0 fail=0 out
    name=$(basename "$bin"); name=${name#fuzz_}
    corpus=tests/fuzz/corpus/$name
    if [ ! -x "$bin" ]; then
        echo "SKIP fuzz-replay $name (no clang: $bin not built)"
        echo "fuzz-replay-$name: 0 passed, 0 failed, 1 skipped"; return 0
    fi
    out=$(mktemp)
    for f in "$corpus"/*; do
        [ -f "$f" ] || continue
        if "$bin" -runs=0 "$f" >"$out" 2>&1; then pass=$((pass + 1))
        else fail=$((fail + 1)); echo "  $name: $f failed:"; tail -n 30 "$out"; fi
    done
    rm -f "$out"
    [ $((pass + fail)) -gt 0 ] || { echo "  $name: no inputs in $corpus"; fail=1; }
    echo "fuzz-replay-$name: $pass passed, $fail failed, 0 skipped"
    [ "$fail" -eq 0 ]
}
# FUZZ_BINS: the harnesses (space separated); FUZZ_BIN alone still works.
for b in ${FUZZ_BINS:-${FUZZ_BIN:-}}; do
    n=$(basename "$b"); run_suite "fuzz-replay ${n#fuzz_}" fuzz_replay "$b"
done
for t in tests/cli/*.sh; do
    [ -f "$t" ] || continue
    run_suite "$(basename "$t")" bash "$t"
done

echo
((${#failed_suites[@]})) && echo "failing suites: ${failed_suites[*]}"
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
