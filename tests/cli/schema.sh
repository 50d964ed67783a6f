#!/usr/bin/env bash
# schema.sh: `chunkgrpo-worker schema` and the committed schema/experiment.schema.json:
#   the committed file is exactly what the config tables generate (regenerate it with
#   `bin/chunkgrpo-worker schema > schema/experiment.schema.json`); it is valid JSON with one
#   subschema per kind, and its kinds are the ones `run` accepts; with python3-jsonschema, it is
#   a valid draft 2020-12 schema that accepts every kind's defaults and refuses what the worker
#   refuses (unknown fields and kinds, out of range, bad choices).
# Ends with "schema: N passed, N failed, N skipped"; exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/lib.bash
TMP=$(mktemp -d "${TMPDIR:-/tmp}/schema.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
SCHEMA=schema/experiment.schema.json

if [ ! -x "$WORKER" ]; then
    fail "worker binary" "$WORKER not found or not executable (run make first)"
    summary schema
    exit 1
fi

timeout 30 "$WORKER" schema >"$TMP/schema.json" 2>"$TMP/stderr"
check "schema prints the schema (exit 0)" [ $? -eq 0 -a -s "$TMP/schema.json" ]
if cmp -s "$TMP/schema.json" "$SCHEMA"; then
    pass "$SCHEMA is what the tables generate"
else
    fail "$SCHEMA is what the tables generate" \
        "regenerate it: $WORKER schema > $SCHEMA" "$(diff "$SCHEMA" "$TMP/schema.json" | head -n 20)"
fi
timeout 30 "$WORKER" schema extra >/dev/null 2>&1
check "schema takes no arguments (exit 2)" [ $? -eq 2 ]

if ! "$PYTHON" -c 'import json' 2>/dev/null; then
    skip "the schema's kinds" "no $PYTHON on PATH"
    summary schema
    exit
fi

# the kinds `run` accepts, as its error for an unknown kind lists them
printf '{"kind": "no-such-kind"}' >"$TMP/bad.json"
timeout 30 "$WORKER" run "$TMP/bad.json" --out "$TMP/out" >/dev/null 2>"$TMP/stderr"
check "run refuses an unknown kind (exit 3)" [ $? -eq 3 ]
run_kinds=$(sed -n 's/.*config.kind: "no-such-kind" is not one of //p' "$TMP/stderr" | tr -d '"')
check "run lists the kinds it accepts" [ -n "$run_kinds" ]

if "$PYTHON" - "$SCHEMA" "$run_kinds" >"$TMP/py" 2>&1 <<'PY'; then
import json, sys
s = json.load(open(sys.argv[1]))
kinds = sys.argv[2].split()
assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema", s["$schema"]
assert s["properties"]["kind"]["enum"] == kinds, (s["properties"]["kind"]["enum"], kinds)
assert [b["title"] for b in s["oneOf"]] == kinds, [b["title"] for b in s["oneOf"]]
for b in s["oneOf"]:
    props = b["properties"]
    assert props["kind"] == {"const": b["title"]}, b["title"]
    assert b["additionalProperties"] is False and b["required"] == ["kind"], b["title"]
    for name, p in props.items():
        if name == "kind":
            continue
        assert p["type"] in ("integer", "number", "boolean", "string", "object", "array"), (b["title"], name)
        assert "default" in p and p["description"], (b["title"], name)
        if p["type"] in ("integer", "number"):
            assert p["minimum"] <= p["default"] <= p["maximum"], (b["title"], name)
        if "enum" in p:
            assert p["default"] in p["enum"], (b["title"], name)
PY
    pass "the schema is valid JSON with a subschema for every kind run accepts"
else
    fail "the schema is valid JSON with a subschema for every kind run accepts" "$(tail -n 5 "$TMP/py")"
fi

if ! "$PYTHON" -c 'import jsonschema' 2>/dev/null; then
    skip "validation with the schema" "no python3-jsonschema"
    summary schema
    exit
fi
if "$PYTHON" - "$SCHEMA" >"$TMP/py" 2>&1 <<'PY'; then
import json, sys
from jsonschema import Draft202012Validator as V
s = json.load(open(sys.argv[1]))
V.check_schema(s)
v = V(s)
for b in s["oneOf"]:
    k = b["title"]
    defaults = {n: p["default"] for n, p in b["properties"].items() if n != "kind"}
    for cfg in ({"kind": k}, dict(defaults, kind=k)):
        assert v.is_valid(cfg), (cfg, [e.message for e in v.iter_errors(cfg)])
    assert not v.is_valid({"kind": k, "no_such_field": 1}), k
bad = [{"kind": "no-such-kind"}, {"steps": 3}, {"kind": "grpo", "lr": 2},
       {"kind": "grpo", "sde": "ito"}, {"kind": "pretrain", "steps": "many"},
       {"kind": "eval", "chunks": "auto"}, {"kind": "grpo", "rewards": {"beauty": 1}},
       {"kind": "grpo", "rewards": {}}, {"kind": "grpo", "rewards": {"align": -1}},
       {"kind": "grpo", "chunk_rewards": [{"align": 1}, "clean"]}]
assert v.is_valid({"kind": "grpo", "rewards": {"align": 1, "clean": 0.5},
                   "chunk_rewards": [{"position": 1}, {"object": 2, "clean": 1}]})
for cfg in bad:
    assert not v.is_valid(cfg), cfg
PY
    pass "the schema accepts every kind's defaults and refuses what the worker refuses"
else
    fail "the schema accepts every kind's defaults and refuses what the worker refuses" "$(tail -n 5 "$TMP/py")"
fi

summary schema
