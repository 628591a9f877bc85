# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin layer between the C core (cython/zk) and the Python API (zkalloc_np).

It builds the PyDataMem_Handler structs and capsules numpy needs, swaps
numpy's default handler capsule for the process-wide install, and turns the
core's error codes into exceptions.  Decisions live in C or in Python, not here.
One file per concern (_core_*.pxi, included at the end); the entry points only
the tests use are in _core_testing.pxi.
"""
from cpython.ref cimport PyObject
from cpython.pycapsule cimport (PyCapsule_New, PyCapsule_GetPointer, PyCapsule_SetPointer,
                               PyCapsule_GetDestructor, PyCapsule_IsValid, PyCapsule_SetContext)
from libc.stdlib cimport malloc, free
from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy, memset, strncpy

cimport numpy as cnp

# Every extern (numpy's handler API, the core's zkalloc.h) is declared in
# zkalloc.pxd, beside this file.
from zkalloc cimport *

cnp.import_array()

HANDLER_NAME = "zkalloc"
NCLASSES = ZK_NCLASSES

# The numpy whose headers this extension was compiled against: setup.py
# passes numpy.__version__ of the build environment as a C string.
cdef extern from *:
    """
    #ifndef ZKALLOC_NUMPY_BUILD_VERSION
    #define ZKALLOC_NUMPY_BUILD_VERSION "unknown"
    #endif
    """
    const char *ZKALLOC_NUMPY_BUILD_VERSION

NUMPY_BUILD_VERSION = (<bytes>ZKALLOC_NUMPY_BUILD_VERSION).decode("ascii")

# One file per concern, in dependency order (a later one may use an earlier one's names).
include "_core_settings.pxi"
include "_core_stats.pxi"
include "_core_handlers.pxi"
include "_core_cache.pxi"
include "_core_phases.pxi"
include "_core_secret.pxi"
include "_core_raw.pxi"
include "_core_testing.pxi"
