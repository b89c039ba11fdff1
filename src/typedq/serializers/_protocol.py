"""The ``Serializer`` protocol, on its own so every serializer module can name it.

:mod:`typedq.serializers.base` re-exports it (``typedq.serializers.base.Serializer`` is
this class); ``compress`` and ``_registry`` import it from here, below ``base``, so the
package's modules import one another without a circle.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Serializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back.

    Attributes:
        name: The serializer's config name, such as ``"json"`` or ``"msgpack+zstd"``.
    """

    name: str

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj``.

        Args:
            obj: A value of the serializer's domain.

        Returns:
            The encoded bytes.

        Raises:
            SerializationError: ``obj`` is outside the domain; names the path.
        """
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by :meth:`dumps`.

        Args:
            data: Encoded bytes.

        Returns:
            The decoded value.

        Raises:
            DeserializationError: The bytes cannot be decoded.
        """
        ...
