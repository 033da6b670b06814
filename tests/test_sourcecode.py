"""House rules that apply to the whole tree: ruff, mypy --strict, and DESIGN.md's import rules."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("native", "sipcore", "media", "features", "pbx", "bench")

#: Modules of the sans-IO cores that may do I/O (the asyncio adapters).
IO_ADAPTERS = {
    "media/clock.py",
    "media/engine.py",
    "media/webrtc.py",
    "media/player.py",
    "media/recorder.py",
    "media/batchio.py",
}
#: What a sans-IO core must never import (DESIGN.md principle 1).
FORBIDDEN_IN_CORES = {"asyncio", "socket", "time", "logging", "structlog", "selectors", "uvloop"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _top(name: str) -> str:
    return name.split(".")[0]


def _sans_io_files() -> list[Path]:
    files = [p for p in (ROOT / "sipcore").rglob("*.py") if "aio" not in p.relative_to(ROOT).parts]
    files += [
        p
        for p in (ROOT / "media").rglob("*.py")
        if str(p.relative_to(ROOT)) not in IO_ADAPTERS
    ]
    return files


@pytest.mark.parametrize("path", _sans_io_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_sans_io_cores_do_no_io(path: Path) -> None:
    bad = {_top(n) for n in _imports(path)} & FORBIDDEN_IN_CORES
    assert not bad, f"{path.relative_to(ROOT)} is a sans-IO core but imports {sorted(bad)}"


def test_layering() -> None:
    """native (the no-extensions switch) imports nothing of ours; sipcore and media only native;
    features never sipcore."""
    allowed = {
        "native": {"native"},
        "sipcore": {"sipcore", "native"},
        "media": {"media", "native"},
        "pbx": {"pbx", "sipcore", "media", "features"},  # features: app.py only (below)
        "features": {"features", "pbx", "media"},
    }
    problems = []
    for pkg, ok in allowed.items():
        for path in (ROOT / pkg).rglob("*.py"):
            ours = {_top(n) for n in _imports(path)} & set(PACKAGES)
            if ours - ok:
                problems.append(f"{path.relative_to(ROOT)} imports {sorted(ours - ok)}")
    assert not problems, problems


def test_features_and_call_control_keep_their_layers() -> None:
    """Only the composition root (pbx/app.py) imports features; features see call control only
    (pbx.callcontrol, never SIP, the store or another pbx module); call control reaches media
    through its MediaGraph protocol (no media.aio engine classes) and knows no SIP legs."""
    problems = []
    for path in (ROOT / "pbx").rglob("*.py"):
        rel = str(path.relative_to(ROOT))
        names = _imports(path)
        if rel != "pbx/app.py" and any(_top(n) == "features" for n in names):
            problems.append(f"{rel} imports features (only pbx/app.py may)")
        if rel.startswith("pbx/callcontrol/"):
            bad = sorted(n for n in names if n.startswith((
                "media.aio", "media.engine", "media.session", "media.bridge", "media.clock",
                "media.conference", "pbx.legs", "pbx.b2bua", "pbx.store", "pbx.trunks")))
            if bad:
                problems.append(f"{rel} imports {bad}")
    for path in (ROOT / "features").rglob("*.py"):
        rel = str(path.relative_to(ROOT))
        bad = sorted(n for n in _imports(path)
                     if (_top(n) == "pbx" and n != "pbx.callcontrol") or _top(n) == "sipcore")
        if bad:
            problems.append(f"{rel} imports {bad} (features see pbx.callcontrol only)")
    assert not problems, problems


@pytest.mark.parametrize("path", sorted((ROOT / "media").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_media_imports_no_sipcore(path: Path) -> None:
    """media is below signalling: it has its own errors (media.errors) and reads the
    no-extensions switch from ``native``, so nothing in it imports sipcore (issue 10)."""
    bad = sorted(n for n in _imports(path) if _top(n) == "sipcore")
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    proc = subprocess.run(
        [ruff, "check", "--output-format", "concise", "."],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]


def test_the_cli_starts_without_the_api_stack() -> None:
    # every CLI command (and the tests' many CLI calls against a running server) pays the
    # import: pydantic, aiohttp and argon2 load only for the commands that need them
    out = subprocess.run(
        [sys.executable, "-c", "import sys, pbx.cli; "
         "print(sorted(m for m in ('pydantic', 'aiohttp', 'argon2') if m in sys.modules))"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]", out.stdout
