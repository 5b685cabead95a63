# Sourced (not run) by setup.sh, run.sh and test.sh from the checkout's root: sets PY, the Python the README's
# commands install into and run with, and exports it as PYTHON so that each script they call picks the same one.
# In order:
#   1. $PYTHON, when set (the user's choice: kept as given);
#   2. python3 on PATH inside an active virtual environment ($VIRTUAL_ENV);
#   3. .venv/bin/python, a virtual environment an earlier run made in this checkout;
#   4. python3 on PATH when it takes installs (scripts/pick_python.py: not externally managed, site-packages
#      writable);
#   5. otherwise a new .venv made from that python3, with --system-site-packages so that a torch already installed
#      there (a CUDA build, say) stays importable and is kept, as setup.sh promises.
pt_pick_python() {
    if [ -n "${PYTHON:-}" ]; then
        PY=$PYTHON
        # (a script sourcing this after its caller did says nothing again)
        [ "${PT_PYTHON_PICKED:-}" = "$PY" ] || echo "[setup] Python: $PY (from \$PYTHON)"
        return 0
    fi
    local py3
    if ! py3=$(command -v python3); then
        echo "[setup] error: no python3 on PATH. Install Python >= 3.10, or set PYTHON=/path/to/python" >&2
        return 1
    fi
    if [ -n "${VIRTUAL_ENV:-}" ]; then
        PY=$py3
        echo "[setup] Python: $PY (the active virtual environment $VIRTUAL_ENV)"
        return 0
    fi
    if [ -x .venv/bin/python ]; then
        PY=$PWD/.venv/bin/python
        echo "[setup] Python: $PY (this checkout's .venv, made by an earlier run)"
        return 0
    fi
    local verdict rc=0
    verdict=$(python3 scripts/pick_python.py) || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "[setup] error: python3 on PATH ($py3): ${verdict#no }. Install Python >= 3.10, or set PYTHON=/path/to/python" >&2
        return 1
    fi
    if [ "${verdict%% *}" = yes ]; then
        PY=$py3
        echo "[setup] Python: $PY (${verdict#yes })"
        return 0
    fi
    echo "[setup] python3 on PATH ($py3) is ${verdict#no }: making a virtual environment in .venv (it sees that Python's packages)"
    if ! python3 -m venv --system-site-packages .venv; then
        rm -rf .venv
        echo "[setup] error: python3 -m venv failed. Install your distribution's venv package (Debian / Ubuntu: apt install python3-venv), activate a virtual or conda environment, or set PYTHON=/path/to/a/python that can install packages" >&2
        return 1
    fi
    PY=$PWD/.venv/bin/python
    echo "[setup] Python: $PY"
}
pt_pick_python || exit 1
export PYTHON=$PY PT_PYTHON_PICKED=$PY
