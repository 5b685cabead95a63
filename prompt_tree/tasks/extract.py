"""Turn a sampled completion into the program that is run against the tests.

Rules, in order (each one a decision, kept explainable):
1. Echoed prompt: when `prompt` is given and the completion starts with it, it is removed; without `prompt`, a
   completion that begins with "QUESTION:" is taken to repeat a zero-shot prompt, and the text after its first
   "ANSWER:" line is kept (bigcode-evaluation-harness does the same split). A few-shot prompt echoed back can
   only be removed exactly, by passing `prompt`.
2. Cut at the first stop sequence (the same list the sampler stops on, so sampled text is already cut; text
   from elsewhere is treated alike).
3. Fenced code: if a ``` fence opens, keep the FIRST block tagged python / py / python3, else the first
   untagged block; blocks in other languages (``` text, ``` bash) are example output, not the program. The
   first block is preferred over the longest because models put the solution first and tests or usage after.
   A fence left open (the sample hit its token limit) runs to the end of the text. If every block is in
   another language, the text before the first fence is kept.
4. Leading blank lines and trailing whitespace are dropped and common indentation removed, so code indented
   as a whole still compiles at top level.

A chat answer (`prompt-tree apps --chat`) is one assistant turn that ends at the model's end-of-turn token: there
is no prompt to echo and no next question to stop at, so only rules 3 and 4 apply (`extract_answer_code`).
"""
from __future__ import annotations

import re
import textwrap
from typing import Sequence

# Stop sequences for APPS sampling: the start of another question or answer block, or a long blank run.
DEFAULT_STOPS: tuple[str, ...] = ("\nQUESTION:", "\nANSWER:", "\n\n\n\n")
# Chat answers end with their turn (an EOS id of the checkpoint), and their code may hold any blank lines.
CHAT_STOPS: tuple[str, ...] = ()

_PYTHON_TAGS = {"python", "py", "python3"}
# an opening fence at the start of a line: ``` plus an optional language tag, then the end of that line
_FENCE_OPEN = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n", re.MULTILINE)
_FENCE_CLOSE = re.compile(r"^[ \t]*```[ \t]*$", re.MULTILINE)
_ANSWER_LINE = re.compile(r"ANSWER:[ \t]*\n?")


def strip_echo(completion: str, prompt: str | None = None) -> str:
    """Remove a repeated prompt (rule 1)."""
    if prompt and completion.startswith(prompt):
        return completion[len(prompt):]
    if completion.lstrip().startswith("QUESTION:"):
        match = _ANSWER_LINE.search(completion)
        if match:
            return completion[match.end():]
    return completion


def cut_at_stops(text: str, stop: Sequence[str] = DEFAULT_STOPS) -> str:
    """Text before the earliest occurrence of any stop sequence (rule 2)."""
    end = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1 and i < end:
                end = i
    return text[:end]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """All ``` blocks as (language tag lower-cased, body); an unclosed last block runs to the end."""
    blocks = []
    pos = 0
    while True:
        opening = _FENCE_OPEN.search(text, pos)
        if opening is None:
            return blocks
        closing = _FENCE_CLOSE.search(text, opening.end())
        body_end = closing.start() if closing else len(text)
        blocks.append((opening.group(1).lower(), text[opening.end():body_end]))
        if closing is None:
            return blocks
        pos = closing.end()


def _pick_block(blocks: list[tuple[str, str]]) -> str | None:
    for tag, body in blocks:
        if tag in _PYTHON_TAGS:
            return body
    for tag, body in blocks:
        if tag == "":
            return body
    return None


def _tidy(code: str) -> str:
    lines = code.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    return textwrap.dedent("\n".join(lines)).rstrip()


def _program(text: str) -> str:
    """Rules 3 and 4: the chosen fenced block (or the text), tidied."""
    blocks = fenced_blocks(text)
    block = _pick_block(blocks)
    if block is None and blocks:
        block = text[: _FENCE_OPEN.search(text).start()]
    return _tidy(block if block is not None else text)


def extract_code(completion: str, stop: Sequence[str] = DEFAULT_STOPS, prompt: str | None = None) -> str:
    """The program in `completion` (see the module docstring for the rules); "" if there is none."""
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, got {type(completion).__name__}")
    return _program(cut_at_stops(strip_echo(completion, prompt), stop))


def extract_answer_code(answer: str) -> str:
    """The program in a chat answer: its first python (else untagged) fenced block, else the whole answer."""
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}")
    return _program(answer)
