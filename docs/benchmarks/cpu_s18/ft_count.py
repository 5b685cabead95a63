"""How many decode launches have a first-token call in their interval (on the code before 93028cc, each such call
read its tokens at once: a host wait for the step in flight on a GPU). argv P S MEDIAN CAP [SOURCE], run from the
repository root."""
import os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cpu_s17"))
from loop_setup import setup  # noqa: E402
P, S, eng, tree, params, budget = setup(900, 120)
from prompt_tree.engine import host_profile, run as runmod  # noqa: E402
laps, calls = [], [0, 0]
orig = host_profile.HostClock.lap
def lap(self):
    p = orig(self); laps.append(calls[0]); calls[0] = 0; return p
host_profile.HostClock.lap = lap
oft = runmod.GenerationRun._first_tokens
ofr = None
def ft(self):
    n = len([s for s in self.scheduler.prefilling() if all(k in self.blocks.prefilled for k in s.path)])
    if n:
        calls[0] += 1; calls[1] += n
    return oft(self)
runmod.GenerationRun._first_tokens = ft
t = time.perf_counter()
res = eng.generate(tree, params, attention="none", progress=False, length_budget=budget, max_batch_sequences=4096)
sm = res.summary
print(f"{P}x{S}: {time.perf_counter() - t:.1f} s, steps {sm.decode_steps}, batch {sm.mean_batch:.0f}, rebuilds {sm.rebuilds}")
print(f"launches {len(laps)}, with a first-token call {sum(1 for c in laps if c)}, calls {sum(laps)}, samples {calls[1]}")
