"""The wire format: round trips, and every malformed message is a WireError, never a crash."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from splitter_runtime import wire
from splitter_runtime.errors import WireError

SPEC = [wire.TensorSpec("a", "float32", (None, 3)), wire.TensorSpec("b", "int8", (None,))]


def valid(batch: int = 2) -> list:
    return wire.encode(
        "data",
        "r1",
        {"a": np.ones((batch, 3), np.float32), "b": np.arange(batch, dtype=np.int8)},
    )


def test_round_trip_is_zero_copy_views_with_names_dtypes_shapes():
    frames = [bytes(f) if not isinstance(f, bytes) else f for f in valid(4)]
    msg = wire.decode(frames, expect=SPEC)
    assert msg.kind == "data" and msg.id == "r1"
    assert msg.tensors["a"].shape == (4, 3) and msg.tensors["a"].dtype == np.float32
    assert msg.tensors["b"].tolist() == [0, 1, 2, 3]
    assert not msg.tensors["a"].flags.writeable  # a view onto the frame, not a copy


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda f: [], "empty"),
        (lambda f: [b"not json", *f[1:]], "not JSON"),
        (lambda f: [b"[1, 2]", *f[1:]], "not a JSON object"),
        (lambda f: f[:-1], "buffer frames"),
        (lambda f: [*f, b"x"], "buffer frames"),
        (lambda f: [f[0], f[1], bytes(f[2])[:-1]], "needs"),
        (lambda f: [_hdr(f, v=2), *f[1:]], "version"),
        (lambda f: [_hdr(f, id="../etc"), *f[1:]], "id"),
        (lambda f: [_hdr(f, kind="exec"), *f[1:]], "kind"),
        (lambda f: [_hdr(f, dtype="object"), *f[1:]], "dtype"),
        (lambda f: [_hdr(f, dtype="float64"), *f[1:]], "needs"),
        (lambda f: [_hdr(f, shape=[2, -3]), *f[1:]], "shape"),
        (lambda f: [_hdr(f, shape=[2, 3, 1]), f[1], f[2]], "expected"),
        (lambda f: [_hdr(f, name="c"), *f[1:]], "missing"),
    ],
)
def test_malformed_messages_are_explicit_errors(mutate, needle):
    with pytest.raises(WireError) as err:
        wire.decode(mutate(valid()), expect=SPEC)
    assert needle in err.value.message


def _hdr(frames, **change) -> bytes:
    hdr = json.loads(frames[0])
    for key in ("v", "id", "kind"):
        if key in change:
            hdr[key] = change[key]
    for key in ("dtype", "shape", "name"):
        if key in change:
            hdr["tensors"][0][key] = change[key]
    return json.dumps(hdr).encode()


def test_errors_name_the_request_when_the_header_does():
    frames = valid()
    with pytest.raises(WireError) as err:
        wire.decode([frames[0], frames[1], b"short"], expect=SPEC)
    assert err.value.req_id == "r1"


def test_message_size_limit():
    with pytest.raises(WireError, match="exceeds"):
        wire.decode(valid(1000), expect=SPEC, max_bytes=1024)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@st.composite
def malformed(draw) -> list[bytes]:
    """A valid message with one or more parts damaged, or raw junk."""
    frames = [bytes(f) for f in valid(draw(st.integers(0, 3)))]
    choice = draw(st.integers(0, 4))
    if choice == 0:  # junk frames
        return draw(st.lists(st.binary(max_size=64), max_size=4))
    hdr = json.loads(frames[0])
    if choice == 1:  # replace one header field with any JSON value
        key = draw(st.sampled_from(["v", "id", "kind", "tensors", "error", "body"]))
        hdr[key] = draw(json_values)
    elif choice == 2 and hdr["tensors"]:  # damage one tensor spec
        t = draw(st.sampled_from(hdr["tensors"]))
        t[draw(st.sampled_from(["name", "dtype", "shape"]))] = draw(json_values)
    elif choice == 3:  # truncate or extend a buffer
        i = draw(st.integers(1, len(frames) - 1))
        frames[i] = frames[i][: draw(st.integers(0, len(frames[i])))] + draw(st.binary(max_size=9))
    else:  # drop or duplicate frames
        frames = draw(st.lists(st.sampled_from(frames), max_size=5))
        return frames
    return [json.dumps(hdr).encode(), *frames[1:]]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed())
def test_fuzzed_frames_never_crash_the_decoder(frames):
    try:
        msg = wire.decode(frames, expect=SPEC)
    except WireError as err:
        assert err.cause  # an explicit error, with a cause to log and reply
        return
    # Survivors must be fully valid: right names, dtypes, shapes and byte lengths.
    assert set(msg.tensors) == {"a", "b"} or msg.kind not in ("data", "infer", "result")


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(sorted(wire.DTYPES)),
    st.lists(st.integers(0, 4), max_size=4),
)
def test_every_allowed_dtype_round_trips(dtype, shape):
    arr = np.zeros(shape, dtype=dtype)
    msg = wire.decode([bytes(f) for f in wire.encode("data", "x", {"t": arr})])
    assert msg.tensors["t"].dtype == arr.dtype and msg.tensors["t"].shape == arr.shape


def test_the_runtime_never_pickles():
    src = Path(wire.__file__).parent
    for path in src.glob("*.py"):
        text = path.read_text()
        found = re.findall(r"import pickle|pickle\.[a-z]|_pyobj|allow_pickle", text)
        assert not found, f"{path} uses {found}"


def test_compiled_expectations_check_exactly_like_the_specs():
    compiled = wire.Expected(SPEC)
    frames = [bytes(f) for f in valid(3)]
    assert wire.decode(frames, expect=compiled).tensors.keys() == {"a", "b"}
    bad = [_hdr(frames, shape=[3, 3, 1]), *frames[1:]]
    for expect in (SPEC, compiled):
        with pytest.raises(WireError, match="expected"):
            wire.decode(bad, expect=expect)
    with pytest.raises(WireError, match="missing"):
        wire.check_tensors({"a": np.ones((1, 3), np.float32)}, compiled, "r")


# -- the hot path's memory: Decoder and tensor_header must say exactly what decode would --------
def _compact(hdr: dict) -> bytes:
    return json.dumps(hdr, separators=(",", ":")).encode()


def _outcome(fn, frames):
    try:
        msg = fn(frames)
    except WireError as err:
        return ("error", err.message, err.req_id)
    tensors = {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in msg.tensors.items()}
    return ("ok", msg.kind, msg.id, tensors, msg.error, msg.spec_key)


@st.composite
def canonical_variants(draw) -> list[bytes]:
    """Messages in our encoder's exact byte form, valid or damaged, with various ids."""
    frames = [bytes(f) for f in valid(draw(st.integers(1, 3)))]
    hdr = json.loads(frames[0])
    hdr["id"] = draw(st.from_regex(r"[A-Za-z0-9_.:-]{1,12}", fullmatch=True) | json_values)
    if draw(st.booleans()):
        key = draw(st.sampled_from(["v", "kind", "tensors", "timeout_ms"]))
        hdr[key] = draw(json_values)
    if draw(st.booleans()):
        i = draw(st.integers(1, len(frames) - 1))
        frames[i] = frames[i][: draw(st.integers(0, len(frames[i])))]
    return [_compact(hdr), *frames[1:]]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(canonical_variants(), min_size=1, max_size=6))
