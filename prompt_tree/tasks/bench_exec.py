"""Execution benchmark: the warm sealed sandbox against its baselines, all in one run (CPU; never a timed test).

    python -m prompt_tree.tasks.bench_exec                 # 2 runs, writes runs/bench-exec/execution.{json,md,png}
    prompt-tree bench-exec --out docs/benchmarks/execution  # the committed numbers, from the checkout
    prompt-tree bench-exec --runs 1 --no-main-job --out /tmp/exec

Programs (prompt_tree.tasks.bench_programs): every embedded problem's reference solution and its wrong-answer,
runtime-error, compile-error and duplicate variants, plus the endless-loop variant on every 11th problem
(with a 0.5 s limit, so that one kind of program does not dominate; every method pays it alike). Limit 4 s
otherwise, the job's default. The costliest programs go first, so that no worker idles at the end.

Methods, each over the same programs with the same number of workers (the usable cores):
- floor: no sandbox, in-process fork: a worker process compiles each program once and forks a child per test
  (the warm runner's own child code), the programs' own time plus one fork per test;
- bare: `python -I prog.py` per test, no sandbox (a call-based test: a small driver importing prog.py);
- per-test: the per-test sandbox (prompt_tree.tasks.checker, sandbox="per-test", no preamble, as it ran before the warm sandbox);
- warm: the warm sandbox, every program checked (prompt_tree.tasks.checker default);
- warm+dedupe: as the job runs it: identical programs of a problem run once (prompt_tree.tasks.duplicates).

Reported per method: seconds, tests/s, programs/s per core, and the overhead per test and per program: the
workers' time (wall seconds x workers) beyond the programs' own CPU time (their processes' rusage under the
floor), divided by the tests (programs). The floor's own row is what one fork per test costs without any
sandbox. Verdicts are compared with the warm sandbox's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from prompt_tree.tasks.apps import load_problems
from prompt_tree.tasks.bench_exec_report import plot, summarize_runs, targets, write_outputs
from prompt_tree.tasks.bench_programs import LOOP_TIMEOUT_S, TIMEOUT_S, Program, program_set, variant
from prompt_tree.tasks.checker import check
from prompt_tree.tasks.compare import TokenStream, call_arguments, expected_text, expected_value, return_value_matches
from prompt_tree.tasks.duplicates import program_key
from prompt_tree.tasks.execution import usable_cores
from prompt_tree.tasks.sandbox import wire
from prompt_tree.tasks.sandbox.config import SandboxConfig
from prompt_tree.tasks.sandbox.detect import resolve_isolation
from prompt_tree.tasks.sandbox.zygote_host import live_zygote_pids
from prompt_tree.tasks.verdicts import ProcessEnd, call_status_of, call_verdict, stdin_verdict

# the directory that holds the prompt_tree package: the floor's workers and the main job import it from there
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOOP_EVERY = 11
METHODS = ("floor", "bare", "per-test", "warm", "warm+dedupe")
# Under the current directory (runs/ is where `prompt-tree apps` writes too, and git ignores it): the committed
# docs/benchmarks/execution.* are rewritten only when --out names them.
DEFAULT_OUT = os.path.join("runs", "bench-exec", "execution")
PYTHON = os.path.realpath(sys.executable)  # not a pyenv shim: ~0.1 s of bash per start


def programs_for(problems) -> list[Program]:
    kinds = ("reference", "wrong", "runtime", "compile", "duplicate")
    progs = program_set(problems, kinds=kinds)
    loops = [variant(p, "timeout") for i, p in enumerate(problems) if i % LOOP_EVERY == 0]
    return loops + progs  # the costliest first: the pool's tail is then short for every method


def limit_of(program: Program) -> float:
    return LOOP_TIMEOUT_S if program.variant == "timeout" else TIMEOUT_S


# ------------------------------------------------------------------------------------------ methods
def run_checker(programs, workers, walls: list | None = None, **kwargs) -> list[list]:
    """walls: filled with each program's wall seconds (its check call), in program order."""
    if walls is not None:
        walls[:] = [0.0] * len(programs)

    def one(i_prog):
        i, prog = i_prog
        t0 = time.perf_counter()
        results = check(prog.problem, prog.code, timeout=limit_of(prog), **kwargs).results
        if walls is not None:
            walls[i] = time.perf_counter() - t0
        return results

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, enumerate(programs)))


