"""Sealing one sandbox: namespaces, the minimal root, limits, and giving up every privilege.

Runs in the sandbox's own processes, forked from the zygote (prompt_tree.tasks.sandbox.zygote), never in the host process.
The steps and why each is there:

- `unshare(SANDBOX_NAMESPACES)`: new user, mount, PID, network, IPC, UTS and cgroup namespaces. The user
  namespace is what lets a non-root user do the rest, and even as root it is kept: inside it the program's
  uid is 1000, mapped to a fresh host uid (root) or to the caller's own uid (non-root); nothing else is mapped.
- `build_root`: a tmpfs becomes the new root, holding only read-only bind mounts of what the view lists (the
  interpreter, its standard library with site-packages masked by an empty tmpfs, the allowed packages, the
  system library directories the interpreter maps), a few device nodes, a procfs of the new PID namespace, and
  one writable, size- and inode-limited tmpfs at /tmp that is the run's directory. `pivot_root` then drops the
  host's tree from the namespace: no checkout, no dataset, no home, no host /tmp or its unix sockets.
- `forbid_new_user_namespaces`: writes 0 to this user namespace's max_user_namespaces, so the program cannot
  make a user namespace of its own, in which it would hold capabilities (and could, e.g., mount an unlimited
  tmpfs and fill memory).
- `apply_limits`: rlimits. In a user namespace RLIMIT_NPROC counts the (namespace, uid) pair, so it bounds this
  program's processes only, even where every sandbox shares one host uid.
- `drop_privileges`: capabilities (bounding, ambient, effective, permitted, inheritable) all dropped, no new
  privileges, not dumpable (no ptrace or /proc/PID/mem access between the sandbox's own processes).
- `new_session_keyring`: a fresh session keyring (the kernel keyring is not namespaced).
- `mask_proc`: the procfs files that show host-wide state (kernel keys and key quotas, kernel memory, timers,
  the scheduler's state, the kernel command line) are covered. Then `prompt_tree.tasks.sandbox.syscall_filter` installs the seccomp filter.

Stdlib only (ctypes for the syscalls Python does not wrap).
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import socket
import struct

from prompt_tree.tasks.sandbox import syscall_filter

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
SANDBOX_NAMESPACES = (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
                      | CLONE_NEWCGROUP)
INSIDE_UID = 1000  # the program's uid (and gid) inside its user namespace

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
MNT_DETACH = 2
# statvfs f_flag bits -> the mount flags a remount must repeat (the kernel locks them on mounts a user
# namespace inherited, and refuses a remount that would clear one)
_KEEP_FLAGS = ((2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME), (2048, MS_NODIRATIME),
               (4096, MS_RELATIME))

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 36, 38, 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PIVOT_ROOT_SYSCALL = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}
DEVICES = ("null", "zero", "full", "random", "urandom")
SANDBOX_TMP = "/tmp"  # the run's directory: cwd, HOME and TMPDIR of the program

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class SealError(OSError):
    """A sealing step failed; the message names the step."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise SealError(err, f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else s.encode()


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {target}")


def prctl(option: int, arg2: int = 0) -> None:
    _check(_libc.prctl(option, arg2, 0, 0, 0), f"prctl({option})")


def set_subreaper() -> None:
    """Orphans of this process's descendants come back to it (so it can kill and reap them)."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def pivot_root(new_root: str, put_old: str) -> None:
    number = _PIVOT_ROOT_SYSCALL.get(platform.machine())
    if number is None:
        raise SealError(0, f"pivot_root: syscall number unknown for {platform.machine()}")
    _check(_libc.syscall(number, _b(new_root), _b(put_old)), "pivot_root")


def write_id_maps(pid: int, host_uid: int, host_gid: int, deny_setgroups: bool) -> None:
    """Map INSIDE_UID/INSIDE_GID of `pid`'s new user namespace to one host uid/gid (called by its parent)."""
    if deny_setgroups:  # required before gid_map for an unprivileged writer
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write(f"{INSIDE_UID} {host_uid} 1\n")
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write(f"{INSIDE_UID} {host_gid} 1\n")


def become_inside_user(drop_groups: bool) -> None:
    """Take uid/gid INSIDE_UID (capabilities in the user namespace remain until drop_privileges): files the
    sandbox creates must belong to a uid mapped in it."""
    if drop_groups:
        os.setgroups([])
    os.setresgid(INSIDE_UID, INSIDE_UID, INSIDE_UID)
    os.setresuid(INSIDE_UID, INSIDE_UID, INSIDE_UID)


