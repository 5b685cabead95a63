"""The sandbox's seccomp filter: system calls no APPS program needs, which reach past every other seal.

Each entry says what the call would give a program that the namespaces, rlimits and dropped capabilities do not
already take away:

- memory no rlimit bounds. RLIMIT_AS counts mappings only. Without a mapping, a memfd, a SysV shared-memory
  segment, a message queue or a semaphore set holds kernel memory: `memfd_create`, `memfd_secret`, `shmget`,
  `msgget`, `semget`. A fresh IPC namespace allows 32,000 sets of 32,000 semaphores, about 2 MiB each. One
  program pinned 3.5 GiB that way, outside every limit and the OOM killer's view, and kept it across tests (the
  IPC namespace lives as long as the sandbox).
- the kernel keyring, which no namespace separates: `keyctl`, `add_key`, `request_key`. A sandbox inherits its
  creator's session keyring, and possession ignores the change of uid. With these calls a program read a secret
  the harness's login kept there, and planted a key that outlived its sandbox. The sandbox also joins a fresh
  session keyring of its own (seal.new_session_keyring), so nothing is possessed even where this filter is not
  installed.
- socket families that the empty network namespace does not cover. `socket` and `socketpair` are allowed for
  AF_UNIX, `socket` also for AF_INET and AF_INET6 (a program may make a socket; with no interface, nothing
  answers). Every other family fails: AF_VSOCK is not namespaced and reaches the host's port space; AF_NETLINK
  talks to the kernel; the packet families need capabilities anyway.
- `setsid`: each sandbox is one session (the zygote makes it so), and where the kernel's autogroup is on, CPU
  is shared between sessions first. A program whose processes each made a session of their own would get one
  share per process and starve the programs beside it.
- buffers that hold kernel memory past the default: `setsockopt(SOL_SOCKET, SO_SNDBUF / SO_RCVBUF / their
  FORCE forms)` and `fcntl(F_SETPIPE_SZ)`. Socket pairs filled to a raised SO_SNDBUF (8 MiB each where
  net.core.wmem_max is 4 MiB) pinned about 470 MiB per process outside every limit; at the default (about 208
  KiB) the 64 descriptors a process may open hold about 13 MiB.
- kernel attack surface and host-wide quotas: `io_uring_*`, `bpf`, `perf_event_open`, `userfaultfd`.
  `inotify_init`, `inotify_init1` and `fanotify_init` are there because inotify instances count against the
  host user's quota (128 by default). Where every sandbox maps to the caller's uid, one program could exhaust it
  for the harness itself.

Denied calls fail with EPERM. Calls of another ABI (i386 on x86_64, x32 numbering) are all denied, as the
filter would otherwise be bypassed through them. The filter is inherited by every child and cannot be removed.
On architectures other than x86_64 and aarch64 nothing is installed, and the caller warns.

Stdlib only: built in the sandbox's init (and the fallback's runner) with ctypes.
"""
from __future__ import annotations

import ctypes
import errno
import platform
import socket
import struct

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# syscall numbers: x86_64 from asm/unistd_64.h, aarch64 from asm-generic/unistd.h
DENIED = {
    "x86_64": {"memfd_create": 319, "memfd_secret": 447, "shmget": 29, "msgget": 68, "semget": 64,
               "keyctl": 250, "add_key": 248, "request_key": 249,
               "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
               "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
               "inotify_init": 253, "inotify_init1": 294, "fanotify_init": 300, "setsid": 112},
    "aarch64": {"memfd_create": 279, "memfd_secret": 447, "shmget": 194, "msgget": 186, "semget": 190,
                "keyctl": 219, "add_key": 217, "request_key": 218,
                "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
                "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
                "inotify_init1": 26, "fanotify_init": 262, "setsid": 157},
}
SOCKET_CALLS = {"x86_64": {"socket": 41, "socketpair": 53}, "aarch64": {"socket": 198, "socketpair": 199}}
SOCKET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)  # what `socket` may make
SOCKETPAIR_FAMILIES = (socket.AF_UNIX,)
# calls refused for some arguments only: setsockopt(fd, SOL_SOCKET, one of these), fcntl(fd, F_SETPIPE_SZ)
BUFFER_CALLS = {"x86_64": {"setsockopt": 54, "fcntl": 72}, "aarch64": {"setsockopt": 208, "fcntl": 25}}
SOL_SOCKET = 1
BUFFER_OPTIONS = {"SO_SNDBUF": 7, "SO_RCVBUF": 8, "SO_SNDBUFFORCE": 32, "SO_RCVBUFFORCE": 33}
F_SETPIPE_SZ = 1031