def run_dedupe(programs, workers) -> list[list]:
    firsts: dict = {}
    for i, prog in enumerate(programs):
        firsts.setdefault(program_key(prog.problem.problem_id, prog.code), i)
    unique = sorted(set(firsts.values()))
    got = dict(zip(unique, run_checker([programs[i] for i in unique], workers)))
    return [got[firsts[program_key(p.problem.problem_id, p.code)]] for p in programs]


def _compile_error(code: str) -> bool:
    try:
        compile(code, "prog.py", "exec", dont_inherit=True)
        return False
    except (SyntaxError, ValueError):
        return True


_BARE_DRIVER = r'''
import json, runpy, sys
sys.path.insert(0, sys.argv[2])
import pt_wire
args = pt_wire.decode_value(json.loads(sys.stdin.read()))
mod = runpy.run_path(sys.argv[1], run_name="candidate")
fn = sys.argv[3]
target = getattr(mod["Solution"](), fn) if isinstance(mod.get("Solution"), type) and hasattr(mod["Solution"], fn) \
    else mod[fn]
value = target(*args)
try:
    text = json.dumps({"status": "ok", "value": pt_wire.encode_value(value)})
except (pt_wire.Unencodable, ValueError) as exc:
    text = json.dumps({"status": "unserializable", "error": str(exc)})
sys.__stdout__.write("\n" + text + "\n")
'''


def run_bare(programs, workers) -> list[list]:
    """`python -I prog.py` per test, no sandbox; the compile check first, as every other method does."""
    tmp = tempfile.mkdtemp(prefix="pt_bench_bare_")
    wire_dir = os.path.join(tmp, "wire")
    os.makedirs(wire_dir)
    with open(os.path.join(wire_dir, "pt_wire.py"), "w") as f:
        f.write(open(wire.__file__).read())
    driver = os.path.join(tmp, "driver.py")
    with open(driver, "w") as f:
        f.write(_BARE_DRIVER)

    def one(job):
        idx, prog = job
        p = prog.problem
        if _compile_error(prog.code):
            return [-2] * p.num_tests
        d = os.path.join(tmp, str(idx))
        os.makedirs(d)
        path = os.path.join(d, "prog.py")
        with open(path, "w") as f:
            f.write(prog.code)
        out = []
        for i in range(p.num_tests):
            limit = limit_of(prog)
            if p.call_based:
                argv = [PYTHON, "-I", driver, path, wire_dir, p.fn_name]
                data = json.dumps(wire.encode_value(call_arguments(p.inputs[i]))).encode()
            else:
                argv, data = [PYTHON, "-I", path], _stdin_bytes(p.inputs[i])
            try:
                res = subprocess.run(argv, input=data, capture_output=True, timeout=limit, cwd=d)
                end = ProcessEnd(res.returncode if res.returncode >= 0 else None,
                                 -res.returncode if res.returncode < 0 else None, False,
                                 res.stderr.decode(errors="replace"))
                stdout = res.stdout
            except subprocess.TimeoutExpired:
                end, stdout = ProcessEnd(None, None, True), b""
            if p.call_based:
                result = None
                lines = stdout.decode(errors="replace").strip().splitlines()
                if lines and end.failure() is None:
                    try:
                        result = json.loads(lines[-1])
                        if "value" in result:
                            result["value"] = wire.decode_value(result["value"])
                    except (ValueError, wire.ProtocolError):
                        result = None
                elif end.failure() is not None and not end.timed_out:
                    result = {"status": "error", "error": end.failure()}
                status, value, error = call_status_of(end, result)
                out.append(call_verdict(status, value, error, expected_value(p.outputs[i]), return_value_matches)[0])
            else:
                want = expected_text(p.outputs[i])
                stream = TokenStream(want)
                stream.feed(stdout)
                out.append(stdin_verdict(end, False, stream.matches(), "", want)[0])
        return out

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, enumerate(programs)))
    finally:
        subprocess.run(["rm", "-rf", tmp], check=False)


def _stdin_bytes(test_input) -> bytes:
    if isinstance(test_input, list):
        return ("\n".join(str(x) for x in test_input) + "\n").encode()
    return test_input.encode()


