#!/usr/bin/env bash
# The README's run command: installs (idempotent) and runs the main job on its embedded default
# (APPS-style evaluation of the embedded problems with the tiny built-in model, CPU or GPU).
# Extra arguments go to `prompt-tree apps`, e.g. --samples 4.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh  # PY (and PYTHON, for setup.sh)
bash scripts/setup.sh test
exec "$PY" -m prompt_tree.cli apps "$@"
