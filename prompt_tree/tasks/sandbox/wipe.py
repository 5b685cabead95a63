"""Empty or remove a directory tree that an untrusted program built, without recursion and without long paths.

`shutil.rmtree` recurses once per directory level (Python 3.11), so 3000 nested directories raise RecursionError,
and paths deeper than PATH_MAX cannot even be named. Here the walk is an explicit stack of directory
descriptors, every operation relative to one (`dir_fd`), so no path is ever longer than one name. The stack
is at most MAX_DEPTH deep (descriptors are a limited resource): a directory met below that is renamed up into
the top directory and walked from there later, so a chain of 3000 directories costs 3000/MAX_DEPTH renames.
Symlinks are removed, never followed; a directory the program closed (mode 000) is opened up first.

Stdlib only: the sandbox's warm interpreter uses it between tests (prompt_tree.tasks.sandbox.runner), the host after runs.
"""
from __future__ import annotations

import os
import stat

MAX_DEPTH = 24  # descriptors held at once: well inside the sandbox's RLIMIT_NOFILE (64)
_LIFTED = ".pt_wipe_"
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def empty_dir(top: str, max_entries: int | None = None) -> bool:
    """Delete everything inside directory `top` (which stays). Returns False if it gave up: an entry it
    cannot delete, or more than `max_entries` deletions (None: no bound)."""
    try:
        top_fd = os.open(top, _OPEN_DIR)
    except OSError:
        return False
    frames = [[top_fd, None, None, 0]]  # [dir fd, its name in the parent, its listing, next index]
    deleted, lifted, ok = 0, 0, True
    try:
        while frames:
            frame = frames[-1]
            fd = frame[0]
            if frame[2] is None:
                try:
                    frame[2], frame[3] = os.listdir(fd), 0
                except OSError:
                    frame[2], ok = [], False
            if frame[3] >= len(frame[2]):
                if len(frames) == 1:
                    try:
                        left = os.listdir(fd)  # directories lifted up here while walking
                    except OSError:
                        left = []
                    if left and any(n.startswith(_LIFTED) for n in left) and ok:
                        frame[2], frame[3] = left, 0
                        continue
                    ok = ok and not left
                    break
                frames.pop()
                os.close(fd)
                if not _try(os.rmdir, frame[1], dir_fd=frames[-1][0]):
                    ok = False
                else:
                    deleted += 1
                continue
            name = frame[2][frame[3]]
            frame[3] += 1
            if max_entries is not None and deleted > max_entries:
                return False
            try:
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            except OSError:
                continue  # gone already
            if not stat.S_ISDIR(mode):
                if _try(os.unlink, name, dir_fd=fd):
                    deleted += 1
                else:
                    ok = False
                continue
            if len(frames) >= MAX_DEPTH:
                for _ in range(100):  # a name the program took (a file, a full directory) refuses the rename
                    lifted += 1
                    if _try(os.rename, name, f"{_LIFTED}{lifted}", src_dir_fd=fd, dst_dir_fd=top_fd):
                        break
                else:
                    ok = False
                continue
            _try(os.chmod, name, stat.S_IRWXU, dir_fd=fd, follow_symlinks=False)
            try:
                sub = os.open(name, _OPEN_DIR, dir_fd=fd)
            except OSError:
                ok = False
                continue
            frames.append([sub, name, None, 0])
    finally:
        for frame in frames:
            os.close(frame[0])
    return ok


def remove_tree(path: str) -> bool:
    """Delete directory `path` and everything under it (see empty_dir). True if it is gone."""
    if not os.path.lexists(path):
        return True
    if os.path.islink(path) or not os.path.isdir(path):
        return _try(os.unlink, path)
    empty_dir(path)
    return _try(os.rmdir, path) or not os.path.lexists(path)


def _try(fn, *args, **kwargs) -> bool:
    try:
        fn(*args, **kwargs)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False
