"""The warm sandbox (prompt_tree.tasks.sandbox): programs behave as under `python prog.py`, one fork per test; the
protocol's framing and value encoding; the in-sandbox directory wiper."""
import json
import os
import random
import signal
import sys
import time

import pytest

from sandbox_helpers import assert_zygote_idle, available, run_tests, sealed_modes
from prompt_tree.tasks.sandbox import wire
from prompt_tree.tasks.sandbox.config import SandboxConfig, SandboxConfigError, interpreter_paths, sandbox_view
from prompt_tree.tasks.sandbox.host import WarmSandbox
from prompt_tree.tasks.sandbox.wipe import empty_dir, remove_tree

MODES = sealed_modes() + ["fallback"]


@pytest.fixture(params=MODES)
def mode(request):
    why = available(request.param)
    if why:
        pytest.skip(f"{request.param} sandbox unavailable here: {why}")
    return request.param


# ---------------------------------------------------------------- normal programs
def test_stdin_program_runs_like_python(mode):
    src = ("import sys\ndata = sys.stdin.read()\nprint(data.upper(), end='')\nprint('note', file=sys.stderr)\n"
           "sys.exit(int(data.split()[0]))")
    started, runs = run_tests(src, [b"0 abc\n", b"3 def\n"], mode)
    assert started.ok
    (r0, out0), (r1, out1) = runs
    assert (out0, r0.exit_code, r0.stderr_tail, r0.timed_out) == (b"0 ABC\n", 0, "note\n", False)
    assert (out1, r1.exit_code) == (b"3 DEF\n", 3)
    assert_zygote_idle(mode)


def test_fresh_state_per_test_and_preamble(mode):
    # module state, files and the preamble's names: each test starts from the compiled program, nothing else
    src = ("import os\nseen = os.listdir('.')\nopen('mark', 'w').write('x')\n"
           "print(len(seen), List.__name__, Counter('aab')['a'], deque.__name__, gcd(12, 18), __name__)")
    started, runs = run_tests(src, [b"", b"", b""], mode)
    assert started.ok
    assert [out for _, out in runs] == [b"0 List 2 deque 6 __main__\n"] * 3


def test_future_import_stays_first_and_line_numbers_are_the_programs(mode):
    src = "from __future__ import annotations\nx: List[int] = []\n\n\ndef f():\n    return 1 / 0\nf()\n"
    started, runs = run_tests(src, [b""], mode)
    run, _ = runs[0]
    assert started.ok and run.exit_code == 1
    assert 'File "prog.py", line 6, in f' in run.stderr_tail and "ZeroDivisionError" in run.stderr_tail
    assert "runner.py" not in run.stderr_tail  # the traceback is the program's alone


def test_compile_error_reported_without_running(mode):
    started, runs = run_tests("print(1 +)", [b""], mode)
    assert not started.ok and "SyntaxError" in started.compile_error and runs == []


def test_exit_codes_threads_and_atexit(mode):
    src = ("import atexit, sys, threading, time\natexit.register(lambda: print('bye'))\n"
           "def work():\n    time.sleep(0.05)\n    print('thread')\n"
           "threading.Thread(target=work).start()\nprint('main')\nsys.exit('message')\n")
    started, runs = run_tests(src, [b""], mode)
    run, out = runs[0]
    assert out == b"main\nthread\nbye\n" and run.exit_code == 1 and "message" in run.stderr_tail


def test_large_input_and_output(mode):
    data = "".join(f"{i}\n" for i in range(200_000)).encode()  # ~1.3 MB each way: no pipe deadlock
    started, runs = run_tests("import sys\nsys.stdout.write(sys.stdin.read())", [data], mode, cap=1 << 22)
    run, out = runs[0]
    assert run.exit_code == 0 and out == data and run.stdout_bytes == len(data)


def test_output_cap_stops_the_test(mode):
    t0 = time.monotonic()
    started, runs = run_tests("while True: print('y' * 1000)", [b"", b""], mode, timeout=5.0, cap=100_000)
    for run, out in runs:
        assert run.stdout_over_cap and run.killed and len(out) == 100_000 and run.broken is None
    assert time.monotonic() - t0 < 4  # stopped at the cap, not at the 5 s limit


