/*
 * What the calling Python thread is doing, read without running Python:
 * the core's caller probe (zk_caller.c) for CPython, and the only C file of
 * the project that includes Python.h.
 *
 * The probe is asked inside allocations: numpy's handler and the raw-domain
 * hook call it for tracked requests (the site) and for raw-domain requests
 * (the phase).  Those come in the middle of anything CPython does (a dict's
 * resize, the garbage collector, a thread switch, a signal), so nothing
 * here runs Python code, allocates a Python object, takes a Python lock,
 * sets an exception or asks the raw domain for memory: a callback into
 * Python there crashed, hung and lost exceptions (issue 30).  It does what
 * CPython's tracemalloc does inside its own hooks (Python/tracemalloc.c,
 * traceback_get_frames, 3.10 to 3.13).
 *
 *  (a) Whether this OS thread holds the main interpreter's GIL now: the
 *      current thread state is this thread's own (PyGILState's) and belongs
 *      to the main interpreter.  Anything else (the GIL released, a thread
 *      Python does not know, a subinterpreter's thread, a free-threaded
 *      build) answers "no": site 0 ("unknown"), no phase.
 *  (b) The site: the innermost complete frame whose file is outside the
 *      skipped folders (numpy's and zkalloc_np's), as (code object, line),
 *      interned in a table this file owns; its number is what the region
 *      records.  The line comes from PyCode_Addr2Line, which reads the code
 *      object's line table and allocates nothing.
 *  (c) The phase of the calling context: numpy's current handler (the
 *      contextvar PyDataMem_SetHandler sets; PyDataMem_GetHandler is a
 *      PyContextVar_Get, which allocates nothing and returns a reference the
 *      context also holds) when it is a phase's capsule.  So the raw domain
 *      follows exactly what numpy's arrays follow: asyncio tasks and threads
 *      each see their own phase, a task started in a phase inherits it.
 *
 * No lock: the site table and the skipped folders are read and written only
 * by threads holding the main interpreter's GIL, which serialises them (the
 * readers of site names, zk_py_site_file, hold it too).  A thread-local
 * flag answers "unknown" to a probe re-entered on the same thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Frames: where the interpreter keeps them, per version.  3.11 moved them
 * into _PyInterpreterFrame, which only the internal headers describe (as
 * greenlet and tracemalloc read them); the extension is built per minor
 * version, so the layout is the running interpreter's. */
#if defined(Py_GIL_DISABLED) || PY_VERSION_HEX < 0x030A0000 || PY_VERSION_HEX >= 0x030E0000
#define ZK_PY_FRAMES 0   /* no known safe way to read them: every site is unknown */
#elif PY_VERSION_HEX < 0x030B0000
#define ZK_PY_FRAMES 310
#include <frameobject.h>
#else
#define ZK_PY_FRAMES 311
#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
#endif

#include "zk_internal.h"
#include "zk_py.h"

/* A program that makes this many distinct (code, line) pairs gets "unknown"
 * for the next ones; ids stay far from uint32_t's end. */
#define MAX_SITES (1u << 22)
#define MAX_SKIPPED 4

typedef struct {
    PyCodeObject *code;   /* a strong reference, never released: sites live as long as the process */
    int line;
} site_entry;

static site_entry *sites;          /* by number; [0] is "unknown" and never filled */
static uint32_t site_count = 1;    /* the next number */
static uint32_t site_capacity;
static uint32_t *slots;            /* open addressing over (code, line): site numbers, 0 empty */
static uint32_t slot_count;        /* a power of two, at least twice the sites */

static PyObject *skipped[MAX_SKIPPED];   /* folder prefixes (str, strong references) */
static int skipped_count;

static PyObject *(*current_handler)(void);   /* numpy's PyDataMem_GetHandler */
static void (*scope_capsule_destructor)(PyObject *);   /* marks a phase's capsule */

static _Thread_local bool inside;   /* the probe is running on this thread */

/* ---- (a) the GIL ----------------------------------------------------------- */

