"""Private: the table of serializer names and :func:`make_serializer`.

Re-exported by :mod:`typedq.serializers.base`; kept apart to keep that module short.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Final

import zstandard

from typedq.errors import ConfigError
from typedq.serializers._common import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SIZE
from typedq.serializers._protocol import Serializer
from typedq.serializers.compress import Compressed
from typedq.serializers.json import JSONSerializer
from typedq.serializers.msgpack import MsgpackSerializer
from typedq.serializers.pickle import PickleSerializer

__all__ = ["SERIALIZER_NAMES", "make_serializer"]

SERIALIZER_NAMES: Final = (
    "json",
    "json+zstd",
    "msgpack",
    "msgpack+zstd",
    "pickle",
    "pickle+zstd",
)
"""Every serializer name :func:`make_serializer` knows."""


def _unknown_name(field: str, name: object, known: Iterable[str]) -> ConfigError:
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1) if isinstance(name, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(names)
    return ConfigError(
        field,
        name,
        f"one of {listed}",
        message=f"{field}={repr(name)[:80]} is not a known serializer{hint} (known: {listed})",
    )


def make_serializer(
    name: str,
    *,
    level: int = 3,
    min_size: int = 256,
    dictionary: zstandard.ZstdCompressionDict | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Serializer:
    """Build a bare serializer by config name (no frame, no signing).

    Args:
        name: One of :data:`SERIALIZER_NAMES`.
        level: zstd level for ``+zstd`` names.
        min_size: Below this many bytes ``+zstd`` names store uncompressed.
        dictionary: Optional trained zstd dictionary for ``+zstd`` names.
        max_size: Decode limits of the serializer.
        max_depth: JSON nesting limit.

    Returns:
        The serializer. Pickle here is unsigned: wrap it in a :class:`FrameCodec`.

    Raises:
        ConfigError: Unknown name (field ``serializer``, with a "did you mean"), or a
            bad zstd option.
    """
    if name not in SERIALIZER_NAMES:
        raise _unknown_name("serializer", name, SERIALIZER_NAMES)
    base, _, codec = name.partition("+")
    inner: Serializer
    if base == "json":
        inner = JSONSerializer(max_depth=max_depth, max_size=max_size)
    elif base == "msgpack":
        inner = MsgpackSerializer(max_size=max_size)
    else:
        inner = PickleSerializer()
    if codec:
        return Compressed(inner, level, min_size, dictionary, max_size=max_size)
    return inner
