"""The generation engine: tree prefill, batched hierarchical decoding, stop handling, memory-aware sub-batches.

    engine = Engine.random("tiny")                 # or Engine.from_pretrained("/path/to/checkpoint")
    result = engine.generate(tree, SamplingParams(max_new_tokens=64, temperature=0.8, seed=1))
    result["problem-3"][0].text, result.summary

Per sub-batch (scheduler.py picks them): a KV pool (kv.py) holds each node once and a suffix per sequence;
prefill runs depth by depth, all nodes of a depth in one model call (chunked to bound activations), each node's
queries reading their ancestors' KV through `kernels.tree_attention`; each sequence's first token is sampled from
its node's last-token logits. Then every sequence decodes together, one token per sequence per step, attention
reading each shared node once for its whole group (or, with attention="flat", once per sequence: the no-sharing
baseline on the same kernels). Finished sequences leave the batch when enough of them have finished
(`compact_fraction`); on CUDA each batch composition's step is captured once in a CUDA graph and replayed.
"""
from __future__ import annotations

import bisect
import resource
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import torch

from kernels import Segment, build_tree_meta, cuda_graph_path, plan_tree_attention, tree_attention
from kernels.tree_attention import in_graph_path

from .kv import KVLayout, KVPool
from .sampling import SamplingParams, StopChecker, sample, sequence_id
from .scheduler import available_memory, batch_cost, schedule

# Rows of vocabulary-sized fp32 work per sampling call when the first tokens are drawn after prefill
# (a node shared by thousands of sequences would otherwise expand to thousands of logit rows at once).
_FIRST_TOKEN_ROWS_BYTES = 1 << 28
# "tree": shared nodes read once per group; "flat": every sequence reads its whole path; "none": no attention.
ATTENTION_MODES = ("tree", "flat", "none")


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
    """What a generate call cost. Times in seconds; memory in bytes (kv_bytes: the largest sub-batch's pool)."""

    attention: str
    num_sequences: int
    sub_batches: int
    generated_tokens: int
    prefill_tokens: int  # tokens run through the model in prefill (each node once)
    prefill_seconds: float
    decode_seconds: float  # decode steps, CUDA-graph capture excluded (see capture_seconds)
    tokens_per_second: float  # generated tokens / (prefill + decode + capture seconds)
    decode_tokens_per_second: float  # tokens sampled in decode steps / decode seconds
    prefill_calls: int
    decode_steps: int  # model calls in decode
    decode_rows: int  # sum of decode batch sizes (rows of finished sequences not yet compacted away included)
    kv_bytes: int
    peak_memory_bytes: int
    capture_seconds: float = 0.0  # one-off CUDA-graph captures (warm-up forward + capture), once per batch shape

    def as_dict(self) -> dict:
        return asdict(self)


class GenerationResult(Mapping):
    """key -> list[Completion], one per sample in sample order; `.summary` is a GenerationSummary."""

    def __init__(self, completions: dict, summary: GenerationSummary):
        self._completions = completions
        self.summary = summary

    def __getitem__(self, key) -> list[Completion]:
        return self._completions[key]

    def __iter__(self) -> Iterator:
        return iter(self._completions)

    def __len__(self) -> int:
        return len(self._completions)

    def all(self) -> list[Completion]:
        """Every completion, node by node in plan order, samples in order."""
        return [c for cs in self._completions.values() for c in cs]


@dataclass
class _Stats:
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    capture_seconds: float = 0.0
    prefill_tokens: int = 0
    prefill_calls: int = 0
    decode_steps: int = 0
    decode_rows: int = 0
    decode_tokens: int = 0
    generated_tokens: int = 0
    kv_bytes: int = 0


