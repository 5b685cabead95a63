"""How a tree-attention call launches its kernels: LaunchOptions, and the cuda_graph_path() context.

These choices change where and how the kernels run, never what they compute (every combination gives the same
result; most give the same bits). They are arguments of the op and of plans, with the defaults below; the only
ambient state is cuda_graph_path(), which makes plain calls take the path a CUDA-graph capture takes.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

# Plain (uncaptured) calls switch to two streams only when the step's KV is at least this many bytes: the switch
# costs ~30 us of host time (tools/launch_overhead.py) and, with the own kernel unsplit, a merge launch that is
# otherwise fused. Below it the GPU work (< ~90 us at 3 TB/s) is shorter than the host time of the call, so
# overlap on the GPU would only add to the host time; under CUDA-graph capture the host cost is paid once.
OVERLAP_MIN_BYTES = 256 * 2**20


@dataclass(frozen=True)
class LaunchOptions:
    """Launch choices of prompt_tree.kernels.tree_attention / plan_tree_attention (GPU only; the CPU paths ignore them).

    overlap: run the own-segment kernel on a side stream, overlapping the shared kernels, then merge. The shared
      work is tensor-core bound for large groups and the own work bandwidth bound, so they share the SMs well
      (H100, docs/benchmarks/tune_v2.json: -19% at 32/8 B=256 16K prefix, -8% at 40/40 B=1024 16K). None (the
      default) = always under CUDA-graph capture and inside cuda_graph_path(); for plain calls only when the
      step reads at least `overlap_min_bytes` of KV. False = never, True = whenever there is shared work. The
      shared kernels are issued first: an own kernel issued first (measured, rejected) lets its many small
      programs take every SM, and nothing overlaps.
    overlap_min_bytes: that threshold for plain calls (default 256 MiB; see OVERLAP_MIN_BYTES).
    pdl: programmatic dependent launch on one-stream calls (Hopper and later): the own kernel starts once every
      shared program runs and waits only before its merge. H100 (tools/split_sweep.py --pdl,
      docs/benchmarks/pdl_sweep.json), plain planned calls: 32/8 B16 1K 29.6 -> 20.3 us, B16 4K 36.1 -> 27.8,
      B1024 1K 436 -> 425; faster on all 8 rows. Captures keep the two-stream overlap (one stream with PDL won
      on some rows and lost on others).
    direct: repeat launches go past Triton's dispatcher through the cached compiled kernel
      (prompt_tree/kernels/launch.py; bit-identical; host time of a plain call 167 -> 84 us on the H100 machine,
      84 -> 60 us on an H200's).
    raw: with `direct`, call the compiled launcher itself rather than Triton's public runner (less host time;
      the runner is used anyway while a launch hook such as a profiler is set).
    """

    overlap: bool | None = None
    overlap_min_bytes: int = OVERLAP_MIN_BYTES
    pdl: bool = True
    direct: bool = True
    raw: bool = True

    def __post_init__(self):
        if self.overlap is not None and not isinstance(self.overlap, bool):
            raise ValueError(f"LaunchOptions.overlap must be None, True or False, not {self.overlap!r}")
        for name in ("pdl", "direct", "raw"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"LaunchOptions.{name} must be True or False, not {getattr(self, name)!r}")
        if isinstance(self.overlap_min_bytes, bool) or not isinstance(self.overlap_min_bytes, int) \
                or self.overlap_min_bytes < 0:
            raise ValueError(f"LaunchOptions.overlap_min_bytes must be an int >= 0, not {self.overlap_min_bytes!r}")


DEFAULT_OPTIONS = LaunchOptions()

_GRAPH_PATH: contextvars.ContextVar[bool] = contextvars.ContextVar("kernels_graph_path", default=False)


@contextlib.contextmanager
def cuda_graph_path():
    """Plain calls inside take the launch path a CUDA-graph capture takes (LaunchOptions.overlap=None resolves as
    under capture: two streams whenever there is shared work).

    Small plain calls stay on one stream; a capture overlaps the own-segment kernel on a side stream. Run the
    warm-up before a capture inside this, and it compiles and runs exactly the kernels the capture records (and
    gives the same bits as the replay). Per thread and task (a context variable), nestable.
    """
    token = _GRAPH_PATH.set(True)
    try:
        yield
    finally:
        _GRAPH_PATH.reset(token)


def in_graph_path() -> bool:
    """Whether the caller is inside cuda_graph_path()."""
    return _GRAPH_PATH.get()
