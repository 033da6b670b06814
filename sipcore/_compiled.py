"""Which pure-Python modules are compiled with mypyc, and the switch back to their sources.

The SIP stack's hot path (message parsing and serialization, headers, URIs, SDP, digest, the
transaction layer, the sans-IO endpoint, dialogs and the INVITE usage) is plain, ``mypy --strict``-typed Python.
``setup.py`` compiles the modules in :data:`COMPILED` with mypyc into C extensions that sit
beside their ``.py`` sources and take precedence on import; the source stays the readable
reference. The calls benchmark measures the gain (bench/README.md).

``ASYNCPBX_NO_EXTENSIONS=1`` (DESIGN.md principle 6, the test suite's second run) makes these
modules load from their ``.py`` sources (the switch itself is :func:`native.extensions_disabled`,
shared with the media kernels): :func:`prefer_sources` puts a finder in front of the
import system for exactly these names. Without the variable, a module that was not compiled is
reported by :func:`missing`, one whose source was edited after the build by :func:`stale` (both
checked by the tests and logged at start-up): never a silent slow path, never silently old code.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from native import extensions_disabled as extensions_disabled

#: The modules setup.py compiles with mypyc (dotted names; each has its .py beside it). The
#: asyncio adapters (sipcore.aio) stay interpreted: they are thin, and uvloop hands them values
#: whose types differ from typeshed's (a list where it says tuple), which compiled code rejects.
COMPILED: tuple[str, ...] = (
    "sipcore.headers",
    "sipcore.uri",
    "sipcore.message",
    "sipcore.sdp",
    "sipcore.digest",
    "sipcore.transaction",
    "sipcore.endpoint",
    "sipcore.dialog",
    "sipcore.invite_session",
)


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Find the modules of :data:`COMPILED` as their ``.py`` source, never the extension."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        leaf = _source_name(fullname)
        for entry in path or ():
            source = Path(entry) / leaf
            if source.is_file():
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def prefer_sources() -> None:
    """Load the :data:`COMPILED` modules from source from now on (idempotent)."""
    if not any(isinstance(f, _SourcesFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourcesFirst())


def is_compiled(module: ModuleType) -> bool:
    """True when ``module`` was loaded from a compiled extension."""
    return not str(getattr(module, "__file__", "") or "").endswith(".py")


def _built() -> dict[str, Path | None]:
    """Each :data:`COMPILED` module -> the extension the import system would load for it, or
    None when it would load the ``.py`` source."""
    out: dict[str, Path | None] = {}
    for name in COMPILED:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        out[name] = None if origin is None or origin.endswith(".py") else Path(origin)
    return out


def missing() -> list[str]:
    """The :data:`COMPILED` modules that are loaded (or would load) from source although the
    extensions are not disabled: a build that skipped mypyc. Empty when all is compiled."""
    if extensions_disabled():
        return []
    return [name for name, built in _built().items() if built is None]


def stale() -> list[str]:
    """The :data:`COMPILED` modules whose ``.py`` source changed after the extension was built:
    in an editable checkout, an edit (or a ``git checkout``) does not reach the compiled module
    until ``pip install -e .`` runs again — the tests and the start-up log say so instead of
    silently running the old code. Empty when the extensions are disabled or not built."""
    if extensions_disabled():
        return []
    out = []
    for name, built in _built().items():
        if built is None:
            continue
        source = built.parent / _source_name(name)
        if source.is_file() and source.stat().st_mtime > built.stat().st_mtime:
            out.append(name)
    return out


def _source_name(name: str) -> str:
    """``sipcore.message`` -> ``message.py``."""
    return name.rpartition(".")[2] + ".py"


if extensions_disabled():
    prefer_sources()
