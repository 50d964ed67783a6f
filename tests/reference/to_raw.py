#!/usr/bin/env python3
"""Converts safetensors fixtures into the library-free "cgraw" format that the GPU check program
(tests/gpu/gpu_check.c, through tests/gpu/cgraw.c) reads on a machine with no JSON library.
Standard library only (no numpy, no torch).

    python3 tests/reference/to_raw.py tests/reference/fixtures/*.safetensors
        writes X.cgraw beside each X.safetensors
    python3 tests/reference/to_raw.py --check tests/reference/fixtures/*.safetensors
        writes nothing; exit 1, naming the file, when an X.cgraw is missing or differs from what
        would be written (the committed .cgraw files are stale: rerun without --check)

The cgraw format (version 1), a text header then raw bytes:

    CGRAW1 <count>\\n
    <name> <dtype> <ndim> <dim0> ... <dim{ndim-1}> <byte_offset> <byte_length>\\n   (count lines)
    meta <key> <value>\\n                                                          (zero or more)
    end\\n
    <data block>

  - Fields are separated by exactly one space; numbers are unsigned decimal.
  - name: the safetensors tensor name; it has no whitespace or control characters and is neither
    "meta" nor "end". dtype: the safetensors name (F32, F64, I32, I64, U8, BF16, ...).
    ndim 0 is a scalar (no dims; one element).
  - byte_offset / byte_length: the tensor's bytes in the data block, counted from the first byte
    after "end\\n". Tensor lines are in data order and tile the block exactly (each offset is the
    previous offset + length, the first is 0, the last ends at the end of the file), and
    byte_length = numel * element size.
  - The data block is the safetensors data section copied byte for byte: little-endian, row-major,
    same order. It is NOT aligned in the file; a reader copies or shifts it.
  - meta lines copy the safetensors __metadata__ entries in header order, but only those whose key
    has no whitespace or control characters and whose value has no newline, carriage return or
    NUL (so a checkpoint's multi-line "vocab" is left out). The value is the rest of the line after
    the single space that follows the key: it may hold spaces, and may be empty.

The output depends only on the input file, so --check can compare bytes.
Exit status: 0 success, 1 --check found a missing or stale .cgraw, 2 usage error or an input that
is not a valid safetensors file (the message names the file and the tensor).
"""

import json
import os
import struct
import sys

MAX_HEADER = 100 << 20  # the same bound as common/safetensors.c
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
MAX_DIMS = 8  # as ST_MAX_DIMS and CGRAW_MAX_DIMS


class JsonObject(list):
    """A JSON object as its (key, value) pairs in file order (json's object_pairs_hook), so that
    duplicate keys can be seen and arrays are not mistaken for objects."""


class ConvertError(Exception):
    """An input that cannot be converted; the message names the file (and the tensor)."""


def plain_token(s):
    """True when s can stand as one space-separated field: non-empty, no whitespace or control
    characters."""
    return bool(s) and all(ord(ch) > 0x20 and ord(ch) != 0x7F for ch in s)


