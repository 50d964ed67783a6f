"""Minimal safetensors reader/writer (numpy only; no `safetensors` package on this machine).

File layout:
    u64 little-endian N | N bytes of JSON header | data buffer
The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets in
bytes, relative to the start of the data buffer) and may carry "__metadata__": {str: str}.
write() lays the tensors out contiguously in the order given and pads the header with spaces to a
multiple of 8 bytes, so that the data buffer starts aligned. read() checks everything it relies on
and raises SafetensorsError (a ValueError) with the offending tensor named.
"""

import json
import struct

import numpy as np

# safetensors dtype name <-> little-endian numpy dtype
_DTYPES = {
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
}
_NAMES = {dt: name for name, dt in _DTYPES.items()}

_MAX_HEADER = 100 * 1024 * 1024  # same bound as the reference implementation


class SafetensorsError(ValueError):
    pass


def write(path, tensors, metadata=None):
    """Writes `tensors` (an ordered mapping name -> numpy array, or a list of (name, array)) and
    the optional `metadata` (dict str -> str) to `path`. The output depends only on the inputs,
    so rerunning a deterministic script gives identical bytes."""
    items = list(tensors.items()) if hasattr(tensors, "items") else list(tensors)
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError(f"metadata {k!r}: keys and values must be strings")
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name, arr in items:
        if name == "__metadata__" or name in header:
            raise SafetensorsError(f"tensor {name!r}: duplicate or reserved name")
        arr = np.asarray(arr)
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dt not in _NAMES:
            raise SafetensorsError(f"tensor {name!r}: unsupported dtype {arr.dtype}")
        blob = np.ascontiguousarray(arr, dtype=dt).tobytes()
        header[name] = {"dtype": _NAMES[dt], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for blob in blobs:
            f.write(blob)


def read(path):
    """Reads `path`. Returns (tensors, metadata): a dict name -> numpy array in file order (each
    array owns its memory) and the metadata dict ({} when absent)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise SafetensorsError(f"{path}: too short for a safetensors file ({len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER or 8 + n > len(raw):
        raise SafetensorsError(f"{path}: header length {n} does not fit a {len(raw)}-byte file")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    data = raw[8 + n:]

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")

    tensors, spans = {}, []
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: entry needs exactly dtype, shape, data_offsets")
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise SafetensorsError(f"{where}: unsupported dtype {info['dtype']!r}")
        shape, offs = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise SafetensorsError(f"{where}: bad shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
                and 0 <= offs[0] <= offs[1] <= len(data)):
            raise SafetensorsError(f"{where}: bad data_offsets {offs!r} "
                                   f"(data buffer is {len(data)} bytes)")
        numel = int(np.prod(shape, dtype=np.int64))
        if offs[1] - offs[0] != numel * dtype.itemsize:
            raise SafetensorsError(f"{where}: {offs[1] - offs[0]} bytes for shape {shape} "
                                   f"{info['dtype']} (expected {numel * dtype.itemsize})")
        arr = np.frombuffer(data, dtype=dtype, count=numel, offset=offs[0]).reshape(shape)
        tensors[name] = arr.copy()
        spans.append((offs[0], offs[1], name))

    # The format forbids holes and overlaps: the tensors must tile the data buffer exactly.
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise SafetensorsError(f"{path}: tensor {name!r} starts at byte {begin}, expected {pos}"
                                   " (hole or overlap in the data buffer)")
        pos = end
    if pos != len(data):
        raise SafetensorsError(f"{path}: {len(data) - pos} trailing bytes after the last tensor")
    return tensors, metadata
