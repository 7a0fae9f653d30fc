"""The wire format: a JSON header frame, then one raw buffer per tensor. Never pickle.

Header: ``{"v": 1, "kind": ..., "id": ..., "tensors": [{"name", "dtype", "shape"}, ...]}``
plus, by kind, ``error`` ({"cause", "fix", "stage"}) or ``body`` (status/info JSON). Buffers are
sent and received zero-copy (numpy views onto ZeroMQ frames). Everything a peer sends is
checked before a byte of it is interpreted: frame count, dtype allowlist, shape, byte length,
total size, and (when the receiver knows them) the tensor names/dtypes/shapes it expects.

Steady traffic repeats the same header but for the request id, so the hot path validates a
header once: :class:`Decoder` remembers headers it has fully checked (keyed by their bytes with
the id cut out) and :func:`tensor_header` splices ids into cached header templates. Anything
not byte-for-byte a remembered header takes the full check, and gets its exact error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from splitter_runtime.errors import WireError

VERSION = 1
#: Kinds of message. Data plane: data/error. Client <-> gateway: infer/result/error plus
#: status/info queries and their replies.
KINDS = frozenset({"data", "error", "infer", "result", "status", "info"})
#: Only plain little-endian numeric dtypes: never object, never structured, never strings.
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name).newbyteorder("<")
    for name in (
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
    )
}
#: dtype -> wire name; ``dtype.name`` costs microseconds per call in numpy 2, this a dict hit.
_WIRE_NAME: dict[np.dtype, str] = {}
for _n, _dt in DTYPES.items():
    _WIRE_NAME[_dt] = _WIRE_NAME[_dt.newbyteorder("=")] = _n
MAX_HEADER_BYTES = 64 * 1024
MAX_TENSORS = 256
MAX_DIMS = 8
MAX_DIM = 2**31 - 1
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,200}$")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_ID_BYTES = re.compile(rb"[A-Za-z0-9_.:-]{1,128}")  # fullmatch: no quote, no backslash
#: How our encoder starts every header; only headers in this form are remembered.
_CANONICAL_START = b'{"v":1,"kind":"'
_ID_KEY = b'","id":"'
CACHE_LIMIT = 64  # remembered headers / templates per cache; cleared when full
_TENSOR_KINDS = frozenset({"data", "infer", "result"})
#: ((name, wire dtype, shape), ...): a message's tensors, hashable (template and cache key).
SpecKey = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class TensorSpec:
    """What a stage expects for one tensor; ``None`` in the shape means any size (the batch)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), str(d["dtype"]), tuple(d["shape"]))


@dataclass(slots=True)
class Message:
    """A decoded message: tensors are read-only numpy views onto the received frames.

    ``header`` is the parsed header; for a remembered header it is shared and has no "id"
    (use ``id``). ``spec_key`` names the tensors for :func:`tensor_header`.
    """

    kind: str
    id: str
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    error: dict[str, str] | None = None
    body: Any = None
    header: dict[str, Any] = field(default_factory=dict)
    frames: list[Any] = field(default_factory=list)  # the raw tensor frames, for forwarding
    spec_key: SpecKey = ()


def _buffer(frame: Any) -> memoryview:
    if isinstance(frame, zmq.Frame):
        return frame.buffer
    return memoryview(frame)


def header_bytes(
    kind: str,
    req_id: str,
    specs: Sequence[Mapping[str, Any]] = (),
    *,
    error: Mapping[str, str] | None = None,
    body: Any = None,
    **extra: Any,
) -> bytes:
    """Serialise one header (used directly when forwarding frames without re-encoding them)."""
    hdr: dict[str, Any] = {"v": VERSION, "kind": kind, "id": req_id, "tensors": list(specs)}
    if error is not None:
        hdr["error"] = dict(error)
    if body is not None:
        hdr["body"] = body
    hdr.update(extra)
    return json.dumps(hdr, separators=(",", ":")).encode()


def encode(
    kind: str,
    req_id: str,
    tensors: Mapping[str, np.ndarray] | None = None,
    *,
    error: Mapping[str, str] | None = None,
    body: Any = None,
    **extra: Any,
) -> list[Any]:
    """Frames for ``send_multipart(frames, copy=False)``: the header, then one buffer per tensor."""
    key: list[tuple[str, str, tuple[int, ...]]] = []
    bufs: list[Any] = []
    for name, value in (tensors or {}).items():
        arr = np.asarray(value)
        dtype = _WIRE_NAME.get(arr.dtype)
        if dtype is None:
            if arr.dtype.byteorder == ">" and arr.dtype.name in DTYPES:
                dtype = arr.dtype.name
                arr = arr.astype(DTYPES[dtype])
            else:
                raise WireError(
                    f"tensor {name!r} has dtype {arr.dtype}, which the wire does not carry",
                    f"cast it to one of {sorted(DTYPES)}",
                )
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)  # (keeps 0-d arrays 0-d only when skipped)
        key.append((name, dtype, arr.shape))
        bufs.append(arr.reshape(-1).view(np.uint8) if arr.ndim else arr.reshape(1).view(np.uint8))
    if error is None and body is None:
        return [tensor_header(kind, req_id, tuple(key), **extra), *bufs]
    specs = _spec_dicts(key)
    return [header_bytes(kind, req_id, specs, error=error, body=body, **extra), *bufs]


