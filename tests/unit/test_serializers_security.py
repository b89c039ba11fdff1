"""Security properties of the frame codec (RELIABILITY.md sections H5, H6 and I).

Pickle is off by default and never unpickled unverified; signatures bind the header,
the context (job id) and the body; keys rotate and never leak; decompression bombs and
hostile structures are refused cheaply, with typed errors.
"""

from __future__ import annotations

import hmac
import logging
import os
import pickle
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from typedq.errors import (
    ConfigError,
    DeserializationError,
    PayloadTooLargeError,
    SignatureError,
    UnsafeSerializerError,
)
from typedq.serializers import (
    BoundedDecompressor,
    FrameCodec,
    JSONSerializer,
    MsgpackSerializer,
    get_serializer,
)
from typedq.serializers._signing import HmacSha256
from typedq.serializers.base import CODEC_ZSTD, FLAG_SIGNED, FRAME_MAGIC

pytestmark = pytest.mark.security

KEY = bytes(range(100, 132))
OLD_KEY = bytes(range(200, 232))
GIB = 1 << 30
MIB = 1 << 20


class Sentinel:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.mkdir, (str(self.path),))


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


def signed_pickle_frame(
    sentinel: Path, *, key: bytes = KEY, context: bytes = b"job-A", name: str = "pickle"
) -> bytes:
    return get_serializer(name, pickle_key=key).encode(Sentinel(sentinel), context=context)


# -- I1: pickle disabled by default -----------------------------------------------


@pytest.mark.parametrize("name", ["json", "msgpack", "json+zstd"])
def test_pickle_frame_refused_when_pickle_disabled(name: str, sentinel: Path) -> None:
    frame = signed_pickle_frame(sentinel)
    with pytest.raises(UnsafeSerializerError, match="pickle is disabled; enable it with a signing key"):
        get_serializer(name).decode(frame, context=b"job-A")
    assert not sentinel.exists()


def test_unsigned_handcrafted_pickle_frame_refused(sentinel: Path) -> None:
    frame = bytes((FRAME_MAGIC, 1, 3, 0, 0)) + pickle.dumps(Sentinel(sentinel))
    with pytest.raises(UnsafeSerializerError, match="pickle is disabled"):
        get_serializer("json").decode(frame)
    # With pickle enabled, an unsigned pickle frame is refused as unsigned.
    with pytest.raises(SignatureError, match="not signed"):
        get_serializer("json", pickle_key=KEY).decode(frame)
    assert not sentinel.exists()


def test_valid_signed_pickle_frame_does_run(sentinel: Path) -> None:
    # Positive control: the payload used above really is live.
    frame = signed_pickle_frame(sentinel)
    get_serializer("json", pickle_key=KEY).decode(frame, context=b"job-A")
    assert sentinel.exists()


# -- I2: keys ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pickle", "pickle+zstd"])
def test_pickle_without_key_is_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^pickle_key=None .*at least 32 bytes") as info:
        get_serializer(name)
    assert info.value.field == "pickle_key"


@pytest.mark.parametrize("key", [b"", b"x" * 31, "y" * 31])
def test_short_key_is_config_error(key: bytes | str) -> None:
    with pytest.raises(ConfigError, match=r"^pickle_key=.*at least 32 bytes") as info:
        get_serializer("pickle", pickle_key=key)
    assert info.value.field == "pickle_key"
    if key:
        assert str(key)[2:-1] not in str(info.value)


def test_short_verify_key_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^verify_keys=") as info:
        get_serializer("pickle", pickle_key=KEY, verify_keys=[b"z" * 16])
    assert info.value.field == "verify_keys"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"verify_keys": [OLD_KEY]}, "verify_keys"),
        ({"sign_all": True}, "sign_all"),
        ({"pickle_key": KEY, "verify_keys": OLD_KEY}, "verify_keys"),
        ({"pickle_key": 12345}, "pickle_key"),
    ],
)
def test_key_option_misuse(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}=") as info:
        FrameCodec("json", **kwargs)
    assert info.value.field == field


def test_str_key_accepted() -> None:
    codec = get_serializer("pickle", pickle_key="s" * 32)
    assert codec.decode(codec.encode({1, 2})) == {1, 2}


# -- I3: tampering, wrong key, copied frames, rotation --------------------------


@pytest.mark.parametrize("name", ["pickle", "pickle+zstd"])
def test_every_tampered_byte_is_refused_before_unpickling(name: str, sentinel: Path) -> None:
    frame = signed_pickle_frame(sentinel, name=name)
    reader = get_serializer(name, pickle_key=KEY, min_size=0)
    for index in range(len(frame)):
        corrupt = bytearray(frame)
        corrupt[index] ^= 0x01
        with pytest.raises(DeserializationError):
            reader.decode(bytes(corrupt), context=b"job-A")
    assert not sentinel.exists()


