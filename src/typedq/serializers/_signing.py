"""Private: the HMAC-SHA256 that signs frames, with each key's pad blocks hashed once.

:class:`HmacSha256` computes exactly ``hmac.new(key, msg, "sha256").digest()`` (RFC 2104),
which a unit test checks against :mod:`hmac` for keys shorter than, equal to and longer
than the 64-byte SHA-256 block. It exists for speed: the keyed inner and outer SHA-256
states are computed once per key, so a MAC costs two ``hashlib`` copies, the updates and
two digests, all C calls. ``hmac.new(...).copy()`` reaches the same C code through the
pure-Python ``hmac.HMAC`` wrapper, which made signing and verifying cost about twice as
much on a typical 300-byte payload.

The key itself is not kept: only the two hash states, so neither an attribute nor a
repr can show it (and, as with :mod:`hmac` objects, a signer cannot be pickled).

Nothing here is public API.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["HmacSha256"]

_BLOCK_SIZE: Final = 64  # SHA-256's block size, the HMAC pad length
# XOR tables for the inner (0x36) and outer (0x5C) pads, applied with bytes.translate,
# as the hmac module does.
_INNER_PAD: Final = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD: Final = bytes(byte ^ 0x5C for byte in range(256))


class HmacSha256:
    """HMAC-SHA256 under one key, for frame signatures.

    Args:
        key: The secret key (any length; keys longer than 64 bytes are hashed first,
            as RFC 2104 says).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK_SIZE:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK_SIZE, b"\0")
        self._inner = hashlib.sha256(key.translate(_INNER_PAD))
        self._outer = hashlib.sha256(key.translate(_OUTER_PAD))

    def __repr__(self) -> str:
        return "HmacSha256(<key redacted>)"

    def frame_mac(self, header: bytes, context: bytes, body: bytes | memoryview) -> bytes:
        """The MAC of a frame: over the header, the length-prefixed context and the body.

        Args:
            header: The frame header bytes before the signature.
            context: What the frame is bound to (the job id).
            body: The stored body.

        Returns:
            The 32-byte HMAC-SHA256 of ``header + len(context) (8 bytes, big-endian) +
            context + body``.
        """
        inner = self._inner.copy()
        # The length prefix keeps (header, context, body) splits unambiguous. One join
        # and one update cost less than four updates on a typical small frame.
        inner.update(b"".join((header, len(context).to_bytes(8, "big"), context, body)))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()
