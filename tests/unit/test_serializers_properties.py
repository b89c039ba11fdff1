"""Hypothesis properties of the serializers and the frame codec (RELIABILITY.md H2, H4).

* ``decode(encode(x)) == x`` over the JSON and msgpack domains, with and without zstd.
* The native packer msgpack's serializer tries first writes exactly msgpack's bytes,
  or declines (and the checked path decides), over values wider than the domain.
* Arbitrary bytes, and arbitrary bodies behind every valid header, give a value or a
  typed :class:`~typedq.errors.DeserializationError`, never another exception.

Examples per test are kept to a few hundred so the file runs in a few seconds; the
``slow`` tier can raise ``max_examples``.
"""

from __future__ import annotations

import contextlib
import enum
import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no type information shipped
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from typedq.errors import DeserializationError, PayloadTooLargeError
from typedq.serializers import SERIALIZER_NAMES, FrameCodec, _common, get_serializer
from typedq.serializers import msgpack as msgpack_module
from typedq.serializers.base import FRAME_MAGIC

KEY = b"p" * 32
FAST = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)

_offsets = st.integers(min_value=-(86_400 * 10**6) + 1, max_value=86_400 * 10**6 - 1).map(
    lambda us: timezone(timedelta(microseconds=us))
)
_aware = st.datetimes().flatmap(lambda naive: _offsets.map(lambda tz: naive.replace(tzinfo=tz)))
_msgpack_scalars = (
    _json_scalars
    | st.floats(allow_nan=False)
    | st.binary(max_size=64)
    | _aware
    | st.datetimes(timezones=st.just(UTC))
)
MSGPACK_VALUES = st.recursive(
    _msgpack_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


def _same(a: Any, b: Any) -> bool:
    """Equality that also requires aware datetimes to keep their UTC offset."""
    if isinstance(a, datetime):
        return isinstance(b, datetime) and a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


_JSON_CODECS = {name: get_serializer(name, min_size=0) for name in ("json", "json+zstd")}
_MSGPACK_CODECS = {name: get_serializer(name, min_size=0) for name in ("msgpack", "msgpack+zstd")}


@pytest.mark.parametrize("name", sorted(_JSON_CODECS))
@FAST
@given(value=JSON_VALUES)
def test_json_round_trip(name: str, value: Any) -> None:
    codec = _JSON_CODECS[name]
    assert _same(codec.decode(codec.encode(value)), value)


@pytest.mark.parametrize("name", sorted(_MSGPACK_CODECS))
@FAST
@given(value=MSGPACK_VALUES)
def test_msgpack_round_trip(name: str, value: Any) -> None:
    codec = _MSGPACK_CODECS[name]
    assert _same(codec.decode(codec.encode(value)), value)


class _Color(enum.IntEnum):
    RED = 1


class _Key(str):
    pass


@dataclass
class _Point:
    x: int


# Values a caller may hand the msgpack serializer: its domain, and types around it that
# the native packer must decline (or encode exactly as msgpack does).
_AROUND = st.sampled_from(
    [_Color.RED, Decimal("1.5"), uuid.UUID(int=7), date(2024, 1, 2), {1, 2}, _Point(1), 2**64, -(2**63) - 1]
)
_WIDER = st.recursive(
    _msgpack_scalars | _AROUND | st.text().map(_Key),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=6) | st.text(max_size=6).map(_Key), children, max_size=4)
        | st.dictionaries(st.text(max_size=6), children, max_size=4).map(OrderedDict)
        | st.dictionaries(st.integers() | st.binary(max_size=4) | st.none(), children, max_size=3)
    ),
    max_leaves=20,
)


@FAST
@given(value=_WIDER)
def test_native_packer_writes_msgpack_bytes_or_declines(value: Any) -> None:
    try:
        fast = msgpack_module._fast_pack(
            value, default=msgpack_module._decline, option=msgpack_module._FAST_OPTIONS
        )
    except TypeError:
        return  # declined: the checked path decides, as it always did
    assert fast == msgpack.packb(value, use_bin_type=True, datetime=False)


def test_common_values_skip_the_key_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """str keys, 64-bit ints, floats, lists and tuples: packed natively, no Python walk."""

    def walk(*args: Any) -> bool:
        raise AssertionError("the checked path ran for a value the native packer takes")

    monkeypatch.setattr(msgpack_module, "keys_look_fine", walk)
    value = {"id": "j1", "n": -(2**63), "u64": 2**64 - 1, "q": 0.5, "tags": ["a", ("b", None)], "m": {"k": 1}}
    codec = get_serializer("msgpack")
    assert codec.decode(codec.encode(value)) == {**value, "tags": ["a", ["b", None]]}


_FLAT = st.dictionaries(
    st.text(max_size=4),
    _msgpack_scalars
    | st.lists(_msgpack_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=3) | st.binary(max_size=2), _msgpack_scalars, max_size=3),
)


@FAST
@given(
    value=_WIDER | _FLAT,
    max_depth=st.integers(min_value=1, max_value=4),
    max_elements=st.integers(min_value=1, max_value=12),
    key_types=st.sampled_from([(str,), (str, bytes)]),
)
def test_the_key_check_answers_as_the_full_walk_does(
    value: Any, max_depth: int, max_elements: int, key_types: tuple[type, ...]
) -> None:
    """keys_look_fine answers flat payloads without walking them; the answer is the walk's."""
    assert _common.keys_look_fine(value, key_types, max_depth, max_elements) == _common._walk_keys(
        value, key_types, max_depth, max_elements
    )


_ALL_READER = FrameCodec("json", pickle_key=KEY)
_HEADERS = [
    bytes((FRAME_MAGIC, 1, tag, codec, flags)) for tag in (1, 2, 3) for codec in (0, 1, 2) for flags in (0, 1)
]


@FAST
@given(data=st.binary(max_size=200))
def test_random_bytes_give_value_or_typed_error(data: bytes) -> None:
    with contextlib.suppress(DeserializationError):
        _ALL_READER.decode(data)


@FAST
@given(header=st.sampled_from(_HEADERS), body=st.binary(max_size=200))
def test_random_bodies_behind_valid_headers(header: bytes, body: bytes) -> None:
    for reader in (_ALL_READER, FrameCodec("msgpack")):
        # A random zstd header may claim more than the limit: refused as too large.
        with contextlib.suppress(DeserializationError, PayloadTooLargeError):
            reader.decode(header + body)


@FAST
@given(
    name=st.sampled_from(SERIALIZER_NAMES),
    value=JSON_VALUES,
    data=st.data(),
)
def test_corrupted_frames_give_value_or_typed_error(name: str, value: Any, data: Any) -> None:
    codec = get_serializer(name, pickle_key=KEY if "pickle" in name else None, min_size=0)
    frame = bytearray(codec.encode(value))
    index = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    frame[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with contextlib.suppress(DeserializationError, PayloadTooLargeError):
        codec.decode(bytes(frame))
