#!/usr/bin/env python3
"""Compares, lists and writes safetensors files with the Python standard library only (no numpy,
no torch), so the CLI tests run wherever a plain python3 does.

Compare (the default):
    st_compare.py A B [--tol 1e-4] [--names v,grad.*]
  For every tensor of B (only those matching one of the comma-separated globs of --names, when
  given), A must hold a tensor of that name with the same dtype and shape, and
      rel_err = max|a - b| / max|b|    (max|a - b| itself when B's tensor is all zero)
  must be <= tol. A NaN on either side, or an infinity the other side lacks, counts as an
  infinite error.
  Prints one line per failing tensor and a last line with the worst tensor.
  Exit status: 0 all within tol, 1 a tensor missing, mismatched or above tol (or --names matched
  nothing in B), 2 usage error or a file unreadable or malformed.

List:
    st_compare.py --list FILE
  One line per tensor in file order, "name DTYPE [d0, d1]", then "__metadata__ key=value" lines.

Write (to build inputs for tests, good or deliberately bad):
    st_compare.py --write OUT [--from SRC] [--drop NAME]... [--set NAME@I=VALUE]...
                  [--meta KEY=VALUE]... [NAME:DTYPE:SHAPE:FILL]...
  --from copies every tensor and metadata entry of SRC (bytes unchanged); a NAME:DTYPE:SHAPE:FILL
  spec replaces the tensor of that name in place, or appends a new one. SHAPE is comma-separated
  ("3,16,16,3"; empty for a scalar); FILL is a number (every element), "seq" (0, 1, 2, ...) or
  "rand" (a fixed pseudo-random sequence: uniform in [-1, 1) for floats, 0..9 for integers).
  --drop removes a tensor; --set changes element I (flat index, row-major) of a tensor.
  The file is laid out as the format requires (tensors contiguous in order, header padded with
  spaces to 8 bytes) and depends only on the arguments.
"""

import array
import fnmatch
import json
import math
import struct
import sys

MAX_HEADER = 100 << 20  # the engine's reader rejects larger headers too

# dtype -> (element size, array typecode or None when converted by hand)
DTYPES = {
    "BOOL": (1, "B"), "U8": (1, "B"), "I8": (1, "b"),
    "I16": (2, "h"), "U16": (2, "H"), "F16": (2, None), "BF16": (2, None),
    "I32": (4, None), "U32": (4, None), "F32": (4, "f"),
    "I64": (8, "q"), "U64": (8, "Q"), "F64": (8, "d"),
}
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


class StError(Exception):
    """A file that cannot be read or written as safetensors; the message names file and tensor."""


def _typecode(dtype):
    """The array typecode holding one element of dtype (platform sizes differ for i/l)."""
    size, code = DTYPES[dtype]
    if code is not None:
        return code
    if dtype in ("I32", "U32"):
        for c in (("i", "l") if dtype == "I32" else ("I", "L")):
            if array.array(c).itemsize == 4:
                return c
    return None


def decode(dtype, raw):
    """The elements of raw (little-endian bytes of dtype) as a list of Python numbers."""
    if dtype == "F16":
        return [v[0] for v in struct.iter_unpack("<e", raw)]
    if dtype == "BF16":
        half = array.array("H", raw)
        if sys.byteorder == "big":
            half.byteswap()
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in half]
    a = array.array(_typecode(dtype), raw)
    if sys.byteorder == "big" and a.itemsize > 1:
        a.byteswap()
    return a.tolist()


def encode(dtype, values):
    """Little-endian bytes of values as dtype (floats for float dtypes, ints otherwise)."""
    if dtype == "F16":
        return b"".join(struct.pack("<e", v) for v in values)
    if dtype == "BF16":  # truncation is enough for test inputs
        return b"".join(struct.pack("<f", v)[2:] for v in values)
    code = _typecode(dtype)
    a = array.array(code, [float(v) if dtype in FLOAT_DTYPES else int(v) for v in values])
    if sys.byteorder == "big" and a.itemsize > 1:
        a.byteswap()
    return a.tobytes()


