"""Hostile programs against the warm sandbox, in every sealed mode (as root: the full sandbox with a fresh uid,
and the non-root user-namespace path, forced by running the zygote as uid nobody) and, where the case applies
without namespaces, the fallback.

Most programs print what they managed to do; the expected output is what a sealed sandbox allows, so a leak
shows up as a failing verdict with the program's own words in the detail. Every case must end as verdicts
(never an exception), within its time limit, with no process left (every sandbox process descends from the
zygote, a subreaper) and no file outside the sandbox.
"""
import os
import socket
import tempfile
import time
import uuid

import pytest

from sandbox_helpers import IS_ROOT, assert_zygote_idle, available, sealed_modes
from prompt_tree.tasks.checker import check
from prompt_tree.tasks.problem import Problem
from prompt_tree.tasks.sandbox.config import SandboxConfig, sandbox_view

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = os.path.join(REPO, "prompt_tree", "tasks", "data", "embedded.jsonl")


def _repo_names_the_view_binds() -> list[str]:
    """The top-level names under the checkout that the sandbox binds: none, unless the interpreter's own virtual
    environment lies inside the checkout (scripts/setup.sh makes .venv there for most non-root users), whose
    allowed packages are bound at their own paths, which makes the path down to them (and only it) visible."""
    view, _ = sandbox_view(SandboxConfig().packages)
    return sorted({os.path.relpath(e["path"], REPO).split(os.sep)[0] for e in view
                   if e["op"] == "bind" and e["path"].startswith(REPO + os.sep)})


def _mode(name):
    why = available(name)
    if why:
        pytest.skip(f"{name} sandbox unavailable here: {why}")
    return name


@pytest.fixture(params=sealed_modes())
def sealed(request):
    return _mode(request.param)


@pytest.fixture(params=sealed_modes() + ["fallback"])
def any_mode(request):
    return _mode(request.param)


def stdin_problem(inputs, outputs):
    return Problem("hostile", "q", inputs=list(inputs), outputs=list(outputs))


def judge(problem, code, mode, timeout=2.0, **kw):
    t0 = time.monotonic()
    res = check(problem, code, timeout=timeout, isolation=mode, **kw)
    elapsed = time.monotonic() - t0
    assert_zygote_idle(mode)
    return res, elapsed


def _host_tmp_names(prefix):
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(prefix)}


# ---------------------------------------------------------------- reading the answers
def test_cannot_read_the_dataset_checkout_home_or_host_tmp(sealed):
    marker = f"pt_host_secret_{uuid.uuid4().hex}"
    host_file = os.path.join(tempfile.gettempdir(), marker)
    with open(host_file, "w") as f:
        f.write("secret")
    code = f"""
import os
def tried(f):
    try:
        f()
        return "LEAK"
    except Exception:
        return "blocked"
out = []
out.append(tried(lambda: open({DATASET!r}).read()))
out.append(tried(lambda: __import__("prompt_tree.tasks.apps")))
# the checkout: nothing of it listed but the path down to a bound virtual environment's allowed packages
out.append(tried(lambda: [n for n in os.listdir({REPO!r}) if n not in {_repo_names_the_view_binds()!r}] or 1 / 0))
out.append(tried(lambda: os.listdir("/work")))
out.append(tried(lambda: open({host_file!r}).read()))
out.append(tried(lambda: open("/etc/shadow").read()))
out.append(tried(lambda: open("/etc/passwd").read()))
out.append(tried(lambda: os.listdir(os.path.expanduser("~root"))  and open("/root/.bashrc").read()))
out.append("blocked" if {marker!r} not in os.listdir("/tmp") else "LEAK")
print(" ".join(out))
"""
    try:
        res, _ = judge(stdin_problem([""], [" ".join(["blocked"] * 9)]), code, sealed)
    finally:
        os.remove(host_file)
    assert res.results == [True], res.details


