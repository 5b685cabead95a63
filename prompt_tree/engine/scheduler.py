"""Admission of subtrees as memory frees, expected lengths with a watermark, preemption of the newest subtree.

Memory is counted in KV pages (blocks.py). A unit (a subtree of the plan, sequence.make_units) is admitted
when the peak of the pages the admitted sequences and the unit's are expected to hold, over the steps to come,
fits in the free pages less the watermark. The peak, not the sum of final lengths: the running sequences are
at different points of their completions, and the ones that finish give their pages back while the others
grow, so at no future step do all of them hold their final length at once. Summing final lengths (the earlier
rule) kept about twice the KV that was ever live in reserve. Expected usage comes from the samples finished
so far: a sequence that has generated g tokens is still running t steps later with probability S(g+t)/S(g),
where S is the Kaplan-Meier survival function of the final lengths, estimated from the finished samples and the
running ones (a sequence running at g is known to end past g: counted at risk up to g, it corrects the bias of
the finished ones, which early in a run are the short ones), shrunk towards max_new_tokens by a prior of
PRIOR_SAMPLES samples there (so a run starts as cautiously as a static reservation and learns; a guess still
wrong is covered by preemption). Many independent sequences make the sum concentrate near its expectation; the
watermark is the headroom for the rest.

When the pages run out anyway, the newest admitted unit is preempted: its unfinished samples drop their pages
and wait again at the head of the queue, to be recomputed (the seeded sampler redraws the same tokens); its
finished samples are kept. The only unit left running is halved rather than preempted whole.

batching="static" reserves max_new_tokens per sequence and admits only into an empty batch: the plan runs as
sub-batches in lockstep (the earlier engine's policy, kept to compare against).
"""
from __future__ import annotations

import weakref
from collections import deque

import numpy as np

from .memory import SchedulingError
from .sequence import SeqState, Unit

PRIOR_SAMPLES = 16
# The smallest slice of a unit admitted beside running sequences (or the whole unit when it is smaller): a slice
# costs a prefill call and a rebuild, so a trickle of tiny ones would cost more than the rows they add.
MIN_SLICE = 16
# A padded decode step costs about (its padded rows + STEP_FIXED_ROWS) rows of work: a fixed part, reading the
# weights once, worth this many rows of the per-row part (each row's GEMM flops and KV). From the roofline: on an
# H200, bf16 at 4.27 TB/s and 679 TFLOP/s (docs/benchmarks/step.json) a 2-byte weight costs as much to read as
# ~160 rows' 2 flops on it (H100: ~240). Measured (job.json run 11, codellama-7b step_bins): 256-1536 rows fit
# t = a + c * rows with a / c between 110 and 190 rows, and llama3-8b's none step (step.json) gives ~106.
STEP_FIXED_ROWS = 160
ACTIVE = (SeqState.PREFILLING, SeqState.READY, SeqState.RUNNING)


