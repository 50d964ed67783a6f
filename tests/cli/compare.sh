#!/usr/bin/env bash
# compare.sh: deploy/experiments/compare.sh on the tiny reference model, one method, one seed:
#   it prints the table with the evaluation it used, a second call reuses the finished runs, and
#   a call whose evaluation or iterations differ refuses the folder instead of mixing results.
#   Runs start from the basis config (the demo's unless BASIS says otherwise), and the paper's
#   chunks are scaled to the steps they train.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/compare.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
cmp_run() { # cmp_run ITERATIONS [ENV=VALUE...]: one comparison into $TMP/out
    local iterations=$1; shift
    env OUT="$TMP/out" BASE=tests/reference/fixtures/tiny_model.safetensors RUNS=grpo \
        EXTRA='"steps": 6, "prompts_per_iter": 2, "group_size": 3, "batch": 8, "threads": 2' \
        EVAL_SEEDS=1 "$@" timeout 300 deploy/experiments/compare.sh "$iterations" 1 \
        >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
}

cmp_run 1 EVAL_SEED=3
check "a comparison runs and prints its table" eval '[ "$rc" -eq 0 ] && grep -qF "| step-level GRPO |" "$TMP/stdout"'
check "  naming the evaluation it used" grep -qF "64 prompts x 1 seeds of noise seed 3" "$TMP/stdout"
check "  whose runs evaluated on that noise" grep -qF '"noise_seed": 3' "$TMP/out/grpo-1/eval/iter-0000001/eval.json"
stamp=$(stat -c %Y "$TMP/out/grpo-1/model.safetensors")
cmp_run 1 EVAL_SEED=3
check "a second call reuses the finished runs" eval '[ "$rc" -eq 0 ] && [ "$(stat -c %Y "$TMP/out/grpo-1/model.safetensors")" = "$stamp" ] && ! grep -q "^done" "$TMP/stdout"'
cmp_run 1 EVAL_SEED=4
check "another evaluation noise refuses the folder" eval '[ "$rc" -ne 0 ] && grep -qF "base/eval.json comes from another config" "$TMP/stderr"'
cmp_run 2 EVAL_SEED=3
check "other iterations refuse the finished run" eval '[ "$rc" -ne 0 ] && grep -qF "grpo-1/model.safetensors comes from another config" "$TMP/stderr"'
check "  and leave its config as it was" grep -qF '"iterations": 1,' "$TMP/out/grpo-1.json"
check "runs start from the demo's config" grep -qF '"beta1": 0.98' "$TMP/out/grpo-1.json"
check "  with the run's own fields and EXTRA on top" eval 'grep -qF "\"method\": \"grpo\"" "$TMP/out/grpo-1.json" && grep -qF "\"steps\": 6," "$TMP/out/grpo-1.json"'

rm -rf "$TMP/out"
cmp_run 1 BASIS=none RUNS=chunks_paper
check "BASIS=none runs the runner's defaults" eval '[ "$rc" -eq 0 ] && ! grep -qF "beta1" "$TMP/out/chunks_paper-1.json"'
check "  the paper's [2,3,4,7] scaled to 5 transitions" eval 'grep -qF "\"chunks\": \"1,1,1,2\"" "$TMP/out/chunks_paper-1.json" && grep -qF "| chunks [1,1,1,2]" "$TMP/stdout"'
rm -rf "$TMP/out"
cmp_run 2 EVAL_EVERY=1
check "with EVAL_EVERY, the mean at every evaluation" eval 'grep -qF "| method | 1 | 2 |" "$TMP/stdout" && grep -qE "^\| step-level GRPO \| [0-9.]+ \| [0-9.]+ \|$" "$TMP/stdout"'
cmp_run 1 BASIS="$TMP/missing.json"
check "an unreadable BASIS is refused by name" eval '[ "$rc" -eq 2 ] && grep -qF "BASIS $TMP/missing.json: cannot read it" "$TMP/stderr"'
mkdir -p "$TMP/out"
flock "$TMP/out/.lock" sleep 3 &
sleep 0.5
cmp_run 1
check "a second comparison in the same folder is refused" eval '[ "$rc" -eq 1 ] && grep -qF "another comparison is running in $TMP/out" "$TMP/stderr"'
wait

summary compare
