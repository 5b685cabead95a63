"""How an APPS test's answer is judged: the stdout comparison, the call-based value comparison, and the
official harness's argument and output conversions. Pure functions, host side only (expected outputs never
enter the sandbox).

Standard input (`stdout_matches`, and `TokenStream`, the same rule fed chunk by chunk as output arrives):
whitespace-separated tokens must agree one to one (line breaks and blank lines do not matter, as after the
official strip/split steps); two tokens agree if equal as strings; else, where the expected token is an integer
literal, if the output token is not one but an ASCII decimal number within 1e-6 of it, absolutely ("5.0",
"5e0" and "0.9999999999" for "5" and "1": a real-valued answer that happens to be whole; not "1000000000.0" for
"1000000006", nor "05" for "5"); else if both parse as floats within 1e-6 absolute-or-relative
(|a-b| <= 1e-6*max(1, |a|, |b|), the tolerance most Codeforces / AtCoder statements set). Integer answers
compare exactly or within that absolute 1e-6: the official np.allclose would accept 1000000 for 1000001, which
no problem means, and a relative tolerance on a float printout of an integer answer let 1e9 pass for
1000000006. The official checker also accepts outputs whose lines hold the same tokens in another order (a set
comparison); this one does not, as that accepts wrong answers. An output token longer than max(4096, twice the
longest expected token) never agrees (`token_limit`): no answer needs one, and the streaming form would
otherwise carry it from chunk to chunk, copying it each time (16 MiB without a space cost 3.6 s of host CPU a
test).

Call-based (`return_value_matches`): equal after tuples become lists (at any depth), or, when the expected
output is a one-element list, equal to its only element (APPS wraps outputs that way). Numpy values arrive
as Python values (prompt_tree.tasks.sandbox.wire), so they compare by value. Dict arguments and expected dicts whose keys
all parse as ints get int keys (`int_keys`), undoing what JSON did to them, as the official harness does.
"""
from __future__ import annotations

import codecs
import decimal
import math
import re
from typing import Any

FLOAT_TOLERANCE = 1e-6  # absolute-or-relative, see the module docstring
_INT_RE = re.compile(r"[+-]?\d+\Z")
# ASCII decimals ("1_0" and "٥" are not); linear: "[0-9]+\.?[0-9]*" backtracked quadratically on a long run of
# digits with a bad last character (31.8 s of the host's GIL for one 40,000-character token)
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_INT_TOLERANCE = decimal.Decimal("1e-6")


def tokens_match(a: str, b: str) -> bool:
    """Whether output token `a` agrees with expected token `b` (the module docstring's rule)."""
    if a == b:
        return True
    if _INT_RE.match(b):  # an integer answer (no relative closeness for 1000000 vs 1000001)
        if _INT_RE.match(a) or not _DECIMAL_RE.match(a):
            return False
        # exact decimal bounds b -+ 1e-6 (no float: "1000000000.0" is 6 away from 1000000006, and an int() of
        # over 4300 digits would raise); enough digits that the bounds are exact, and comparisons never round
        ctx = decimal.Context(prec=len(b) + 10, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                              traps=[decimal.InvalidOperation])
        try:
            x, want = decimal.Decimal(a), decimal.Decimal(b)
            return ctx.subtract(want, _INT_TOLERANCE) <= x <= ctx.add(want, _INT_TOLERANCE)
        except decimal.DecimalException:
            return False
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    if math.isnan(x) or math.isnan(y):
        return False
    return math.isclose(x, y, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)


def token_limit(want: list[str]) -> int:
    """The longest output token that may agree with any of the expected tokens `want` (module docstring)."""
    return max([4096] + [2 * len(t) for t in want])


def expected_text(expected: Any) -> str:
    """APPS gives an expected stdout as a string or as a list of lines."""
    if isinstance(expected, list):
        return "\n".join(str(x) for x in expected)
    if not isinstance(expected, str):
        raise TypeError(f"expected output of a standard-input test must be a str or list of lines, "
                        f"got {type(expected).__name__}")
    return expected


def stdout_matches(actual: str, expected: Any) -> bool:
    """The stdout rule of the module docstring, on a whole output."""
    got, want = actual.split(), expected_text(expected).split()
    limit = token_limit(want)
    return len(got) == len(want) and all(len(a) <= limit and tokens_match(a, b) for a, b in zip(got, want))


class TokenStream:
    """`stdout_matches` fed incrementally: feed(bytes) as stdout arrives, then matches(). Decodes UTF-8 as
    bytes.decode(errors="replace") would on the whole output, and splits on the whitespace str.split() uses;
    a token cut by a chunk boundary waits for the rest. Memory: the expected tokens and one partial token of at
    most token_limit characters."""

    def __init__(self, expected: Any):
        self._want = expected_text(expected).split()
        self._limit = token_limit(self._want)
        self._pos = 0
        self._ok = True
        self._carry = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> None:
        self._take(self._decoder.decode(data), final=False)

    def _take(self, text: str, final: bool) -> None:
        if not self._ok:
            return  # a mismatch is final: the rest need not be read (the host still counts its bytes)
        text = self._carry + text
        self._carry = ""
        if not text:
            return
        tokens = text.split()
        if tokens and not final and not text[-1].isspace():
            self._carry = tokens.pop()  # may continue in the next chunk
            if len(self._carry) > self._limit:  # too long to agree already (token_limit): stop carrying it
                self._ok, self._carry = False, ""
                return
        for tok in tokens:
            if self._pos >= len(self._want) or len(tok) > self._limit or \
                    not tokens_match(tok, self._want[self._pos]):
                self._ok = False
                return
            self._pos += 1

    def matches(self) -> bool:
        """Call once, after the last feed."""
        self._take(self._decoder.decode(b"", final=True), final=True)
        return self._ok and self._pos == len(self._want)


def _listify(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_listify(v) for v in x]
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    return x


def return_value_matches(value: Any, expected: Any) -> bool:
    """The call-based rule of the module docstring."""
    value, expected = _listify(value), _listify(expected)
    if value == expected:
        return True
    return isinstance(expected, list) and len(expected) == 1 and value == expected[0]


def int_keys(value: Any) -> Any:
    """A dict whose keys all convert with int() gets int keys (the official harness's rule: int(k) for
    every key, the dict unchanged if any key fails); anything else is returned as it is."""
    if not isinstance(value, dict):
        return value
    try:
        return {int(k): v for k, v in value.items()}
    except (TypeError, ValueError):
        return value


def call_arguments(test_input: Any) -> list:
    """The positional arguments of a call-based test, dict arguments with int keys restored (every dict
    argument: the official harness converts only a first argument and then drops the others)."""
    args = list(test_input) if isinstance(test_input, (list, tuple)) else [test_input]
    return [int_keys(a) for a in args]


def expected_value(expected: Any) -> Any:
    """A call-based expected output with int keys restored, as the official harness does: an expected dict
    becomes a one-element list holding it (so both the dict and [dict] match); a list whose first element is a
    dict gets that element converted (the official harness then also drops the rest of the list; not here)."""
    if isinstance(expected, dict):
        converted = int_keys(expected)
        return [converted] if converted is not expected else expected
    if isinstance(expected, list) and expected and isinstance(expected[0], dict):
        converted = int_keys(expected[0])
        if converted is not expected[0]:
            return [converted] + expected[1:]
    return expected