def test_tampered_body_and_mac_give_signature_error(sentinel: Path) -> None:
    frame = signed_pickle_frame(sentinel)
    reader = get_serializer("pickle", pickle_key=KEY)
    for index in (5, 20, 36, 37, len(frame) - 1):  # MAC bytes and body bytes
        corrupt = bytearray(frame)
        corrupt[index] ^= 0x40
        with pytest.raises(SignatureError):
            reader.decode(bytes(corrupt), context=b"job-A")
    # Clearing the "signed" flag does not turn it into an unsigned pickle frame.
    unflagged = bytearray(frame)
    unflagged[4] &= ~FLAG_SIGNED
    with pytest.raises(SignatureError, match="not signed"):
        reader.decode(bytes(unflagged), context=b"job-A")
    assert not sentinel.exists()


def test_wrong_key_refused(sentinel: Path) -> None:
    frame = signed_pickle_frame(sentinel, key=OLD_KEY)
    with pytest.raises(SignatureError, match="does not verify"):
        get_serializer("pickle", pickle_key=KEY).decode(frame, context=b"job-A")
    assert not sentinel.exists()


def test_frame_copied_to_another_job_refused(sentinel: Path) -> None:
    frame = signed_pickle_frame(sentinel, context=b"job-A")
    reader = get_serializer("pickle", pickle_key=KEY)
    for context in (b"job-B", b"", b"job-A\x00", b"job-"):
        with pytest.raises(SignatureError, match="another context"):
            reader.decode(frame, context=context)
    assert not sentinel.exists()


def test_truncated_signature_refused(sentinel: Path) -> None:
    frame = signed_pickle_frame(sentinel)
    with pytest.raises(SignatureError, match="truncated"):
        get_serializer("pickle", pickle_key=KEY).decode(frame[:20], context=b"job-A")


def test_signed_frame_without_any_key_refused() -> None:
    writer = get_serializer("json", pickle_key=KEY, sign_all=True)
    frame = writer.encode({"a": 1})
    assert frame[4] & FLAG_SIGNED
    with pytest.raises(SignatureError, match="no key is configured"):
        FrameCodec("json").decode(frame)


def test_key_rotation(sentinel: Path) -> None:
    old_frame = get_serializer("pickle", pickle_key=OLD_KEY).encode({"v": 1}, context=b"j")
    rotated = get_serializer("pickle", pickle_key=KEY, verify_keys=[OLD_KEY])
    assert rotated.decode(old_frame, context=b"j") == {"v": 1}
    # New frames are signed with the new key only.
    new_frame = rotated.encode({"v": 2}, context=b"j")
    assert get_serializer("pickle", pickle_key=KEY).decode(new_frame, context=b"j") == {"v": 2}
    with pytest.raises(SignatureError):
        get_serializer("pickle", pickle_key=OLD_KEY).decode(new_frame, context=b"j")
    # Once the old key is removed, its frames are refused.
    with pytest.raises(SignatureError):
        get_serializer("pickle", pickle_key=KEY).decode(old_frame, context=b"j")


def test_sign_all_signs_and_requires_signatures() -> None:
    strict = get_serializer("msgpack", pickle_key=KEY, sign_all=True)
    frame = strict.encode({"a": 1}, context=b"j")
    assert frame[4] & FLAG_SIGNED
    assert strict.decode(frame, context=b"j") == {"a": 1}
    with pytest.raises(SignatureError, match="another context"):
        strict.decode(frame, context=b"k")
    unsigned = get_serializer("msgpack").encode({"a": 1})
    with pytest.raises(SignatureError, match="not signed"):
        strict.decode(unsigned)
    # A lenient reader with the key verifies signed frames too.
    assert get_serializer("json", pickle_key=KEY).decode(frame, context=b"j") == {"a": 1}


# -- I4: a bad MAC on a bomb never reaches the decompressor ----------------------


