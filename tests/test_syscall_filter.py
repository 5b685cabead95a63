"""The seccomp program the sandbox installs (prompt_tree.tasks.sandbox.syscall_filter), run by a plain interpreter
of its instructions for both architectures it covers, whatever this machine is: what it denies and allows.
(The hostile-program tests check the installed filter on this machine's kernel.)"""
import pytest

from prompt_tree.tasks.sandbox import syscall_filter as f

ALLOW, DENY = f._RET_ALLOW, f._RET_ERRNO | 1  # EPERM


@pytest.mark.parametrize("arch", sorted(f.DENIED))
def test_the_filter_denies_and_allows_what_its_tables_say(arch):
    p, me = f.program(arch), f._AUDIT_ARCH[arch]
    run = lambda nr, *args: f.run_program(p, nr, me, *args)  # noqa: E731
    for name, nr in f.DENIED[arch].items():
        assert run(nr) == DENY, name
    sock, buf = f.SOCKET_CALLS[arch], f.BUFFER_CALLS[arch]
    for family in range(64):
        assert run(sock["socket"], family) == (ALLOW if family in f.SOCKET_FAMILIES else DENY), family
        assert run(sock["socketpair"], family) == (ALLOW if family in f.SOCKETPAIR_FAMILIES else DENY), family
    assert run(sock["socket"], (1 << 32) | 1) == ALLOW  # the kernel reads an int: only the low word counts
    for opt in range(64):
        want = DENY if opt in f.BUFFER_OPTIONS.values() else ALLOW
        assert run(buf["setsockopt"], 3, f.SOL_SOCKET, opt) == want, opt
        assert run(buf["setsockopt"], 3, 6, opt) == ALLOW  # IPPROTO_TCP: its option numbers mean other things
    assert run(buf["fcntl"], 3, f.F_SETPIPE_SZ) == DENY
    for cmd in (0, 1, 2, 3, 4, 1032):  # F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETPIPE_SZ
        assert run(buf["fcntl"], 3, cmd) == ALLOW
    denied = set(f.DENIED[arch].values()) | set(sock.values()) | set(buf.values())
    for nr in range(460):  # every other call of this ABI passes through
        if nr not in denied:
            assert run(nr) == ALLOW, nr
    assert f.run_program(p, 0, me ^ 1) == DENY  # another ABI (i386 on x86_64) is refused whole
    if arch == "x86_64":
        assert run(0x40000000 | 1) == DENY  # x32 numbering


HEADERS = {"x86_64": ["/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm/unistd_64.h"],
           "aarch64": ["/usr/include/asm-generic/unistd.h"]}


@pytest.mark.parametrize("arch", sorted(f.DENIED))
def test_the_syscall_numbers_are_the_kernel_headers(arch):
    """The tables against the kernel's own headers, where this machine has them (the hostile tests call the
    same numbers, so a wrong one there would still read as refused)."""
    import os
    import re

    path = next((p for p in HEADERS[arch] if os.path.exists(p)), None)
    if path is None:
        pytest.skip(f"no kernel headers for {arch} here")
    text = open(path).read()
    numbers = {m.group(1): int(m.group(2)) for m in re.finditer(r"#define __NR(?:3264)?_(\w+)\s+(\d+)\b", text)}
    for table in (f.DENIED[arch], f.SOCKET_CALLS[arch], f.BUFFER_CALLS[arch]):
        for name, nr in table.items():
            assert numbers.get(name) == nr, (arch, name, nr, numbers.get(name))
