"""The check of a ``.tflite`` file before LiteRT reads it: a port of the bundle's C check
(``bundle/native/tflite_check.h``, whose comments say why each part exists), with the same rules, limits and
messages, held to the same test cases (tests/test_untrusted_tflite.py).

LiteRT loads a flatbuffer unverified and trusts its values: a truncated file, an operator input of -1 where
the kernel needs a tensor, a NaN scale or a forged shape crashed it or made it allocate gigabytes. Only the
standard library: a hand-rolled reader over the bytes (the ``flatbuffers`` package need not be on a device),
every read bounds-checked, the walk bounded.
"""

from __future__ import annotations

import math
import os
import struct

from .base import InferenceError

FB_MAX_STEPS = 1 << 24  # tables and indices visited
MAX_TENSOR_BYTES = 1 << 28  # the non-constant tensors of a subgraph together (see tflite_check.h)
MIN_SCALE, MAX_SCALE = 2.0**-64, 2.0**32
# builtin code -> the input positions that may be -1 (None: every one but the first), as optional_input
_OPTIONAL = {
    3: {2},
    4: {2},
    9: {2},
    132: {2},
    67: {3},
    141: {3},
    27: {3},
    16: None,
    44: None,
    52: None,
    46: None,
}
_ELEMENT_BYTES = (4, 2, 4, 1, 8, 0, 1, 2, 8, 1, 8, 16, 8, 0, 0, 4, 2, 0, 2)  # schema.fbs TensorType order
_ZERO_POINTS = {3: (0, 255), 9: (-128, 127), 7: (-32768, 32767), 16: (0, 65535), 17: (-8, 7)}
_ZERO_POINTS[2] = (-(1 << 31), (1 << 31) - 1)


class TFLiteError(InferenceError):
    """The file is not a TFLite model LiteRT can be given safely."""


class _Table:
    __slots__ = ("at", "vt", "vsize")

    def __init__(self, at: int, vt: int, vsize: int):
        self.at, self.vt, self.vsize = at, vt, vsize


class _Reader:
    def __init__(self, data: bytes, path: str):
        self.d, self.n, self.steps, self.path = data, len(data), 0, path

    def bad(self, why: str):
        raise TFLiteError(f"{self.path} is not a valid TFLite model: {why}")

    def need(self, at: int, length: int, what: str) -> None:
        if at > self.n or length > self.n - at:
            self.bad(f"{what} runs past the end of the file (truncated?)")

    def le(self, at: int, size: int) -> int:  # [at, at + size) checked by the caller
        return int.from_bytes(self.d[at : at + size], "little")

    def step(self) -> None:
        self.steps += 1
        if self.steps > FB_MAX_STEPS:
            self.bad(f"more than {FB_MAX_STEPS} tables and indices")

    def follow(self, at: int, what: str) -> int:
        to = at + self.le(at, 4)
        self.need(to, 4, what)
        return to

    def table(self, at: int, what: str) -> _Table:
        self.step()
        self.need(at, 4, what)
        raw = self.le(at, 4)
        vt = at - raw + ((1 << 32) if raw >> 31 else 0)
        if vt < 0 or vt + 2 > self.n:
            self.bad(f"{what} has its vtable outside the file (truncated?)")
        t = _Table(at, vt, self.le(vt, 2))
        if t.vsize % 2:
            self.bad(f"{what} has a malformed vtable")
        self.need(t.vt, t.vsize, what)
        if t.vsize >= 4:
            self.need(at, self.le(t.vt + 2, 2), what)
        return t

    def field(self, t: _Table, slot: int, size: int, what: str) -> int:
        off = 4 + 2 * slot
        at = self.le(t.vt + off, 2) if off + 2 <= t.vsize else 0
        if at:
            self.need(t.at + at, size, what)
        return t.at + at if at else 0

    def num(self, t: _Table, slot: int, size: int, what: str) -> int:
        at = self.field(t, slot, size, what)
        return self.le(at, size) if at else 0

    def vec(self, t: _Table, slot: int, elem: int, nul: int, what: str) -> tuple[int, int]:
        """(first element, count) of vector ``slot``; (0, 0) when absent."""
        at = self.field(t, slot, 4, what)
        if not at:
            return 0, 0
        at = self.follow(at, what)
        n = self.le(at, 4)
        self.need(at + 4, n * elem + nul, what)
        return at + 4, n

    def nth(self, first: int, i: int, what: str) -> _Table:
        return self.table(self.follow(first + 4 * i, what), what)

    def sub(self, t: _Table, slot: int, what: str) -> _Table | None:
        at = self.field(t, slot, 4, what)
        return self.table(self.follow(at, what), what) if at else None

    def in_range(self, x: int, limit: int, what: str, kind: str) -> None:
        if x >= limit:
            self.bad(f"{what} names {kind} {x}; there are {limit}")


def _sint(x: int, size: int) -> int:
    return x - (1 << (8 * size)) if size < 8 and x >> (8 * size - 1) else x


