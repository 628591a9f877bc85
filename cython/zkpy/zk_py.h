/*
 * The core's caller probe for CPython (zk_py.c): allocation sites and the
 * raw domain's phase, read from the interpreter without running Python.
 * Include Python.h first (the Cython-generated _core.c does).  Every
 * function here is called with the main interpreter's GIL held.
 */
#ifndef ZK_PY_H
#define ZK_PY_H

#include <stdint.h>

/* Register the probe (once, at import, before any hook is set).
 * get_handler: numpy's PyDataMem_GetHandler; scope_destructor: the
 * destructor of every phase's handler capsule, whose context is its
 * zk_scope. */
void zk_py_init(PyObject *(*get_handler)(void), void (*scope_destructor)(PyObject *));
/* Frames whose co_filename starts with one of these str prefixes (a tuple
 * of at most 4) are not a site: the caller's line is.  -1: not such a tuple. */
int zk_py_skip_files(PyObject *prefixes);
/* A site's co_filename (borrowed: the table keeps its code object for
 * good) and *line; NULL for 0 and numbers never handed out. */
PyObject *zk_py_site_file(uint32_t site, int *line);
/* Distinct sites recorded so far. */
uint32_t zk_py_site_count(void);
/* 0 where this build knows no safe way to read frames: every site is unknown. */
int zk_py_reads_frames(void);

#endif