class LengthModel:
    """Final generated lengths: the Kaplan-Meier estimate from the finished samples and the running ones (see
    the module docstring), with PRIOR_SAMPLES pseudo-samples at max_new_tokens."""

    def __init__(self, max_new: int, static: bool):
        self.max_new, self.static = max_new, static
        self.finished = np.zeros(max_new + 1, dtype=np.int64)  # [max_new + 1] finished samples per final length
        self.finished[max_new] = PRIOR_SAMPLES
        self.running = np.zeros(max_new + 1, dtype=np.int64)  # [max_new + 1] running ones per generated count
        self._s: np.ndarray | None = None  # [max_new + 1] S(x) = P(final length > x), x = 0 .. max_new
        self._table: tuple | None = None  # (page_size, usage_table), valid while _s is

    def add(self, generated: int) -> None:
        self.finished[min(generated, self.max_new)] += 1
        self._s = None

    def censor(self, counts: np.ndarray) -> None:
        """The running sequences now, counts[g] of them at g generated tokens: each will end past g. Counting
        them at risk up to g removes the early bias of the finished ones, which are the short ones early in a
        run (from finished lengths alone, codellama-7b's 40 x 128 lognormal job over-admitted and preempted 70
        times once the batch could fill its pages, job.json run 14)."""
        counts = np.asarray(counts, dtype=np.int64)[:self.max_new]  # (one at the cap is finishing this step)
        self.running[:] = 0
        self.running[:len(counts)] = counts
        self._s = None

    def _survival_table(self) -> np.ndarray:
        if self._s is None:
            # at risk of ending with exactly t tokens: finished with length >= t, running with g >= t
            # (a running sequence at g ends past g); hazard d(t) / n(t); S(x) = prod over t <= x of (1 - hazard)
            at_risk = np.cumsum(self.finished[::-1])[::-1] + np.cumsum(self.running[::-1])[::-1]
            hazard = np.divide(self.finished, at_risk, out=np.zeros(self.max_new + 1), where=at_risk > 0)
            hazard[0] = 0.0  # every sequence generates at least one token
            self._s = np.cumprod(1.0 - hazard)
            self._table = None
        return self._s

    def expected(self, generated: int) -> int:
        """Expected final generated count of a sequence with `generated` tokens so far."""
        if self.static:
            return self.max_new
        s = self._survival_table()
        g = min(generated, self.max_new - 1)
        # E[L | L > g] = g + sum over x >= g of S(x) / S(g)
        mean = g + (s[g:].sum() / s[g] if s[g] > 0 else 1.0)
        return max(generated + 1, min(self.max_new, -(-int(mean * 1000) // 1000)))

    def survival(self, x: np.ndarray) -> np.ndarray:
        """P(final length > x) for each x >= 0 (0 from max_new_tokens on)."""
        s = self._survival_table()
        return s[np.minimum(np.asarray(x, dtype=np.int64), self.max_new)]

    def usage_table(self, page_size: int) -> np.ndarray:
        """[max_new + 1, H] float64: the pages a sequence that has generated g tokens is expected to hold
        h * page_size steps later (0 once it has finished), for h = 0 .. H - 1 covering max_new_tokens. Cached
        until the estimate changes."""
        self._survival_table()
        if self._table is not None and self._table[0] == page_size:
            return self._table[1]
        g = np.arange(self.max_new + 1, dtype=np.int64)[:, None]
        t = np.arange(0, self.max_new + page_size, page_size, dtype=np.int64)[None, :]
        s_now = self.survival(g)
        alive = np.divide(self.survival(g + t), s_now, out=np.zeros((g.shape[0], t.shape[1])), where=s_now > 0)
        # a sequence still running after generating g + t tokens has fed at most g + t + 1 positions
        table = alive * (-(-(g + t + 1) // page_size))
        self._table = (page_size, table)
        return table


class _Admitted:
    """The admitted sequences as one admission attempt sees them, each figure computed once and only if asked.

    held and worst come from the block manager's count of suffix pages, not a pass over the sequences: every
    suffix page belongs to an admitted sequence (finishing and preemption release a sequence's pages as it
    leaves), and none holds more than capacity_pages (the page table's width). The counts per generated length
    still need that pass, so an attempt that stops at a full batch never makes it: at the GSM8K job's 4,096
    rows the three passes were most of the loop's `admit` time, one attempt after every step that finished a
    sample (8.7 ms a step on the H100 host, docs/benchmarks/h100_s20)."""

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        run = scheduler.run
        self.held = run.blocks.suffix_pages  # the pages the admitted ones hold now (peak_pages)
        # every admitted one at max_new_tokens (what the static policy reserves)
        self.worst = run.capacity_pages * len(scheduler.active) - self.held
        self._counts: np.ndarray | None = None

    def counts(self) -> np.ndarray:
        """[max_new + 1] the admitted sequences per generated count (peak_pages; continuous: the length model
        learns from them, censor)."""
        if self._counts is None:
            sched = self.scheduler
            gens = np.fromiter((len(s.tokens) for s in sched.active), np.int64, len(sched.active))
            self._counts = np.bincount(gens, minlength=sched.lengths.max_new + 1)
            if not sched.static:
                sched.lengths.censor(self._counts)
        return self._counts


class Scheduler:
    """Which units wait, which are admitted (in admission order), and what they are expected to need."""

    def __init__(self, run, units: list[Unit]):
        # A weak reference: the run owns its scheduler. A strong one made the run a reference cycle, so the run
        # and every Sequence, token list and page list it held were freed only by a full collection (~800k
        # objects at the GSM8K job's shape, 4 s in one collection on the H100 host) instead of when generate
        # returns.
        self.run = weakref.proxy(run)
        self.waiting: deque[Unit] = deque(units)
        self.admitted: list[Unit] = []
        self.static = run.opts.batching == "static"
        self.lengths = LengthModel(run.params.max_new_tokens, self.static)
        self.active: set = set()  # sequences admitted and unfinished
        # the step's padded batch size, rows -> bucket, where steps are padded (CUDA graphs; set by the run)
        self.padded = None
        self.waiting_readers: dict = {}
        for s in run.seqs:
            s.unit = -1
            for k in s.path:
                self.waiting_readers[k] = self.waiting_readers.get(k, 0) + 1
        for u in units:
            for s in run.seqs[u.start:u.stop]:
                s.unit = u.uid
        self._next_uid = len(units)
        self._order = 0
        self.dirty = True  # something changed since the last admission attempt

    # ----- what sequences are expected to take

    def peak_pages(self, counts: np.ndarray, held: int) -> int:
        """Pages beyond the `held` ones that sequences (counts[g]: how many have generated g tokens) are expected
        to hold at once at the worst step to come (see the module docstring)."""
        usage = counts @ self.lengths.usage_table(self.run.page_size)  # [H] expected pages, h pages of steps on
        return int(np.ceil(usage.max() - 1e-9)) - held

    def prefilling(self) -> list:
        return sorted((s for s in self.active if s.state is SeqState.PREFILLING), key=lambda s: s.index)

    # ----- admission

    def admit(self) -> bool:
        """Admit the units that fit now; True if any was. Where steps are padded to graph buckets, the rows
        that fit across all waiting units are counted first (a dry walk) and cut to the count worth a padded
        step (worth_padding): cut per unit, a 128-sample problem could never fill the 256 rows that lift a
        768-row batch into the 1024 bucket, and the batch stayed at 768 with half the pages free (codellama-7b,
        lognormal, 40 x 128, H200: 1311 of 1939 steps at 640-767 rows, occupancy 0.48, job.json run 13)."""
        if not self.waiting or not self.dirty:
            return False
        self.dirty = False
        if self.static and self.active:
            return False
        now = _Admitted(self)
        cap = None
        if self.padded is not None:
            fit = self._walk(now, dry=True)
            # (nothing fits with nothing running: the real walk says why)
            cap = worth_padding(len(self.active), fit, self.padded) if fit or self.active else None
        return self._walk(now, dry=False, cap=cap) > 0

    def _walk(self, now: _Admitted, dry: bool, cap: int | None = None) -> int:
        """Walk the waiting units in order, taking from each the most sequences that fit (a slice of at least
        MIN_SLICE beside running ones), at most `cap` in all; returns how many were taken. dry: count only,
        changing nothing: the pages the counted units' new nodes would take, and the nodes they would pin, are
        kept aside as it goes, as admitting them would (the real walk checks every unit again). now: the
        admitted sequences before the walk (their counts are copied, as the walk adds the units it takes)."""
        run, blocks = self.run, self.run.blocks
        counts = None  # taken from `now` at the first unit with room: a full batch costs no pass over it
        held = now.held
        worst = now.worst
        watermark = int(run.opts.watermark * blocks.pool.usable_pages)
        taken = 0
        placed, counted = 0, set()  # dry: the pages the counted units' nodes would take, and those nodes
        queue = deque(self.waiting) if dry else self.waiting
        while queue:
            u = queue[0]
            seqs = [s for s in run.seqs[u.start:u.stop] if s.state is SeqState.WAITING]
            if not seqs:
                queue.popleft()
                continue
            unit_waiting = len(seqs)
            rows = len(self.active) + (taken if dry else 0)
            room = run.max_rows - rows
            if cap is not None:
                room = min(room, cap - taken)
            # beside running sequences: a slice of at least MIN_SLICE (static: the whole unit, as it always did)
            least = len(seqs) if self.static else min(len(seqs), MIN_SLICE)
            if room <= 0 or (rows and min(len(seqs), room) < least):
                break
            seqs = seqs[:room]
            if counts is None:
                counts = now.counts().copy()
            nodes = self._nodes_of(seqs)
            node_pages = sum(blocks.node_pages_needed(k, len(run.plan.node_tokens[k]))
                             for k in nodes if k not in counted)
            spare = blocks.free_pages + self._evictable_pages(counted.union(nodes)) - placed
            if rows:
                n = self._largest_fit(len(seqs), counts, held, worst, spare - node_pages, watermark)
                if n < least:
                    break
            else:  # nothing admitted: take what can start (static: what its reservation allows)
                per = run.capacity_pages if self.static else 1
                fit = (spare - node_pages) // max(1, per)
                if fit < 1:
                    raise SchedulingError(
                        f"one sequence of unit {u.uid} needs {node_pages + per} KV pages and only {spare} are free "
                        f"with nothing running: raise memory_budget_bytes or shorten the prompts")
                n = min(fit, len(seqs))
            if n < len(seqs):  # a slice: only its own nodes are placed (a unit may span several problems)
                seqs = seqs[:n]
                nodes = self._nodes_of(seqs)
            counts[0] += n
            worst += n * run.capacity_pages  # a waiting sequence holds no page
            taken += n
            if dry:
                placed += sum(blocks.node_pages_needed(k, len(run.plan.node_tokens[k]))
                              for k in nodes if k not in counted)  # what placing its nodes takes from free_pages
                counted.update(nodes)
                if n < unit_waiting:
                    break  # the rest of a sliced unit did not fit
                queue.popleft()
                continue
            queue.popleft()
            if seqs[-1].index + 1 < u.stop and any(s.state is SeqState.WAITING
                                                   for s in run.seqs[seqs[-1].index + 1:u.stop]):
                rest = Unit(self._next_uid, seqs[-1].index + 1, u.stop)  # the unit is split: the rest waits
                self._next_uid += 1
                u.stop = rest.start
                for s in run.seqs[rest.start:rest.stop]:
                    s.unit = rest.uid
                self.waiting.appendleft(rest)
            self._admit(u, seqs, nodes)
        return taken

    def _fits(self, n: int, counts: np.ndarray, held: int, worst: int, spare: int, watermark: int) -> bool:
        """Whether the first n of a unit's waiting sequences may join the running ones: their expected peak
        (static: their reservations) leaves the watermark free. The watermark is headroom for lengths longer than
        expected; a slice that fits even with every admitted sequence at max_new_tokens needs none (else a pool
        sized to the whole plan would keep its last units waiting for headroom it can never use). A waiting
        sequence holds no page, so n of them add n * capacity_pages at max_new_tokens; spare: free and
        evictable pages less the unit's new nodes."""
        unit_worst = n * self.run.capacity_pages
        if spare - worst - unit_worst >= 0:
            return True
        if self.static:  # every sequence reserves max_new_tokens
            need = worst + unit_worst
        else:
            with_unit = counts.copy()
            with_unit[0] += n
            need = self.peak_pages(with_unit, held)
        return spare - need >= watermark

    def _largest_fit(self, total, counts, held, worst, spare, watermark) -> int:
        """The most of a unit's `total` waiting sequences (a prefix) that fit (`_fits` is monotone in n): all,
        else a slice found by bisection. Admitting a slice, not waiting for room for the whole unit, is what keeps
        memory full when a unit is a large share of the pool: with problems of 128 samples of 512 tokens and room
        for about 1.5 of them, whole-unit admission ran 128 rows where 190 fit (codellama-7b, fixed lengths,
        H200)."""
        if self._fits(total, counts, held, worst, spare, watermark):
            return total
        lo, hi = 0, total  # fits(lo), not fits(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._fits(mid, counts, held, worst, spare, watermark):
                lo = mid
            else:
                hi = mid
        return lo

    def _nodes_of(self, seqs) -> list:
        seen, out = set(), []
        for s in seqs:
            for k in s.path:
                if k not in seen:
                    seen.add(k)
                    out.append(k)
        return out

    def _evictable_pages(self, keep) -> int:
        blocks = self.run.blocks
        keep = set(keep)
        return sum(len(blocks.node_pages[k]) for k in blocks.unpinned_nodes() if k not in keep)

    def _evict(self, need: int, keep) -> None:
        """Drop resident nodes no live sequence reads (not those in `keep`) until `need` pages are free. A node goes
        with every resident node below it: a node whose ancestor is gone could neither be prefilled (a queued one
        waited for ever: found by a fuzzer, a preempted unit's queued child outliving its evicted parent) nor read.
        Nothing below an unread node is read (a reader pins its whole path), and nothing below a node outside
        `keep` is in it (`keep` holds whole paths)."""
        blocks, run = self.run.blocks, self.run
        keep = set(keep)
        for k in blocks.unpinned_nodes():
            if blocks.free_pages >= need:
                return
            if k in keep or not blocks.resident(k):  # (dropped already, below an earlier one)
                continue
            # k and its resident descendants, the deepest first
            below = (d for d in blocks.node_pages if k in run.node_path[d])
            for d in sorted(below, key=lambda d: -len(run.node_path[d])):
                blocks.drop_node(d)
                if d in run.prefill_queue:
                    run.prefill_queue.remove(d)
                run.prefill_done.pop(d, None)

    def _admit(self, u: Unit, seqs, nodes) -> None:
        run, blocks = self.run, self.run.blocks
        new = [k for k in nodes if not blocks.resident(k)]
        need = sum(blocks.node_pages_needed(k, len(run.plan.node_tokens[k])) for k in new)
        self._evict(need + len(seqs), nodes)
        for k in new:
            blocks.place_node(k, len(run.plan.node_tokens[k]))
        run.queue_prefill([k for k in nodes if k not in blocks.prefilled])
        for s in seqs:
            blocks.pin(s.path)
            for k in s.path:
                self.waiting_readers[k] -= 1
            s.state = SeqState.PREFILLING
            self.active.add(s)
        u.order = self._order
        self._order += 1
        if u not in self.admitted:
            self.admitted.append(u)
        run.stats.admissions += 1

    # ----- ending and preempting

    def finished(self, s) -> None:
        blocks = self.run.blocks
        if s.pages:
            blocks.release_suffix(s)
        if s in self.active:
            self.active.discard(s)
            for k in blocks.unpin(s.path):
                if not self.waiting_readers.get(k, 0):
                    blocks.drop_node(k)
        self.lengths.add(s.generated)
        self.dirty = True

    def preempt(self) -> None:
        """Free pages for the running rows: first nodes nobody reads, else the newest unit's unfinished samples
        (half of them when it is the only unit left)."""
        run, blocks = self.run, self.run.blocks
        before = blocks.free_pages
        self._evict(blocks.free_pages + 1, ())
        if blocks.free_pages > before:
            return
        units = [u for u in sorted(self.admitted, key=lambda u: u.order)
                 if any(s.state in ACTIVE for s in run.seqs[u.start:u.stop])]
        if not units:
            raise SchedulingError("out of KV pages with nothing to preempt")
        u = units[-1]
        victims = [s for s in run.seqs[u.start:u.stop] if s.state in ACTIVE]
        if len(units) == 1:
            if len(victims) == 1:
                raise SchedulingError(
                    f"one sequence ({victims[0].key!r}, sample {victims[0].sample}) needs more KV pages than the "
                    f"budget holds: raise memory_budget_bytes or lower max_new_tokens")
            victims = victims[len(victims) // 2:]
        cut = victims[0].index
        rest = Unit(self._next_uid, cut, u.stop)
        self._next_uid += 1
        u.stop = cut
        for s in run.seqs[rest.start:rest.stop]:
            s.unit = rest.uid
        for s in victims:
            if s.pages:
                blocks.release_suffix(s)
            self.active.discard(s)
            blocks.unpin(s.path)  # the nodes stay: these samples wait for them again
            for k in s.path:
                self.waiting_readers[k] += 1
            if s in run.ready:
                run.ready.remove(s)
            s.reset()
        self.waiting.appendleft(rest)
        run.stats.preemptions += 1
        self.dirty = True


def worth_padding(rows: int, n: int, bucket) -> int:
    """How many of n rows that fit may join `rows` running ones when steps are padded to bucket(rows): the count
    k <= n with the most tokens per unit of step cost, (rows + k) / (bucket(rows + k) + STEP_FIXED_ROWS), the
    largest on ties. A step that stays small costs about the same whatever its rows (the weight read dominates),
    so rows join freely there; at large batches a slice that mostly pads a larger bucket waits (on the H200,
    codellama-7b at fixed lengths: 404 rows in the 512 bucket ran 27.9 ms a step against 22.8 ms for 384 rows in
    the 384 bucket, job.json run 10). Only n, and the counts that fill a bucket exactly, can be best: within one
    bucket more rows cost nothing. bucket: EngineOptions.bucket (rows + n within its largest bucket)."""
    best_k, best_cost = 0, bucket(rows) + STEP_FIXED_ROWS
    b = bucket(rows)
    candidates = []
    while b < rows + n:
        candidates.append(b - rows)
        b = bucket(b + 1)
    candidates.append(n)
    for k in candidates:
        cost = bucket(rows + k) + STEP_FIXED_ROWS
        if (rows + k) * best_cost >= (rows + best_k) * cost:  # exact: integers, larger k wins ties
            best_k, best_cost = k, cost
    return best_k
