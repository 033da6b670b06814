"""Print a hash of everything the package build compiles or is configured by.

``scripts/bootstrap.sh`` keeps the hash of its last successful install in
``.venv/.asyncpbx-build-stamp``; when the hash (and the requested extra) is unchanged and the
installed package still imports with every extension present, it skips ``pip install`` — a second
``./run.sh`` starts in seconds instead of rebuilding mypyc and Cython. The inputs are those of
``setup.py``: itself, ``pyproject.toml``, ``sipcore/_compiled.py`` and the modules it lists
(mypyc) with the rest of ``sipcore/*.py`` they import, every ``*.pyx``/``*.pxd`` under ``sipcore/`` and ``media/`` and the pure-Python-mode
kernel sources (Cython), plus the Python version. Other ``.py`` files need no rebuild: the
install is editable. Standard library only (runs before the venv exists).

    python scripts/build_stamp.py [EXTRA]     the hash
    .venv/bin/python scripts/build_stamp.py --check
        exit 0 when the installed package imports and every extension (Cython and mypyc)
        is built and newer than its source
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _literal(path: Path, name: str) -> object:
    """The literal value of the module-level assignment ``name`` in ``path`` (not run)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target: ast.expr
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == name:
            return ast.literal_eval(value)
    raise SystemExit(f"{path}: no literal {name}")


def inputs() -> list[Path]:
    """The build's input files, sorted."""
    files = {ROOT / "setup.py", ROOT / "pyproject.toml", ROOT / "sipcore" / "_compiled.py"}
    compiled = _literal(ROOT / "sipcore" / "_compiled.py", "COMPILED")
    assert isinstance(compiled, tuple)
    files.update(ROOT.joinpath(*name.split(".")).with_suffix(".py") for name in compiled)
    pure = _literal(ROOT / "setup.py", "PURE_PYTHON")
    assert isinstance(pure, dict)
    files.update(ROOT / source for source in pure.values())
    for package in ("sipcore", "media"):
        for pattern in ("*.pyx", "*.pxd"):
            files.update((ROOT / package).rglob(pattern))
    # what the compiled modules import and mypyc reads the types of (conservative: a change
    # there rebuilds too, rather than leaving compiled code built against old signatures)
    files.update((ROOT / "sipcore").glob("*.py"))
    return sorted(files)


def stamp(extra: str) -> str:
    """The hash of the inputs' names and contents, the Python version and ``extra``."""
    h = hashlib.sha256(f"{sys.version}\0{extra}\0".encode())
    for path in inputs():
        h.update(str(path.relative_to(ROOT)).encode() + b"\0")
        h.update(path.read_bytes() if path.is_file() else b"(missing)")
        h.update(b"\0")
    return h.hexdigest()


def cython_modules() -> list[str]:
    """The Cython extension modules setup.py builds (dotted names)."""
    names = {".".join(p.relative_to(ROOT).with_suffix("").parts)
             for package in ("sipcore", "media") for p in (ROOT / package).rglob("*.pyx")}
    pure = _literal(ROOT / "setup.py", "PURE_PYTHON")
    assert isinstance(pure, dict)
    return sorted(names | set(pure))


def check() -> int:
    """0 when the package imports with every extension built and fresh, else 1."""
    os.environ.pop("ASYNCPBX_NO_EXTENSIONS", None)
    try:
        import media  # noqa: F401
        import pbx  # noqa: F401
        from sipcore import _compiled
    except ImportError:
        return 1
    for name in cython_modules():
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or spec.origin.endswith(".py"):
            return 1
    return 1 if _compiled.missing() or _compiled.stale() else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        raise SystemExit(check())
    print(stamp(sys.argv[1] if len(sys.argv) > 1 else ""))
