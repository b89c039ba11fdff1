"""zstd compression around another serializer, and bounded decompression.

:class:`Compressed` wraps a serializer (``Compressed(JSONSerializer())`` is
``"json+zstd"``). Payloads shorter than ``min_size``, or that zstd would not shrink,
stay uncompressed; inside a frame the codec tag says which. A trained
:class:`zstandard.ZstdCompressionDict` helps many small, similar payloads; frames
written with one record its id, and a reader without that dictionary fails with
:class:`~typedq.errors.UnknownCodecError`.

:class:`BoundedDecompressor` never inflates past a limit: the size a zstd frame claims
is checked before anything is allocated (a few-KB "bomb" claiming 1 GiB is refused
with :class:`~typedq.errors.PayloadTooLargeError` at once), frames that claim no size
are inflated into a buffer of at most the limit, and the decompression window is
capped too.

zstd objects are not thread-safe, so compressors and decompressors are kept per thread
(``threading.local``): the hot path does no per-call setup.
"""

from __future__ import annotations

import threading
from typing import Any, Final

import zstandard

from typedq.errors import ConfigError, DeserializationError, PayloadTooLargeError
from typedq.serializers._common import DEFAULT_MAX_SIZE, check_int
from typedq.serializers._protocol import Serializer

__all__ = ["ZSTD_MAGIC", "BoundedDecompressor", "Compressed"]

ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
"""The first four bytes of every zstd frame."""

_MIN_LEVEL: Final = -7
_MAX_LEVEL: Final = 22
# zstd's streaming window for levels up to 19 is at most 8 MiB (window log 23).
_MIN_WINDOW: Final = 1 << 23


