"""Stop strings: the window-decoding checker of the synchronous engine, and the incremental matcher.

The rule both implement: a sequence stops at the first step after which its completion's text,
`tokenizer.decode(completion ids)` with special tokens skipped, contains a stop string; the final text is that
decode cut at the earliest stop string (`cut_at_stop`).

- `StopChecker.hit(ids)` decodes a tail window of the ids with the tokenizer every step (kept for the synchronous
  engine; about 37 us a sequence and step with a 32k BPE tokenizer).
- `StopMatcher(stops, tokenizer).batch(n, max_tokens)` gives a `StopBatch`; `batch.push(rows, tokens)` appends one
  token to each listed sequence and says which of them now contain a stop. It never calls the tokenizer: a table of
  what each id adds to the text (`token_text.token_table`, verified against tokenizer.decode) and the ids pushed
  so far are enough. Per step, vectorized over the batch, a table says which new tokens could end a stop string
  at all (their text, or bytes, end with a suffix of one); only those sequences rebuild the last few characters
  before the token and search them. Tokenizers whose decoder is not understood use StopChecker per sequence.

Matching in "bytes" mode (byte-level BPE) is on the UTF-8 bytes: a stop string's encoding occurs in the byte
stream exactly when the stop string occurs in its lossy decoding, because a UTF-8 decoder always restarts at an
ASCII or lead byte and a stop string starts with one. Stop strings containing U+FFFD (which only the decoding can
produce) are matched by StopChecker instead.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .token_text import TokenTable, token_table

_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer -> TokenTable | None
# Characters at the start of a StopChecker window that may differ from the text they stand for (StopChecker)
WINDOW_MARGIN = 4


def cut_at_stop(text: str, stops: Sequence[str], include: bool) -> str:
    """The text up to the earliest stop string (through it when include); unchanged when none occurs.

    Earliest start wins; at one start the longest stop string (so include keeps the whole of it)."""
    best = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0] or (i == best[0] and len(s) > len(best[1]))):
            best = (i, s)
    if best is None:
        return text
    return text[: best[0] + (len(best[1]) if include else 0)]


@dataclass
class StopChecker:
    """Stop-string matching on each sequence's generated text by decoding a tail window of its tokens.

    Each step decodes only a tail window of the sequence's tokens, long enough to hold any stop string: a stop
    string of c characters that ends in the newest token starts at most c characters before that token's text
    ends, so the window grows (doubling) until its text is that long. It starts at 4c + 2 tokens (a byte-level
    token carries at least one byte, a character at most four) and only grows past tokens that decode to nothing
    (BOS, PAD, other special tokens). A match in the window is new (an older one would have stopped the sequence
    earlier). The final cut (`cut`) decodes the whole completion once and cuts at the earliest match.

    A window that does not start at the completion's first token may start inside a character: its first few
    characters are then the decoder's, not the text's (up to three U+FFFD for the stray continuation bytes of a
    cut character, or a leading space a sentencepiece decoder drops). So the window holds WINDOW_MARGIN characters
    more than a new match needs, and they are not searched: no new match starts there, and a U+FFFD stop string
    never matches a character the text does not have (found by a fuzzer: "\ufffd" stopped "日aaaaa").
    """

    stops: Sequence[str]
    decode: object  # callable(list[int]) -> str
    window: int = field(init=False)

    def __post_init__(self):
        self.longest = max((len(s) for s in self.stops), default=0)
        self.window = 4 * self.longest + 2
        self._token_chars: dict[int, int] = {}  # token id -> length of its text alone (a pure function of the id)

    def hit(self, token_ids: list[int]) -> bool:
        if not self.stops:
            return False
        last = token_ids[-1]
        chars = self._token_chars.get(last)
        if chars is None:  # once per distinct token id: one decode per sequence and step, not two
            chars = self._token_chars[last] = len(self.decode([last]))
        need = self.longest + chars + 1 + WINDOW_MARGIN
        w = self.window
        tail = self.decode(token_ids[-w:])
        while len(tail) < need and w < len(token_ids):
            w *= 2
            tail = self.decode(token_ids[-w:])
        if w < len(token_ids):
            tail = tail[WINDOW_MARGIN:]  # the window's start is the decoder's, not the text's (see above)
        return any(s in tail for s in self.stops)

    def cut(self, text: str, include: bool) -> str:
        """The text up to the earliest stop string (through it when include); unchanged when none occurs."""
        return cut_at_stop(text, self.stops, include)


def _stop_reach(piece, stops) -> tuple[bool, set]:
    """How a stop string can end inside `piece` (bytes or str): (True, _) when the piece contains one; else the
    set of last elements (bytes or chars) the text before the piece must end with, one per proper suffix of a stop
    string that the piece starts with (the rest of that stop string then ends the text before). Empty: never."""
    prev = set()
    for s in stops:
        if s in piece:
            return True, prev
        for j in range(1, min(len(s), len(piece) + 1)):
            if piece[:j] == s[-j:]:
                prev.add(s[-j - 1])
    return False, prev


class StopMatcher:
    """Incremental stop matching for one (stop strings, tokenizer). Build once (the table is cached per tokenizer).

    hit(ids): ids are a completion's tokens so far (a list), the newest last; True when the
    newest token made the text contain a stop string it did not contain before. push(seq, token) is the engine's
    form (seq.tokens already ends with token). batch(n) keeps the ids itself for a whole batch.
    mode: "off" (no stop strings), "bytes", "pieces" (see token_text) or "window" (StopChecker per sequence).
    """

    def __init__(self, stops: Sequence[str], tokenizer):
        self.stops = tuple(stops)
        if any(not isinstance(s, str) or not s for s in self.stops):
            raise ValueError(f"StopMatcher: stop strings must be non-empty strings, got {self.stops!r}")
        if self.stops and tokenizer is None:
            raise ValueError("StopMatcher: stop strings need a tokenizer to decode text (use stop_token_ids)")
        self.tokenizer = tokenizer
        self.table: TokenTable | None = None
        self.mode = "off"
        if not self.stops:
            return
        self.checker = StopChecker(self.stops, tokenizer.decode)
        table = _cached_table(tokenizer)
        if table is None or (table.kind == "bytes" and any("\ufffd" in s for s in self.stops)):
            self.mode = "window"
            return
        self.table, self.mode = table, table.kind
        self.size = n = table.size
        if table.kind == "bytes":
            self.stop_keys = tuple(s.encode() for s in self.stops)
            pieces = table.piece_bytes
        else:
            self.stop_keys = self.stops
            pieces = table.piece_text
            self._skip = table.skip.tolist() + [True]
            self.skip = np.append(table.skip, True)
            self._byte = table.byte_of.tolist() + [-1]
        # per id: contains a stop (_always); else the last byte/char the text before it must end with (_prev).
        # Pieces mode: an ASCII byte token appended to a run of ASCII bytes (the common "\n" = <0x0A>) adds its
        # character and nothing else, so it is judged by that character; other byte tokens are always looked at.
        piece = list(pieces)
        if table.kind == "pieces":
            for i in range(n):
                b = int(table.byte_of[i])
                piece[i] = chr(b) if 0 <= b < 0x80 else ("\ufffd" if b >= 0x80 else piece[i])
        self._always, self._prev = [False] * (n + 1), [None] * (n + 1)
        for i in range(n):
            if not table.skip[i]:
                self._always[i], need = _stop_reach(piece[i], self.stop_keys)
                self._prev[i] = frozenset(need) if need else None
        self._piece = piece + [b"" if table.kind == "bytes" else ""]  # index n: ids outside the table
        self._last = [p[-1] if p else None for p in piece] + [None]  # the last byte / char of each id's piece
        may = [a or p is not None for a, p in zip(self._always, self._prev)]
        if table.kind == "pieces":
            may = [m or b >= 0x80 for m, b in zip(may, self._byte)]
        self._may = may  # [n + 1]: a Python list, for per-sequence lookups
        self.may_end = np.array(may)  # the same, for vectorized lookups
        self.longest = max(len(s) for s in self.stop_keys)

    def hit(self, ids: list[int]) -> bool:
        if self.mode == "off" or not ids:
            return False
        if self.mode == "window":
            return self.checker.hit(ids)
        size, n = self.size, len(ids)
        last = ids[n - 1]
        last = last if last < size else size
        pieces = self.mode == "pieces"
        if pieces:
            b, head = self._byte[last], ids[0]
            if (n == 1 or (self._skip[head if head < size else size] and self._opens_text(ids, n - 1))
                    or b >= 0x80 or (b >= 0 and not self._plain(ids, n - 1))):
                return self._check_pieces(ids, n)  # the strip rules act on the first; a byte run may change whole
        if not self._may[last]:
            return False
        if not self._always[last]:
            # the stop must reach back: the text before has to end with one of _prev[last]
            i = n - 2
            while i >= 0 and not self._last[min(ids[i], size)]:
                i -= 1  # tokens that decode to nothing
            if i < 0:
                return False
            if pieces and (self._opens_text(ids, i) or not self._plain(ids, i)):
                return self._check_pieces(ids, n)  # a stripped first token, or a byte run's text, differ
            if self._last[min(ids[i], size)] not in self._prev[last]:
                return False
        return self._check_tail(ids, n)

    def candidates(self, tokens: np.ndarray) -> np.ndarray | None:
        """Which of a step's new tokens (one per sequence) can make hit() true: bool [n]. In bytes mode, those that
        may end a stop string (hit()'s own first test, vectorized); None where hit() must see every token (pieces
        mode: a completion's first text token is judged by the strip rules; window mode)."""
        if self.mode == "off":
            return np.zeros(len(tokens), dtype=bool)
        if self.mode != "bytes":
            return None
        return self.may_end[np.minimum(np.asarray(tokens, dtype=np.int64), self.size)]

    def push(self, seq, token: int) -> bool:
        """The engine's per-sequence call: seq.tokens already ends with token."""
        return self.hit(seq.tokens)

    def batch(self, n: int) -> "StopBatch":
        return StopBatch(self, n)

    def cut(self, text: str, include: bool) -> str:
        return cut_at_stop(text, self.stops, include)

    def _opens_text(self, ids: list[int], i: int) -> bool:
        """Is ids[i] the first token that is not skipped (pieces mode: the one the strip rules act on)?"""
        skip, size = self._skip, self.size
        for j in range(i):  # stops at the first non-skipped token: almost always ids[0]
            t = ids[j]
            if not skip[t if t < size else size]:
                return False
        return True

    def _plain(self, ids: list[int], i: int) -> bool:
        """Pieces mode: does ids[i] just add its piece's text? True for a text token, and for an ASCII byte token
        whose run (the byte tokens before it, skipped ones passed over) is all ASCII, hence valid UTF-8."""
        byte, skip, size = self._byte, self._skip, self.size
        while i >= 0:
            t = ids[i]
            t = t if t < size else size
            b = byte[t]
            if b >= 0x80:
                return False
            if b < 0 and not skip[t]:
                return True  # a text token: the run (if any) starts after it
            i -= 1
        return True

    # ----- per-candidate checks: rebuild the text just before the new token, search where it changed

    def _clip(self, ids: list[int]) -> list[int]:
        size = self.size
        return [t if t < size else size for t in ids]

    def _check_tail(self, ids: list[int], n: int) -> bool:
        """Join the pieces just before the new token (enough for the longest stop string) and search where the new
        token's piece extends them. Pieces mode hands over to the exact `_check_pieces` when a non-ASCII byte
        token, or the completion's first text token (strip rules), is among them."""
        size, piece, pieces = self.size, self._piece, self.mode == "pieces"
        need = self.longest - 1  # bytes / chars of text before the token that a stop ending in it can reach back
        parts, got, i = [], 0, n - 2
        while got < need and i >= 0:
            t = ids[i]
            t = t if t < size else size
            if pieces and self._byte[t] >= 0x80:
                return self._check_pieces(ids, n)
            p = piece[t]
            if p:
                parts.append(p)
                got += len(p)
            i -= 1
        if pieces and (self._opens_text(ids, i + 1) or not self._plain(ids, i + 1)):
            return self._check_pieces(ids, n)  # the first text token is included, or a run began with non-ASCII
        new = piece[last] if (last := ids[n - 1]) < size else piece[size]
        before = (b"" if not pieces else "").join(reversed(parts))
        text = before[max(0, len(before) - need):] + new
        changed = len(text) - len(new)
        return any(text.find(s, max(0, changed - len(s) + 1)) >= 0 for s in self.stop_keys)

    def _check_pieces(self, ids: list[int], n: int) -> bool:
        table, skip, byte, size = self.table, self._skip, self._byte, self.size

        def at(i):
            t = ids[i]
            return t if t < size else size

        # the changed text: the new token's piece, or the whole byte run it extends (a run decodes as a whole)
        c = n - 1
        if byte[at(c)] >= 0:
            while c > 0 and (byte[at(c - 1)] >= 0 or skip[at(c - 1)]):
                c -= 1
        changed_len = len(table.decode(self._clip(ids[c:n]), at_start=False))
        need = self.longest - 1
        k = need + 1
        while True:
            start = max(0, c - k)
            j = start  # never start inside a byte run: it would decode differently on its own
            while j < c and skip[at(j)]:
                j += 1
            if j < c and byte[at(j)] >= 0:
                while start > 0 and (byte[at(start - 1)] >= 0 or skip[at(start - 1)]):
                    start -= 1
            while start > 0 and skip[at(start - 1)]:
                start -= 1  # only skipped tokens before: the window is the start of the text
            text = table.decode(self._clip(ids[start:n]), at_start=start == 0)
            changed = max(0, len(text) - changed_len)
            if changed >= need or start == 0:
                break
            k *= 2
        return any(text.find(s, max(0, changed - len(s) + 1)) >= 0 for s in self.stop_keys)


def _cached_table(tokenizer) -> TokenTable | None:
    try:
        return _TABLES[tokenizer]
    except (KeyError, TypeError):
        pass
    table = token_table(tokenizer)
    try:
        _TABLES[tokenizer] = table
    except TypeError:  # not weak-referenceable: no cache
        pass
    return table


class StopBatch:
    """The ids pushed so far for n sequences (rows 0..n-1), for an engine loop that hands over a step's tokens as
    arrays: push(rows [R], tokens [R]) -> hit [R] bool appends tokens[j] to sequence rows[j] (each row at most once
    per call) and says, as StopMatcher.hit, whether its text now newly contains a stop string. Only the rows whose
    new token may end a stop string (StopMatcher.may_end, one vectorized lookup) are looked at one by one."""

    def __init__(self, matcher: StopMatcher, n: int):
        self.m = matcher
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.fresh = np.ones(n, dtype=bool)  # no token with text yet

    def push(self, rows, tokens) -> np.ndarray:
        rows_a = np.asarray(rows, dtype=np.int64).reshape(-1)
        toks_a = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if rows_a.shape != toks_a.shape:
            raise ValueError(f"StopBatch.push: {rows_a.size} rows but {toks_a.size} tokens")
        if rows_a.size and (rows_a.min() < 0 or rows_a.max() >= len(self.ids)):
            raise ValueError(f"StopBatch.push: rows must be in [0, {len(self.ids)}), got "
                             f"{rows_a.min()}..{rows_a.max()}")
        if toks_a.size and toks_a.min() < 0:
            raise ValueError(f"StopBatch.push: token ids must be >= 0, got {toks_a.min()}")
        if np.unique(rows_a).size != rows_a.size:
            raise ValueError("StopBatch.push: a row appears twice in one push (one token per sequence and step)")
        ids, m = self.ids, self.m
        rows_l = rows_a.tolist()
        for r, t in zip(rows_l, toks_a.tolist()):
            ids[r].append(t)
        hit = np.zeros(rows_a.size, dtype=bool)
        if m.mode == "off":
            return hit
        if m.mode == "window":
            look = range(rows_a.size)
        else:
            clipped = np.minimum(toks_a, m.size)
            cand = m.may_end[clipped]
            if m.mode == "pieces":  # a completion's first text token (the strip rules) is always looked at
                cand |= self.fresh[rows_a]
                self.fresh[rows_a] &= m.skip[clipped]
            look = np.flatnonzero(cand).tolist()
        for j in look:
            hit[j] = m.hit(ids[rows_l[j]])
        return hit