static PyThreadState *main_gil_holder(void)
{
#if defined(Py_GIL_DISABLED)
    return NULL;
#else
#if PY_VERSION_HEX >= 0x030D0000
    PyThreadState *t = PyThreadState_GetUnchecked();
#else
    PyThreadState *t = _PyThreadState_UncheckedGet();   /* 3.10/3.11: whichever thread holds the GIL */
#endif
    if (t == NULL || t != PyGILState_GetThisThreadState() || t->interp != PyInterpreterState_Main())
        return NULL;
    return t;
#endif
}

/* ---- (b) the innermost frame outside the skipped folders --------------------- */

/* Whether str s begins with str prefix, comparing the characters where
 * they are (no conversion, no allocation). */
static bool starts_with(PyObject *s, PyObject *prefix)
{
    if (s == NULL || !PyUnicode_Check(s))
        return false;
#if PY_VERSION_HEX < 0x030C0000
    if (!PyUnicode_IS_READY(s))
        return false;
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(prefix);
    if (PyUnicode_GET_LENGTH(s) < n)
        return false;
    int ks = (int)PyUnicode_KIND(s), kp = (int)PyUnicode_KIND(prefix);
    const void *ds = PyUnicode_DATA(s), *dp = PyUnicode_DATA(prefix);
    if (ks == kp)
        return memcmp(ds, dp, (size_t)n * (size_t)ks) == 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyUnicode_READ(ks, ds, i) != PyUnicode_READ(kp, dp, i))
            return false;
    return true;
}

static bool is_skipped(PyObject *filename)
{
    for (int i = 0; i < skipped_count; i++)
        if (starts_with(filename, skipped[i]))
            return true;
    return false;
}

#if ZK_PY_FRAMES == 310
static PyCodeObject *innermost(PyThreadState *t, int *line)
{
    for (PyFrameObject *f = t->frame; f != NULL; f = f->f_back) {
        if (f->f_code == NULL || is_skipped(f->f_code->co_filename))
            continue;
        *line = PyFrame_GetLineNumber(f);   /* f_lineno or PyCode_Addr2Line: no allocation */
        return f->f_code;
    }
    return NULL;
}
#elif ZK_PY_FRAMES == 311
static PyCodeObject *code_of(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *x = f->f_executable;   /* a code object, or None for a shim */
    return x != NULL && PyCode_Check(x) ? (PyCodeObject *)x : NULL;
#else
    return f->f_code;
#endif
}

/* Frames being set up, and the C stack's entry frames, have no line yet
 * (tracemalloc skips them the same way). */
static bool incomplete(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (f->owner == FRAME_OWNED_BY_CSTACK)
        return true;
#endif
    return _PyFrame_IsIncomplete(f);
}

static PyCodeObject *innermost(PyThreadState *t, int *line)
{
#if PY_VERSION_HEX >= 0x030D0000
    _PyInterpreterFrame *f = t->current_frame;
#else
    _PyInterpreterFrame *f = t->cframe != NULL ? t->cframe->current_frame : NULL;
#endif
    for (; f != NULL; f = f->previous) {
        PyCodeObject *code = code_of(f);
        if (code == NULL || incomplete(f) || is_skipped(code->co_filename))
            continue;
        *line = PyCode_Addr2Line(code, _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT));
        return code;
    }
    return NULL;
}
#else
static PyCodeObject *innermost(PyThreadState *t, int *line)
{
    (void)t;
    (void)line;
    return NULL;
}
#endif

/* ---- (b) the site table ---------------------------------------------------------- */

static uint32_t slot_of(const PyCodeObject *code, int line, uint32_t mask)
{
    uint64_t h = ((uint64_t)(uintptr_t)code >> 4) * 0x9E3779B97F4A7C15u ^ (uint64_t)(uint32_t)line * 0xC2B2AE3D27D4EB4Fu;
    return (uint32_t)(h >> 32) & mask;
}

/* Twice the slots, every site placed again.  libc's allocator, never the
 * raw domain: nothing here can come back into the probe. */
static bool grow_slots(void)
{
    uint32_t n = slot_count != 0 ? slot_count * 2 : 256;
    uint32_t *grown = calloc(n, sizeof *grown);
    if (grown == NULL)
        return false;
    for (uint32_t id = 1; id < site_count; id++) {
        uint32_t i = slot_of(sites[id].code, sites[id].line, n - 1);
        while (grown[i] != 0)
            i = (i + 1) & (n - 1);
        grown[i] = id;
    }
    free(slots);
    slots = grown;
    slot_count = n;
    return true;
}