def test_call_based_new_solution_per_call(mode):
    src = ("calls = []\nclass Solution:\n    count = 0\n"
           "    def f(self, a, b):\n        Solution.count += 1\n        calls.append(a)\n"
           "        return (a + b, len(calls), Solution.count)\n")
    started, runs = run_tests(src, [wire.encode_value([1, 2]), wire.encode_value([3, 4])], mode, kind="call",
                              fn_name="f")
    assert started.ok
    values = [wire.decode_value(json.loads(run.result)["value"]) for run, _ in runs]
    assert values == [[3, 1, 1], [7, 1, 1]]  # no state from one call in the next


def test_call_based_values_keep_their_types(mode):
    src = ("import numpy as _np\ndef f(x):\n    return [{1: 'a', (2, 3): [4.5, None]}, _np.int64(7), "
           "_np.arange(3), True, 2 ** 20000, -(2 ** 15000)]\n")
    if available(mode) is None and "numpy" not in SandboxConfig().packages:
        pytest.skip("numpy not allowed")
    started, runs = run_tests(src, [wire.encode_value([0])], mode, kind="call", fn_name="f")
    value = wire.decode_value(json.loads(runs[0][0].result)["value"])
    assert value == [{1: "a", (2, 3): [4.5, None]}, 7, [0, 1, 2], True, 2 ** 20000, -(2 ** 15000)]
    assert type(value[1]) is int and value[3] is True


def test_call_based_module_body_errors(mode):
    started, _ = run_tests("raise ValueError('at import')", [], mode, kind="call", fn_name="f")
    assert not started.ok and "ValueError" in started.import_error
    started, _ = run_tests("def g(): pass", [], mode, kind="call", fn_name="f")
    assert not started.ok and "no function 'f'" in started.import_error
    t0 = time.monotonic()
    started, _ = run_tests("while True: pass", [], mode, kind="call", fn_name="f", timeout=1.0)
    assert started.import_timeout and time.monotonic() - t0 < 4


def test_isolation_modes_are_validated():
    with pytest.raises(SandboxConfigError, match="PT_SANDBOX"):
        SandboxConfig(isolation="docker")
    with pytest.raises(SandboxConfigError, match="memory_mb"):
        SandboxConfig(memory_mb=1)
    with pytest.raises(SandboxConfigError, match="packages"):
        SandboxConfig(packages=("not a name",))
    with pytest.raises(ValueError, match="kind"):
        WarmSandbox("pass", "shell", None, 1.0, isolation="namespace", config=SandboxConfig())