def run_floor(programs, workers, cpus: list | None = None) -> list[list]:
    """In-process fork, no sandbox: `workers` single-threaded worker processes (prompt_tree.tasks.bench_floor) take
    programs one at a time. cpus: filled with each program's own CPU seconds, in program order."""
    spec = [{"code": p.code, "timeout": limit_of(p), "call": p.problem.call_based, "fn_name": p.problem.fn_name,
             "inputs": p.problem.inputs, "outputs": p.problem.outputs} for p in programs]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        spec_path = f.name
    boot = (f"import sys; sys.path.insert(0, {REPO_ROOT!r}); from prompt_tree.tasks.bench_floor import worker_main; "
            f"worker_main({spec_path!r})")
    procs = [subprocess.Popen([PYTHON, "-I", "-c", boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, OPENBLAS_NUM_THREADS="1"), bufsize=1) for _ in range(workers)]
    results: list = [None] * len(programs)
    if cpus is not None:
        cpus[:] = [0.0] * len(programs)
    own_cpu = [0.0]
    lock = threading.Lock()
    todo = list(range(len(programs)))

    def feed(proc):
        assert proc.stdout.readline().strip() == "ready"
        while True:
            with lock:
                if not todo:
                    break
                i = todo.pop(0)
            proc.stdin.write(f"{i}\n")
            answer = json.loads(proc.stdout.readline())
            results[i] = answer["verdicts"]
            with lock:
                own_cpu[0] += answer["cpu_s"]
                if cpus is not None:
                    cpus[i] = answer["cpu_s"]
        proc.stdin.close()
        proc.wait()

    try:
        threads = [threading.Thread(target=feed, args=(p,)) for p in procs]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results, time.perf_counter() - t0, own_cpu[0]
    finally:
        os.remove(spec_path)
        for p in procs:
            if p.poll() is None:
                p.kill()


# ------------------------------------------------------------------------------------------ one run
def measure(method: str, programs, workers: int, per_program: list | None = None) -> tuple[list, float, float | None]:
    """(verdicts, wall seconds, the programs' own CPU seconds if this method measures them). per_program: filled
    with each program's own CPU seconds (floor) or wall seconds (warm)."""
    if method == "floor":
        return run_floor(programs, workers, per_program)  # timed from the moment the workers are up
    t0 = time.perf_counter()
    if method == "bare":
        verdicts = run_bare(programs, workers)
    elif method == "per-test":
        verdicts = run_checker(programs, workers, sandbox="per-test", preamble=False)
    elif method == "warm":
        verdicts = run_checker(programs, workers, per_program)
    elif method == "warm+dedupe":
        verdicts = run_dedupe(programs, workers)
    else:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    return verdicts, time.perf_counter() - t0, None


def fit_overhead(programs, walls: list[float], own_cpu: list[float]) -> dict:
    """The warm sandbox's overhead split into a cost per program and a cost per test: each program's latency in
    the warm sandbox beyond its own CPU time (under the floor), fitted by least squares as a + b x tests run (a
    compile error runs none). Dividing the total by the tests or by the programs, as the other columns do,
    charges each the other's share; the fit separates them."""
    xs = [0 if p.variant == "compile" else p.problem.num_tests for p in programs]
    ys = [1e3 * (w - c) for w, c in zip(walls, own_cpu)]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    a = my - b * mx
    resid = [y - a - b * x for x, y in zip(xs, ys)]
    return {"fit_ms_per_program": round(a, 2), "fit_ms_per_test": round(b, 3),
            "fit_residual_ms_rms": round((sum(r * r for r in resid) / n) ** 0.5, 2), "fit_programs": n}


def cpu_seconds() -> float:
    """CPU time of this process, its reaped children, and the live zygotes with theirs (the warm sandboxes'
    processes are the zygotes' children): everything a method makes this machine do."""
    total = time.process_time()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total += ru.ru_utime + ru.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in live_zygote_pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
        except (OSError, ValueError):
            pass
    return total


def _settle() -> None:
    time.sleep(1.0)  # the zygote reaps its sandboxes' inits every 0.5 s: their CPU time counts only then


