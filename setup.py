"""Builds the compiled claim path (gateway/kernel.pyx, issue 14) with Cython;
everything else is in pyproject.toml. ``pip install -e .`` (``make setup``)
compiles it in place; it needs a C compiler and the Python headers."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                "gateway.kernel",
                ["gateway/kernel.pyx"],
                extra_compile_args=["-O3"],
            )
        ],
        compiler_directives={"language_level": 3},
    )
)
