"""Run `python -m prompt_tree.cli ...` counting CPython's collections per generation; write them to $GC_OUT.
(As run in call A, refactored after it into functions so that ../cpu_s17/host_gc.py counts the same way.)"""
import atexit, gc, json, os, runpy, sys, time


def count_collections() -> dict:
    """Install a gc callback; returns {generation: [collections, seconds, longest seconds]}, filled as they run."""
    st = {g: [0, 0.0, 0.0] for g in range(3)}
    t0 = [0.0]

    def cb(phase, info):
        if phase == "start":
            t0[0] = time.perf_counter()
        else:
            dt = time.perf_counter() - t0[0]
            s = st[info["generation"]]
            s[0] += 1; s[1] += dt; s[2] = max(s[2], dt)

    gc.callbacks.append(cb)
    return st


def summary(st: dict) -> dict:
    d = {f"gen{g}": {"collections": n, "seconds": round(t, 3), "longest_ms": round(m * 1e3, 1)} for g, (n, t, m) in st.items()}
    d["tracked_at_exit"] = len(gc.get_objects()); d["threshold"] = gc.get_threshold(); d["python"] = sys.version.split()[0]
    return d


if __name__ == "__main__":
    counts = count_collections()

    def dump():
        d = summary(counts)
        print("GC", json.dumps(d), file=sys.stderr, flush=True)
        if os.environ.get("GC_OUT"):
            json.dump(d, open(os.environ["GC_OUT"], "w"), indent=1)

    atexit.register(dump)
    sys.argv = ["prompt_tree.cli"] + sys.argv[1:]
    runpy.run_module("prompt_tree.cli", run_name="__main__")