def test_expected_outputs_never_enter_the_sandbox(sealed):
    # a cheater: search every readable file and every process's memory map for the expected answer
    secret = f"answer_{uuid.uuid4().hex}"
    code = """
import os, re, sys
data = sys.stdin.read()
found, files = None, 0
for root, dirs, names in os.walk("/"):
    dirs[:] = [d for d in dirs if not (root == "/" and d in ("proc", "dev"))]
    for n in names:
        try:
            with open(os.path.join(root, n), "rb") as f:
                files += 1
                m = re.search(rb"answer_[0-9a-f]{32}", f.read(1 << 16))
                if m:
                    found = m.group().decode()
        except OSError:
            pass
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for what in ("cmdline", "environ"):
            try:
                m = re.search(rb"answer_[0-9a-f]{32}", open(f"/proc/{pid}/{what}", "rb").read())
                found = found or (m and m.group().decode())
            except OSError:
                pass
print(found or f"nothing in {files} files")
"""
    # The walk reads the first 64 KB of every file the sandbox shows (site-packages included): ~2 s alone, over
    # 4 s when the suite's other worker runs interpreted kernels on the second core. Its budget is generous so
    # that a verdict of "timeout" never hides what the search found.
    res, _ = judge(stdin_problem(["x\n"], [secret]), code, sealed, timeout=20.0)
    got = [d.split(", expected")[0] for d in res.details]
    assert res.results == [False] and all(secret not in g and "nothing in" in g for g in got), got


# ---------------------------------------------------------------- reaching the host
def test_cannot_reach_host_sockets_or_network(sealed):
    path = os.path.join(tempfile.gettempdir(), f"pt_sock_{uuid.uuid4().hex[:8]}")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(path)
    unix.listen(1)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_name = f"\0pt_abstract_{uuid.uuid4().hex[:8]}"
    abstract.bind(abstract_name)
    abstract.listen(1)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    port = tcp.getsockname()[1]
    code = f"""
import socket, os, ctypes
def tried(f):
    try:
        f()
        return "LEAK"
    except Exception:
        return "blocked"
def unix_connect(addr):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect(addr)
def tcp_connect(host, port):
    socket.create_connection((host, port), timeout=1)
out = [tried(lambda: unix_connect({path!r})), tried(lambda: unix_connect({abstract_name!r})),
       tried(lambda: tcp_connect("127.0.0.1", {port})), tried(lambda: tcp_connect("1.1.1.1", 53)),
       tried(lambda: os.kill({os.getpid()}, 0))]
print(" ".join(out))
"""
    try:
        res, _ = judge(stdin_problem([""], [" ".join(["blocked"] * 5)]), code, sealed)
    finally:
        for s in (unix, abstract, tcp):
            s.close()
        os.remove(path)
    assert res.results == [True], res.details


def test_no_privilege_left_to_use(sealed):
    # what the fallback allowed as root-less: signals and ptrace of outside processes, real-time priority,
    # stopping the init, remounting, new user namespaces, writing outside its directory
    code = r"""
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
def tried(f):
    try:
        r = f()
        return "blocked" if r not in (None, 0) else "LEAK"
    except Exception:
        return "blocked"
def write(path):
    with open(path, "w") as f:
        f.write("x")
out = [
    tried(lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))),
    tried(lambda: libc.ptrace(16, os.getppid(), 0, 0)),                   # PTRACE_ATTACH the runner
    tried(lambda: open(f"/proc/{os.getppid()}/environ").read()),
    tried(lambda: libc.mount(None, b"/", None, 32 | 4096, None)),          # remount / writable
    tried(lambda: libc.unshare(0x10000000)),                               # a user namespace of its own
    tried(lambda: libc.unshare(0x00020000)),                               # a mount namespace
    tried(lambda: write("/etc/pt_escape")), tried(lambda: write("/var/tmp/pt_escape")),
    tried(lambda: write("/dev/shm/pt_escape")), tried(lambda: write("/pt_escape")),
]
os.kill(1, signal.SIGSTOP)   # the init ignores it: the next test still runs
os.kill(1, signal.SIGKILL)
print(" ".join(out), os.getuid())
"""
    res, _ = judge(stdin_problem(["", ""], [" ".join(["blocked"] * 10) + " 1000"] * 2), code, sealed)
    assert res.results == [True, True], res.details