_X32_BIT = 0x40000000
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
# struct seccomp_data: nr (u32) at 0, arch (u32) at 4, instruction pointer at 8, args (u64 each) from 16. The
# arguments checked are ints, so the kernel reads only each one's low 32 bits (little-endian: its first word).
_NR, _ARCH, _ARG0, _ARG1, _ARG2 = 0, 4, 16, 24, 32


def program(arch: str) -> list[tuple[int, int, int, int]]:
    """The filter for `arch` as (code, jt, jf, k) instructions (classic BPF: jumps are relative, forward)."""
    deny = _RET_ERRNO | errno.EPERM
    denied = list(DENIED[arch].values())
    calls = SOCKET_CALLS[arch]
    # Labels resolved after layout: ("jump", code, k, true_label, false_label), labels as strings; None = next.
    body: list = [("ld", _ARCH), ("jeq", _AUDIT_ARCH[arch], None, "deny"), ("ld", _NR)]
    if arch == "x86_64":
        body.append(("jge", _X32_BIT, "deny", None))
    body += [("jeq", nr, "deny", None) for nr in denied]
    buffers = BUFFER_CALLS[arch]
    body += [("jeq", calls["socket"], "socket", None), ("jeq", calls["socketpair"], "socketpair", None),
             ("jeq", buffers["setsockopt"], "setsockopt", None), ("jeq", buffers["fcntl"], "fcntl", None),
             ("ret", _RET_ALLOW)]
    for name, families in (("socket", SOCKET_FAMILIES), ("socketpair", SOCKETPAIR_FAMILIES)):
        body.append(("label", name))
        body.append(("ld", _ARG0))
        body += [("jeq", int(f), "allow", None) for f in families]
        body.append(("ret", deny))
    body += [("label", "setsockopt"), ("ld", _ARG1), ("jeq", SOL_SOCKET, None, "allow"), ("ld", _ARG2)]
    body += [("jeq", opt, "deny", None) for opt in BUFFER_OPTIONS.values()]
    body += [("ret", _RET_ALLOW), ("label", "fcntl"), ("ld", _ARG1), ("jeq", F_SETPIPE_SZ, "deny", None),
             ("ret", _RET_ALLOW)]
    body += [("label", "allow"), ("ret", _RET_ALLOW), ("label", "deny"), ("ret", deny)]

    where, n = {}, 0
    for ins in body:
        if ins[0] == "label":
            where[ins[1]] = n
        else:
            n += 1
    out: list[tuple[int, int, int, int]] = []
    for ins in body:
        op = ins[0]
        if op == "label":
            continue
        if op == "ld":
            out.append((_LD_W_ABS, 0, 0, ins[1]))
        elif op == "ret":
            out.append((_RET_K, 0, 0, ins[1]))
        else:
            here = len(out) + 1  # jumps count from the next instruction
            jt, jf = (0 if t is None else where[t] - here for t in ins[2:4])
            if not (0 <= jt <= 255 and 0 <= jf <= 255):
                raise AssertionError(f"seccomp jump out of range in {ins}")
            out.append((_JEQ_K if op == "jeq" else _JGE_K, jt, jf, ins[1]))
    return out


def run_program(insns: list[tuple[int, int, int, int]], nr: int, arch_id: int, *args: int) -> int:
    """What the filter returns for one call: a plain interpreter of the instructions `program` emits, for the
    tests (they check every denied and allowed call this way on every architecture, not only the host's)."""
    data = {_NR: nr, _ARCH: arch_id}
    data.update({_ARG0 + 8 * i: a & 0xFFFFFFFF for i, a in enumerate(args)})
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == _LD_W_ABS:
            acc = data.get(k, 0)
        elif code == _RET_K:
            return k
        elif code in (_JEQ_K, _JGE_K):
            hit = acc == k if code == _JEQ_K else acc >= k
            pc += jt if hit else jf
        else:
            raise AssertionError(f"unknown instruction {code:#x}")
        pc += 1


def native_arch() -> str | None:
    """The architecture whose tables apply to this process: platform.machine() names the kernel's, so a 32-bit
    interpreter on a 64-bit kernel (whose calls use the other ABI and numbers) gets None, as does an
    architecture without tables."""
    arch = platform.machine()
    return arch if arch in _AUDIT_ARCH and struct.calcsize("P") == 8 else None


def install() -> bool:
    """Install the filter for this architecture (needs no_new_privs). Returns False where the architecture is
    not covered (nothing is installed then)."""
    arch = native_arch()
    if arch is None:
        return False

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

    insns = program(arch)
    table = (Filter * len(insns))(*[Filter(*x) for x in insns])
    prog = Program(len(insns), table)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter: {errno.errorcode.get(err, err)}")
    return True