class Engine:
    """A model, its tokenizer and device, and `generate` over prompt trees.

    memory_budget_bytes: what a batch may use beyond the weights (default: measured free memory at generate time).
    cuda_graphs: capture decode steps in CUDA graphs (CUDA only; ignored on CPU).
    prefill_chunk_tokens: the most query rows of one prefill model call.
    compact_fraction: rebuild the decode batch without its finished sequences once that fraction has finished.
    add_bos: True / False overrides the tokenizer's BOS rule when trees are tokenized (prompt_tree.bos); None keeps it.
    """

    def __init__(self, model, config, tokenizer=None, eos_ids=None, *, memory_budget_bytes: int | None = None,
                 cuda_graphs: bool = True, prefill_chunk_tokens: int = 8192, compact_fraction: float = 0.125,
                 add_bos: bool | None = None):
        if not (0 <= compact_fraction < 1):
            raise ValueError(f"compact_fraction must be in [0, 1), got {compact_fraction!r}")
        if prefill_chunk_tokens < 1:
            raise ValueError(f"prefill_chunk_tokens must be >= 1, got {prefill_chunk_tokens!r}")
        self.model = model
        self.config = config
        self.tokenizer = tokenizer
        self.eos_ids = tuple(config.eos_token_ids if eos_ids is None else eos_ids)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        if self.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"the engine runs models in bfloat16, float16 or float32, not {self.dtype}: load the "
                             f"model with dtype='bf16', 'fp16' or 'fp32' (the attention kernels have no fp64 path)")
        self.memory_budget_bytes = memory_budget_bytes
        self.cuda_graphs = cuda_graphs
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.compact_fraction = compact_fraction
        if add_bos is not None and not isinstance(add_bos, bool):
            raise ValueError(f"add_bos must be True, False or None (the tokenizer's rule), got {add_bos!r}")
        self.add_bos = add_bos

    # ----- construction

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None, **kwargs) -> "Engine":
        """Load an HF checkpoint directory (config.json, safetensors, tokenizer.json)."""
        import os

        from .loading import load_model

        if not os.path.isdir(os.fspath(path)):
            raise FileNotFoundError(f"model directory {os.fspath(path)!r} does not exist: pass a local checkpoint "
                                    f"directory holding config.json, *.safetensors and tokenizer.json")
        loaded = load_model(path, device, dtype)
        return cls(loaded.model, loaded.config, loaded.tokenizer, loaded.eos_ids, **kwargs)

    @classmethod
    def random(cls, preset="tiny", seed: int = 0, device=None, dtype=None, tokenizer=None, **kwargs) -> "Engine":
        """Random weights of a preset (name or ModelConfig). The "tiny" preset gets the byte tokenizer; other
        presets have none unless given (prompts must then be token ids and texts are empty)."""
        from .config import get_preset
        from .loading import random_model
        from .tokenizer import random_model_tokenizer

        config = get_preset(preset) if isinstance(preset, str) else preset
        model = random_model(config, seed=seed, device=device, dtype=dtype)
        if tokenizer is None:
            tokenizer = random_model_tokenizer(config)
        return cls(model, config, tokenizer, config.eos_token_ids, **kwargs)

    # ----- planning

    def plan(self, tree_or_plan, params: SamplingParams | None = None):
        """The Plan of a PromptTree (each sequence its whole prompt's encoding, under the tokenizer's BOS rule or
        add_bos), or a Plan unchanged; checked to fit the model's context."""
        if hasattr(tree_or_plan, "levels") and hasattr(tree_or_plan, "sequences"):
            plan = tree_or_plan
        elif hasattr(tree_or_plan, "flatten"):
            plan = (tree_or_plan.flatten(tokenizer=self.tokenizer, add_bos=self.add_bos) if self.tokenizer
                    else tree_or_plan.flatten())
        else:
            raise TypeError(f"generate takes a PromptTree or a Plan, not {type(tree_or_plan).__name__}")
        max_new = params.max_new_tokens if params else 0
        limit = self.config.max_position_embeddings
        vocab = self.config.vocab_size
        for key, ids in plan.node_tokens.items():
            bad = next((t for t in ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise ValueError(f"node {key!r} has token id {bad}, outside the model's vocabulary of {vocab} ids "
                                 f"(0..{vocab - 1}): token-id prompts must come from this model's tokenizer")
        for i in range(plan.num_sequences):
            n = sum(g.num_tokens for g in plan.path(i))
            if n == 0:
                raise ValueError(f"sequence {plan.sequences[i]} has an empty prompt: give its path at least one "
                                 f"token")
            # The last sampled token is never fed back: positions 0 .. n + max_new - 2 are used.
            if n + max_new - 1 > limit:
                raise ValueError(f"sequence {plan.sequences[i]}: prompt of {n} tokens + max_new_tokens {max_new} "
                                 f"exceeds the model's context of {limit} positions (at most {limit + 1 - n} new "
                                 f"tokens fit)")
        return plan

    def budget_bytes(self) -> int:
        return self.memory_budget_bytes if self.memory_budget_bytes is not None else available_memory(self.device)

    # ----- generation

    def generate(self, tree_or_plan, params: SamplingParams | None = None, *, attention: str = "tree",
                 max_batch_sequences: int | None = None, progress: bool = True,
                 on_complete: Callable[[Any, int, Completion], None] | None = None) -> GenerationResult:
        """Sample every sequence of the tree. attention: "tree" (shared nodes read once per group), "flat"
        (each sequence reads its whole path: the no-sharing baseline) or "none" (attention skipped, its output
        replaced by the query: a benchmark's upper bound, whose tokens are meaningless).
        on_complete(key, sample_index, completion) is called as each sequence finishes."""
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, not {type(params).__name__}")
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {', '.join(map(repr, ATTENTION_MODES))}, not {attention!r}")
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer to decode text; this engine has none (use "
                             "stop_token_ids)")
        plan = self.plan(tree_or_plan, params)
        batches = schedule(plan, params.max_new_tokens, self.config, self.dtype, budget_bytes=self.budget_bytes(),
                           prefill_chunk_tokens=self.prefill_chunk_tokens, max_batch_sequences=max_batch_sequences)
        counts: dict = {}
        for key, s in plan.sequences:
            counts[key] = max(counts.get(key, 0), s + 1)
        results = {key: [None] * n for key, n in counts.items()}

        from tqdm.auto import tqdm

        bar = tqdm(total=plan.num_sequences, unit="seq", disable=not progress, desc=f"generate ({attention})")
        stats = _Stats()

        def done(c: Completion) -> None:
            results[c.key][c.sample_index] = c
            stats.generated_tokens += len(c.token_ids)
            bar.update(1)
            if on_complete is not None:
                on_complete(c.key, c.sample_index, c)

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with torch.inference_mode():
                for sub in batches:
                    run = _BatchRun(self, sub, params, share=attention == "tree", stats=stats, on_done=done,
                                    skip_attention=attention == "none")
                    run.prefill()
                    run.decode()
                    del run
        finally:
            bar.close()
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        total = stats.prefill_seconds + stats.decode_seconds + stats.capture_seconds
        summary = GenerationSummary(
            attention=attention, num_sequences=plan.num_sequences, sub_batches=len(batches),
            generated_tokens=stats.generated_tokens, prefill_tokens=stats.prefill_tokens,
            prefill_seconds=stats.prefill_seconds, decode_seconds=stats.decode_seconds,
            tokens_per_second=stats.generated_tokens / total if total > 0 else 0.0,
            decode_tokens_per_second=stats.decode_tokens / stats.decode_seconds if stats.decode_seconds > 0 else 0.0,
            prefill_calls=stats.prefill_calls, decode_steps=stats.decode_steps, decode_rows=stats.decode_rows,
            kv_bytes=stats.kv_bytes, peak_memory_bytes=int(peak), capture_seconds=stats.capture_seconds)
        return GenerationResult(results, summary)

    def cost(self, tree_or_plan, params: SamplingParams):
        """Predicted KV and workspace bytes of running the whole plan as one batch."""
        plan = self.plan(tree_or_plan, params)
        return batch_cost(plan, params.max_new_tokens, self.config, self.dtype, self.prefill_chunk_tokens)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class _BatchRun:
    """Prefill and decode of one sub-batch (a Plan), with its own KV pool."""

    def __init__(self, engine: Engine, plan, params: SamplingParams, *, share: bool, stats: _Stats, on_done,
                 skip_attention: bool = False):
        self.e, self.plan, self.params, self.share = engine, plan, params, share
        self.skip_attention = skip_attention
        self.stats, self.on_done = stats, on_done
        cfg = engine.config
        self.heads = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)
        self.layout = KVLayout.for_plan(plan, params.max_new_tokens)
        self.pool = KVPool(self.layout, cfg, engine.device, engine.dtype)
        stats.kv_bytes = max(stats.kv_bytes, self.pool.nbytes)
        n = plan.num_sequences
        self.paths = [list(plan.path(i)) for i in range(n)]
        self.prompt_len = [sum(g.num_tokens for g in p) for p in self.paths]
        self.seq_ids = torch.tensor([sequence_id(k, s) for k, s in plan.sequences], dtype=torch.int64,
                                    device=engine.device)
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.logprobs: list[list[float]] = [[] for _ in range(n)]
        self.finished = [False] * n
        self.stops = StopChecker(params.stop, engine.tokenizer.decode if engine.tokenizer else None)
        self.attn_plan = None  # kernels.TreeAttentionPlan of the current metadata (plain CUDA calls)
        # node key -> ancestor keys, outermost first (from the paths: a node's path prefix is its ancestry)
        self.ancestors: dict = {}
        self.node_pos: dict = {}
        for p in self.paths:
            pos = 0
            for j, g in enumerate(p):
                self.ancestors.setdefault(g.node, [x.node for x in p[:j]])
                self.node_pos.setdefault(g.node, pos)
                pos += g.num_tokens

    # ----- attention callbacks

    def _attention(self, slots: torch.Tensor, meta) -> Callable:
        pool = self.pool
        if self.skip_attention:
            # The benchmark's "no attention" bound: no KV write, no read; the query stands in for the output
            # so the rest of the layer runs on the same shapes.
            return lambda layer, q, k, v: q

        def attention(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            pool.write(layer, slots, k, v)  # the new tokens' own keys must be in the pool before attending
            k_cache, v_cache = pool.k[layer], pool.v[layer]
            if q.device.type != "cuda" or in_graph_path() or torch.cuda.is_current_stream_capturing():
                # CPU, or a CUDA-graph capture and its warm-up: the op (a graph pays its host work once, and
                # allocates its buffers in the graph's pool)
                return tree_attention(q, k_cache, v_cache, meta)
            # Plain CUDA calls: one plan per metadata, run by every layer (saves the op's host work per layer).
            # It lives until the metadata changes (a new decode batch, the next prefill call).
            if self.attn_plan is None or self.attn_plan.meta is not meta:
                self.attn_plan = plan_tree_attention(q, k_cache, v_cache, meta)
            return self.attn_plan.run(q, k_cache, v_cache)

        return attention

    def _segments(self, keys_of_rows: list[list], depth: int) -> list[Segment]:
        """Shared segments for query-sequences whose ancestor lists are keys_of_rows (ancestor at depth a = [a]):
        at each depth a, a maximal run of consecutive query-sequences with the same node there reads it."""
        segs = []
        start, length = self.layout.node_start, self.layout.node_len
        for a in range(depth):
            lo = 0
            while lo < len(keys_of_rows):
                key = keys_of_rows[lo][a] if a < len(keys_of_rows[lo]) else None
                hi = lo + 1
                while hi < len(keys_of_rows) and a < len(keys_of_rows[hi]) and keys_of_rows[hi][a] == key:
                    hi += 1
                if key is not None and length.get(key, 0) > 0:
                    segs.append(Segment(start[key], length[key], lo, hi))
                lo = hi
        return segs

    # ----- prefill

    def prefill(self) -> None:
        e, plan = self.e, self.plan
        e._sync()
        t0 = time.perf_counter()
        # Each sequence's first token comes from the last token of the deepest node on its path that has tokens.
        self.first_rows: dict = {}
        for i, p in enumerate(self.paths):
            last = next(g.node for g in reversed(p) if g.num_tokens > 0)
            self.first_rows.setdefault(last, []).append(i)
        chunk = e.prefill_chunk_tokens
        for depth, level in enumerate(plan.levels):
            groups = sorted((g for g in level if g.stop > g.start and g.num_tokens > 0), key=lambda g: g.start)
            pieces, size = [], 0
            for g in groups:
                for lo in range(0, g.num_tokens, chunk):
                    hi = min(g.num_tokens, lo + chunk)
                    if size + hi - lo > chunk and pieces:
                        self._prefill_call(pieces, depth)
                        pieces, size = [], 0
                    pieces.append((g.node, lo, hi))
                    size += hi - lo
            if pieces:
                self._prefill_call(pieces, depth)
        e._sync()
        self.stats.prefill_seconds += time.perf_counter() - t0

    def _prefill_call(self, pieces: list[tuple], depth: int) -> None:
        """One model call over node pieces (key, lo, hi) of one depth: a piece is a query-sequence whose own
        segment is its node's first hi tokens, reading its ancestors' nodes as shared segments."""
        e, lay, dev = self.e, self.layout, self.e.device
        ids, pos, slots = [], [], []
        for key, lo, hi in pieces:
            ids.extend(self.plan.node_tokens[key][lo:hi])
            base_pos, base_slot = self.node_pos[key], lay.node_start[key]
            pos.extend(range(base_pos + lo, base_pos + hi))
            slots.extend(range(base_slot + lo, base_slot + hi))
        segments = self._segments([self.ancestors[key] for key, _, _ in pieces], depth)
        meta = build_tree_meta([hi - lo for _, lo, hi in pieces], [lay.node_start[k] for k, _, _ in pieces],
                               [hi for _, _, hi in pieces], segments, *self.heads, dev, share=self.share)
        slots_t = torch.tensor(slots, dtype=torch.int64, device=dev)
        try:
            hidden = e.model.forward(torch.tensor(ids, dtype=torch.int64, device=dev),
                                     torch.tensor(pos, dtype=torch.int64, device=dev), self._attention(slots_t, meta))
        finally:
            self.attn_plan = None  # frees its buffers: the next call has other metadata
        self.stats.prefill_calls += 1
        self.stats.prefill_tokens += len(ids)
        # Logits only at the last token of nodes that end some sequence's prompt.
        rows, row_keys, offset = [], [], 0
        for key, lo, hi in pieces:
            offset += hi - lo
            if hi == lay.node_len[key] and key in self.first_rows:
                rows.append(offset - 1)
                row_keys.append(key)
        if rows:
            logits = e.model.logits(hidden[torch.tensor(rows, device=dev)])  # [R, V] fp32
            self._sample_first(logits, row_keys)

    def _sample_first(self, logits: torch.Tensor, row_keys: list) -> None:
        """Draw token 0 of every sequence ending at these rows' nodes, in bounded chunks of expanded rows."""
        seqs, rep = [], []
        for r, key in enumerate(row_keys):
            seqs.extend(self.first_rows[key])
            rep.extend([r] * len(self.first_rows[key]))
        per = max(1, _FIRST_TOKEN_ROWS_BYTES // (16 * logits.shape[1]))
        for lo in range(0, len(seqs), per):
            idx = seqs[lo:lo + per]
            rows = torch.tensor(rep[lo:lo + per], device=logits.device)
            toks, lps = sample(logits[rows], self.params, self.seq_ids[torch.tensor(idx, device=logits.device)], 0)
            self._accept(idx, toks.tolist(), lps.tolist())

    # ----- decode

    def decode(self) -> None:
        e = self.e
        e._sync()
        t0 = time.perf_counter()
        capture0 = self.stats.capture_seconds
        members = [i for i in range(self.plan.num_sequences) if not self.finished[i]]
        step = 1  # tokens generated so far by every unfinished sequence (they advance in lockstep)
        active = members
        members = None
        while active:
            if members is None or len(active) <= (1 - e.compact_fraction) * len(members):
                members = active
                self._build_decode(members, step)
            logits = self._decode_step(step)
            toks, lps = sample(logits, self.params, self.batch_seq_ids, step)
            self.in_tokens.copy_(toks)  # next step's input, in place (a captured graph reads this buffer)
            self.stats.decode_steps += 1
            self.stats.decode_rows += len(members)
            self.stats.decode_tokens += len(active)
            self._accept(members, toks.tolist(), lps.tolist())
            step += 1
            active = [i for i in members if not self.finished[i]]
        e._sync()
        self.stats.decode_seconds += time.perf_counter() - t0 - (self.stats.capture_seconds - capture0)
        self.graph = None
        self.attn_plan = None

    def _build_decode(self, members: list[int], step: int) -> None:
        """Metadata and static buffers for this batch composition (members in plan order keeps groups
        contiguous). Called again after compaction; drops the previous CUDA graph."""
        lay, dev = self.layout, self.e.device
        segments = []
        for level in self.plan.levels:
            for g in level:
                if lay.node_len.get(g.node, 0) == 0:
                    continue
                lo, hi = bisect.bisect_left(members, g.start), bisect.bisect_left(members, g.stop)
                if hi > lo:
                    segments.append(Segment(lay.node_start[g.node], lay.node_len[g.node], lo, hi))
        b = len(members)
        self.meta = build_tree_meta([1] * b, [lay.suffix_start[i] for i in members], [step] * b, segments,
                                    *self.heads, dev, share=self.share, own_capacity=[lay.suffix_capacity] * b)

        def tensor(values):
            return torch.tensor(values, dtype=torch.int64, device=dev)

        self.in_tokens = tensor([self.tokens[i][-1] for i in members])
        self.base_pos = tensor([self.prompt_len[i] - 1 for i in members])  # + step = the fed token's position
        self.base_slot = tensor([lay.suffix_start[i] - 1 for i in members])
        self.pos_buf = torch.empty_like(self.base_pos)
        self.slot_buf = torch.empty_like(self.base_slot)
        self.batch_seq_ids = self.seq_ids[tensor(members)]
        self.graph = None
        self.attn_plan = None
        self.logits_buf = None

    def _forward_decode(self) -> torch.Tensor:
        """One decode step over the static buffers -> logits [B, V] fp32."""
        hidden = self.e.model.forward(self.in_tokens, self.pos_buf, self._attention(self.slot_buf, self.meta))
        return self.e.model.logits(hidden)

    def _decode_step(self, step: int) -> torch.Tensor:
        """Feed generated token step-1 of each member (own segment: `step` tokens, the fed one last)."""
        torch.add(self.base_pos, step, out=self.pos_buf)
        torch.add(self.base_slot, step, out=self.slot_buf)
        self.meta.own_len.fill_(step)
        if not (self.e.cuda_graphs and self.e.device.type == "cuda"):
            return self._forward_decode()
        if self.graph is None:
            # A one-off cost per batch composition, kept out of decode_seconds so that throughput measures the
            # steady state (the capture's own warm-up forward is not a decode step: replay computes the step).
            self.e._sync()
            t0 = time.perf_counter()
            self._capture()
            self.e._sync()
            self.stats.capture_seconds += time.perf_counter() - t0
        self.graph.replay()
        return self.logits_buf

    def _capture(self) -> None:
        """Capture this batch composition's step. The warm-up run (Triton compilation, allocator) writes the same
        KV the replay will write, so running it is harmless."""
        e = self.e
        stream = torch.cuda.Stream(e.device)
        stream.wait_stream(torch.cuda.current_stream(e.device))
        with torch.cuda.stream(stream), cuda_graph_path():  # the warm-up takes the capture's launch path
            self._forward_decode()
        torch.cuda.current_stream(e.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # A private memory pool per graph: a shared pool handle outlives the graphs that used it, and capturing
        # into a pool whose graphs were all freed trips an allocator assert (seen with torch 2.11).
        with torch.cuda.graph(graph):
            self.logits_buf = self._forward_decode()
        self.graph = graph

    # ----- finishing

    def _accept(self, seqs: list[int], toks: list[int], lps: list[float]) -> None:
        """Append each unfinished sequence's new token and finish it when a stop condition holds."""
        p, e = self.params, self.e
        for i, t, lp in zip(seqs, toks, lps):
            if self.finished[i]:
                continue
            ids = self.tokens[i]
            ids.append(t)
            self.logprobs[i].append(lp)
            if t in p.stop_token_ids:
                self._finish(i, "stop", keep_last=p.include_stop_str_in_output, cut=False)
            elif t in e.eos_ids:
                self._finish(i, "eos", keep_last=False, cut=False)
            elif p.stop and self.stops.hit(ids):
                self._finish(i, "stop", keep_last=True, cut=True)
            elif len(ids) >= p.max_new_tokens:
                self._finish(i, "length", keep_last=True, cut=False)

    def _finish(self, i: int, reason: str, *, keep_last: bool, cut: bool) -> None:
        self.finished[i] = True
        ids = self.tokens[i] if keep_last else self.tokens[i][:-1]
        lps = self.logprobs[i] if keep_last else self.logprobs[i][:-1]
        tok = self.e.tokenizer
        text = tok.decode(ids) if tok is not None else ""
        if cut:
            text = self.stops.cut(text, self.params.include_stop_str_in_output)
        key, sample_index = self.plan.sequences[i]
        self.on_done(Completion(text=text, token_ids=list(ids), finish_reason=reason,
                                logprobs=list(lps) if self.params.logprobs else None, key=key,
                                sample_index=sample_index))
