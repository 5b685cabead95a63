"""A CPU-hungry program beside a benign one in the warm sandbox: how many of the benign one's tests pass.

    python neighbour_cpu.py HOSTILE REPO [setsid]

HOSTILE programs each fork 26 spinning processes (the 27 stay under max_processes 32 with the runner and init)
and spin themselves, on every one of 10 tests; with `setsid` each forked process first tries to start a session
of its own. Beside them one benign program needs about 0.5 s of CPU a test, under a 2 s limit. REPO: the tree
whose prompt_tree is imported (so the code before a change can be run the same way)."""
import sys
import time

sys.path.insert(0, sys.argv[2])
from prompt_tree.tasks.checker import check_many  # noqa: E402
from prompt_tree.tasks.problem import Problem  # noqa: E402

H = int(sys.argv[1])
SETSID = len(sys.argv) > 3 and sys.argv[3] == "setsid"
leave = "        try:\n            os.setsid()\n        except OSError:\n            pass\n" if SETSID else ""
hostile = f"import os\nfor _ in range(26):\n    if os.fork() == 0:\n{leave}        while True: pass\nwhile True: pass\n"
benign = "n = int(input())\ns = 0\nfor i in range(4_000_000): s += i\nprint(n * 2)\n"
pb = Problem("b", "q", inputs=[f"{i}\n" for i in range(10)], outputs=[str(2 * i) for i in range(10)])
ph = Problem("h", "q", inputs=[f"{i}\n" for i in range(10)], outputs=["42"] * 10)
t = time.monotonic()
res = check_many([(ph, hostile)] * H + [(pb, benign)], workers=H + 1, timeout=2.0, isolation="namespace")
b = res[-1]
print(f"hostile {H}{' (setsid)' if SETSID else ''}: benign {b.results.count(True)}/10 passed in "
      f"{b.wall_time:.1f} s, {sorted(set(b.details))}; all done in {time.monotonic() - t:.1f} s")