def _spec_dicts(spec_key: Sequence[tuple[str, str, tuple[int, ...]]]) -> list[dict[str, Any]]:
    return [{"name": n, "dtype": d, "shape": list(shape)} for n, d, shape in spec_key]


_TEMPLATES: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}


def tensor_header(kind: str, req_id: str, spec_key: SpecKey, **extra: Any) -> bytes:
    """The header ``header_bytes`` would give for these tensors, from a cached template.

    ``extra`` values must be hashable (ints, strings). An id that JSON would have to escape
    never reaches a template (it gets ``header_bytes``, whose JSON is always valid).
    """
    if not _ID.fullmatch(req_id):
        return header_bytes(kind, req_id, _spec_dicts(spec_key), **extra)
    cache_key = (kind, spec_key, tuple(extra.items()))
    template = _TEMPLATES.get(cache_key)
    if template is None:
        whole = header_bytes(kind, "@", _spec_dicts(spec_key), **extra)
        cut = whole.index(_ID_KEY + b'@"') + len(_ID_KEY)
        if len(_TEMPLATES) >= CACHE_LIMIT:
            _TEMPLATES.clear()
        template = _TEMPLATES[cache_key] = (whole[:cut], whole[cut + 1 :])
    return template[0] + req_id.encode() + template[1]


def error_frames(
    req_id: str, stage: str, cause: str, fix: str = "", retryable: bool = False
) -> list[bytes]:
    """An error message for ``req_id``: travels down the pipeline to the gateway and client.

    ``retryable``: the request itself was fine and the same request may succeed once the
    pipeline serves again (a stage died or stopped, the pipeline was not up); sent as
    ``"retryable": "yes"`` (error values are strings)."""
    error = {"stage": stage, "cause": cause, "fix": fix}
    if retryable:
        error["retryable"] = "yes"
    return [header_bytes("error", req_id, error=error)]


def is_retryable(error: Mapping[str, str] | None) -> bool:
    """Whether a received error object says the same request may succeed later."""
    return bool(error) and error.get("retryable") == "yes"


def forward_error(req_id: str, error: Mapping[str, str] | None) -> list[bytes]:
    """A received error passed on under ``req_id`` unchanged (stage, cause, fix, retryable)."""
    error = error or {}
    return error_frames(
        req_id,
        str(error.get("stage", "")),
        str(error.get("cause", "")),
        str(error.get("fix", "")),
        is_retryable(error),
    )


def peek_id(frames: Sequence[Any]) -> str | None:
    """Best effort: the request id of a message that failed to decode (to address the error)."""
    try:
        hdr = json.loads(bytes(_buffer(frames[0])[:MAX_HEADER_BYTES]))
        rid = hdr.get("id") if isinstance(hdr, dict) else None
        return rid if isinstance(rid, str) and _ID.fullmatch(rid) else None
    except Exception:
        return None


def _fail(cause: str, fix: str, req_id: str | None) -> WireError:
    return WireError(cause, fix, req_id=req_id)


def _check_shape(shape: Any, where: str, rid: str | None) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise _fail(
            f"{where}: shape must be a list of at most {MAX_DIMS} ints", "fix the sender", rid
        )
    for d in shape:
        if type(d) is not int or d < 0 or d > MAX_DIM:
            raise _fail(
                f"{where}: shape entry {d!r} is not an int in [0, 2^31)", "fix the sender", rid
            )
    return tuple(shape)


