#!/usr/bin/env bash
# mpi.sh: data-parallel grpo over MPI ranks (`mpirun -np 2 chunkgrpo-worker run ...`) on the tiny
#   model: two ranks sample the rollouts one process samples (the same prompts, noise, profile
#   and chunk choices; images to float rounding), their summed gradients give one process's
#   update, rank 0 alone writes the folder, a stopped
#   two-rank run resumes bit for bit, and what data parallelism cannot do is refused with a
#   message naming the field.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mpi.XXXXXX") || exit 1
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT
MODEL=tests/reference/fixtures/tiny_model.safetensors

if ! command -v mpirun >/dev/null || [ ! -f bin/libchunkgrpo_mpi.so ]; then
    skip "data-parallel ranks" "no mpirun or bin/libchunkgrpo_mpi.so (deploy/install-deps.sh installs Open MPI)"
    summary mpi
    exit 0
fi
# CI runs as root; two ranks on a 2-core machine share its cores
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
MPIRUN=(mpirun -np 2 --bind-to none)

config() { # config FILE ITERATIONS [EXTRA_JSON_FIELDS] [PROMPTS_PER_ITER]
    cat >"$1" <<JSON
{"kind": "grpo", "model": "$MODEL", "iterations": $2, "prompts_per_iter": ${4:-4}, "group_size": 3,
 "steps": 6, "chunks": "auto", "chunk_count": 3, "train_fraction": 0.67, "eval_every": 0,
 "eval_prompts": 2, "eval_seeds": 1, "checkpoint_every": 1, "batch": 8, "threads": 1,
 "lr": 1e-3, "seed": 3${3:+, $3}}
JSON
}
run() { timeout 300 "$@" >"$TMP/stdout" 2>"$TMP/stderr"; rc=$?; }
stops() {
    if [ "$rc" -ne 0 ] && grep -qF -- "$2" "$TMP/stderr"; then pass "$1"; else
        fail "$1" "exit $rc, stderr: $(head -c 600 "$TMP/stderr")" "wanted: $2"; fi
}

config "$TMP/c.json" 3
run "$WORKER" run "$TMP/c.json" --out "$TMP/one"
check "one process runs" [ "$rc" -eq 0 ]
run "${MPIRUN[@]}" "$WORKER" run "$TMP/c.json" --out "$TMP/two"
check "two ranks run" [ "$rc" -eq 0 ] || cat "$TMP/stderr"
# The ranks draw one process's prompts, noise and chunk choices (the sampler's slices are
# bit-identical, tests/unit/test_sampler.c); the model's sums group rows by batch, so images
# agree to float rounding.
check "two ranks sample one process's rollouts and choices (iteration 1)" [ "$($PYTHON - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
a, b = (json.loads(open(f'{d}/{n}/metrics.jsonl').readline()) for n in ('one', 'two'))
ga, gb = (json.load(open(f'{d}/{n}/groups/iter-0000001.json')) for n in ('one', 'two'))
close = lambda x, y, tol: abs(x - y) <= tol * max(abs(x), abs(y), 1e-3)
ok = ga['prompt'] == gb['prompt'] and a['chunks'] == b['chunks'] and b['ranks'] == 2 and 'ranks' not in a
ok &= [c['count'] for c in a['chunk_ratio']] == [c['count'] for c in b['chunk_ratio']]
ok &= a['tied_group_fraction'] == b['tied_group_fraction']
ok &= all(close(a[k], b[k], 1e-4) for k in ('reward_mean', 'reward_std', 'reward_max', 'reward_clean_mean', 'advantage_std'))
for x, y in zip(ga['members'], gb['members']):
    ok &= close(x['reward'], y['reward'], 1e-4) and close(x['advantage'], y['advantage'], 1e-3)
    ok &= [r is None for r in x['chunk_ratio']] == [r is None for r in y['chunk_ratio']]
print(ok)
PY
)" = True ]
check "  ... and their summed gradients give its update (grad norm to 1e-4)" [ "$($PYTHON - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
a, b = ([json.loads(l) for l in open(f'{d}/{n}/metrics.jsonl')] for n in ('one', 'two'))
print(len(a) == len(b) == 3 and abs(a[0]['grad_norm'] - b[0]['grad_norm']) <= 1e-4 * a[0]['grad_norm'])
PY
)" = True ]
check "  ... to the same model after 3 iterations (1e-4)" \
    $PYTHON tests/cli/st_compare.py "$TMP/two/model.safetensors" "$TMP/one/model.safetensors" --tol 1e-4
check "rank 0 alone writes the folder (one line per iteration)" [ "$(wc -l <"$TMP/two/metrics.jsonl")" -eq 3 -a -s "$TMP/two/eval/iter-0000003/eval.json" ]

# a two-rank run of 2 iterations continued to 3 is the uninterrupted two-rank run
config "$TMP/c.json" 2
run "${MPIRUN[@]}" "$WORKER" run "$TMP/c.json" --out "$TMP/resumed"
config "$TMP/c.json" 3
run "${MPIRUN[@]}" "$WORKER" run "$TMP/c.json" --out "$TMP/resumed" --resume
check "a two-rank run resumes to the uninterrupted run's model, bit for bit" \
    $PYTHON tests/cli/st_compare.py "$TMP/resumed/model.safetensors" "$TMP/two/model.safetensors" --tol 0

config "$TMP/c.json" 1 '"optimizer_step": "group"'
run "${MPIRUN[@]}" "$WORKER" run "$TMP/c.json" --out "$TMP/group"
stops "per-group optimizer steps are refused on several ranks" 'config.optimizer_step: "group" with 2 ranks'
config "$TMP/c.json" 1 "" 1
run "${MPIRUN[@]}" "$WORKER" run "$TMP/c.json" --out "$TMP/few"
stops "fewer prompts than ranks is refused" "config.prompts_per_iter: 1 prompts for 2 ranks"
echo '{"kind": "eval", "model": "'$MODEL'", "max_prompts": 2, "ode_seeds": 1, "sde_prompts": 0, "steps": 3}' >"$TMP/e.json"
run "${MPIRUN[@]}" "$WORKER" run "$TMP/e.json" --out "$TMP/eval"
stops "other kinds refuse several ranks" 'config.kind: "eval" runs in one process; only grpo runs on 2 ranks'
config "$TMP/c.json" 1
OMPI_COMM_WORLD_SIZE=2 CHUNKGRPO_MPI_LIB=$TMP/none.so run "$WORKER" run "$TMP/c.json" --out "$TMP/nolib"
stops "a launch by mpirun without the MPI library says what is missing" "started by mpirun, but MPI is not available"

summary mpi
