"""What each token id adds to decoded text: a table built once from a tokenizer, and a decode emulated from it.

Incremental stop matching (`prompt_tree.stops`) must see exactly the text `tokenizer.decode(ids)` gives (special
tokens skipped) without decoding again each step. Two families of tokenizer.json decoders are understood:

- "bytes": the GPT-2 style ByteLevel decoder (Llama 3, Qwen2, GPT-2, StarCoder) and the byte tokenizer. Each id
  maps to a byte string; the text is the lossy UTF-8 decoding of their concatenation (an invalid or unfinished
  sequence becomes U+FFFD).
- "pieces": sentencepiece-style decoders, either `Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)]`
  (Llama 2, CodeLlama, Mistral) or `Metaspace`. An id is a text piece ("▁" read as a space) or, with
  ByteFallback, one byte ("<0xNN>"). A run of consecutive byte tokens decodes as a whole: its UTF-8 text when
  valid, else one U+FFFD per byte token (so a later byte can change the run's text). Strip drops one leading
  space of the whole text; Metaspace drops every "▁" of the first token.

`token_table(tokenizer)` returns a `TokenTable` only when its emulated decode equals `tokenizer.decode` on a
verification sample (random ids, special ids, multi-byte text, broken byte runs); otherwise None, and the caller
decodes windows with the tokenizer itself.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .tokenizer import ByteTokenizer, HFTokenizer

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
VERIFY_TEXTS = ("def f(x):\n    return x * 2  # café 日本語 🙂\n\n\nQUESTION:\nANSWER:\n", "  leading spaces",
                "ü→中文✓ 👩‍💻 x", "\n", " ", "a  b\t\tc")


def gpt2_byte_chars() -> dict[str, int]:
    """The GPT-2 byte-level alphabet, char -> byte: printable bytes stand for themselves, the other 68 are shifted
    to code points 256 + n in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


@dataclass
class TokenTable:
    """Per-id decode pieces. kind "bytes": piece_bytes[id]; kind "pieces": piece_text[id] (a str) or byte_of[id]
    (0..255 for a byte-fallback token, else -1). skip[id]: the id decodes to nothing (special, or unknown).
    strip: None, "fused" (drop one leading space of the whole text) or "first" (drop "▁"s of the first token)."""

    kind: str
    skip: np.ndarray  # [N] bool
    piece_bytes: list  # kind "bytes": [N] bytes
    piece_text: list  # kind "pieces": [N] str
    first_text: list  # kind "pieces" with strip "first": the first token's text
    byte_of: np.ndarray  # [N] int16
    strip: str | None

    @property
    def size(self) -> int:
        return len(self.skip)

    def decode(self, ids: Sequence[int], at_start: bool = True) -> str:
        """The text of ids, emulating the tokenizer. at_start: ids begin the text (the strip rules apply)."""
        n = self.size
        ids = [i for i in ids if 0 <= i < n and not self.skip[i]]
        if self.kind == "bytes":
            return b"".join(self.piece_bytes[i] for i in ids).decode("utf-8", "replace")
        out, run = [], bytearray()
        for j, i in enumerate(ids):
            b = self.byte_of[i]
            if b >= 0:
                run.append(int(b))
                continue
            if run:
                out.append(_run_text(run))
                run = bytearray()
            out.append(self.first_text[i] if (j == 0 and at_start and self.strip == "first") else self.piece_text[i])
        if run:
            out.append(_run_text(run))
        text = "".join(out)
        if at_start and self.strip == "fused" and text.startswith(" "):
            text = text[1:]
        return text


def _run_text(run: bytearray) -> str:
    """A run of byte-fallback tokens: its text when valid UTF-8, else one U+FFFD per byte (as ByteFallback does)."""
    try:
        return run.decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd" * len(run)