def test_calls_past_the_other_seals_are_refused(sealed):
    """The seccomp filter (prompt_tree.tasks.sandbox.syscall_filter): memory outside RLIMIT_AS (memfd, SysV
    shared memory, message queues, semaphore sets), the kernel keyring, io_uring, bpf, perf, userfaultfd,
    inotify, and every socket family but AF_UNIX / AF_INET / AF_INET6. A semaphore set of 32,000 once pinned
    about 2 MiB of kernel memory per call, outside every limit. What stays allowed still works."""
    from prompt_tree.tasks.sandbox.syscall_filter import DENIED
    import platform

    denied = DENIED.get(platform.machine())
    if denied is None:
        pytest.skip(f"no seccomp filter for {platform.machine()}")
    code = f"""
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
out = []
for name, nr in sorted({denied!r}.items()):
    ctypes.set_errno(0)
    r = libc.syscall(nr, 0, 32000, 0o1600, 0, 0, 0)
    out.append(name + ("=blocked" if r == -1 and ctypes.get_errno() == 1 else "=LEAK"))
def sock(family, kind=socket.SOCK_STREAM, pair=False):
    try:
        s = socket.socketpair(family, kind) if pair else [socket.socket(family, kind)]
        [x.close() for x in s]
        return "made"
    except PermissionError:
        return "blocked"
    except OSError as e:
        return "other:" + str(e.errno)
out += ["vsock=" + sock(40), "netlink=" + sock(16, socket.SOCK_RAW), "packet=" + sock(17, socket.SOCK_RAW),
        "unix=" + sock(socket.AF_UNIX), "inet=" + sock(socket.AF_INET), "inet6=" + sock(socket.AF_INET6),
        "unixpair=" + sock(socket.AF_UNIX, pair=True), "inetpair=" + sock(socket.AF_INET, pair=True)]
a, b = socket.socketpair()
for name, opt in (("sndbuf", socket.SO_SNDBUF), ("rcvbuf", socket.SO_RCVBUF), ("sndbufforce", 32)):
    try:
        a.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        out.append(name + "=LEAK")
    except PermissionError:
        out.append(name + "=blocked")
a.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # other options stay allowed
r, w = os.pipe()
try:
    import fcntl
    fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ
    out.append("pipesize=LEAK")
except PermissionError:
    out.append("pipesize=blocked")
print(" ".join(out))
"""
    want = [f"{name}=blocked" for name in sorted(denied)] + [
        "vsock=blocked", "netlink=blocked", "packet=blocked", "unix=made", "inet=made", "inet6=made",
        "unixpair=made", "inetpair=blocked", "sndbuf=blocked", "rcvbuf=blocked", "sndbufforce=blocked",
        "pipesize=blocked"]
    res, _ = judge(stdin_problem([""], [" ".join(want)]), code, sealed)
    assert res.results == [True], res.details


_KEYCTL = {"x86_64": 250, "aarch64": 219}
_ADD_KEY = {"x86_64": 248, "aarch64": 217}


def test_the_harness_keyring_and_host_proc_state_stay_out_of_reach(sealed):
    """Keyrings are not namespaced: a sandbox inherited the session keyring of the process that started the
    zygote, and possession (not the uid) grants access, so a program read a key the harness held there. Now the
    sandbox joins a fresh session keyring, the keyring calls are filtered, and /proc/keys and the other procfs
    files with host-wide state read empty. A fresh process plays the harness: it joins a session keyring, plants
    a key, and only then starts its zygote (this process's zygote may predate any keyring)."""
    import json
    import platform
    import subprocess
    import sys

    from prompt_tree.tasks.sandbox.seal import PROC_MASKED

    arch = platform.machine()
    if arch not in _KEYCTL:
        pytest.skip(f"keyctl's number unknown for {arch}")
    secret = f"pt_secret_{uuid.uuid4().hex[:8]}"
    program = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(4096)
found = []
for ring in (-3, -4, -5):  # session, user session, user keyrings: search each for the key by its description
    serial = libc.syscall({_KEYCTL[arch]}, 10, ctypes.c_long(ring), b"user", {secret.encode()!r}, 0)
    if serial > 0 and libc.syscall({_KEYCTL[arch]}, 11, serial, buf, 4096) > 0:
        found.append(buf.value.decode())
shown = []  # masked files that still show something (a file the kernel lacks or keeps to root shows nothing)
for name in {PROC_MASKED!r}:
    try:
        with open("/proc/" + name, "rb") as f:
            data = f.read(1 << 16)
        if data:
            shown.append(name + ("(the key)" if {secret.encode()!r} in data else ""))
    except OSError:
        pass
print("found:", *found, "shown:", *shown)
"""
    harness = f"""
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.syscall({_KEYCTL[arch]}, 1, None) < 0:  # KEYCTL_JOIN_SESSION_KEYRING: a new anonymous one
    print(json.dumps("no keyring")); sys.exit()
