"""Serializers by name, and the frame codec backends store bytes with.

``get_serializer("msgpack+zstd")`` returns a :class:`FrameCodec`: it writes frames whose
header names the serializer and codec, reads frames of every built-in serializer, and
enforces the size limit, signing and decode order described in
:mod:`typedq.serializers.base`. The bare serializers (:class:`JSONSerializer`,
:class:`MsgpackSerializer`, :class:`PickleSerializer`, :class:`Compressed`) are exported
for direct use and for building a codec from an instance.

Names: ``"json"``, ``"msgpack"``, ``"pickle"`` (needs ``pickle_key``), and each with
``"+zstd"``.
"""

from __future__ import annotations

from collections.abc import Iterable

import zstandard

from typedq.serializers._common import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SIZE
from typedq.serializers.base import (
    MAX_HEADER_SIZE,
    MIN_KEY_SIZE,
    SERIALIZER_NAMES,
    FrameCodec,
    FrameHeader,
    Serializer,
    make_serializer,
    read_frame_header,
)
from typedq.serializers.compress import BoundedDecompressor, Compressed
from typedq.serializers.json import JSONSerializer
from typedq.serializers.msgpack import MsgpackSerializer
from typedq.serializers.pickle import PickleSerializer

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "MAX_HEADER_SIZE",
    "MIN_KEY_SIZE",
    "SERIALIZER_NAMES",
    "BoundedDecompressor",
    "Compressed",
    "FrameCodec",
    "FrameHeader",
    "JSONSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "get_serializer",
    "make_serializer",
    "read_frame_header",
]


def get_serializer(
    name: str,
    *,
    pickle_key: bytes | str | None = None,
    verify_keys: Iterable[bytes | str] = (),
    level: int = 3,
    min_size: int = 256,
    dictionary: zstandard.ZstdCompressionDict | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
    sign_all: bool = False,
) -> FrameCodec:
    """Build the frame codec for a configured serializer name.

    Args:
        name: ``"json"``, ``"msgpack"``, ``"pickle"``, ``"json+zstd"``,
            ``"msgpack+zstd"`` or ``"pickle+zstd"``.
        pickle_key: Signing key (at least 32 bytes); required for pickle names, and
            enables reading signed pickle frames under any name.
        verify_keys: Retired keys still accepted when verifying.
        level: zstd level for ``+zstd`` names.
        min_size: Payloads shorter than this stay uncompressed under ``+zstd`` names.
        dictionary: A trained zstd dictionary for ``+zstd`` names.
        max_size: The most bytes a serialized payload may take (default 1 MiB).
        max_depth: JSON nesting limit (default 200).
        sign_all: Sign every frame and refuse unsigned ones (needs ``pickle_key``).

    Returns:
        A :class:`FrameCodec`, which is also a :class:`Serializer`.

    Raises:
        ConfigError: Unknown name (field ``serializer``, listing the known names and a
            "did you mean"), pickle without a key of at least 32 bytes, or a bad option.
    """
    serializer = make_serializer(
        name,
        level=level,
        min_size=min_size,
        dictionary=dictionary,
        max_size=max_size,
        max_depth=max_depth,
    )
    return FrameCodec(
        serializer,
        pickle_key=pickle_key,
        verify_keys=verify_keys,
        sign_all=sign_all,
        max_size=max_size,
        max_depth=max_depth,
    )
