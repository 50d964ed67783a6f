#!/usr/bin/env bash
# score.sh: tests of `chunkgrpo-worker score` and `chunkgrpo-worker render` as a user runs them.
#   render      ground-truth PNGs of captions and of the generator's splits, byte-identical for
#               the same flags; the prompt sets listed
#   score       JSON lines with the breakdown, one per image and in order; its own caption scores
#               >= 0.97, a wrong one far less; --pairs with paths relative to the file
#   bad input   each case exits 2 (usage), 3 (bad input) or 4 (I/O) with a message naming the
#               flag, FILE:LINE, field or path at fault
# JSON is read with a stdlib python3 one-liner (skipped without python3). Every command runs
# under `timeout`; the temporary folder is removed on exit.
# Ends with "score: N passed, N failed, N skipped"; exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
LIMIT=60

TMP=$(mktemp -d "${TMPDIR:-/tmp}/score.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

# run ARGS...: runs the worker; sets rc, stdout in $TMP/stdout, stderr in $TMP/stderr.
run() {
    timeout "$LIMIT" "$WORKER" "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
}
err_text() { tr '\n' ' ' <"$TMP/stderr" | cut -c1-400; }

# expect_error NAME RC PATTERN... -- ARGS...: exit status RC and every PATTERN in stderr.
expect_error() {
    local name=$1 want=$2 problems=() p
    shift 2
    local patterns=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do patterns+=("$1"); shift; done
    shift
    run "$@"
    if [ "$rc" -ne "$want" ]; then
        fail "$name" "exit $rc, expected $want; stderr: $(err_text)"
        return
    fi
    for p in "${patterns[@]}"; do
        grep -qF -- "$p" "$TMP/stderr" || problems+=("stderr lacks \"$p\": $(err_text)")
    done
    if [ ${#problems[@]} -eq 0 ]; then pass "$name"; else fail "$name" "${problems[@]}"; fi
}

if [ ! -x "$WORKER" ]; then
    fail "worker binary" "$WORKER not found or not executable (run make first)"
    summary score
    exit 1
fi
have_python=1
"$PYTHON" -c 'import json' 2>/dev/null || have_python=0
need_python() {
    [ "$have_python" -eq 1 ] && return 0
    skip "$1" "no $PYTHON on PATH"
    return 1
}
# py CODE: runs python code with the JSON lines of $TMP/stdout as `rows`.
py() { "$PYTHON" -c "import json, sys; rows = [json.loads(l) for l in open('$TMP/stdout')]; $1"; }

# A w x h PNG of one colour, written with the python stdlib (zlib), for the non-square case.
write_png() {
    "$PYTHON" - "$1" "$2" "$3" <<'EOF'
import struct, sys, zlib
path, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
raw = b''.join(b'\x00' + b'\xff\x00\x00' * w for _ in range(h))
open(path, 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
                       + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
EOF
}

CAP1="a red circle left of a blue square"
CAP2="three yellow triangles"
CAP3="a large green square at the top"

# ---- render
run render --caption "$CAP1" --size 32 --seed 1 --out "$TMP/one.png"
if [ "$rc" -eq 0 ] && [ -s "$TMP/one.png" ] && [ "$(cat "$TMP/stdout")" = "$CAP1" ]; then
    pass "render --caption writes a PNG and prints the caption"
else
    fail "render --caption writes a PNG and prints the caption" "exit $rc: $(err_text)"
fi
run render --caption "$CAP1" --size 32 --seed 1 --out "$TMP/one_again.png"
run render --caption "$CAP1" --size 32 --seed 1 --index 1 --out "$TMP/one_index1.png"
if cmp -s "$TMP/one.png" "$TMP/one_again.png" && ! cmp -s "$TMP/one.png" "$TMP/one_index1.png"; then
    pass "render is deterministic and --index changes the layout"
else
    fail "render is deterministic and --index changes the layout" "PNG bytes compare wrongly"
fi
run render --caption "$CAP2" --size 64 --seed 3 --out "$TMP/two.png"
run render --caption "$CAP3" --size 32 --seed 3 --out "$TMP/three.png"
run render --split heldout --seed 5 --index 7 --out "$TMP/split.png"
split_caption=$(cat "$TMP/stdout")
if [ "$rc" -eq 0 ] && [ -s "$TMP/split.png" ] && [ -n "$split_caption" ]; then
    pass "render --split heldout"
else
    fail "render --split heldout" "exit $rc: $(err_text)"
fi
run render --list train
n_train=$(wc -l <"$TMP/stdout")
run render --list heldout
n_held=$(wc -l <"$TMP/stdout")
if [ "$n_train" -eq 256 ] && [ "$n_held" -eq 64 ]; then
    pass "render --list: 256 training and 64 held-out prompts"
else
    fail "render --list: 256 training and 64 held-out prompts" "got $n_train and $n_held"
fi

# ---- score --prompt
run score --reward align --prompt "$CAP1" "$TMP/one.png" "$TMP/one_index1.png"
if [ "$rc" -ne 0 ]; then
    fail "score --prompt: own caption >= 0.97, JSON breakdown" "exit $rc: $(err_text)"
elif need_python "score --prompt: own caption >= 0.97, JSON breakdown"; then
    if py "
assert len(rows) == 2, rows
for r, img in zip(rows, ['one.png', 'one_index1.png']):
    assert r['image'].endswith(img) and r['prompt'] == '''$CAP1''' and r['reward'] == 'align'
    assert r['score'] >= 0.97, r
    kinds = [q['kind'] for q in r['requirements']]
    assert kinds == ['object', 'object', 'relation', 'clean'], kinds
    assert all(0 <= q['score'] <= 1 and q['target'] and q['detail'] for q in r['requirements'])
    assert 'line' not in r
" 2>"$TMP/py"; then
        pass "score --prompt: own caption >= 0.97, JSON breakdown"
        grep -q 'mean' "$TMP/stderr" || fail "score prints the mean on stderr" "$(err_text)"
    else
        fail "score --prompt: own caption >= 0.97, JSON breakdown" "$(cat "$TMP/py")" "$(head -c 600 "$TMP/stdout")"
    fi
fi

run score --reward align --prompt "$CAP2" "$TMP/one.png"
if [ "$rc" -eq 0 ] && need_python "score: a wrong caption scores low"; then
    if py "assert rows[0]['score'] < 0.2, rows[0]['score']" 2>"$TMP/py"; then
        pass "score: a wrong caption scores low"
    else fail "score: a wrong caption scores low" "$(cat "$TMP/py")"; fi
elif [ "$rc" -ne 0 ]; then fail "score: a wrong caption scores low" "exit $rc: $(err_text)"; fi

# ---- score --pairs, relative paths, blank lines skipped
mkdir -p "$TMP/set/img"
cp "$TMP/one.png" "$TMP/two.png" "$TMP/set/img/"
cp "$TMP/three.png" "$TMP/set/"
{
    printf '{"prompt": "%s", "image": "img/one.png"}\n' "$CAP1"
    printf '\n'
    printf '{"image": "img/two.png", "prompt": "%s"}\n' "$CAP2"
    printf '{"prompt": "%s", "image": "%s"}\n' "$CAP3" "$TMP/set/three.png"
    printf '{"prompt": "%s", "image": "img/two.png"}\n' "$CAP1"
} >"$TMP/set/pairs.jsonl"
(cd "$TMP" && timeout "$LIMIT" "$OLDPWD/$WORKER" score --reward align --pairs set/pairs.jsonl \
    >"$TMP/stdout" 2>"$TMP/stderr")
rc=$?
if [ "$rc" -ne 0 ]; then
    fail "score --pairs" "exit $rc: $(err_text)"
elif need_python "score --pairs"; then
    if py "
assert [r['line'] for r in rows] == [1, 3, 4, 5], [r['line'] for r in rows]
assert rows[0]['image'] == 'set/img/one.png', rows[0]['image']
assert all(r['score'] >= 0.97 for r in rows[:3]), [r['score'] for r in rows]
assert rows[3]['score'] < 0.2, rows[3]['score']
assert [q['kind'] for q in rows[1]['requirements']] == ['object'] * 3 + ['count', 'clean']
assert [q['kind'] for q in rows[2]['requirements']] == ['object', 'size', 'position', 'clean']
" 2>"$TMP/py"; then
        pass "score --pairs"
    else
        fail "score --pairs" "$(cat "$TMP/py")"
    fi
fi

# ---- usage errors (exit 2)
expect_error "score without --reward" 2 "--reward" -- score --prompt "$CAP1" "$TMP/one.png"
expect_error "score with an unknown reward" 2 '"hpsv3"' "align, pref, clip" -- \
    score --reward hpsv3 --prompt "$CAP1" "$TMP/one.png"
expect_error "score with --prompt and --pairs" 2 "either" -- \
    score --reward align --prompt "$CAP1" --pairs "$TMP/set/pairs.jsonl" "$TMP/one.png"
expect_error "score with neither --prompt nor --pairs" 2 "either" -- score --reward align
expect_error "score --prompt without images" 2 "IMAGE.png" -- score --reward align --prompt "$CAP1"
expect_error "score --pairs with a stray image" 2 '"x.png"' -- \
    score --reward align --pairs "$TMP/set/pairs.jsonl" x.png
expect_error "score with an unknown flag" 2 "--bogus" -- score --reward align --bogus
expect_error "render --size 0" 2 "--size" '"0"' -- render --caption "$CAP1" --size 0 --out "$TMP/x.png"
expect_error "render --seed -1" 2 "--seed" -- render --caption "$CAP1" --seed -1 --out "$TMP/x.png"
expect_error "render --split bogus" 2 "--split" '"bogus"' -- render --split bogus --out "$TMP/x.png"
expect_error "render --list bogus" 2 "--list" -- render --list bogus
expect_error "render without --out" 2 "--out" -- render --caption "$CAP1"
expect_error "render with --caption and --split" 2 "either" -- \
    render --caption "$CAP1" --split train --out "$TMP/x.png"

# ---- bad input (exit 3)
expect_error "score: prompt outside the grammar" 3 "--prompt" "word 3 \"blob\"" -- \
    score --reward align --prompt "a red blob" "$TMP/one.png"
expect_error "score: missing image" 3 "$TMP/nothing.png" -- \
    score --reward align --prompt "$CAP1" "$TMP/nothing.png"
echo "not a png" >"$TMP/text.png"
expect_error "score: a file that is not a PNG" 3 "$TMP/text.png" -- \
    score --reward align --prompt "$CAP1" "$TMP/text.png"
if need_python "score: a non-square PNG"; then
    write_png "$TMP/wide.png" 32 16
    expect_error "score: a non-square PNG" 3 "$TMP/wide.png" "32x16" -- \
        score --reward align --prompt "$CAP1" "$TMP/wide.png"
fi
expect_error "render: caption outside the grammar" 3 "--caption" "\"blob\"" -- \
    render --caption "a red blob" --out "$TMP/x.png"
[ -e "$TMP/x.png" ] && fail "failed renders leave no file" "$TMP/x.png exists"

# pairs files, one problem each: message names FILE:LINE and the field
P=$TMP/bad.jsonl
bad_pairs() { # NAME PATTERN LINES...
    local name=$1 pattern=$2
    shift 2
    printf '%s\n' "$@" >"$P"
    expect_error "pairs: $name" 3 "$P:" "$pattern" -- score --reward align --pairs "$P"
}
GOOD="{\"prompt\": \"$CAP1\", \"image\": \"$TMP/one.png\"}"
bad_pairs "not JSON" "$P:2: column" "$GOOD" '{"prompt": "a red circle", "image": '
bad_pairs "not an object" "$P:1: expected an object" '["a red circle", "x.png"]'
bad_pairs "missing prompt" "$P:2: missing field \"prompt\"" "$GOOD" '{"image": "x.png"}'
bad_pairs "image not a string" "field \"image\" must be a non-empty string, got integer" \
    '{"prompt": "a red circle", "image": 3}'
bad_pairs "empty prompt" "field \"prompt\" must be a non-empty string" '{"prompt": "", "image": "x.png"}'
bad_pairs "unknown field" "$P:1: unknown field \"id\"" '{"prompt": "a red circle", "image": "x.png", "id": 1}'
bad_pairs "duplicate field" "$P:1:" '{"prompt": "a red circle", "prompt": "a red circle", "image": "x.png"}'
bad_pairs "prompt outside the grammar" "$P:3: field \"prompt\"" "$GOOD" "$GOOD" \
    '{"prompt": "a red circle with stripes", "image": "x.png"}'
bad_pairs "missing image" "$P:2: field \"image\"" "$GOOD" \
    '{"prompt": "a red circle", "image": "nowhere.png"}'
: >"$P"
expect_error "pairs: empty file" 3 "$P" "no pairs" -- score --reward align --pairs "$P"
expect_error "pairs: file that does not exist" 3 "$TMP/none.jsonl" -- \
    score --reward align --pairs "$TMP/none.jsonl"

# ---- the learned preference reward (the shipped pref model)
PREF=models/pref-small.safetensors
run render --caption "a red circle" --size 32 --out "$TMP/red.png"
run render --caption "a blue circle" --size 32 --out "$TMP/blue.png"
run render --caption "a red circle" --size 16 --out "$TMP/red16.png"
run score --reward pref --model "$PREF" --prompt "a red circle" "$TMP/red.png" "$TMP/blue.png"
check "pref: the shipped model scores the caption's own rendering above another colour's" [ "$rc" -eq 0 -a "$($PYTHON -c "
import json, sys
a, b = (json.loads(l) for l in open('$TMP/stdout'))
print(a['reward'] == 'pref' and 'requirements' not in a and a['score'] > b['score'])")" = True ]
run score --reward clip --model models/clip-small.safetensors --prompt "a red circle" "$TMP/red.png" "$TMP/blue.png"
check "clip: the shipped model's cosine is higher for the caption's own rendering" [ "$rc" -eq 0 -a "$($PYTHON -c "
import json
a, b = (json.loads(l) for l in open('$TMP/stdout'))
print(a['reward'] == 'clip' and -1 <= b['score'] < a['score'] <= 1)")" = True ]
expect_error "pref: an image of another size than the model's is named" 3 "red16.png: pref model: it scores 32x32 images, these are 16x16" -- \
    score --reward pref --model "$PREF" --prompt "a red circle" "$TMP/red16.png"
expect_error "pref: --model is required" 2 "--reward pref needs --model" -- \
    score --reward pref --prompt "a red circle" "$TMP/red.png"
expect_error "pref: a model that is not there is named" 3 "--model: $TMP/none.safetensors" -- \
    score --reward pref --model "$TMP/none.safetensors" --prompt "a red circle" "$TMP/red.png"

# ---- I/O failures (exit 4)
expect_error "render into a folder that does not exist" 4 "$TMP/nodir/x.png" -- \
    render --caption "$CAP1" --out "$TMP/nodir/x.png"
if [ -w /dev/full ]; then
    timeout "$LIMIT" "$WORKER" score --reward align --prompt "$CAP1" "$TMP/one.png" >/dev/full 2>"$TMP/stderr"
    rc=$?
    if [ "$rc" -eq 4 ] && grep -q "stdout" "$TMP/stderr"; then pass "score: stdout that cannot be written"
    else fail "score: stdout that cannot be written" "exit $rc: $(err_text)"; fi
else
    skip "score: stdout that cannot be written" "no /dev/full"
fi

summary score
