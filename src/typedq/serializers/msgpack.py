"""The MessagePack serializer: :mod:`msgpack` with bytes, aware datetimes and big ints.

:class:`MsgpackSerializer` owns the msgpack domain:

========================  ==========================================================
Python                    msgpack
========================  ==========================================================
``None``, ``bool``        nil, bool
``int``                   int when it fits 64 bits, else ext type 2 (any size)
``float``                 float 64 (``NaN`` and infinities included)
``str``                   str (UTF-8; lone surrogates refused)
``bytes``/``bytearray``   bin (``use_bin_type=True``; decodes as ``bytes``)
aware ``datetime``        ext type 1: local wall time + UTC offset, microsecond exact
``list``, ``tuple``       array (decodes as ``list``)
``dict``                  map with ``str`` or ``bytes`` keys
========================  ==========================================================

An aware datetime round-trips with the same instant *and* the same ``utcoffset()``;
its tzinfo comes back as a fixed-offset :class:`datetime.timezone` (a zone name such as
``Europe/Paris`` is not kept). Naive datetimes, ``date``, ``Decimal``, ``set``, keys of
other types and cycles raise :class:`~typedq.errors.SerializationError` naming the path.

Map keys are limited to ``str`` and ``bytes`` because decoding uses
``strict_map_key=True``: keys whose hash an attacker can choose (ints) would allow
hash-collision denial of service on decode. Nesting is capped by msgpack itself:
511 levels when packing, 1024 when unpacking.

Encoding tries :mod:`ormsgpack` first, a packer written in Rust that refuses every map
key that is not exactly ``str`` and every type this module does not hand it (datetimes,
dataclasses, enums, UUIDs and anything unknown go to a ``default`` that declines). So
for the common value it checks the keys and packs in one native call, with the same
bytes msgpack writes (a test checks this). Any value it declines (bytes keys, ints
beyond 64 bits, datetimes, nesting over 255 levels, str subclasses as keys, errors)
takes the checked path: a walk over the keys, then ``msgpack``'s packer, which encodes
it or names what is wrong. Decoding always uses ``msgpack``. A value the native packer
takes is not walked, so the walk's bound on elements does not apply to it: a value that
shares one list many times over is packed in full, then refused by the frame's size
limit (``PayloadTooLargeError``). Walking every value first would make the common value
cost about 1.5x a bare ``msgpack`` round trip instead of 1.0x; the JSON serializer, the
default, walks every value and refuses such a value before expanding it.

Decoding bounds ``max_str_len``, ``max_bin_len``, ``max_array_len``, ``max_map_len`` and
``max_ext_len`` by ``max_size`` (and msgpack bounds them by the length of the data), so a
header claiming a 4 GiB bin in a 10-byte message is refused without allocating.
"""

from __future__ import annotations

import struct
import threading
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information
import ormsgpack

from typedq.errors import DeserializationError, SerializationError
from typedq.serializers._common import (
    DEFAULT_MAX_SIZE,
    check_int,
    describe,
    find_problem,
    keys_look_fine,
    surrogate_problem,
)

__all__ = ["EXT_BIGINT", "EXT_DATETIME", "MsgpackSerializer"]

EXT_DATETIME: Final = 1
"""Ext type code of an aware datetime: ``>qIq`` = local seconds since 1970-01-01,
microsecond, UTC offset in microseconds."""

EXT_BIGINT: Final = 2
"""Ext type code of an int outside 64 bits: big-endian two's complement bytes."""

# msgpack's own packer recursion limit (DEFAULT_RECURSE_LIMIT).
_PACK_MAX_DEPTH: Final = 511
_DATETIME = struct.Struct(">qIq")
_NAIVE_EPOCH: Final = datetime(1970, 1, 1)
_ONE_DAY_US: Final = 86_400_000_000
_KEY_TYPES: Final = (str, bytes)


#: Types ormsgpack would encode on its own but msgpack would not, or differently: they
#: reach :func:`_decline`, so such values take the checked path.
_FAST_OPTIONS: Final = (
    ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_UUID
    | ormsgpack.OPT_PASSTHROUGH_BIG_INT
)
_fast_pack: Final = ormsgpack.packb


def _decline(value: Any) -> Any:
    """ormsgpack's ``default``: hand every value it does not know to the checked path."""
    raise TypeError("left to the checked path")


def _offset_us(offset: timedelta) -> int:
    return (offset.days * 86_400 + offset.seconds) * 1_000_000 + offset.microseconds


def _pack_default(value: Any) -> Any:
    """Called by the packer for types msgpack does not know (and for big ints)."""
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is None:
            raise TypeError("naive datetime")
        wall = value.replace(tzinfo=None) - _NAIVE_EPOCH
        seconds = wall.days * 86_400 + wall.seconds
        return msgpack.ExtType(EXT_DATETIME, _DATETIME.pack(seconds, wall.microseconds, _offset_us(offset)))
    if isinstance(value, int):
        length = value.bit_length() // 8 + 1
        return msgpack.ExtType(EXT_BIGINT, value.to_bytes(length, "big", signed=True))
    raise TypeError(f"{type(value).__name__} is not supported by msgpack")


