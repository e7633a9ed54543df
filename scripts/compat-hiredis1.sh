#!/usr/bin/env bash
# Build and test the extension against hiredis 1.x as well as the system's (Debian 12 ships
# 0.14). hiredis 1.x comes from PyPI through pip: the sdist of the `hiredis` Python package
# (pinned below) carries the C library in vendor/hiredis. It is compiled into a private prefix
# with a pkg-config file, the extension is built against it with -Werror, and the core tests run.
# usage: scripts/compat-hiredis1.sh PYTHON [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:?usage: scripts/compat-hiredis1.sh PYTHON [pytest args...]}
shift
HIREDIS_SDIST_VERSION=3.5.0   # vendors hiredis 1.5.0

work=$(mktemp -d)
trap '[ -n "${VPS_KEEP:-}" ] || rm -rf "$work"' EXIT
"$py" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$work" "hiredis==$HIREDIS_SDIST_VERSION"
tar xzf "$work"/hiredis-"$HIREDIS_SDIST_VERSION".tar.gz -C "$work"
src="$work/hiredis-$HIREDIS_SDIST_VERSION/vendor/hiredis"
prefix="$work/prefix"
mkdir -p "$prefix/include/hiredis" "$prefix/lib/pkgconfig"
cp "$src"/*.h "$prefix/include/hiredis/"
version=$(awk '/define HIREDIS_(MAJOR|MINOR|PATCH)/ {printf "%s%s", sep, $3; sep="."}' "$src/hiredis.h")
(cd "$src" && gcc -O2 -fPIC -shared -o "$prefix/lib/libhiredis.so" \
    alloc.c async.c hiredis.c net.c read.c sds.c sockcompat.c)
cat > "$prefix/lib/pkgconfig/hiredis.pc" <<PC
prefix=$prefix
includedir=\${prefix}/include
libdir=\${prefix}/lib
Name: hiredis
Description: hiredis $version from the hiredis $HIREDIS_SDIST_VERSION sdist
Version: $version
Libs: -L\${libdir} -lhiredis
Cflags: -I\${includedir}
PC
echo "== building against hiredis $version"

venv=".venv-hiredis1"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check ".[test]"
rm -rf build
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" VPS_CFLAGS="-Werror" VPS_LDFLAGS="-Wl,-rpath,$prefix/lib" \
    "$venv/bin/python" -m pip install ${VPS_PIP_VERBOSE:--q} --disable-pip-version-check --force-reinstall --no-deps --no-cache-dir .
rm -rf build
got=$(cd tests && "../$venv/bin/python" -c 'import vuemantics_pubsub._native as n; print(n.hiredis_version)')
[ "$got" = "$version" ] || { echo "built against hiredis $got, expected $version" >&2; exit 1; }
(cd tests && "../$venv/bin/python" -m pytest -q -p no:cacheprovider "$@")
echo "== hiredis $version: build and tests passed"
