"""The compiled media kernels are loaded unless ASYNCPBX_NO_EXTENSIONS=1 asks for the references.

DESIGN.md principle 6: a missing extension is an error, never a silent slow path. Each check runs
in a fresh interpreter so the outcome does not depend on how this test run was started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: public module -> compiled kernel it must use
KERNELS = {
    "media.g711": "media._g711",
    "media.mixer": "media._mixer",
    "media.dtmf": "media._goertzel",
    "media.jitter": "media._jitter",
}
#: public module -> reference it uses with ASYNCPBX_NO_EXTENSIONS=1 (default: the module itself).
#: The jitter buffer is one source in Cython pure-Python mode: the reference is that ``.py``.
REFERENCES = {"media.jitter": "media._jitter_py"}

_PROBE = """
import importlib, json, sys
out = {}
for public in sys.argv[1:]:
    mod = importlib.import_module(public)
    kernel = mod._kernel
    out[public] = {"name": kernel.__name__, "file": getattr(kernel, "__file__", "") or ""}
print(json.dumps(out))
"""


def _probe(no_extensions: str | None) -> dict[str, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k != "ASYNCPBX_NO_EXTENSIONS"}
    if no_extensions is not None:
        env["ASYNCPBX_NO_EXTENSIONS"] = no_extensions
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *KERNELS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, dict[str, str]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_compiled_kernels_are_loaded_by_default() -> None:
    for public, info in _probe(None).items():
        assert info["name"] == KERNELS[public]
        assert info["file"].endswith(".so"), f"{public} uses {info['file']!r}, not an extension"


@pytest.mark.parametrize("value", ["0", ""])
def test_falsy_setting_keeps_extensions(value: str) -> None:
    for public, info in _probe(value).items():
        assert info["name"] == KERNELS[public] and info["file"].endswith(".so")


def test_no_extensions_selects_the_references() -> None:
    for public, info in _probe("1").items():
        assert info["name"] == REFERENCES.get(public, public)  # the pure-Python/numpy reference
        assert info["file"].endswith(".py")