@pytest.fixture(scope="module")
def bomb_with_size() -> bytes:
    """1 GiB of zeros, zstd-compressed, with the content size in the header."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj(size=GIB)
    zeros = bytes(MIB)
    parts = [compressor.compress(zeros) for _ in range(1024)]
    parts.append(compressor.flush())
    data = b"".join(parts)
    assert zstandard.frame_content_size(data) == GIB
    return data


@pytest.fixture(scope="module")
def bomb_without_size() -> bytes:
    """1 GiB of zeros, zstd-compressed, claiming no content size."""
    compressor = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    zeros = bytes(MIB)
    parts = [compressor.compress(zeros) for _ in range(1024)]
    parts.append(compressor.flush())
    data = b"".join(parts)
    assert zstandard.frame_content_size(data) == -1
    return data


def test_bad_mac_on_bomb_rejected_without_decompressing(
    bomb_with_size: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = BoundedDecompressor.decompress

    def spy(self: BoundedDecompressor, data: bytes | memoryview) -> bytes:
        calls.append(len(data))
        return real(self, data)

    monkeypatch.setattr(BoundedDecompressor, "decompress", spy)
    monkeypatch.setattr(zstandard, "frame_content_size", lambda data: pytest.fail("inspected"))
    frame = bytes((FRAME_MAGIC, 1, 3, CODEC_ZSTD, FLAG_SIGNED)) + bytes(32) + bomb_with_size
    with pytest.raises(SignatureError):
        get_serializer("pickle+zstd", pickle_key=KEY).decode(frame, context=b"j")
    assert calls == []


def test_compare_digest_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    codec = get_serializer("pickle", pickle_key=KEY, verify_keys=[OLD_KEY])
    frame = codec.encode([1], context=b"j")
    assert codec.decode(frame, context=b"j") == [1]
    assert len(calls) == 1
    assert len(calls[0][0]) == 32
    with pytest.raises(SignatureError):
        codec.decode(frame, context=b"x")
    assert len(calls) == 3  # both keys tried


# -- I5: keys never leak -----------------------------------------------------------


def _leaks(text: str) -> bool:
    forms = [KEY.hex(), OLD_KEY.hex(), repr(KEY), repr(OLD_KEY), str(KEY)[2:-1]]
    return any(form in text for form in forms)


def test_keys_absent_from_reprs_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    codec = get_serializer("pickle+zstd", pickle_key=KEY, verify_keys=[OLD_KEY])
    texts = [repr(codec), str(codec), repr(codec.serializer), repr(vars(codec))]
    frame = codec.encode({"x": 1}, context=b"j")
    for bad in (frame[:-1], frame + b"x", b"\xc1\x01\x03\x00\x01" + bytes(40)):
        with pytest.raises(DeserializationError) as info:
            codec.decode(bad, context=b"j")
        texts += [str(info.value), repr(info.value)]
    with pytest.raises(ConfigError) as short:
        get_serializer("pickle", pickle_key=KEY[:31])
    texts += [str(short.value), repr(short.value), repr(short.value.value)]
    texts.append(caplog.text)
    for text in texts:
        assert not _leaks(text), text
    assert "verify_keys=1" in repr(codec)


# -- H5: decompression bombs ------------------------------------------------------


def _peak_growth(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        try:
            fn()
        finally:
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - base


@pytest.mark.parametrize("name", ["json+zstd", "msgpack+zstd"])
def test_bomb_claiming_1gib_refused_before_inflating(
    name: str, bomb_with_size: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    inflated: list[bool] = []
    monkeypatch.setattr(zstandard.ZstdDecompressor, "decompress", lambda *a, **k: inflated.append(True))
    frame = bytes((FRAME_MAGIC, 1, 1 if name.startswith("json") else 2, CODEC_ZSTD, 0))
    frame += bomb_with_size
    codec = get_serializer(name)

    def decode() -> None:
        with pytest.raises(PayloadTooLargeError) as info:
            codec.decode(frame)
        assert (info.value.size, info.value.limit) == (GIB, MIB)
        assert f"{GIB} bytes" in str(info.value)

    assert _peak_growth(decode) < 4 * MIB
    assert inflated == []


def test_bomb_without_size_is_bounded(bomb_without_size: bytes) -> None:
    frame = bytes((FRAME_MAGIC, 1, 1, CODEC_ZSTD, 0)) + bomb_without_size
    codec = get_serializer("json+zstd")

    def decode() -> None:
        with pytest.raises(PayloadTooLargeError, match="over the limit of 1048576"):
            codec.decode(frame)

    assert _peak_growth(decode) < 16 * MIB


def test_frame_lying_about_its_size_is_refused() -> None:
    honest = zstandard.ZstdCompressor().compress(b"a" * 10_000)
    # Claim 100 bytes (single-byte content size field) for 10,000 bytes of output.
    lie = zstandard.ZstdCompressor(write_content_size=True).compress(b"a" * 100)
    header_size = zstandard.frame_header_size(lie)
    frame = lie[:header_size] + honest[zstandard.frame_header_size(honest) :]
    with pytest.raises(DeserializationError, match="zstd"):
        BoundedDecompressor(MIB).decompress(frame)


def test_huge_window_refused_for_unsized_frames() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27)
    stream = zstandard.ZstdCompressor(compression_params=params).compressobj()
    data = stream.compress(os.urandom(1000) * 200) + stream.flush()
    assert zstandard.get_frame_parameters(data).window_size == 1 << 27
    with pytest.raises(DeserializationError, match="too much memory"):
        BoundedDecompressor(MIB).decompress(data)


# -- H6: hostile structure ------------------------------------------------------


def test_msgpack_bin32_claiming_4gib_in_10_bytes() -> None:
    hostile = b"\xc6\xff\xff\xff\xff" + b"abcde"
    assert len(hostile) == 10

    def decode() -> None:
        with pytest.raises(DeserializationError):
            MsgpackSerializer().loads(hostile)
        with pytest.raises(DeserializationError):
            get_serializer("msgpack").decode(bytes((FRAME_MAGIC, 1, 2, 0, 0)) + hostile)

    assert _peak_growth(decode) < MIB


@pytest.mark.parametrize(
    "hostile",
    [
        b"\xdd\xff\xff\xff\xff",  # array32 of 4 G items
        b"\xdf\xff\xff\xff\xff",  # map32 of 4 G pairs
        b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
        b"\xc9\xff\xff\xff\xff\x01",  # ext32 of 4 GiB
        b"\x91" * 5000 + b"\x00",  # 5000 nested arrays
    ],
)
def test_msgpack_hostile_headers(hostile: bytes) -> None:
    with pytest.raises(DeserializationError):
        MsgpackSerializer().loads(hostile)


@pytest.mark.parametrize("name", ["json", "json+zstd"])
def test_json_nested_100k_deep(name: str) -> None:
    text = b"[" * 100_000 + b"]" * 100_000
    codec = get_serializer(name)
    body = text if name == "json" else zstandard.ZstdCompressor().compress(text)
    frame = bytes((FRAME_MAGIC, 1, 1, 0 if name == "json" else CODEC_ZSTD, 0)) + body

    def decode() -> None:
        with pytest.raises(DeserializationError, match="100000 levels deep") as info:
            codec.decode(frame)
        assert not isinstance(info.value, RecursionError)
        with pytest.raises(DeserializationError, match="over the limit of 200"):
            JSONSerializer().loads(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)

    assert _peak_growth(decode) < 16 * MIB


# -- the frame MAC is HMAC-SHA256 -------------------------------------------------


@pytest.mark.parametrize("key_size", [32, 63, 64, 65, 200])
@pytest.mark.parametrize("body_size", [0, 1, 55, 64, 300, 5000])
def test_frame_mac_is_hmac_sha256(key_size: int, body_size: int) -> None:
    key = os.urandom(key_size)
    header, context, body = b"\xc1\x01\x03\x00\x01", b"job-42", os.urandom(body_size)
    message = header + len(context).to_bytes(8, "big") + context + body
    expected = hmac.new(key, message, "sha256").digest()
    assert HmacSha256(key).frame_mac(header, context, body) == expected
    assert HmacSha256(key).frame_mac(header, context, memoryview(body)) == expected


@pytest.mark.parametrize("name", ["pickle", "pickle+zstd", "json"])
def test_signed_frame_layout_is_stable(name: str) -> None:
    # Frames written by earlier versions must keep verifying: recompute the MAC with
    # the stdlib over header, length-prefixed context and body.
    frame = get_serializer(name, pickle_key=KEY, sign_all=True, min_size=0).encode(
        {"v": "x" * 400}, context=b"job-A"
    )
    header, mac, body = frame[:5], frame[5:37], frame[37:]
    message = header + (5).to_bytes(8, "big") + b"job-A" + body
    assert mac == hmac.new(KEY, message, "sha256").digest()


def test_signer_holds_no_key_and_cannot_be_pickled() -> None:
    signer = HmacSha256(KEY)
    assert not _leaks(repr(signer))
    with pytest.raises(TypeError):
        pickle.dumps(signer)


def test_signed_frame_over_the_limit_refused_before_verifying(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = get_serializer("pickle", pickle_key=KEY).encode("x" * 200, context=b"j")
    body_size = len(frame) - 37
    # The frame fits the frame limit (max_size + the longest header); its body does not.
    reader = get_serializer("pickle", pickle_key=KEY, max_size=body_size - 1)
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: pytest.fail("verified"))
    with pytest.raises(PayloadTooLargeError, match=f"stored payload is {body_size} bytes"):
        reader.decode(frame, context=b"j")