if libc.syscall({_ADD_KEY[arch]}, b"user", {secret.encode()!r}, b"the harness's token", 19, ctypes.c_long(-3)) < 0:
    print(json.dumps("no key")); sys.exit()
from prompt_tree.tasks.checker import check
from prompt_tree.tasks.problem import Problem
res = check(Problem("k", "q", inputs=[""], outputs=["found: shown:"]), {program!r}, timeout=4.0,
            isolation={sealed!r})
print(json.dumps([res.results, res.details]))
"""
    out = subprocess.run([sys.executable, "-c", harness], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    got = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else out.stderr[-2000:]
    if got in ("no keyring", "no key"):
        pytest.skip(f"this kernel gives no session keyring to plant a key in ({got})")
    assert got[0] == [True], got


# ---------------------------------------------------------------- filling the disk, crashing the job
def test_disk_fill_is_bounded_by_the_private_tmpfs(sealed):
    name = f"pt_fill_{uuid.uuid4().hex[:8]}"
    code = f"""
import os
total = 0
try:
    for i in range(1000):
        with open("/tmp/{name}_%d" % i, "wb") as f:
            for _ in range(8):  # 8 MiB files: under the 16 MiB file-size limit, so the tmpfs fills up
                f.write(b"x" * (1 << 20))
                total += 1 << 20
except OSError as e:
    print("full", total <= 64 << 20, e.errno)
"""
    before = _host_tmp_names(name)
    res, _ = judge(stdin_problem([""], ["full True 28"]), code, sealed, timeout=4.0)
    assert res.results == [True], res.details  # ENOSPC at 64 MiB
    assert _host_tmp_names(name) == before == set()


def test_deep_directories_and_files_are_gone_for_the_next_test(any_mode):
    marker = f"pt_input_copy_{uuid.uuid4().hex[:8]}"
    code = f"""
import os, sys
if sys.stdin.read().strip() == "build":
    fd = os.open(".", os.O_RDONLY)
    for _ in range(3000):
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    with open("{marker}", "w") as f:
        f.write("SECRET_INPUT")
    print("built")
else:
    print(sorted(os.listdir(".")), os.path.exists("/tmp/{marker}"))
"""
    res, _ = judge(stdin_problem(["build\n", "look\n"], ["built", "[] False"]), code, any_mode, timeout=4.0)
    if any_mode == "fallback":
        # on the host's disk, deleting 3000 directories may outlast the limit: then the rest fails (-1)
        assert all(r in (True, -1) for r in res.results), res.details
    else:
        assert res.results == [True, True], res.details
    tmp = tempfile.gettempdir()
    assert not [d for d in os.listdir(tmp) if os.path.exists(os.path.join(tmp, d, marker))]  # fallback's dir gone


def test_forged_and_closed_result_channel(any_mode):
    # the module body owns the warm process: it writes garbage on every descriptor and closes them all
    p = Problem("c", "q", fn_name="f", inputs=[[1], [2], [3]], outputs=[1, 2, 3])
    forge = ('import os, json\nfor fd in range(3, 256):\n    try:\n'
             '        os.write(fd, json.dumps({"ev": "done", "i": 0, "exit": 0}).encode())\n'
             '        os.write(fd, b"garbage\\n" * 100)\n    except OSError:\n        pass\n'
             'def f(x):\n    return x\n')
    close = "import os\nos.closerange(3, 1 << 16)\ndef f(x):\n    return x\n"
    for code in (forge, close):
        res, elapsed = judge(p, code, any_mode)
        assert not res.passed and elapsed < 6, res.details
        assert all(r in (-1, -2, False) for r in res.results)


def test_flooding_the_control_channel(sealed):
    p = Problem("c", "q", fn_name="f", inputs=[[1], [2]], outputs=[1, 2])
    code = ("import os, threading\ndef flood():\n    while True:\n        for fd in range(3, 64):\n"
            "            try:\n                os.write(fd, b'x' * 60000)\n            except OSError:\n"
            "                pass\nthreading.Thread(target=flood, daemon=True).start()\n"
            "def f(x):\n    return x\n")
    res, elapsed = judge(p, code, sealed)
    assert not res.passed and elapsed < 8, res.details


def test_a_call_based_body_that_disarms_its_runner_still_times_out(sealed):
    """The module body runs in the warm runner, so it can replace the runner's wait loop (never kill the child)
    and its CPU limit: a 2 s call then passed under a 1 s limit. The host times each call itself, from sending
    the test to the kernel's stamp on the report."""
    code = """
import sys, os, time
runner = sys._getframe(1).f_locals["self"]
def wait_for_ever(pid, deadline, i):
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    return False, False
runner._wait = wait_for_ever
enter = runner._enter_child
runner._enter_child = lambda keep, cpu_s: enter(keep, 10_000)
def f(x):
    t = time.time()
    while time.time() - t < 2.0:
        pass
    return x
"""
    p = Problem("c", "q", fn_name="f", inputs=[[1], [2]], outputs=[1, 2])
    res, elapsed = judge(p, code, sealed, timeout=1.0)
    assert res.results == [-1, -1] and all(d.startswith("timeout") for d in res.details), res.details
    # a call that ends in time still passes through the same check
    fast = code.replace("< 2.0", "< 0.2")
    res, _ = judge(p, fast, sealed, timeout=1.0)
    assert res.results == [True, True], res.details