def decode(
    frames: Sequence[Any],
    *,
    expect: Sequence[TensorSpec] | Expected | None = None,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    kinds: frozenset[str] = KINDS,
) -> Message:
    """Check and decode one multipart message; raise :class:`WireError` on anything unexpected.

    ``expect``: the exact tensors the receiver takes (names, dtypes, shapes with ``None`` for
    any size); all tensors must then share the same batch (first) dimension.
    """
    if not frames:
        raise _fail("empty message", "send a header frame first", None)
    raw = _buffer(frames[0])
    if len(raw) > MAX_HEADER_BYTES:
        raise _fail(
            f"header is {len(raw)} bytes (limit {MAX_HEADER_BYTES})", "fix the sender", None
        )
    try:
        hdr = json.loads(bytes(raw))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail("header is not JSON", "send a JSON header as the first frame", None) from None
    if not isinstance(hdr, dict):
        raise _fail("header is not a JSON object", "send {'v': 1, 'kind': ..., 'id': ...}", None)
    rid = hdr.get("id")
    if not isinstance(rid, str) or not _ID.fullmatch(rid):
        raise _fail(f"header id {rid!r} is not 1-128 chars of [A-Za-z0-9_.:-]", "fix the id", None)
    if hdr.get("v") != VERSION:
        raise _fail(f"wire version {hdr.get('v')!r}, expected {VERSION}", "upgrade the peer", rid)
    kind = hdr.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise _fail(f"message kind {kind!r} not accepted here", f"send one of {sorted(kinds)}", rid)
    specs = hdr.get("tensors", [])
    if not isinstance(specs, list) or len(specs) > MAX_TENSORS:
        raise _fail(f"'tensors' must be a list of at most {MAX_TENSORS}", "fix the sender", rid)
    if len(frames) != len(specs) + 1:
        raise _fail(
            f"header lists {len(specs)} tensors but {len(frames) - 1} buffer frames followed",
            "send exactly one frame per tensor",
            rid,
        )
    total = len(raw)
    tensors: dict[str, np.ndarray] = {}
    key: list[tuple[str, str, tuple[int, ...]]] = []
    for i, (spec, frame) in enumerate(zip(specs, frames[1:], strict=True)):
        if not isinstance(spec, dict):
            raise _fail(f"tensor {i}: spec is not an object", "fix the sender", rid)
        name, dtype = spec.get("name"), spec.get("dtype")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in tensors:
            raise _fail(f"tensor {i}: bad or repeated name {name!r}", "fix the sender", rid)
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise _fail(
                f"tensor {name}: dtype {dtype!r} not allowed", f"use one of {sorted(DTYPES)}", rid
            )
        shape = _check_shape(spec.get("shape"), f"tensor {name}", rid)
        dt = DTYPES[dtype]
        nbytes = math.prod(shape) * dt.itemsize
        buf = _buffer(frame)
        total += len(buf)
        if total > max_bytes:
            raise _fail(f"message exceeds {max_bytes} bytes", "send smaller batches", rid)
        if len(buf) != nbytes:
            raise _fail(
                f"tensor {name}: frame has {len(buf)} bytes, header shape {list(shape)} "
                f"× {dtype} needs {nbytes}",
                "send the buffer the header describes",
                rid,
            )
        tensors[name] = np.frombuffer(buf, dtype=dt).reshape(shape)
        key.append((name, dtype, shape))
    error = hdr.get("error")
    if kind == "error" and (
        not isinstance(error, dict) or not all(isinstance(v, str) for v in error.values())
    ):
        raise _fail("error message without an 'error' object of strings", "fix the sender", rid)
    if expect is not None and kind in ("data", "infer", "result"):
        check_tensors(tensors, expect, rid)
    return Message(
        kind=kind,
        id=rid,
        tensors=tensors,
        error=error if kind == "error" else None,
        body=hdr.get("body"),
        header=hdr,
        frames=list(frames[1:]),
        spec_key=tuple(key),
    )


@dataclass(frozen=True, slots=True)
class _Known:
    """What the full check concluded about one header, for every id it may carry."""

    kind: str
    header: dict[str, Any]  # parsed, without "id"
    spec_key: SpecKey
    layout: tuple[tuple[str, np.dtype, tuple[int, ...], int], ...]  # name, dtype, shape, bytes
    payload: int


