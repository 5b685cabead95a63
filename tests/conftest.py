"""Test-wide setup: CPU machines run Triton kernels under the interpreter.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection time.
"""
import os

# One intra-op thread per test process: the suite runs one xdist worker per core, and torch's default of a
# thread per core in every worker oversubscribes the cores (measured: a tiny-model engine test took 10 s
# instead of 0.4 s on a loaded 2-core machine). Subprocesses (sandbox, gloo ranks) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
    torch.set_num_threads(1)
except Exception:  # torch missing: tests that need it fail with their own import error
    _HAS_CUDA = False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not _HAS_CUDA:
            item.add_marker(skip_cuda)
