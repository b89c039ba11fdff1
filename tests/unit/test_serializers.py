"""Serializers and the frame codec: names, round trips, domains, limits, frame format.

Security properties (pickle, signing, bombs, hostile structure) are in
``test_serializers_security.py``; Hypothesis properties in
``test_serializers_properties.py``.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import threading
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no type information shipped
import pytest
import zstandard

import typedq.serializers as ser
from typedq.errors import (
    ConfigError,
    DeserializationError,
    PayloadTooLargeError,
    SerializationError,
    UnknownCodecError,
)
from typedq.serializers import (
    MAX_HEADER_SIZE,
    SERIALIZER_NAMES,
    Compressed,
    FrameCodec,
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
    get_serializer,
    make_serializer,
    read_frame_header,
)
from typedq.serializers.base import CODEC_NONE, CODEC_ZSTD, CODEC_ZSTD_DICT, FRAME_MAGIC

KEY = b"k" * 32
TYPICAL: dict[str, Any] = {
    "id": "job_01HZX3K9Q2",
    "user_id": 123456,
    "quality": 0.85,
    "formats": ["webp", "jpeg", "avif"],
    "notify": True,
    "trace": None,
    "meta": {"source": "api", "nested": [1, [2, [3, {"deep": "ok"}]]]},
    "text": "héllo wörld — ✓ 😀 \x00 nul",
}
LARGE: dict[str, Any] = {"lines": [f"line {i % 7} of a very repetitive log" for i in range(2000)]}


def codec(name: str, **kwargs: Any) -> FrameCodec:
    if name.startswith("pickle"):
        kwargs.setdefault("pickle_key", KEY)
    return get_serializer(name, **kwargs)


# -- names and the public surface ---------------------------------------------------


def test_all_is_sorted_and_exported() -> None:
    # isort-style order, as ruff's RUF022 and typedq.job use: CONSTANTS, Classes, functions.
    def group(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert ser.__all__ == sorted(ser.__all__, key=group)
    for name in ser.__all__:
        assert hasattr(ser, name)


@pytest.mark.parametrize("name", SERIALIZER_NAMES)
def test_get_serializer_by_name(name: str) -> None:
    c = codec(name)
    assert isinstance(c, FrameCodec)
    assert c.name == name
    assert isinstance(c, Serializer)
    assert isinstance(c.serializer, Serializer)
    assert c.loads(c.dumps(TYPICAL)) == TYPICAL


def test_unknown_name_lists_known_names_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        get_serializer("msgpak")
    err = info.value
    assert err.field == "serializer"
    assert err.value == "msgpak"
    message = str(err)
    assert "serializer='msgpak'" in message
    assert "did you mean 'msgpack'?" in message
    for name in SERIALIZER_NAMES:
        assert name in message


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(ConfigError, match=r"serializer=.*known: json") as info:
        FrameCodec("yaml-ish-thing")
    assert "did you mean" not in str(info.value)


def test_third_party_serializer_refused_by_codec() -> None:
    class Custom:
        name = "custom"

        def dumps(self, obj: Any) -> bytes:
            return b""

        def loads(self, data: bytes) -> Any:
            return None

    assert isinstance(Custom(), Serializer)
    with pytest.raises(ConfigError, match="serializer='custom'"):
        FrameCodec(Custom())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_size": 0}, "max_size"),
        ({"max_size": True}, "max_size"),
        ({"max_depth": 0}, "max_depth"),
    ],
)
def test_bad_limits_are_config_errors(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}=") as info:
        FrameCodec("json", **kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"level": 23}, "level"), ({"level": "3"}, "level"), ({"min_size": -1}, "min_size")],
)
def test_bad_zstd_options(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}=") as info:
        get_serializer("json+zstd", **kwargs)
    assert info.value.field == field


def test_compressed_refuses_nesting_and_raw_dictionaries() -> None:
    with pytest.raises(ConfigError, match="serializer="):
        Compressed(Compressed(JSONSerializer()))
    raw = zstandard.ZstdCompressionDict(b"raw content" * 10, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    with pytest.raises(ConfigError, match="dictionary="):
        Compressed(JSONSerializer(), dictionary=raw)


def test_reprs_are_informative() -> None:
    assert repr(codec("msgpack+zstd")).startswith("FrameCodec('msgpack+zstd', max_size=1048576")
    assert "pickle=disabled" in repr(codec("json"))
    assert repr(Compressed(MsgpackSerializer())).startswith("Compressed(MsgpackSerializer(")


# -- round trips ---------------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


class Kind(enum.StrEnum):
    A = "a"


class Plain(enum.Enum):
    X = 1


JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(2**200),
    10**4000,
    1.5,
    -0.0,
    1e308,
    5e-324,
    "",
    "x" * 10_000,
    "émoji 😀 and NUL \x00 and \u2028",
    [],
    {},
    [1, "a", None, [2.5, {"k": []}]],
    {"a": {"b": {"c": [1, 2, 3]}}, "": "empty key", "with space": 1},
    TYPICAL,
    LARGE,
]


@pytest.mark.parametrize("name", ["json", "json+zstd"])
@pytest.mark.parametrize("value", JSON_VALUES, ids=lambda v: type(v).__name__)
def test_json_round_trip(name: str, value: Any) -> None:
    c = codec(name, min_size=0)
    assert c.decode(c.encode(value)) == value


def test_json_tuples_and_subclasses_come_back_as_base_types() -> None:
    c = codec("json")
    out = c.decode(c.encode({"t": (1, 2), "e": Color.RED, Kind.A: Kind.A}))
    assert out == {"t": [1, 2], "e": 1, "a": "a"}
    assert type(out["t"]) is list
    assert type(out["e"]) is int


MSGPACK_VALUES: list[Any] = [
    *JSON_VALUES,
    b"",
    b"\x00\xff" * 1000,
    {"bin": b"x", b"bytes-key": 1},
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    2**1000,
    float("inf"),
    float("-inf"),
    datetime(2024, 1, 1, 12, 30, 15, 123456, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-12))),
    {"when": [datetime(2024, 3, 31, 2, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))]},
]


@pytest.mark.parametrize("name", ["msgpack", "msgpack+zstd"])
@pytest.mark.parametrize("value", MSGPACK_VALUES, ids=lambda v: type(v).__name__)
def test_msgpack_round_trip(name: str, value: Any) -> None:
    c = codec(name, min_size=0)
    assert c.decode(c.encode(value)) == value


@pytest.mark.parametrize(
    "offset",
    [
        timedelta(0),
        timedelta(hours=5, minutes=30),
        timedelta(hours=-9, minutes=-30),
        timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
        timedelta(seconds=-1, microseconds=1),
    ],
)
def test_msgpack_datetime_keeps_value_and_offset(offset: timedelta) -> None:
    c = codec("msgpack")
    when = datetime(2024, 10, 27, 1, 30, 0, 42, tzinfo=timezone(offset))
    out = c.decode(c.encode(when))
    assert out == when
    assert out.utcoffset() == when.utcoffset()
    assert out.replace(tzinfo=None) == when.replace(tzinfo=None)


def test_msgpack_zoneinfo_keeps_offset_not_zone() -> None:
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        paris = zoneinfo.ZoneInfo("Europe/Paris")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no tz database")
    c = codec("msgpack")
    for fold in (0, 1):  # the ambiguous hour at the end of DST
        when = datetime(2024, 10, 27, 2, 30, fold=fold, tzinfo=paris)
        out = c.decode(c.encode(when))
        # Ambiguous local times never compare equal across zones (PEP 495): compare
        # the instant and the offset.
        assert out.astimezone(UTC) == when.astimezone(UTC)
        assert out.utcoffset() == when.utcoffset()


def test_msgpack_tuples_and_bytearrays() -> None:
    c = codec("msgpack")
    out = c.decode(c.encode({"t": (1, (2, 3)), "b": bytearray(b"ab"), "m": memoryview(b"cd")}))
    assert out == {"t": [1, [2, 3]], "b": b"ab", "m": b"cd"}


def test_msgpack_nan() -> None:
    c = codec("msgpack")
    assert math.isnan(c.decode(c.encode(float("nan"))))


def test_msgpack_reads_foreign_timestamp_ext_as_utc() -> None:
    packed = msgpack.packb(datetime(2024, 1, 1, tzinfo=UTC), datetime=True)
    assert MsgpackSerializer().loads(packed) == datetime(2024, 1, 1, tzinfo=UTC)


PICKLE_VALUES: list[Any] = [
    *MSGPACK_VALUES,
    {1, 2},
    (1, (2,)),
    Decimal("1.10"),
    datetime(2024, 1, 1),
    {1: "int key", (1, 2): "tuple key"},
]


@pytest.mark.parametrize("name", ["pickle", "pickle+zstd"])
@pytest.mark.parametrize("value", PICKLE_VALUES, ids=lambda v: type(v).__name__)
def test_pickle_round_trip(name: str, value: Any) -> None:
    c = codec(name, min_size=0)
    out = c.decode(c.encode(value))
    assert out == value
    assert type(out) is type(value)


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_bare_serializers_round_trip(name: str) -> None:
    bare = make_serializer(name)
    assert bare.loads(bare.dumps(TYPICAL)) == TYPICAL
    packed = Compressed(bare, min_size=0)
    assert packed.name == f"{name}+zstd"
    assert packed.dumps(LARGE)[:4] == b"\x28\xb5\x2f\xfd"
    assert packed.loads(packed.dumps(LARGE)) == LARGE
    assert packed.loads(packed.dumps(1)) == 1  # too small to compress: stays plain


# -- out-of-domain values: typed errors naming the path ---------------------------


def _encode_error(name: str, value: Any) -> SerializationError:
    with pytest.raises(SerializationError) as info:
        codec(name).encode(value)
    assert type(info.value) is SerializationError
    return info.value


@pytest.mark.parametrize("name", ["json", "json+zstd"])
@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ({"items": [0, 1, 2, {"when": datetime(2024, 1, 1)}]}, "$.items[3].when", "ISO 8601"),
        ({"when": datetime(2024, 1, 1, tzinfo=UTC)}, "$.when", "datetime"),
        ({"d": date(2024, 1, 1)}, "$.d", "date"),
        ({"meta": {1: "x"}}, "$.meta", "mapping key 1 (int) is not a str"),
        ({"meta": {None: "x"}}, "$.meta", "mapping key None"),
        ({"meta": {1.5: "x"}}, "$.meta", "mapping key 1.5"),
        ({"tags": {"a", "b"}}, "$.tags", "set"),
        ({"blob": b"\x00"}, "$.blob", "bytes"),
        ({"price": Decimal("1.10")}, "$.price", "Decimal"),
        ({"x": [float("nan")]}, "$.x[0]", "NaN"),
        ({"x": float("inf")}, "$.x", "infinity"),
        ({"x": -float("inf")}, "$.x", "infinity"),
        ({"s": "ok \ud800 bad"}, "$.s", "lone surrogate"),
        ({"\udfff": 1}, "$", "lone surrogate"),
        ({"a b": {"c-d": [object()]}}, '$["a b"]["c-d"][0]', "object"),
        ({"n": 10**5000}, "$.n", "too large"),
        ([1, [2, [3, {4, 5}]]], "$[1][1][1]", "set"),
        ({"e": Plain.X}, "$.e", "not supported by JSON"),
    ],
)
def test_json_out_of_domain(name: str, value: Any, path: str, words: str) -> None:
    err = _encode_error(name, value)
    assert err.path == path
    assert str(err).startswith(f"{path}: ")
    assert words in str(err)


@pytest.mark.parametrize("name", ["msgpack", "msgpack+zstd"])
@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ({"items": [0, 1, 2, {"when": datetime(2024, 1, 1)}]}, "$.items[3].when", "naive"),
        ({"d": date(2024, 1, 1)}, "$.d", "date"),
        ({"meta": {1: "x"}}, "$.meta", "mapping key 1 (int) is not a str or bytes"),
        ({"meta": {(1, 2): "x"}}, "$.meta", "mapping key (1, 2)"),
        ({"tags": frozenset({1})}, "$.tags", "frozenset"),
        ({"price": Decimal("1.10")}, "$.price", "Decimal"),
        ({"s": ["\ud800"]}, "$.s[0]", "lone surrogate"),
        ({"x": [1, 2, object()]}, "$.x[2]", "object"),
    ],
)
def test_msgpack_out_of_domain(name: str, value: Any, path: str, words: str) -> None:
    err = _encode_error(name, value)
    assert err.path == path
    assert str(err).startswith(f"{path}: ")
    assert words in str(err)


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_cycles_are_refused(name: str) -> None:
    loop: dict[str, Any] = {"a": [1]}
    loop["a"].append(loop)
    err = _encode_error(name, loop)
    assert "circular reference" in str(err)
    assert err.path == "$.a[1]"


def test_json_depth_limit_on_encode() -> None:
    c = codec("json")
    ok: Any = 1
    for _ in range(200):
        ok = [ok]
    assert c.decode(c.encode(ok)) == ok
    err = _encode_error("json", [ok])
    assert "deeper than 200 levels" in str(err)


def test_json_deep_python_value_gives_typed_error_not_recursion_error() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    err = _encode_error("json", deep)
    assert "deeper than 200" in str(err)


def test_msgpack_depth_limit_on_encode() -> None:
    deep: Any = []
    for _ in range(600):
        deep = [deep]
    err = _encode_error("msgpack", deep)
    assert "deeper than 511 levels" in str(err)
    assert err.path == "$" + "[0]" * 10 + "...(491 levels)..." + "[0]" * 10
    assert len(str(err)) < 200


def test_json_allow_nan_option() -> None:
    loose = FrameCodec(JSONSerializer(allow_nan=True))
    assert loose.decode(loose.encode(float("inf"))) == float("inf")
    # A strict reader refuses the NaN/Infinity tokens such a writer produces.
    with pytest.raises(DeserializationError, match="Infinity"):
        codec("json").decode(loose.encode(float("inf")))


def test_pickle_unpicklable_value() -> None:
    err = _encode_error("pickle", {"f": lambda: 1})
    assert err.path == "$"
    assert "cannot pickle" in str(err)


def test_str_subclass_keys_are_fine() -> None:
    c = codec("json")
    assert c.decode(c.encode({Kind.A: 1})) == {"a": 1}


# -- decoding bad JSON and msgpack ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'{"a": 1} x', "extra data"),
        (b"\xff\xfe", "UTF-8"),
        (b"", "invalid JSON"),
        (b"[1,", "invalid JSON"),
        (b"NaN", "NaN"),
        (b"1" * 5000, "invalid JSON"),
    ],
)
def test_json_loads_errors(data: bytes, words: str) -> None:
    with pytest.raises(DeserializationError, match=words):
        JSONSerializer().loads(data)


def test_json_loads_accepts_surrounding_whitespace() -> None:
    assert JSONSerializer().loads(b' \n{"a": [1, 2]} \t') == {"a": [1, 2]}


def test_json_depth_ignores_brackets_in_strings() -> None:
    value = {"s": "[{" * 5000}
    c = codec("json")
    assert c.decode(c.encode(value)) == value


def test_json_depth_limit_on_decode() -> None:
    j = JSONSerializer(max_depth=3)
    assert j.loads(b"[[[1]]]") == [[[1]]]
    with pytest.raises(DeserializationError, match="4 levels deep, over the limit of 3"):
        j.loads(b"[[[[1]]]]")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (msgpack.packb({1: 2}), "not allowed for map key"),
        (msgpack.packb([1, 2])[:-1], "invalid msgpack"),
        (msgpack.packb(1) + b"\x01", "invalid msgpack"),
        (msgpack.packb(msgpack.ExtType(99, b"x")), "unknown msgpack ext type 99"),
        (msgpack.packb(msgpack.ExtType(1, b"short")), "datetime ext has 5 bytes"),
        (msgpack.packb(msgpack.ExtType(2, b"")), "big-int ext is empty"),
        (b"\xa3\xff\xfe\xfd", "invalid msgpack"),
    ],
)
def test_msgpack_loads_errors(data: bytes, words: str) -> None:
    with pytest.raises(DeserializationError, match=words):
        MsgpackSerializer().loads(data)


def test_msgpack_bad_datetime_fields() -> None:
    import struct

    bad_offset = struct.pack(">qIq", 0, 0, 86_400_000_000)
    bad_micro = struct.pack(">qIq", 0, 1_000_000, 0)
    huge = struct.pack(">qIq", 2**62, 0, 0)
    for ext in (bad_offset, bad_micro, huge):
        with pytest.raises(DeserializationError, match="datetime ext"):
            MsgpackSerializer().loads(msgpack.packb(msgpack.ExtType(1, ext)))


def test_pickle_loads_error() -> None:
    with pytest.raises(DeserializationError, match="invalid pickle"):
        PickleSerializer().loads(b"not a pickle")


# -- the frame -----------------------------------------------------------------------


def test_frame_header_layout() -> None:
    frame = codec("msgpack").encode({"a": 1})
    assert frame[:5] == bytes((FRAME_MAGIC, 1, 2, CODEC_NONE, 0))
    assert frame[5:] == MsgpackSerializer().dumps({"a": 1})
    header = read_frame_header(frame)
    assert header == ser.FrameHeader("msgpack", "none", False, None, 5)
    signed = codec("pickle").encode(1)
    assert read_frame_header(signed) == ser.FrameHeader("pickle", "none", True, None, 37)


@pytest.mark.parametrize("base", ["json", "msgpack", "pickle"])
def test_min_size_and_incompressible_payloads_stay_plain(base: str) -> None:
    c = codec(f"{base}+zstd", min_size=100)
    assert c.encode("x" * 10)[3] == CODEC_NONE
    assert c.encode("x" * 1000)[3] == CODEC_ZSTD
    if base != "json":
        noise = os.urandom(1000)
        assert c.encode(noise)[3] == CODEC_NONE  # zstd would not shrink it


@pytest.mark.parametrize("name", ["json", "msgpack+zstd", "pickle"])
def test_decode_accepts_bytes_like(name: str) -> None:
    c = codec(name, min_size=0)
    frame = c.encode(TYPICAL, context=b"j")
    for data in (bytearray(frame), memoryview(frame)):
        assert c.decode(data, context=b"j") == TYPICAL  # type: ignore[arg-type]


def test_zstd_shrinks_large_payload() -> None:
    plain, packed = codec("json").encode(LARGE), codec("json+zstd").encode(LARGE)
    assert len(plain) / len(packed) >= 5


@pytest.mark.parametrize("writer", SERIALIZER_NAMES)
@pytest.mark.parametrize("reader", SERIALIZER_NAMES)
def test_frames_readable_after_serializer_change(writer: str, reader: str) -> None:
    value = {"a": [1, 2.5, None, True], "s": "x" * 500}
    frame = codec(writer, min_size=0).encode(value, context=b"job-1")
    # Readers keep the key, so they can still read the pickle era's frames.
    reader_codec = get_serializer(reader, pickle_key=KEY)
    assert reader_codec.decode(frame, context=b"job-1") == value


def test_reader_without_key_still_reads_json_after_pickle_era() -> None:
    # A JSON reader that keeps the key reads old pickle frames and new JSON frames.
    old = codec("pickle").encode({"x": 1}, context=b"j")
    new_reader = get_serializer("json", pickle_key=KEY)
    assert new_reader.decode(old, context=b"j") == {"x": 1}
    assert new_reader.decode(new_reader.encode({"y": 2})) == {"y": 2}


@pytest.mark.parametrize("name", SERIALIZER_NAMES)
def test_size_limit_exact_and_plus_one_on_encode(name: str) -> None:
    limit = 1000
    c = codec(name, max_size=limit)
    bare = make_serializer(name.split("+", maxsplit=1)[0])
    # The longest string whose serialized form is exactly the limit.
    text = next("x" * n for n in range(limit, 0, -1) if len(bare.dumps("x" * n)) == limit)
    assert c.decode(c.encode(text)) == text
    over = text + "x"
    with pytest.raises(PayloadTooLargeError) as info:
        c.encode(over)
    err = info.value
    assert (err.size, err.limit) == (len(bare.dumps(over)), limit)
    assert f"{err.size} bytes" in str(err)
    assert f"limit of {limit} bytes" in str(err)


@pytest.mark.parametrize("name", ["json", "msgpack+zstd"])
def test_size_limit_on_decode(name: str) -> None:
    big = codec(name, min_size=10**9).encode("x" * 5000)
    small_reader = codec(name, max_size=1000)
    with pytest.raises(PayloadTooLargeError) as info:
        small_reader.decode(big)
    assert info.value.limit in {1000, 1000 + MAX_HEADER_SIZE}
    assert str(info.value.limit) in str(info.value)


def test_decode_size_checks_inflated_size_too() -> None:
    frame = codec("json+zstd").encode("x" * 5000)
    assert len(frame) < 1000
    with pytest.raises(PayloadTooLargeError, match="decompressed payload is 5002 bytes"):
        codec("json+zstd", max_size=1000).decode(frame)


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", DeserializationError, "shorter than the 5-byte header"),
        (b'{"a":1}', DeserializationError, "not a typedq frame"),
        (bytes((FRAME_MAGIC, 2, 1, 0, 0)) + b"1", UnknownCodecError, "version 2"),
        (bytes((FRAME_MAGIC, 1, 9, 0, 0)) + b"1", UnknownCodecError, "serializer tag 9"),
        (bytes((FRAME_MAGIC, 1, 1, 7, 0)) + b"1", UnknownCodecError, "codec tag 7"),
        (bytes((FRAME_MAGIC, 1, 1, 0, 4)) + b"1", UnknownCodecError, "flags 0x04"),
        (bytes((FRAME_MAGIC, 1, 1, 2, 0)) + b"\x00", DeserializationError, "dictionary id"),
        (bytes((FRAME_MAGIC, 1, 1, 1, 0)) + b"garbage", DeserializationError, "zstd"),
        (bytes((FRAME_MAGIC, 1, 1, 0, 0)) + b"{bad", DeserializationError, "invalid JSON"),
    ],
)
def test_bad_frames(data: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        codec("json").decode(data)


@pytest.mark.parametrize("name", SERIALIZER_NAMES)
def test_every_truncation_is_a_deserialization_error(name: str) -> None:
    c = codec(name, min_size=0)
    frame = c.encode({"k": "v" * 300, "n": [1, 2, 3]}, context=b"j")
    for end in range(len(frame)):
        with pytest.raises(DeserializationError):
            c.decode(frame[:end], context=b"j")


@pytest.mark.parametrize("name", SERIALIZER_NAMES)
def test_every_flipped_byte_gives_a_typed_result(name: str) -> None:
    c = codec(name, min_size=0)
    value = {"k": "v" * 300, "n": [1, 2, 3]}
    frame = c.encode(value)
    for index in range(len(frame)):
        for mask in (0x01, 0x80, 0xFF):
            corrupt = bytearray(frame)
            corrupt[index] ^= mask
            with contextlib.suppress(DeserializationError, PayloadTooLargeError):
                c.decode(bytes(corrupt))


def _trained_dictionary() -> zstandard.ZstdCompressionDict:
    samples: list[Any] = [
        JSONSerializer().dumps(
            {
                "id": f"job_{i:06d}",
                "type": "send_email",
                "to": f"user{i}@example.com",
                "template": "welcome",
                "locale": ["en", "fr", "de"][i % 3],
                "attempt": i % 4,
            }
        )
        for i in range(400)
    ]
    return zstandard.train_dictionary(2048, samples)


def test_zstd_dictionary_frames_record_id() -> None:
    dictionary = _trained_dictionary()
    value = {
        "id": "job_999999",
        "type": "send_email",
        "to": "x@example.com",
        "template": "welcome",
        "locale": "en",
        "attempt": 1,
    }
    writer = get_serializer("json+zstd", dictionary=dictionary, min_size=0)
    frame = writer.encode(value)
    assert frame[3] == CODEC_ZSTD_DICT
    assert int.from_bytes(frame[5:9], "big") == dictionary.dict_id()
    assert read_frame_header(frame).dict_id == dictionary.dict_id()
    assert writer.decode(frame) == value
    assert len(frame) < len(codec("json+zstd", min_size=0).encode(value))
    with pytest.raises(UnknownCodecError, match=f"dictionary id {dictionary.dict_id()}"):
        codec("json+zstd").decode(frame)
    assert FrameCodec("msgpack", dictionaries=[dictionary]).decode(frame) == value


def test_codec_is_thread_safe() -> None:
    c = codec("msgpack+zstd", min_size=0)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(n: int) -> None:
        try:
            barrier.wait()
            for i in range(300):
                value = {"n": n, "i": i, "s": f"{n}-{i}" * 50}
                assert c.decode(c.encode(value)) == value
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# -- the pre-encode key walk: every container is looked into ----------------------


@pytest.mark.parametrize("name", ["json", "msgpack"])
@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ({"a": [{"b": {"c": [1, 2, {3: "x"}]}}]}, "$.a[0].b.c[2]", "mapping key 3 (int)"),
        (["x", "y", {1: "z"}], "$[2]", "mapping key 1 (int)"),
        (["a", "b", {"k": {None: 1}}], "$[2].k", "mapping key None"),
        ((("t", ({(1,): 2},)),), "$[0][1][0]", "mapping key (1,)"),
        ({"ok": {"s": "v"}, "list": [[], [{}], [{"fine": 1}, {2.5: 0}]]}, "$.list[2][1]", "mapping key 2.5"),
    ],
)
def test_non_str_key_nested_deep_is_refused_with_path(name: str, value: Any, path: str, words: str) -> None:
    err = _encode_error(name, value)
    assert err.path == path
    assert str(err).startswith(f"{path}: mapping key ")
    assert words in str(err)


def test_msgpack_bytes_keys_nested_round_trip() -> None:
    c = codec("msgpack")
    value = {b"k": {"n": [b"v", {b"x": ("a", {"y": None})}]}, "s": ["a", 1, {b"z": 2}]}
    assert c.decode(c.encode(value)) == {
        b"k": {"n": [b"v", {b"x": ["a", {"y": None}]}]},
        "s": ["a", 1, {b"z": 2}],
    }


def test_value_shared_many_times_over_is_bounded() -> None:
    # 100 + 100 * 100 + 100 * 100 * 1 elements (each list shared), over a 1,000-byte limit.
    shared: list[Any] = [[0]] * 100
    with pytest.raises(SerializationError, match="more than 1000 list items and mapping entries"):
        codec("json", max_size=1000).encode([shared] * 100)


def test_msgpack_value_shared_many_times_over_is_refused_by_its_size() -> None:
    # The native packer writes the value out in full (20,303 bytes); the frame's size
    # limit then refuses it, so nothing that large is ever stored.
    shared: list[Any] = [[0]] * 100
    with pytest.raises(PayloadTooLargeError, match="is 20303 bytes, over the limit of 1000 bytes"):
        codec("msgpack", max_size=1000).encode([shared] * 100)


def _laughs(levels: int) -> list[Any]:
    """A value of a few hundred bytes in memory that expands to 10**levels items."""
    value: list[Any] = ["lol"] * 10
    for _ in range(levels - 1):
        value = [value] * 10
    return value


@pytest.mark.parametrize("name", ["json", "json+zstd"])
@pytest.mark.timeout(10)
def test_an_expansion_bomb_is_refused_before_it_is_expanded(name: str) -> None:
    """10**12 items ("billion laughs", as YAML anchors or pickles can build): refused by
    counting, at once, before a byte is encoded."""
    with pytest.raises(SerializationError, match=r"^\$: more than 1048576 list items") as info:
        codec(name).encode({"doc": _laughs(12)})
    assert not isinstance(info.value, PayloadTooLargeError)  # never encoded, so never measured


@pytest.mark.timeout(10)
def test_a_flat_payload_sharing_one_big_list_is_refused_before_it_is_expanded() -> None:
    big = list(range(100_000))  # under the limit alone; 100 times over it is 10 million items
    json_codec = codec("json")
    with pytest.raises(SerializationError, match="more than 1048576 list items"):
        json_codec.encode({f"k{i}": big for i in range(100)})
    assert json_codec.decode(json_codec.encode({"k": big})) == {"k": big}


def test_msgpack_packer_recovers_after_a_failed_value() -> None:
    bare = MsgpackSerializer()
    with pytest.raises(SerializationError, match=r"^\$\.x\[1\]: "):
        bare.dumps({"x": [1, object()]})
    assert bare.dumps({"a": [1, 2]}) == msgpack.packb({"a": [1, 2]})


def test_msgpack_loads_limits_hold_for_data_over_max_size() -> None:
    data = msgpack.packb("x" * 20)
    assert MsgpackSerializer(max_size=len(data)).loads(data) == "x" * 20
    with pytest.raises(DeserializationError, match="max_str_len"):
        MsgpackSerializer(max_size=10).loads(data)
