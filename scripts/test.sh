#!/usr/bin/env bash
# The README's test command: installs (idempotent) and runs the whole suite on CPU or GPU.
# A run that collects no test fails (pytest exit code 5), it never passes silently.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh  # PY (and PYTHON, for setup.sh)
bash scripts/setup.sh test || exit 1
workers=${PYTEST_WORKERS:-auto}
"$PY" -m pytest -n "$workers" --durations=15 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "[test] pytest collected no test: failing on purpose" >&2
    exit 1
fi
exit "$rc"
