"""The zygote: one long-lived, single-threaded interpreter per host process that has already imported everything a
sandbox needs (the APPS preamble, numpy, the runner) and forks one sandbox per program on request.

Why: an interpreter start costs 10-60 ms and `import numpy` another ~100 ms; a fork of this process costs ~2 ms.

    host ──request (JSON + [control socket, program memfd])──▶ zygote
    zygote ─fork─▶ C: unshare(user, mount, pid, net, ipc, uts, cgroup); the zygote writes C's uid/gid maps
                   C ─fork─▶ I: pid 1 of the new PID namespace; seals (prompt_tree.tasks.sandbox.seal), then
                              I ─fork─▶ R: the warm runner (prompt_tree.tasks.sandbox.runner), one fork per test
                   C sends the host a pidfd of I and exits (I is re-parented to the zygote, a subreaper)

The host kills I through that pidfd when the program's checks end: the kernel then kills everything in the PID
namespace, and the pidfd reports I's exit only after that (the mount namespace and its tmpfs go with it). The
host never waits on these processes and never forks from its own (multi-threaded) process.

Fallback mode (no namespaces): C itself becomes the runner, in a new session, with rlimits, as a private uid
when the zygote is root, in a directory the host created and deletes.

The zygote reads nothing from the sandboxes; a request it cannot serve is reported on that program's control
socket. It exits when its request socket closes (the host process ended).

Started by prompt_tree.tasks.sandbox.host as `python -I -S -X utf8 -c BOOT CONFIG_JSON` with a minimal environment.
"""
from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import sys
import traceback

from prompt_tree.tasks.sandbox import seal, syscall_filter, wire
from prompt_tree.tasks.sandbox.config import sandbox_view, world_unreachable
from prompt_tree.tasks.sandbox.preamble import preamble_namespace, site_builtins
from prompt_tree.tasks.sandbox.processes import count_own_processes
from prompt_tree.tasks.sandbox.runner import Runner

# Imported once here so that no test pays for them (a forked child finds them in sys.modules).
PRELOAD = ("array", "bisect", "cmath", "copy", "dataclasses", "datetime", "decimal", "enum", "functools",
           "io", "json", "numbers", "operator", "queue", "re", "statistics", "string", "struct", "textwrap",
           "threading", "traceback", "atexit", "linecache", "types", "unicodedata")
_SYNC_TIMEOUT_S = 10.0


def main() -> None:
    cfg = json.loads(sys.argv[1])
    sock = socket.socket(fileno=cfg["request_fd"])
    try:
        names = _prepare(cfg)
    except BaseException as exc:  # noqa: B902 - reported to the host, which raises it
        wire.send_message(sock, {"ev": "zygote_error", "error": _trace(exc)})
        return
    wire.send_message(sock, {"ev": "zygote_ready", "pid": os.getpid(), "numpy": "np" in names,
                             "euid": os.geteuid()})
    _serve(sock, cfg, names)


def _prepare(cfg: dict) -> dict:
    """Imports, then the view (cfg gains "view" and "sys_path"), then the uid the sandboxes start from."""
    sys.path.extend(p for p in cfg["extra_sys_path"] if p not in sys.path)
    site_builtins()  # every sandbox forks from here, preamble or not
    names = preamble_namespace(with_numpy=cfg["numpy"])
    for name in PRELOAD:
        importlib.import_module(name)
    cfg["view"], cfg["sys_path"] = sandbox_view(tuple(cfg["packages"]))
    other_uid = cfg["run_as"] is not None or (cfg["isolation"] == "fallback" and os.geteuid() == 0)
    if other_uid:  # sandboxes will run as a uid that may not reach the interpreter (e.g. under /root)
        bound = [e["path"] for e in cfg["view"] if e["op"] == "bind"]
        cover = world_unreachable(bound)
        if cover:
            _cover_closed_ancestors(cover)
    if cfg["run_as"] is not None:
        uid = int(cfg["run_as"])
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        seal.prctl(seal.PR_SET_DUMPABLE, 1)  # a uid change cleared it; the maps of its children need it
    seal.set_subreaper()  # every sandbox's init ends up here, to be reaped
    seal.hold_devnull_stdio()
    return names


