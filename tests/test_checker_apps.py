"""APPS parity: the official preamble, numpy return values by value, int keys for JSON dicts, --fail-fast; the
streaming stdout comparison equals the whole-output one. Both sandboxes must give the same verdicts."""
import random

import pytest

from prompt_tree.tasks.checker import check
from prompt_tree.tasks.compare import TokenStream, call_arguments, expected_value, int_keys, stdout_matches
from prompt_tree.tasks.problem import Problem
from prompt_tree.tasks.sandbox.preamble import may_use_numpy, preamble_namespace, preamble_source


@pytest.fixture(params=["warm", "per-test"])
def sandbox(request):
    return request.param


# ---------------------------------------------------------------- the preamble
def test_preamble_names_are_the_official_ones():
    names = preamble_namespace(with_numpy=True)
    for name in ("sys", "time", "itertools", "accumulate", "product", "permutations", "combinations",
                 "collections", "Counter", "OrderedDict", "deque", "defaultdict", "ChainMap", "lru_cache", "math",
                 "sqrt", "sin", "cos", "tan", "ceil", "fabs", "floor", "gcd", "exp", "log", "log2", "fractions",
                 "List", "Tuple", "random", "heapq", "heappush", "heappop", "heapify", "heapreplace",
                 "heappushpop", "merge", "nlargest", "nsmallest", "np"):
        assert name in names, name
    assert names["np"].__name__ == "numpy" and names["log2"](8) == 3
    scratch: dict = {}
    exec(preamble_source(with_numpy=True), scratch)  # the per-test launcher's text defines the same names
    assert set(names) <= set(scratch)
    assert may_use_numpy("x = np.array([1])") and may_use_numpy("import numpy")
    assert not may_use_numpy("snp = npx = 1  # no such names")


def test_starter_code_uses_preamble_names(sandbox):
    p = Problem("s", "q", fn_name="maxSub", inputs=[[[1, -2, 3]], [[-1]]], outputs=[3, -1])
    code = ("class Solution:\n    def maxSub(self, nums: List[int]) -> int:\n"
            "        best = cur = nums[0]\n        for x in nums[1:]:\n"
            "            cur = max(x, cur + x)\n            best = max(best, cur)\n        return best\n")
    assert check(p, code, timeout=5, sandbox=sandbox).results == [True, True]
    r = check(p, code, timeout=5, sandbox=sandbox, preamble=False)
    assert r.results == [-2, -2] and "NameError" in r.details[0]  # List undefined: the module body fails


def test_stdin_program_uses_preamble_and_future_import(sandbox):
    p = Problem("f", "q", inputs=["3\n1 2 3\n", "2\n5 5\n"], outputs=["6 [3, 2, 1]", "10 [5, 5]"])
    code = ("from __future__ import annotations\n"
            "def main() -> None:\n    n = int(input())\n    xs: List[int] = list(map(int, input().split()))\n"
            "    h = [-x for x in xs]\n    heapify(h)\n    print(sum(xs), [-heappop(h) for _ in range(n)])\n"
            "main()\n")
    assert check(p, code, timeout=5, sandbox=sandbox).results == [True, True]
    assert check(p, code, timeout=5, sandbox=sandbox, preamble=False).results == [-1, -1]


def test_numpy_preamble_and_numpy_return_values(sandbox):
    p = Problem("n", "q", fn_name="f", inputs=[[[1, 2, 3]], [[4]]], outputs=[[[2, 4, 6], 6, 2.0, True],
                                                                          [[8], 4, 4.0, True]])
    code = ("def f(xs):\n    a = np.array(xs)\n"
            "    return [a * 2, a.sum(), np.float64(a.mean()), np.bool_(a.size > 0)]\n")
    assert check(p, code, timeout=5, sandbox=sandbox).results == [True, True]
    wrong = "def f(xs):\n    return [np.array(xs) * 3, 0, 0.0, False]\n"
    r = check(p, wrong, timeout=5, sandbox=sandbox)
    assert r.results == [False, False] and r.details[0].startswith("wrong answer: got [[3, 6, 9]")


def test_digit_string_keys_become_ints(sandbox):
    # JSON turned {1: 'a'} into {"1": "a"}; the official harness undoes that for arguments and outputs
    p = Problem("d", "q", fn_name="f", inputs=[[{"1": "a", "2": "b"}], [{"10": "x"}]],
                outputs=[{"2": "b", "1": "a"}, [{"10": "x"}]])
    code = ("def f(d):\n    assert all(isinstance(k, int) for k in d), d\n    return dict(sorted(d.items()))\n")
    assert check(p, code, timeout=5, sandbox=sandbox).results == [True, True]
    # keys that are not all ints stay strings
    q = Problem("e", "q", fn_name="f", inputs=[[{"a": 1, "2": 2}]], outputs=[{"a": 1, "2": 2}])
    assert check(q, "def f(d):\n    return d\n", timeout=5, sandbox=sandbox).results == [True]


