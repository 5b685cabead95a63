import json, subprocess, sys
sys.path.insert(0, "/work/main")
from prompt_tree.tasks.apps import load_problems
def run(p, code):
    ok = []
    for i, (inp, out) in enumerate(zip(p.inputs, p.outputs)):
        if p.fn_name:
            prog = code + "\nimport json,sys\n_a=json.loads(sys.stdin.read())\n" + (
                f"_f=Solution().{p.fn_name}" if "class Solution" in code else f"_f={p.fn_name}") + "\nprint(json.dumps(_f(*_a)))\n"
            r = subprocess.run([sys.executable, "-c", prog], input=json.dumps(inp), capture_output=True, text=True)
            got = json.loads(r.stdout)
            ok.append(got == out or (isinstance(out, list) and len(out) == 1 and got == out[0]))
        else:
            r = subprocess.run([sys.executable, "-c", code], input=inp, capture_output=True, text=True)
            ok.append(r.stdout.split() == out.split())
    return ok
for split in ("test", "train"):
    for p in load_problems(split=split):
        ok = run(p, p.solutions[0])
        assert all(ok), (p.problem_id, ok)
print("all reference solutions pass")
