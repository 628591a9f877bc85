"""Build: the C11 core as a static library with strict warnings (build_clib;
build_ext links it in by itself), linked into
one Cython extension, zkalloc_np._core.

ZKALLOC_CFLAGS adds flags to the core, ZKALLOC_LDFLAGS to the extension's link.
ZKALLOC_SANITIZE=address,undefined builds the whole extension with those
sanitizers: the core and the Cython-generated _core.c alike get the same flags
(sanitize_flags: -fsanitize=... -fno-omit-frame-pointer -g), and the link
pulls in their runtimes; with address, run Python with the matching libasan
first in LD_PRELOAD (tools/sanitize.sh)."""
import os
import sysconfig
import zipfile
from glob import glob
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.editable_wheel import editable_wheel

CORE_DIR = "cython/zk"
# The caller probe (cython/zkpy/zk_py.c): the one C file that reads the
# interpreter, so the one that needs Python's headers; built into the core
# library, while the core's own files stay free of Python.h (its C tests
# compile cython/zk/*.c alone).
PY_PROBE_DIR = "cython/zkpy"
PYTHON_INCLUDES = sorted({sysconfig.get_path("include"), sysconfig.get_path("platinclude")})
core_cflags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-fPIC", "-fvisibility=hidden"]
core_cflags += os.environ.get("ZKALLOC_CFLAGS", "").split()
link_args = os.environ.get("ZKALLOC_LDFLAGS", "").split()
ext_cflags: list[str] = []   # the extension's own compile (the Cython-generated C)

SANITIZERS = {"address", "undefined", "thread", "leak"}
sanitize = [s.strip() for s in os.environ.get("ZKALLOC_SANITIZE", "").split(",") if s.strip()]
if sorted(set(sanitize) - SANITIZERS):
    raise SystemExit(f"ZKALLOC_SANITIZE: unknown sanitizer(s) {sorted(set(sanitize) - SANITIZERS)}; "
                     f"choose from {sorted(SANITIZERS)}")
if sanitize:
    # One list for both compiles, so the core and _core.c are instrumented alike.
    sanitize_flags = [f"-fsanitize={','.join(sanitize)}", "-fno-omit-frame-pointer", "-g"]
    if "address" in sanitize:
        # ASan may then go on after a report where ASAN_OPTIONS=halt_on_error=0 asks
        # (tools/sanitize.sh KEEP_GOING=1); it still stops at the first by default.
        sanitize_flags.append("-fsanitize-recover=address")
    core_cflags += sanitize_flags
    ext_cflags += sanitize_flags
    link_args += [f"-fsanitize={','.join(sanitize)}"]

numpy_defines = [
    ("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION"),
    # The NEP 49 handler API (PyDataMem_SetHandler, PyDataMem_DefaultHandler)
    # exists from the 1.22 C-API on.
    ("NPY_TARGET_VERSION", "NPY_1_22_API_VERSION"),
    # Recorded for `python -m zkalloc_np info` (zkalloc_np._core.NUMPY_BUILD_VERSION).
    ("ZKALLOC_NUMPY_BUILD_VERSION", f'"{numpy.__version__}"'),
]

extension = Extension(
    "zkalloc_np._core",
    sources=["cython/_core.pyx"],
    include_dirs=[CORE_DIR, PY_PROBE_DIR, numpy.get_include()],
    define_macros=numpy_defines,
    extra_compile_args=ext_cflags,
    extra_link_args=link_args,
)

# The ZKALLOC_SUBPROCESS switch's start-up hook (zkalloc_np/cli/children.py): a wheel carries it at its
# root, beside zkalloc_np/ (package-data "../zkalloc_np_subprocess.pth" in pyproject.toml), so it lands in
# site-packages; the strict editable wheel gets it added here, as coverage.py does for its own .pth.
SUBPROCESS_PTH = "zkalloc_np_subprocess.pth"


class EditableWheelWithPth(editable_wheel):
    def run(self) -> None:
        super().run()
        for wheel in Path(self.dist_dir).glob("*editable*.whl"):
            with zipfile.ZipFile(wheel, "a") as zf:
                zf.write(SUBPROCESS_PTH, SUBPROCESS_PTH)


setup(
    cmdclass={"editable_wheel": EditableWheelWithPth},
    libraries=[
        ("zkcore", {"sources": sorted(glob(f"{CORE_DIR}/*.c")) + [f"{PY_PROBE_DIR}/zk_py.c"],
                    "include_dirs": [CORE_DIR, PY_PROBE_DIR, *PYTHON_INCLUDES], "cflags": core_cflags}),
    ],
    ext_modules=cythonize([extension], include_path=["cython"], compiler_directives={"language_level": 3}),
)
