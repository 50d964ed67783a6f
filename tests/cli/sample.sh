#!/usr/bin/env bash
# sample.sh: tests of `chunkgrpo-worker sample` as a user runs it, on the tiny fixture model.
#   files       the PNGs (one per sample, 16x16) and the grid (sizes read from the PNG header),
#               the trajectory's tensors, dtypes and shapes (tests/cli/st_compare.py --list)
#   behaviour   same seed -> identical bytes, another seed -> other images, --threads 1 and 2
#               identical, the ODE's logp all zero, --cfg 1 equal to no guidance, --same-noise
#               with the ODE giving identical samples, unknown words warned about
#   bad input   each bad flag exits 2 (usage) with the flag named; a bad model exits 3; an
#               output that cannot be written exits 4 naming the path
# Every command runs under `timeout`; the temporary folder is removed on exit.
# Ends with "sample: N passed, N failed, N skipped"; exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/../.."

WORKER=${WORKER:-bin/chunkgrpo-worker}
PYTHON=${PYTHON:-python3}
ST=tests/cli/st_compare.py
MODEL=tests/reference/fixtures/tiny_model.safetensors
LIMIT=60

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sample.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; shift; printf '  %s\n' "$@"; }
skip() { skipped=$((skipped + 1)); echo "SKIP $1"; echo "  skipped: $2"; }
summary() {
    echo "sample: $passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]
}

# Runs the sample command; sets rc, leaves stdout/stderr in $TMP/stdout, $TMP/stderr.
sample() {
    timeout "$LIMIT" "$WORKER" sample "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
}
st() { timeout "$LIMIT" "$PYTHON" "$ST" "$@"; }
err_text() { tr '\n' ' ' <"$TMP/stderr" | cut -c1-400; }

# "WxH" of a PNG, from its IHDR chunk (bytes 16..23, big-endian).
png_size() {
    "$PYTHON" -c 'import struct,sys
d=open(sys.argv[1],"rb").read(24)
assert d[:8]==b"\x89PNG\r\n\x1a\n" and d[12:16]==b"IHDR"
print("%dx%d" % struct.unpack(">II", d[16:24]))' "$1" 2>/dev/null || echo "unreadable"
}

if [ ! -x "$WORKER" ]; then
    fail "worker binary" "$WORKER not found or not executable (run make first)"
    summary
    exit 1
fi
if ! "$PYTHON" -c 'import array, json, struct' 2>/dev/null; then
    skip "all" "no $PYTHON on PATH"
    summary
    exit 0
fi

# ---- files written
D=$TMP/sde
sample --model "$MODEL" --prompt "a red circle above two blue squares" --n 5 --steps 17 \
    --sampler sde --sde flow --eta 0.7 --shift 3 --seed 1 --out "$D" --trajectory "$D/traj.st"
if [ "$rc" -ne 0 ]; then
    fail "sde run writes its files" "exit $rc: $(err_text)"
