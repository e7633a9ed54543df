#!/usr/bin/env bash
# The main job from a clean checkout on a fresh Debian/Ubuntu machine: installs what it needs
# (system packages, a virtual environment, the package), then runs the demo: two publisher
# processes on a private redis-server (unless REDIS_URL is set), live progress, a summary.
# Arguments go to the demo (e.g. --uploads 48).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
py=$(scripts/find-python.sh 3.13 || scripts/find-python.sh 3.12 || scripts/find-python.sh 3.11) || {
    echo "Python 3.11 or newer is required (Debian/Ubuntu: apt-get install python3)" >&2; exit 1; }
venv=.venv-demo
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check .
# -P: run the installed package, not the source tree of the current directory
exec "$venv/bin/python" -P -m vuemantics_pubsub demo "$@"
