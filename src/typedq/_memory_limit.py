"""Private: the memory limit of a worker process (the ``memory_limit_mb`` setting).

:func:`apply_memory_limit` caps the calling process's address space with ``RLIMIT_AS``;
:func:`start_error` says when a worker process that failed to start its worker threads
failed because of its cap. See ``typedq.process``, which applies it in each child.
"""

from __future__ import annotations

import resource
from typing import Final

from typedq._validate import require_number
from typedq.errors import ConfigError

__all__ = ["MIB", "apply_memory_limit", "start_error"]

#: Bytes per unit of ``memory_limit_mb``.
MIB: Final = 1 << 20
#: The largest limit ``setrlimit`` takes (a signed 64-bit count of bytes).
_RLIMIT_MAX: Final = (1 << 63) - 1


def _mapped_bytes() -> int | None:
    """This process's address space now (``VmSize``), or None where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def apply_memory_limit(limit_mb: int) -> int:
    """Cap this process's address space at ``limit_mb`` MiB (``RLIMIT_AS``).

    Both the soft and the hard limit are set, so code running later in the process (a
    handler) cannot lift the cap; a stricter limit already in place (``ulimit -v``) is
    kept. From then on every allocation that would map past the cap fails: Python raises
    ``MemoryError`` where it allocates. The cap counts virtual memory (every mapping,
    thread stacks and allocator arenas too), not resident memory; processes started
    later (a shell job's command) inherit it.

    Args:
        limit_mb: the cap in MiB (>= 1).

    Returns:
        The limit now in force, in bytes.

    Raises:
        ConfigError: ``limit_mb`` is not an int >= 1, or is not above the address space
            the process maps already (a worker process could not even start its threads).
    """
    require_number("memory_limit_mb", limit_mb, minimum=1, integer=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_force = [v for v in (soft, hard) if v != resource.RLIM_INFINITY]
    limit = min([limit_mb * MIB, _RLIMIT_MAX, *in_force])
    mapped = _mapped_bytes()
    if mapped is not None and limit <= mapped:
        mapped_mb = -(-mapped // MIB)
        raise ConfigError(
            "memory_limit_mb", limit_mb, f"an int > {mapped_mb} (MiB)",
            message=(
                f"memory_limit_mb={limit_mb} is below the {mapped_mb} MiB of address space a "
                "worker process maps before it starts its worker threads; allow a few hundred "
                "MiB more than that for the threads and the jobs"
            ),
        )
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def start_error(limit_mb: int, exc: BaseException) -> ConfigError | None:
    """The error to report when a worker process capped at ``limit_mb`` MiB failed to start
    its worker threads with ``exc``: its cap left no room to start a thread or allocate
    (None: ``exc`` has another cause)."""
    if not isinstance(exc, MemoryError) and "can't start new thread" not in str(exc):
        return None
    return ConfigError(
        "memory_limit_mb", limit_mb, f"an int > {limit_mb} (MiB)",
        message=(
            f"memory_limit_mb={limit_mb} is too low for a worker process to start its worker "
            f"threads ({type(exc).__name__}: {exc}); each thread maps a stack (8 MiB by default) "
            "and the allocator reserves more: allow a few hundred MiB more than the app needs"
        ),
    )