def test_a_huge_call_result_is_a_wrong_answer_not_the_hosts_problem(any_mode):
    """A call-based result is parsed in the host process, so its size is capped by the expected value's (four
    times its encoding plus 64 KiB): 16 MiB of nested empty lists once cost the host 34 s and 3 GiB a test."""
    code = """
import os
def f(x):
    n = (16 << 20) // 3
    data = ('{"status":"ok","value":[' + "[]," * n + "[]]}").encode()
    v = memoryview(data)
    while v:
        v = v[os.write(3, v):]
    os._exit(0)
"""
    p = Problem("c", "q", fn_name="f", inputs=[[1], [2]], outputs=[[[]], [[]]])
    res, elapsed = judge(p, code, any_mode, timeout=2.0)
    assert res.results == [False, False] and elapsed < 6, (res.details, elapsed)
    assert all("size cap" in d for d in res.details), res.details


def test_a_report_read_late_by_a_busy_host_is_not_silence(sealed):
    """The host's reading thread may be held up (the GIL, a loaded machine) past a test's backstop while the
    runner's report already waits on the socket: it is read, not taken for a silent sandbox."""
    from prompt_tree.tasks.sandbox.host import BACKSTOP_S, WarmSandbox

    with WarmSandbox("print(input())", "stdin", None, 0.5, isolation=sealed,
                     config=SandboxConfig(isolation=sealed)) as box:
        assert box.start().ok
        stalls = []

        def slow_reader(chunk):  # the first chunk of output holds this thread past the test's deadline
            if not stalls:
                stalls.append(chunk)
                time.sleep(0.5 + BACKSTOP_S + 0.5)

        run = box.run_stdin(0, b"hello\n", 0.5, slow_reader, 1 << 20)
        assert stalls and run.broken is None and run.exit_code == 0 and not run.timed_out, run
        run = box.run_stdin(1, b"again\n", 0.5, lambda c: None, 1 << 20)
        assert run.broken is None and run.exit_code == 0
    assert_zygote_idle(sealed)


def test_each_sandbox_is_one_session_its_processes_cannot_leave(sealed):
    """CPU is shared between sessions first where the kernel's autogroup is on, so each sandbox is a session of
    its own (led by its init, pid 1 inside) and no process in it may start another: one program's 27 spinning
    processes, in the zygote's session, timed a neighbour out on 10 of 10 tests (docs/benchmarks/cpu_s22)."""
    code = """
import os
child = os.fork()
if child == 0:
    try:
        os.setsid()
        os._exit(3)
    except PermissionError:
        os._exit(4)
_, status = os.waitpid(child, 0)
print(os.getsid(0), os.waitstatus_to_exitcode(status))
"""
    res, _ = judge(stdin_problem([""], ["1 4"]), code, sealed)
    assert res.results == [True], res.details


