"""Build the Cython media/SIP kernels and the mypyc-compiled modules of the SIP core.

Every ``*.pyx`` under ``sipcore/`` and ``media/`` is compiled; adding a kernel means adding the
``.pyx`` (plus its ``.pyi`` stub and the pure-Python reference beside it), nothing here.

Kernels written once in Cython pure-Python mode are listed in ``PURE_PYTHON``: a plain ``.py``
(the reference, importable as itself) compiled under the extension's name, its C types in the
augmenting ``.pxd`` named after the extension (e.g. ``media/_jitter.pxd``).

The typed pure-Python modules listed in ``sipcore._compiled.COMPILED`` (the SIP stack's sans-IO
hot path) are compiled with mypyc into extensions beside their sources, in one
group whose shared runtime is ``sipcore/_native__mypyc``; the ``.py`` files stay the readable
reference (``ASYNCPBX_NO_EXTENSIONS=1`` loads them instead).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy
from Cython.Build import cythonize
from mypyc.build import mypycify
from setuptools import Extension, setup

HERE = Path(__file__).parent

#: extension module -> its pure-Python-mode source
PURE_PYTHON = {"media._jitter": "media/_jitter_py.py"}


def _extensions() -> list[Extension]:
    sources = {}
    for pyx in sorted([*HERE.glob("sipcore/**/*.pyx"), *HERE.glob("media/**/*.pyx")]):
        rel = pyx.relative_to(HERE)
        sources[".".join(rel.with_suffix("").parts)] = str(rel)
    sources.update(PURE_PYTHON)
    exts = []
    for name, source in sources.items():
        exts.append(
            Extension(
                name,
                [source],
                include_dirs=[numpy.get_include()],
                extra_compile_args=["-O3"],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return exts


def _compiled_modules() -> list[str]:
    """The source paths of ``sipcore._compiled.COMPILED``, read from that file's text (not run:
    it imports the ``native`` switch, which a build need not be able to import)."""
    tree = ast.parse((HERE / "sipcore" / "_compiled.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == "COMPILED" and node.value is not None:
            names: tuple[str, ...] = ast.literal_eval(node.value)
            return [str(Path(*name.split(".")).with_suffix(".py")) for name in names]
    raise RuntimeError("sipcore/_compiled.py defines no COMPILED tuple")


setup(
    ext_modules=[
        *cythonize(
            _extensions(),
            language_level=3,
            compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        ),
        *mypycify(_compiled_modules(), opt_level="3", group_name="sipcore._native"),
    ]
)
