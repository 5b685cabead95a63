"""The APPS checker: verdict codes, the lenient stdin comparison, call-based conventions, hostile candidates.
The verdict tests run in both sandboxes (warm, the default, and per-test): they must agree."""
import os
import random
import time
import uuid
from fractions import Fraction

import pytest

from prompt_tree.tasks.checker import CheckResult, check, check_many
from prompt_tree.tasks.compare import return_value_matches, stdout_matches
from prompt_tree.tasks.problem import Problem

ADD_STDIN = Problem("add", "sum two ints", inputs=["1 2\n", "3 4\n", "10 -10\n"], outputs=["3\n", "7", ["0"]])
ADD_CALL = Problem("addc", "sum", fn_name="add", inputs=[[1, 2], [3, 4], [0, 0]], outputs=[[3], 7, 0])
SOLVE = "a, b = map(int, input().split())\nprint(a + b)\n"
SANDBOXES = ["warm", "per-test"]


@pytest.fixture(params=SANDBOXES)
def sandbox(request):
    return request.param


# ---------------------------------------------------------------- comparison rules
@pytest.mark.parametrize("actual, expected, ok", [
    ("3\n", "3", True),
    ("  1 2 \n\n3\n", "1 2\n3\n", True),  # stripped lines, blank lines ignored
    ("1\n2\n", "1 2", True),  # tokens, as after APPS's split step
    ("1 2\n", ["1", "2"], True),  # expected as a list of lines
    ("0.3333333", "0.333333333", True),  # within 1e-6
    ("0.334", "0.333333333", False),
    ("1e6", "1000000.0000001", True),
    ("1000000", "1000001", False),  # integers: exact
    ("1000000000.0", "1000000006", False),  # an integer answer printed as a float: its exact value
    ("5e+17", "500000000500000000", False),
    ("500000000500000000.0", "500000000500000000", True),
    ("5.0", "5", True),
    ("5e0", "5", True),
    ("0.9999999999", "1", True),  # a real answer that happens to be whole: within 1e-6, absolutely
    ("0.00001", "0", False),
    ("1.000001" + "0" * 60 + "1", "1", False),  # just past 1e-6: the bounds are exact, nothing rounds
    ("1.000001", "1", True),
    ("1_0.0", "10", False),  # ASCII decimals only

    ("1000001", "1000000.5", True),  # a real answer: the tolerance, whichever token is the integer
    ("inf", "5", False),
    ("007", "7", False),
    ("YES", "yes", False),
    ("nan", "nan", True),  # identical strings
    ("nan", "0.5", False),
    ("1 2", "2 1", False),  # no set comparison (APPS would accept this)
    ("1 2 3", "1 2", False),
    ("", "", True),
    ("", "0", False),
])
def test_stdout_matches_table(actual, expected, ok):
    assert stdout_matches(actual, expected) is ok


def _slow_stdout_matches(actual: str, expected: str) -> bool:
    """Obviously-right restatement: line by line, then token by token; an integer answer as a string against an
    integer token, within 1e-6 against a decimal one, else |a-b| <= tol*max(1,|a|,|b|)."""
    got = [t for line in actual.splitlines() for t in line.strip().split()]
    want = [t for line in expected.splitlines() for t in line.strip().split()]
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        if a == b:
            continue
        if b.lstrip("+-").isdigit():  # an integer answer: an integer token must be the same string, a decimal
            if a.lstrip("+-").isdigit():  # one must lie within 1e-6 of it
                return False
            if not set(a) <= set("+-.eE0123456789"):
                return False
            try:
                if abs(Fraction(a) - int(b)) > Fraction(1, 10**6):
                    return False
            except ValueError:
                return False
            continue
        try:
            x, y = float(a), float(b)
        except ValueError:
            return False
        if not abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y)):
            return False
    return True


@pytest.mark.parametrize("sandbox_kind", ["warm", "per-test"])
def test_exit_and_quit_work_as_in_python(sandbox_kind):
    """`print(ans); exit()` is an idiom of competitive programs: the sandboxes run python -S (no site module,
    which makes exit and quit), and it was a NameError (-1); the official harness passes it."""
    p = Problem("x", "q", inputs=["5\n", "6\n"], outputs=["5", "6"])
    for code in ("print(input())\nexit()\nprint('after')", "print(input())\nquit(0)"):
        assert check(p, code, timeout=5, sandbox=sandbox_kind).results == [True, True]
    assert check(p, "print(input())\nexit(3)", timeout=5, sandbox=sandbox_kind).results == [-1, -1]


