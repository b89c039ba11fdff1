"""Runtime checks of numeric settings, shared by every layer that takes one.

Values arrive from config files and keyword arguments, so their static types can't be
trusted: each check takes ``object`` and raises ``ConfigError`` naming the field, the
value and what is allowed.
"""

from __future__ import annotations

import math

from typedq.errors import ConfigError

__all__ = ["require_number"]


def require_number(
    field: str,
    value: object,
    *,
    minimum: float,
    strict: bool = False,
    integer: bool = False,
    allow_none: bool = False,
    maximum: float | None = None,
) -> None:
    """Raise ``ConfigError`` unless ``value`` is a finite number in range.

    Args:
        field: the option's name, for the message.
        value: what was given.
        minimum: the lowest allowed value.
        strict: ``minimum`` itself is not allowed.
        integer: only ints are allowed.
        allow_none: None is allowed.
        maximum: the highest allowed value, if any.
    """
    if value is None and allow_none:
        return
    kind = "an int" if integer else "a number"
    op = ">" if strict else ">="
    allowed = f"{'None or ' if allow_none else ''}{kind} {op} {minimum:g}"
    if maximum is not None:
        allowed += f" and <= {maximum:g}"
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise ConfigError(field, value, allowed)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ConfigError(field, value, allowed)
    if maximum is not None and value > maximum:
        raise ConfigError(field, value, allowed)