def test_view_shows_only_the_interpreter_and_allowed_packages():
    view, sys_path = sandbox_view(("numpy",))
    bound = [e["path"] for e in view if e["op"] == "bind"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # Nothing of the checkout is bound, nor a directory holding it. The one exception: a virtual environment inside
    # the checkout (scripts/setup.sh makes .venv there for most non-root users) has its allowed packages bound,
    # and its lib/pythonX.Y (sysconfig's platstdlib in a venv), whose site-packages the view masks (checked below).
    prefix = os.path.realpath(sys.prefix)
    stdlib = interpreter_paths()["stdlib"]
    inside = [p for p in bound if p == repo or p.startswith(repo + os.sep) or repo.startswith(p + os.sep)]
    assert all(p.startswith(prefix + os.sep) and (p in stdlib or os.path.basename(p) in ("numpy", "numpy.libs"))
               for p in inside), inside
    masked = [e["path"] for e in view if e["op"] == "mask"]
    site = [p for p in sys_path if p.endswith("site-packages")]
    assert all(s in masked for s in site if any(s.startswith(b + os.sep) for b in bound))
    packages = [p for p in bound if any(p.startswith(s + os.sep) for s in site)]
    assert packages and all(os.path.basename(p) in ("numpy", "numpy.libs") for p in packages)


# ---------------------------------------------------------------- the wire format
WIRE_VALUES = [
    None, True, 0, -5, 2 ** 70, 2 ** 14001, -(2 ** 20000), 1.5, float("inf"), "", "é\x00",
    [1, [2, [3]]], (1, 2), {"a": 1}, {1: "a", 2.5: None, (1, (2,)): [], None: 0, True: 1}, {},
]


@pytest.mark.parametrize("value", WIRE_VALUES, ids=[f"v{i}" for i in range(len(WIRE_VALUES))])
def test_wire_round_trip(value):
    back = wire.decode_value(json.loads(json.dumps(wire.encode_value(value))))
    expect = list(value) if isinstance(value, tuple) else value
    assert back == expect and type(back) is type(expect)


def test_wire_refuses_what_has_no_faithful_form():
    for bad in ({1, 2}, object(), b"bytes", 1j):
        with pytest.raises(wire.Unencodable):
            wire.encode_value(bad)
    deep = []
    for _ in range(1000):
        deep = [deep]
    with pytest.raises(wire.Unencodable):
        wire.encode_value(deep)
    for forged in ({"x": 1}, {"__dict__": [[1]]}, {"__dict__": [[[{}], 1]]}, {"__int__": "zz"}, {"__dict__": 3}):
        with pytest.raises(wire.ProtocolError):
            wire.decode_value(forged)


def test_a_dict_of_colliding_keys_is_refused_before_it_is_built():
    """Ints k * (2**61 - 1) all hash to 0: 32,000 such keys took 5.8 s to decode. A dict past 64 keys whose
    hashes are mostly shared is refused; ordinary dicts of any size decode as before."""
    from prompt_tree.tasks.sandbox.wire import ProtocolError, decode_value, encode_value

    colliding = {wire.DICT_TAG: [[k * (2**61 - 1), 0] for k in range(1, 2000)]}
    with pytest.raises(ProtocolError, match="distinct hashes"):
        decode_value(colliding)
    half = {wire.DICT_TAG: [[k * (2**61 - 1), 0] for k in range(1, 2000)] + [[-k, 0] for k in range(3, 4000)]}
    with pytest.raises(ProtocolError, match="distinct hashes"):
        decode_value(half)  # mostly distinct hashes overall, but thousands collide
    few = {k * (2**61 - 1): k for k in range(1, 60)}  # a few collisions are any dict's lot
    assert decode_value(encode_value(few)) == few
    many = {k: str(k) for k in range(5000)}
    assert decode_value(encode_value(many)) == many


def test_a_stamped_packet_with_descriptors_is_refused_and_they_are_closed():
    """The host reads reports through recv_stamped: a packet that carries descriptors breaks the protocol, and
    the descriptors it installed are closed (with timestamps refused they used to stay open in the host)."""
    import socket

    for stamped in (True, False):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if stamped:
            assert wire.enable_timestamps(ours)
        before = len(os.listdir("/proc/self/fd"))
        r, w = os.pipe()
        wire.send_message(theirs, {"ev": "done", "i": 0}, [r, w, r, w])
        os.close(r)
        os.close(w)
        with pytest.raises(wire.ProtocolError, match="descriptors"):
            wire.recv_stamped(ours)
        assert len(os.listdir("/proc/self/fd")) == before
        wire.send_message(theirs, {"ev": "done", "i": 1})
        msg, sent = wire.recv_stamped(ours)
        assert msg == {"ev": "done", "i": 1} and abs(sent - time.time()) < 5
        ours.close()
        theirs.close()


def test_messages_are_framed_and_checked():
    import socket
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        wire.send_message(a, {"x": [1, 2]})
        assert wire.recv_message(b) == ({"x": [1, 2]}, [])
        for raw in (b"[1]", b"not json", b"\xff", b"[" * 100_000, b"x" * (wire.MAX_MESSAGE + 10)):
            a.send(raw)
            with pytest.raises(wire.ProtocolError):
                wire.recv_message(b)
        r, w = os.pipe()
        wire.send_message(a, {"fd": 1}, [r])  # a descriptor to a receiver that takes none: dropped
        msg, fds = wire.recv_message(b)
        assert msg == {"fd": 1} and fds == []
        os.close(r)
        os.close(w)
        a.close()
        assert wire.recv_message(b) == (None, [])
    finally:
        b.close()


# ---------------------------------------------------------------- the wiper
def test_empty_dir_handles_deep_wide_and_closed_trees(tmp_path):
    top = tmp_path / "top"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(3000):  # deeper than PATH_MAX and than the recursion limit: built relative to a fd
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)
    for i in range(50):
        (top / f"f{i}").write_text("x")
    (top / "closed").mkdir()
    (top / "closed" / "inner").write_text("x")
    os.chmod(top / "closed", 0)
    os.symlink("/etc", top / "link")  # a symlink is removed, never followed
    assert empty_dir(str(top)) and os.listdir(top) == [] and os.path.isdir("/etc")
    assert remove_tree(str(top)) and not top.exists()


