"""scripts/build_stamp.py: the hash that lets a second ./run.sh skip the rebuild covers every
build input, and changes whenever one of them does."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sipcore._compiled import COMPILED

ROOT = Path(__file__).resolve().parent.parent


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_stamp", ROOT / "scripts" / "build_stamp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_stamp"] = module
    spec.loader.exec_module(module)
    return module


def test_inputs_are_every_file_setup_py_compiles_or_reads() -> None:
    bs = load()
    names = {str(p.relative_to(ROOT)) for p in bs.inputs()}
    assert {"setup.py", "pyproject.toml", "sipcore/_compiled.py"} <= names
    assert {name.replace(".", "/") + ".py" for name in COMPILED} <= names
    assert {str(p.relative_to(ROOT)) for p in ROOT.glob("media/*.pyx")} <= names
    assert "media/_jitter_py.py" in names and "media/_jitter.pxd" in names
    assert set(bs.cython_modules()) >= {"media._g711", "media._jitter"}


@pytest.fixture()
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Path]:
    bs = load()
    for path in bs.inputs():
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    monkeypatch.setattr(bs, "ROOT", tmp_path)
    return bs, tmp_path


def test_stamp_changes_with_any_input_and_the_extra(tree: tuple[ModuleType, Path]) -> None:
    bs, root = tree
    base = bs.stamp("")
    assert bs.stamp("") == base and bs.stamp("test") != base
    for rel in ("pyproject.toml", "sipcore/uri.py", "media/_g711.pyx", "media/_jitter_py.py"):
        path = root / rel
        old = path.read_bytes()
        path.write_bytes(old + b"\n# changed\n")
        assert bs.stamp("") != base, rel
        path.write_bytes(old)
        assert bs.stamp("") == base, rel
    (root / "media" / "_new.pyx").write_text("def f(): pass\n")
    assert bs.stamp("") != base  # a new kernel is a new input
