"""The generation engine, one job per file:

    options.py    EngineOptions: every option validated when given
    sequence.py   Sequence (one typed record per sample), Unit (a subtree admitted at once), make_units
    blocks.py     the paged KV pool's bookkeeping: nodes pinned while read, suffix pages on demand
    memory.py     the budget, the workspace, the pages it buys; SchedulingError
    scheduler.py  admission as memory frees, expected lengths and a watermark, preemption of the newest unit
    segments.py   the one builder of attention metadata for prefill pieces and decode rows
    model_runner.py  the device side: KV tensor, prefill calls, the capturable decode step, graph buckets
    run.py        one generate call's loop, host work overlapped with the next step
    engine.py     Engine: construction, planning, generate, cost
    results.py    Completion, GenerationSummary, GenerationResult
"""
from .engine import ATTENTION_MODES, Engine
from .memory import SchedulingError
from .options import EngineOptions
from .results import Completion, GenerationResult, GenerationSummary

__all__ = ["Engine", "EngineOptions", "Completion", "GenerationResult", "GenerationSummary", "SchedulingError",
           "ATTENTION_MODES"]