def _cover_closed_ancestors(paths: list[str]) -> None:
    """In the zygote's own mount namespace, make `paths` reachable by any uid: the first directory on each path
    that others cannot traverse (e.g. /root, mode 0700) is covered by a tmpfs holding only the path down to
    it, bind-mounted back. Used when sandboxes run as a uid other than the zygote's own without a mount view
    of their own (the forced user-namespace mode as root, and fallback mode)."""
    seal.unshare(seal.CLONE_NEWNS)
    seal.mount(None, "/", None, seal.MS_REC | seal.MS_PRIVATE)
    targets = {}
    for p in paths:
        try:
            targets[p] = os.open(p, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            pass
    for path, fd in targets.items():
        cur = "/"
        for name in path.strip("/").split("/"):
            nxt = os.path.join(cur, name)
            hidden = not os.path.lexists(nxt)  # under a tmpfs laid for an earlier path
            if hidden or not os.stat(cur).st_mode & 0o001:
                if not hidden:
                    seal.mount("tmpfs", cur, "tmpfs", seal.MS_NOSUID | seal.MS_NODEV, "mode=755,size=1m")
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.makedirs(path, mode=0o755, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
                seal.mount(f"/proc/self/fd/{fd}", path, None, seal.MS_BIND | seal.MS_REC)
                break
            cur = nxt
        os.close(fd)


def _serve(sock: socket.socket, cfg: dict, names: dict) -> None:
    while True:
        _reap()
        ready, _, _ = select.select([sock], [], [], 0.5)
        if not ready:
            continue
        try:
            req, fds = wire.recv_message(sock, max_fds=wire.MAX_FDS)
        except (OSError, wire.ProtocolError):
            return
        if req is None:
            return  # the host process is gone
        if req.get("op") != "spawn" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        _spawn(req, fds[0], fds[1], sock, cfg, names)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _spawn(req: dict, ctrl_fd: int, source_fd: int, request_sock: socket.socket, cfg: dict, names: dict) -> None:
    namespaced = req["mode"] != "fallback"
    sync_r, sync_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 70
        try:
            request_sock.close()
            os.close(sync_r)
            os.close(go_w)
            ctrl = socket.socket(fileno=ctrl_fd)
            try:
                if namespaced:
                    _namespaced_child(req, ctrl, source_fd, sync_w, go_r, cfg, names)
                else:
                    _fallback_child(req, ctrl, source_fd, cfg, names)
                status = 0
            except BaseException as exc:  # noqa: B902 - everything goes to the host, then this process ends
                try:
                    wire.send_message(ctrl, {"ev": "setup_error", "error": _trace(exc)[-2000:]})
                except OSError:
                    pass
        finally:
            os._exit(status)
    for fd in (ctrl_fd, source_fd, sync_w, go_r):
        os.close(fd)
    try:
        if namespaced:
            ready, _, _ = select.select([sync_r], [], [], _SYNC_TIMEOUT_S)
            if ready and os.read(sync_r, 1) == b"u":
                euid = os.geteuid()
                if euid == 0:
                    seal.write_id_maps(pid, req["uid"], req["uid"], deny_setgroups=False)
                else:  # unprivileged: only our own ids can be mapped, and setgroups must be denied first
                    seal.write_id_maps(pid, euid, os.getegid(), deny_setgroups=True)
                os.write(go_w, b"g")
            else:
                os.kill(pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)  # the child reports nothing more; the host sees its socket close
        except OSError:
            pass
    finally:
        os.close(sync_r)
        os.close(go_w)


def _read_source(fd: int) -> str:
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="surrogateescape")


def _namespaced_child(req, ctrl, source_fd, sync_w, go_r, cfg, names) -> None:
    seal.unshare(seal.SANDBOX_NAMESPACES)
    os.write(sync_w, b"u")
    os.close(sync_w)
    if os.read(go_r, 1) != b"g":
        raise seal.SealError(0, "the zygote did not write the id maps")
    os.close(go_r)
    fds = seal.open_view(cfg["view"])
    seal.become_inside_user(drop_groups=os.geteuid() == 0 and os.getuid() == 0)
    go2_r, go2_w = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(go2_w)
        _init(req, ctrl, source_fd, go2_r, fds, cfg, names)  # never returns
    os.close(go2_r)
    pidfd = os.pidfd_open(init)
    wire.send_message(ctrl, {"ev": "init"}, [pidfd])  # first, and before the sandbox runs anything of its own
    os.close(pidfd)
    os.write(go2_w, b"g")


def _init(req, ctrl, source_fd, go_r, fds, cfg, names) -> None:
    status = 70
    try:
        if os.read(go_r, 1) != b"g":
            os._exit(status)
        os.close(go_r)
        limits = req["limits"]
        warnings = []
        try:
            # A session of its own: where the kernel's autogroup applies (it is on, and the tasks sit in the root
            # CPU cgroup, as outside containers and cgroup-v2 systemd services), CPU is shared between sessions
            # before the processes in them, so a program's busy processes share one sandbox's share. In the
            # zygote's session, one program with 27 spinning processes made a neighbour that needs 0.5 s time out
            # on 10 of 10 tests under a 2 s limit (2 cores); with this, it passed 10 of 10. The syscall filter
            # keeps the program from making sessions of its own.
            os.setsid()
            unmasked = seal.build_root(cfg["view"], fds, cfg["staging"], limits["tmp_mb"], limits["tmp_inodes"])
            if unmasked:
                warnings.append(f"/proc files not masked (host state the program can read): {', '.join(unmasked)}")
            for fd in fds.values():
                os.close(fd)
            try:
                seal.forbid_new_user_namespaces()
            except OSError as exc:
                warnings.append(f"max_user_namespaces could not be set to 0 ({exc}): the program may create "
                                f"user namespaces of its own")
            seal.set_hostname()
            seal.apply_limits(limits, limits["nproc"])
            keyring = seal.new_session_keyring()
            if keyring:
                warnings.append(keyring)
            seal.drop_privileges()
            if not syscall_filter.install():
                warnings.append("no seccomp filter for this architecture: memfd_create, the SysV IPC calls, "
                                "the keyring calls and every socket family stay allowed")
            _minimal_environment(seal.SANDBOX_TMP)
            source = _read_source(source_fd)
        except BaseException as exc:  # noqa: B902
            wire.send_message(ctrl, {"ev": "setup_error", "error": _trace(exc)[-2000:]})
            os._exit(status)
        wire.send_message(ctrl, {"ev": "sealed", "warnings": warnings})
        runner = os.fork()
        if runner == 0:
            status = 0
            seal.set_subreaper()
            spec = dict(req["spec"], source=source)
            try:
                Runner(ctrl, spec, names, seal.SANDBOX_TMP, "kill_all", cfg["sys_path"]).serve()
            except BaseException:  # noqa: B902 - the host sees the socket close: remaining tests fail
                status = 1
            os._exit(status)
        ctrl.close()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)  # pid 1: default-action signals from inside are ignored
        while True:
            try:
                pid, _ = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == runner:
                break  # its exit ends the namespace: the kernel kills what is left
        status = 0
    finally:
        os._exit(status)


