"""The per-test sandbox's init (prompt_tree/tasks/execution.py), as source text: it runs first in the sandbox, as root, with
`python -I -S -c INIT_SOURCE CONFIG`, so it is kept to the standard library and small. CONFIG (argv[1]) is the JSON
of prompt_tree.tasks.execution._init_config. It makes the filesystem read-only but for the run's directory, forks the program
with its rlimits and uid, enforces the wall limit, kills whatever the program left, and writes one JSON line of
status (exit code or signal, timed out, rusage) on fd cfg["status_fd"].
"""

INIT_SOURCE = r'''
import json, os, resource, signal, sys, time
cfg = json.loads(sys.argv[1])
status_fd = cfg["status_fd"]
os.set_inheritable(status_fd, False)

def report(**kw):
    try:
        os.write(status_fd, (json.dumps(kw) + "\n").encode())
    except OSError:
        pass

def unescape(s):  # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8))); i += 4
        else:
            out.append(s[i]); i += 1
    return "".join(out)

def read_only_view(workdir):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
    MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
    MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
    keep = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
            "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}

    def mount(src, dst, flags):
        if libc.mount(src, dst.encode(), None, flags, None) != 0:
            raise OSError(ctypes.get_errno(), "mount %s: %s" % (dst, os.strerror(ctypes.get_errno())))

    mount(None, "/", MS_REC | MS_PRIVATE)  # nothing done here may leak to the host's mounts
    mount(workdir.encode(), workdir, MS_BIND)  # the one writable place becomes a mount of its own
    # The interpreter may live where the program's uid cannot go (pyenv under /root, mode 0700): cover the
    # first closed directory on its path with a tmpfs holding only the path down to it, bind-mounted back.
    targets = {}
    for p in cfg["expose"]:
        try:
            targets[p] = os.open(p, os.O_PATH)
        except OSError:
            pass
    for p, fd in targets.items():
        parts, cur = p.strip("/").split("/"), "/"
        for i, name in enumerate(parts):
            nxt = os.path.join(cur, name)
            hidden = not os.path.exists(nxt)  # under a tmpfs laid by an earlier target
            if hidden or not (os.stat(cur).st_mode & 0o001):
                if not hidden:
                    if libc.mount(b"tmpfs", cur.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=755,size=1m") != 0:
                        raise OSError(ctypes.get_errno(), "tmpfs on %s failed" % cur)
                os.makedirs(p, mode=0o755, exist_ok=True)
                mount(("/proc/self/fd/%d" % fd).encode(), p, MS_BIND | MS_REC)
                break
            cur = nxt
        os.close(fd)
    with open("/proc/self/mountinfo") as f:
        entries = [line.split() for line in f]
    failed = []
    for e in entries:
        point = unescape(e[4])
        if point == workdir:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in e[5].split(","):
            flags |= keep.get(opt, 0)
        try:
            mount(None, point, flags)
        except OSError as exc:
            failed.append(str(exc))
    # a mount that stayed writable is a hole only for world-writable places: the program's uid owns nothing else
    return failed

def set_limits():
    lim = cfg["limits"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["as_bytes"], lim["as_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["fsize_bytes"], lim["fsize_bytes"]))
    if lim["nproc"] is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))

workdir = cfg["workdir"]
warnings_ = []
if cfg["namespace"]:
    try:
        warnings_ = read_only_view(workdir)
    except OSError as exc:
        report(setup_error=str(exc)); sys.exit(70)
elif cfg["subreaper"]:
    import ctypes
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the program come back here

os.chdir(workdir)
start = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        if not cfg["namespace"]:
            os.setpgid(0, 0)  # fallback: the program's tree gets a group of its own, killable in one call
        set_limits()
        uid = cfg["uid"]
        if uid is not None:
            os.setgroups([]); os.setgid(uid); os.setuid(uid)
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as exc:
        os.write(2, ("sandbox: cannot start the program: %r\n" % (exc,)).encode())
    os._exit(127)

report(started=pid)
timed_out = [False]
def on_alarm(signum, frame):
    timed_out[0] = True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, cfg["wall_s"])
_, status, ru = os.wait4(pid, 0)  # retried by Python after the handler (PEP 475)
wall = time.monotonic() - start
signal.setitimer(signal.ITIMER_REAL, 0)
if not cfg["namespace"]:
    # fallback: kill the program's group at once (a fork bomb outruns one-by-one kills), then, as a child
    # subreaper, every orphan of the program's tree that left the group, until none is left
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if cfg["subreaper"]:
        me = str(os.getpid())
        for _ in range(1000):
            try:
                with open("/proc/%s/task/%s/children" % (me, me)) as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            for k in kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except OSError:
                    pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                break
            if not kids:
                time.sleep(0.005)
report(
    exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
    signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
    timed_out=timed_out[0], wall_s=wall, cpu_s=ru.ru_utime + ru.ru_stime, max_rss_kb=ru.ru_maxrss,
    mount_warnings=warnings_[:3],
)
'''
