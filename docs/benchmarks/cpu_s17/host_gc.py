"""GC time in the real loop at the GSM8K shape on CPU (tiny model, attention none)."""
import gc, math, os, random, sys, time, torch
sys.path.insert(0, sys.argv[5] if len(sys.argv) > 5 else "/work/main")
from prompt_tree.config import get_preset, replace
from prompt_tree.engine import Engine
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
few = tree.root.add([256] + [rng.randrange(256) for _ in range(200)], key="few")
for p in range(P):
    few.add([rng.randrange(256) for _ in range(40)], key=f"p{p}").add([], samples=S, key=f"s{p}")
table = {}
budget = lambda key, s: table.setdefault((key, s), max(1, min(CAP, int(round(math.exp(rng.gauss(math.log(MED), 0.6)))))))
eng = Engine(MODEL, CONFIG, ByteTokenizer(), eos_ids=())
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "h100_s17"))
from gc_wrap import count_collections  # noqa: E402
st = count_collections()
print("tracked before", len(gc.get_objects()), flush=True)
t = time.perf_counter()
res = eng.generate(tree, SamplingParams(max_new_tokens=CAP, temperature=0.8, top_p=0.95, seed=1, stop=APPS_STOPS),
                   attention="none", progress=False, length_budget=budget, max_batch_sequences=4096)
sm = res.summary
print(f"{P}x{S}: {time.perf_counter() - t:.1f} s, steps {sm.decode_steps}, tracked objects at the end {len(gc.get_objects())}")
for g, (n, tot, mx) in st.items():
    print(f"  gen{g}: {n} collections, {tot:.2f} s, longest {mx * 1e3:.1f} ms")
