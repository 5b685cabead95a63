"""Bad command-line input gives exit code 2 and a message naming the flag and the fix, never a traceback; and it
is refused before a model is built or an output file or run directory is touched."""
import json
import os

import pytest

from prompt_tree.cli import main
from prompt_tree.tree import PromptTree
from prompt_tree.tasks.apps import load_problems
from prompt_tree.tasks.prompts import FEW_SHOT_KEY, format_question

FAST = ["--no-progress", "--workers", "1"]
EMBEDDED_TEST_FILE = os.path.join(os.path.dirname(__file__), "..", "prompt_tree", "tasks", "data", "embedded.jsonl")


@pytest.fixture
def no_model_built(monkeypatch):
    """Fail the test if any model weights are built or loaded."""
    from prompt_tree.engine import Engine

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built although the input was refused")

    monkeypatch.setattr(Engine, "random", classmethod(refuse))
    monkeypatch.setattr(Engine, "from_pretrained", classmethod(refuse))


def _text_tree(path):
    tree = PromptTree()
    tree.root.add("Hello ", key="a").add("world", samples=2, key="b")
    tree.save(str(path))
    return str(path)


def _ids_tree(path):
    tree = PromptTree()
    tree.root.add([1, 2, 3], key="a").add([4, 5], samples=2, key="b")
    tree.save(str(path))
    return str(path)


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------ 1. random:PRESET without a tokenizer


def test_apps_refuses_a_preset_without_tokenizer_before_building_it(tmp_path, capsys, no_model_built):
    out = tmp_path / "run"
    assert main(["apps", "--model", "random:llama3-8b", "--out", str(out), *FAST]) == 2
    err = _err(capsys)
    assert "--model random:llama3-8b" in err and "no tokenizer" in err and "--model tiny" in err
    assert not out.exists()
    assert main(["apps", "--model", "random:no-such-preset", "--out", str(out), *FAST]) == 2
    assert "unknown preset 'no-such-preset'" in _err(capsys)
    assert not out.exists()


def test_apps_help_does_not_advertise_a_preset_without_tokenizer(capsys):
    with pytest.raises(SystemExit) as e:
        main(["apps", "--help"])
    assert e.value.code == 0
    assert "llama3-8b" not in capsys.readouterr().out


def test_generate_refuses_a_preset_without_tokenizer_for_text_prompts(tmp_path, capsys, no_model_built):
    out = tmp_path / "o.jsonl"
    argv = ["generate", "--model", "random:llama3-8b", "--out", str(out), "--no-progress"]
    assert main([*argv, "--tree", _text_tree(tmp_path / "text.json")]) == 2
    err = _err(capsys)
    assert "--model random:llama3-8b" in err and "no tokenizer" in err and "node 'a'" in err
    assert not out.exists()
    # token-id prompts need no tokenizer, but stop strings do
    assert main([*argv, "--tree", _ids_tree(tmp_path / "ids.json"), "--stop", "x"]) == 2
    assert "--stop" in _err(capsys)


# ------------------------------------------------------------------ 2. --dtype the kernels do not support


@pytest.mark.parametrize("command", ["apps", "generate"])
def test_dtype_is_limited_to_the_kernel_dtypes(tmp_path, capsys, command):
    argv = [command, "--dtype", "float64", "--out", str(tmp_path / "o")]
    if command == "generate":
        argv += ["--model", "tiny", "--tree", _ids_tree(tmp_path / "ids.json")]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = _err(capsys)
    assert "--dtype" in err and "float64" in err and "bf16" in err and "float32" in err


# ------------------------------------------------------------------ 3. generate: context, batch size, --out


