#!/usr/bin/env bash
# Run the whole test suite from a clean checkout on a fresh Debian/Ubuntu machine: installs the
# system packages it needs, makes one virtual environment per Python (3.13 and 3.11 when
# present), builds the extension with warnings as errors, and runs pytest against the installed
# package, then runs the suite again under ASan/UBSan/LSan (scripts/sanitize.sh) and the core
# tests against hiredis 1.x (scripts/compat-hiredis1.sh).
# VPS_PYTHONS="3.13 3.11" makes those versions mandatory (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/system-deps.sh

wanted=${VPS_PYTHONS:-}
candidates=${wanted:-3.13 3.11}
ran=0
for v in $candidates; do
    if ! py=$(scripts/find-python.sh "$v"); then
        if [ -n "$wanted" ]; then echo "Python $v is required but not found" >&2; exit 1; fi
        echo "== Python $v not found; skipping it"
        continue
    fi
    venv="$root/.venv-$v"
    echo "== Python $v ($py): building and testing in $venv"
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q --disable-pip-version-check ".[test,bench]"
    rm -rf build  # setuptools reuses objects in build/: force a compile with -Werror
    VPS_CFLAGS="-Werror" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        --force-reinstall --no-deps --no-cache-dir .
    rm -rf build
    (cd tests && "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@")
    ran=$((ran + 1))
    # the sanitizer run prefers 3.11: from 3.12 on, interned strings are immortal and would
    # have to be suppressed as leaks (see scripts/sanitize.sh)
    if [ -z "${sanitize_python:-}" ] || [ "$v" = "3.11" ]; then sanitize_python=$py; fi
    bench_python=${bench_python:-$venv/bin/python}
done
if [ "$ran" -eq 0 ]; then
    echo "no Python 3.13 or 3.11 found; install python3 (Debian/Ubuntu: apt-get install python3)" >&2
    exit 1
fi
# the benchmark's smoke run (a few seconds; no thresholds: CI machines are noisy)
out=$(mktemp -d)
"$bench_python" bench/run.py --quick --json "$out/bench.json" --png "$out/bench.png"
rm -rf "$out"
# the same suite with AddressSanitizer + UBSan + LeakSanitizer (the RSS checks are left out:
# ASan's allocator keeps freed memory in quarantine, so RSS says nothing there)
scripts/sanitize.sh "$sanitize_python" -m "not rss" "$@"
# the core tests once more against hiredis 1.x (the system has 0.14 on Debian 12)
scripts/compat-hiredis1.sh "$sanitize_python" test_publisher_basic.py test_routing.py \
    test_ordering.py test_payloads.py test_inputs.py test_leaks.py
echo "== all test runs passed ($ran Python version(s) + sanitizer run + hiredis 1.x run)"
