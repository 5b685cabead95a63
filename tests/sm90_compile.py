"""Test helper: run a script that compiles Triton kernels for sm_90 with the real compiler, in a subprocess.

tests/conftest.py turns Triton's interpreter on for the test process, and the interpreter never meets the
compiler, so the compile tests run their script in a fresh interpreter-free Python with the repository importable.
The script prints "SKIP ..." when this Triton has no NVIDIA backend; otherwise its stdout is returned for the
caller's own check (how many kernels it compiled)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_compile_script(script: str, timeout: int = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PROMPT_TREE_CPU_TRITON")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, run.stderr[-4000:]
    if run.stdout.startswith("SKIP"):
        pytest.skip(run.stdout.strip())
    return run.stdout