def _unpack_datetime(data: bytes) -> datetime:
    if len(data) != _DATETIME.size:
        raise DeserializationError(f"msgpack datetime ext has {len(data)} bytes, expected {_DATETIME.size}")
    seconds, micro, offset = _DATETIME.unpack(data)
    if micro >= 1_000_000 or not -_ONE_DAY_US < offset < _ONE_DAY_US:
        raise DeserializationError("msgpack datetime ext holds out-of-range fields")
    try:
        wall = _NAIVE_EPOCH + timedelta(seconds=seconds, microseconds=micro)
    except OverflowError as exc:
        raise DeserializationError(f"msgpack datetime ext is out of range: {exc}") from exc
    tz = UTC if offset == 0 else timezone(timedelta(microseconds=offset))
    return wall.replace(tzinfo=tz)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_DATETIME:
        return _unpack_datetime(data)
    if code == EXT_BIGINT:
        if not data:
            raise DeserializationError("msgpack big-int ext is empty")
        return int.from_bytes(data, "big", signed=True)
    raise DeserializationError(f"unknown msgpack ext type {code}")


def _check_leaf(value: Any) -> str | None:
    if value is None or isinstance(value, (bool, int, float, bytes, bytearray, memoryview)):
        return None
    if isinstance(value, str):
        return surrogate_problem(value)
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            return "datetime without tzinfo (naive) is not supported; attach a timezone"
        return None
    if isinstance(value, (date, time)):
        hint = "use an aware datetime or an ISO 8601 str"
    elif isinstance(value, (set, frozenset)):
        hint = "use a list"
    elif isinstance(value, Decimal):
        hint = "use a str (exact) or a float"
    else:
        hint = "convert it to None, bool, int, float, str, bytes, datetime, list or dict"
    return f"{describe(value)} is not supported by msgpack; {hint}"


def _new_packer() -> Any:
    return msgpack.Packer(use_bin_type=True, datetime=False, default=_pack_default)


class _Packers(threading.local):
    """One packer per thread (a ``msgpack.Packer`` is not thread-safe), created on
    first use in each thread, so ``dumps`` reads a plain attribute."""

    def __init__(self) -> None:
        self.packer: Any = _new_packer()


def _check_key(key: Any) -> str | None:
    if not isinstance(key, _KEY_TYPES):
        return "is not a str or bytes; msgpack map keys must be str or bytes"
    if isinstance(key, str):
        return _check_leaf(key)
    return None


class MsgpackSerializer:
    """MessagePack with bytes, aware datetimes and ints of any size.

    Packers are kept per thread (a ``msgpack.Packer`` is not thread-safe), so ``dumps``
    does no per-call setup.

    Args:
        max_size: Sets the decode limits (``max_bin_len`` and friends) and bounds the
            walk over a value before encoding.

    Raises:
        ConfigError: ``max_size`` is not an int >= 1.
    """

    name: str = "msgpack"

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = check_int("max_size", max_size, 1)
        self._local = _Packers()

    def __repr__(self) -> str:
        return f"MsgpackSerializer(max_size={self.max_size})"

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj`` as msgpack.

        Args:
            obj: A value of the msgpack domain (see the module docstring).

        Returns:
            The packed bytes.

        Raises:
            SerializationError: ``obj`` holds a value msgpack cannot carry here; the
                message and ``path`` name where, such as ``$.items[3].when``.
        """
        try:
            fast: bytes = _fast_pack(obj, default=_decline, option=_FAST_OPTIONS)
            return fast
        except TypeError:
            pass  # declined (see the module docstring): the checked path decides
        if not keys_look_fine(obj, _KEY_TYPES, _PACK_MAX_DEPTH, self.max_size):
            self._raise_problem(obj, None)
        local = self._local
        try:
            packed: bytes = local.packer.pack(obj)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            # A packer that failed mid-value may hold a partial buffer: start afresh.
            local.packer = _new_packer()
            self._raise_problem(obj, exc)
            raise SerializationError(f"$: cannot encode as msgpack: {exc}") from exc
        return packed

    def _raise_problem(self, obj: Any, exc: BaseException | None) -> None:
        found = find_problem(
            obj,
            check_leaf=_check_leaf,
            check_key=_check_key,
            max_depth=_PACK_MAX_DEPTH,
            max_elements=self.max_size,
            format_name="msgpack",
        )
        if found is not None:
            path, reason = found
            raise SerializationError(f"{path}: {reason}", path=path) from exc

    def loads(self, data: bytes) -> Any:
        """Decode one msgpack value with every length limit bounded by ``max_size``.

        Args:
            data: Packed bytes holding exactly one value.

        Returns:
            The decoded value (arrays as ``list``, bin as ``bytes``).

        Raises:
            DeserializationError: Truncated, corrupt or trailing data, a length over the
                limits, a non-``str``/``bytes`` map key or an unknown ext type.
        """
        limit = self.max_size
        try:
            if len(data) <= limit:
                # unpackb bounds every length by len(data) on its own (documented), and
                # len(data) <= max_size here, so passing the limits would change nothing.
                return msgpack.unpackb(data, raw=False, strict_map_key=True, timestamp=3, ext_hook=_ext_hook)
            return msgpack.unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=True,
                timestamp=3,
                ext_hook=_ext_hook,
                max_str_len=limit,
                max_bin_len=limit,
                max_array_len=limit,
                max_map_len=limit,
                max_ext_len=limit,
            )
        except DeserializationError:
            raise
        except Exception as exc:
            # msgpack raises ValueError subclasses, TypeError (unhashable key),
            # UnicodeDecodeError, ...: callers only ever see DeserializationError.
            raise DeserializationError(f"invalid msgpack data: {exc}") from exc