else
    problems=()
    for i in 000 001 002 003 004; do
        [ "$(png_size "$D/sample_$i.png")" = "16x16" ] ||
            problems+=("sample_$i.png is $(png_size "$D/sample_$i.png"), expected 16x16")
    done
    [ -e "$D/sample_005.png" ] && problems+=("a sixth sample was written")
    # 3 columns x 2 rows of 16 px with 2 px padding
    [ "$(png_size "$D/grid.png")" = "56x38" ] ||
        problems+=("grid.png is $(png_size "$D/grid.png"), expected 56x38")
    [ "$(wc -l <"$TMP/stdout")" -eq 7 ] || problems+=("stdout should list the 7 files written")
    ls "$D" | grep -q '\.tmp$' && problems+=("a temporary file was left behind")
    if [ ${#problems[@]} -eq 0 ]; then pass "sde run writes its files"; else fail "sde run writes its files" "${problems[@]}"; fi

    st --list "$D/traj.st" >"$TMP/list" 2>&1
    want='x F32 [18, 5, 16, 16, 3]
logp F32 [17, 5]
sigmas F32 [18]
x0_hat F32 [5, 16, 16, 3]
tokens I32 [5, 8]'
    got=$(grep -v '^__metadata__' "$TMP/list")
    if [ "$got" = "$want" ] && grep -q "__metadata__ format='chunkgrpo-trajectory/1'" "$TMP/list" &&
        grep -q "__metadata__ eta='0.7'" "$TMP/list" && grep -q "__metadata__ sde='flow'" "$TMP/list"; then
        pass "trajectory tensors and shapes"
    else
        fail "trajectory tensors and shapes" "$(tr '\n' ';' <"$TMP/list")"
    fi
fi

# ---- determinism: bit for bit across thread counts; across model batch sizes only up to float
# rounding (the GEMMs see other row counts), so that is compared with a tolerance
P="a red circle above two blue squares"
sample --model "$MODEL" --prompt "$P" --n 5 --sampler sde --seed 1 --out "$TMP/t1" \
    --trajectory "$TMP/t1/traj.st" --threads 1
r1=$rc
sample --model "$MODEL" --prompt "$P" --n 5 --sampler sde --seed 1 --out "$TMP/t2" \
    --trajectory "$TMP/t2/traj.st" --threads 2
if [ "$r1" -eq 0 ] && [ "$rc" -eq 0 ] && cmp -s "$D/traj.st" "$TMP/t1/traj.st" &&
    cmp -s "$D/traj.st" "$TMP/t2/traj.st" && cmp -s "$D/grid.png" "$TMP/t1/grid.png" &&
    cmp -s "$D/sample_003.png" "$TMP/t2/sample_003.png"; then
    pass "same seed: identical bytes at 1 and 2 threads"
else
    fail "same seed: identical bytes at 1 and 2 threads" "exit $r1/$rc; $(err_text)"
fi
sample --model "$MODEL" --prompt "$P" --n 5 --sampler sde --seed 1 --out "$TMP/b2" \
    --trajectory "$TMP/b2/traj.st" --batch 2
if [ "$rc" -eq 0 ] && st "$TMP/b2/traj.st" "$D/traj.st" --tol 1e-5 >"$TMP/cmp" 2>&1; then
    pass "same seed at model batch 2 (padded): same trajectory within 1e-5"
else
    fail "same seed at model batch 2 (padded): same trajectory within 1e-5" \
        "exit $rc: $(err_text) $(tr '\n' ' ' <"$TMP/cmp")"
fi
sample --model "$MODEL" --prompt "a red circle above two blue squares" --n 5 --sampler sde \
    --seed 2 --out "$TMP/seed2"
if [ "$rc" -eq 0 ] && ! cmp -s "$D/grid.png" "$TMP/seed2/grid.png"; then
    pass "another seed gives other images"
else
    fail "another seed gives other images" "exit $rc: $(err_text)"
fi

# ---- ODE: logp all zero; --cfg 1 equals no guidance; --same-noise gives one image n times
sample --model "$MODEL" --prompt "two green triangles" --n 3 --steps 6 --sampler ode --seed 4 \
    --out "$TMP/ode" --trajectory "$TMP/ode.st"
if [ "$rc" -eq 0 ] && st --write "$TMP/zero.st" logp:F32:6,3:0 &&
    st "$TMP/ode.st" "$TMP/zero.st" --names logp --tol 0 >/dev/null; then
    pass "ode logp is zero"
else
    fail "ode logp is zero" "exit $rc: $(err_text)"
fi
sample --model "$MODEL" --prompt "two green triangles" --n 3 --steps 6 --sampler ode --seed 4 \
    --cfg 1 --out "$TMP/cfg1" --trajectory "$TMP/cfg1.st"
if [ "$rc" -eq 0 ] && st "$TMP/cfg1.st" "$TMP/ode.st" --tol 1e-5 --names x,x0_hat >"$TMP/cmp" 2>&1; then
    pass "--cfg 1 equals conditional sampling"
else
    fail "--cfg 1 equals conditional sampling" "exit $rc: $(err_text) $(tr '\n' ' ' <"$TMP/cmp")"
fi
sample --model "$MODEL" --prompt "two green triangles" --n 3 --steps 6 --sampler ode --seed 4 \
    --cfg 3 --out "$TMP/cfg3"
if [ "$rc" -eq 0 ] && ! cmp -s "$TMP/cfg3/grid.png" "$TMP/ode/grid.png"; then
    pass "--cfg 3 changes the images"
else
    fail "--cfg 3 changes the images" "exit $rc: $(err_text)"
fi
sample --model "$MODEL" --prompt "two green triangles" --n 3 --steps 6 --sampler ode --seed 4 \
    --same-noise --out "$TMP/same"
if [ "$rc" -eq 0 ] && cmp -s "$TMP/same/sample_000.png" "$TMP/same/sample_002.png" &&
    ! cmp -s "$TMP/ode/sample_000.png" "$TMP/ode/sample_002.png"; then
    pass "--same-noise: one initial noise for all samples"
else
    fail "--same-noise: one initial noise for all samples" "exit $rc: $(err_text)"
fi
sample --model "$MODEL" --prompt "a red circle" --n 2 --steps 4 --sampler sde --sde dance --eta 0.5 \
    --out "$TMP/dance" --trajectory "$TMP/dance.st"
if [ "$rc" -eq 0 ] && st --list "$TMP/dance.st" | grep -q "__metadata__ sde='dance'"; then
    pass "dance sde runs"
else
    fail "dance sde runs" "exit $rc: $(err_text)"
fi
# cps: its last transition is deterministic, so x_N is the final image and its logp is 0
sample --model "$MODEL" --prompt "a red circle" --n 2 --steps 4 --sampler sde --sde cps --eta 0.8 \
    --out "$TMP/cps" --trajectory "$TMP/cps.st"
cps_check() {
    "$PYTHON" - "$TMP/cps.st" <<'PY'
import sys
sys.path.insert(0, "tests/cli")
import st_compare
tensors, meta = st_compare.read(sys.argv[1])
x, logp, x0 = (st_compare.decode(*tensors[k][::2]) for k in ("x", "logp", "x0_hat"))
last = x[len(x) - len(x0):]
ok = meta["sde"] == "cps" and logp[-2:] == [0.0, 0.0] and 0.0 not in logp[:-2]
ok = ok and max(abs(a - b) for a, b in zip(last, x0)) <= 1e-6 * max(map(abs, x0))
sys.exit(0 if ok else 1)
PY
}
if [ "$rc" -eq 0 ] && cps_check; then
    pass "cps sde: the last step lands on the final image, its logp 0"
else
    fail "cps sde: the last step lands on the final image, its logp 0" "exit $rc: $(err_text)"
fi

# ---- the prompt: unknown words are warned about, an empty prompt samples unconditionally
sample --model "$MODEL" --prompt "a red Zebra left of the square" --n 1 --steps 2 --out "$TMP/unk"
if [ "$rc" -eq 0 ] && grep -q '"Zebra" is not in the model' "$TMP/stderr" &&
    ! grep -q '"red"' "$TMP/stderr"; then
    pass "unknown words are warned about"
else
    fail "unknown words are warned about" "exit $rc: $(err_text)"
fi
sample --model "$MODEL" --prompt "" --n 1 --steps 2 --out "$TMP/empty"
if [ "$rc" -eq 0 ] && grep -q 'unconditionally' "$TMP/stderr"; then
    pass "an empty prompt samples unconditionally"
else
    fail "an empty prompt samples unconditionally" "exit $rc: $(err_text)"
fi

# ---- bad flags: exit 2, the flag named, nothing written
# bad NAME PATTERN -- ARGS...
bad() {
    local name=$1 pattern=$2
    shift 3
    rm -rf "$TMP/bad"
    sample "$@"
    if [ "$rc" -ne 2 ]; then
        fail "$name" "exit $rc, expected 2; stderr: $(err_text)"
    elif ! grep -qF -- "$pattern" "$TMP/stderr"; then
        fail "$name" "stderr lacks \"$pattern\": $(err_text)"
    elif [ -e "$TMP/bad" ]; then
        fail "$name" "the output folder was created"
    else
        pass "$name"
    fi
}
G=(--model "$MODEL" --prompt "a red circle" --out "$TMP/bad")
bad "--n 0" "--n" -- "${G[@]}" --n 0
bad "--n abc" "--n" -- "${G[@]}" --n abc
bad "--n 5000" "--n" -- "${G[@]}" --n 5000
bad "--steps 0" "--steps" -- "${G[@]}" --steps 0
bad "--steps 1001" "--steps" -- "${G[@]}" --steps 1001
bad "--sampler foo" "--sampler" -- "${G[@]}" --sampler foo
bad "--sde foo" "--sde" -- "${G[@]}" --sampler sde --sde foo
bad "--eta 0" "--eta" -- "${G[@]}" --sampler sde --eta 0
bad "--eta -1" "--eta" -- "${G[@]}" --sampler sde --eta -1
bad "--eta nan" "--eta" -- "${G[@]}" --sampler sde --eta nan
bad "--eta 0.7x" "--eta" -- "${G[@]}" --sampler sde --eta 0.7x
bad "--eta 1.5 with cps" "eta must be at most 1 for the cps SDE" -- "${G[@]}" --sampler sde --sde cps --eta 1.5
bad "--shift 0" "--shift" -- "${G[@]}" --shift 0
bad "--shift inf" "--shift" -- "${G[@]}" --shift inf
bad "--cfg inf" "--cfg" -- "${G[@]}" --cfg inf
bad "--cfg empty" "--cfg" -- "${G[@]}" --cfg ""
bad "--seed -1" "--seed" -- "${G[@]}" --seed -1
bad "--seed x" "--seed" -- "${G[@]}" --seed x
bad "--seed 2^64" "--seed" -- "${G[@]}" --seed 18446744073709551616
bad "--threads 0" "--threads" -- "${G[@]}" --threads 0
bad "--batch 0" "--batch" -- "${G[@]}" --batch 0
bad "--eta with the ode" "--eta" -- "${G[@]}" --sampler ode --eta 0.5
bad "--sde with the ode" "--sde" -- "${G[@]}" --sde dance
bad "missing --model" "--model" -- --prompt "a red circle" --out "$TMP/bad"
bad "missing --prompt" "--prompt" -- --model "$MODEL" --out "$TMP/bad"
bad "missing --out" "--out" -- --model "$MODEL" --prompt "a red circle"
bad "unknown flag" "--frobnicate" -- "${G[@]}" --frobnicate
bad "flag without a value" "--n" -- "${G[@]}" --n
bad "stray argument" "stray" -- "${G[@]}" stray

sample --help
if [ "$rc" -eq 0 ] && grep -q -- '--sampler ode|sde' "$TMP/stdout"; then pass "--help"; else fail "--help" "exit $rc"; fi

# ---- bad model, unwritable outputs
sample --model "$TMP/missing.st" --prompt "a red circle" --out "$TMP/bad"
if [ "$rc" -eq 3 ] && grep -qF "$TMP/missing.st" "$TMP/stderr" && [ ! -e "$TMP/bad" ]; then
    pass "missing model: exit 3 naming it"
else
    fail "missing model: exit 3 naming it" "exit $rc: $(err_text)"
fi
head -c 5000 "$MODEL" >"$TMP/cut.st"
sample --model "$TMP/cut.st" --prompt "a red circle" --out "$TMP/bad"
if [ "$rc" -eq 3 ] && grep -qF "$TMP/cut.st" "$TMP/stderr"; then
    pass "truncated model: exit 3 naming it"
else
    fail "truncated model: exit 3 naming it" "exit $rc: $(err_text)"
fi
echo "a file" >"$TMP/afile"
sample --model "$MODEL" --prompt "a red circle" --n 1 --steps 2 --out "$TMP/afile"
if [ "$rc" -eq 4 ] && grep -qF -- "--out $TMP/afile" "$TMP/stderr"; then
    pass "--out naming a file: exit 4"
else
    fail "--out naming a file: exit 4" "exit $rc: $(err_text)"
fi
sample --model "$MODEL" --prompt "a red circle" --n 1 --steps 2 --out "$TMP/ok" \
    --trajectory "$TMP/nodir/t.st"
if [ "$rc" -eq 4 ] && grep -qF "$TMP/nodir/t.st" "$TMP/stderr" && [ ! -e "$TMP/nodir" ]; then
    pass "--trajectory in a missing folder: exit 4 naming it"
else
    fail "--trajectory in a missing folder: exit 4 naming it" "exit $rc: $(err_text)"
fi

summary
