"""The ``Serializer`` protocol and the frame layer: the only serializer module backends use.

Backends store what :meth:`FrameCodec.encode` returns and hand it back to
:meth:`FrameCodec.decode`. A frame starts with a short header naming the serializer and
codec that wrote it, so a queue whose configured serializer changed still reads its
old jobs (a msgpack-configured reader decodes JSON frames, and so on)::

    offset  size  field
    0       1     magic 0xC1 (never the first byte of UTF-8 text nor of msgpack data)
    1       1     format version, 1
    2       1     serializer tag: 1 json, 2 msgpack, 3 pickle
    3       1     codec tag: 0 none, 1 zstd, 2 zstd with a dictionary
    4       1     flags: bit 0 = signed; other bits must be 0
    5       4     zstd dictionary id, big-endian (codec 2 only)
    ..      32    HMAC-SHA256 (signed frames only)
    ..      ...   body: the serialized, possibly compressed, payload

The signature covers the header (tags, flags, dictionary id), the ``context`` the
backend passes (the job id, length-prefixed) and the stored body, so a signed payload
copied from job A's row into job B's is refused. Pickle frames are always signed;
``sign_all=True`` signs every frame.

:meth:`FrameCodec.decode` works in a fixed order, each step bounded, so hostile bytes
cost little: size check, then header (unknown tags give
:class:`~typedq.errors.UnknownCodecError`; pickle while pickle is disabled gives
:class:`~typedq.errors.UnsafeSerializerError`), then the signature
(:class:`~typedq.errors.SignatureError`, before anything is inflated or unpickled), then
bounded decompression, then deserialization with limits. Every failure is a
:class:`~typedq.errors.DeserializationError` subclass, except sizes over the limit:
:class:`~typedq.errors.PayloadTooLargeError`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple

import zstandard

from typedq.errors import (
    ConfigError,
    DeserializationError,
    PayloadTooLargeError,
    SignatureError,
    TypedqError,
    UnknownCodecError,
    UnsafeSerializerError,
)
from typedq.serializers._common import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SIZE, check_int
from typedq.serializers._protocol import Serializer
from typedq.serializers._registry import SERIALIZER_NAMES, make_serializer
from typedq.serializers._signing import HmacSha256
from typedq.serializers.compress import BoundedDecompressor, Compressed
from typedq.serializers.json import JSONSerializer
from typedq.serializers.msgpack import MsgpackSerializer
from typedq.serializers.pickle import PickleSerializer

__all__ = [
    "CODEC_NONE",
    "CODEC_ZSTD",
    "CODEC_ZSTD_DICT",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "FLAG_SIGNED",
    "FRAME_MAGIC",
    "FRAME_VERSION",
    "MAX_HEADER_SIZE",
    "MIN_KEY_SIZE",
    "SERIALIZER_NAMES",
    "SERIALIZER_TAGS",
    "FrameCodec",
    "FrameHeader",
    "Serializer",
    "make_serializer",
    "read_frame_header",
]


FRAME_MAGIC: Final = 0xC1
FRAME_VERSION: Final = 1
CODEC_NONE: Final = 0
CODEC_ZSTD: Final = 1
CODEC_ZSTD_DICT: Final = 2
FLAG_SIGNED: Final = 0x01
MIN_KEY_SIZE: Final = 32
"""Shortest signing key accepted, in bytes."""

_BASE_SIZE: Final = 5
_DICT_ID_SIZE: Final = 4
_MAC_SIZE: Final = 32
_SIGNED_BODY_OFFSET: Final = _BASE_SIZE + _MAC_SIZE
MAX_HEADER_SIZE: Final = _BASE_SIZE + _DICT_ID_SIZE + _MAC_SIZE
"""The longest frame header: base, dictionary id and signature (41 bytes)."""

SERIALIZER_TAGS: Final = {"json": 1, "msgpack": 2, "pickle": 3}
"""Serializer tag byte of each built-in serializer."""
_TAG_NAMES: Final = {tag: name for name, tag in SERIALIZER_TAGS.items()}
_PICKLE_TAG: Final = SERIALIZER_TAGS["pickle"]
_CODEC_NAMES: Final = {CODEC_NONE: "none", CODEC_ZSTD: "zstd", CODEC_ZSTD_DICT: "zstd+dict"}


class FrameHeader(NamedTuple):
    """A frame's parsed header, read without verifying or decoding anything.

    Attributes:
        serializer: Serializer name (``"json"``, ``"msgpack"``, ``"pickle"``).
        codec: ``"none"``, ``"zstd"`` or ``"zstd+dict"``.
        signed: Whether the frame carries a signature.
        dict_id: The zstd dictionary id, for codec ``"zstd+dict"``.
        body_offset: Where the body starts.
    """

    serializer: str
    codec: str
    signed: bool
    dict_id: int | None
    body_offset: int


def read_frame_header(data: bytes) -> FrameHeader:
    """Parse a frame's header, e.g. to show raw rows that failed to decode.

    Args:
        data: Stored frame bytes.

    Returns:
        The parsed header.

    Raises:
        DeserializationError: Not a frame, or truncated.
        UnknownCodecError: Unknown version, serializer tag, codec tag or flags.
    """
    if len(data) < _BASE_SIZE:
        raise DeserializationError(f"frame is {len(data)} bytes, shorter than the {_BASE_SIZE}-byte header")
    if data[0] != FRAME_MAGIC:
        raise DeserializationError(
            f"not a typedq frame: first byte is 0x{data[0]:02x}, not 0x{FRAME_MAGIC:02x}"
        )
    if data[1] != FRAME_VERSION:
        raise UnknownCodecError(
            f"frame format version {data[1]} is unknown (this typedq reads {FRAME_VERSION})"
        )
    tag, codec, flags = data[2], data[3], data[4]
    if tag not in _TAG_NAMES:
        known = ", ".join(f"{t}={n}" for t, n in sorted(_TAG_NAMES.items()))
        raise UnknownCodecError(f"unknown serializer tag {tag} (known: {known})")
    if codec not in _CODEC_NAMES:
        known = ", ".join(f"{c}={n}" for c, n in sorted(_CODEC_NAMES.items()))
        raise UnknownCodecError(f"unknown codec tag {codec} (known: {known})")
    if flags & ~FLAG_SIGNED:
        raise UnknownCodecError(f"unknown frame flags 0x{flags:02x}")
    offset = _BASE_SIZE
    dict_id = None
    if codec == CODEC_ZSTD_DICT:
        if len(data) < offset + _DICT_ID_SIZE:
            raise DeserializationError("frame is truncated inside its dictionary id")
        dict_id = int.from_bytes(data[offset : offset + _DICT_ID_SIZE], "big")
        offset += _DICT_ID_SIZE
    signed = bool(flags & FLAG_SIGNED)
    if signed:
        if len(data) < offset + _MAC_SIZE:
            raise SignatureError("frame is truncated inside its signature")
        offset += _MAC_SIZE
    return FrameHeader(_TAG_NAMES[tag], _CODEC_NAMES[codec], signed, dict_id, offset)


def _key_bytes(field: str, key: object) -> bytes:
    """Validate a signing key without ever putting it in a message."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)):
        raise ConfigError(
            field, f"<{type(key).__name__}>", f"bytes (or str) of at least {MIN_KEY_SIZE} bytes"
        )
    if len(key) < MIN_KEY_SIZE:
        raise ConfigError(
            field,
            f"<redacted key of {len(key)} bytes>",
            f"a key of at least {MIN_KEY_SIZE} bytes, e.g. secrets.token_bytes(32)",
        )
    return bytes(key)


