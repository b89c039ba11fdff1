"""Stored fields of a job as codec frames: what every durable backend shares.

Payloads, metadata and results are stored as :class:`~typedq.serializers.base.FrameCodec`
frames, the job id being the frame context. Reading never fails on bad stored bytes: a
field that cannot be decoded is left at its default (``payload={}``, ``metadata={}``,
``result=None``) and described under ``metadata["typedq.undecodable"]``::

    {"payload": {"error": "UnknownCodecError: unknown serializer tag 9 ...",
                 "raw_base64": "wQEJAAB7fQ=="}}

``strict=True`` raises instead: claims use it and move such a job to DEAD.

The SQLite backend's ``RowCodec`` and the Redis backend's ``HashCodec`` both build on
:class:`FrameFields`; only their storage layout differs.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

from typedq.errors import DeserializationError, SerializationError
from typedq.job import Job
from typedq.serializers.base import FrameCodec

__all__ = ["UNDECODABLE_KEY", "Blobs", "FrameFields", "problem"]

#: Metadata key under which undecodable stored fields are described.
UNDECODABLE_KEY: Final = "typedq.undecodable"

#: (payload, metadata or None, result or None, depends_on JSON or None)
Blobs = tuple[bytes, bytes | None, bytes | None, str | None]


def _raw(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8", "replace")


def problem(exc: BaseException, value: object) -> dict[str, Any]:
    """How an undecodable stored value is described: the error and the raw bytes."""
    return {
        "error": f"{type(exc).__name__}: {exc}",
        "raw_base64": base64.b64encode(_raw(value)).decode("ascii"),
    }


class FrameFields:
    """Encodes and decodes a job's payload, metadata, result and dependencies."""

    def __init__(self, codec: FrameCodec) -> None:
        self.codec = codec
        self._encode = codec.encode
        self._decode = codec.decode

    # -- writing ------------------------------------------------------------------------

    def encode_result(self, job_id: str, result: Any) -> bytes | None:
        """The stored form of a result (None stays None).

        Raises:
            SerializationError: the value cannot be encoded (the message names the job).
        """
        if result is None:
            return None
        try:
            return self._encode(result, context=job_id.encode())
        except SerializationError as exc:
            exc.args = (f"result of job {job_id!r}: {exc}",)
            raise

    def blobs(self, job: Job) -> Blobs:
        """Encode a job's payload, metadata, result and dependencies.

        Raises:
            SerializationError: a field cannot be encoded; the message names the field
                and the job (the exception keeps its type, e.g. PayloadTooLargeError).
        """
        context = job.job_id.encode()
        field = "payload"
        try:
            payload = self._encode(job.payload, context=context)
            field = "metadata"
            metadata = self._encode(job.metadata, context=context) if job.metadata else None
            field = "result"
            result = None if job.result is None else self._encode(job.result, context=context)
        except SerializationError as exc:
            exc.args = (f"{field} of job {job.job_id!r}: {exc}",)
            raise
        depends = json.dumps(job.depends_on) if job.depends_on else None
        return payload, metadata, result, depends

    # -- reading ------------------------------------------------------------------------

    def decode_result(self, raw: Any, context: bytes, problems: dict[str, Any]) -> Any:
        """A stored result, or None (described in ``problems``) when it cannot be decoded."""
        if raw is None:
            return None
        try:
            return self._decode(raw, context=context)
        except Exception as exc:  # a reader never fails on stored bytes
            problems["result"] = problem(exc, raw)
            return None

    @staticmethod
    def decode_depends(raw: Any, problems: dict[str, Any]) -> list[str]:
        """Stored dependencies (JSON text), or [] (described in ``problems``)."""
        if raw is None:
            return []
        try:
            deps: list[str] = json.loads(raw)
        except Exception as exc:
            problems["depends_on"] = problem(exc, raw)
            return []
        return deps

    def _field(
        self,
        raw: Any,
        context: bytes,
        field: str,
        problems: dict[str, Any],
        *,
        strict: bool,
        job_id: str,
    ) -> dict[str, Any]:
        """A stored dict field (payload or metadata), decoded; see the module docstring.

        Raises:
            DeserializationError: with ``strict``, the field cannot be decoded or is not
                a dict; the message names the field and the job.
        """
        try:
            value = self._decode(raw, context=context)
            if type(value) is not dict:
                raise DeserializationError(f"{field} decodes to a {type(value).__name__}, not a dict")
        except Exception as exc:
            if strict:
                raise DeserializationError(
                    f"{type(exc).__name__}: the {field} of job {job_id!r} cannot be decoded: {exc}"
                ) from exc
            problems[field] = problem(exc, raw)
            return {}
        return value
