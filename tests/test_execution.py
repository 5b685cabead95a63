"""The sandbox: normal programs behave as under `python prog.py`; hostile ones fail within their limits, leave no
process behind and write nothing outside their directory. Each hostile case runs in both modes where they
differ (namespace when available, and the forced fallback)."""
import os
import signal
import sys
import time
import uuid
import warnings

import pytest

from prompt_tree.tasks import execution
from prompt_tree.tasks.execution import RunJob, RunResult, run_many, run_program, sandbox_mode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_NS = sys.platform == "linux" and os.geteuid() == 0 and execution._probe_namespace() is None
MODES = ["namespace", "fallback"] if HAVE_NS else ["fallback"]


@pytest.fixture(autouse=True)
def _quiet_fallback_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "sandbox: fallback mode forced", RuntimeWarning)
        yield


def _procs_with(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (the test's own process excluded)."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(p))
        except OSError:
            pass
    return found


def _assert_nothing_left(marker: str) -> None:
    # the run returns only after its tree is dead; allow a moment for the kernel to reap zombies' cmdlines
    for _ in range(50):
        if not _procs_with(marker):
            return
        time.sleep(0.02)
    raise AssertionError(f"processes survived the run: {_procs_with(marker)}")


def _spawner(marker: str) -> str:
    """Program prefix that names a long-lived helper process after `marker` (found later in /proc/*/cmdline)."""
    return (f"import os, sys, time, signal\n"
            f"HELPER = [sys.executable, '-c', 'import time\\nwhile True: time.sleep(0.05)  # {marker}']\n")


# ---------------------------------------------------------------- normal programs
def test_stdout_stdin_stderr_exit_code():
    r = run_program("import sys\ndata = sys.stdin.read()\nprint(data.upper(), end='')\n"
                    "print('note', file=sys.stderr)\nsys.exit(3)", stdin="abc\ndef\n", timeout=5)
    assert (r.stdout, r.stderr, r.returncode, r.signal, r.timed_out) == ("ABC\nDEF\n", "note\n", 3, None, False)
    assert not r.ok and r.error is None and r.wall_time > 0


@pytest.mark.parametrize("mode", MODES)
def test_ok_run_and_bytes_stdin(mode):
    r = run_program("import sys\nprint(len(sys.stdin.buffer.read()))", stdin=b"\x00\xff" * 1000, timeout=5,
                    sandbox=mode)
    assert r.ok and r.stdout == "2000\n" and r.sandbox == mode


def test_large_stdin_and_output_roundtrip():
    data = "".join(f"{i}\n" for i in range(200_000))  # ~1.3 MB each way: no pipe deadlock
    r = run_program("import sys\nsys.stdout.write(sys.stdin.read())", stdin=data, timeout=10)
    assert r.ok and r.stdout == data


def test_runtime_error_reported():
    r = run_program("1/0", timeout=5)
    assert r.returncode == 1 and "ZeroDivisionError" in r.stderr and not r.timed_out


def test_extra_files_and_working_directory():
    r = run_program("import os\nprint(open('helper.txt').read(), os.path.basename(os.getcwd()).startswith('pt_run_'))",
                    files={"helper.txt": "hi"}, timeout=5)
    assert r.ok and r.stdout.split() == ["hi", "True"]


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="timeout"):
        run_program("pass", timeout=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_program("pass", memory_mb=1)
    with pytest.raises(TypeError, match="code must be a str"):
        run_program(b"print(1)")
    with pytest.raises(ValueError, match="relative path"):
        run_program("pass", files={"../x": "y"})
    with pytest.raises(ValueError, match="PT_SANDBOX"):
        run_program("pass", sandbox="docker")


def test_run_many_keeps_order_and_runs_in_parallel():
    jobs = [RunJob(f"import time\ntime.sleep(0.4)\nprint({i})", timeout=5) for i in range(6)] + ["print('s')"]
    t0 = time.monotonic()
    res = run_many(jobs, workers=6)
    elapsed = time.monotonic() - t0
    assert [r.stdout.strip() for r in res] == [str(i) for i in range(6)] + ["s"]
    assert all(isinstance(r, RunResult) and r.ok for r in res)
    assert elapsed < 6 * 0.4  # sequential would take at least 2.4 s
    with pytest.raises(TypeError, match="RunJob"):
        run_many([42])


# ---------------------------------------------------------------- hostile programs
@pytest.mark.parametrize("mode", MODES)
def test_infinite_loop_times_out(mode):
    t0 = time.monotonic()
    r = run_program("while True: pass", timeout=1, sandbox=mode)
    assert r.timed_out and r.returncode is None and r.signal == signal.SIGKILL
    assert time.monotonic() - t0 < 4


@pytest.mark.parametrize("code", [
    "x = pow(7, 10**9)",  # one long bigint computation inside C: no Python signal handler can interrupt it
    "import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')",  # catastrophic backtracking, also inside C
])
def test_busy_loop_inside_c_call_is_killed(code):
    t0 = time.monotonic()
    r = run_program(code, timeout=1)
    assert r.timed_out and not r.ok
    assert time.monotonic() - t0 < 4


def test_cpu_limit_kills_even_without_wall_timer():
    # a wall limit far away: RLIMIT_CPU (1 s here) is what stops it, reported as a timeout
    r = run_program("while True: pass", timeout=30, cpu_time=1)
    assert r.timed_out and r.signal in (signal.SIGXCPU, signal.SIGKILL) and r.wall_time < 10


@pytest.mark.parametrize("mode", MODES)
def test_memory_hog(mode):
    r = run_program("x = []\nwhile True: x.append(bytearray(10**7))", timeout=5, memory_mb=200, sandbox=mode)
    assert not r.ok and r.memory_exceeded and r.returncode == 1 and not r.timed_out


@pytest.mark.parametrize("mode", MODES)
def test_unbounded_output_is_capped(mode):
    r = run_program("while True: print('y' * 1000)", timeout=5, max_output_bytes=100_000, sandbox=mode)
    assert r.output_truncated and not r.ok and len(r.stdout) == 100_000 and r.wall_time < 4


def test_blocking_read_of_stdin_gets_eof():
    r = run_program("import sys\na = sys.stdin.read()\nb = sys.stdin.read()\nprint(repr(a), repr(b))\ninput()",
                    stdin="x", timeout=2)
    assert r.stdout == "'x' ''\n" and "EOFError" in r.stderr and not r.timed_out


@pytest.mark.parametrize("mode", MODES)
def test_sleep_after_closing_stdout(mode):
    t0 = time.monotonic()
    r = run_program("import os, time\nprint('bye', flush=True)\nos.close(1)\nos.close(2)\ntime.sleep(100)",
                    timeout=1, sandbox=mode)
    assert r.timed_out and r.stdout == "bye\n" and time.monotonic() - t0 < 4


@pytest.mark.parametrize("mode", MODES)
def test_killing_its_parent(mode):
    marker = f"pt_kp_{uuid.uuid4().hex}"
    code = _spawner(marker) + ("import subprocess\nsubprocess.Popen(HELPER)\n"
                               "try:\n    os.kill(os.getppid(), 9)\nexcept OSError as e:\n    print('denied', e.errno)\n"
                               "time.sleep(100)")
    t0 = time.monotonic()
    r = run_program(code, timeout=1, sandbox=mode)
    assert not r.ok and r.error is None and time.monotonic() - t0 < 4
    _assert_nothing_left(marker)


@pytest.mark.parametrize("mode", MODES)
def test_os_exit_and_ignored_signals(mode):
    r = run_program("import os\nprint('x', flush=True)\nos._exit(7)", timeout=2, sandbox=mode)
    assert r.returncode == 7 and r.stdout == "x\n"
    code = ("import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGXCPU):\n"
            "    signal.signal(s, signal.SIG_IGN)\nwhile True: pass")
    t0 = time.monotonic()
    r = run_program(code, timeout=1, sandbox=mode)
    assert r.timed_out and time.monotonic() - t0 < 4


@pytest.mark.skipif(not HAVE_NS, reason="needs namespaces (root, util-linux unshare)")
def test_writing_outside_its_directory():
    # namespace mode only: the fallback cannot stop a program writing where its uid may (documented)
    mode = "namespace"
    tag = uuid.uuid4().hex
    targets = [f"/tmp/pt_escape_{tag}", os.path.join(REPO, f"pt_escape_{tag}"), f"/dev/shm/pt_escape_{tag}"]
    code = "import os\n" + "".join(
        f"try:\n    open({t!r}, 'w').write('x')\n    print('wrote', {t!r})\nexcept OSError as e:\n    print('blocked', e.errno)\n"
        for t in targets) + "open('inside.txt', 'w').write('fine')\nprint(open('inside.txt').read())"
    r = run_program(code, timeout=5, sandbox=mode)
    try:
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[-1] == "fine"
        assert "wrote" not in r.stdout
        for t in targets:
            assert not os.path.exists(t), f"the program wrote {t}"
        if mode == "namespace":
            assert r.stdout.count("blocked 30") == len(targets)  # EROFS: the read-only view, not just the uid
    finally:
        for t in targets:
            if os.path.exists(t):
                os.remove(t)


@pytest.mark.parametrize("mode", MODES)
def test_detached_double_forked_child_does_not_survive(mode):
    marker = f"pt_dd_{uuid.uuid4().hex}"
    code = _spawner(marker) + (
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "        os.execv(HELPER[0], HELPER)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "time.sleep(0.3)\n"  # let the grandchild exec
        "print('parent done')\n")
    r = run_program(code, timeout=3, sandbox=mode)
    assert r.returncode == 0 and r.stdout == "parent done\n"
    _assert_nothing_left(marker)


def test_detached_child_not_left_after_timeout():
    marker = f"pt_dt_{uuid.uuid4().hex}"
    code = _spawner(marker) + ("import subprocess\nsubprocess.Popen(HELPER, start_new_session=True)\n"
                               "while True: pass")
    r = run_program(code, timeout=1)
    assert r.timed_out
    _assert_nothing_left(marker)


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb(mode):
    if mode == "fallback" and not execution.fallback_limits_processes():
        pytest.skip("fallback as root without a usable private uid: RLIMIT_NPROC cannot apply (root is exempt)")
    marker = f"pt_fb_{uuid.uuid4().hex}"
    code = _spawner(marker) + (
        "import subprocess\nsubprocess.Popen(HELPER)\n"
        "while True:\n"
        "    try:\n        os.fork()\n"
        "    except OSError:\n        pass\n")
    t0 = time.monotonic()
    r = run_program(code, timeout=1.5, max_processes=16, sandbox=mode)
    assert not r.ok and time.monotonic() - t0 < 8
    _assert_nothing_left(marker)
    # the machine still works: a normal program runs right after
    assert run_program("print(1)", timeout=5, sandbox=mode).stdout == "1\n"


@pytest.mark.skipif(not HAVE_NS, reason="needs namespaces (root, util-linux unshare)")
def test_namespace_has_no_network_and_private_pids():
    code = ("import os, socket\nprint(os.getpid(), os.getuid() != 0)\n"
            "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\n    print('net')\n"
            "except OSError:\n    print('no net')\n")
    r = run_program(code, timeout=5, sandbox="namespace")
    pid, unprivileged, *rest = r.stdout.split()
    assert int(pid) <= 3 and unprivileged == "True" and " ".join(rest) == "no net"


# ---------------------------------------------------------------- mode selection and the fallback
def test_mode_detection_is_cached_and_validated(monkeypatch):
    first = sandbox_mode()
    assert first in ("namespace", "fallback") and sandbox_mode() == first
    monkeypatch.setenv("PT_SANDBOX", "fallback")
    assert sandbox_mode() == "fallback"
    monkeypatch.setenv("PT_SANDBOX", "bogus")
    with pytest.raises(ValueError, match="PT_SANDBOX"):
        sandbox_mode()


def test_forced_fallback_warns_once_and_kills_the_process_group(monkeypatch):
    monkeypatch.setattr(execution, "_mode_cache", {})
    marker = f"pt_fg_{uuid.uuid4().hex}"
    # a child in the program's group (no setsid), the program timing out: the group must die with it
    code = _spawner(marker) + "import subprocess\nsubprocess.Popen(HELPER)\nwhile True: pass"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run_program(code, timeout=1, sandbox="fallback")
        run_program("pass", timeout=2, sandbox="fallback")
    assert r.timed_out and r.sandbox == "fallback"
    msgs = [str(w.message) for w in caught if "fallback mode forced" in str(w.message)]
    assert len(msgs) == 1
    _assert_nothing_left(marker)


def test_auto_mode_falls_back_with_a_warning_when_probe_fails(monkeypatch):
    monkeypatch.setattr(execution, "_mode_cache", {})
    monkeypatch.setattr(execution, "_probe_namespace", lambda: "no unshare here (test)")
    monkeypatch.delenv("PT_SANDBOX", raising=False)
    with pytest.warns(RuntimeWarning, match="namespaces unavailable"):
        assert sandbox_mode() == "fallback"
    r = run_program("print(2)", timeout=5)
    assert r.ok and r.sandbox == "fallback"
