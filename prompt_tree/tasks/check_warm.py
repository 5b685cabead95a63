"""Judge one program in the warm sandbox (prompt_tree.tasks.sandbox.host.WarmSandbox): one sealed sandbox for the program,
one fork per test, outputs compared here as they stream in.

Only the test's input goes in; its expected output stays in this process. A test's stdout is fed to a
TokenStream while the program runs, so no output is kept beyond a short head for the detail message. With
fail_fast the first test that does not pass ends the program's checks (its later tests are not run).
"""
from __future__ import annotations

import json

from prompt_tree.tasks.compare import TokenStream, call_arguments, expected_text, expected_value, return_value_matches
from prompt_tree.tasks.problem import Problem
from prompt_tree.tasks.sandbox import wire
from prompt_tree.tasks.sandbox.config import SandboxConfig
from prompt_tree.tasks.sandbox.host import TestRun, WarmSandbox
from prompt_tree.tasks.verdicts import ProcessEnd, call_status_of, call_verdict, short, stdin_verdict

MIN_OUTPUT_CAP = 16 << 20
# A call-based result is parsed here, so its size is the host's to choose: a value equal to the expected one
# encodes to about the expected's size (True for 1 or 1.0 for 1 at most triple an element), so four times that
# plus 64 KiB refuses no right answer. A 64 MiB result of nested empty lists once took 34 s and 3 GiB of this
# process per test, holding the GIL while other programs' tests timed out.
RESULT_SLACK_BYTES = 64 << 10


def result_cap(expected) -> int:
    """Bytes a call-based result may have for this expected value (see RESULT_SLACK_BYTES)."""
    try:
        size = len(json.dumps(wire.encode_value(expected)))
    except (wire.Unencodable, ValueError, RecursionError):
        size = 0
    return 4 * size + RESULT_SLACK_BYTES


def stdin_bytes(test_input) -> bytes:
    """A standard-input test's stdin: APPS gives a string or a list of lines (joined with newlines)."""
    if isinstance(test_input, list):
        return ("\n".join(str(x) for x in test_input) + "\n").encode()
    if not isinstance(test_input, str):
        raise TypeError(f"input of a standard-input test must be a str or list of lines, "
                        f"got {type(test_input).__name__}")
    return test_input.encode()


def check_warm(problem: Problem, code: str, timeout: float, config: SandboxConfig, isolation: str, *,
               preamble: bool, fail_fast: bool) -> tuple[list, list[str]]:
    """(verdicts, details) of `code` on `problem` (see prompt_tree.tasks.checker for the verdict codes)."""
    n = problem.num_tests
    kind = "call" if problem.call_based else "stdin"
    with WarmSandbox(code, kind, problem.fn_name, timeout, isolation=isolation, config=config,
                     preamble=preamble) as box:
        started = box.start()
        if started.compile_error is not None:
            return [-2] * n, [short("compile error: " + started.compile_error)] * n
        if started.import_error is not None:
            return [-2] * n, [short("compile error: " + started.import_error)] * n
        if started.import_timeout:
            return [-1] * n, ["timeout (module body)"] * n
        if not started.ok:
            return [-1] * n, [short(f"sandbox broken at start: {started.broken}")] * n
        results, details = [], []
        for i in range(n):
            if kind == "stdin":
                verdict, detail = _stdin_test(box, problem, i, timeout, config)
            else:
                verdict, detail = _call_test(box, problem, i, timeout)
            results.append(verdict)
            details.append(detail)
            if box.broken:  # the program broke its sandbox: the rest cannot run
                rest = n - len(results)
                if not fail_fast:
                    results += [-1] * rest
                    details += [short(f"not run: the sandbox broke ({box.broken})")] * rest
                break
            if fail_fast and verdict is not True:
                break
    return results, details


def _broken_verdict(run: TestRun) -> tuple:
    return -1, short(f"sandbox broken: {run.broken}")


def _stdin_test(box: WarmSandbox, problem: Problem, i: int, timeout: float, config: SandboxConfig):
    want = expected_text(problem.outputs[i])
    stream = TokenStream(want)
    cap = max(MIN_OUTPUT_CAP, config.max_output_bytes, 2 * len(want.encode()) + 1024)
    run = box.run_stdin(i, stdin_bytes(problem.inputs[i]), timeout, stream.feed, cap)
    if run.broken:
        return _broken_verdict(run)
    end = ProcessEnd(run.exit_code, run.signal, run.timed_out, run.stderr_tail)
    over_cap = run.stdout_over_cap or run.stderr_over_cap
    matched = stream.matches() if not over_cap else False
    return stdin_verdict(end, over_cap, matched, run.stdout_head.decode("utf-8", errors="replace"), want)


def _call_test(box: WarmSandbox, problem: Problem, i: int, timeout: float):
    args = wire.encode_value(call_arguments(problem.inputs[i]))
    expected = expected_value(problem.outputs[i])
    run = box.call(i, args, timeout, result_cap=result_cap(expected))
    if run.broken:
        return _broken_verdict(run)
    end = ProcessEnd(run.exit_code, run.signal, run.timed_out)
    if run.stdout_over_cap:
        return False, "wrong answer: return value over the size cap"
    result = None
    if run.result:
        try:
            parsed = json.loads(run.result.decode("utf-8"))
            if isinstance(parsed, dict):
                if "value" in parsed:
                    parsed["value"] = wire.decode_value(parsed["value"])
                result = parsed
        except (UnicodeDecodeError, ValueError, RecursionError, wire.ProtocolError):
            result = {"status": "error", "error": "malformed result"}
    status, value, error = call_status_of(end, result)
    return call_verdict(status, value, error, expected, return_value_matches)