def token_table(tokenizer, verify: int = 400, seed: int = 0) -> TokenTable | None:
    """The table of `tokenizer` (ByteTokenizer or HFTokenizer), or None when its decoder is not understood or the
    emulated decode differs from tokenizer.decode on `verify` random id sequences or the verification texts."""
    table = _build(tokenizer)
    if table is None:
        return None
    rng = random.Random(seed)
    n = table.size
    specials = [i for i in range(n) if table.skip[i]][:64]
    bytes_ids = [i for i in range(n) if table.byte_of[i] >= 0]
    samples = [tokenizer.encode(t) for t in VERIFY_TEXTS]
    for _ in range(verify):
        length = rng.randrange(1, 12)
        pool = rng.choice((None, specials, bytes_ids))
        samples.append([rng.choice(pool) if pool and rng.random() < 0.5 else rng.randrange(n) for _ in range(length)])
    for ids in samples:
        if table.decode(ids) != tokenizer.decode(ids):
            return None
    return table


def _build(tokenizer) -> TokenTable | None:
    if isinstance(tokenizer, ByteTokenizer):
        n = tokenizer.vocab_size
        return TokenTable("bytes", np.array([i >= 256 for i in range(n)]), [bytes([i]) if i < 256 else b""
                                                                                for i in range(n)],
                          [], [], np.full(n, -1, np.int16), None)
    if not isinstance(tokenizer, HFTokenizer):
        return None
    backend = tokenizer.backend
    decoder = json.loads(backend.decoder.__getstate__()) if backend.decoder is not None else {}
    steps = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    kinds = [d.get("type") for d in steps]
    vocab = backend.get_vocab(with_added_tokens=True)
    n = max(vocab.values(), default=-1) + 1
    token = [None] * n
    for t, i in vocab.items():
        token[i] = t
    added = backend.get_added_tokens_decoder()  # id -> AddedToken
    skip = np.array([token[i] is None or (i in added and added[i].special) for i in range(n)])
    if kinds == ["ByteLevel"]:
        chars = gpt2_byte_chars()
        to_latin1 = str.maketrans({c: chr(b) for c, b in chars.items()})
        pieces = []
        for i in range(n):
            if skip[i]:
                pieces.append(b"")
            elif i in added:  # added tokens' content may hold chars outside the byte alphabet: their UTF-8
                pieces.append(b"".join(bytes([chars[c]]) if c in chars else c.encode() for c in token[i]))
            else:  # vocabulary entries are spelled in the byte alphabet
                pieces.append(token[i].translate(to_latin1).encode("latin-1"))
        return TokenTable("bytes", skip, pieces, [], [], np.full(n, -1, np.int16), None)
    if kinds == ["Metaspace"]:
        rep = steps[0].get("replacement", "▁")
        strip = None if steps[0].get("prepend_scheme") == "never" else "first"
        text = ["" if skip[i] else token[i].replace(rep, " ") for i in range(n)]
        first = ["" if skip[i] else token[i].replace(rep, "") for i in range(n)]
        return TokenTable("pieces", skip, [], text, first, np.full(n, -1, np.int16), strip)
    if kinds[:3] == ["Replace", "ByteFallback", "Fuse"] and len(kinds) in (3, 4):
        rep = steps[0]
        if rep.get("pattern", {}).get("String") != "▁" or rep.get("content") != " ":
            return None
        strip = None
        if len(kinds) == 4:
            s = steps[3]
            if kinds[3] != "Strip" or s.get("content") != " " or s.get("stop", 0) != 0 or s.get("start") not in (0, 1):
                return None
            strip = "fused" if s.get("start") == 1 else None
        byte_of = np.full(n, -1, np.int16)
        for i in range(n):
            m = None if skip[i] else _BYTE_TOKEN.fullmatch(token[i])
            if m:
                byte_of[i] = int(m.group(1), 16)
        text = ["" if skip[i] else token[i].replace("▁", " ") for i in range(n)]
        return TokenTable("pieces", skip, [], text, text, byte_of, strip)
    return None