def test_a_huge_int_or_a_forged_report_number_is_this_programs_verdict_only(sealed):
    """A wrong answer that is an int of 5,000 digits made the detail message raise (json.dumps and repr refuse
    such ints), and a report whose cpu_s was an int of 400 digits raised OverflowError: either stopped the whole
    run. Now the first is a wrong answer and the second breaks this program's sandbox."""
    p = Problem("c", "q", fn_name="f", inputs=[[1], [2]], outputs=[5, 5])
    res, _ = judge(p, "def f(x):\n    return 10 ** 5000\n", sealed)
    assert res.results == [False, False] and "<int of about 5000 digits>" in res.details[0], res.details
    forged = """
import json
dumps = json.dumps
def forged(obj, *a, **k):
    if isinstance(obj, dict) and obj.get("ev") == "done":
        obj = dict(obj, cpu_s=10 ** 400)
    return dumps(obj, *a, **k)
json.dumps = forged
def f(x):
    return 5
"""
    res, _ = judge(p, forged, sealed)
    assert res.results == [-1, -1] and "out of range" in res.details[0], res.details


def test_a_stdin_program_that_stops_its_runner_still_times_out(sealed):
    """The test's child runs as the runner's uid: it stopped the runner with SIGSTOP, slept past the limit,
    printed, and had a grandchild send SIGCONT: 3.4 s passed under 2 s. The host times every test itself."""
    code = """
import os, signal, time
runner = os.getppid()
if os.fork() == 0:
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.01)
    os.kill(runner, signal.SIGCONT)
    os._exit(0)
os.kill(runner, signal.SIGSTOP)
time.sleep(1.6)
print(42)
"""
    res, _ = judge(stdin_problem([""], ["42"]), code, sealed, timeout=1.0)
    assert res.results == [-1] and res.details[0].startswith("timeout"), res.details
    res, _ = judge(stdin_problem([""], ["42"]), code.replace("1.6", "0.1"), sealed, timeout=1.0)
    assert res.results == [True], res.details  # stopping its runner briefly is no offence in itself


def test_a_module_body_that_patches_the_clock_still_times_out(sealed):
    """A call-based body that cancelled its timer and patched time.monotonic reported 6.4 s as in time; the host
    times the body from the runner's stamped "body" packet, sent before the program's code runs."""
    code = """
import signal, time
signal.setitimer(signal.ITIMER_REAL, 0)
real = time.monotonic
t0 = real()
while real() - t0 < 2.0:
    pass
end = real()
time.monotonic = lambda: real() - (end - t0)
def f(x):
    return 5
"""
    p = Problem("c", "q", fn_name="f", inputs=[[1], [2]], outputs=[5, 5])
    res, _ = judge(p, code, sealed, timeout=1.0)
    assert res.results == [-1, -1] and res.details[0] == "timeout (module body)", res.details
    res, _ = judge(p, code.replace("< 2.0", "< 0.2"), sealed, timeout=1.0)
    assert res.results == [True, True], res.details


def test_the_run_directory_itself_keeps_no_state_between_tests(sealed):
    """Emptying /tmp left its own extended attributes and mode: a counter kept in user.n passed tests whose
    expected outputs were 0, 1, 2, 3. The directory's attributes and mode are put back after each test."""
    code = """
import os
try:
    n = int(os.getxattr("/tmp", "user.n"))
except OSError as e:
    n = 0 if e.errno in (61, 95) else -1  # ENODATA: none yet; EOPNOTSUPP: this tmpfs keeps no user attributes
try:
    os.setxattr("/tmp", "user.n", str(n + 1).encode())
    os.chmod("/tmp", 0o755)
except OSError:
    pass
print(n)
"""
    res, _ = judge(stdin_problem(["", "", ""], ["0", "0", "0"]), code, sealed)
    assert res.results == [True, True, True], res.details


def test_a_slow_number_pattern_costs_the_host_nothing(sealed):
    """An output token of 40,000 digits and a bad last character, against an integer answer, made the decimal
    pattern backtrack for 31.8 s with the GIL held (a neighbour's tests timed out meanwhile); it is linear now.
    The answer is a wrong answer, judged in a fraction of its time limit."""
    res, elapsed = judge(stdin_problem([""], ["3\n" + "a" * 20000]), "print('1' * 39999 + 'x')", sealed,
                         timeout=2.0)
    assert res.results == [False] and elapsed < 10, (res.details, elapsed)  # a hang guard, not a speed claim


# ---------------------------------------------------------------- attacks on the warm process
def test_killing_the_warm_process_fails_the_rest(any_mode):
    code = "import os, sys\nif sys.stdin.read() == 'kill':\n    os.kill(os.getppid(), 9)\nprint('ok')\n"
    res, elapsed = judge(stdin_problem(["a", "kill", "b"], ["ok", "ok", "ok"]), code, any_mode)
    assert res.results[0] is True and res.results[2] == -1 and res.results[1] in (True, -1), res.details
    assert elapsed < 6


