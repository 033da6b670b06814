"""The mypyc-compiled modules (sipcore._compiled): loaded compiled in the normal run, from their
sources under ASYNCPBX_NO_EXTENSIONS=1 — in this process and in a fresh one."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sipcore import _compiled


def test_every_listed_module_loads_as_the_build_says() -> None:
    for name in _compiled.COMPILED:
        module = importlib.import_module(name)
        assert _compiled.is_compiled(module) == (not _compiled.extensions_disabled()), name
    assert _compiled.missing() == []
    # an edit after the build would run the old compiled code: rebuild (pip install -e .)
    assert _compiled.stale() == []


def test_a_source_edited_after_the_build_is_reported_stale(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """stale() compares each source with its extension: newer source, stale module."""
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    built = pkg / ("mod" + importlib.machinery.EXTENSION_SUFFIXES[0])
    source = pkg / "mod.py"
    built.write_bytes(b"")
    source.write_text("x = 1\n")
    os.utime(built, (1_000_000, 1_000_000))
    os.utime(source, (2_000_000, 2_000_000))
    monkeypatch.setattr(_compiled, "COMPILED", ("fakepkg.mod",))
    monkeypatch.delenv("ASYNCPBX_NO_EXTENSIONS", raising=False)
    # the reference run's finder would hand out the source: look as a compiled run does
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path
                                           if not isinstance(f, _compiled._SourcesFirst)])
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert _compiled.stale() == ["fakepkg.mod"]
    os.utime(source, (500_000, 500_000))
    assert _compiled.stale() == []


def test_the_switch_loads_sources_in_a_fresh_process() -> None:
    code = ("import sys, pbx.b2bua, sipcore.message, sipcore.endpoint; "
            "print(all(m.__file__.endswith('.py') for m in (sipcore.message, sipcore.endpoint)))")
    for disabled, expected in (("1", "True"), ("0", "False")):
        env = {**os.environ, "ASYNCPBX_NO_EXTENSIONS": disabled}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
        assert out == expected, (disabled, out)