def open_view(view: list[dict]) -> dict[str, int]:
    """O_PATH descriptors of every bound path, opened in the new mount namespace (a descriptor from another
    mount namespace cannot be a bind source) and before the uid changes (a path under a closed directory
    such as /root stays reachable)."""
    fds = {}
    for entry in view:
        if entry["op"] in ("bind", "dev"):
            fds[entry["path"]] = os.open(entry["path"], os.O_PATH | os.O_CLOEXEC)
    return fds


def _kept_flags(path: str) -> int:
    f = os.statvfs(path).f_flag
    return sum(ms for st, ms in _KEEP_FLAGS if f & st)


def _make_mountpoint(target: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))


def _bind(fd: int, target: str, read_only: bool, extra: int) -> None:
    source = f"/proc/self/fd/{fd}"
    try:
        mount(source, target, None, MS_BIND)
    except SealError:
        mount(source, target, None, MS_BIND | MS_REC)  # a tree with locked submounts binds only as a whole
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | extra | _kept_flags(target)
    mount(None, target, None, flags | (MS_RDONLY if read_only else 0))


def build_root(view: list[dict], fds: dict[str, int], staging: str, tmp_mb: int, tmp_inodes: int) -> list[str]:
    """Build the minimal root at `staging` and pivot into it (see the module docstring); returns the PROC_MASKED
    files left uncovered (mask_proc). view entries:
    {"op": "bind", "path"} read-only bind of a file or directory at the same path; {"op": "mask", "path"} an
    empty read-only tmpfs over a directory inside an earlier bind; {"op": "symlink", "path", "target"};
    {"op": "dev", "path"} a device node (bound writable, not read-only: /dev/null must take writes)."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates to the host
    mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=4096,mode=755")
    masks = []
    for entry in view:
        path, op = entry["path"], entry["op"]
        target = staging + path
        if op == "symlink":
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.lexists(target):
                os.symlink(entry["target"], target)
        elif op == "mask":
            _make_mountpoint(target, True)
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,nr_inodes=256,mode=755")
            masks.append(target)
        elif op in ("bind", "dev"):
            fd = fds[path]
            is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
            _make_mountpoint(target, is_dir)
            if op == "dev":
                _bind(fd, target, read_only=False, extra=MS_NOEXEC)
            else:
                _bind(fd, target, read_only=True, extra=MS_NODEV)
        else:
            raise SealError(0, f"view: unknown op {op!r}")
    dev = staging + "/dev"
    os.makedirs(dev, exist_ok=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        if not os.path.lexists(f"{dev}/{name}"):
            os.symlink(target, f"{dev}/{name}")
    os.makedirs(staging + SANDBOX_TMP, exist_ok=True)
    mount("tmpfs", staging + SANDBOX_TMP, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={tmp_mb}m,nr_inodes={tmp_inodes},mode=700,uid={INSIDE_UID},gid={INSIDE_UID}")
    os.makedirs(staging + "/proc", exist_ok=True)
    # A procfs of the new PID namespace: the program sees its own processes only. Must be mounted by a process
    # of that namespace (this one, its init).
    mount("proc", staging + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    unmasked = mask_proc(staging + "/proc", staging + "/dev/null")
    old = staging + "/.old_root"
    os.makedirs(old, exist_ok=True)
    pivot_root(staging, old)
    os.chdir("/")
    _check(_libc.umount2(b"/.old_root", MNT_DETACH), "umount the old root")
    os.rmdir("/.old_root")
    for target in masks:
        mount(None, target[len(staging):], None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(SANDBOX_TMP)
    return unmasked


# procfs files with host-wide state that a PID namespace does not filter: the kernel keys the reader possesses
# or may view (their descriptions), per-user key quotas, kernel memory, timers and the scheduler's state of
# every CPU, the kernel's command line
PROC_MASKED = ("keys", "key-users", "kcore", "timer_list", "sched_debug", "cmdline")


def mask_proc(proc: str, null: str) -> list[str]:
    """Cover PROC_MASKED under the procfs mounted at `proc` with read-only binds of `null` (a /dev/null that a
    read finds empty), as container runtimes do; a file this kernel does not have is skipped. Returns the names
    that could not be covered (the caller warns: what they show is host state, not a way out)."""
    failed = []
    fd = os.open(null, os.O_PATH | os.O_CLOEXEC)
    try:
        for name in PROC_MASKED:
            target = f"{proc}/{name}"
            if not os.path.exists(target):
                continue
            try:
                mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
                mount(None, target, None,
                      MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC | _kept_flags(target))
            except SealError:
                failed.append(name)
    finally:
        os.close(fd)
    return failed


def forbid_new_user_namespaces() -> None:
    """Set this user namespace's max_user_namespaces to 0 (the limit is per user namespace and checked up the
    chain, so no process below can create one)."""
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")


def set_hostname(name: str = "sandbox") -> None:
    _check(_libc.sethostname(name.encode(), len(name)), "sethostname")


def apply_limits(limits: dict, nproc: int | None) -> None:
    """rlimits for everything the sandbox will run (soft = hard, so nothing can raise them back)."""
    def both(res, value):
        resource.setrlimit(res, (value, value))

    both(resource.RLIMIT_CORE, 0)
    both(resource.RLIMIT_FSIZE, limits["fsize_bytes"])
    both(resource.RLIMIT_MEMLOCK, 64 << 10)
    both(resource.RLIMIT_MSGQUEUE, 0)
    both(resource.RLIMIT_RTPRIO, 0)
    both(resource.RLIMIT_NICE, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    both(resource.RLIMIT_NOFILE, min(limits["nofile"], hard if hard != resource.RLIM_INFINITY else limits["nofile"]))
    if nproc is not None:
        both(resource.RLIMIT_NPROC, nproc)


def drop_privileges() -> None:
    """No capabilities anywhere, no way to gain any, and not dumpable (see the module docstring)."""
    last = 63
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        pass
    for cap in range(last + 1):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: no such cap
            _check(-1, f"drop capability {cap} from the bounding set")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL on kernels without ambient caps

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(_LINUX_CAPABILITY_VERSION_3, 0), (Data * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_DUMPABLE, 0)


_KEYCTL_JOIN_SESSION_KEYRING = 1
# keyctl's number by (platform.machine(), pointer size): the ABI this interpreter calls with. The seccomp
# filter's architectures take theirs from its table; on the others the fresh keyring is all that keeps the
# harness's keys away.
_KEYCTL = {**{(arch, 8): calls["keyctl"] for arch, calls in syscall_filter.DENIED.items()},
           ("riscv64", 8): 219, ("s390x", 8): 280, ("ppc64le", 8): 271,
           ("x86_64", 4): 288, ("i686", 4): 288, ("i386", 4): 288, ("armv7l", 4): 311, ("aarch64", 4): 311}


def new_session_keyring() -> str | None:
    """Join a fresh anonymous session keyring; returns None, or a warning where none could be joined. Keyrings
    are not namespaced: a sandbox inherits its creator's session keyring, and possessing it (not the uid) is
    what grants access to the keys in it, so a program could read what the harness's login kept there. The
    syscall filter then takes the keyring calls away (syscall_filter); this makes the sandbox possess nothing
    even where that filter is missing. Never fatal: without it the filter still refuses the calls."""
    number = _KEYCTL.get((platform.machine(), struct.calcsize("P")))
    filtered = syscall_filter.native_arch() is not None  # keyctl is denied to the program from here on
    if number is None:
        return (f"no fresh session keyring on {platform.machine()} (keyctl's number is not known here)"
                + ("" if filtered else ": the program may read the harness's session keys"))
    if _libc.syscall(number, _KEYCTL_JOIN_SESSION_KEYRING, None) >= 0:
        return None
    err = ctypes.get_errno()
    if err == errno.ENOSYS:  # a kernel without keys has nothing to leak
        return None
    # EPERM / EACCES: an outer seccomp profile (Docker's default) refuses keyctl, so the program cannot call it
    # either; EDQUOT: the user's key quota (200 by default) is spent, as ~200 sandboxes of one non-root user at
    # once spend it
    return (f"no fresh session keyring ({errno.errorcode.get(err, err)}): the harness's stays possessed"
            + (", though keyctl is filtered" if filtered else " and keyctl callable"))


def hold_devnull_stdio() -> None:
    """fds 0-2 on /dev/null: nothing the sandbox runs may inherit the zygote's (or the host's) stdio."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def socket_from_fd(fd: int) -> socket.socket:
    return socket.socket(fileno=fd)