def test_kill_everything_it_can(any_mode):
    if any_mode == "fallback" and not IS_ROOT:
        pytest.skip("fallback without root shares the caller's uid: kill(-1) would reach the test runner")
    code = "import os, signal, sys\nif sys.stdin.read() == 'all':\n    os.kill(-1, signal.SIGKILL)\nprint('ok')\n"
    res, elapsed = judge(stdin_problem(["all", "b"], ["ok", "ok"]), code, any_mode)
    assert res.results[-1] == -1 and elapsed < 6, res.details


def test_killing_its_parent_from_the_module_body(sealed):
    # the warm process's parent is the sandbox's init (pid 1): the kill is ignored and the checks go on
    p = Problem("c", "q", fn_name="f", inputs=[[1], [2]], outputs=[1, 2])
    res, _ = judge(p, "import os\nos.kill(os.getppid(), 9)\nos.kill(1, 19)\ndef f(x):\n    return x\n", sealed)
    assert res.results == [True, True], res.details


def test_process_limit_exhausted_by_one_test(any_mode):
    if any_mode == "fallback" and not IS_ROOT:
        pytest.skip("fallback without root: RLIMIT_NPROC counts all of the caller's processes")
    code = ("import os, sys\nif sys.stdin.read() == 'bomb':\n    while True:\n        try:\n            os.fork()\n"
            "        except OSError:\n            pass\nprint('ok')\n")
    res, elapsed = judge(stdin_problem(["bomb", "x", "y"], ["ok", "ok", "ok"]), code, any_mode, timeout=1.5)
    assert res.results == [-1, True, True], res.details  # the next tests fork fine again
    assert elapsed < 8


def test_daemon_of_one_test_is_gone_before_the_next(any_mode):
    marker = f"pt_daemon_{uuid.uuid4().hex[:8]}"
    code = f"""
import os, sys, time
if sys.stdin.read() == "spawn":
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(0.3)
            open("{marker}", "w").write("alive")
            time.sleep(100)
        os._exit(0)
    os.wait()
    print("spawned")
else:
    time.sleep(0.6)
    mine = os.getpid()
    others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, mine, os.getppid())]
    def state(p):
        try:
            return open(f"/proc/{{p}}/stat").read().split()[2]
        except OSError:  # exited since the listing (fallback mode sees the host's processes come and go)
            return "Z"
    others = [p for p in others if state(p) != "Z"]
    print(len(others) if {any_mode != "fallback"} else 0, os.path.exists("{marker}"))
"""
    res, _ = judge(stdin_problem(["spawn", "look"], ["spawned", "0 False"]), code, any_mode)
    assert res.results == [True, True], res.details


def test_sleeping_forever_after_printing(any_mode):
    res, elapsed = judge(stdin_problem(["", ""], ["3", "3"]),
                         "import time\nprint(3, flush=True)\ntime.sleep(1000)", any_mode, timeout=1.0)
    assert res.results == [-1, -1] and res.details[0] == "timeout" and elapsed < 5


def test_stderr_flood_is_stopped_within_its_limit(any_mode):
    res, elapsed = judge(stdin_problem([""], ["1"]), "import sys\nwhile True:\n    sys.stderr.write('e' * 65536)",
                         any_mode, timeout=1.5)
    assert res.results[0] in (False, -1) and elapsed < 4, (res.details, elapsed)


@pytest.mark.parametrize("code", [
    "x = []\nwhile True: x.append(bytearray(10**7))",
    "while True: print('y' * 1000)",
    "import os, time\nos.close(1)\ntime.sleep(100)",
    "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGXCPU):\n"
    "    signal.signal(s, signal.SIG_IGN)\nwhile True: pass",
    "x = pow(7, 10**9)",  # inside one C call
    "import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')",
], ids=["memory", "output-flood", "closed-stdout", "ignored-signals", "c-call", "regex"])
def test_suite_hostile_programs(any_mode, code):
    res, elapsed = judge(stdin_problem(["1 2\n", "3 4\n"], ["3", "7"]), code, any_mode, timeout=1.0,
                         memory_mb=256)
    assert not res.passed and all(r in (False, -1) for r in res.results) and elapsed < 8, res.details