static bool grow_sites(void)
{
    uint32_t n = site_capacity != 0 ? site_capacity * 2 : 128;
    site_entry *grown = realloc(sites, (size_t)n * sizeof *grown);
    if (grown == NULL)
        return false;
    sites = grown;
    site_capacity = n;
    return true;
}

/* The number of (code, line), given one the first time; 0 when the table
 * is full or libc has no memory for it to grow. */
static uint32_t intern(PyCodeObject *code, int line)
{
    if (slot_count != 0) {
        for (uint32_t i = slot_of(code, line, slot_count - 1);; i = (i + 1) & (slot_count - 1)) {
            uint32_t id = slots[i];
            if (id == 0)
                break;
            if (sites[id].code == code && sites[id].line == line)
                return id;
        }
    }
    if (site_count >= MAX_SITES)
        return 0;
    if ((uint64_t)(site_count + 1) * 2 > slot_count && !grow_slots())
        return 0;
    if (site_count >= site_capacity && !grow_sites())
        return 0;
    uint32_t id = site_count++;
    Py_INCREF(code);   /* a count only: the GIL is held, nothing is freed or run */
    sites[id] = (site_entry){code, line};
    uint32_t i = slot_of(code, line, slot_count - 1);
    while (slots[i] != 0)
        i = (i + 1) & (slot_count - 1);
    slots[i] = id;
    return id;
}

static uint32_t site_now(void)
{
    if (inside)
        return 0;
    PyThreadState *t = main_gil_holder();
    if (t == NULL)
        return 0;
    inside = true;
    int line = 0;
    PyCodeObject *code = innermost(t, &line);
    uint32_t id = code != NULL ? intern(code, line < 0 ? 0 : line) : 0;
    inside = false;
    return id;
}

/* ---- (c) the phase of the calling context ----------------------------------------- */

static struct zk_scope *raw_scope_now(void)
{
    if (inside || current_handler == NULL || main_gil_holder() == NULL)
        return NULL;
    inside = true;
    struct zk_scope *s = NULL;
    /* NULL only if the contextvar lookup failed, which a ContextVar key
     * cannot make it do. */
    PyObject *handler = current_handler();
    if (handler != NULL) {
        /* IsValid first: the other capsule calls set an exception on a bad one. */
        if (PyCapsule_IsValid(handler, "mem_handler") && PyCapsule_GetDestructor(handler) == scope_capsule_destructor)
            s = PyCapsule_GetContext(handler);
        if (s != NULL)
            zk_scope_pin(s);
        /* The context (or the contextvar's default) holds it too: never the last reference. */
        Py_DECREF(handler);
    }
    inside = false;
    return s;
}

/* ---- set up and read from Python ------------------------------------------------------ */

static const zk_caller_probe python_probe = {site_now, raw_scope_now};

void zk_py_init(PyObject *(*get_handler)(void), void (*scope_destructor)(PyObject *))
{
    current_handler = get_handler;
    scope_capsule_destructor = scope_destructor;
    zk_set_caller_probe(&python_probe);
}

int zk_py_skip_files(PyObject *prefixes)
{
    if (!PyTuple_Check(prefixes) || PyTuple_GET_SIZE(prefixes) > MAX_SKIPPED)
        return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(prefixes); i++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(prefixes, i)))
            return -1;
    PyObject *old[MAX_SKIPPED];
    int old_count = skipped_count;
    memcpy(old, skipped, sizeof old);
    skipped_count = 0;   /* the GIL is held: no probe sees the table half made */
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(prefixes); i++) {
        skipped[i] = PyTuple_GET_ITEM(prefixes, i);
        Py_INCREF(skipped[i]);
    }
    skipped_count = (int)PyTuple_GET_SIZE(prefixes);
    for (int i = 0; i < old_count; i++)
        Py_DECREF(old[i]);
    return 0;
}

PyObject *zk_py_site_file(uint32_t site, int *line)
{
    if (site == 0 || site >= site_count)
        return NULL;
    *line = sites[site].line;
    return sites[site].code->co_filename;
}

uint32_t zk_py_site_count(void) { return site_count - 1; }

int zk_py_reads_frames(void) { return ZK_PY_FRAMES != 0; }
