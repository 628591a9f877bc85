#!/usr/bin/env bash
# Run the core's C test and the Python tests under sanitizers and valgrind.
#
#   tools/sanitize.sh [c-asan] [c-tsan] [c-tsan-stress] [c-valgrind] [py-asan] [py-asan-core] [py-valgrind]
#                                                            (default: c-asan c-valgrind py-asan-core)
#
# c-asan       tests/c/test_core.c linked with the core, -fsanitize=address,undefined
# c-tsan       the same under ThreadSanitizer (48k operations; minutes on a loaded machine)
# c-tsan-stress tests/c/stress_tsan.c under ThreadSanitizer: short-lived threads through numpy's,
#              the phases' and the raw domain's routes, the decay thread, tracking (peak
#              snapshots) and every maintenance call (release, soften, trim, check, stats, peak
#              reads) at once; STRESS_RUNS processes (TSan reports a race once per process) of
#              STRESS_SECONDS each; any report fails.  What .ci/run runs (about a minute)
# c-valgrind   the same, plain build, under valgrind memcheck (ZK_TEST_NO_REMAP=1, see below)
# py-asan      a copy of the checkout built with ZKALLOC_SANITIZE=address,undefined (the core and
#              the Cython-generated _core.c alike), then the whole pytest suite (tests/) with the
#              ASan runtime preloaded; children that the bench and `compare` start keep it first in
#              their LD_PRELOAD (zkalloc_np/cli/sanitizer.py); tests marked no_asan are skipped, with why
# py-asan-core the same build, the core tests only (PY_TESTS below: stress, threads, fork, state
#              machine, phases, secrets, pressure, realloc, calloc); what .ci/run runs
# py-valgrind  the Python stress test under valgrind (PYTHONMALLOC=malloc; slow, small run)
#
# Sanitizer reports (ASan's and UBSan's, of the pytest process and of its children) are written
# to files, one per process, and listed at the end of the step with the test each came from
# (tests/conftest.py records that): any report fails it.  gcc's libubsan in a child ignores
# UBSAN_OPTIONS' log_path: a child's UBSan report goes to its stderr, which its test sees.  By default the first report stops the process that made it
# (halt_on_error=1); KEEP_GOING=1 lets every process run on and report everything, each place
# again in each test that reaches it (the build is made with -fsanitize-recover=address, see
# setup.py).
#
# Environment: CC (default gcc), PYTHON (default python), C_OPS (ops per C thread, default
# 3000), STRESS_SECONDS (default 12), STRESS_RUNS (default 3), STRESS_THREADS (default 3), ZKALLOC_STRESS_OPS (ops per Python thread, default 1500), VG_OPS (default 500),
# KEEP_GOING (default 0), PYTEST_ARGS (more pytest arguments for py-asan and py-asan-core, split
# on spaces, e.g. "-k fork -x"), TESTS (test paths or ids that replace the mode's selection),
# REPORTS (a folder that keeps the report files; default: a
# temporary one, removed at exit).  Exits non-zero on the first failing step.  The checkout
# itself is never rebuilt.
#
# valgrind: regions of 1 MiB and more grow with mremap(MREMAP_FIXED) onto a PROT_NONE
# reservation; valgrind 3.19 reports "Invalid write ... in a rw- anonymous segment" on a page
# of some such grown regions although the page is mapped (the same run is clean natively and
# under ASan, and every stamp holds), so the valgrind run keeps grows below 1 MiB.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CC="${CC:-gcc}"
PYTHON="${PYTHON:-python}"
C_OPS="${C_OPS:-3000}"
VG_OPS="${VG_OPS:-500}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/zkalloc-sanitize.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
CORE=("$ROOT"/cython/zk/*.c)
CFLAGS=(-std=c11 -O1 -g -Wall -Wextra -pthread -fno-omit-frame-pointer -I"$ROOT/cython/zk")
PY_TESTS=(tests/test_stress.py tests/test_threads.py tests/test_fork.py tests/test_state_machine.py tests/test_phase.py tests/test_secret.py
          tests/test_pressure.py tests/test_realloc.py tests/test_calloc.py tests/test_raw_domain.py tests/test_libc.py
          tests/test_peak_budget.py tests/test_one_source.py tests/test_no_python_inside.py)

step() { printf '\n== %s\n' "$*"; }

c_asan() {
    step "C test under ASan+UBSan ($C_OPS ops x 8 threads)"
    "$CC" "${CFLAGS[@]}" -fsanitize=address,undefined -fno-sanitize-recover=all \
        "$ROOT/tests/c/test_core.c" "${CORE[@]}" -o "$WORK/test_core_asan"
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$WORK/test_core_asan" "$C_OPS" 8
}

c_tsan() {
    step "C test under TSan ($C_OPS ops x 8 threads)"
    "$CC" "${CFLAGS[@]}" -fsanitize=thread "$ROOT/tests/c/test_core.c" "${CORE[@]}" -o "$WORK/test_core_tsan"
    TSAN_OPTIONS=halt_on_error=1 ZK_TEST_FORK_ROUNDS=0 "$WORK/test_core_tsan" "$C_OPS" 8
}

c_tsan_stress() {
    local seconds="${STRESS_SECONDS:-12}" runs="${STRESS_RUNS:-3}" threads="${STRESS_THREADS:-3}"
    step "C race stress under TSan ($runs runs x ${seconds}s, $threads threads starting short-lived workers)"
    "$CC" "${CFLAGS[@]}" -fsanitize=thread "$ROOT/tests/c/stress_tsan.c" "${CORE[@]}" -o "$WORK/stress_tsan"
    for ((i = 1; i <= runs; i++)); do
        TSAN_OPTIONS="halt_on_error=1:exitcode=66" "$WORK/stress_tsan" "$seconds" "$threads"
    done
}

c_valgrind() {
    step "C test under valgrind memcheck ($VG_OPS ops x 8 threads)"
    "$CC" "${CFLAGS[@]}" "$ROOT/tests/c/test_core.c" "${CORE[@]}" -o "$WORK/test_core"
    ZK_TEST_NO_REMAP=1 ZK_TEST_FORK_ROUNDS=10 valgrind -q --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite "$WORK/test_core" "$VG_OPS" 8
}

sanitized_copy() {
    if [ ! -d "$WORK/src" ]; then
        step "building a copy of the checkout with ZKALLOC_SANITIZE=address,undefined"
        mkdir "$WORK/src" "$WORK/wheel"
        (cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - --) | tar -C "$WORK/src" -xf -
        CC="$CC" ZKALLOC_SANITIZE=address,undefined \
            "$PYTHON" -m pip wheel -q --no-deps -w "$WORK/wheel" "$WORK/src"
        # the built package (with its sanitized extension) replaces the sources in the copy
        "$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
            "$WORK"/wheel/zkalloc_np-*.whl "$WORK/src"
        local so
        so="$(ls "$WORK"/src/zkalloc_np/_core*.so)"
        grep -q __asan_report "$so" || { echo "the extension is not sanitized: $so" >&2; exit 1; }
        # not only the core library: the Cython-generated _core.c too (gcc's DW_AT_producer)
        "$PYTHON" "$ROOT/tools/sanitizer_check.py" build "$so"
    fi
}

# py_tests NAME TEST...: the sanitized copy's tests with the ASan runtime preloaded; then every
# sanitizer report, of the pytest process and of its children, listed (any fails the step).
py_tests() {
    local name="$1"; shift
    sanitized_copy
    local libasan libstdcxx reports halt=1 rc=0
    libasan="$("$CC" -print-file-name=libasan.so)"
    [ -f "$libasan" ] || { echo "no ASan runtime: $CC -print-file-name=libasan.so gave $libasan" >&2; exit 1; }
    # libstdc++ too, loaded before ASan starts: its __cxa_throw interceptor needs the real one
    # (a C++ extension that throws, matplotlib's ft2font, otherwise aborts in a CHECK)
    libstdcxx="$(realpath "$("$CC" -print-file-name=libstdc++.so)")"
    [ -f "$libstdcxx" ] || { echo "no libstdc++: $CC -print-file-name=libstdc++.so gave $libstdcxx" >&2; exit 1; }
    # KEEP_GOING: every process runs on, and each test that reaches a bug reports it
    # (suppress_equal_pcs=0; by default ASan reports a place once per process)
    local again=""
    [ "${KEEP_GOING:-0}" = 1 ] && { halt=0; again=":suppress_equal_pcs=0"; }
    reports="${REPORTS:-$WORK/reports}/$name"
    mkdir -p "$reports"
    # shellcheck disable=SC2206
    local extra=(${PYTEST_ARGS:-})
    step "$name: Python tests under ASan+UBSan ($libasan:$libstdcxx preloaded, halt_on_error=$halt," \
         "ZKALLOC_STRESS_OPS=${ZKALLOC_STRESS_OPS:-1500}, reports in $reports)"
    # Children (compare, run, the bench, run_python) import the sanitized package too: a folder
    # holding only it goes first on their path, as an installed package would (not the copy's
    # root, which would make bench/ and tests/ importable from everywhere).
    mkdir -p "$WORK/path" && ln -sfn "$WORK/src/zkalloc_np" "$WORK/path/zkalloc_np"
    (cd "$WORK/src" && LD_PRELOAD="$libasan:$libstdcxx" SANITIZE_REPORTS="$reports" \
        PYTHONPATH="$WORK/path${PYTHONPATH:+:$PYTHONPATH}" \
        ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=$halt$again:log_path=$reports/proc" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=$halt:log_path=$reports/proc" \
        "$PYTHON" -m pytest -q -p no:cacheprovider "$@" "${extra[@]}") || rc=$?
    [ "$rc" -eq 0 ] || echo "$name: pytest exited with status $rc" >&2
    "$PYTHON" "$ROOT/tools/sanitizer_check.py" reports "$reports" || rc=1
    [ "$rc" -eq 0 ] || { echo "$name failed (pytest exit status or sanitizer reports, above)" >&2; exit 1; }
}

# TESTS (paths or node ids, split on spaces) replaces either mode's selection
# shellcheck disable=SC2086
py_asan() { if [ -n "${TESTS:-}" ]; then py_tests py-asan $TESTS; else py_tests py-asan tests; fi; }
# shellcheck disable=SC2086
py_asan_core() { if [ -n "${TESTS:-}" ]; then py_tests py-asan-core $TESTS; else py_tests py-asan-core "${PY_TESTS[@]}"; fi; }

py_valgrind() {
    step "Python stress test under valgrind (PYTHONMALLOC=malloc, 2 threads x 100 ops)"
    # CPython itself reports uninitialised reads under valgrind without its suppression file;
    # only error records with a frame in the zkalloc core or extension count here.
    (cd "$ROOT" && PYTHONMALLOC=malloc ZKALLOC_STRESS_OPS=100 ZKALLOC_STRESS_THREADS=2 \
        valgrind -q --leak-check=no --log-file="$WORK/valgrind.%p.log" \
        "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_stress.py -k "traffic and not maintenance")
    "$PYTHON" - "$WORK"/valgrind.*.log <<'PY'
import re, sys
records = [r for path in sys.argv[1:] for r in re.split(r"\n==\d+== \n", open(path).read()) if r.strip()]
ours = [r for r in records if re.search(r"\bzk_\w+|_core\.cpython", r)]
print(f"valgrind: {len(records)} error record(s), {len(ours)} in zkalloc's code")
for r in ours:
    print(r)
sys.exit(1 if ours else 0)
PY
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(c-asan c-valgrind py-asan-core)
for s in "${steps[@]}"; do
    case "$s" in
        c-asan) c_asan ;;
        c-tsan) c_tsan ;;
        c-tsan-stress) c_tsan_stress ;;
        c-valgrind) c_valgrind ;;
        py-asan) py_asan ;;
        py-asan-core) py_asan_core ;;
        py-valgrind) py_valgrind ;;
        *) echo "unknown step $s (c-asan c-tsan c-tsan-stress c-valgrind py-asan py-asan-core py-valgrind)" >&2; exit 2 ;;
    esac
done
printf '\nall sanitizer steps passed: %s\n' "${steps[*]}"