class BoundedDecompressor:
    """Decompress one zstd frame into at most ``limit`` bytes.

    Args:
        limit: The most bytes a frame may inflate to.
        dictionary: The dictionary the frames were compressed with, if any.
    """

    def __init__(self, limit: int, dictionary: zstandard.ZstdCompressionDict | None = None) -> None:
        self.limit = limit
        self.dictionary = dictionary
        # Frames of unknown size are inflated in streaming mode, which needs a window
        # buffer: cap it (8 MiB, or the limit if larger) so a frame declaring a huge
        # window is refused instead of allocating up to zstd's default 128 MiB.
        self._max_window = max(_MIN_WINDOW, 1 << max(0, limit - 1).bit_length())
        self._local = threading.local()

    def __repr__(self) -> str:
        dict_id = self.dictionary.dict_id() if self.dictionary is not None else None
        return f"BoundedDecompressor(limit={self.limit}, dict_id={dict_id})"

    def _new(self) -> zstandard.ZstdDecompressor:
        if self.dictionary is None:
            return zstandard.ZstdDecompressor(max_window_size=self._max_window)
        return zstandard.ZstdDecompressor(dict_data=self.dictionary, max_window_size=self._max_window)

    def _get(self) -> zstandard.ZstdDecompressor:
        try:
            decompressor: zstandard.ZstdDecompressor = self._local.decompressor
        except AttributeError:
            decompressor = self._local.decompressor = self._new()
        return decompressor

    def decompress(self, data: bytes | memoryview) -> bytes:
        """Inflate one zstd frame, refusing it before inflation if it is too large.

        Args:
            data: Exactly one zstd frame.

        Returns:
            The inflated bytes, at most ``limit`` of them.

        Raises:
            PayloadTooLargeError: The frame claims, or turns out, to inflate past
                ``limit``.
            DeserializationError: Not a zstd frame, corrupt, truncated, trailing
                data, or a checksum mismatch.
        """
        try:
            claimed = zstandard.frame_content_size(data)
        except zstandard.ZstdError as exc:
            raise DeserializationError(f"invalid zstd frame header: {exc}") from exc
        if claimed > self.limit:
            raise PayloadTooLargeError(claimed, self.limit, what="decompressed payload")
        try:
            if claimed >= 0:
                # Known size: one allocation of exactly `claimed` bytes, and zstd
                # errors out if the frame tries to write more.
                return self._get().decompress(data, allow_extra_data=False)
            return self._get().decompress(data, max_output_size=self.limit, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            if claimed < 0:
                self._raise_if_too_large(data)
            raise DeserializationError(f"invalid zstd data: {exc}") from exc

    def _raise_if_too_large(self, data: bytes | memoryview) -> None:
        """Tell "too large" from "corrupt" for a frame of unknown size, reading at
        most ``limit + 1`` bytes of output."""
        total = 0
        try:
            with self._new().stream_reader(data) as reader:
                while total <= self.limit:
                    chunk = reader.read(self.limit + 1 - total)
                    if not chunk:
                        return
                    total += len(chunk)
        except zstandard.ZstdError:
            return
        raise PayloadTooLargeError(total, self.limit, what="decompressed payload, read so far,")


class Compressed:
    """zstd around another serializer: ``Compressed(MsgpackSerializer())``.

    Used on its own (``dumps``/``loads``), the output is either the inner bytes
    (small or incompressible payloads) or one zstd frame, told apart by the zstd magic
    number, which no built-in serializer's output starts with. Inside a
    :class:`~typedq.serializers.base.FrameCodec`, the frame's codec tag says which.

    Args:
        inner: The serializer whose output is compressed (not another Compressed).
        level: zstd level, -7 (fastest) to 22 (smallest); 3 is zstd's default.
        min_size: Payloads shorter than this many bytes are stored uncompressed.
        dictionary: A trained zstd dictionary (non-zero id) for small similar payloads.
        max_size: The most bytes standalone ``loads`` inflates to.

    Raises:
        ConfigError: A bad level, min_size, dictionary or inner serializer.
    """

    def __init__(
        self,
        inner: Serializer,
        level: int = 3,
        min_size: int = 256,
        dictionary: zstandard.ZstdCompressionDict | None = None,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if isinstance(inner, Compressed):
            raise ConfigError("serializer", inner.name, "an uncompressed serializer inside Compressed")
        check_int("level", level, _MIN_LEVEL, _MAX_LEVEL)
        check_int("min_size", min_size, 0)
        check_int("max_size", max_size, 1)
        self.dict_id: int | None = None
        if dictionary is not None:
            if not isinstance(dictionary, zstandard.ZstdCompressionDict):
                raise ConfigError("dictionary", dictionary, "a zstandard.ZstdCompressionDict or None")
            self.dict_id = dictionary.dict_id()
            if not self.dict_id:
                raise ConfigError(
                    "dictionary",
                    "<dictionary with id 0>",
                    "a trained dictionary (zstandard.train_dictionary) with a non-zero id",
                )
        self.inner = inner
        self.name: str = f"{inner.name}+zstd"
        self.level = level
        self.min_size = min_size
        self.dictionary = dictionary
        self.max_size = max_size
        self._local = threading.local()
        self._decompressor = BoundedDecompressor(max_size, dictionary)

    def __repr__(self) -> str:
        return (
            f"Compressed({self.inner!r}, level={self.level}, min_size={self.min_size}, "
            f"dict_id={self.dict_id})"
        )

    def _compressor(self) -> zstandard.ZstdCompressor:
        try:
            compressor: zstandard.ZstdCompressor = self._local.compressor
        except AttributeError:
            compressor = self._local.compressor = zstandard.ZstdCompressor(
                level=self.level,
                dict_data=self.dictionary,
                write_checksum=True,
                write_content_size=True,
                # The frame header records the dictionary id; no need to repeat it.
                write_dict_id=False,
            )
        return compressor

    def compress(self, data: bytes) -> bytes | None:
        """Compress serialized bytes, or say they are better left as they are.

        Args:
            data: The inner serializer's output.

        Returns:
            One zstd frame, or None when ``data`` is shorter than ``min_size`` or zstd
            would not make it smaller.
        """
        if len(data) < self.min_size:
            return None
        packed = self._compressor().compress(data)
        return packed if len(packed) < len(data) else None

    def dumps(self, obj: Any) -> bytes:
        """Serialize with the inner serializer, then compress when worthwhile.

        Args:
            obj: A value the inner serializer supports.

        Returns:
            A zstd frame, or the inner bytes when compression does not pay.

        Raises:
            SerializationError: The inner serializer refused the value.
        """
        data = self.inner.dumps(obj)
        packed = self.compress(data)
        return data if packed is None else packed

    def loads(self, data: bytes) -> Any:
        """Decompress (bounded by ``max_size``) when ``data`` is a zstd frame, then
        deserialize with the inner serializer.

        Args:
            data: Output of :meth:`dumps`.

        Returns:
            The decoded value.

        Raises:
            PayloadTooLargeError: The frame inflates past ``max_size``.
            DeserializationError: Corrupt data.
        """
        if data[:4] == ZSTD_MAGIC:
            data = self._decompressor.decompress(data)
        return self.inner.loads(data)
