"""Private helpers shared by the serializers: default limits, JSON-path formatting, and
the two walks over a value before it is encoded.

* :func:`keys_look_fine` is the cheap walk on every ``dumps``: it checks that every
  mapping key has an allowed type and that nesting depth and the number of elements
  stay bounded (so a cyclic value cannot loop forever, and a value that shares one list
  many times over cannot expand past the size limit). It answers only yes or no.
* :func:`find_problem` is the slow walk, run only when something failed: it finds the
  first unsupported value, key, cycle or too-deep container in document order and
  names its path, such as ``$.items[3].when``.

Nothing here is public API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from typedq.errors import ConfigError
from typedq.job import lone_surrogate

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "LeafCheck",
    "PathNode",
    "check_int",
    "describe",
    "find_problem",
    "format_path",
    "keys_look_fine",
    "surrogate_problem",
]

DEFAULT_MAX_SIZE: Final = 1_048_576
"""Default cap, in bytes, on a serialized payload (1 MiB)."""

DEFAULT_MAX_DEPTH: Final = 200
"""Default cap on JSON nesting depth (containers inside containers)."""

# A path is a linked list from leaf to root: (key, is_index, parent). It is only
# built by the slow walk, so the hot path never pays for path bookkeeping.
PathNode: TypeAlias = "tuple[Any, bool, PathNode] | None"

LeafCheck: TypeAlias = Callable[[Any], "str | None"]
"""Returns why a non-container value is unsupported, or None when it is fine."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_KEY_REPR = 40
_MAX_PATH_PARTS = 20

# Values of these exact types are never containers: the fast walk skips them.
_SCALARS: Final = frozenset({str, int, float, bool, type(None), bytes})
_LIST_TYPES: Final = (list, tuple)


