"""Build the Cython media/SIP kernels.

Every ``*.pyx`` under ``sipcore/`` and ``media/`` is compiled; adding a kernel means adding the
``.pyx`` (plus its ``.pyi`` stub and the pure-Python reference beside it), nothing here.
"""

from __future__ import annotations

from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent


def _extensions() -> list[Extension]:
    exts = []
    for pyx in sorted([*HERE.glob("sipcore/**/*.pyx"), *HERE.glob("media/**/*.pyx")]):
        rel = pyx.relative_to(HERE)
        name = ".".join(rel.with_suffix("").parts)
        exts.append(
            Extension(
                name,
                [str(rel)],
                include_dirs=[numpy.get_include()],
                extra_compile_args=["-O3"],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        _extensions(),
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
