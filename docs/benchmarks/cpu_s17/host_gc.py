"""GC time in the real loop at the GSM8K shape on CPU (tiny model, attention none)."""
import gc, os, sys, time
from loop_setup import setup
P, S, eng, tree, params, budget = setup(200, 40)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "h100_s17"))
from gc_wrap import count_collections  # noqa: E402
st = count_collections()
print("tracked before", len(gc.get_objects()), flush=True)
t = time.perf_counter()
res = eng.generate(tree, params,
                   attention="none", progress=False, length_budget=budget, max_batch_sequences=4096)
sm = res.summary
print(f"{P}x{S}: {time.perf_counter() - t:.1f} s, steps {sm.decode_steps}, tracked objects at the end {len(gc.get_objects())}")
for g, (n, tot, mx) in st.items():
    print(f"  gen{g}: {n} collections, {tot:.2f} s, longest {mx * 1e3:.1f} ms")