def check_int(field: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """Validate an int option (``bool`` is refused), raising ConfigError naming it.

    Args:
        field: The option's name.
        value: The value given.
        minimum: The smallest allowed value.
        maximum: The largest allowed value, if any.

    Returns:
        The value.

    Raises:
        ConfigError: Not an int, or out of range.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        if maximum is None:
            raise ConfigError(field, value, f"an int >= {minimum}")
        raise ConfigError(field, value, f"an int from {minimum} to {maximum}")
    return value


def describe(value: Any) -> str:
    """A short, bounded description of a value for error messages."""
    text = repr(value)
    if len(text) > _MAX_KEY_REPR:
        text = text[: _MAX_KEY_REPR - 3] + "..."
    return f"{text} ({type(value).__name__})"


def format_path(node: PathNode) -> str:
    """Render a path node as a JSONPath-like string: ``$``, ``$.a[3]``, ``$["a b"]``.

    Paths deeper than 20 segments keep their first and last 10, with the number of
    hidden levels in between.
    """
    parts: list[str] = []
    while node is not None:
        key, is_index, node = node
        if is_index:
            parts.append(f"[{key}]")
        elif isinstance(key, str) and _IDENTIFIER.match(key):
            parts.append(f".{key}")
        elif isinstance(key, str):
            parts.append(f"[{json.dumps(key)[:_MAX_KEY_REPR]}]")
        else:
            parts.append(f"[{describe(key)}]")
    parts.reverse()
    if len(parts) > _MAX_PATH_PARTS:
        # Keep messages readable for values nested hundreds deep.
        keep = _MAX_PATH_PARTS // 2
        hidden = len(parts) - 2 * keep
        parts = [*parts[:keep], f"...({hidden} levels)...", *parts[-keep:]]
    return "$" + "".join(parts)


def keys_look_fine(obj: Any, key_types: tuple[type, ...], max_depth: int, max_elements: int) -> bool:
    """Cheaply check mapping keys, nesting depth and the number of elements.

    An *element* is a list item or a mapping entry, counted each time it is reached: a
    list shared ten times over counts ten times, as its encoding is written ten times.
    Each element takes at least one byte in JSON and in msgpack, so a value with more
    elements than the size limit has in bytes cannot fit it: the bound refuses such a
    value (a cycle too) before anything is encoded, however small it is in memory.

    A False answer is not an error by itself: the caller runs :func:`find_problem`,
    which decides (a key of a subclass of an allowed type may fail here, yet is fine).

    Args:
        obj: The value about to be encoded.
        key_types: The exact key types the format supports.
        max_depth: The deepest nesting allowed (the root container is depth 1).
        max_elements: Give up (answer False) past this many elements.

    Returns:
        True when every key has an allowed type and both bounds hold.
    """
    kind = type(obj)
    if kind in _SCALARS:
        return True
    if kind is dict and max_depth >= 2:
        # The common payload, a dict of str keys whose values are scalars, lists of
        # scalars or dicts of str keys to scalars, is answered in C calls: the keys
        # joined, each container's types a set.
        try:
            "".join(obj)
        except TypeError:
            pass
        else:
            scalars = _SCALARS
            elements = len(obj)
            for value in obj.values():
                kind = type(value)
                if kind in scalars:
                    continue
                if kind in _LIST_TYPES:
                    if not scalars.issuperset(map(type, value)):
                        break
                elif kind is dict:
                    try:
                        "".join(value)
                    except TypeError:
                        break
                    if not scalars.issuperset(map(type, value.values())):
                        break
                else:
                    break
                elements += len(value)
            else:
                return elements <= max_elements
    return _walk_keys(obj, key_types, max_depth, max_elements)


def _walk_keys(obj: Any, key_types: tuple[type, ...], max_depth: int, max_elements: int) -> bool:
    """:func:`keys_look_fine` for any value: the walk over every container."""
    # The walk goes one nesting level at a time, so the depth is the level number and
    # nothing per value (no (value, depth) pairs) is allocated: on a typical payload
    # this walk costs more than the msgpack packer itself, so every step counts.
    level: list[Any] = [obj]
    depth = 0
    elements = 0
    join = "".join  # "all keys are str" in one C call; raises TypeError otherwise
    scalars = _SCALARS
    while level:
        depth += 1
        if depth > max_depth:
            return False
        below: list[Any] = []
        push = below.append
        for item in level:
            if isinstance(item, dict):
                try:
                    join(item)
                except TypeError:
                    for key in item:
                        if type(key) not in key_types:
                            return False
                values: Any = item.values()
            elif isinstance(item, _LIST_TYPES):
                values = item
            else:
                continue
            # Counted before the values are looked at: the next level never holds more
            # than max_elements values, however often one is shared (or a cycle turns).
            elements += len(item)
            if elements > max_elements:
                return False
            if values is item and item and type(item[0]) is str:
                # Probably a list of str: one C call answers "nothing to look into".
                try:
                    join(item)
                    continue
                except TypeError:
                    pass
            for value in values:
                if type(value) not in scalars:
                    push(value)
        level = below
    return True


def find_problem(
    obj: Any,
    *,
    check_leaf: LeafCheck,
    check_key: LeafCheck,
    max_depth: int,
    max_elements: int,
    format_name: str,
) -> tuple[str, str] | None:
    """Find the first value in ``obj`` that the format cannot encode.

    The walk is iterative (a value nested 100,000 deep cannot raise RecursionError),
    detects cycles, and stops past ``max_elements`` elements (list items and mapping
    entries, a shared value counted each time: see :func:`keys_look_fine`).

    Args:
        obj: The value that failed to encode (or failed :func:`keys_look_fine`).
        check_leaf: Says why a non-container value is unsupported, or None.
        check_key: Says why a mapping key is unsupported, or None.
        max_depth: The deepest nesting allowed.
        max_elements: The most elements to visit before giving up.
        format_name: The format's name, for messages ("JSON", "msgpack").

    Returns:
        ``(path, reason)`` for the first problem, or None when the value is fine.
    """
    on_path: set[int] = set()
    # Entries are (value, path, depth); depth -1 marks "leaving the container id(value)".
    stack: list[tuple[Any, PathNode, int]] = [(obj, None, 0)]
    elements = 0
    while stack:
        item, node, depth = stack.pop()
        if depth < 0:
            on_path.discard(item)
            continue
        if isinstance(item, dict | list | tuple):
            # Counted before the children are listed, so a value shared many times over
            # never makes this walk allocate more than max_elements of them.
            elements += len(item)
            if elements > max_elements:
                return (
                    "$",
                    f"more than {max_elements} list items and mapping entries (a value shared "
                    "many times over counts each time): its encoding could not fit the size "
                    f"limit of {max_elements} bytes",
                )
        if isinstance(item, dict):
            children: list[tuple[Any, PathNode, int]] = []
            for key, value in item.items():
                reason = check_key(key)
                if reason is not None:
                    return format_path(node), f"mapping key {describe(key)} {reason}"
                children.append((value, (key, False, node), depth + 1))
        elif isinstance(item, _LIST_TYPES):
            children = [(value, (index, True, node), depth + 1) for index, value in enumerate(item)]
        else:
            reason = check_leaf(item)
            if reason is not None:
                return format_path(node), reason
            continue
        if id(item) in on_path:
            return format_path(node), "circular reference: the value contains itself"
        if depth + 1 > max_depth:
            return (
                format_path(node),
                f"nesting is deeper than {max_depth} levels, the {format_name} limit",
            )
        on_path.add(id(item))
        stack.append((id(item), None, -1))
        stack.extend(reversed(children))
    return None


def surrogate_problem(text: str) -> str | None:
    """What is wrong with ``text`` for a serializer (a lone surrogate, which UTF-8 cannot
    encode), or None."""
    index = lone_surrogate(text)
    if index is None:
        return None
    return f"contains a lone surrogate at index {index}, which UTF-8 cannot encode"