def test_decoder_agrees_with_decode_on_every_message(messages):
    decoder = wire.Decoder(expect=SPEC)
    decoder([bytes(f) for f in valid(2)])  # primed with a good header of the same shape
    for frames in messages:
        assert _outcome(decoder, frames) == _outcome(lambda f: wire.decode(f, expect=SPEC), frames)


def test_decoder_remembers_a_header_and_reads_each_new_id():
    decoder = wire.Decoder(expect=SPEC)
    for i in range(5):
        frames = [bytes(f) for f in wire.encode("data", f"req-{i}", valid_tensors())]
        msg = decoder(frames)
        assert msg.id == f"req-{i}" and msg.tensors["b"].tolist() == [0, 1]
    assert len(decoder._known) == 1  # one header, five ids: checked once


def test_decoder_never_remembers_a_header_whose_id_is_read_elsewhere():
    # A second "id" key later in the header is what JSON reads; the cut-out bytes are not it.
    frames = [bytes(f) for f in valid(2)]
    tricky = frames[0][:-1] + b',"id":"real"}'
    decoder = wire.Decoder(expect=SPEC)
    assert decoder([tricky, *frames[1:]]).id == "real"
    again = tricky.replace(b'"id":"r1"', b'"id":"r2"')
    assert decoder([again, *frames[1:]]).id == "real"
    assert not decoder._known


def valid_tensors(batch: int = 2) -> dict:
    return {"a": np.ones((batch, 3), np.float32), "b": np.arange(batch, dtype=np.int8)}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["data", "infer", "result"]),
    st.text(min_size=1, max_size=20),
    st.dictionaries(st.sampled_from(["timeout_ms", "x"]), st.integers(), max_size=2),
)
def test_tensor_header_is_the_header_bytes_would_give(kind, req_id, extra):
    key = (("a", "float32", (2, 3)), ("b", "int8", (2,)))
    specs = [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in key]
    got = wire.tensor_header(kind, req_id, key, **extra)
    assert json.loads(got) == json.loads(wire.header_bytes(kind, req_id, specs, **extra))
