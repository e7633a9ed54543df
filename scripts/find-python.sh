#!/usr/bin/env bash
# Print the path of a working Python interpreter of version $1 (e.g. 3.13): on PATH, under
# pyenv, or python3 itself when it is that version. Exit 1 when there is none.
set -u
v=${1:?usage: scripts/find-python.sh VERSION}
for p in "$(command -v "python$v" 2>/dev/null)" \
         "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v"*/bin/python"$v" \
         "$(command -v python3 2>/dev/null)"; do
    [ -n "$p" ] && [ -x "$p" ] || continue
    if [ "$("$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$v" ]; then
        echo "$p"
        exit 0
    fi
done
exit 1
