"""What a sandbox is allowed: SandboxConfig (validated on construction) and the filesystem view it gets.

Isolation modes (`SandboxConfig.isolation`, or the environment variable PT_SANDBOX):
- "namespace": user, mount, PID, network, IPC, UTS and cgroup namespaces and the minimal root. As root the
  program runs as a fresh host uid (random, far above login uids); as any other user, as that user's uid
  (an unprivileged user namespace maps only the caller's own uid). As non-root it is the same as "userns".
- "userns": the path a non-root user takes. Run as root, it makes the zygote drop to uid `run_as` (default
  65534, nobody) before creating any sandbox, so the kernel treats every step exactly as it would for a user
  without privileges: the way CI tests the non-root path on a root machine.
- "fallback": no namespaces: a new session, rlimits, and (as root) a fresh uid; the program sees the host's
  filesystem and network. Used only where user namespaces are refused, with a warning (prompt_tree.tasks.sandbox.detect).
- "auto": "namespace" where it works, else "fallback" with a warning.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass

ISOLATIONS = ("auto", "namespace", "userns", "fallback")
ENV_VAR = "PT_SANDBOX"
NOBODY_UID = 65534
DEFAULT_PACKAGES = ("numpy",)
# Candidate system library locations; whichever exist (as directories or symlinks) are shown to the sandbox.
_SYSTEM_LINKS = ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib64", "/usr/lib32")
_LOADER_FILES = ("/etc/ld.so.cache",)


class SandboxConfigError(ValueError):
    """A sandbox setting that cannot work; the message names the field."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation of one program's sandbox.

    isolation: see the module docstring (None: env PT_SANDBOX, else "auto"). memory_mb: address space the
    program may add to the warm interpreter's own. max_processes: processes and threads at once (RLIMIT_NPROC,
    the runner included). tmp_mb / tmp_inodes: size and file count of the writable /tmp (the run's
    directory). max_output_bytes: stdout and stderr cap per test (a program past it is stopped). packages:
    site-packages the program may import (top-level names; numpy is the preamble's `np`). run_as: the uid the
    zygote drops to before forking sandboxes (only as root; "userns" defaults it to 65534).
    """

    isolation: str | None = None
    memory_mb: int = 1024
    max_processes: int = 32
    tmp_mb: int = 64
    tmp_inodes: int = 4096
    max_output_bytes: int = 16 << 20
    max_open_files: int = 64
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    run_as: int | None = None

    def __post_init__(self):
        def fail(name, why):
            raise SandboxConfigError(f"SandboxConfig.{name}: {why} (got {getattr(self, name)!r})")

        iso = self.isolation if self.isolation is not None else os.environ.get(ENV_VAR, "auto")
        if iso not in ISOLATIONS:
            raise SandboxConfigError(f"sandbox isolation {iso!r} is not one of {ISOLATIONS} "
                                     f"(SandboxConfig.isolation, --isolation or env {ENV_VAR})")
        object.__setattr__(self, "isolation", iso)
        for name, low in (("memory_mb", 32), ("max_processes", 2), ("tmp_mb", 1), ("tmp_inodes", 16),
                          ("max_output_bytes", 1), ("max_open_files", 16)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                fail(name, f"must be an int >= {low}")
        object.__setattr__(self, "packages", tuple(self.packages))
        if not all(isinstance(p, str) and p.isidentifier() for p in self.packages):
            fail("packages", "must be top-level package names such as ('numpy',)")
        if self.run_as is not None and (isinstance(self.run_as, bool) or not isinstance(self.run_as, int)
                                        or self.run_as < 1):
            fail("run_as", "must be a uid >= 1 or None")

    def zygote_run_as(self, isolation: str) -> int | None:
        """The uid the zygote for `isolation` runs as, or None for the host's own."""
        if os.geteuid() != 0:
            return None
        if self.run_as is not None:
            return self.run_as
        return NOBODY_UID if isolation == "userns" else None


def interpreter_paths() -> dict:
    """The interpreter's pieces: executable, shared library (if any), stdlib and site-packages directories."""
    paths = sysconfig.get_paths()
    exe = os.path.realpath(sys.executable)
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    shared = os.path.realpath(os.path.join(libdir, soname)) if libdir and soname else None
    stdlib = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib")}
    site = {os.path.realpath(paths[k]) for k in ("purelib", "platlib")}
    zipped = os.path.join(os.path.dirname(os.path.realpath(paths["stdlib"])),
                          f"python{sys.version_info[0]}{sys.version_info[1]}.zip")
    return {"executable": exe, "shared": shared if shared and os.path.isfile(shared) else None,
            "stdlib": sorted(p for p in stdlib if os.path.isdir(p)), "site": sorted(p for p in site if os.path.isdir(p)),
            "zip": zipped if os.path.isfile(zipped) else None}


def package_paths(names: tuple[str, ...]) -> list[str]:
    """Directories (or single-module files) of the allowed packages, plus the vendored-library directory a
    manylinux wheel keeps beside the package (numpy.libs holds numpy's OpenBLAS)."""
    out = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue  # not installed: the program simply cannot import it
        if spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                out.append(os.path.realpath(loc))
                libs = os.path.realpath(loc) + ".libs"
                if os.path.isdir(libs):
                    out.append(libs)
        else:
            out.append(os.path.realpath(spec.origin))
    return out


def mapped_library_dirs() -> list[str]:
    """Directories of the shared libraries this interpreter has mapped (libc, libm, libffi, ...), outside
    the interpreter's own prefix; loading a further extension module needs the same directories."""
    prefixes = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    dirs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5].startswith("/") and ".so" in parts[5]:
                    path = os.path.realpath(parts[5])
                    if not any(path.startswith(p + os.sep) for p in prefixes):
                        dirs.add(os.path.dirname(path))
    except OSError:
        pass
    for extra in ("/usr/lib/locale",):
        if os.path.isdir(extra):
            dirs.add(extra)
    return sorted(dirs)