def _sint64(x: int) -> int:
    return x - (1 << 64) if x >> 63 else x


def _optional(op: int, at: int) -> bool:
    if op not in _OPTIONAL:
        return False
    positions = _OPTIONAL[op]
    return at >= 1 if positions is None else at in positions


def _indices(r: _Reader, t: _Table, slot: int, limit: int, what: str, kind: str, op: int) -> None:
    at, n = r.vec(t, slot, 4, 0, what)
    for i in range(n):
        x = r.le(at + 4 * i, 4)
        if x != 0xFFFFFFFF:
            r.in_range(x, limit, what, kind)
        elif op < 0 or not _optional(op, i):
            r.bad(f"{what} leaves out {kind} {i} (-1), which is not optional")
        r.step()


def _quantization(r: _Reader, q: _Table, tensor_type: int, shape: int, rank: int, w: str) -> None:
    scales, n_scales = r.vec(q, 2, 4, 0, w)
    zeros, n_zeros = r.vec(q, 3, 8, 0, w)
    dim = _sint(r.num(q, 6, 4, w), 4)
    details = r.sub(q, 5, w)
    if details is not None:
        r.vec(details, 0, 1, 0, w)
    if not n_scales:
        return
    if n_zeros != n_scales:
        r.bad(f"{w} has {n_scales} quantization scales and {n_zeros} zero points")
    if dim < 0 or (rank and dim >= rank):
        r.bad(f"{w} is quantized along dimension {dim} of {rank}")
    if n_scales > 1 and (not rank or r.le(shape + 4 * dim, 4) != n_scales):
        r.bad(f"{w} has {n_scales} quantization scales for dimension {dim} of another size")
    lo, hi = _ZERO_POINTS.get(tensor_type, (None, None))
    for i in range(n_scales):
        (scale,) = struct.unpack_from("<f", r.d, scales + 4 * i)
        if not MIN_SCALE <= scale <= MAX_SCALE:  # NaN fails both
            r.bad(f"{w} has quantization scale {_g(scale)} (not in {_g(MIN_SCALE)}..{_g(MAX_SCALE)})")
        zero = _sint64(r.le(zeros + 8 * i, 8))
        if lo is not None and not lo <= zero <= hi:
            r.bad(f"{w} has zero point {zero} outside its type's {lo}..{hi}")
        r.step()


def _g(x: float) -> str:
    """C's %g."""
    if math.isnan(x):
        return "nan" if math.copysign(1, x) > 0 else "-nan"
    return f"{x:g}"


def _buffer_bytes(r: _Reader, bufs: int, b: int, w: str) -> int:
    t = r.nth(bufs, b, w)
    _, n = r.vec(t, 0, 1, 0, w)
    return n or (r.num(t, 2, 8, w) if r.num(t, 1, 8, w) > 1 else 0)


def _tensor_values(r: _Reader, t: _Table, bufs: int, w: str, activations: int) -> int:
    shape, rank = r.vec(t, 0, 4, 0, w)
    sig, n_sig = r.vec(t, 7, 4, 0, w)
    tensor_type = r.num(t, 1, 1, w)
    size = _ELEMENT_BYTES[tensor_type] if tensor_type < len(_ELEMENT_BYTES) else 0
    data = _buffer_bytes(r, bufs, r.num(t, 2, 4, w), w)
    for i in range(n_sig):
        if _sint(r.le(sig + 4 * i, 4), 4) < -1:
            r.bad(f"{w} has a dimension below -1 in its signature")
        r.step()
    elements = 1
    for i in range(rank):
        d = _sint(r.le(shape + 4 * i, 4), 4)
        if d < 0:
            r.bad(f"{w} has dimension {d}")
        elements = elements if elements > MAX_TENSOR_BYTES else elements * d
        r.step()
    if data and size and elements * size != data:
        r.bad(f"{w}'s shape needs {elements * size} bytes but its buffer holds {data}")
    if not data:
        activations += elements * (size or 1)
    if activations > MAX_TENSOR_BYTES:
        r.bad(f"{w} takes the tensors past {MAX_TENSOR_BYTES >> 20} MiB (a forged shape?)")
    q = r.sub(t, 4, w)
    if q is not None:
        r.vec(q, 0, 4, 0, w)
        r.vec(q, 1, 4, 0, w)
        _quantization(r, q, tensor_type, shape, rank, w)
    return activations


def _check_tensor(r: _Reader, tensors: int, i: int, bufs: int, n_bufs: int, w: str, activations: int) -> int:
    t = r.nth(tensors, i, w)
    r.vec(t, 3, 1, 1, w)
    r.in_range(r.num(t, 2, 4, w), n_bufs, w, "buffer")
    r.sub(t, 6, w)
    variants, n = r.vec(t, 9, 4, 0, w)
    for j in range(n):
        r.vec(r.nth(variants, j, w), 0, 4, 0, w)
    return _tensor_values(r, t, bufs, w, activations)