def test_int_key_rules_match_the_official_conversions():
    assert int_keys({"1": "a", "-2": "b"}) == {1: "a", -2: "b"}
    assert int_keys({"1": 0, "x": 1}) == {"1": 0, "x": 1}
    assert int_keys([1]) == [1]
    assert call_arguments([{"3": 1}, 5, {"k": 2}]) == [{3: 1}, 5, {"k": 2}]
    assert call_arguments(7) == [7]
    assert expected_value({"1": 2}) == [{1: 2}]  # wrapped, so that both d and [d] match, as in APPS
    assert expected_value({"a": 2}) == {"a": 2}
    assert expected_value([{"1": 2}, 3]) == [{1: 2}, 3]
    assert expected_value([1, 2]) == [1, 2]


# ---------------------------------------------------------------- fail-fast
def test_fail_fast_stops_at_the_first_failure(sandbox):
    p = Problem("ff", "q", inputs=["1\n", "2\n", "3\n", "4\n"], outputs=["1", "2", "0", "4"])
    code = "print(int(input()))"
    full = check(p, code, timeout=5, sandbox=sandbox)
    fast = check(p, code, timeout=5, sandbox=sandbox, fail_fast=True)
    assert full.results == [True, True, False, True] and not full.partial
    assert fast.results == [True, True, False] and fast.partial and not fast.passed
    assert fast.num_tests == 4 and fast.fraction_passed == 0.5
    ok = check(p, "print([1, 2, 0, 4][int(input()) - 1])", timeout=5, sandbox=sandbox, fail_fast=True)
    assert ok.results == [True] * 4 and ok.passed and not ok.partial
    assert check(p, "print(", timeout=5, sandbox=sandbox, fail_fast=True).results == [-2]


def test_fail_fast_call_based(sandbox):
    p = Problem("fc", "q", fn_name="f", inputs=[[1], [2], [3]], outputs=[1, 0, 3])
    r = check(p, "def f(x):\n    return x\n", timeout=5, sandbox=sandbox, fail_fast=True)
    assert r.results == [True, False] and r.partial


# ---------------------------------------------------------------- streaming comparison
def test_token_stream_equals_whole_output_comparison_on_random_chunkings():
    rng = random.Random(0)
    tokens = ["0", "1", "-1", "12", "12.0", "12.0000001", "0.5", "5e-1", "abc", "é", "\u00a0", "ab\u2003c", "1e-7"]
    seps = [" ", "\n", "  ", "\t", " \n ", "\r\n", "\x0b", "\u3000"]
    for _ in range(2000):
        def text():
            return "".join(rng.choice(tokens) + rng.choice(seps) for _ in range(rng.randint(0, 5)))
        actual, expected = text(), text()
        data = actual.encode()
        if rng.random() < 0.2:
            data += bytes([0xff, 0xc3])  # invalid UTF-8, decoded with replacement characters as a whole
        stream = TokenStream(expected)
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 4)
            stream.feed(data[pos:pos + step])
            pos += step
        assert stream.matches() == stdout_matches(data.decode("utf-8", errors="replace"), expected), (actual, expected)


def test_a_token_past_the_limit_never_agrees_and_is_not_carried():
    """token_limit: an output token longer than max(4096, 2 x the longest expected one) never agrees, in both
    forms of the rule; the stream stops carrying it at once (a 16 MiB token without a space was copied chunk by
    chunk, 3.6 s of host CPU a test)."""
    from prompt_tree.tasks.compare import token_limit

    assert token_limit(["5"]) == 4096 and token_limit(["x" * 3000]) == 6000
    at, past = "5." + "0" * 4094, "5." + "0" * 4095  # 4096 and 4097 characters, both exactly 5
    for output, expected, ok in ((at + "\n", "5", True), (past + "\n", "5", False), ("1 " + at, "1 5", True),
                                 ("1 " + past, "1 5", False)):
        rng = random.Random(len(output))
        for _ in range(5):
            stream, data, pos = TokenStream(expected), output.encode(), 0
            while pos < len(data):
                step = rng.randint(1, 3000)
                stream.feed(data[pos:pos + step])
                pos += step
            assert stream.matches() == stdout_matches(output, expected) == ok, (len(output), expected)
    stream = TokenStream("5")
    for _ in range(256):
        stream.feed(b"7" * 65536)  # 16 MiB without whitespace
        assert len(stream._carry) <= 4096
    assert not stream.matches()
