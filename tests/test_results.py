"""The run directory store: append-only records, torn-tail tolerance, config checks on resume."""
import json
import os
import random
import threading

import pytest

from prompt_tree.tasks.results import (
    GenerationRecord,
    JsonlAppender,
    RunDirError,
    RunStore,
    VerdictRecord,
    read_jsonl,
)


def gen(pid, i, text="print(1)"):
    return GenerationRecord(pid, i, completion=text, code=text, finish_reason="stop", tokens=3)


def test_records_survive_reopen(tmp_path):
    cfg = {"model": "tiny", "samples": 2}
    with RunStore(str(tmp_path), cfg) as store:
        assert store.add_generations([gen("a", 0), gen("a", 1)]) == [gen("a", 0), gen("a", 1)]
        # re-adding a recorded key writes nothing
        assert store.add_generations([gen("a", 0, "other")]) == []
        store.add_verdicts([VerdictRecord("a", 0, [True, -1], False)])
    with RunStore(str(tmp_path), cfg) as store:
        assert store.generations == {("a", 0): gen("a", 0), ("a", 1): gen("a", 1)}
        assert store.verdicts == {("a", 0): VerdictRecord("a", 0, [True, -1], False)}
        assert store.resumed_generations == 2 and store.resumed_verdicts == 1
    lines = open(tmp_path / "generations.jsonl").read().splitlines()
    assert len(lines) == 2  # the duplicate was never written


def test_torn_tail_is_dropped_and_cut_before_next_append(tmp_path):
    path = str(tmp_path / "g.jsonl")
    out = JsonlAppender(path)
    out.write([{"n": 0}, {"n": 1}])
    out.close()
    with open(path, "a") as f:
        f.write('{"n": 2, "text": "half a rec')  # killed mid-write
    assert read_jsonl(path) == [{"n": 0}, {"n": 1}]
    assert read_jsonl(path, truncate_torn=True) == [{"n": 0}, {"n": 1}]
    out = JsonlAppender(path)
    out.write([{"n": 3}])
    out.close()
    assert read_jsonl(path) == [{"n": 0}, {"n": 1}, {"n": 3}]


def test_complete_json_without_newline_counts_as_torn(tmp_path):
    # A record is only done once its newline is written: '{"n": 1}' without it may be a prefix of a longer record.
    path = tmp_path / "g.jsonl"
    path.write_text('{"n": 0}\n{"n": 1}')
    assert read_jsonl(str(path), truncate_torn=True) == [{"n": 0}]
    assert path.read_text() == '{"n": 0}\n'


def test_truncation_at_every_byte_keeps_exactly_the_complete_lines(tmp_path):
    rng = random.Random(0)
    records = [{"i": i, "s": "x" * rng.randrange(0, 20) + "é\n\"{"} for i in range(12)]
    full = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    ends = [i + 1 for i, b in enumerate(full) if b == ord("\n")]
    path = tmp_path / "g.jsonl"
    for cut in range(len(full) + 1):
        path.write_bytes(full[:cut])
        expect = records[: sum(1 for e in ends if e <= cut)]
        assert read_jsonl(str(path), truncate_torn=True) == expect, cut
        assert path.read_bytes() == full[: max([0] + [e for e in ends if e <= cut])]


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"n": 0}\nnot json\n{"n": 2}\n')
    with pytest.raises(RunDirError, match="line 2"):
        read_jsonl(str(path))


def test_config_mismatch_is_refused_naming_fields(tmp_path):
    with RunStore(str(tmp_path), {"model": "tiny", "samples": 16, "seed": 0}) as store:
        store.add_generations([gen("a", 0)])
    with pytest.raises(RunDirError) as e:
        RunStore(str(tmp_path), {"model": "tiny", "samples": 32, "seed": 1})
    msg = str(e.value)
    assert "samples: 16 -> 32" in msg and "seed: 0 -> 1" in msg and "model" not in msg and "--force" in msg


