"""native — the one switch between the compiled extensions and their pure-Python references.

``ASYNCPBX_NO_EXTENSIONS=1`` (DESIGN.md principle 6, the test suite's second run) makes the whole
tree run on its readable references: the Cython media kernels (``media._accel.load``) and the
mypyc-compiled SIP modules (``sipcore._compiled``) alike. Both packages read the variable here,
so neither imports the other: ``sipcore`` imports nothing of ours and ``media`` nothing of
``sipcore`` (``tests/test_sourcecode.py`` enforces both); this package imports nothing at all.
"""

from __future__ import annotations

import os

__all__ = ["ENV_VAR", "extensions_disabled"]

#: The environment variable that selects the pure-Python references.
ENV_VAR = "ASYNCPBX_NO_EXTENSIONS"


def extensions_disabled() -> bool:
    """True when ``ASYNCPBX_NO_EXTENSIONS`` asks for the pure-Python references (unset, empty
    or ``0``: the compiled extensions)."""
    return os.environ.get(ENV_VAR, "") not in ("", "0")
