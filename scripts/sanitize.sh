#!/usr/bin/env bash
# Build the extension with AddressSanitizer + UndefinedBehaviorSanitizer (and LeakSanitizer) and
# run the test suite, or the tests named as arguments, under it. Python itself is not
# instrumented: the ASan runtime is preloaded and PYTHONMALLOC=malloc routes Python's
# allocations through it. Any sanitizer report fails the run.
# usage: scripts/sanitize.sh PYTHON [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:?usage: scripts/sanitize.sh PYTHON [pytest args...]}
shift
venv=".venv-asan-$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
libasan=$(gcc -print-file-name=libasan.so)
libasan=$(readlink -f "$libasan")
[ -f "$libasan" ] || { echo "libasan not found (Debian/Ubuntu: apt-get install gcc)" >&2; exit 1; }

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check ".[test]"
rm -rf build
VPS_CFLAGS="-Werror -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1" \
VPS_LDFLAGS="-fsanitize=address,undefined" \
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps --no-cache-dir .
rm -rf build
so=$(ls "$venv"/lib/python3*/site-packages/vuemantics_pubsub/_native*.so)
deps=$(ldd "$so")  # not piped into grep -q: with pipefail, an early exit of grep fails ldd
grep -q libasan <<<"$deps" || { echo "sanitizer build failed: $so is not instrumented" >&2; exit 1; }

log=$(mktemp -d)/asan
supp=$(dirname "$log")/lsan.supp
cp scripts/lsan.supp "$supp"
if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
    # 3.12+ makes interned strings immortal: every interpreter exit "leaks" them. This also
    # hides leaked str objects of ours, which is why test.sh prefers 3.11 for this run.
    printf 'leak:PyUnicode_New\nleak:resize_compact\n' >> "$supp"
fi
echo "== sanitizer run (ASan+UBSan+LSan), reports to $log.*"
set +e
(cd tests && LD_PRELOAD="$libasan" PYTHONMALLOC=malloc \
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:log_path=$log:halt_on_error=1" \
    LSAN_OPTIONS="suppressions=$supp:print_suppressions=0" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$log" \
    "../$venv/bin/python" -m pytest -q -p no:cacheprovider "$@")
rc=$?
set -e
# a report is an ERROR from ASan/LSan or a UBSan "runtime error" (LSan's notes such as "thread
# was not suspended" alone are not)
reports=$(grep -l -E "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$log".* 2>/dev/null || true)
if [ -n "$reports" ]; then
    echo "== sanitizer reports:" >&2
    cat $reports >&2
    exit 1
fi
[ $rc -eq 0 ] || exit $rc
echo "== sanitizer run clean"
