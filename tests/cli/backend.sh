#!/usr/bin/env bash
# backend.sh: choosing the engine's backend (`--backend cpu|cuda`, or "backend" in a config):
#   a bad name is refused naming the flag or config.backend; the CPU choice is recorded in the
#   effective config; without a GPU (or without the CUDA library) the cuda choice fails at once
#   with a message that says why, for every command that takes it. On a machine with a GPU the
#   same grpo run on both backends must agree (to TF32 sampling's rounding) instead.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/backend.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
MODEL=tests/reference/fixtures/tiny_model.safetensors
run() { timeout 300 "$WORKER" "$@" >"$TMP/stdout" 2>"$TMP/stderr"; rc=$?; }
grpo_config() { # grpo_config FILE [EXTRA_JSON_FIELDS]
    cat >"$1" <<JSON
{"kind": "grpo", "model": "$MODEL", "iterations": 2, "prompts_per_iter": 2, "group_size": 3,
 "steps": 6, "eval_every": 0, "eval_prompts": 4, "eval_seeds": 1, "batch": 8, "threads": 2,
 "lr": 1e-3, "clip_eps": 1e-2, "seed": 3${2:+, $2}}
JSON
}

grpo_config "$TMP/bad.json" '"backend": "tpu"'
run run "$TMP/bad.json" --out "$TMP/bad"
check "a bad config.backend is refused (exit 3)" [ "$rc" -eq 3 ]
check "  naming the field and the choices" grep -qF 'config.backend: "tpu" is not one of "cpu" "cuda"' "$TMP/stderr"
grpo_config "$TMP/badp.json" '"precision": "fp16"'
run run "$TMP/badp.json" --out "$TMP/badp"
check "a bad config.precision is named with the choices" grep -qF 'config.precision: "fp16" is not one of "tf32" "fp32" "bf16"' "$TMP/stderr"
grpo_config "$TMP/g.json"
run run "$TMP/g.json" --out "$TMP/flag" --backend tpu
check "a bad --backend is refused through the same check" grep -qF 'config.backend: "tpu"' "$TMP/stderr"
run sample --model "$MODEL" --prompt "a red circle" --n 2 --steps 3 --out "$TMP/s" --backend gpu
check "sample --backend gpu is a usage error (exit 2)" [ "$rc" -eq 2 ]
check "  naming the flag" grep -qF -- '--backend expects cpu or cuda' "$TMP/stderr"

run run "$TMP/g.json" --out "$TMP/cpu" --backend cpu
check "--backend cpu runs" [ "$rc" -eq 0 ]
check "  and the effective config records it" grep -qF '"backend": "cpu"' "$TMP/cpu/config.json"

CHUNKGRPO_CUDA_LIB=$TMP/none.so run run "$TMP/g.json" --out "$TMP/nolib" --backend cuda
check "without the CUDA library, cuda fails at once (exit 3)" [ "$rc" -eq 3 ]
check "  saying the backend is not available and how to point at it" grep -qF 'config.backend = "cuda": the CUDA backend is not available' "$TMP/stderr"
check "  before the run folder is made (a retry is not blocked)" [ ! -e "$TMP/nolib" ]

if [ ! -f bin/libchunkgrpo_cuda.so ]; then
    skip "cuda without a GPU" "this build has no CUDA backend (nvcc was not found)"
else
    run run "$TMP/g.json" --out "$TMP/cuda" --backend cuda
    if [ "$rc" -eq 0 ]; then
        # a GPU is here: the same run on both backends must agree closely
        check "on a GPU, the cuda run finishes" [ -s "$TMP/cuda/model.safetensors" ]
        check "  and its rewards follow the CPU run's" $PYTHON - "$TMP/cpu/metrics.jsonl" "$TMP/cuda/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l)["reward_mean"] for l in open(p) if "reward_mean" in l] for p in sys.argv[1:])
sys.exit(0 if len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) < 0.02 else 1)
PY
    else
        check "without a GPU, cuda fails at once (exit 3)" [ "$rc" -eq 3 ]
        check "  saying there is no usable CUDA device" grep -qF 'config.backend = "cuda": no usable CUDA device' "$TMP/stderr"
        run sample --model "$MODEL" --prompt "a red circle" --n 2 --steps 3 --out "$TMP/s2" --backend cuda
        check "sample --backend cuda says the same (exit 3)" [ "$rc" -eq 3 ]
        check "  naming the flag" grep -qF -- '--backend cuda: no usable CUDA device' "$TMP/stderr"
    fi
fi
summary backend
