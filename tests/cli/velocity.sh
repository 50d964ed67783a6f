#!/usr/bin/env bash
# velocity.sh: tests of the public tool `chunkgrpo-worker velocity` as a user runs it.
#   happy path  output against the PyTorch fixture (tests/reference/fixtures/tiny_expected),
#               with and without --grad, and byte-identical for --threads 1 and 2
#   bad input   each case must exit 3 (bad input), 2 (usage) or 4 (I/O) with a message naming
#               the tensor, flag or path at fault, and must leave no output file behind
# Bad input files are built from the good ones by tests/cli/st_compare.py --write (stdlib python).
# Every command runs under `timeout`; the temporary folder is removed on exit.
# Ends with "velocity: N passed, N failed, N skipped"; exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/../.."

. tests/cli/lib.bash
ST=tests/cli/st_compare.py
FIX=tests/reference/fixtures
MODEL=$FIX/tiny_model.safetensors
INPUTS=$FIX/tiny_inputs.safetensors
EXPECTED=$FIX/tiny_expected.safetensors
LIMIT=60 # seconds per command; the tiny model takes well under one

TMP=$(mktemp -d "${TMPDIR:-/tmp}/velocity.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT


# Runs the worker's velocity command; sets rc, and leaves stderr in $TMP/stderr.
velocity() {
    timeout "$LIMIT" "$WORKER" velocity "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
}
st() { timeout "$LIMIT" "$PYTHON" "$ST" "$@"; }
err_text() { tr '\n' ' ' <"$TMP/stderr" | cut -c1-400; }

# expect_error NAME RC OUT PATTERN... -- ARGS...
# Runs velocity ARGS and checks: exit status RC, every PATTERN (fixed string) in stderr, and no
# file at OUT nor OUT.tmp afterwards.
expect_error() {
    local name=$1 want=$2 out=$3 problems=() p
    shift 3
    local patterns=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do patterns+=("$1"); shift; done
    shift
    velocity "$@"
    if [ "$rc" -ne "$want" ]; then
        fail "$name" "exit $rc, expected $want; stderr: $(err_text)"
        return
    fi
    [ -e "$out" ] && problems+=("left an output file at $out")
    [ -e "$out.tmp" ] && problems+=("left a temporary file at $out.tmp")
    if [ ${#problems[@]} -gt 0 ]; then
        fail "$name" "${problems[@]}"
        return
    fi
    for p in "${patterns[@]}"; do
        grep -qF -- "$p" "$TMP/stderr" || problems+=("stderr lacks \"$p\": $(err_text)")
    done
    if [ ${#problems[@]} -eq 0 ]; then pass "$name"; else fail "$name" "${problems[@]}"; fi
}

# The tensor names of a file, one a line, sorted.
tensor_names() { st --list "$1" | grep -v '^__metadata__ ' | cut -d' ' -f1 | sort; }

if [ ! -x "$WORKER" ]; then
    fail "worker binary" "$WORKER not found or not executable (run make first)"
    echo "velocity: $passed passed, $failed failed, $skipped skipped"
    exit 1
fi
have_python=1
if ! "$PYTHON" -c 'import array, json, struct' 2>/dev/null; then
    have_python=0
fi
need_python() { # skips test $1 when there is no python3
    [ "$have_python" -eq 1 ] && return 0
    skip "$1" "no $PYTHON on PATH"
    return 1
}

# ---- st_compare itself: must tell a match from a mismatch, else the happy path proves nothing
if need_python "st_compare sanity"; then
    problems=()
    st "$EXPECTED" "$EXPECTED" >/dev/null || problems+=("a file against itself did not compare equal")
    st --write "$TMP/perturbed.st" --from "$EXPECTED" --set "grad.final.linear.bias@0=0.5" \
        || problems+=("--write failed")
    st "$TMP/perturbed.st" "$EXPECTED" >"$TMP/cmp" 2>&1
    [ $? -eq 1 ] && grep -q 'FAIL grad.final.linear.bias' "$TMP/cmp" \
        || problems+=("a changed element was not caught: $(tr '\n' ' ' <"$TMP/cmp")")
    st --write "$TMP/no_v.st" --from "$EXPECTED" --drop v || problems+=("--write --drop failed")
    st "$TMP/no_v.st" "$EXPECTED" >/dev/null 2>&1
    [ $? -eq 1 ] || problems+=("a missing tensor was not caught")
    st "$TMP/nonexistent.st" "$EXPECTED" >/dev/null 2>&1
    [ $? -eq 2 ] || problems+=("an unreadable file did not exit 2")
    if [ ${#problems[@]} -eq 0 ]; then pass "st_compare sanity"; else fail "st_compare sanity" "${problems[@]}"; fi
fi

# ---- happy path
velocity --model "$MODEL" --inputs "$INPUTS" --out "$TMP/grad.st" --grad
grad_rc=$rc
if [ "$grad_rc" -ne 0 ]; then
    fail "velocity --grad matches PyTorch" "exit $rc: $(err_text)"
elif need_python "velocity --grad matches PyTorch"; then
    if ! st "$TMP/grad.st" "$EXPECTED" --tol 1e-4 >"$TMP/cmp" 2>&1; then
        fail "velocity --grad matches PyTorch" "$(cat "$TMP/cmp")"
    elif ! diff <(tensor_names "$TMP/grad.st") <(tensor_names "$EXPECTED") >"$TMP/diff"; then
        fail "velocity --grad matches PyTorch" "tensor names differ from the fixture's:" "$(cat "$TMP/diff")"
    else
        pass "velocity --grad matches PyTorch"
        sed 's/^/  /' "$TMP/cmp" | grep 'worst' || true
    fi
fi

velocity --model "$MODEL" --inputs "$INPUTS" --out "$TMP/v.st"
if [ "$rc" -ne 0 ]; then
    fail "velocity without --grad writes only v" "exit $rc: $(err_text)"
elif need_python "velocity without --grad writes only v"; then
    names=$(tensor_names "$TMP/v.st" | tr '\n' ' ')
    if [ "$names" != "v " ]; then
        fail "velocity without --grad writes only v" "tensors: $names"
    elif ! st "$TMP/v.st" "$EXPECTED" --tol 1e-4 --names v >"$TMP/cmp" 2>&1; then
        fail "velocity without --grad writes only v" "$(cat "$TMP/cmp")"
    else
        pass "velocity without --grad writes only v"
    fi
fi

problems=()
for n in 1 2; do
    velocity --model "$MODEL" --inputs "$INPUTS" --out "$TMP/threads$n.st" --grad --threads "$n"
    [ "$rc" -eq 0 ] || problems+=("--threads $n: exit $rc: $(err_text)")
done
if [ ${#problems[@]} -eq 0 ]; then
    cmp -s "$TMP/threads1.st" "$TMP/threads2.st" || problems+=("--threads 1 and 2 outputs differ")
    [ "$grad_rc" -eq 0 ] && ! cmp -s "$TMP/threads1.st" "$TMP/grad.st" &&
        problems+=("--threads 1 differs from the default thread count")
fi
if [ ${#problems[@]} -eq 0 ]; then pass "--threads 1 and 2 give identical bytes"; else fail "--threads 1 and 2 give identical bytes" "${problems[@]}"; fi

# ---- bad inputs: files built from the good ones
OUT=$TMP/out.st
if need_python "bad input files"; then
    st --write "$TMP/no_t.st" --from "$INPUTS" --drop t &&
    st --write "$TMP/x_spatial.st" --from "$INPUTS" x:F32:3,8,8,3:rand &&
    st --write "$TMP/tokens_f32.st" --from "$INPUTS" tokens:F32:3,8:2 &&
    st --write "$TMP/t_batch2.st" --from "$INPUTS" t:F32:2:0.5 &&
    st --write "$TMP/t_batch4.st" --from "$INPUTS" t:F32:4:0.5 &&
    st --write "$TMP/tokens_batch.st" --from "$INPUTS" tokens:I32:2,8:2 &&
    st --write "$TMP/oov.st" --from "$INPUTS" --set tokens@13=25 &&
    st --write "$TMP/negative_id.st" --from "$INPUTS" --set tokens@0=-1 &&
    st --write "$TMP/no_dv.st" --from "$INPUTS" --drop dv
    made=$?
    if [ "$made" -ne 0 ]; then
        fail "bad input files" "st_compare.py --write failed"
    else
        expect_error "missing tensor t" 3 "$OUT" "'t'" -- \
            --model "$MODEL" --inputs "$TMP/no_t.st" --out "$OUT"
        expect_error "x with the wrong spatial size" 3 "$OUT" "'x'" "[3, 8, 8, 3]" -- \
            --model "$MODEL" --inputs "$TMP/x_spatial.st" --out "$OUT"
        expect_error "tokens typed F32" 3 "$OUT" "'tokens'" "F32" "I32" -- \
            --model "$MODEL" --inputs "$TMP/tokens_f32.st" --out "$OUT"
        expect_error "t with batch 2 against x with 3" 3 "$OUT" "'t'" -- \
            --model "$MODEL" --inputs "$TMP/t_batch2.st" --out "$OUT"
        expect_error "t with batch 4 against x with 3" 3 "$OUT" "'t'" -- \
            --model "$MODEL" --inputs "$TMP/t_batch4.st" --out "$OUT"
        expect_error "tokens with batch 2 against x with 3" 3 "$OUT" "'tokens'" -- \
            --model "$MODEL" --inputs "$TMP/tokens_batch.st" --out "$OUT"
        expect_error "token id past the vocabulary" 3 "$OUT" "'tokens'" "25" "[1, 5]" -- \
            --model "$MODEL" --inputs "$TMP/oov.st" --out "$OUT"
        expect_error "negative token id" 3 "$OUT" "'tokens'" "-1" "[0, 0]" -- \
            --model "$MODEL" --inputs "$TMP/negative_id.st" --out "$OUT"
        expect_error "--grad without dv" 3 "$OUT" "'dv'" -- \
            --model "$MODEL" --inputs "$TMP/no_dv.st" --out "$OUT" --grad
        # dv is needed only for --grad
        velocity --model "$MODEL" --inputs "$TMP/no_dv.st" --out "$TMP/no_dv_out.st"
        if [ "$rc" -eq 0 ] && [ -s "$TMP/no_dv_out.st" ]; then pass "no dv without --grad is fine"
        else fail "no dv without --grad is fine" "exit $rc: $(err_text)"; fi

        # A failed run leaves an existing output file as it was.
        echo "previous contents" >"$TMP/keep.st"
        velocity --model "$MODEL" --inputs "$TMP/no_t.st" --out "$TMP/keep.st"
        if [ "$rc" -eq 3 ] && [ "$(cat "$TMP/keep.st")" = "previous contents" ] && [ ! -e "$TMP/keep.st.tmp" ]
        then pass "failed run keeps the old output file"
        else fail "failed run keeps the old output file" "exit $rc; contents now: $(head -c 60 "$TMP/keep.st")"; fi
    fi
fi

size=$(wc -c <"$INPUTS")
head -c $((size - 100)) "$INPUTS" >"$TMP/inputs_truncated.st"
expect_error "truncated inputs file" 3 "$OUT" "$TMP/inputs_truncated.st" -- \
    --model "$MODEL" --inputs "$TMP/inputs_truncated.st" --out "$OUT"
head -c 100 "$INPUTS" >"$TMP/inputs_header_cut.st"
expect_error "inputs file cut inside the header" 3 "$OUT" "$TMP/inputs_header_cut.st" -- \
    --model "$MODEL" --inputs "$TMP/inputs_header_cut.st" --out "$OUT"
size=$(wc -c <"$MODEL")
head -c $((size / 2)) "$MODEL" >"$TMP/model_truncated.st"
expect_error "truncated model file" 3 "$OUT" "$TMP/model_truncated.st" -- \
    --model "$TMP/model_truncated.st" --inputs "$INPUTS" --out "$OUT"
expect_error "model file that is not a checkpoint" 3 "$OUT" "$INPUTS" "format" -- \
    --model "$INPUTS" --inputs "$INPUTS" --out "$OUT"
echo "not a safetensors file at all" >"$TMP/model.txt"
expect_error "model file that is text" 3 "$OUT" "$TMP/model.txt" -- \
    --model "$TMP/model.txt" --inputs "$INPUTS" --out "$OUT"
expect_error "model file that does not exist" 3 "$OUT" "$TMP/missing.st" -- \
    --model "$TMP/missing.st" --inputs "$INPUTS" --out "$OUT"

# ---- usage errors (exit 2)
expect_error "missing --out" 2 "$OUT" "--out" -- --model "$MODEL" --inputs "$INPUTS"
expect_error "missing --model" 2 "$OUT" "--model" -- --inputs "$INPUTS" --out "$OUT"
expect_error "unknown flag" 2 "$OUT" "--bogus" -- \
    --model "$MODEL" --inputs "$INPUTS" --out "$OUT" --bogus
expect_error "--threads 0" 2 "$OUT" "--threads" '"0"' -- \
    --model "$MODEL" --inputs "$INPUTS" --out "$OUT" --threads 0
expect_error "--threads abc" 2 "$OUT" "--threads" "abc" -- \
    --model "$MODEL" --inputs "$INPUTS" --out "$OUT" --threads abc
expect_error "--threads without a value" 2 "$OUT" "--threads" -- \
    --model "$MODEL" --inputs "$INPUTS" --out "$OUT" --threads
expect_error "stray positional argument" 2 "$OUT" "\"extra\"" -- \
    --model "$MODEL" --inputs "$INPUTS" --out "$OUT" extra

# ---- output failures (exit 4), no partial file
expect_error "output in a nonexistent directory" 4 "$TMP/nodir/out.st" "$TMP/nodir/out.st" -- \
    --model "$MODEL" --inputs "$INPUTS" --out "$TMP/nodir/out.st"
mkdir "$TMP/a_directory"
velocity --model "$MODEL" --inputs "$INPUTS" --out "$TMP/a_directory"
if [ "$rc" -eq 4 ] && grep -qF -- "$TMP/a_directory" "$TMP/stderr" && [ -d "$TMP/a_directory" ] &&
    [ ! -e "$TMP/a_directory.tmp" ]; then
    pass "output path that is a directory"
else
    fail "output path that is a directory" "exit $rc (expected 4); $(ls -d "$TMP"/a_directory* | tr '\n' ' '); stderr: $(err_text)"
fi

summary velocity
