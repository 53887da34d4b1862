"""A GGUF header read with bounds before any library sees the file.

The gguf reader and llama.cpp size their allocations from counts and lengths in the header; a
damaged or hostile file with a count of 2^60 would have them allocate first and fail later (or
not fail). Every count and length here is held against the bytes the file actually has.
"""

from __future__ import annotations

import struct
from pathlib import Path

from quantbench.errors import UsageError

# Value types of the GGUF spec: id -> fixed size in bytes (string = 8, array = 9 are variable).
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_KEY = 1 << 16


class _Bad(Exception):
    pass


class _Reader:
    def __init__(self, fh, size: int):
        self.fh, self.size, self.pos = fh, size, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _Bad(f"it claims {n:,} bytes at offset {self.pos:,} of a {self.size:,}-byte file")
        data = self.fh.read(n)
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Bad(f"it claims {n:,} bytes at offset {self.pos:,} of a {self.size:,}-byte file")
        self.fh.seek(n, 1)
        self.pos += n

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self, limit: int | None = None) -> bytes:
        n = self.u64()
        if limit is not None and n > limit:
            raise _Bad(f"a name of {n:,} bytes")
        return self.take(n)


def _value(r: _Reader, vtype: int) -> None:
    if vtype in _FIXED:
        r.skip(_FIXED[vtype])
    elif vtype == _STRING:
        r.skip(r.u64())
    elif vtype == _ARRAY:
        sub, count = r.u32(), r.u64()
        if sub in _FIXED:
            r.skip(count * _FIXED[sub])  # bounded by the file's size in skip
        elif sub == _STRING:
            if count * 8 > r.size - r.pos:
                raise _Bad(f"an array of {count:,} strings")
            for _ in range(count):
                r.skip(r.u64())
        else:
            raise _Bad(f"an array of unknown type {sub}")
    else:
        raise _Bad(f"a value of unknown type {vtype}")


def check(path: str | Path, spec: str | None = None) -> dict:
    """Raise UsageError (one line) unless the header is possible for a file of this size;
    returns {"version", "tensors", "metadata"}."""
    path = Path(path)
    size = path.stat().st_size
    name = spec or str(path)
    try:
        with open(path, "rb") as fh:
            r = _Reader(fh, size)
            if r.take(4) != b"GGUF":
                raise _Bad("it does not start with the GGUF magic bytes")
            version = r.u32()
            if version not in (2, 3):
                raise _Bad(f"version {version} (llama.cpp reads 2 and 3)")
            n_tensors, n_kv = r.u64(), r.u64()
            # Each metadata entry takes at least 13 bytes, each tensor entry at least 28.
            if n_kv * 13 + n_tensors * 28 > size:
                raise _Bad(f"{n_tensors:,} tensors and {n_kv:,} metadata entries cannot fit in "
                           f"{size:,} bytes")
            for _ in range(n_kv):
                r.string(_MAX_KEY)
                _value(r, r.u32())
            for _ in range(n_tensors):
                r.string(_MAX_KEY)
                dims = r.u32()
                if not 1 <= dims <= _MAX_DIMS:
                    raise _Bad(f"a tensor with {dims} dimensions")
                shape = [r.u64() for _ in range(dims)]
                count = 1
                for d in shape:
                    count *= d
                if count > size * 8:  # even 1-bit weights need count / 8 bytes
                    raise _Bad(f"a tensor of shape {shape} in a {size:,}-byte file")
                r.u32()  # type
                if r.u64() > size:
                    raise _Bad("a tensor whose data starts past the end of the file")
    except _Bad as exc:
        raise UsageError(f"'{name}' is not a usable GGUF file: {exc}; refused before loading") from None
    except OSError as exc:
        raise UsageError(f"cannot read '{name}': {exc.strerror or exc}") from None
    return {"version": version, "tensors": n_tensors, "metadata": n_kv}
