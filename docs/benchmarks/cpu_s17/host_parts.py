"""Host parts per decode launch in the real loop at the GSM8K job's shape on CPU (tiny model, attention none)."""
import sys, time
from loop_setup import setup
P, S, eng, tree, params, budget = setup(900, 120)
from prompt_tree.engine import host_profile  # noqa: E402 (loop_setup put SOURCE on the path)
laps = []
orig = host_profile.HostClock.lap
def lap(self):
    p = orig(self); laps.append(p); return p
host_profile.HostClock.lap = lap
t = time.perf_counter()
res = eng.generate(tree, params,
                   attention="none", progress=False, length_budget=budget, max_batch_sequences=4096)
sm = res.summary
print(f"{P}x{S}: {time.perf_counter() - t:.1f} s, steps {sm.decode_steps}, mean batch {sm.mean_batch:.0f}, laps {len(laps)}")
host = sorted(sum(v for k, v in p.items() if k not in ("launch", "wait")) for p in laps)
q = lambda x: host[min(len(host) - 1, int(x * len(host)))] * 1e3
print(f"host work per launch ms: p50 {q(.5):.2f} p90 {q(.9):.2f} p99 {q(.99):.2f} max {host[-1]*1e3:.1f}; total {sum(host):.1f} s")
for thr in (0.020, 0.028, 0.040):
    print(f"  over {thr*1e3:.0f} ms: {sum(h > thr for h in host)} launches, excess {sum(max(0, h - thr) for h in host):.2f} s")
tot = {k: sum(p[k] for p in laps) for k in host_profile.PARTS}
print("parts s:", {k: round(v, 2) for k, v in tot.items()})
big = sorted(laps, key=lambda p: -sum(v for k, v in p.items() if k not in ("launch", "wait")))[:5]
for p in big:
    print("  top:", {k: round(v * 1e3, 1) for k, v in p.items()})