def sandbox_view(packages: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    """(view, sys_path): what the minimal root holds, in mount order (see prompt_tree.tasks.sandbox.seal.build_root), and
    the program's sys.path in it. Everything is bound read-only at its own path. Computed in the zygote after
    its imports, so the library directories are those the preamble and numpy need (not the host's, which
    may have torch and CUDA mapped)."""
    interp = interpreter_paths()
    view: list[dict] = []
    seen: set[str] = set()

    def add(op, path, **kw):
        if path not in seen:
            seen.add(path)
            view.append(dict(op=op, path=path, **kw))

    for link in _SYSTEM_LINKS:
        if os.path.islink(link):
            add("symlink", link, target=os.readlink(link))
    for d in mapped_library_dirs():
        add("bind", d)
    for f in _LOADER_FILES:
        if os.path.isfile(f):
            add("bind", f)
    add("bind", interp["executable"])
    if interp["shared"]:
        add("bind", interp["shared"])
    if interp["zip"]:
        add("bind", interp["zip"])
    for d in interp["stdlib"]:
        add("bind", d)
    allowed = package_paths(packages)
    for site in interp["site"]:
        if any(site.startswith(d + os.sep) for d in interp["stdlib"]):
            add("mask", site)  # the stdlib bind would show every installed package: hide them all ...
    for p in allowed:
        add("bind", p)  # ... then show the allowed ones
    for dev in ("null", "zero", "full", "random", "urandom"):
        add("dev", f"/dev/{dev}")
    sys_path = [p for p in ([interp["zip"]] if interp["zip"] else []) + interp["stdlib"]]
    sys_path += [os.path.join(d, "lib-dynload") for d in interp["stdlib"]
                 if os.path.isdir(os.path.join(d, "lib-dynload"))]
    sys_path += sorted({os.path.dirname(p) for p in allowed})
    return view, sys_path


def world_unreachable(paths: list[str]) -> list[str]:
    """The paths a uid without rights of its own cannot reach (a closed directory on the way, e.g. /root)."""
    out = []
    for path in paths:
        cur = "/"
        for name in path.strip("/").split("/"):
            try:
                if not os.stat(cur).st_mode & 0o001:
                    out.append(path)
                    break
            except OSError:
                break
            cur = os.path.join(cur, name)
    return out
