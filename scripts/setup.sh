#!/usr/bin/env bash
# Idempotent install of prompt-tree and its dependencies into the current Python.
# Installs a CPU build of torch only where no torch is importable; never replaces a torch that is there.
# Usage: bash scripts/setup.sh [extras]   (extras default: test)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-test}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] no torch importable: installing torch==${TORCH_VERSION:-2.13.0} (CPU build where one lies on disk)"
    "$PY" -m pip install --progress-bar on "torch==${TORCH_VERSION:-2.13.0}"
else
    echo "[setup] torch $("$PY" -c 'import torch; print(torch.__version__)') already present: kept"
fi
if "$PY" -c "import prompt_tree, sys; sys.exit(0)" >/dev/null 2>&1 && [ -z "${FORCE_INSTALL:-}" ] \
   && "$PY" -m pip show prompt-tree >/dev/null 2>&1 && [ -f .setup-stamp ] && [ .setup-stamp -nt pyproject.toml ]; then
    echo "[setup] prompt-tree already installed (editable): nothing to do"
else
    echo "[setup] installing prompt-tree (editable) with extras [$extras]"
    "$PY" -m pip install --progress-bar on -e ".[$extras]"
    touch .setup-stamp
fi