def one_run(programs, methods, workers: int, log) -> list[dict]:
    """Each method on the programs without the endless loops, then on those alone (their wall time is the
    limit whatever the method, so their share hides the sandbox's own speed); the row sums both."""
    sets = ([p for p in programs if p.variant != "timeout"], [p for p in programs if p.variant == "timeout"])
    # the warm sandbox's zygote starts once per process; start it before timing (a job pays it once), with a
    # program that ends (the first program is an endless loop: 4 s per test untimed, as the warm-up had it)
    check(sets[0][0].problem, sets[0][0].code, timeout=TIMEOUT_S)
    tests = sum(p.problem.num_tests for p in programs)
    tests_a = sum(p.problem.num_tests for p in sets[0])
    rows, verdicts, own_cpu = [], {}, None
    per_program: dict[str, list] = {}  # method -> per program of sets[0]: floor's own CPU s, warm's wall s
    for method in methods:
        got, seconds, seconds_a, cpu_own, used = [], 0.0, 0.0, 0.0, 0.0
        for k, subset in enumerate(sets):
            if not subset:
                continue
            _settle()
            c0 = cpu_seconds()
            v, sec, cpu = measure(method, subset, workers, per_program.setdefault(method, []) if k == 0 else None)
            _settle()
            used += cpu_seconds() - c0
            got += v
            seconds += sec
            seconds_a += sec if k == 0 else 0.0
            cpu_own = cpu_own + cpu if cpu is not None else None
        verdicts[method] = got
        own_cpu = cpu_own if cpu_own is not None else own_cpu
        rows.append({"method": method, "programs": len(programs), "tests": tests, "seconds": round(seconds, 3),
                     "tests_per_s": round(tests / seconds, 1),
                     "tests_per_s_without_endless_loops": round(tests_a / seconds_a, 1),
                     "programs_per_s_per_core": round(len(programs) / seconds / workers, 2),
                     "cpu_s": round(used, 2)})
        log(f"  {method:12s} {seconds:8.2f} s  {tests / seconds:8.1f} tests/s  ({tests_a / seconds_a:.1f} without "
            f"the endless loops)  cpu {used:.1f} s")
    ref = verdicts.get("warm")
    floor = next((r for r in rows if r["method"] == "floor"), None)
    if per_program.get("warm") and per_program.get("floor"):
        fit = fit_overhead(sets[0], per_program["warm"], per_program["floor"])
        next(r for r in rows if r["method"] == "warm").update(fit)
    ordered = [p.name for p in sets[0] + sets[1]]
    for row in rows:
        if own_cpu is not None:
            row["programs_cpu_s"] = round(own_cpu, 2)
            wall_extra = row["seconds"] * workers - own_cpu
            row["overhead_ms_per_test"] = round(1e3 * wall_extra / tests, 2)
            row["overhead_ms_per_program"] = round(1e3 * wall_extra / len(programs), 1)
            cpu_extra = row["cpu_s"] - own_cpu
            row["cpu_overhead_ms_per_test"] = round(1e3 * cpu_extra / tests, 2)
            row["cpu_overhead_ms_per_program"] = round(1e3 * cpu_extra / len(programs), 1)
        if floor is not None:
            vs = (row["seconds"] - floor["seconds"]) * workers
            row["wall_overhead_vs_floor_ms_per_test"] = round(1e3 * vs / tests, 2)
            row["wall_overhead_vs_floor_ms_per_program"] = round(1e3 * vs / len(programs), 1)
        if ref is not None:
            diff = [ordered[i] for i, (a, b) in enumerate(zip(verdicts[row["method"]], ref)) if a != b]
            row["verdicts_differing_from_warm"] = len(diff)
            if diff:
                row["differing_programs"] = diff[:10]
    return rows


def main_job(log) -> dict:
    """The embedded default main job (`bash scripts/run.sh` without its install step), timed by its summary."""
    out = tempfile.mkdtemp(prefix="pt_bench_job_")
    try:
        env = dict(os.environ, PYTHONPATH=REPO_ROOT)
        t0 = time.perf_counter()
        subprocess.run([PYTHON, "-m", "prompt_tree.cli", "apps", "--out", os.path.join(out, "run"), "--no-progress"],
                       check=True, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        summary = json.load(open(os.path.join(out, "run", "summary.json")))
    finally:
        subprocess.run(["rm", "-rf", out], check=False)
    t = summary["timings"]
    job = {"wall_s": round(wall, 1), "generation_s": round(t["generation_s"], 2),
           "execution_s": round(t["execution_s"], 2),
           "execution_after_generation_s": round(t["execution_after_generation_s"], 2),
           "total_s": round(t["total_s"], 2), "samples": summary["samples"], "executed": summary["executed"],
           "duplicates": summary.get("duplicates")}
    log(f"  main job: generation {job['generation_s']} s, execution {job['execution_s']} s (summed over "
        f"programs), {job['execution_after_generation_s']} s after generation")
    return job


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------------------ entry points
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=2, help="repetitions, to show the spread (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="programs at once (default: the usable cores)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    p.add_argument("--limit", type=int, default=None, help="first N embedded problems only (default: all)")
    p.add_argument("--no-main-job", action="store_true", help="skip timing the embedded default main job")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help="output path without extension: .json, .md and .png are written (default: %(default)s, "
                        "under the current directory; --out docs/benchmarks/execution in a checkout rewrites the "
                        "committed results)")


