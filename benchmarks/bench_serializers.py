"""Serializer benchmark: frame codec versus the bare library call, in one run.

Run: ``.venv/bin/python benchmarks/bench_serializers.py [--runs 5] [--seconds 0.2]``

For a typical payload (a dozen fields and a nested list, ~300 bytes as JSON) and a
large one (~50 kB of repetitive text) it prints, per serializer, dumps+loads per second
and the encoded size through ``typedq.serializers.get_serializer(name)`` (the frame
codec), the same for the bare library call, and the ratio of their costs
(frame time / bare time, the median of per-round ratios: the three variants are
timed in turn in every round so background load hits them alike). Each rate is the
median of ``--runs`` timeit-style loops.

"Bare" means: ``json.dumps(obj).encode()`` + ``json.loads(data)``;
``msgpack.packb(obj)`` + ``msgpack.unpackb(data)``; ``pickle.dumps(obj, 5)`` +
``pickle.loads(data)``; for ``+zstd`` names the bare call is followed by
``zstandard.compress`` / ``zstandard.decompress``.

Targets: frame <= 1.3x bare on the typical payload; zstd shrinks the large payload
at least 5x.
"""

from __future__ import annotations

import argparse
import json
import pickle
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no type information shipped
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from typedq.serializers import get_serializer, make_serializer

TYPICAL: dict[str, Any] = {
    "id": "job_01HZX3K9Q2",
    "type": "resize_image",
    "user_id": 123456,
    "priority": 5,
    "url": "https://example.com/images/photo-0001.jpg",
    "width": 640,
    "height": 480,
    "quality": 0.85,
    "formats": ["webp", "jpeg", "avif"],
    "tags": ["user", "upload"],
    "retries": 3,
    "notify": True,
    "meta": {"source": "api", "region": "eu-west-1", "trace": None},
}

_LINE = "2024-05-01T12:00:00Z INFO worker-7 processed job resize_image in 12 ms status=ok\n"
LARGE: dict[str, Any] = {
    "id": "job_large",
    "lines": [_LINE.replace("12 ms", f"{i % 50} ms") for i in range(600)],
}

_ZC = zstandard.ZstdCompressor(level=3)
_ZD = zstandard.ZstdDecompressor()


def _bare(name: str) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    base, _, codec = name.partition("+")
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]
    if base == "json":
        dumps, loads = (lambda o: json.dumps(o).encode()), json.loads
    elif base == "msgpack":
        dumps, loads = msgpack.packb, msgpack.unpackb
    else:
        dumps, loads = (lambda o: pickle.dumps(o, 5)), pickle.loads
    if not codec:
        return dumps, loads
    inner_dumps, inner_loads = dumps, loads
    return (lambda o: _ZC.compress(inner_dumps(o))), (lambda b: inner_loads(_ZD.decompress(b)))


Pair = tuple[Callable[[Any], bytes], Callable[[bytes], Any]]


def _loop_count(pair: Pair, obj: Any, seconds: float) -> int:
    """Loops of dumps+loads that take about `seconds`, like timeit.autorange."""
    dumps, loads = pair
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            loads(dumps(obj))
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 5:
            return max(1, int(number * seconds / elapsed))
        number *= 2


def _rates(pairs: list[Pair], obj: Any, runs: int, seconds: float) -> list[list[float]]:
    """dumps+loads per second of each pair, for each of `runs` rounds.

    The pairs are timed in turn within every round, so background load on a shared
    machine hits them alike and per-round ratios stay meaningful.
    """
    counts = [_loop_count(pair, obj, seconds) for pair in pairs]
    rounds: list[list[float]] = []
    for _ in range(runs):
        row = []
        for (dumps, loads), number in zip(pairs, counts, strict=True):
            start = time.perf_counter()
            for _ in range(number):
                loads(dumps(obj))
            row.append(number / (time.perf_counter() - start))
        rounds.append(row)
    return rounds


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args()
    key = secrets.token_bytes(32)
    names = ["json", "msgpack", "pickle", "json+zstd", "msgpack+zstd", "pickle+zstd"]
    payloads = {"typical": TYPICAL, "large": LARGE}
    print(f"python {sys.version.split()[0]}, median of {args.runs} runs")
    header = (
        f"{'payload':8} {'serializer':13} {'frame ops/s':>12} {'bare ops/s':>11} "
        f"{'ratio':>6} {'ser ops/s':>10} {'hdr':>5} {'frame B':>8} {'bare B':>8}"
    )
    print(header)
    print("-" * len(header))
    sizes: dict[tuple[str, str], int] = {}
    for label, obj in payloads.items():
        for name in names:
            codec = get_serializer(name, pickle_key=key if "pickle" in name else None)
            alone = make_serializer(name)
            bare_dumps, bare_loads = _bare(name)
            assert codec.decode(codec.encode(obj)) == obj
            rounds = _rates(
                [(codec.encode, codec.decode), (bare_dumps, bare_loads), (alone.dumps, alone.loads)],
                obj,
                args.runs,
                args.seconds,
            )
            frame_rate, bare_rate, alone_rate = (
                statistics.median(row[i] for row in rounds) for i in range(3)
            )
            # Ratios are medians of per-round ratios (cost = 1 / rate).
            ratio = statistics.median(row[1] / row[0] for row in rounds)
            hdr = statistics.median(row[2] / row[0] for row in rounds)
            frame_size = len(codec.encode(obj))
            sizes[label, name] = frame_size
            print(
                f"{label:8} {name:13} {frame_rate:12,.0f} {bare_rate:11,.0f} "
                f"{ratio:6.2f} {alone_rate:10,.0f} "
                f"{hdr:5.2f} {frame_size:8,} {len(bare_dumps(obj)):8,}"
            )
    print()
    print("ratio = frame cost / bare library cost; hdr = frame cost / typedq serializer cost")
    for base in ("json", "msgpack", "pickle"):
        plain, packed = sizes["large", base], sizes["large", f"{base}+zstd"]
        print(f"zstd on the large payload, {base}: {plain:,} -> {packed:,} B = {plain / packed:.1f}x")


if __name__ == "__main__":
    main()
