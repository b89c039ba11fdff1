"""The JSON serializer: stdlib :mod:`json`, strict about what it accepts.

:class:`JSONSerializer` owns the JSON domain. It encodes exactly what JSON can carry
and decodes it back equal:

========================  ==========================================================
Python                    JSON
========================  ==========================================================
``None``, ``bool``        ``null``, ``true``/``false``
``int`` (any size)        number (up to Python's 4300-digit int/str limit)
``float`` (finite)        number; ``NaN``/``inf`` are refused (``allow_nan=False``)
``str``                   string (UTF-8, ``ensure_ascii=False``; lone surrogates refused)
``list``, ``tuple``       array (decodes as ``list``)
``dict`` with ``str`` keys  object
========================  ==========================================================

Subclasses encode as their base (an ``IntEnum`` member decodes as a plain ``int``).
Everything else (``bytes``, ``set``, ``Decimal``, ``datetime``, ``UUID``, non-``str``
dict keys, cycles, nesting deeper than ``max_depth``) raises
:class:`~typedq.errors.SerializationError` at ``dumps`` naming the JSON path, such as
``$.items[3].when``. Convert such values first (pydantic's
``model_dump(mode="json")`` does), or use msgpack for bytes and datetimes.

``loads`` checks nesting depth without recursing, before parsing, so hostile input
nested 100,000 deep gives :class:`~typedq.errors.DeserializationError`, never
``RecursionError``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from itertools import accumulate
from typing import Any, Final
from uuid import UUID

from typedq.errors import DeserializationError, SerializationError
from typedq.serializers._common import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_SIZE,
    check_int,
    describe,
    find_problem,
    keys_look_fine,
    surrogate_problem,
)

__all__ = ["JSONSerializer"]

# Python refuses to convert an int of more than this many digits to str by default.
_INT_DIGITS_BITS: Final = 14_000
_STRING_LITERAL = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}
_JSON_SPACE: Final = " \t\n\r"

_HINTS: Final[tuple[tuple[type | tuple[type, ...], str], ...]] = (
    ((bytes, bytearray, memoryview), "encode it (base64) or use the msgpack serializer"),
    ((set, frozenset), "use a list"),
    (Decimal, "use a str (exact) or a float"),
    (
        (datetime, date, time),
        "use an ISO 8601 str (pydantic's model_dump(mode='json') does), or the msgpack serializer",
    ),
    (UUID, "use its str"),
)


def _hint(value: Any) -> str:
    for types, hint in _HINTS:
        if isinstance(value, types):
            return hint
    return "convert it to None, bool, int, float, str, list or dict"


def _json_depth(text: str) -> int:
    """The deepest array/object nesting in JSON text, found without recursion.

    String literals are removed first so brackets inside strings do not count.

    Args:
        text: JSON text (need not be valid).

    Returns:
        The maximum nesting depth (0 for a scalar).
    """
    brackets = _NOT_BRACKET.sub("", _STRING_LITERAL.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (allow_nan=False)")


def _refuse_default(value: Any) -> Any:
    # Called by the C encoder for any type it does not know; find_problem names the path.
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _make_encoder(allow_nan: bool) -> Callable[[Any], str]:
    """Build a one-shot encoder, once: the C encoder when available (saves the
    per-call setup that ``json.dumps`` pays), else ``JSONEncoder.encode``."""
    c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is not None:
        # No circular-reference markers: keys_look_fine bounds depth before encoding.
        c_encoder = c_make_encoder(
            None,
            _refuse_default,
            json.encoder.encode_basestring,
            None,
            ":",
            ",",
            False,
            False,
            allow_nan,
        )

        def encode(obj: Any) -> str:
            return "".join(c_encoder(obj, 0))

        return encode
    fallback = json.JSONEncoder(
        ensure_ascii=False,
        allow_nan=allow_nan,
        separators=(",", ":"),
        default=_refuse_default,
        check_circular=False,
    )
    return fallback.encode


class JSONSerializer:
    """Compact UTF-8 JSON with typed errors naming the path of unsupported values.

    Output uses compact separators and ``ensure_ascii=False``. ``allow_nan`` is False
    by default, so ``NaN`` and infinities are refused at ``dumps`` (standard JSON has
    no such numbers) and the ``NaN``/``Infinity`` tokens are refused at ``loads``.

    Args:
        allow_nan: Accept ``NaN`` and infinities (non-standard JSON tokens).
        max_depth: The deepest nesting accepted by ``dumps`` and ``loads``.
        max_size: Bounds the walk over a value before encoding (at most this many
            list items and mapping entries, a shared value counted each time it
            appears); the size limit itself is enforced by the frame codec.

    Raises:
        ConfigError: ``max_depth`` or ``max_size`` is not an int >= 1.
    """

    name: str = "json"

    def __init__(
        self,
        *,
        allow_nan: bool = False,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.allow_nan = bool(allow_nan)
        self.max_depth = check_int("max_depth", max_depth, 1)
        self.max_size = check_int("max_size", max_size, 1)
        self._encode = _make_encoder(allow_nan)
        self._decoder = json.JSONDecoder(parse_constant=None if allow_nan else _refuse_constant)
        # scan_once parses one value from an index, skipping decode()'s whitespace
        # regexes; it is set by JSONDecoder.__init__ but missing from typeshed.
        self._scan: Callable[[str, int], tuple[Any, int]] = self._decoder.scan_once  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"JSONSerializer(allow_nan={self.allow_nan}, max_depth={self.max_depth})"

    # -- encoding ------------------------------------------------------------------

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj`` as compact UTF-8 JSON.

        Args:
            obj: A value of the JSON domain (see the module docstring).

        Returns:
            The UTF-8 bytes.

        Raises:
            SerializationError: ``obj`` holds a value JSON cannot carry; the message
                and ``path`` name where, such as ``$.items[3].when``.
        """
        if not keys_look_fine(obj, (str,), self.max_depth, self.max_size):
            self._raise_problem(obj, None)
        try:
            return self._encode(obj).encode("utf-8")
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            self._raise_problem(obj, exc)
            raise SerializationError(f"$: cannot encode as JSON: {exc}") from exc

    def _check_leaf(self, value: Any) -> str | None:
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, str):
            return surrogate_problem(value)
        if isinstance(value, int):
            if value.bit_length() > _INT_DIGITS_BITS:
                try:
                    int.__repr__(value)
                except ValueError as exc:
                    return f"int is too large to write as JSON digits: {exc}"
            return None
        if isinstance(value, float):
            if not self.allow_nan and not math.isfinite(value):
                return f"{value!r} is not allowed: JSON has no NaN or infinity"
            return None
        return f"{describe(value)} is not supported by JSON; {_hint(value)}"

    @staticmethod
    def _check_key(key: Any) -> str | None:
        if not isinstance(key, str):
            return "is not a str; JSON object keys must be str"
        return surrogate_problem(key)

    def _raise_problem(self, obj: Any, exc: BaseException | None) -> None:
        """Raise SerializationError naming the first problem, if there is one."""
        found = find_problem(
            obj,
            check_leaf=self._check_leaf,
            check_key=self._check_key,
            max_depth=self.max_depth,
            max_elements=self.max_size,
            format_name="JSON",
        )
        if found is not None:
            path, reason = found
            raise SerializationError(f"{path}: {reason}", path=path) from exc

    # -- decoding ------------------------------------------------------------------

    def loads(self, data: bytes) -> Any:
        """Decode UTF-8 JSON, refusing nesting deeper than ``max_depth`` first.

        Args:
            data: UTF-8 JSON bytes.

        Returns:
            The decoded value (arrays as ``list``, objects as ``dict``).

        Raises:
            DeserializationError: Invalid UTF-8, invalid JSON, trailing data, too deep,
                or a ``NaN``/``Infinity`` token while ``allow_nan`` is False.
        """
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError as exc:
            raise DeserializationError(f"JSON data is not valid UTF-8: {exc}") from exc
        # Counting brackets is cheap and bounds the depth; scan only when it could be deep.
        if text.count("[") + text.count("{") > self.max_depth:
            depth = _json_depth(text)
            if depth > self.max_depth:
                raise DeserializationError(
                    f"JSON nesting is {depth} levels deep, over the limit of {self.max_depth} (max_depth)"
                )
        try:
            obj, end = self._scan(text, 0)
        except StopIteration:
            # Leading whitespace or no value at all: let the full decoder decide.
            return self._slow_loads(text)
        except (ValueError, RecursionError) as exc:
            raise DeserializationError(f"invalid JSON: {exc}") from exc
        if end != len(text) and text[end:].strip(_JSON_SPACE):
            raise DeserializationError(f"invalid JSON: extra data at offset {end}")
        return obj

    def _slow_loads(self, text: str) -> Any:
        try:
            return self._decoder.decode(text)
        except (ValueError, RecursionError) as exc:
            raise DeserializationError(f"invalid JSON: {exc}") from exc
