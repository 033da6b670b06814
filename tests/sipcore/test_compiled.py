"""The mypyc-compiled modules (sipcore._compiled): loaded compiled in the normal run, from their
sources under ASYNCPBX_NO_EXTENSIONS=1 — in this process and in a fresh one."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

from sipcore import _compiled


def test_every_listed_module_loads_as_the_build_says() -> None:
    for name in _compiled.COMPILED:
        module = importlib.import_module(name)
        assert _compiled.is_compiled(module) == (not _compiled.extensions_disabled()), name
    assert _compiled.missing() == []


def test_the_switch_loads_sources_in_a_fresh_process() -> None:
    code = ("import sys, pbx.b2bua, sipcore.message, sipcore.endpoint; "
            "print(all(m.__file__.endswith('.py') for m in (sipcore.message, sipcore.endpoint)))")
    for disabled, expected in (("1", "True"), ("0", "False")):
        env = {**os.environ, "ASYNCPBX_NO_EXTENSIONS": disabled}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
        assert out == expected, (disabled, out)