def _check_operator(r: _Reader, t: _Table, codes: int, n_codes: int, n_tensors: int, w: str) -> None:
    code = r.num(t, 0, 4, w)
    r.in_range(code, n_codes, w, "operator code")
    c = r.nth(codes, code, w)
    op = max(_sint(r.num(c, 0, 1, w), 1), _sint(r.num(c, 3, 4, w), 4))  # as TFLite's GetBuiltinCode
    _indices(r, t, 1, n_tensors, w, "tensor", op)
    _indices(r, t, 2, n_tensors, w, "tensor", -1)
    _indices(r, t, 8, n_tensors, w, "tensor", -1)
    r.vec(t, 5, 1, 0, w)
    r.vec(t, 7, 1, 0, w)
    r.sub(t, 4, w)
    r.sub(t, 12, w)
    x = r.num(t, 9, 8, w)
    if x > 1:
        r.need(x, r.num(t, 10, 8, w), w)


def _check_subgraph(r: _Reader, g: _Table, s: int, codes: int, n_codes: int, bufs: int, n_bufs: int) -> None:
    r.vec(g, 4, 1, 1, f"subgraph {s}")
    tensors, n_tensors = r.vec(g, 0, 4, 0, f"subgraph {s}")
    activations = 0
    for i in range(n_tensors):
        activations = _check_tensor(r, tensors, i, bufs, n_bufs, f"subgraph {s} tensor {i}", activations)
    _indices(r, g, 1, n_tensors, f"subgraph {s}'s input list", "tensor", -1)
    _indices(r, g, 2, n_tensors, f"subgraph {s}'s output list", "tensor", -1)
    ops, k = r.vec(g, 3, 4, 0, f"subgraph {s}'s operator list")
    for i in range(k):
        w = f"subgraph {s} operator {i}"
        _check_operator(r, r.nth(ops, i, w), codes, n_codes, n_tensors, w)


def _check_signatures(r: _Reader, m: _Table, subs: int, n_subs: int) -> None:
    sigs, k = r.vec(m, 7, 4, 0, "the signature list")
    for i in range(k):
        w = f"signature {i}"
        d = r.nth(sigs, i, w)
        r.vec(d, 2, 1, 1, w)
        x = r.num(d, 4, 4, w)
        r.in_range(x, n_subs, w, "subgraph")
        _, n_tensors = r.vec(r.nth(subs, x, w), 0, 4, 0, w)
        for io in (0, 1):
            maps, n = r.vec(d, io, 4, 0, w)
            for j in range(n):
                u = r.nth(maps, j, w)
                r.vec(u, 0, 1, 1, w)
                r.in_range(r.num(u, 1, 4, w), n_tensors, w, "tensor")


def verify_model(data: bytes, path: str = "model") -> None:
    """Raise ``TFLiteError`` (one line) unless ``data`` passes the C runner's check: the TFL3 identifier, the
    flatbuffer's bounds and indices, and the values LiteRT trusts."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TFLiteError(f"{path} is not a TFLite model (no TFL3 flatbuffer identifier)")
    r = _Reader(data, path)
    m = r.table(r.follow(0, "the root table"), "the root table")
    r.vec(m, 3, 1, 1, "the description")
    codes, n_codes = r.vec(m, 1, 4, 0, "the operator code list")
    for i in range(n_codes):
        r.vec(r.nth(codes, i, f"operator code {i}"), 1, 1, 1, f"operator code {i}")
    bufs, n_bufs = r.vec(m, 4, 4, 0, "the buffer list")
    for i in range(n_bufs):
        t = r.nth(bufs, i, f"buffer {i}")
        w = f"buffer {i}'s data"
        r.vec(t, 0, 1, 0, w)
        x = r.num(t, 1, 8, w)
        if x > 1:
            r.need(x, r.num(t, 2, 8, w), w)
    subs, n_subs = r.vec(m, 2, 4, 0, "the subgraph list")
    for s in range(n_subs):
        _check_subgraph(r, r.nth(subs, s, f"subgraph {s}"), s, codes, n_codes, bufs, n_bufs)
    meta, k = r.vec(m, 6, 4, 0, "the metadata list")
    for i in range(k):
        t = r.nth(meta, i, f"metadata {i}")
        r.vec(t, 0, 1, 1, f"metadata {i}")
        r.in_range(r.num(t, 1, 4, f"metadata {i}"), n_bufs, f"metadata {i}", "buffer")
    _indices(r, m, 5, n_bufs, "the metadata buffer list", "buffer", -1)
    _check_signatures(r, m, subs, n_subs)


def check_file(path: str | os.PathLike) -> bytes:
    """The bytes of the .tflite at ``path`` once they pass ``verify_model`` (a regular file only)."""
    from .files import read_regular

    data = read_regular(path, "model file")
    verify_model(data, str(path))
    return data