def read(path):
    """Reads path. Returns (tensors, metadata): an ordered dict name -> (dtype, shape, raw bytes)
    and the metadata dict. Raises StError naming the file (and tensor) when anything is off."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise StError(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) < 8:
        raise StError(f"{path}: {len(raw)} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER or 8 + n > len(raw):
        raise StError(f"{path}: header length {n} does not fit a {len(raw)}-byte file")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise StError(f"{path}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise StError(f"{path}: header is not a JSON object")
    data = raw[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise StError(f"{path}: __metadata__ must map strings to strings")
    tensors, spans = {}, []
    for name, info in header.items():
        where = f"{path}: tensor '{name}'"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise StError(f"{where}: entry needs exactly dtype, shape and data_offsets")
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise StError(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
                type(d) is int and d >= 0 for d in shape):
            raise StError(f"{where}: bad shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2
                and all(type(o) is int for o in offs) and 0 <= offs[0] <= offs[1] <= len(data)):
            raise StError(f"{where}: data_offsets {offs!r} outside the {len(data)}-byte data")
        numel = math.prod(shape)
        if offs[1] - offs[0] != numel * DTYPES[dtype][0]:
            raise StError(f"{where}: {offs[1] - offs[0]} bytes for {dtype} {shape}")
        tensors[name] = (dtype, shape, data[offs[0]:offs[1]])
        spans.append((offs[0], offs[1], name))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise StError(f"{path}: tensor '{name}' starts at byte {begin}, expected {pos}")
        pos = end
    if pos != len(data):
        raise StError(f"{path}: {len(data) - pos} bytes after the last tensor")
    return tensors, meta


def write(path, tensors, meta):
    """Writes tensors (ordered dict name -> (dtype, shape, raw bytes)) and meta to path."""
    header, offset = {}, 0
    if meta:
        header["__metadata__"] = dict(meta)
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)
    try:
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(hbytes)) + hbytes)
            for _, _, raw in tensors.values():
                f.write(raw)
    except OSError as e:
        raise StError(f"{path}: cannot write: {e.strerror}") from None


def compare_tensor(a, b):
    """(rel_err, max|a-b|, max|b|, flat index of the largest difference) for equal-length lists.
    Any non-finite value that is not matched exactly by the other side gives rel_err = inf."""
    diff, scale, where = 0.0, 0.0, 0
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y and not (math.isfinite(x) and math.isfinite(y)):
            return math.inf, math.inf, scale, i
        d = abs(x - y) if x != y else 0.0
        if d > diff:
            diff, where = d, i
        if math.isfinite(y) and abs(y) > scale:
            scale = abs(y)
    return (diff / scale if scale > 0 else diff), diff, scale, where


def unravel(i, shape):
    idx = []
    for d in reversed(shape):
        idx.append(i % d if d else 0)
        i = i // d if d else 0
    return list(reversed(idx))


def cmd_compare(path_a, path_b, tol, globs):
    try:
        ta, _ = read(path_a)
        tb, _ = read(path_b)
    except StError as e:
        print(f"st_compare: {e}", file=sys.stderr)
        return 2
    names = [n for n in tb if not globs or any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not names:
        print(f"st_compare: no tensor of {path_b} matches --names {','.join(globs)}")
        return 1
    failed, worst = 0, (-1.0, "", "")
    for name in names:
        dt_b, shape_b, raw_b = tb[name]
        if name not in ta:
            print(f"FAIL {name}: missing from {path_a}")
            failed += 1
            continue
        dt_a, shape_a, raw_a = ta[name]
        if dt_a != dt_b or shape_a != shape_b:
            print(f"FAIL {name}: {dt_a} {shape_a} in {path_a}, {dt_b} {shape_b} in {path_b}")
            failed += 1
            continue
        err, diff, scale, i = compare_tensor(decode(dt_a, raw_a), decode(dt_b, raw_b))
        detail = (f"rel err {err:.3e} (max|a-b| {diff:.3e} at {unravel(i, shape_b)}, "
                  f"max|b| {scale:.3e})")
        if not err <= tol:
            print(f"FAIL {name}: {detail} > tol {tol:g}")
            failed += 1
        if err > worst[0]:
            worst = (err, name, detail)
    if worst[1]:
        print(f"worst of {len(names)}: {worst[1]}: {worst[2]}")
    print(f"st_compare: {len(names) - failed} of {len(names)} tensors within tol {tol:g}")
    return 1 if failed else 0


def cmd_list(path):
    try:
        tensors, meta = read(path)
    except StError as e:
        print(f"st_compare: {e}", file=sys.stderr)
        return 2
    for name, (dtype, shape, _) in tensors.items():
        print(f"{name} {dtype} [{', '.join(map(str, shape))}]")
    for k, v in meta.items():
        print(f"__metadata__ {k}={v!r}")
    return 0


def _fill(name, dtype, numel, fill):
    if fill == "seq":
        return list(range(numel))
    if fill == "rand":  # a 32-bit LCG: the same values on every machine and Python
        s = sum(name.encode()) * 2654435761 % 2**32
        out = []
        for _ in range(numel):
            s = (1664525 * s + 1013904223) % 2**32
            out.append(s / 2**31 - 1.0 if dtype in FLOAT_DTYPES else s >> 28 & 7)
        return out
    v = float(fill)
    return [v if dtype in FLOAT_DTYPES else int(v)] * numel


def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def parse_spec(spec):
    """NAME:DTYPE:SHAPE:FILL -> (name, (dtype, shape, raw)); the name may itself hold colons."""
    parts = spec.rsplit(":", 3)
    if len(parts) != 4 or not parts[0]:
        raise ValueError(f"tensor spec {spec!r} is not NAME:DTYPE:SHAPE:FILL")
    name, dtype, shape_s, fill = parts
    if dtype not in DTYPES:
        raise ValueError(f"tensor spec {spec!r}: unknown dtype {dtype!r}")
    try:
        shape = [int(d) for d in shape_s.split(",")] if shape_s.strip() else []
    except ValueError:
        raise ValueError(f"tensor spec {spec!r}: shape {shape_s!r} is not D0,D1,...") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"tensor spec {spec!r}: negative dimension")
    if fill not in ("seq", "rand") and not _is_number(fill):
        raise ValueError(f"tensor spec {spec!r}: fill {fill!r} is not a number, seq or rand")
    return name, (dtype, shape, encode(dtype, _fill(name, dtype, math.prod(shape), fill)))


def cmd_write(args):
    out, src, drops, sets, meta, specs = None, None, [], [], {}, []
    it = iter(args)
    for a in it:
        if a in ("--from", "--drop", "--set", "--meta"):
            val = next(it, None)
            if val is None:
                raise ValueError(f"{a} needs a value")
            if a == "--from":
                src = val
            elif a == "--drop":
                drops.append(val)
            elif a == "--set":
                sets.append(val)
            else:
                k, eq, v = val.partition("=")
                if not eq:
                    raise ValueError(f"--meta {val!r} is not KEY=VALUE")
                meta[k] = v
        elif out is None:
            out = a
        else:
            specs.append(a)
    if out is None:
        raise ValueError("--write needs an output path")
    tensors, file_meta = read(src) if src else ({}, {})
    file_meta.update(meta)
    for name in drops:
        if tensors.pop(name, None) is None:
            raise ValueError(f"--drop {name}: no such tensor")
    for spec in specs:
        name, t = parse_spec(spec)
        tensors[name] = t  # an existing key keeps its position
    for s in sets:
        target, eq, value = s.partition("=")
        name, at, index = target.rpartition("@")
        if not eq or not at or name not in tensors:
            raise ValueError(f"--set {s!r} is not NAME@INDEX=VALUE for an existing tensor")
        dtype, shape, raw = tensors[name]
        vals = decode(dtype, raw)
        if not (index.isdigit() and _is_number(value)):
            raise ValueError(f"--set {s!r}: index or value is not a number")
        i = int(index)
        if not 0 <= i < len(vals):
            raise ValueError(f"--set {s!r}: index outside the {len(vals)} elements")
        vals[i] = float(value) if dtype in FLOAT_DTYPES else int(value)
        tensors[name] = (dtype, shape, encode(dtype, vals))
    write(out, tensors, file_meta)
    return 0


def main(argv):
    usage = ("usage: st_compare.py A B [--tol T] [--names GLOB,...]\n"
             "       st_compare.py --list FILE\n"
             "       st_compare.py --write OUT [--from SRC] [--drop NAME] [--set NAME@I=V]"
             " [--meta K=V] [NAME:DTYPE:SHAPE:FILL ...]")
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        if argv and argv[0] == "--write":
            return cmd_write(argv[1:])
        if argv and argv[0] == "--list":
            if len(argv) != 2:
                raise ValueError("--list takes one file")
            return cmd_list(argv[1])
        paths, tol, globs = [], 1e-4, []
        it = iter(argv)
        for a in it:
            if a in ("--tol", "--names"):
                val = next(it, None)
                if val is None:
                    raise ValueError(f"{a} needs a value")
                if a == "--tol":
                    tol = float(val) if _is_number(val) else -1.0
                    if not tol >= 0:
                        raise ValueError(f"--tol {val}: expected a number >= 0")
                else:
                    globs = [g for g in val.split(",") if g]
            elif a.startswith("-") and a != "-":
                raise ValueError(f"unknown option {a}")
            else:
                paths.append(a)
        if len(paths) != 2:
            raise ValueError("expected two files A and B")
        return cmd_compare(paths[0], paths[1], tol, globs)
    except StError as e:
        print(f"st_compare: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"st_compare: {e}\n{usage}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
