"""Incremental stop matching (prompt_tree.stops) against today's StopChecker and against the definition (the first
step whose full decode contains a stop string), with real BPE tokenizers trained here; the finished text and
finish_reason of a simulated accept loop are identical with either matcher."""
import random

import numpy as np
import pytest

from bpe_tokenizers import byte_level_bpe, metaspace_bpe, sentencepiece_bpe
from prompt_tree.stops import StopChecker, StopMatcher, cut_at_stop
from prompt_tree.token_text import token_table
from prompt_tree.tokenizer import ByteTokenizer, HFTokenizer

APPS = ("\nQUESTION:", "\nANSWER:", "\n\n\n\n")
STOP_SETS = [APPS, ("🙂!", "日本"), (" def", "x"), ("é",), ("\n\n",), (" ",), ("ANSWER", "\nANSWER:\n"), ("😀",)]
FRAGMENTS = ["\nQUESTION:", "\nANSWER:", "\n\n", "\n", "🙂", "!", "日本語", " def", "x", "é", "abc", " ", "  ", ":",
             "ANSWER", "😀"]
TOKENIZERS = {"bytes": ByteTokenizer, "byte-level BPE": byte_level_bpe, "sentencepiece": sentencepiece_bpe,
              "metaspace": metaspace_bpe}


def _random_ids(tok, rng, specials) -> list[int]:
    ids = []
    for _ in range(rng.randrange(1, 25)):
        r = rng.random()
        if r < 0.4:
            ids += tok.encode(rng.choice(FRAGMENTS))
        elif r < 0.5:
            ids.append(rng.choice(specials))
        elif r < 0.55 and not isinstance(tok, ByteTokenizer):  # (the byte tokenizer refuses those)
            ids.append(tok.vocab_size + rng.randrange(5))  # beyond the vocabulary: decodes to nothing
        else:
            ids.append(rng.randrange(tok.vocab_size))
    return ids[:60]


def _specials(tok) -> list[int]:
    return [i for i in range(tok.vocab_size) if tok.decode([i]) == ""][:20]


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_first_stop_step_equals_stop_checker_and_the_definition(name):
    tok = TOKENIZERS[name]()
    rng = random.Random(name)
    specials = _specials(tok)
    assert StopMatcher(APPS, tok).mode == {"bytes": "bytes", "byte-level BPE": "bytes"}.get(name, "pieces")
    hits = differ = 0
    for trial in range(240):
        stops = STOP_SETS[trial % len(STOP_SETS)]
        ids = _random_ids(tok, rng, specials)
        matcher, checker = StopMatcher(stops, tok), StopChecker(stops, tok.decode)
        steps = range(1, len(ids) + 1)
        want = next((t for t in steps if any(s in tok.decode(ids[:t]) for s in stops)), None)
        today = next((t for t in steps if checker.hit(ids[:t])), None)
        ours = next((t for t in steps if matcher.hit(ids[:t])), None)
        batch = matcher.batch(3)
        pushed = next((t + 1 for t, x in enumerate(ids) if batch.push([1], [x])[0]), None)
        assert want == ours == pushed, (stops, ids, want, today, ours, pushed)
        if today != want:  # only where StopChecker's window starts inside a byte-fallback run
            assert any(_window_cuts_a_byte_run(tok, ids[:t], checker.window) for t in (today, want) if t), \
                (stops, ids, want, today)
            differ += 1
        hits += want is not None
    assert hits > 60  # the inputs do reach stop strings
    assert differ <= 6, differ


def _window_cuts_a_byte_run(tok, ids, window) -> bool:
    """Does StopChecker's first window over ids start inside a run of byte-fallback tokens (special tokens
    passed over)? Decoded alone, such a run's part can be valid UTF-8 where the whole run is not, or the reverse,
    so the window's text is not a suffix of the completion's (see the test below)."""
    if len(ids) <= window:
        return False
    is_byte = lambda i: (tok.backend.id_to_token(i) or "").startswith("<0x") if i < tok.vocab_size else False
    text_ids = [i for i in ids if tok.decode([i]) != "" or is_byte(i)]  # drop ids that decode to nothing
    start = len(ids) - window
    inside = [i for i in ids[start:] if i in text_ids][:1]
    before = [i for i in ids[:start] if i in text_ids][-1:]
    return bool(inside and before and is_byte(inside[0]) and is_byte(before[0]))


