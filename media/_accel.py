"""Choose between a Cython kernel and its pure-Python reference (DESIGN.md principle 6).

``ASYNCPBX_NO_EXTENSIONS=1`` selects the references explicitly. Otherwise a missing extension is an
error, never a silent slow path.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# One switch for the whole tree: the same variable also turns off the mypyc-compiled modules.
from native import extensions_disabled

__all__ = ["extensions_disabled", "load"]


def load(extension: str, reference: str) -> ModuleType:
    """Import ``extension`` (a compiled module) or, when disabled, ``reference``.

    Raises ``ImportError`` naming the build command when the extension is missing and not
    explicitly disabled.
    """
    if extensions_disabled():
        return importlib.import_module(reference)
    try:
        return importlib.import_module(extension)
    except ImportError as exc:  # pragma: no cover - exercised only on a broken build
        raise ImportError(
            f"compiled extension {extension!r} is missing ({exc}); build it with "
            "`pip install -e .` or set ASYNCPBX_NO_EXTENSIONS=1 to use the Python references"
        ) from exc