def test_stdout_matches_against_reference_on_random_outputs():
    rng = random.Random(0)
    tokens = ["0", "1", "-1", "12", "12.0", "12.0000001", "12.001", "0.5", "5e-1", "abc", "ABC", "1e-7", "0.0",
              "1.2e1", "-0", "1000000006", "1000000000.0", "1e9", "0.9999999999", "12.0000000001"]
    seps = [" ", "\n", "  ", "\t", " \n "]
    for _ in range(3000):
        def text():
            return "".join(rng.choice(tokens) + rng.choice(seps) for _ in range(rng.randint(0, 4)))
        a, b = text(), text()
        assert stdout_matches(a, b) == _slow_stdout_matches(a, b), (a, b)


def test_return_value_matches_apps_conventions():
    assert return_value_matches([1, 2], [1, 2])
    assert return_value_matches((1, (2, 3)), [1, [2, 3]])  # tuples as lists, recursively
    assert return_value_matches(7, [7])  # wrapped in a one-element list
    assert return_value_matches([1, 2], [[1, 2]])
    assert not return_value_matches(7, [7, 7])
    assert not return_value_matches([7], 7)
    assert not return_value_matches(0.1 + 0.2, 0.3)  # exact, as in APPS
    assert return_value_matches({"a": (1,)}, {"a": [1]})


# ---------------------------------------------------------------- standard-input problems
def test_stdin_correct_wrong_runtime_compile(sandbox):
    r = check(ADD_STDIN, SOLVE, timeout=5, sandbox=sandbox)
    assert isinstance(r, CheckResult) and r.results == [True, True, True] and r.passed
    assert r.first_error is None and r.fraction_passed == 1.0
    r = check(ADD_STDIN, "print(3)", timeout=5, sandbox=sandbox)
    assert r.results == [True, False, False] and not r.passed and r.first_error.startswith("wrong answer")
    r = check(ADD_STDIN, "a, b = map(int, input().split())\nprint(a // (b - 2))", timeout=5, sandbox=sandbox)
    assert r.results == [-1, False, False] and "ZeroDivisionError" in r.details[0]
    r = check(ADD_STDIN, "print(1 +)", timeout=5, sandbox=sandbox)
    assert r.results == [-2, -2, -2] and r.compile_error and "SyntaxError" in r.first_error


def test_stdin_timeout_and_nonzero_exit(sandbox):
    code = "a, b = map(int, input().split())\nif a == 3:\n    while True: pass\nprint(a + b)"
    t0 = time.monotonic()
    r = check(ADD_STDIN, code, timeout=1, sandbox=sandbox)
    assert r.results == [True, -1, True] and r.details[1] == "timeout" and time.monotonic() - t0 < 6
    r = check(ADD_STDIN, SOLVE + "import sys\nsys.exit(2)", timeout=5, sandbox=sandbox)
    assert r.results == [-1, -1, -1] and "exit 2" in r.details[0]


def test_stdin_list_inputs_and_float_answers(sandbox):
    p = Problem("avg", "mean", inputs=[["2", "1 2"], "3\n1 1 2\n"], outputs=["1.5", "1.33333333333"])
    r = check(p, "input()\nxs = list(map(int, input().split()))\nprint(sum(xs) / len(xs))", timeout=5, sandbox=sandbox)
    assert r.results == [True, True]


def test_compile_error_on_null_bytes_and_no_tests():
    assert check(ADD_STDIN, "print(1)\x00", timeout=5).results == [-2] * 3
    with pytest.raises(ValueError, match="needs >= 1 test"):
        check(Problem("e", "q"), "print(1)")
    with pytest.raises(TypeError, match="Problem"):
        check({"inputs": []}, "print(1)")


# ---------------------------------------------------------------- call-based problems
def test_call_based_function_and_solution_class(sandbox):
    assert check(ADD_CALL, "def add(a, b):\n    return a + b", timeout=5, sandbox=sandbox).results == [True] * 3
    cls = "class Solution:\n    def add(self, a, b):\n        return a + b\n"
    assert check(ADD_CALL, cls, timeout=5, sandbox=sandbox).results == [True] * 3
    r = check(ADD_CALL, "def add(a, b):\n    print('noise')\n    return (a + b,) if a == 1 else a - b", timeout=5, sandbox=sandbox)
    assert r.results == [True, False, True]  # (3,) == [3]; prints do not disturb the result channel


