#!/usr/bin/env bash
# fixtures.sh: the committed raw fixtures (tests/reference/fixtures/*.cgraw, read by the GPU check
# program through tests/gpu/cgraw.c) are up to date with the .safetensors they are made from, and
# tests/reference/to_raw.py behaves: the same bytes when run again, --check exits 1 naming a
# missing or stale .cgraw, and a malformed .safetensors exits 2 naming the file and the tensor.
# That the .cgraw files hold the same tensors as the project's safetensors reader sees is
# tests/unit/test_cgraw.c's job. Skipped without python3.
# Ends with "fixtures: N passed, N failed, N skipped"; exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
LIMIT=60
TO_RAW=tests/reference/to_raw.py
FIX=tests/reference/fixtures

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fixtures.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

if ! "$PYTHON" -c 'import json, struct' 2>/dev/null; then
    skip "all" "no $PYTHON on PATH"
    summary fixtures
    exit
fi

# to_raw ARGS...: runs the converter; sets rc, stderr in $TMP/stderr.
to_raw() {
    timeout "$LIMIT" "$PYTHON" "$TO_RAW" "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
}
err_text() { tr '\n' ' ' <"$TMP/stderr" | cut -c1-400; }

to_raw --check "$FIX"/*.safetensors
if [ "$rc" -eq 0 ]; then pass "committed .cgraw fixtures are up to date"
else fail "committed .cgraw fixtures are up to date" "exit $rc: $(err_text)" \
    "fix: $PYTHON $TO_RAW $FIX/*.safetensors"; fi

n_st=$(ls "$FIX"/*.safetensors | wc -l)
n_raw=$(ls "$FIX"/*.cgraw 2>/dev/null | wc -l)
check "one .cgraw per .safetensors ($n_st)" [ "$n_st" -eq "$n_raw" ]

# converting copies again gives the committed bytes
cp "$FIX"/tiny_inputs.safetensors "$FIX"/tiny_model.safetensors "$TMP"/
to_raw "$TMP"/tiny_inputs.safetensors "$TMP"/tiny_model.safetensors
check "conversion succeeds" [ "$rc" -eq 0 ]
check "conversion is deterministic" cmp -s "$TMP"/tiny_inputs.cgraw "$FIX"/tiny_inputs.cgraw
check "header lists tensors, meta without multi-line vocab, end" [ "$(head -c 4096 \
    "$TMP"/tiny_model.cgraw | tr -d '\000' | grep -a -c -E '^(CGRAW1 39|meta format chunkgrpo-dit/1|meta config \{.*\}|end)$')" -eq 4 ]
check "no vocab meta line" [ "$(head -c 4096 "$TMP"/tiny_model.cgraw | grep -a -c '^meta vocab')" -eq 0 ]

# --check: stale and missing files exit 1 and are named
printf 'x' >>"$TMP"/tiny_inputs.cgraw
rm "$TMP"/tiny_model.cgraw
to_raw --check "$TMP"/tiny_inputs.safetensors "$TMP"/tiny_model.safetensors
if [ "$rc" -eq 1 ] && grep -q "$TMP/tiny_inputs.cgraw: differs" "$TMP/stderr" \
    && grep -q "$TMP/tiny_model.cgraw: missing" "$TMP/stderr"; then
    pass "--check names a stale and a missing .cgraw (exit 1)"
else fail "--check names a stale and a missing .cgraw (exit 1)" "exit $rc: $(err_text)"; fi
check "--check writes nothing" [ ! -e "$TMP"/tiny_model.cgraw ]

# malformed input: exit 2 with the file and the tensor named
"$PYTHON" - "$FIX"/tiny_inputs.safetensors "$TMP"/bad.safetensors <<'EOF'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
h = json.loads(raw[8:8 + n])
h["t"]["dtype"] = "F31"
hb = json.dumps(h).encode()
hb += b" " * (-len(hb) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])
EOF
to_raw "$TMP"/bad.safetensors
if [ "$rc" -eq 2 ] && grep -q "$TMP/bad.safetensors: tensor 't': unknown dtype 'F31'" "$TMP/stderr"; then
    pass "malformed .safetensors exits 2 naming file and tensor"
else fail "malformed .safetensors exits 2 naming file and tensor" "exit $rc: $(err_text)"; fi
check "nothing written for a malformed input" [ ! -e "$TMP"/bad.cgraw ]
to_raw "$TMP"/nonexistent.safetensors
check "missing input exits 2" [ "$rc" -eq 2 ]
to_raw
check "no arguments is a usage error (exit 2)" [ "$rc" -eq 2 ]

summary fixtures