def _finish_like_the_engine(ids, stops, hit, eos, stop_ids, max_new, include, decode):
    """Today's engine: _accept's order of conditions, then _finish's decode and cut."""
    out = []
    for t in ids:
        out.append(t)
        if t in stop_ids:
            kept = out if include else out[:-1]
            return decode(kept), kept, "stop"
        if t in eos:
            return decode(out[:-1]), out[:-1], "eos"
        if stops and hit(out):
            return cut_at_stop(decode(out), stops, include), list(out), "stop"
        if len(out) >= max_new:
            return decode(out), list(out), "length"
    return decode(out), out, None


@pytest.mark.parametrize("name", ["byte-level BPE", "sentencepiece"])
def test_finished_text_and_reason_are_identical(name):
    tok = TOKENIZERS[name]()
    rng = random.Random(1)
    specials = _specials(tok)
    eos = (tok.eos_ids[0],)
    for trial in range(150):
        stops = STOP_SETS[trial % len(STOP_SETS)]
        ids = _random_ids(tok, rng, specials)
        stop_ids = (rng.randrange(tok.vocab_size),)
        include, max_new = rng.random() < 0.5, rng.randrange(1, 40)
        old = StopChecker(stops, tok.decode)
        new = StopMatcher(stops, tok)
        args = (ids, stops)
        a = _finish_like_the_engine(*args, old.hit, eos, stop_ids, max_new, include, tok.decode)
        b = _finish_like_the_engine(*args, new.hit, eos, stop_ids, max_new, include, tok.decode)
        assert a == b


def test_named_cases():
    for tok in (byte_level_bpe(), sentencepiece_bpe(), ByteTokenizer()):
        m = StopMatcher(APPS, tok)
        # a stop in the first token
        first = tok.encode("\n\n\n\n")
        assert m.hit(first[:1]) == ("\n\n\n\n" in tok.decode(first[:1]))
        assert any(m.hit(first[:i]) for i in range(1, len(first) + 1))
        # spanning several tokens, special tokens in between
        whole = tok.encode("x = 1\nQUESTION:")
        ids = whole[:-2] + _specials(tok)[:3] * 5 + whole[-2:]
        assert tok.decode(ids) == tok.decode(whole)
        assert [m.hit(ids[:i]) for i in range(1, len(ids) + 1)].index(True) == len(ids) - 1
        # multi-byte characters split into byte tokens
        emoji = StopMatcher(("🙂!",), tok)
        ids = tok.encode("a 🙂!")
        got = [emoji.hit(ids[:i]) for i in range(1, len(ids) + 1)]
        assert got.index(True) == len(ids) - 1 and sum(got) == 1
        cjk = StopMatcher(("本語",), tok)
        ids = tok.encode("日本語です")
        assert any(cjk.hit(ids[:i]) for i in range(1, len(ids) + 1))


def test_a_leading_space_stripped_from_the_text_cannot_match():
    """Sentencepiece decoding drops the completion's leading space, so " def" at the very start is no match."""
    tok = sentencepiece_bpe()
    m = StopMatcher((" def",), tok)
    ids = tok.encode(" def f")
    assert not tok.decode(ids).startswith(" ")
    assert not any(m.hit(ids[:i]) for i in range(1, len(ids) + 1))
    ids2 = tok.encode("x def")
    assert any(m.hit(ids2[:i]) for i in range(1, len(ids2) + 1))


def test_stop_checker_window_that_cuts_a_byte_run_is_the_one_difference():
    """StopChecker decodes a window of 4c + 2 tokens; when that window starts inside a run of byte-fallback tokens
    whose whole is invalid UTF-8 (decoded as U+FFFD per byte), the window decodes newlines the completion's text
    does not contain, and it reports a stop that its own cut then cannot find. The incremental matcher follows the
    text."""
    tok = sentencepiece_bpe()
    byte = lambda b: tok.token_to_id(f"<0x{b:02X}>")
    ids = tok.encode("x = 1") + [byte(0x80)] + [byte(0x0A)] * 50
    stops = ("\n\n\n\n",)
    text = tok.decode(ids)
    assert "\n" not in text
    checker, matcher = StopChecker(stops, tok.decode), StopMatcher(stops, tok)
    assert any(checker.hit(ids[:i]) for i in range(1, len(ids) + 1))  # today: a stop...
    assert checker.cut(text, include=False) == text  # ...that is not in the text
    assert not any(matcher.hit(ids[:i]) for i in range(1, len(ids) + 1))


