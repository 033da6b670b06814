"""The ``asyncpbx`` command line (filled in by the application work)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``asyncpbx`` console script."""
    print("asyncpbx: not yet wired", file=sys.stderr)
    return 2
