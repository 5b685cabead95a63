"""What generate returns: one Completion per sample, a GenerationSummary of what the call cost."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator


@dataclass
class Completion:
    """One sample. token_ids: the generated ids, without an EOS or stop token id (with the stop token id when
    include_stop_str_in_output); for a stop string, through the token that completed it. text: their decoding,
    cut before the stop string (after it with include_stop_str_in_output). logprobs: one per token_ids entry,
    when SamplingParams.logprobs."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" | "eos"
    logprobs: list[float] | None
    key: Any
    sample_index: int


@dataclass
class GenerationSummary:
    """What a generate call cost. Times in seconds; memory in bytes.

    seconds: wall time from the first prefill to the last token, CUDA-graph captures included (tokens_per_second
    is over it). decode_seconds: decode steps (captures excluded, see capture_seconds). prefill_seconds: prefill
    calls. kv_bytes: the KV pool (pages);
    kv_occupancy: time-averaged fraction of the pool holding live KV (resident nodes + live suffix tokens).
    mean_batch: sequences per decode step, averaged over steps. preemptions: subtrees sent back to wait (their
    unfinished samples recomputed). captures: CUDA graphs captured. sub_batches: admissions (continuous: subtrees
    admitted; static: sub-batches).
    """

    attention: str
    batching: str
    num_sequences: int
    sub_batches: int
    generated_tokens: int
    prefill_tokens: int  # tokens run through the model in prefill (each node once per residency)
    prefill_seconds: float
    decode_seconds: float
    tokens_per_second: float  # generated tokens / seconds
    decode_tokens_per_second: float  # tokens sampled in decode steps / decode seconds
    prefill_calls: int
    decode_steps: int
    decode_rows: int  # sum of the decode batch sizes (live rows, padding excluded)
    padded_rows: int  # sum of the padded batch sizes the steps ran at
    kv_bytes: int
    peak_memory_bytes: int
    seconds: float = 0.0
    capture_seconds: float = 0.0
    captures: int = 0
    preemptions: int = 0
    mean_batch: float = 0.0
    kv_occupancy: float = 0.0
    host_seconds: float = 0.0  # host time per run spent NOT overlapped with device work (waiting excluded)
    # the device's idle gaps between back-to-back steps: quantiles, late steps, the device work between steps
    # (between_s), host seconds by part over all steps and over the late ones (engine.host_profile.gap_profile;
    # CUDA only, {} elsewhere)
    host_gaps: dict = field(default_factory=dict)
    bos_rule: str = ""
    max_rows: int = 0  # the most rows a decode step could have (memory and graph buckets)
    budget_bytes: int = 0  # what the run was given (engine.memory: free device memory x 0.85, or the option)
    workspace_bytes: int = 0  # of it, set aside for a step's activations, logits and a prefill call (the rest: KV)
    rebuilds: int = 0  # decode batches built (each drains the pipeline; joins and compactions)
    rebuild_seconds: float = 0.0  # host time of those builds (metadata, buffers), the pipeline drained
    # (padded rows, eager-step s, capture s, Triton kernels compiled) per CUDA-graph capture
    capture_log: list = field(default_factory=list)
    # Triton kernels compiled inside prefill calls and first-token sampling (their time is in prefill_seconds)
    prefill_compiles: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class GenerationResult(Mapping):
    """key -> list[Completion], one per sample in sample order; `.summary` is a GenerationSummary."""

    def __init__(self, completions: dict, summary: GenerationSummary, step_log: list | None = None):
        self._completions = completions
        self.summary = summary
        self.step_log = step_log  # [(live rows, device ms)] per replayed decode step (generate(step_log=True))

    def __getitem__(self, key) -> list[Completion]:
        try:
            return self._completions[key]
        except KeyError:
            some = ", ".join(repr(k) for k in list(self._completions)[:5])
            raise KeyError(f"{key!r} is not the key of a node that asked for samples (a node with samples=0 has "
                           f"none); keys here: {some}{', ...' if len(self._completions) > 5 else ''}") from None

    def __iter__(self) -> Iterator:
        return iter(self._completions)

    def __len__(self) -> int:
        return len(self._completions)

    def all(self) -> list[Completion]:
        """Every completion, node by node in plan order, samples in order."""
        return [c for cs in self._completions.values() for c in cs]


def completion_writer(out):
    """An on_complete callback writing each finished completion to the text file `out` as one JSON line (key,
    sample_index, text, token_ids, finish_reason, logprobs when asked), flushed at once: a killed run keeps what
    it finished. The format of `prompt-tree generate --out`, one process or data-parallel."""

    def write(key, sample_index, c: Completion) -> None:
        row = {"key": key, "sample_index": sample_index, "text": c.text, "token_ids": c.token_ids,
               "finish_reason": c.finish_reason}
        if c.logprobs is not None:
            row["logprobs"] = c.logprobs
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.flush()

    return write