def test_a_replacement_character_stop_follows_the_text_when_the_window_cuts_a_character():
    """A stop string holding U+FFFD is matched by StopChecker (only decoding makes that character). A window that
    starts inside a multi-byte character decodes its stray continuation bytes as U+FFFD, which the text does not
    hold: "\ufffd" used to stop "日aaaaa" at its 7th and 8th tokens. On random multi-byte streams, with and without
    real invalid bytes, the first stop step is the definition's."""
    tok = ByteTokenizer()
    m = StopMatcher(("\ufffd",), tok)
    assert m.mode == "window"
    ids = list("日".encode()) + [ord("a")] * 5
    assert [m.hit(ids[:n]) for n in range(1, len(ids) + 1)] == ["\ufffd" in tok.decode(ids[:n])
                                                                 for n in range(1, len(ids) + 1)]
    rng = random.Random(5)
    pieces = ["日本語", "é", "🙂", "a", "\n", " x"]
    for trial in range(400):
        stops = rng.choice([("\ufffd",), ("a\ufffd", "\n\n"), ("\ufffd\ufffd",)])
        ids = []
        for _ in range(rng.randrange(1, 30)):
            ids += list(rng.choice(pieces).encode()) if rng.random() < 0.9 else [rng.choice([0x80, 0xE6, 0xFF])]
        checker = StopChecker(stops, tok.decode)
        steps = range(1, len(ids) + 1)
        want = next((t for t in steps if any(s in tok.decode(ids[:t]) for s in stops)), None)
        assert next((t for t in steps if checker.hit(ids[:t])), None) == want, (stops, ids)


def test_modes_and_fallbacks():
    tok = byte_level_bpe()
    assert StopMatcher((), tok).mode == "off" and not StopMatcher((), tok).hit([1, 2])
    assert StopMatcher(("a\ufffd",), tok).mode == "window"  # U+FFFD only exists in decoded text, not in bytes

    class Shouting(HFTokenizer):  # decode differs from the table: verification must refuse the table
        def decode(self, ids):
            return super().decode(ids).upper()

    loud = Shouting(tok.backend, tok.bos_id, tok.eos_ids)
    assert token_table(loud) is None
    m = StopMatcher(("ANSWER",), loud)
    assert m.mode == "window"
    ids = tok.encode("an answer")
    assert any(m.hit(ids[:i]) for i in range(1, len(ids) + 1))

    class Other:  # any tokenizer object: decoded windows, as StopChecker
        vocab_size = 259

        def decode(self, ids):
            return ByteTokenizer().decode(ids)

    assert StopMatcher(APPS, Other()).mode == "window"
    with pytest.raises(ValueError, match="need a tokenizer"):
        StopMatcher(APPS, None)
    with pytest.raises(ValueError, match="non-empty strings"):
        StopMatcher(("",), tok)


def test_batch_push_checks_its_input():
    b = StopMatcher(APPS, ByteTokenizer()).batch(4)
    with pytest.raises(ValueError, match="2 rows but 1 tokens"):
        b.push([0, 1], [5])
    with pytest.raises(ValueError, match="appears twice"):
        b.push([1, 1], [5, 6])
    with pytest.raises(ValueError, match=r"rows must be in \[0, 4\)"):
        b.push([4], [5])
    with pytest.raises(ValueError, match="token ids must be >= 0"):
        b.push([0], [-1])
    got = b.push(np.array([0, 2]), np.array([10, 10]))
    assert got.tolist() == [False, False] and b.ids[0] == [10] and b.ids[1] == []


def test_engine_form_push_uses_the_sequence_tokens():
    class Seq:
        tokens: list

    tok = ByteTokenizer()
    m = StopMatcher(APPS, tok)
    s = Seq()
    s.tokens = []
    found = []
    for t in tok.encode("ab\nANSWER:x"):
        s.tokens.append(t)
        found.append(m.push(s, t))
    assert found.index(True) == len("ab\nANSWER:") - 1 and sum(found) == 1


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_candidates_never_drop_a_token_that_hits(name):
    """The engine only calls hit() for the rows candidates() marks (bytes mode) and for every row otherwise: on
    random completions, every prefix whose newest token makes hit() true is marked."""
    tok = TOKENIZERS[name]()
    rng = random.Random(3)
    specials = _specials(tok)
    for trial in range(120):
        m = StopMatcher(STOP_SETS[trial % len(STOP_SETS)], tok)
        ids = _random_ids(tok, rng, specials)
        marks = m.candidates(np.array(ids))
        if m.mode != "bytes":
            assert marks is None
            continue
        assert marks.shape == (len(ids),) and marks.dtype == bool
        for n in range(1, len(ids) + 1):
            if m.hit(ids[:n]):
                assert marks[n - 1], (ids[:n], m.stops)
    assert StopMatcher((), tok).candidates(np.array([1, 2])).tolist() == [False, False]
