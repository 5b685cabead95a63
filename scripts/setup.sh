#!/usr/bin/env bash
# Idempotent install of prompt-tree and its dependencies into the current Python.
# Installs torch only where none is importable (the CPU build where no NVIDIA driver is visible); never replaces
# a torch that is there.
# Usage: bash scripts/setup.sh [extras]   (extras default: test)
# The Python: the one scripts/python.sh picks (its header lists the order; it prints its choice and why).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
extras=${1:-test}
torch_req="torch==${TORCH_VERSION:-2.13.0}"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    # With no NVIDIA driver visible, ask PyTorch's CPU index first: PyPI's Linux torch is the CUDA build, several
    # GB of libraries a CPU-only machine never loads. Where that index is out of reach (an offline mirror, a
    # firewall), fall back to the configured index, which may hold a CPU build (a local wheel) or the CUDA one.
    cpu_index=${TORCH_CPU_INDEX-https://download.pytorch.org/whl/cpu}  # set and empty: skip it
    if [ -e /proc/driver/nvidia/version ] || command -v nvidia-smi >/dev/null 2>&1 || [ -z "$cpu_index" ]; then
        echo "[setup] no torch importable: installing $torch_req from the configured package index"
        "$PY" -m pip install --progress-bar on "$torch_req"
    else
        echo "[setup] no torch importable and no NVIDIA driver: installing $torch_req, CPU build, from $cpu_index"
        if ! "$PY" -m pip install --progress-bar on --timeout 15 --retries 0 --index-url "$cpu_index" "$torch_req"; then
            echo "[setup] $cpu_index gave no $torch_req (out of reach, or no such build; TORCH_CPU_INDEX= skips it):" \
                 "installing it from the configured package index instead"
            "$PY" -m pip install --progress-bar on "$torch_req"
        fi
    fi
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