def test_call_based_per_test_errors_are_isolated(sandbox):
    code = ("state = []\n"
            "def add(a, b):\n"
            "    state.append(a)\n"
            "    if a == 3:\n        x = pow(7, 10**9)\n"  # inside a C call: killed by the driver
            "    if a == 0:\n        raise KeyError('boom')\n"
            "    return a + b + len(state) - 1\n")  # fresh module state per test: len(state) == 1
    t0 = time.monotonic()
    r = check(ADD_CALL, code, timeout=1, sandbox=sandbox)
    assert r.results == [True, -1, -1] and r.details[1] == "timeout" and "KeyError" in r.details[2]
    assert time.monotonic() - t0 < 6


def test_call_based_module_errors(sandbox):
    assert check(ADD_CALL, "def other(): pass", timeout=5, sandbox=sandbox).results == [-2] * 3  # fn_name missing (APPS: -2)
    assert check(ADD_CALL, "raise RuntimeError('at import')", timeout=5, sandbox=sandbox).results == [-2] * 3
    r = check(ADD_CALL, "while True: pass\ndef add(a, b): return a + b", timeout=1, sandbox=sandbox)
    assert r.results == [-1] * 3 and "module body" in r.details[0]
    r = check(ADD_CALL, "def add(a, b):\n    return {a, b}", timeout=5, sandbox=sandbox)
    assert r.results == [False] * 3 and "set" in r.details[0]
    r = check(ADD_CALL, "import os\ndef add(a, b):\n    os._exit(0)", timeout=5, sandbox=sandbox)
    assert r.results == [-1] * 3


def test_call_based_cannot_see_expected_outputs(sandbox):
    secret = f"secret_{uuid.uuid4().hex}"
    p = Problem("s", "q", fn_name="f", inputs=[[1]], outputs=[secret])
    code = ("import os\ndef f(x):\n    found = []\n"
            "    for name in os.listdir('.'):\n"
            "        found.append(open(name, errors='replace').read())\n"
            "    return '|'.join(found)\n")
    r = check(p, code, timeout=5, sandbox=sandbox)
    got = r.details[0].split("expected")[0]
    assert r.results == [False] and "got" in got and secret not in got


# ---------------------------------------------------------------- many pairs, hostile candidates
def test_check_many_matches_check_and_keeps_order():
    pairs = [(ADD_STDIN, SOLVE), (ADD_CALL, "def add(a, b): return a + b"), (ADD_STDIN, "print("),
             (ADD_CALL, "def add(a, b): return 0")]
    many = check_many(pairs, workers=2, timeout=5)
    assert [m.results for m in many] == [check(p, c, timeout=5).results for p, c in pairs]


@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "x = []\nwhile True: x.append(bytearray(10**7))",
    "while True: print('y' * 1000)",
    "import os, time\nos.close(1)\ntime.sleep(100)",
    "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: pass",
])
def test_hostile_stdin_candidates_fail(code, sandbox):
    from prompt_tree.tasks import execution
    if "fork" in code and sandbox == "per-test" and execution.sandbox_mode() == "fallback" \
            and not execution.fallback_limits_processes():
        pytest.skip("fallback as root without a private uid: RLIMIT_NPROC cannot apply")
    p = Problem("h", "q", inputs=["1 2\n"], outputs=["3"])
    t0 = time.monotonic()
    r = check(p, code, timeout=1, memory_mb=256, sandbox=sandbox)
    assert not r.passed and r.results[0] in (False, -1) and time.monotonic() - t0 < 8


def test_hostile_call_based_write_outside():
    # warm: /tmp is the sandbox's own tmpfs (the write succeeds there, the host's /tmp never sees it);
    # per-test in namespace mode: the host's filesystem, read-only
    target = f"/tmp/pt_escape_{uuid.uuid4().hex}"
    code = f"def add(a, b):\n    open({target!r}, 'w').write('x')\n    return a + b"
    try:
        from prompt_tree.tasks.sandbox.detect import resolve_isolation
        from prompt_tree.tasks.sandbox.config import SandboxConfig
        r = check(ADD_CALL, code, timeout=5)
        if resolve_isolation(SandboxConfig()) != "fallback":
            assert r.results == [True] * 3 and not os.path.exists(target)
        from prompt_tree.tasks.execution import sandbox_mode
        if sandbox_mode() == "namespace":
            r = check(ADD_CALL, code, timeout=5, sandbox="per-test")
            assert r.results == [-1] * 3 and "Read-only" in r.details[0]
            assert not os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)
