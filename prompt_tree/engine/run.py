"""One generate call: the loop schedule -> run -> postprocess, with the host's postprocess of step t overlapped
with the device's step t+1.

    admit subtrees (scheduler) -> prefill their new nodes, one chunk between two decode steps -> first tokens
    -> rebuild the decode batch when sequences are ready to join or enough rows have finished
    -> enqueue step t+1, then read step t's tokens: stop strings, finishes, on_complete, free pages

The device decides EOS, stop token ids and the length limit inside the step; stop strings are matched on the
host against each sequence's incrementally extended text. A sequence found stopped at step t has already run
step t+1 on the device: that extra token is discarded and the row masked from step t+2 on. Its pages are freed
at once, which is safe: every later use of a freed page is issued after that step on the same stream.
Rebuilds and preemptions drain the pipeline first, so the host's view of every row is exact when the batch
changes. Every decision depends only on the plan, the tokens and the page counts -- never on timing -- so the
ranks of a tensor-parallel group, which see the same tokens, make the same model calls.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from ..sampling import sequence_id
from .blocks import KVBlocks, OutOfPages, pages_for
from .host_profile import HostClock, gap_profile
from .memory import SchedulingError, plan_memory, prefill_rows
from .results import Completion, GenerationSummary
from .model_runner import EOS, IDLE, LENGTH, RUNNING, STOP_ID, ModelRunner
from .scheduler import Scheduler
from prompt_tree.kernels import CapacityOverflow, required_capacity, triton_compiles

from .segments import Heads, PrefillPiece, decode_meta, prefill_meta
from .sequence import Sequence, SeqState, Unit, make_units

# Rows of vocabulary-sized fp32 work per first-token sampling call (a node shared by thousands of sequences
# would otherwise expand to thousands of logit rows at once).
_FIRST_TOKEN_ROWS_BYTES = 1 << 28
# Extra no-op tiles a bucket's metadata keeps beyond the composition it was built for, so later compositions
# (other groupings, more splits) replay the same graph.
_CAPACITY_HEADROOM = 1.5


@dataclass
class _Stats:
    prefill_seconds: float = 0.0
    prefill_tokens: int = 0
    prefill_calls: int = 0
    decode_steps: int = 0
    decode_rows: int = 0
    padded_rows: int = 0
    decode_tokens: int = 0
    generated_tokens: int = 0
    admissions: int = 0
    preemptions: int = 0
    rebuilds: int = 0
    rebuild_seconds: float = 0.0
    occupancy_time: float = 0.0
    occupancy_weight: float = 0.0
    # Triton kernels compiled inside prefill calls and first-token sampling (a specialization no warm-up reached)
    prefill_compiles: list = dataclasses.field(default_factory=list)


class GenerationRun:
    """State of one generate call over a Plan (see the module docstring)."""

    def __init__(self, engine, plan, params, attention: str, max_rows: int | None, on_done, sampler, stops,
                 limits=None):
        opts = engine.options
        self.engine, self.plan, self.params, self.opts = engine, plan, params, opts
        self.attention = attention
        self.on_done = on_done
        self.stops = stops  # prompt_tree.stops matcher factory, or None without stop strings
        self.tokenizer = engine.tokenizer
        cfg = engine.config
        self.heads = Heads(cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)
        self.page_size = ps = opts.page_size
        self.max_fed = max(1, params.max_new_tokens - 1)  # the last sampled token is never fed back
        self.capacity_pages = pages_for(self.max_fed, ps)

        # ---- sequences, their paths (nodes with tokens, outermost first), node ancestry
        self.node_path: dict = {}  # node -> nodes with tokens from the root down to it (itself included)
        self.node_pos: dict = {}  # node -> position of its first token
        for level in plan.levels:
            for g in level:
                up = plan.parent[g.node]
                above = self.node_path.get(up, ()) if up is not None else ()
                self.node_pos[g.node] = sum(len(plan.node_tokens[k]) for k in above)
                self.node_path[g.node] = above + ((g.node,) if g.num_tokens > 0 else ())
        self.seqs: list[Sequence] = []
        for i, (key, s) in enumerate(plan.sequences):
            path = self.node_path[plan.sequence_node(i)]  # the plan node (a tail node may hold its samples)
            limit = params.max_new_tokens if limits is None else limits(key, s)
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= params.max_new_tokens:
                raise ValueError(f"the length budget of sample {s} of {key!r} must be an int in [1, "
                                 f"max_new_tokens={params.max_new_tokens}], got {limit!r}")
            self.seqs.append(Sequence(index=i, key=key, sample=s, seq_id=sequence_id(key, s),
                                      prompt_len=plan.prompt_len(i), path=path, first_node=path[-1], limit=limit))
        self.first_nodes = {s.first_node for s in self.seqs}

        # ---- memory: decode rows and KV pages
        rows_wanted = min(max_rows if max_rows is not None else opts.max_rows(), opts.max_rows(),
                          plan.num_sequences)  # never past the largest graph bucket
        worst = max(sum(pages_for(len(plan.node_tokens[k]), ps) for k in s.path) for s in self.seqs)
        # never more pages than the whole plan at its longest: every node once, every suffix at max_new_tokens
        most = 1 + sum(pages_for(len(t), ps) for t in plan.node_tokens.values()) \
            + plan.num_sequences * self.capacity_pages
        self.memory = plan_memory(engine.budget_bytes(), rows_wanted, len(plan.levels), cfg, engine.dtype, ps,
                                  prefill_rows(plan, opts.prefill_chunk_tokens),
                                  min_pages=1 + worst + self.capacity_pages,
                                  max_pages=most)
        self.max_rows = self.memory.max_rows
        self.blocks = KVBlocks(self.memory.num_pages, ps)
        unit_cap = max(1, min(self.max_rows, self.blocks.pool.usable_pages // (2 * self.capacity_pages)))
        self.scheduler = Scheduler(self, [Unit(u, a, b) for u, (a, b) in enumerate(make_units(plan, unit_cap))])
        self.runner = ModelRunner(engine.model, cfg, self.memory.num_pages, ps, attention, sampler,
                                  engine.eos_ids, params.stop_token_ids, opts.cuda_graphs)
        if self.runner.use_graphs and not self.scheduler.static:
            self.scheduler.padded = opts.bucket
        self.stats = _Stats()

        # ---- prefill work and the decode batch
        self.prefill_queue: list = []  # nodes placed but not yet prefilled, in (depth, plan) order
        self.prefill_done: dict = {}  # node -> tokens prefilled so far
        self.first_hidden: dict = {}  # node -> hidden state of its last token [hidden]
        self.batch = None  # runner.DecodeBatch
        self.rows: list[Sequence] = []
        self.table = None  # numpy [B, capacity_pages] int32: the rows' page table as the host sees it
        self.kill = None  # numpy [B] bool: rows the host stopped (stop strings)
        # Per row, as numpy arrays so that a step's host work is a few vector operations, not a Python loop over
        # the batch: the generated count at the next enqueued step, the positions its suffix pages cover, its
        # length limit, and whether the host still runs it (a row leaves when its sequence finishes; rebuilds
        # reset all four).
        self.next_gen = np.zeros(0, dtype=np.int64)
        self.covered = np.zeros(0, dtype=np.int64)
        self.limits = np.zeros(0, dtype=np.int64)
        self.live = np.zeros(0, dtype=bool)
        self.row_of: dict[int, int] = {}  # sequence index -> its row, while it is in the batch
        self.table_dirty = False
        self.dead_rows = 0
        self.pending = None  # (batch, staging index) of the enqueued step not yet read
        self.ready: list[Sequence] = []  # have their first token, join the batch at the next rebuild
        # (steps enqueued before, sequences, runner.FirstTokens): first tokens started, not yet accepted
        self.first_pending: deque = deque()
        self.steps_read = 0  # decode steps whose outputs the host has read
        self.unfinished = plan.num_sequences
        self._last_t = None
        self.clock = HostClock()

    # ================================================================================================ the loop

    def run(self) -> None:
        try:
            with torch.inference_mode():
                self._loop()
        finally:
            self.runner.release()
        # every page back: nodes are dropped with their last reader, suffixes with their sequence
        self.blocks.check()
        if self.blocks.free_pages != self.blocks.pool.usable_pages:
            raise AssertionError(f"{self.blocks.pool.usable_pages - self.blocks.free_pages} KV pages still held "
                                 f"after the run (nodes {sorted(map(str, self.blocks.node_pages))[:5]})")

    def _loop(self) -> None:
        sched, clock = self.scheduler, self.clock
        while self.unfinished:
            clock.switch("admit")
            progressed = sched.admit()
            if progressed:
                self._first_tokens()  # samples whose nodes are all resident already need no prefill
            clock.switch("other")
            if self.prefill_queue and self._prefill_due():
                self._prefill_once()
                progressed = True
            if self.first_pending and (self.batch is None or not self._live_rows()):
                self._take_first_tokens(wait=True)  # no step to overlap them with, and they make the next batch
            if self._want_rebuild():
                self._drain()
                self._rebuild()
                progressed = True
            step = None
            if self.batch is not None and self._live_rows():
                clock.switch("pages")
                try:
                    self._ensure_pages()
                except OutOfPages:
                    clock.switch("other")
                    self._drain()
                    sched.preempt()
                    self._rebuild()
                    continue
                step = self._enqueue()
                progressed = True
            if self.pending is not None:
                self._process(*self.pending)
            self.pending = step
            if not self.opts.overlap and self.pending is not None:
                self._process(*self.pending)
                self.pending = None
            if not progressed and self.pending is None:
                raise SchedulingError(
                    f"the engine cannot make progress: {self.unfinished} sequences unfinished, none admissible "
                    f"with {self.blocks.free_pages} free KV pages (a bug: please report it with the tree's shape)")
        self._drain()

    def _live_rows(self) -> int:
        return len(self.rows) - self.dead_rows

    def _drain(self) -> None:
        if self.pending is not None:
            self._process(*self.pending)
            self.pending = None
        self._take_first_tokens(wait=True)

    # ================================================================================================ prefill

    def queue_prefill(self, keys) -> None:
        """Nodes just placed: prefill them (ancestors before descendants, plan order within a depth)."""
        self.prefill_queue.extend(k for k in keys if k not in self.prefill_queue)
        self.prefill_queue.sort(key=lambda k: (len(self.node_path[k]), self.plan.group(k).start))

    def _prefill_once(self) -> None:
        """One prefill call of at most prefill_chunk_tokens query rows; then the first tokens of every admitted
        sequence whose nodes are all prefilled."""
        chunk, blocks = self.opts.prefill_chunk_tokens, self.blocks
        pieces, size = [], 0
        for key in self.prefill_queue:
            if any(a not in blocks.prefilled for a in self.node_path[key][:-1]):
                continue  # its ancestors come first (a later call)
            n = len(self.plan.node_tokens[key])
            lo = self.prefill_done.get(key, 0)
            take = min(n - lo, chunk - size)
            if take <= 0:
                break
            pieces.append(PrefillPiece(key, lo, lo + take, tuple(blocks.node_pages[key]), self.node_path[key][:-1],
                                       self.node_pos[key]))
            size += take
            if size >= chunk:
                break
        if not pieces:  # pragma: no cover - the queue is ordered so the first node is always ready
            raise AssertionError("prefill queue holds no node whose ancestors are prefilled")
        self.runner.sync()
        t0 = time.perf_counter()
        ids, positions, logit_rows, logit_keys = [], [], [], []
        for p in pieces:
            toks = self.plan.node_tokens[p.key]
            ids.extend(toks[p.lo:p.hi])
            positions.extend(range(p.base_pos + p.lo, p.base_pos + p.hi))
            if p.hi == len(toks) and p.key in self.first_nodes:
                logit_rows.append(len(ids) - 1)
                logit_keys.append(p.key)
        meta = prefill_meta(pieces, blocks.node_runs, self.heads, self.page_size, self.runner.device,
                            share=self.attention == "tree")
        with triton_compiles(self.stats.prefill_compiles):
            hidden = self.runner.prefill(ids, positions, meta, logit_rows)
        for key, h in zip(logit_keys, hidden):
            self.first_hidden[key] = h
        for p in pieces:
            self.prefill_done[p.key] = p.hi
            if p.hi == len(self.plan.node_tokens[p.key]):
                blocks.prefilled.add(p.key)
                self.prefill_queue.remove(p.key)
                self.prefill_done.pop(p.key)
        self.stats.prefill_calls += 1
        self.stats.prefill_tokens += len(ids)
        self._first_tokens()
        self.runner.sync()
        self._take_first_tokens(wait=True)
        self.stats.prefill_seconds += time.perf_counter() - t0
        self.runner.mark_break()

    def _first_tokens(self) -> None:
        """Start token 0 of every PREFILLING sequence whose path is prefilled, from its first node's last hidden
        (they are READY from here on; `_take_first_tokens` appends their tokens when the device has them)."""
        ready = [s for s in self.scheduler.prefilling()
                 if all(k in self.blocks.prefilled for k in s.path)]
        if not ready:
            return
        per = max(1, _FIRST_TOKEN_ROWS_BYTES // (16 * self.engine.config.vocab_size))
        for lo in range(0, len(ready), per):
            part = ready[lo:lo + per]
            hidden = torch.stack([self.first_hidden[s.first_node] for s in part])
            with triton_compiles(self.stats.prefill_compiles):
                started = self.runner.start_first_tokens(hidden, [s.seq_id for s in part], [s.limit for s in part])
            for s in part:
                s.state = SeqState.READY
            self.first_pending.append((self.stats.decode_steps, part, started))  # ahead of that step

    def _take_first_tokens(self, wait: bool) -> None:
        """Accept the first tokens started before the last step read (the stream ran them before that step, so
        they are there), or all of them if `wait`. Which ones is decided by step counts, never by polling the
        device, so the ranks of a tensor-parallel group take the same ones. A sequence joins `ready` (the next
        rebuild's rows) only here; a rebuild, a preemption and the end of the loop come after a waiting call
        (`_drain`), so a preempted sequence never has a first token in flight."""
        while self.first_pending and (wait or self.first_pending[0][0] < self.steps_read):
            _, part, started = self.first_pending.popleft()
            left = self.clock.switch("wait")
            toks, lps, codes = started.result()
            self.clock.switch(left)
            for s, t, lp, c in zip(part, toks, lps, codes):
                self._accept(s, t, lp, c, row=None)
                if s.state is SeqState.READY:
                    self.ready.append(s)

    # ================================================================================================ decode batch

    def _batch_fraction(self) -> float:
        """Rows of the running batch that must have finished (or be waiting to join) before it is rebuilt."""
        return max(1, self.opts.compact_fraction * len(self.rows))

    def _prefill_due(self) -> bool:
        """Whether to prefill queued nodes now. While a batch decodes, newly admitted units wait for its next
        compaction (or a full prefill chunk, or the last admissions of the run): one prefill call and one rebuild
        then serve every unit admitted since the last, where each admission used to cost its own call, a
        drained pipeline and a rebuild (job.json run 5: 2.0 s of prefill calls against static's 0.7 s)."""
        if self.batch is None or not self._live_rows() or not self.scheduler.waiting:
            return True
        if self.dead_rows >= self._batch_fraction():
            return True
        queued = sum(len(self.plan.node_tokens[k]) - self.prefill_done.get(k, 0) for k in self.prefill_queue)
        return queued >= self.opts.prefill_chunk_tokens

    def _want_rebuild(self) -> bool:
        ready = len(self.ready)
        if self.batch is None or not self._live_rows():
            # nothing decoding: finish the queued prefill first (it is cheap next to decoding a partial batch)
            return (ready > 0 and not self.prefill_queue) or ready >= self.max_rows \
                or (self.batch is not None and not self._live_rows())
        due = self._batch_fraction()
        if ready and not self.prefill_queue and (ready >= due or not self.scheduler.waiting):
            return True
        return self.dead_rows >= due

    def _rebuild(self) -> None:
        """The decode batch from scratch: running and ready sequences in plan order, padded to a bucket."""
        t0 = time.perf_counter()
        try:
            self._build_batch()
        finally:
            self.stats.rebuilds += 1
            self.stats.rebuild_seconds += time.perf_counter() - t0

    def _build_batch(self) -> None:
        while True:
            rows = [s for s in self.rows if s.state is SeqState.RUNNING] + self.ready
            try:  # pages for each row's first fed position (the metadata copies the page lists)
                for s in rows:
                    self.blocks.ensure_suffix(s, s.generated)
                break
            except OutOfPages:
                self.scheduler.preempt()
        rows.sort(key=lambda s: s.index)
        self.ready = []
        self.runner.mark_break()
        self.rows, self.dead_rows = rows, 0
        if not rows:
            self.batch = None
            return
        for s in rows:
            s.state = SeqState.RUNNING
        n = len(rows)
        bucket = self.opts.bucket(n) if self.runner.use_graphs else n
        b = self.runner.batch(bucket, self.capacity_pages)
        # Column arrays in one pass each, and the page table scattered from one flat array: at the GSM8K job's
        # ~4,000 rows, per-row numpy writes were most of a rebuild's host time, which the device waits for.
        gens = [s.generated for s in rows]
        n_pages = np.fromiter((len(s.pages) for s in rows), np.int64, n)
        self.next_gen = np.array(gens, dtype=np.int64)
        self.covered = n_pages * self.page_size
        self.limits = np.fromiter((s.limit for s in rows), np.int64, n)
        self.live = np.ones(n, dtype=bool)
        self.row_of = {s.index: r for r, s in enumerate(rows)}
        self.table = np.zeros((bucket, self.capacity_pages), dtype=np.int32)  # unused columns: the scratch page
        held = np.arange(self.capacity_pages) < n_pages[:, None]  # [n, capacity_pages]: row-major, as flat is
        self.table[:n][held] = np.fromiter(itertools.chain.from_iterable(s.pages for s in rows), np.int32,
                                           int(n_pages.sum()))
        # Built once on the host and copied into the bucket's metadata in one transfer. A composition that
        # outgrows the bucket's capacity (even with unsplit shared segments) gets a larger one, and the bucket a
        # new capture.
        meta_args = ([s.path for s in rows], self.table, gens, self.capacity_pages, bucket, self.blocks.node_runs,
                     self.heads, self.page_size, torch.device("cpu"), self.attention == "tree", self.runner.num_sms)
        meta = None
        if b.capacity is not None:
            try:
                meta = decode_meta(*meta_args, capacity=b.capacity)
            except CapacityOverflow:
                b.capacity = self._grown(b.capacity.union(required_capacity(decode_meta(*meta_args))))
        else:
            b.capacity = self._grown(required_capacity(decode_meta(*meta_args)))
        if meta is not None and b.meta is not None:
            b.meta.update_(meta)
        else:
            dev_args = meta_args[:8] + (self.runner.device,) + meta_args[9:]
            b.meta, b.graph = decode_meta(*dev_args, capacity=b.capacity), None

        def fill(buf, values: np.ndarray):
            host = np.zeros(bucket, dtype=values.dtype)
            host[:n] = values
            buf.copy_(torch.from_numpy(host))

        fill(b.tokens, np.fromiter((s.tokens[-1] for s in rows), np.int64, n))
        fill(b.gen, self.next_gen)
        fill(b.prompt_len, np.fromiter((s.prompt_len for s in rows), np.int64, n))
        fill(b.seq_ids, np.fromiter((s.seq_id for s in rows), np.int64, n))
        fill(b.limit, self.limits)
        fill(b.live, self.live)
        self.kill = np.zeros(bucket, dtype=bool)
        self.table_dirty = True
        self.batch = b

    def _grown(self, capacity):
        """Headroom for later compositions; the page table keeps its width (the host mirror's)."""
        return dataclasses.replace(capacity.grow(_CAPACITY_HEADROOM), max_pages=self.capacity_pages)

    def _ensure_pages(self) -> None:
        """Pages for the positions the next step feeds (host-live rows; an allocation for a row the device has
        already finished, at EOS or a stop, is returned when the host learns it). A row at its length limit feeds
        nothing more: the device ended it there, and a page for that position would lie past the row's
        capacity_pages (max_new_tokens - 1 fed positions), so it is never asked for."""
        blocks, table = self.blocks, self.table
        # only rows about to feed a position past their last page (one row in page_size per step, on average)
        for r in np.flatnonzero(self.live & (self.next_gen > self.covered) & (self.next_gen < self.limits)).tolist():
            s = self.rows[r]
            for col, page in blocks.ensure_suffix(s, int(self.next_gen[r])):
                table[r, col] = page
                self.table_dirty = True
            self.covered[r] = len(s.pages) * self.page_size

    def _enqueue(self):
        b, r = self.batch, self.runner
        self.clock.switch("launch")
        i = r.enqueue(b, self.table, self.kill, self.table_dirty, self._live_rows())
        self.clock.switch("other")
        parts = self.clock.lap()  # the host's work since the previous launch: what this step may have waited for
        if r.last_times is not None:
            r.last_times.host = parts
        self.table_dirty = False
        self.next_gen += self.live
        st = self.stats
        st.decode_steps += 1
        st.padded_rows += b.rows
        return b, i

    def _process(self, b, i) -> None:
        """Read a step's outputs and apply them to the host-live rows (host time: "wait" for the outputs, then
        "read", its finishes apart)."""
        left = self.clock.switch("wait")
        toks_np, codes_np, lps_np = self.runner.outputs(b, i)
        self.clock.switch("read")
        rows = self.rows
        n = len(rows)
        ran = int(np.count_nonzero(codes_np != IDLE))  # rows the device computed a token for (extras included)
        self.stats.decode_rows += ran
        self.stats.decode_tokens += ran
        # Which new tokens can end a stop string (one vectorized lookup where the matcher has one): the others,
        # still running on the device, only append their token.
        quiet = None  # per row: its token can end no stop string (None: no stop strings, every row is quiet)
        if self.stops is not None:
            may = self.stops.candidates(toks_np[:n])
            quiet = (~may).tolist() if may is not None else [False] * n
        toks, codes, lps = toks_np[:n].tolist(), codes_np[:n].tolist(), lps_np[:n].tolist()
        suffix_tokens = 0
        for r, s in enumerate(rows):
            if s.state is not SeqState.RUNNING:
                continue  # finished on the host earlier: this is its discarded extra token
            c = codes[r]
            if c == RUNNING and (quiet is None or quiet[r]):
                s.tokens.append(toks[r])
                s.logprobs.append(lps[r])
                suffix_tokens += len(s.tokens)
                continue
            if c == IDLE:  # pragma: no cover - the device and the host agree on live rows by construction
                raise AssertionError(f"row {r} ran idle on the device while the host had it running")
            self._accept(s, toks[r], lps[r], c, row=r)
            suffix_tokens += s.generated
        now = time.perf_counter()
        if self._last_t is not None:
            dt = now - self._last_t
            used = self.blocks.node_tokens + suffix_tokens
            self.stats.occupancy_time += dt * used / max(1, self.memory.kv_tokens)
            self.stats.occupancy_weight += dt
        self._last_t = now
        self.steps_read += 1
        self._take_first_tokens(wait=False)
        self.clock.switch(left)

    # ================================================================================================ finishing

    def _accept(self, s: Sequence, token: int, logprob: float, code: int, row: int | None) -> None:
        """Append a sampled token; finish the sequence if a stop condition holds (the device's code first, then
        the host's stop strings, which rank above the length limit)."""
        p = self.params
        s.tokens.append(token)
        s.logprobs.append(logprob)
        if code == STOP_ID:
            self._finish(s, "stop", keep_last=p.include_stop_str_in_output, cut=False)
        elif code == EOS:
            self._finish(s, "eos", keep_last=False, cut=False)
        elif self.stops is not None and self.stops.push(s, token):
            self._finish(s, "stop", keep_last=True, cut=True)
            if row is not None:
                self.kill[row] = True  # the device still runs it: masked from the next enqueued step
        elif code == LENGTH:
            self._finish(s, "length", keep_last=True, cut=False)

    def _finish(self, s: Sequence, reason: str, *, keep_last: bool, cut: bool) -> None:
        left = self.clock.switch("finish")
        ids = s.tokens if keep_last else s.tokens[:-1]
        lps = s.logprobs if keep_last else s.logprobs[:-1]
        text = self.tokenizer.decode(ids) if self.tokenizer is not None else ""
        if cut:
            text = self.stops.cut(text, self.params.include_stop_str_in_output)
        was_running = s.state is SeqState.RUNNING
        s.state = SeqState.FINISHED
        s.finish_reason = reason
        self.unfinished -= 1
        if was_running:
            self.dead_rows += 1
            self.live[self.row_of[s.index]] = False
        self.stats.generated_tokens += len(ids)
        self.scheduler.finished(s)
        self.on_done(Completion(text=text, token_ids=list(ids), finish_reason=reason,
                                logprobs=list(lps) if self.params.logprobs else None, key=s.key,
                                sample_index=s.sample))
        self.clock.switch(left)

    # ================================================================================================ summary

    def summary(self, wall: float, peak: int) -> GenerationSummary:
        st, r = self.stats, self.runner
        records = r.gap_records() if r.record_times else []
        gaps = sum(g for g, _, _ in records)
        decode_s = max(0.0, wall - st.prefill_seconds - r.capture_seconds)
        total = wall  # what the user waits for: one-off graph captures included (capture_seconds says how much)
        return GenerationSummary(
            attention=self.attention, batching=self.opts.batching, num_sequences=self.plan.num_sequences,
            sub_batches=st.admissions, generated_tokens=st.generated_tokens, prefill_tokens=st.prefill_tokens,
            prefill_seconds=st.prefill_seconds, decode_seconds=decode_s,
            tokens_per_second=st.generated_tokens / total if total > 0 else 0.0,
            decode_tokens_per_second=st.decode_tokens / decode_s if decode_s > 0 else 0.0,
            prefill_calls=st.prefill_calls, decode_steps=st.decode_steps, decode_rows=st.decode_rows,
            padded_rows=st.padded_rows, kv_bytes=r.nbytes, peak_memory_bytes=peak, seconds=total,
            capture_seconds=r.capture_seconds, captures=r.captures, preemptions=st.preemptions,
            mean_batch=st.decode_rows / st.decode_steps if st.decode_steps else 0.0,
            kv_occupancy=st.occupancy_time / st.occupancy_weight if st.occupancy_weight else 0.0,
            host_seconds=gaps, host_gaps=gap_profile(records) if records else {},
            max_rows=self.max_rows, capture_log=list(r.capture_log),
            prefill_compiles=list(st.prefill_compiles), rebuilds=st.rebuilds, rebuild_seconds=st.rebuild_seconds,
            budget_bytes=self.memory.budget_bytes, workspace_bytes=self.memory.workspace_bytes)