def test_empty_dir_matches_a_fresh_listing_on_random_trees(tmp_path):
    rng = random.Random(0)
    for case in range(20):
        top = tmp_path / f"t{case}"
        top.mkdir()
        dirs = [str(top)]
        for _ in range(rng.randint(0, 60)):
            parent = rng.choice(dirs)
            name = rng.choice([".pt_wipe_1", ".pt_wipe_2", "a", "b", f"n{rng.randint(0, 9)}"])
            path = os.path.join(parent, name)
            if os.path.lexists(path):
                continue
            if rng.random() < 0.5:
                os.mkdir(path)
                dirs.append(path)
            else:
                with open(path, "w") as f:
                    f.write("x")
        assert empty_dir(str(top)) and os.listdir(top) == []


def test_a_fresh_session_keyring_possesses_nothing_of_the_old_one():
    """seal.new_session_keyring on its own (no filter): in a child that planted a key in its session keyring,
    the key is found before the call and not after it."""
    import ctypes
    import platform

    from prompt_tree.tasks.sandbox import seal
    from prompt_tree.tasks.sandbox.syscall_filter import DENIED, native_arch

    arch = native_arch()
    if arch is None:
        pytest.skip(f"no keyctl number for {platform.machine()}")
    keyctl, add_key = DENIED[arch]["keyctl"], DENIED[arch]["add_key"]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syscall(keyctl, 1, None) < 0 or \
                    libc.syscall(add_key, b"user", b"pt_planted", b"s3cret", 6, ctypes.c_long(-3)) < 0:
                code = 3  # no keyring to plant in here
            else:
                def found():
                    return libc.syscall(keyctl, 10, ctypes.c_long(-3), b"user", b"pt_planted", 0) > 0

                before = found()
                warning = seal.new_session_keyring()
                code = 0 if before and not found() and warning is None else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    code = os.read(r, 1)[0]
    os.waitpid(pid, 0)
    os.close(r)
    if code == 3:
        pytest.skip("this kernel gives no session keyring to plant a key in")
    assert code == 0


def test_pipes_the_host_cannot_make_fail_that_test_alone(monkeypatch):
    """In userns mode every sandbox runs as the caller's uid and shares its pipe quota with the host: a pipe the
    host cannot make is a -1 for that test, with nothing left open and the next test run as usual."""
    mode = sealed_modes()[-1]
    why = available(mode)
    if why:
        pytest.skip(why)
    from prompt_tree.tasks.sandbox.host import _NO_PIPES, WarmSandbox

    with WarmSandbox("print(input())", "stdin", None, 2.0, isolation=mode, config=SandboxConfig(isolation=mode)) as box:
        assert box.start().ok
        before = len(os.listdir("/proc/self/fd"))
        real = os.pipe
        calls = []

        def second_fails():
            calls.append(1)
            if len(calls) == 2:
                raise OSError(24, "Too many open files")
            return real()

        monkeypatch.setattr(os, "pipe", second_fails)
        run = box.run_stdin(0, b"x\n", 2.0, lambda c: None, 1 << 20)
        monkeypatch.setattr(os, "pipe", real)
        assert run.broken.startswith(_NO_PIPES) and not box.broken, run
        assert len(os.listdir("/proc/self/fd")) == before  # the memfd and the first pipe were closed
        out = []
        run = box.run_stdin(1, b"again\n", 2.0, out.append, 1 << 20)
        assert run.exit_code == 0 and b"".join(out) == b"again\n"
