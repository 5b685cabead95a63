"""Whether the Python running this file can take prompt-tree's install, and why (stdlib only; any Python 3).

    python3 scripts/pick_python.py      prints "yes <reason>" or "no <reason>"; exit code 0 either way,
                                        2 when this Python is older than prompt-tree supports

scripts/python.sh runs it with the python3 on PATH: on "no" it creates a virtual environment in the checkout
instead. Why a check at all: a non-root user's python3 is usually the system's, and there `pip install` fails,
either because the distribution marks it externally managed (PEP 668: Debian 12, Ubuntu 23.04 and later) or
because its site-packages belongs to root.
"""
from __future__ import annotations

import os
import sys
import sysconfig

MIN_VERSION = (3, 10)  # pyproject.toml's requires-python


def decide(prefix: str, base_prefix: str, stdlib: str, purelib: str) -> tuple[bool, str]:
    """(installable, reason) for a Python with these sys.prefix / sys.base_prefix and sysconfig paths.

    A virtual environment always takes installs: PEP 668's marker applies to the base interpreter only."""
    if os.path.realpath(prefix) != os.path.realpath(base_prefix):
        return True, "a virtual environment"
    if os.path.isfile(os.path.join(stdlib, "EXTERNALLY-MANAGED")):
        return False, "externally managed (PEP 668): pip refuses to install into it"
    if not os.access(purelib, os.W_OK):
        return False, f"its site-packages ({purelib}) is not writable by this user"
    return True, "its site-packages is writable"


def main() -> int:
    if sys.version_info[:2] < MIN_VERSION:
        print(f"no Python {sys.version.split()[0]} is older than prompt-tree's minimum "
              f"{'.'.join(map(str, MIN_VERSION))}")
        return 2
    ok, why = decide(sys.prefix, sys.base_prefix, sysconfig.get_path("stdlib"), sysconfig.get_path("purelib"))
    print(("yes " if ok else "no ") + why)
    return 0


if __name__ == "__main__":
    sys.exit(main())
