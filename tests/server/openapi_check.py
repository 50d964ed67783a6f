#!/usr/bin/env python3
"""Checks the control server's responses against schema/openapi.json.

  validate(method, path_template, status, content_type, body_json) -> list of problems ([] = valid)
  match_path(concrete_path) -> the document's path template, or None

  openapi_check.py --lint          checks the document itself (and that it covers docs/api.md)
  openapi_check.py RECORD.jsonl    validates recorded exchanges, one JSON object a line:
                                   {"method", "path" (concrete), "status", "content_type", "body"}
A record without "body" for a JSON response is skipped (nothing to check). Needs python3-jsonschema
(4.10 or later): "#/components/..." refs resolve because each schema is checked with the document's
components beside it, which works with RefResolver and referencing alike.
"""
import json, os, re, sys
from jsonschema import Draft202012Validator

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
with open(os.environ.get("OPENAPI_JSON") or os.path.join(ROOT, "schema", "openapi.json")) as _f:
    DOC = json.load(_f)
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _regex(template):
    params = {p["name"]: p for p in DOC["paths"][template].get("parameters", [])}  # path-level
    out = "^"
    for lit, name in re.findall(r"([^{]*)(?:\{([^}]*)\})?", template):
        out += re.escape(lit)
        if name:
            out += "(.+)" if params.get(name, {}).get("x-allow-slashes") else "([^/]+)"
    return re.compile(out + "$")


_TEMPLATES = sorted(DOC["paths"], key=lambda t: (t.count("{"), -len(t)))  # literal paths first
_REGEXES = [(t, _regex(t)) for t in _TEMPLATES]


def match_path(path):
    path = path.split("?", 1)[0]
    return next((t for t, rx in _REGEXES if rx.match(path)), None)


def _media_ok(got, allowed):
    got = (got or "").split(";", 1)[0].strip().lower()
    for m in allowed:
        if m == "*/*" or m == got or (m.endswith("/*") and got.startswith(m[:-1])):
            return m
    return None


def _is_json(media):
    return media == "application/json" or media.endswith("+json")


def _deref(obj):
    while isinstance(obj, dict) and "$ref" in obj:
        obj = _pointer(obj["$ref"])
    return obj


def _pointer(ref):
    if not ref.startswith("#/"):
        raise KeyError(ref)
    node = DOC
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _response(method, template, status):
    """The response object, or (None, why). A concrete path is matched to its template."""
    item = DOC["paths"].get(template) or DOC["paths"].get(match_path(template))
    if item is None:
        return (_deref({"$ref": "#/components/responses/NotFound"}), None) if status == 404 else (None, "no such path")
    op = item.get(method.lower())
    if op is None:
        if status == 405:
            return _deref({"$ref": "#/components/responses/MethodNotAllowed"}), None
        return None, "%s is not an operation of %s" % (method.upper(), template)
    resps = op["responses"]
    r = resps.get(str(status)) or resps.get(str(status)[0] + "XX") or resps.get("default")
    return (_deref(r), None) if r else (None, "status %s is not documented for %s" % (status, op["operationId"]))


def validate(method, path_template, status, content_type, body_json, _missing_body=False):
    resp, why = _response(method, path_template, int(status))
    if resp is None:
        return [why]
    content = resp.get("content")
    if not content:
        return [] if body_json in (None, "") else ["status %s has no body, got one" % status]
    media = _media_ok(content_type, content)
    if media is None:
        return ["content type %r is not one of %s" % (content_type, ", ".join(content))]
    schema = content[media].get("schema")
    if not _is_json(media) or schema is None or _missing_body:
        return []
    schema = dict(schema, components=DOC["components"])  # lets "#/components/..." resolve
    return ["%s: %s" % ("/".join(map(str, e.absolute_path)) or "body", e.message)
            for e in Draft202012Validator(schema).iter_errors(body_json)]


def _walk(node, at="#"):
    if isinstance(node, dict):
        for k, v in node.items():
            yield at, k, v
            yield from _walk(v, at + "/" + k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, "%s/%d" % (at, i))


def _doc_routes():
    """(METHOD, normalized path) of every backticked route in docs/api.md's tables."""
    routes = set()
    with open(os.path.join(ROOT, "docs", "api.md")) as f:
        lines = f.readlines()
    for line in lines:
        if not line.startswith("| `"):
            continue
        method = None
        for cell in re.findall(r"`([^`]*)`", line.split("|")[1]):
            m = re.match(r"(?:([A-Z]+) )?(/\S*)$", cell)
            if m:
                method = m.group(1) or method
                routes.add((method, _norm(m.group(2))))
    return routes


def _norm(path):
    return re.sub(r"\{[^}]*\}|\.\.\.", "{}", path)


def lint():
    problems, seen_ids = [], set()
    for at, key, val in _walk(DOC):
        if key == "$ref":
            try:
                _pointer(val)
            except (KeyError, IndexError, ValueError, TypeError):
                problems.append("%s: $ref %s does not resolve" % (at, val))
    for template, item in DOC["paths"].items():
        names = set(re.findall(r"\{([^}]*)\}", template))
        for method in [m for m in METHODS if m in item]:
            op, where = item[method], "%s %s" % (method.upper(), template)
            if not op.get("operationId"):
                problems.append(where + ": no operationId")
            elif op["operationId"] in seen_ids:
                problems.append(where + ": operationId %s used twice" % op["operationId"])
            seen_ids.add(op.get("operationId"))
            if not op.get("responses"):
                problems.append(where + ": no responses")
            declared = {p["name"] for p in map(_deref, item.get("parameters", []) + op.get("parameters", []))
                        if p["in"] == "path" and p.get("required")}
            for n in sorted(names - declared):
                problems.append(where + ": path parameter {%s} not declared (required, in: path)" % n)
            for n in sorted(declared - names):
                problems.append(where + ": path parameter %s is not in the path" % n)
    have = {(m.upper(), _norm(t)) for t, item in DOC["paths"].items() for m in METHODS if m in item}
    for method, path in sorted(_doc_routes() - have):
        problems.append("docs/api.md: %s %s is not in the document" % (method, path))
    schemas = [(at + "/" + k, v) for at, k, v in _walk(DOC) if k == "schema" or at == "#/components/schemas"]
    for at, s in schemas:
        for e in Draft202012Validator(Draft202012Validator.META_SCHEMA).iter_errors(s):
            problems.append("%s: not a valid schema: %s" % (at, e.message))
    for p in problems:
        print(p)
    print("openapi-lint: %d problem(s), %d paths, %d routes of docs/api.md" % (len(problems), len(DOC["paths"]), len(_doc_routes())))
    return 1 if problems else 0


def check_records(filename):
    passed = failed = skipped = 0
    with open(filename) as f:
        lines = f.readlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        where = "%s:%d %s %s %s" % (filename, n, rec["method"], rec["path"], rec["status"])
        template = rec["path"]
        resp, _ = _response(rec["method"], template, int(rec["status"]))
        media = _media_ok(rec.get("content_type"), (resp or {}).get("content") or {})
        missing = "body" not in rec and media is not None and _is_json(media)
        errors = validate(rec["method"], template, rec["status"], rec.get("content_type"), rec.get("body"), missing)
        if errors:
            failed += 1
            print("FAIL %s: %s" % (where, "; ".join(errors)))
        elif missing:
            skipped += 1
            print("SKIP %s: no body recorded" % where)
        else:
            passed += 1
    print("openapi: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: openapi_check.py --lint | RECORD.jsonl")
    sys.exit(lint() if sys.argv[1] == "--lint" else check_records(sys.argv[1]))
