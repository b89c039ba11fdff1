"""The pickle serializer: stdlib :mod:`pickle`, protocol 5, never on by default.

Unpickling runs code chosen by whoever wrote the bytes, so typedq only ever unpickles
bytes whose HMAC-SHA256 signature has been verified: :class:`PickleSerializer` is usable
through a :class:`~typedq.serializers.base.FrameCodec` built with a ``pickle_key`` of
at least 32 bytes, and a codec that includes pickle without one is a
:class:`~typedq.errors.ConfigError`. Without a key, a pickle frame in storage is refused
with :class:`~typedq.errors.UnsafeSerializerError` and never unpickled.

Pickle carries any picklable Python value (sets, tuples, ``Decimal``, naive datetimes,
your own classes), at the price of tying stored jobs to your code's import paths.
"""

from __future__ import annotations

import pickle
from typing import Any, Final

from typedq.errors import DeserializationError, SerializationError

__all__ = ["PICKLE_PROTOCOL", "PickleSerializer"]

PICKLE_PROTOCOL: Final = 5


class PickleSerializer:
    """Pickle protocol 5. Only for bytes whose signature was verified.

    Do not call :meth:`loads` on bytes from storage yourself: go through a signed
    :class:`~typedq.serializers.base.FrameCodec`, which verifies first.
    """

    name: str = "pickle"

    def __repr__(self) -> str:
        return "PickleSerializer()"

    def dumps(self, obj: Any) -> bytes:
        """Pickle ``obj`` with protocol 5.

        Args:
            obj: Any picklable value.

        Returns:
            The pickle bytes.

        Raises:
            SerializationError: ``obj`` cannot be pickled (path ``$``: pickle does not
                report where).
        """
        try:
            return pickle.dumps(obj, protocol=PICKLE_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise SerializationError(f"$: cannot pickle the value: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        """Unpickle ``data``. Runs code chosen by the writer: verify it first.

        Args:
            data: Pickle bytes from a verified, signed frame.

        Returns:
            The unpickled value.

        Raises:
            DeserializationError: The bytes are not a valid pickle.
        """
        try:
            return pickle.loads(data)
        except Exception as exc:
            # Any exception type can come out of unpickling; callers see one.
            raise DeserializationError(f"invalid pickle data: {exc}") from exc
