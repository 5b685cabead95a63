"""Median ms of one warm sandbox's start + one test + close, trivial stdin program, namespace isolation."""
import sys, time, statistics
sys.path.insert(0, sys.argv[1])
from prompt_tree.tasks.sandbox.config import SandboxConfig
from prompt_tree.tasks.sandbox.host import WarmSandbox
cfg = SandboxConfig(isolation="namespace")
def once():
    t0 = time.perf_counter()
    with WarmSandbox("print(input())", "stdin", None, 2.0, isolation="namespace", config=cfg) as box:
        assert box.start().ok
        t1 = time.perf_counter()
        run = box.run_stdin(0, b"x\n", 2.0, lambda c: None, 1 << 20)
        assert run.exit_code == 0, run
        t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (time.perf_counter() - t2) * 1e3
for _ in range(5): once()
xs = [once() for _ in range(60)]
print(sys.argv[1], "start %.2f ms, test %.2f ms, close %.2f ms (medians of 60)" % tuple(statistics.median(x[i] for x in xs) for i in range(3)))