def _fallback_child(req, ctrl, source_fd, cfg, names) -> None:
    os.setsid()
    os.chdir(req["workdir"])
    uid = req["uid"]
    private = uid is not None
    if private:  # root zygote: a uid no other process has, so kill(-1) and RLIMIT_NPROC see this sandbox only
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    limits = req["limits"]
    nproc = limits["nproc"] if private else count_own_processes() + limits["nproc"]
    seal.apply_limits(limits, nproc)
    seal.set_subreaper()
    seal.prctl(seal.PR_SET_NO_NEW_PRIVS, 1)
    seal.prctl(seal.PR_SET_DUMPABLE, 0)
    seal.new_session_keyring()  # (the fallback promises no isolation: its warnings say so already)
    syscall_filter.install()
    _minimal_environment(req["workdir"])
    source = _read_source(source_fd)
    pidfd = os.pidfd_open(os.getpid())
    wire.send_message(ctrl, {"ev": "init"}, [pidfd])
    os.close(pidfd)
    wire.send_message(ctrl, {"ev": "sealed", "warnings": ["fallback mode: no namespaces"]})
    spec = dict(req["spec"], source=source)
    sys_path = [p for p in sys.path if p != cfg["root"]]
    Runner(ctrl, spec, names, req["workdir"], "kill_all" if private else "group", sys_path).serve()


def _minimal_environment(home: str) -> None:
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                       "HOME": home, "TMPDIR": home, "PWD": home, "OPENBLAS_NUM_THREADS": "1",
                       "OMP_NUM_THREADS": "1"})


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


if __name__ == "__main__":
    main()
