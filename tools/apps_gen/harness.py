"""Generator harness: runs reference + brute solutions, writes APPS-format jsonl."""
import copy, json, subprocess, sys

def run_stdin(code, inp):
    r = subprocess.run([sys.executable, "-c", code], input=inp, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"stdin solution failed: {r.stderr}\ninput={inp!r}")
    return r.stdout

def run_call(code, fn_name, args):
    ns = {}
    exec(code, ns)
    if "Solution" in ns:
        f = getattr(ns["Solution"](), fn_name)
    else:
        f = ns[fn_name]
    out = f(*copy.deepcopy(args))
    return json.loads(json.dumps(out))  # tuples -> lists, as the JSON record will hold

def fmt_call_example(params, args, out):
    inp = ", ".join(f"{p} = {json.dumps(a)}" for p, a in zip(params, args))
    return f"Input: {inp}\nOutput: {json.dumps(out)}"

def build(spec):
    code = spec["solution"]
    tests = spec["tests"]
    assert len(tests) >= 5, spec["id"]
    outs = []
    for t in tests:
        if spec.get("fn_name"):
            o = run_call(code, spec["fn_name"], t)
            if spec.get("brute"):
                b = run_call(spec["brute"], spec["fn_name"], t)
                assert b == o, (spec["id"], t, o, b)
        else:
            o = run_stdin(code, t)
            if spec.get("brute"):
                b = run_stdin(spec["brute"], t)
                assert b == o, (spec["id"], t, o, b)
        outs.append(o)
    nex = spec.get("n_examples", 2)
    if spec.get("fn_name"):
        ex = "\n\n".join(f"Example {i+1}:\n" + fmt_call_example(spec["params"], tests[i], outs[i]) for i in range(nex))
        examples = ex + "\n"
    else:
        ex = "\n".join(f"Input\n{tests[i]}\nOutput\n{outs[i]}" for i in range(nex))
        examples = "-----Examples-----\n" + ex
    question = spec["question"].replace("{EXAMPLES}", examples)
    io = {"inputs": tests, "outputs": [[o] if spec.get("wrap") else o for o in outs]}
    if spec.get("fn_name"):
        io["fn_name"] = spec["fn_name"]
    return {
        "problem_id": spec["id"],
        "question": question,
        "solutions": json.dumps([code]),
        "input_output": json.dumps(io),
        "difficulty": spec["difficulty"],
        "url": "",
        "starter_code": spec.get("starter", ""),
    }

def write(specs, path):
    ids = [s["id"] for s in specs]
    assert len(set(ids)) == len(ids)
    with open(path, "w") as f:
        for s in specs:
            f.write(json.dumps(build(s)) + "\n")
    print("wrote", len(specs), "to", path)