class _BadArgument(ValueError):
    """A flag's value that bench-exec refuses before it measures or writes anything; the message names the flag."""


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise _BadArgument(f"--methods is empty; choose from {', '.join(METHODS)}")
    for m in methods:
        if m not in METHODS:
            raise _BadArgument(f"--methods: {m!r} is not one of {', '.join(METHODS)}")
        if methods.count(m) > 1:  # the summary keeps one row per method
            raise _BadArgument(f"--methods: {m!r} is given twice")
    return methods


def _check_out(out: str) -> None:
    """Make --out's directory, and prove it takes files, now: the files are written after minutes of runs, which
    a bad path would otherwise lose (an access() check is not enough: root may 'write' /proc and /sys)."""
    if not os.path.basename(out) or os.path.isdir(out):
        raise _BadArgument(f"--out {out!r} names a directory; pass a path without extension such as "
                           f"{os.path.join(out, 'execution')!r} (.json, .md and .png are added)")
    for ext in (".json", ".md", ".png"):
        if os.path.isdir(out + ext):
            raise _BadArgument(f"--out {out!r}: {out + ext!r} is a directory; pass another --out path")
    parent = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise _BadArgument(f"--out {out!r}: cannot write into {parent!r} ({e.strerror or e}); pass another --out "
                           f"path") from None


def _check_args(args: argparse.Namespace) -> list[str]:
    """The methods, every flag checked (_BadArgument naming it); --out's directory made last, so that nothing is
    written for a command refused."""
    methods = _methods(args.methods)
    for name, value in (("runs", args.runs), ("workers", args.workers), ("limit", args.limit)):
        if value is not None and value < 1:  # --limit 0 crashed on no programs; --workers 0 meant the cores
            raise _BadArgument(f"--{name} must be >= 1, got {value}")
    _check_out(args.out)
    return methods


def _command(args: argparse.Namespace, methods: list[str]) -> str:
    """The command that repeats this run, every flag explicit (sys.argv was `prompt-tree bench-exec`'s or
    `python -m`'s, and recorded the one as the other)."""
    flags = [("--runs", args.runs), ("--workers", args.workers), ("--methods", ",".join(methods)),
             ("--limit", args.limit), ("--out", args.out)]
    given = [f"{flag} {shlex.quote(str(value))}" for flag, value in flags if value is not None]
    return " ".join(["prompt-tree bench-exec", *given, *(["--no-main-job"] if args.no_main_job else [])])


def run(args: argparse.Namespace) -> int:
    try:
        methods = _check_args(args)
    except _BadArgument as e:
        print(f"prompt-tree bench-exec: error: {e}", file=sys.stderr)
        return 2
    workers = args.workers or usable_cores()
    problems = load_problems(limit=args.limit)
    programs = programs_for(problems)
    log = lambda s: print(s, flush=True)  # noqa: E731
    result = {"cpu_model": cpu_model(), "cores": usable_cores(), "workers": workers, "python": sys.version.split()[0],
              "isolation": resolve_isolation(SandboxConfig()), "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": _command(args, methods),
              "programs": len(programs), "tests": sum(p.problem.num_tests for p in programs),
              "load_average_before": os.getloadavg()[0], "runs": [], "main_jobs": []}
    for k in range(args.runs):
        log(f"run {k + 1}/{args.runs}: {len(programs)} programs, {result['tests']} tests, {workers} workers")
        result["runs"].append({"run": k + 1, "rows": one_run(programs, methods, workers, log),
                               "load_average": os.getloadavg()[0]})
        if not args.no_main_job:
            result["main_jobs"].append(main_job(log))
    result["rows"] = summarize_runs(result["runs"])
    result["targets"] = targets(result["rows"], result["main_jobs"])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    plot(result, args.out)
    write_outputs(result, args.out)
    log(f"wrote {args.out}.json / .md" + (" / .png" if os.path.exists(args.out + ".png") else ""))
    log(json.dumps(result["targets"]))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prompt_tree.tasks.bench_exec", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