def _split_id(raw: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(before id, id, after id) for a header in our canonical form, else None."""
    if not raw.startswith(_CANONICAL_START):
        return None
    at = raw.find(_ID_KEY, len(_CANONICAL_START))
    if at < 0:
        return None
    start = at + len(_ID_KEY)
    end = raw.find(b'"', start)
    return (raw[:start], raw[start:end], raw[end:]) if end > 0 else None


class Decoder:
    """:func:`decode` with fixed expectations that checks each distinct header only once.

    A header is remembered after it passed the full check, keyed by its bytes without the id.
    A later message hits only if its header is those same bytes around an id of plain id
    characters (so JSON reads it the same but for the id) and its frames have the remembered
    count and lengths; anything else takes the full :func:`decode`, errors included.
    """

    def __init__(
        self,
        *,
        expect: Sequence[TensorSpec] | Expected | None = None,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        kinds: frozenset[str] = KINDS,
    ) -> None:
        self.expect = _expected(expect) if expect is not None else None
        self.max_bytes = max_bytes
        self.kinds = kinds
        self._known: dict[tuple[bytes, bytes], _Known] = {}

    def __call__(self, frames: Sequence[Any]) -> Message:
        first = frames[0] if frames else None
        raw = first.bytes if isinstance(first, zmq.Frame) else bytes(first or b"")
        parts = _split_id(raw) if len(raw) <= MAX_HEADER_BYTES else None
        if parts is not None:
            known = self._known.get((parts[0], parts[2]))
            if known is not None and _ID_BYTES.fullmatch(parts[1]):
                msg = self._from_known(known, parts[1], len(raw), frames)
                if msg is not None:
                    return msg
        msg = decode(frames, expect=self.expect, max_bytes=self.max_bytes, kinds=self.kinds)
        if parts is not None and msg.kind in _TENSOR_KINDS:
            self._remember(raw, parts, msg)
        return msg

    def _from_known(
        self, known: _Known, rid: bytes, header_len: int, frames: Sequence[Any]
    ) -> Message | None:
        if len(frames) != len(known.layout) + 1 or header_len + known.payload > self.max_bytes:
            return None
        tensors: dict[str, np.ndarray] = {}
        for (name, dt, shape, nbytes), frame in zip(known.layout, frames[1:], strict=True):
            buf = _buffer(frame)
            if len(buf) != nbytes:
                return None  # the full check names what is wrong
            tensors[name] = np.frombuffer(buf, dtype=dt).reshape(shape)
        return Message(
            kind=known.kind,
            id=rid.decode(),
            tensors=tensors,
            header=known.header,
            frames=list(frames[1:]),
            spec_key=known.spec_key,
        )

    def _remember(self, raw: bytes, parts: tuple[bytes, bytes, bytes], msg: Message) -> None:
        # Only when the cut-out bytes are the id JSON reads, whatever id stands there.
        if parts[1].decode(errors="replace") != msg.id:
            return
        try:
            probe = json.loads(parts[0] + b"probe" + parts[2])
        except ValueError:
            return
        if not isinstance(probe, dict) or probe.get("id") != "probe":
            return
        layout = tuple(
            (name, DTYPES[d], shape, math.prod(shape) * DTYPES[d].itemsize)
            for name, d, shape in msg.spec_key
        )
        header = {k: v for k, v in msg.header.items() if k != "id"}
        if len(self._known) >= CACHE_LIMIT:
            self._known.clear()
        self._known[parts[0], parts[2]] = _Known(
            msg.kind, header, msg.spec_key, layout, sum(n for *_, n in layout)
        )


class Expected:
    """Tensor specs compiled once for the per-message check (a receiver's expected inputs)."""

    __slots__ = ("names", "specs", "tails", "want")

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self.specs = tuple(specs)
        self.want = {s.name: (s.dtype, tuple(s.shape), len(s.shape)) for s in self.specs}
        self.names = self.want.keys()
        # Where only the batch (first) dimension is free, the rest compares as one tuple.
        self.tails = {
            s.name: tuple(s.shape[1:])
            for s in self.specs
            if s.shape and s.shape[0] is None and None not in tuple(s.shape[1:])
        }


def _expected(expect: Sequence[TensorSpec] | Expected) -> Expected:
    return expect if isinstance(expect, Expected) else Expected(expect)


def check_tensors(
    tensors: Mapping[str, np.ndarray],
    expect: Sequence[TensorSpec] | Expected,
    rid: str | None,
) -> None:
    """The tensors are exactly the expected ones, with matching dtypes, shapes and one batch."""
    exp = _expected(expect)
    want = exp.want
    if tensors.keys() != exp.names:
        missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
        raise _fail(
            f"tensors do not match the stage's inputs (missing {missing}, unexpected {extra})",
            f"send exactly {sorted(want)}",
            rid,
        )
    batch: int | None = None
    for name, arr in tensors.items():
        dtype, shape, ndim = want[name]
        if _WIRE_NAME.get(arr.dtype) != dtype:
            raise _fail(
                f"tensor {name}: dtype {arr.dtype}, expected {dtype}",
                f"cast with .astype('{dtype}')",
                rid,
            )
        got = arr.shape
        tail = exp.tails.get(name)
        if tail is not None and len(got) == ndim and got[1:] == tail:
            pass  # the common case, checked in one comparison
        elif len(got) != ndim or not all(
            w is None or w == d for w, d in zip(shape, got, strict=False)
        ):
            raise _fail(
                f"tensor {name}: shape {list(got)}, expected {list(shape)} (null = any size)",
                "reshape the input (the first dimension is the batch)",
                rid,
            )
        if ndim:
            if batch is not None and got[0] != batch:
                raise _fail("tensors disagree on the batch size", "send one batch size", rid)
            batch = got[0]