def read_safetensors(path):
    """Returns (tensors, metadata, data): tensors a list of (name, dtype, shape, begin, end) in
    data order, metadata a list of (key, value) in header order, data the data section's bytes."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ConvertError(f"{path}: too short for a safetensors file ({len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER or 8 + n > len(raw):
        raise ConvertError(f"{path}: header length {n} does not fit a {len(raw)}-byte file")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=JsonObject)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError(f"{path}: header is not valid JSON: {e}") from None
    if not isinstance(header, JsonObject):
        raise ConvertError(f"{path}: header is not a JSON object")
    data = raw[8 + n:]
    tensors, metadata, seen = [], [], set()
    for order, (name, entry) in enumerate(header):
        if name in seen:
            raise ConvertError(f"{path}: duplicate key '{name}' in the header")
        seen.add(name)
        if name == "__metadata__":
            if not isinstance(entry, JsonObject) or not all(isinstance(v, str) for _, v in entry):
                raise ConvertError(f"{path}: __metadata__ must map strings to strings")
            metadata = entry
            continue
        fields = dict(entry) if isinstance(entry, JsonObject) else None
        if fields is None or len(entry) != 3 or set(fields) != {"dtype", "shape", "data_offsets"}:
            raise ConvertError(f"{path}: tensor '{name}': entry must have exactly dtype, shape "
                               "and data_offsets")
        dtype, shape, offsets = fields["dtype"], fields["shape"], fields["data_offsets"]
        if not plain_token(name) or name in ("meta", "end"):
            raise ConvertError(f"{path}: tensor '{name}': the name cannot be written as one "
                               "cgraw field (whitespace, control character, or 'meta'/'end')")
        if dtype not in DTYPE_SIZES:
            raise ConvertError(f"{path}: tensor '{name}': unknown dtype {dtype!r}")
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise ConvertError(f"{path}: tensor '{name}': shape {shape!r} is not a list of at "
                               f"most {MAX_DIMS} non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]
                or offsets[1] > len(data)):
            raise ConvertError(f"{path}: tensor '{name}': data_offsets {offsets!r} outside the "
                               f"{len(data)}-byte data section")
        numel = 1
        for d in shape:
            numel *= d
        if numel * DTYPE_SIZES[dtype] != offsets[1] - offsets[0]:
            raise ConvertError(f"{path}: tensor '{name}': {dtype} {shape} needs "
                               f"{numel * DTYPE_SIZES[dtype]} bytes, data_offsets give "
                               f"{offsets[1] - offsets[0]}")
        tensors.append((offsets[0], order, name, dtype, shape, offsets[1]))
    tensors.sort()  # data order; ties (zero-sized tensors only) keep header order
    pos = 0
    for begin, _, name, _, _, end in tensors:
        if begin != pos:
            raise ConvertError(f"{path}: tensor '{name}' starts at byte {begin}, expected {pos} "
                               "(tensors must tile the data section)")
        pos = end
    if pos != len(data):
        raise ConvertError(f"{path}: {len(data) - pos} bytes after the last tensor")
    return ([(name, dtype, shape, begin, end) for begin, _, name, dtype, shape, end in tensors],
            metadata, data)


def to_cgraw(path):
    """The cgraw bytes for the safetensors file at path."""
    tensors, metadata, data = read_safetensors(path)
    lines = [f"CGRAW1 {len(tensors)}"]
    for name, dtype, shape, begin, end in tensors:
        lines.append(" ".join([name, dtype, str(len(shape))] + [str(d) for d in shape]
                              + [str(begin), str(end - begin)]))
    for key, value in metadata:
        if plain_token(key) and not any(ch in value for ch in "\n\r\0"):
            lines.append(f"meta {key} {value}")
    lines.append("end")
    return ("\n".join(lines) + "\n").encode("utf-8") + data


def out_path(path):
    base = path[:-len(".safetensors")] if path.endswith(".safetensors") else path
    return base + ".cgraw"


def main(argv):
    args = argv[1:]
    check = "--check" in args
    files = [a for a in args if a != "--check"]
    if not files or any(a.startswith("-") for a in files):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    stale = 0
    for path in files:
        try:
            blob = to_cgraw(path)
        except OSError as e:
            print(f"{path}: cannot read: {e.strerror}", file=sys.stderr)
            return 2
        except ConvertError as e:
            print(e, file=sys.stderr)
            return 2
        out = out_path(path)
        if check:
            try:
                with open(out, "rb") as f:
                    old = f.read()
            except FileNotFoundError:
                print(f"{out}: missing (run: python3 tests/reference/to_raw.py {path})",
                      file=sys.stderr)
                stale += 1
                continue
            if old != blob:
                print(f"{out}: differs from {path} (run: python3 tests/reference/to_raw.py "
                      f"{path})", file=sys.stderr)
                stale += 1
            continue
        tmp = out + ".tmp"
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, out)
        print(f"{out}: {len(blob)} bytes", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