def test_generate_context_overflow_is_an_error_and_keeps_out(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    out.write_text("previous results\n")
    argv = ["generate", "--model", "tiny", "--tree", _text_tree(tmp_path / "t.json"), "--out", str(out),
            "--max-new-tokens", "100000", "--no-progress"]
    assert main(argv) == 2
    assert "exceeds the model's context" in _err(capsys)
    assert out.read_text() == "previous results\n"


def test_generate_checks_batch_size_and_out_before_loading(tmp_path, capsys, no_model_built):
    tree = _text_tree(tmp_path / "t.json")
    base = ["generate", "--model", "tiny", "--tree", tree, "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "o.jsonl"), "--max-batch-sequences", "0"]) == 2
    assert "--max-batch-sequences must be >= 1" in _err(capsys)
    missing = tmp_path / "nonexistentdir" / "o.jsonl"
    assert main([*base, "--out", str(missing)]) == 2
    err = _err(capsys)
    assert "--out" in err and "does not exist" in err
    assert main([*base, "--out", str(tmp_path)]) == 2
    assert "is a directory" in _err(capsys)


def test_generate_still_works(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    argv = ["generate", "--model", "tiny", "--tree", _text_tree(tmp_path / "t.json"), "--out", str(out),
            "--max-new-tokens", "2", "--max-batch-sequences", "1", "--dtype", "FP32", "--no-progress"]
    assert main(argv) == 0
    assert len(out.read_text().splitlines()) == 2


def test_generate_refuses_to_write_over_its_own_tree(tmp_path, capsys, no_model_built):
    tree = _text_tree(tmp_path / "t.json")
    before = open(tree).read()
    argv = ["generate", "--model", "tiny", "--tree", tree, "--out", tree, "--max-new-tokens", "2", "--no-progress"]
    assert main(argv) == 2
    assert "is the --tree file" in _err(capsys) and open(tree).read() == before


def test_engine_arguments_of_the_wrong_kind_fail_before_any_work():
    from prompt_tree.engine import Engine
    from prompt_tree.tree import PromptTree

    with pytest.raises(TypeError, match="seed must be an int"):
        Engine.random("tiny", seed="a")
    tree = PromptTree()
    tree.root.add("hi", samples=1)
    for name in ("on_complete", "length_budget"):
        with pytest.raises(TypeError, match=f"{name} must be a callable"):
            Engine.random("tiny").generate(tree, progress=False, **{name: 5})


# ------------------------------------------------------------------ 4. --samples on a tree that is not a dict


def test_generate_samples_on_a_tree_file_that_is_not_a_tree(tmp_path, capsys, no_model_built):
    bad = tmp_path / "list.json"
    bad.write_text("[1, 2]")
    argv = ["generate", "--model", "tiny", "--tree", str(bad), "--out", str(tmp_path / "o.jsonl"), "--samples", "3"]
    assert main(argv) == 2
    err = _err(capsys)
    assert "--tree" in err and "expected a dict with a 'nodes' list" in err


# ------------------------------------------------------------------ 5. describe --tokenizer


def test_describe_tokenizer_errors_name_the_flag(tmp_path, capsys):
    tree = _text_tree(tmp_path / "t.json")
    assert main(["describe", tree, "--tokenizer", str(tmp_path / "nonexistent.json")]) == 2
    err = _err(capsys)
    assert "--tokenizer" in err and "no such file" in err
    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    assert main(["describe", tree, "--tokenizer", str(junk)]) == 2
    assert "--tokenizer" in _err(capsys)
    assert main(["describe", tree]) == 2
    err = _err(capsys)
    assert "pass --tokenizer" in err and "flatten(tokenizer" not in err
    assert main(["describe", _ids_tree(tmp_path / "ids.json")]) == 0  # token ids need none


@pytest.mark.parametrize("flags, says", [
    (["--max-len", "-1"], "--max-len must be >= 1"), (["--max-children", "0"], "--max-children must be >= 1"),
    (["--kv-shape", "-1", "8", "128"], "--kv-shape takes LAYERS KV_HEADS HEAD_DIM, each >= 1"),
])
def test_describe_refuses_bad_numbers_naming_the_flag(tmp_path, capsys, flags, says):
    assert main(["describe", _ids_tree(tmp_path / "ids.json")] + flags) == 2
    assert says in _err(capsys)


def test_describe_names_the_tree_file_it_cannot_read(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["describe", str(bad)]) == 2
    assert repr(str(bad)) in _err(capsys)
    assert main(["describe", str(tmp_path / "none.json")]) == 2
    assert "none.json" in _err(capsys)


# ------------------------------------------------------------------ 6. apps --out and --export-bigcode


def test_apps_out_that_cannot_be_a_directory(tmp_path, capsys, no_model_built):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        assert main(["apps", "--limit", "1", "--out", str(out), *FAST]) == 2
        err = _err(capsys)
        assert f"--out {str(out)!r}" in err
    assert afile.read_text() == "x"


def test_apps_export_path_is_checked_before_the_run(tmp_path, capsys, no_model_built):
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = tmp_path / "run"
    for export in (afile / "x.json", tmp_path):
        assert main(["apps", "--limit", "1", "--out", str(out), "--export-bigcode", str(export), *FAST]) == 2
        assert "--export-bigcode" in _err(capsys)
        assert not out.exists()


# ------------------------------------------------------------------ 7. few-shot examples and their source


def test_few_shot_draw_says_how_many_are_under_evaluation(tmp_path, capsys, no_model_built):
    out = tmp_path / "run"
    assert main(["apps", "--split", "train", "--few-shot", "2", "--out", str(out), *FAST]) == 2
    err = _err(capsys)
    n = len(load_problems(split="train"))
    assert f"{n} of them excluded because they are under evaluation" in err and "--few-shot-source" in err
    assert not out.exists()


def test_few_shot_source_is_used_recorded_and_resumed(tmp_path, capsys):
    from prompt_tree.tasks.runner import RunConfig, build_sample_tree

    source = os.path.abspath(EMBEDDED_TEST_FILE)
    problems = load_problems(split="train", limit=1)
    config = RunConfig(split="train", few_shot=2, few_shot_source=source)
    tree, _ = build_sample_tree(problems, {problems[0].problem_id: [0]}, config)
    shots = tree.node(FEW_SHOT_KEY).prompt
    assert sum(format_question(p) in shots for p in load_problems(source)) == 2

    out = tmp_path / "run"
    argv = ["apps", "--split", "train", "--limit", "1", "--samples", "1", "--max-new-tokens", "2", "--out", str(out),
            *FAST]
    assert main([*argv, "--few-shot-source", source]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["few_shot_source"] == source
    assert main([*argv, "--few-shot-source", "embedded", "--few-shot", "0"]) == 2  # another source: refused
    assert f"few_shot_source: {source!r} -> 'embedded'" in _err(capsys)

    # a run directory written before the flag existed resumes as the embedded source
    old = tmp_path / "old"
    argv = ["apps", "--limit", "1", "--samples", "1", "--max-new-tokens", "2", "--out", str(old), *FAST]
    assert main(argv) == 0
    saved = json.loads((old / "config.json").read_text())
    assert saved.pop("few_shot_source") == "embedded"
    (old / "config.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert main(argv) == 0
    assert "resuming" in capsys.readouterr().out
    summary = json.loads((old / "summary.json").read_text())
    assert summary["this_invocation"]["generated"] == 0


def test_a_result_looked_up_by_a_node_without_samples_says_so():
    from prompt_tree.engine import Engine
    from prompt_tree.sampling import SamplingParams
    from prompt_tree.tree import PromptTree

    tree = PromptTree()
    tree.root.add("x", key="z").add("y", samples=1, key="w")
    result = Engine.random("tiny").generate(tree, SamplingParams(max_new_tokens=2), progress=False)
    assert len(result["w"]) == 1
    with pytest.raises(KeyError, match="not the key of a node that asked for samples.*keys here: 'w'"):
        result["z"]
