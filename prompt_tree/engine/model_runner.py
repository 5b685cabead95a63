"""The device side of one generate call: the paged KV pool, prefill calls, and decode steps replayed from CUDA
graphs captured once per padded batch size.

The decode step is one function of static buffers (`DecodeBatch`): feed each row's last token, write its K/V
at its suffix position (through its page table), attend (prompt_tree.kernels.tree_attention over the step's metadata),
sample (the seeded sampler), and decide on the device whether the row ended (EOS, a stop token id, the length
limit). Its outputs ([3, rows]: token, finish code, logprob bits) are copied to pinned host memory without a
sync; the host reads them a step later (see run.py). Rows the host has stopped (stop strings) are masked
through the `kill` buffer; rows that ended write their keys to the scratch page and read nothing.

A batch composition changes (rows finish, new sequences join) by copying new values into the same buffers and
the same metadata tensors (`TreeAttentionMeta.update_`), so a bucket's graph is captured once and replayed for
every composition its capacity holds.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import torch

from prompt_tree.kernels import (cuda_graph_path, in_graph_path, own_slots, plan_tree_attention, query_slots,
                                 tree_attention, triton_compiles)

from .blocks import SCRATCH_PAGE

# Finish codes the step writes per row (the host maps them to finish reasons; a stop string, matched on the
# host, ranks between EOS and the length limit, as it always has).
RUNNING, EOS, STOP_ID, LENGTH, IDLE = 0, 1, 2, 3, 4


def finish_codes(tokens: torch.Tensor, generated: torch.Tensor, eos: torch.Tensor, stop_ids: torch.Tensor,
                 limit: torch.Tensor) -> torch.Tensor:
    """tokens: [B] the new tokens; generated: [B] tokens generated counting them; eos, stop_ids: [E], [S];
    limit: [B] the most tokens each row may generate -> [B] int32 code. Priority: a stop token id, then EOS, then
    the length limit (device-side, graph-safe: no sync, an empty id list matches nothing)."""
    is_eos = (tokens[:, None] == eos[None, :]).any(-1)
    is_stop = (tokens[:, None] == stop_ids[None, :]).any(-1)
    code = torch.where(generated >= limit, LENGTH, RUNNING)
    code = torch.where(is_eos, EOS, code)
    return torch.where(is_stop, STOP_ID, code).to(torch.int32)


@dataclass
class FirstTokens:
    """First tokens in flight (`ModelRunner.start_first_tokens`)."""

    host: torch.Tensor  # [3, N] int32, pinned on CUDA: tokens, finish codes, logprobs' float32 bits
    event: object  # torch.cuda.Event recorded after the copy down (None on CPU: the values are there)
    staged: torch.Tensor  # [2, N] int64 pinned ids and limits, kept until the copy up has run

    def result(self) -> tuple[list[int], list[float], list[int]]:
        """-> (tokens, logprobs, finish codes), waiting for the device if need be."""
        if self.event is not None:
            self.event.synchronize()
        out = self.host.numpy()
        return out[0].tolist(), out[2].view("float32").tolist(), out[1].tolist()


class DecodeBatch:
    """Static device buffers of one padded decode batch (one graph bucket), and its host staging.

    Device: tokens / gen / prompt_len / seq_ids / limit [B] int64, live / kill [B] bool, out [3, B] int32, meta (the
    step's TreeAttentionMeta; its own_page_table [B, capacity_pages] int32 is the rows' page table).
    Host: double-buffered staging of the page table and the kill mask, and of `out` (pinned on CUDA).
    """

    def __init__(self, rows: int, capacity_pages: int, device: torch.device):
        self.rows, self.capacity_pages, self.device = rows, capacity_pages, device
        i64 = dict(dtype=torch.int64, device=device)
        self.tokens = torch.zeros(rows, **i64)
        self.gen = torch.zeros(rows, **i64)
        self.prompt_len = torch.zeros(rows, **i64)
        self.seq_ids = torch.zeros(rows, **i64)
        self.limit = torch.ones(rows, **i64)
        self.live = torch.zeros(rows, dtype=torch.bool, device=device)
        self.kill = torch.zeros(rows, dtype=torch.bool, device=device)
        self.out = torch.zeros((3, rows), dtype=torch.int32, device=device)
        pin = device.type == "cuda"
        self.host_table = [torch.zeros((rows, capacity_pages), dtype=torch.int32, pin_memory=pin) for _ in range(2)]
        self.host_kill = [torch.zeros(rows, dtype=torch.bool, pin_memory=pin) for _ in range(2)]
        self.host_out = [torch.zeros((3, rows), dtype=torch.int32, pin_memory=pin) for _ in range(2)]
        self.events = [torch.cuda.Event() if pin else None for _ in range(2)]
        self.meta = None
        self.capacity = None
        self.graph = None
        self.flip = 0


@dataclass
class StepTimes:
    """CUDA events around each replay, to measure the device idle gaps between steps (host stalls)."""

    start: object
    end: object
    rows: int  # live rows of the step
    host: dict | None = None  # the host's work since the previous launch, by part (engine.host_profile)
    # (start, end) events of device work enqueued since the previous step behind work still in flight (first
    # tokens): it runs in the gap before this step, so the gap less its time is what the device idled
    between: tuple = ()


class ModelRunner:
    """The KV pool [2, L, S, Hkv, D] (S = num_pages * page_size) and every model call of one generate."""

    def __init__(self, model, config, num_pages: int, page_size: int, attention: str, sampler, eos_ids,
                 stop_token_ids, cuda_graphs: bool):
        param = next(model.parameters())
        self.model, self.config = model, config
        self.device, self.dtype = param.device, param.dtype
        self.page_size = page_size
        self.share = attention == "tree"
        self.skip_attention = attention == "none"
        shape = (2, config.num_layers, num_pages * page_size, config.num_kv_heads, config.head_dim)
        self.kv = torch.empty(shape, device=self.device, dtype=self.dtype)
        self.nbytes = self.kv.numel() * self.kv.element_size()  # kept after release() drops the pool
        self.sampler = sampler
        i64 = dict(dtype=torch.int64, device=self.device)
        self.eos = torch.tensor(sorted(set(eos_ids)), **i64)
        self.stop_ids = torch.tensor(sorted(set(stop_token_ids)), **i64)
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        # split decisions of metadata built on the host for this device
        self.num_sms = (torch.cuda.get_device_properties(self.device).multi_processor_count
                        if self.device.type == "cuda" else 132)
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.batches: dict[int, DecodeBatch] = {}
        self.captures = 0
        self.capture_seconds = 0.0
        # (padded rows, eager-step s, capture s, Triton kernels compiled during the eager step) per capture
        self.capture_log: list[tuple[int, float, float, list[str]]] = []
        self._plan = None  # prompt_tree.kernels.TreeAttentionPlan of the current plain-call metadata
        self.times: list[StepTimes] = []
        self.last_times: StepTimes | None = None  # the timed replay of the latest enqueue, if it was one
        self._between: list = []  # StepTimes.between of the next step
        self.record_times = self.device.type == "cuda"

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ----- attention

    def _attention(self, slots: torch.Tensor, meta):
        if self.skip_attention:
            # The benchmark's "no attention" bound: no KV write, no read; the query stands in for the output.
            return lambda layer, q, k, v: q
        kv = self.kv

        def attention(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k_cache, v_cache = kv[0, layer], kv[1, layer]
            k_cache.index_copy_(0, slots, k)  # the new tokens' own keys are in the pool before attending
            v_cache.index_copy_(0, slots, v)
            if q.device.type != "cuda" or in_graph_path() or torch.cuda.is_current_stream_capturing():
                return tree_attention(q, k_cache, v_cache, meta)
            # Plain CUDA calls: one plan per metadata, run by every layer (the op's host work once per call).
            if self._plan is None or self._plan.meta is not meta:
                self._plan = plan_tree_attention(q, k_cache, v_cache, meta)
            return self._plan.run(q, k_cache, v_cache)

        return attention

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, hidden] -> [N, V] in the model dtype where the model offers it (the sampler upcasts per row)."""
        raw = getattr(self.model, "logits_raw", None)
        return raw(hidden) if raw is not None else self.model.logits(hidden)

    # ----- prefill

    def prefill(self, ids: list[int], positions: list[int], meta, logit_rows: list[int]) -> torch.Tensor:
        """One prefill call (each row's key goes to its own position's slot) -> the final hidden states
        [len(logit_rows), hidden] at those rows."""
        dev = self.device

        def t(x):
            return torch.tensor(x, dtype=torch.int64, device=dev)

        slots = query_slots(meta, empty_slot=SCRATCH_PAGE * self.page_size)
        try:
            hidden = self.model.forward(t(ids), t(positions), self._attention(slots, meta))
        finally:
            self._plan = None  # its buffers go: the next call has other metadata
        return hidden[t(logit_rows)] if logit_rows else hidden[:0]

    def start_first_tokens(self, hidden: torch.Tensor, seq_ids: list[int], limits: list[int]) -> FirstTokens:
        """Token 0 of sequences from their first node's last hidden state [N, hidden], enqueued behind the step in
        flight without waiting for it: the ids and limits go up from pinned memory, the [3, N] outputs (token,
        finish code, logprob bits, as a decode step's) come down into pinned memory, and an event marks them
        there. A synchronous call here held the host until the step in flight ended, so the next step launched
        late by the rest of the host's work (the GSM8K job: 56% of its steps, 12.4 s of device idle time)."""
        pin = self.device.type == "cuda"
        meta = torch.tensor([seq_ids, limits], dtype=torch.int64)  # [2, N]
        if pin:
            meta = meta.pin_memory()
        # Timed only when queued behind work in flight: its kernels then run back to back and the window is device
        # work. Launched onto an idle stream (the host late) they run as the host launches them, and the window
        # is mostly the device waiting for the host, which the gap should count as idle. A measurement only: no
        # decision reads it, so tensor-parallel ranks may differ here.
        start = None
        if self.record_times and not torch.cuda.current_stream(self.device).query():
            start = torch.cuda.Event(enable_timing=True)
            start.record()
        ids, lim = meta.to(self.device, non_blocking=True)
        tok, lp = self.sampler(self.logits(hidden), ids, torch.zeros_like(ids))
        code = finish_codes(tok, torch.ones_like(tok), self.eos, self.stop_ids, lim)
        out = torch.stack([tok.to(torch.int32), code, lp.float().view(torch.int32)])
        host = torch.empty(out.shape, dtype=torch.int32, pin_memory=pin)
        host.copy_(out, non_blocking=True)
        event = None
        if pin:  # marks the outputs there; when timed, also the window's end
            event = torch.cuda.Event(enable_timing=start is not None)
            event.record()
        if start is not None:
            self._between.append((start, event))
        return FirstTokens(host, event, meta)

    # ----- decode

    def batch(self, rows: int, capacity_pages: int) -> DecodeBatch:
        """The buffers of a padded batch size (made at first use, kept for the call)."""
        b = self.batches.get(rows)
        if b is None or b.capacity_pages != capacity_pages:
            b = self.batches[rows] = DecodeBatch(rows, capacity_pages, self.device)
        return b

    def _step(self, b: DecodeBatch) -> None:
        """One decode step over b's buffers. No host sync, no data-dependent branch: captured as is."""
        live = b.live & ~b.kill
        b.meta.own_len.copy_(torch.where(live, b.gen, 0))  # the fed token is own position gen - 1
        slots = own_slots(b.meta, empty_slot=SCRATCH_PAGE * self.page_size)
        positions = (b.prompt_len + b.gen - 1).clamp(min=0)
        hidden = self.model.forward(b.tokens, positions, self._attention(slots, b.meta))
        tok, lp = self.sampler(self.logits(hidden), b.seq_ids, b.gen)
        code = torch.where(live, finish_codes(tok, b.gen + 1, self.eos, self.stop_ids, b.limit), IDLE)
        b.out[0].copy_(tok)
        b.out[1].copy_(code)
        b.out[2].copy_(lp.float().view(torch.int32))
        b.gen.add_(live.long())
        b.tokens.copy_(tok)
        b.live.copy_(live & (code == RUNNING))

    def capture(self, b: DecodeBatch) -> None:
        """Run b's step eagerly (this step's real work: Triton compilation and the allocator warm up on it), then
        capture the step into b.graph for the following ones. A capture launches nothing, so the buffers hold the
        eager step's results and the next replay continues from them. Before, a warm-up step was run and undone:
        one step of device work thrown away per capture (0.05-0.17 s on an 8B model at 1-5k rows, H200)."""
        self.sync()
        t0 = time.perf_counter()
        compiled: list[str] = []
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), cuda_graph_path(), triton_compiles(compiled):
            self._step(b)  # on the launch path the capture takes
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.sync()
        t_warm = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        # A graph destroyed while another is being captured invalidates that capture ("operation not permitted
        # when stream is capturing"). An earlier run's graphs can sit in unreachable reference cycles until the
        # collector runs, and torch.cuda.graph no longer collects first: collect before this run's first capture,
        # and never during one. Only the first: this run's own replaced graphs are freed by reference count at
        # once, and a full collection over a heap of finished samples grew to ~0.3 s per capture in the H200 job
        # (job.json run 3's capture_log), a quarter of a second of the user's wall time per bucket.
        if self.captures == 0:
            gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                self._step(b)
        finally:
            if enabled:
                gc.enable()
        b.graph = graph
        self.sync()
        self.captures += 1
        t1 = time.perf_counter()
        self.capture_seconds += t1 - t0
        self.capture_log.append((b.rows, t_warm - t0, t1 - t_warm, compiled))

    def release(self) -> None:
        """Drop this call's graphs, decode buffers and KV pool now, whatever still refers to the run (a traceback
        holding its frames; before the scheduler's reference to its run was made weak, the run's own cycle, which
        only a full collection freed). The pool once waited there, and the next
        generate call planned its budget without it: a warm-up run of codellama-7b at 512 new tokens held 64 GiB,
        so the job after it got 47 GiB of KV instead of about 100 (H200). nbytes and the step times stay."""
        self.sync()
        for b in self.batches.values():
            b.graph = None
        self.batches.clear()
        self._plan = None
        self.kv = None

    def enqueue(self, b: DecodeBatch, table, kill, table_dirty: bool, live_rows: int = 0) -> int:
        """Start one step of b: stage the host's page table and kill mask (numpy [B, P] int32 / [B] bool), run
        the step (graph replay or eager), start copying its outputs to the host. Returns the staging index to
        pass to `outputs`."""
        i = b.flip
        b.flip ^= 1
        self.last_times = None
        between, self._between = tuple(self._between), []  # a step that is not timed (a capture) drops them
        if b.events[i] is not None:
            b.events[i].synchronize()  # staging i was last read by the step before the previous one
        if table_dirty:
            b.host_table[i].numpy()[:] = table
            b.meta.own_page_table.copy_(b.host_table[i], non_blocking=True)
        b.host_kill[i].numpy()[:] = kill
        b.kill.copy_(b.host_kill[i], non_blocking=True)
        if self.use_graphs and b.graph is None:
            self.capture(b)  # runs this step eagerly, then captures it for the next ones
            self.mark_break()
        elif self.use_graphs:
            times = StepTimes(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True),
                              live_rows, between=between) if self.record_times else None
            if times:
                times.start.record()
            b.graph.replay()
            if times:
                times.end.record()
                self.times.append(times)
                self.last_times = times
        else:
            self._step(b)
        b.host_out[i].copy_(b.out, non_blocking=True)
        if b.events[i] is not None:
            b.events[i].record()
        return i

    def outputs(self, b: DecodeBatch, i: int):
        """Wait for step i's outputs -> (tokens, codes, logprobs) numpy views of the pinned buffer."""
        if b.events[i] is not None:
            b.events[i].synchronize()
        out = b.host_out[i].numpy()
        return out[0], out[1], out[2].view("float32")

    def step_log(self) -> list[tuple[int, float]]:
        """(live rows, device ms) of every replayed step (CUDA graphs only; a capture's eager step is not one)."""
        self.sync()
        return [(t.rows, t.start.elapsed_time(t.end)) for t in self.times if t is not None]

    def mark_break(self) -> None:
        """The next step follows a rebuild, prefill or capture: its gap is work, not a host stall."""
        if self.times and self.times[-1] is not None:
            self.times.append(None)

    def idle_gaps(self) -> tuple[float, int]:
        """Device idle time between back-to-back decode steps (host work the overlap did not hide), and the
        number of such gaps. CUDA only; (0, 0) elsewhere."""
        gaps = self.gap_records()
        return sum(g for g, _, _ in gaps), len(gaps)

    def gap_records(self) -> list[tuple[float, dict | None, float]]:
        """(device idle seconds before the step, its launch's host parts, device seconds of the work enqueued
        between the two steps) per back-to-back decode step. The idle is the gap less that work."""
        self.sync()
        out = []
        for a, c in zip(self.times, self.times[1:]):
            if a is not None and c is not None:
                work = sum(s.elapsed_time(e) for s, e in c.between) / 1e3
                out.append((max(0.0, a.end.elapsed_time(c.start) / 1e3 - work), c.host, work))
        return out
