"""Host parts per decode launch in the real loop at the GSM8K job's shape on CPU (tiny model, attention none)."""
import math, random, sys, time, json, torch
sys.path.insert(0, sys.argv[5] if len(sys.argv) > 5 else "/work/main")
from prompt_tree.config import get_preset, replace
from prompt_tree.engine import Engine, host_profile
from prompt_tree.loading import random_model
from prompt_tree.sampling import SamplingParams
from prompt_tree.tokenizer import ByteTokenizer
from prompt_tree.tree import PromptTree
from prompt_tree.benchmark.step import APPS_STOPS
torch.set_num_threads(2)
CONFIG = replace(get_preset("tiny"), num_layers=1)
MODEL = random_model(CONFIG, seed=0, std=0.1, device="cpu", dtype=torch.float32)
P, S, MED, CAP = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(0)
tree = PromptTree()
few = tree.root.add([256] + [rng.randrange(256) for _ in range(900)], key="few")
for p in range(P):
    few.add([rng.randrange(256) for _ in range(120)], key=f"p{p}").add([], samples=S, key=f"s{p}")
table = {}
budget = lambda key, s: table.setdefault((key, s), max(1, min(CAP, int(round(math.exp(rng.gauss(math.log(MED), 0.6)))))))
laps = []
orig = host_profile.HostClock.lap
def lap(self):
    p = orig(self); laps.append(p); return p
host_profile.HostClock.lap = lap
eng = Engine(MODEL, CONFIG, ByteTokenizer(), eos_ids=())
t = time.perf_counter()
res = eng.generate(tree, SamplingParams(max_new_tokens=CAP, temperature=0.8, top_p=0.95, seed=1, stop=APPS_STOPS),
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