def test_a_directory_without_records_takes_the_new_config(tmp_path):
    RunStore(str(tmp_path), {"samples": 1}).close()  # e.g. a run that failed before producing anything
    RunStore(str(tmp_path), {"samples": 2}).close()
    assert json.loads((tmp_path / "config.json").read_text()) == {"samples": 2}


def test_force_starts_afresh(tmp_path):
    with RunStore(str(tmp_path), {"samples": 1}) as store:
        store.add_generations([gen("a", 0)])
        store.write_summary({"x": 1})
    with RunStore(str(tmp_path), {"samples": 2}, force=True) as store:
        assert store.generations == {} and store.verdicts == {}
    assert not (tmp_path / "summary.json").exists()
    assert json.loads((tmp_path / "config.json").read_text()) == {"samples": 2}
    RunStore(str(tmp_path), {"samples": 2}).close()  # the new config is the one checked now


def test_result_files_without_config_are_refused(tmp_path):
    (tmp_path / "generations.jsonl").write_text('{"problem_id": "a", "sample_index": 0}\n')
    with pytest.raises(RunDirError, match="config.json"):
        RunStore(str(tmp_path), {"samples": 1})


def test_tuples_in_config_compare_equal_to_saved_lists(tmp_path):
    # config.json holds lists; a config given with tuples must resume into it, and a different value must not
    with RunStore(str(tmp_path), {"k": (1, 5)}) as store:
        store.add_generations([gen("a", 0)])
    assert json.loads((tmp_path / "config.json").read_text()) == {"k": [1, 5]}
    with RunStore(str(tmp_path), {"k": (1, 5)}) as store:
        assert store.resumed_generations == 1 and ("a", 0) in store.generations
    with pytest.raises(RunDirError, match=r"k: \[1, 5\] -> \[1, 10\]"):
        RunStore(str(tmp_path), {"k": (1, 10)})


def test_concurrent_appends_never_interleave(tmp_path):
    with RunStore(str(tmp_path), {}) as store:
        def work(t):
            for i in range(50):
                store.add_verdicts([VerdictRecord(f"p{t}", i, [True] * 20, True)])

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rows = read_jsonl(os.path.join(tmp_path, "verdicts.jsonl"))
    assert len(rows) == 400 and len({(r["problem_id"], r["sample_index"]) for r in rows}) == 400


def test_verdict_records_from_before_duplicates_and_fail_fast_still_load(tmp_path):
    with RunStore(str(tmp_path), {"samples": 1}) as store:
        store.add_verdicts([VerdictRecord("a", 0, [True], True, None, duplicate_of=None, tests=1)])
    with open(tmp_path / "verdicts.jsonl", "a") as f:  # a record written by the previous version
        f.write(json.dumps({"problem_id": "b", "sample_index": 0, "results": [-2], "passed": False,
                            "error": "compile error"}) + "\n")
    with RunStore(str(tmp_path), {"samples": 1}) as store:
        assert store.verdicts[("b", 0)].duplicate_of is None and store.verdicts[("b", 0)].tests is None
        assert store.verdicts[("a", 0)].tests == 1


def test_config_from_before_the_preamble_resumes_only_without_it(tmp_path):
    from prompt_tree.tasks.results import config_differences

    old = {"samples": 2, "few_shot_source": "embedded"}  # a config.json written before issue 13
    new = {"samples": 2, "few_shot_source": "embedded", "fail_fast": False}
    assert config_differences(old, dict(new, preamble=False)) == []
    assert config_differences(old, dict(new, preamble=True)) == ["preamble: False -> True"]


def test_run_lock_is_exclusive_names_the_holder_and_dies_with_it(tmp_path):
    import subprocess
    import sys

    from prompt_tree.tasks.results import RunLock

    out = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nsys.path.insert(0, sys.argv[1])\n"
                               "from prompt_tree.tasks.results import RunLock\nlock = RunLock(sys.argv[2])\n"
                               "print('held', flush=True)\ntime.sleep(60)", os.getcwd(), out],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=rf"in use by another prompt-tree process \(pid {holder.pid}\)"):
            RunLock(out)
    finally:
        holder.kill()
        holder.wait()
    with RunLock(out):  # the kernel dropped the dead holder's lock
        pass
