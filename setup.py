"""Build: the C11 core as a static library with strict warnings (build_clib;
build_ext links it in by itself), linked into
one Cython extension, zkalloc_np._core.

ZKALLOC_CFLAGS adds flags to the core (for example sanitizers)."""
import os
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

CORE_DIR = "cython/zk"
core_cflags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-fPIC", "-fvisibility=hidden"]
core_cflags += os.environ.get("ZKALLOC_CFLAGS", "").split()

numpy_defines = [
    ("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION"),
    # The NEP 49 handler API (PyDataMem_SetHandler, PyDataMem_DefaultHandler)
    # exists from the 1.22 C-API on.
    ("NPY_TARGET_VERSION", "NPY_1_22_API_VERSION"),
]

extension = Extension(
    "zkalloc_np._core",
    sources=["cython/_core.pyx"],
    include_dirs=[CORE_DIR, numpy.get_include()],
    define_macros=numpy_defines,
    extra_link_args=os.environ.get("ZKALLOC_LDFLAGS", "").split(),
)

setup(
    libraries=[
        ("zkcore", {"sources": sorted(glob(f"{CORE_DIR}/*.c")), "include_dirs": [CORE_DIR], "cflags": core_cflags}),
    ],
    ext_modules=cythonize([extension], compiler_directives={"language_level": 3}),
)