def _split(serializer: Serializer) -> tuple[int, Serializer, Compressed | None]:
    """(tag, inner serializer, compressor or None) of a built-in serializer."""
    compressed = serializer if isinstance(serializer, Compressed) else None
    inner = compressed.inner if compressed is not None else serializer
    for kind, name in (
        (JSONSerializer, "json"),
        (MsgpackSerializer, "msgpack"),
        (PickleSerializer, "pickle"),
    ):
        if isinstance(inner, kind):
            return SERIALIZER_TAGS[name], inner, compressed
    raise ConfigError(
        "serializer",
        getattr(serializer, "name", serializer),
        "a built-in serializer (JSONSerializer, MsgpackSerializer, PickleSerializer, "
        "optionally inside Compressed) or one of " + ", ".join(SERIALIZER_NAMES),
    )


_Reader = tuple[Callable[[bytes], Any], "BoundedDecompressor | None"]


class FrameCodec:
    """Writes self-describing, size-limited, optionally signed frames, and reads them.

    Writes with the configured serializer; reads frames of every built-in serializer
    (pickle only when a key is set). Also a :class:`Serializer` itself: ``dumps`` and
    ``loads`` are ``encode`` and ``decode`` with an empty context.

    Args:
        serializer: A name from :data:`SERIALIZER_NAMES` or a built-in serializer.
        pickle_key: HMAC-SHA256 key, at least 32 bytes. Setting it enables pickle
            (reading and, if configured, writing) and signs pickle frames.
        verify_keys: Older keys still accepted when verifying (key rotation). Never
            used to sign.
        sign_all: Sign every frame, and refuse unsigned frames when reading.
        max_size: The most bytes a serialized payload may take (before compression),
            enforced on encode and, after decompression, on decode.
        max_depth: JSON nesting limit for the serializers built here.
        dictionaries: Extra zstd dictionaries to read with (e.g. retired ones).

    Raises:
        ConfigError: Unknown serializer; pickle without a key; a key shorter than
            32 bytes; ``verify_keys`` or ``sign_all`` without ``pickle_key``; bad limits.
    """

    def __init__(
        self,
        serializer: str | Serializer = "json",
        *,
        pickle_key: bytes | str | None = None,
        verify_keys: Iterable[bytes | str] = (),
        sign_all: bool = False,
        max_size: int = DEFAULT_MAX_SIZE,
        max_depth: int = DEFAULT_MAX_DEPTH,
        dictionaries: Iterable[zstandard.ZstdCompressionDict] = (),
    ) -> None:
        self.max_size = check_int("max_size", max_size, 1)
        self.max_depth = check_int("max_depth", max_depth, 1)
        if isinstance(serializer, str):
            serializer = make_serializer(serializer, max_size=max_size, max_depth=max_depth)
        tag, inner, compressed = _split(serializer)
        self.name: str = serializer.name
        self.serializer = serializer

        self._signers = self._make_signers(tag, pickle_key, verify_keys, sign_all)
        self.pickle_enabled = bool(self._signers)
        self.sign_all = bool(sign_all)
        self.verify_key_count = max(0, len(self._signers) - 1)
        self._loads, self._inflaters = self._make_readers(tag, inner, compressed, dictionaries)

        # Writer.
        self._dumps = inner.dumps
        self._compressor = compressed
        self._sign = self.pickle_enabled and (self.sign_all or tag == _PICKLE_TAG)
        flags = FLAG_SIGNED if self._sign else 0
        self._header_plain = bytes((FRAME_MAGIC, FRAME_VERSION, tag, CODEC_NONE, flags))
        if compressed is not None and compressed.dict_id is not None:
            self._header_zstd = bytes(
                (FRAME_MAGIC, FRAME_VERSION, tag, CODEC_ZSTD_DICT, flags)
            ) + compressed.dict_id.to_bytes(_DICT_ID_SIZE, "big")
        else:
            self._header_zstd = bytes((FRAME_MAGIC, FRAME_VERSION, tag, CODEC_ZSTD, flags))

        # Fast read paths: dictionary-less headers map straight to a reader. Unsigned
        # ones only when unsigned frames are allowed (never pickle); signed ones only
        # when there is a key to verify with (so pickle is enabled). Any other header
        # takes _decode_slow, which names what is wrong with it.
        self._fast: dict[bytes, _Reader] = {}
        self._fast_signed: dict[bytes, _Reader] = {}
        for t, loads in self._loads.items():
            for codec, inflater in ((CODEC_NONE, None), (CODEC_ZSTD, self._inflaters[None])):
                if not self.sign_all and t != _PICKLE_TAG:
                    self._fast[bytes((FRAME_MAGIC, FRAME_VERSION, t, codec, 0))] = (loads, inflater)
                if self._signers:
                    header = bytes((FRAME_MAGIC, FRAME_VERSION, t, codec, FLAG_SIGNED))
                    self._fast_signed[header] = (loads, inflater)
        self._max_frame = max_size + MAX_HEADER_SIZE
        self._max_fast_frame = max_size + _BASE_SIZE
        self._max_signed_frame = max_size + _SIGNED_BODY_OFFSET

    @staticmethod
    def _make_signers(
        tag: int,
        pickle_key: bytes | str | None,
        verify_keys: Iterable[bytes | str],
        sign_all: bool,
    ) -> tuple[HmacSha256, ...]:
        """HMAC-SHA256 signers, signing key first. Keys live only inside them (as hash
        states), so no attribute of the codec holds the raw bytes."""
        if isinstance(verify_keys, (str, bytes, bytearray)):
            raise ConfigError("verify_keys", "<redacted>", "a list of keys, not one key")
        old_keys = [_key_bytes("verify_keys", key) for key in verify_keys]
        if pickle_key is not None:
            keys = [_key_bytes("pickle_key", pickle_key), *old_keys]
            return tuple(HmacSha256(key) for key in keys)
        if old_keys:
            raise ConfigError("verify_keys", "<redacted>", "empty unless pickle_key is set")
        if tag == _PICKLE_TAG:
            raise ConfigError(
                "pickle_key",
                None,
                f"a signing key of at least {MIN_KEY_SIZE} bytes: pickle is only allowed in signed frames",
            )
        if sign_all:
            raise ConfigError("sign_all", True, "False unless pickle_key is set")
        return ()

    def _make_readers(
        self,
        tag: int,
        inner: Serializer,
        compressed: Compressed | None,
        dictionaries: Iterable[zstandard.ZstdCompressionDict],
    ) -> tuple[dict[int, Callable[[bytes], Any]], dict[int | None, BoundedDecompressor]]:
        """Readers by serializer tag (the configured serializer for its own tag, defaults
        with this codec's limits for the others) and decompressors by dictionary id."""
        readers: dict[int, Serializer] = {
            SERIALIZER_TAGS["json"]: JSONSerializer(max_depth=self.max_depth, max_size=self.max_size),
            SERIALIZER_TAGS["msgpack"]: MsgpackSerializer(max_size=self.max_size),
        }
        if self.pickle_enabled:
            readers[_PICKLE_TAG] = PickleSerializer()
        readers[tag] = inner
        inflaters: dict[int | None, BoundedDecompressor] = {None: BoundedDecompressor(self.max_size)}
        extra = list(dictionaries)
        if compressed is not None and compressed.dictionary is not None:
            extra.insert(0, compressed.dictionary)
        for dictionary in extra:
            if not isinstance(dictionary, zstandard.ZstdCompressionDict):
                raise ConfigError("dictionaries", dictionary, "zstandard.ZstdCompressionDict")
            dict_id = dictionary.dict_id()
            if not dict_id:
                raise ConfigError("dictionaries", "<dictionary with id 0>", "trained dictionaries")
            inflaters.setdefault(dict_id, BoundedDecompressor(self.max_size, dictionary))
        return {t: reader.loads for t, reader in readers.items()}, inflaters

    def __repr__(self) -> str:
        pickle_state = "enabled" if self.pickle_enabled else "disabled"
        return (
            f"FrameCodec({self.name!r}, max_size={self.max_size}, pickle={pickle_state}, "
            f"verify_keys={self.verify_key_count}, sign_all={self.sign_all})"
        )

    # -- Serializer protocol ---------------------------------------------------------

    def dumps(self, obj: Any) -> bytes:
        """``encode(obj)`` with an empty context.

        Args:
            obj: The value to store.

        Returns:
            The frame bytes.
        """
        return self.encode(obj)

    def loads(self, data: bytes) -> Any:
        """``decode(data)`` with an empty context.

        Args:
            data: Frame bytes.

        Returns:
            The decoded value.
        """
        return self.decode(data)

    # -- frames --------------------------------------------------------------------

    def encode(self, obj: Any, *, context: bytes = b"") -> bytes:
        """Serialize ``obj`` into a frame.

        Args:
            obj: The value to store.
            context: Bytes the signature is bound to (the backend passes the job id),
                so a signed frame only decodes with the same context. Not stored.

        Returns:
            The frame bytes.

        Raises:
            SerializationError: ``obj`` is outside the serializer's domain (names the
                path).
            PayloadTooLargeError: The serialized payload is over ``max_size``.
        """
        raw = self._dumps(obj)
        if len(raw) > self.max_size:
            raise PayloadTooLargeError(len(raw), self.max_size, what="serialized payload")
        header, body = self._header_plain, raw
        if self._compressor is not None:
            packed = self._compressor.compress(raw)
            if packed is not None:
                header, body = self._header_zstd, packed
        if not self._sign:
            return header + body
        return b"".join((header, self._signers[0].frame_mac(header, context, body), body))

    def decode(self, data: bytes, *, context: bytes = b"") -> Any:
        """Read a frame: size, header, signature, bounded decompression, deserialize.

        Args:
            data: Frame bytes from storage.
            context: The context the frame was encoded with (the job id).

        Returns:
            The decoded value.

        Raises:
            PayloadTooLargeError: The frame, or its inflated body, is over the limit.
            UnknownCodecError: Unknown format version, serializer, codec, flags, or a
                zstd dictionary this codec was not given.
            UnsafeSerializerError: A pickle frame while pickle is disabled.
            SignatureError: Missing or wrong signature (checked before decompressing
                or unpickling).
            DeserializationError: Anything else wrong with the bytes.
        """
        size = len(data)
        if size > self._max_frame:
            raise PayloadTooLargeError(size, self._max_frame, what="stored frame")
        if type(data) is not bytes:
            # Drivers may hand back bytearray or memoryview; bytearray is unhashable.
            data = bytes(data)
        header = data[:_BASE_SIZE]
        fast = self._fast.get(header)
        if fast is not None:
            if size > self._max_fast_frame:
                raise PayloadTooLargeError(size - _BASE_SIZE, self.max_size, what="stored payload")
            body = data[_BASE_SIZE:]
        else:
            fast = self._fast_signed.get(header)
            if fast is None:
                return self._decode_slow(data, context)
            # The checks _decode_slow makes on such a header, in the same order.
            if size < _SIGNED_BODY_OFFSET:
                raise SignatureError("frame is truncated inside its signature")
            if size > self._max_signed_frame:
                raise PayloadTooLargeError(size - _SIGNED_BODY_OFFSET, self.max_size, what="stored payload")
            body = data[_SIGNED_BODY_OFFSET:]
            self._verify(header, context, body, data[_BASE_SIZE:_SIGNED_BODY_OFFSET])
        loads, inflater = fast
        if inflater is not None:
            body = inflater.decompress(body)
        return self._run(loads, body)

    @staticmethod
    def _run(loads: Callable[[bytes], Any], body: bytes) -> Any:
        try:
            return loads(body)
        except TypedqError:
            raise
        except Exception as exc:
            raise DeserializationError(f"cannot decode the payload: {exc}") from exc

    def _decode_slow(self, data: bytes, context: bytes) -> Any:
        header = read_frame_header(data)
        tag = SERIALIZER_TAGS[header.serializer]
        inflater = None
        if header.codec != "none":
            inflater = self._inflaters.get(header.dict_id)
            if inflater is None:
                raise UnknownCodecError(
                    f"frame was compressed with zstd dictionary id {header.dict_id}, which "
                    "this codec was not given (pass it in dictionaries=)"
                )
        if tag == _PICKLE_TAG and not self.pickle_enabled:
            raise UnsafeSerializerError(
                "pickle is disabled; enable it with a signing key (pickle_key, at least "
                f"{MIN_KEY_SIZE} bytes). The pickle frame was not unpickled."
            )
        offset = header.body_offset
        body_size = len(data) - offset
        if body_size > self.max_size:
            raise PayloadTooLargeError(body_size, self.max_size, what="stored payload")
        body = memoryview(data)[offset:]
        if header.signed:
            mac_start = offset - _MAC_SIZE
            self._verify(data[:mac_start], context, body, data[mac_start:offset])
        elif tag == _PICKLE_TAG or self.sign_all:
            raise SignatureError(
                "frame is not signed, but pickle frames (and all frames when sign_all is set) must be"
            )
        raw = bytes(body) if inflater is None else inflater.decompress(body)
        return self._run(self._loads[tag], raw)

    def _verify(self, header: bytes, context: bytes, body: bytes | memoryview, stored: bytes) -> None:
        """Raise SignatureError unless ``stored`` is the MAC of the frame under some key."""
        if not self._signers:
            raise SignatureError("frame is signed but no key is configured to verify it (pickle_key)")
        for signer in self._signers:
            # Looked up on the module at call time on purpose: constant-time compare.
            if hmac.compare_digest(signer.frame_mac(header, context, body), stored):
                return
        raise SignatureError(
            "signature does not verify: the frame was altered, signed with a key not "
            "configured here, or written for another context (job id)"
        )
