"""``python -m typedq`` and the ``typedq`` console script.

The command line needs the ``cli`` extra (click); without it this prints one line saying
how to install it and exits 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``typedq`` command line; return its exit code."""
    try:
        from typedq.cli import main as cli_main  # noqa: PLC0415  (click is an optional extra)
    except ModuleNotFoundError as exc:
        if exc.name != "click":
            raise
        print("typedq: the command line needs click: pip install 'typedq[cli]'", file=sys.stderr)
        return 2
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
