"""Chat templates (prompt_tree.chat): rendering equals transformers' apply_chat_template on templates written here
in the style of Llama 3.1's and Qwen2.5's; chat trees keep their system and few-shot turns shared; errors; the
apps and generate commands with --chat on a small random checkpoint."""
from __future__ import annotations

import json

import pytest

from bpe_fixtures import plain, save_random_checkpoint, trained
from prompt_tree import PromptTree, PromptTreeError
from prompt_tree.chat import ChatTemplate, ChatTemplateError, messages_of, with_user_turns
from prompt_tree.tokenizer import load_tokenizer

transformers = pytest.importorskip("transformers")

# Llama 3.1 style: BOS written by the template, a system header with a date (strftime_now), trimmed contents,
# roles checked with raise_exception.
LLAMA_STYLE = (
    "{{- bos_token }}"
    "{%- if date_string is not defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Knowledge: none\\nToday Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['user', 'assistant'] %}"
    "{{- raise_exception('Only user and assistant roles are supported after the system message') }}"
    "{%- endif %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
# Qwen2.5 style: a default system turn when there is none, <|im_start|> ... <|im_end|> turns.
QWEN_STYLE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a careful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# The rest of what transformers' environment offers: namespace, loop controls, {% generation %}, tojson keeping
# non-ASCII text, and trim_blocks / lstrip_blocks.
FEATURES = (
    "{% set ns = namespace(n=0) %}\n"
    "{% for m in messages %}\n"
    "    {% if m.role == 'system' %}{% continue %}{% endif %}\n"
    "    {% set ns.n = ns.n + 1 %}\n"
    "{% generation %}<|im_start|>{{ ns.n }}:{{ m.role }}={{ m.content | tojson }}{% endgeneration %}\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}<|im_start|>A:{% endif %}"
)
TEMPLATES = {"llama": LLAMA_STYLE, "qwen": QWEN_STYLE, "features": FEATURES}
SPECIAL = {"llama": ("<|begin_of_text|>", "<|eot_id|>"), "qwen": (None, "<|im_end|>"),
           "features": ("<s>", "</s>")}

CONVERSATIONS = [
    [{"role": "user", "content": "Write f(x)."}],
    [{"role": "system", "content": "  Be brief.\n"}, {"role": "user", "content": "def f(x):\n    ...\n"}],
    [{"role": "system", "content": "Solve it."}, {"role": "user", "content": "QUESTION:\n1+1 日本 🙂"},
     {"role": "assistant", "content": "```python\nprint(2)\n```"}, {"role": "user", "content": "And 2+2?"}],
]


def checkpoint_dir(tmp_path, name, template, kind="byte_level"):
    """A tokenizer directory as an instruct checkpoint ships it: tokenizer.json and tokenizer_config.json with
    the chat template and the special tokens' names."""
    path = tmp_path / name
    path.mkdir(exist_ok=True)
    trained(kind).save(str(path / "tokenizer.json"))
    bos, eos = SPECIAL[name] if name in SPECIAL else ("<s>", "</s>")
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": bos, "eos_token": eos, "chat_template": template, "add_bos_token": False}))
    return path


def hf_tokenizer(path):
    hf = transformers.AutoTokenizer.from_pretrained(str(path))
    assert hf.chat_template is not None
    return hf


def conversation_tree(messages, samples=1):
    tree = PromptTree()
    node = tree.root
    for k, m in enumerate(messages):  # the last message's node asks for the answer
        node = node.add(m["content"], role=m["role"], samples=samples if k == len(messages) - 1 else 0)
    return tree


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("kind", ["byte_level", "metaspace"])
def test_rendering_equals_apply_chat_template(tmp_path, name, kind):
    path = checkpoint_dir(tmp_path, name, TEMPLATES[name], kind)
    ours, hf = load_tokenizer(path), hf_tokenizer(path)
    template = ChatTemplate(ours.chat_template, ours.special_tokens)
    for messages in CONVERSATIONS:
        for gen in (False, True):
            want = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            assert template.render(messages, add_generation_prompt=gen, what="test") == want
        plan = conversation_tree(messages, samples=2).flatten(ours)
        plan.check()
        want_ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
        assert plan.prompt_ids(0) == plan.prompt_ids(1) == list(want_ids)
        assert plan.tokenization.startswith("chat template")
    # The template's own BOS is the only one: no rule adds a second.
    if name == "llama":
        assert plan.prompt_ids(0)[0] == trained(kind).token_to_id("<|begin_of_text|>")
        assert plan.prompt_ids(0).count(plan.prompt_ids(0)[0]) == 1
    # a transformers tokenizer is accepted too: its own template and special tokens
    assert conversation_tree(CONVERSATIONS[-1]).flatten(hf).prompt_ids(0) == plan.prompt_ids(0)


def test_chat_trees_share_system_and_few_shot_turns(tmp_path):
    from prompt_tree.tasks.apps import load_problems
    from prompt_tree.tasks.prompts import CHAT_INSTRUCTION, FEW_SHOT_KEY, INSTRUCTION_KEY, build_tree, chat_answer, \
        chat_question, draw_few_shot

    path = checkpoint_dir(tmp_path, "qwen", QWEN_STYLE)
    ours, hf = load_tokenizer(path), hf_tokenizer(path)
    problems = load_problems(limit=4)
    tree = build_tree(problems, samples=2, few_shot=2, seed=1, chat=True)
    plan = tree.flatten(ours)
    plan.check()
    shots = draw_few_shot(2, seed=1, exclude=[p.problem_id for p in problems])
    history = [{"role": "system", "content": CHAT_INSTRUCTION}]
    for ex in shots:
        history += [{"role": "user", "content": chat_question(ex)},
                    {"role": "assistant", "content": chat_answer(ex.solutions[0])}]
    for i, (key, _) in enumerate(plan.sequences):
        problem = next(p for p in problems if p.problem_id == key)
        messages = history + [{"role": "user", "content": chat_question(problem)}]
        assert plan.prompt_ids(i) == list(hf.apply_chat_template(messages, add_generation_prompt=True,
                                                                 return_dict=False))
    # Every shared turn is a plan node with tokens, read once by all 8 sequences; each problem adds its own.
    chain = [INSTRUCTION_KEY] + [f"{FEW_SHOT_KEY}/{i}/{r}" for i in range(2) for r in ("user", "assistant")]
    assert [plan.group(k).size for k in chain] == [8] * 5 and all(plan.node_tokens[k] for k in chain)
    assert all(plan.group(p.problem_id).size == 2 for p in problems)
    assert plan.kv_tokens_shared < plan.kv_tokens_flat / 2
    described = tree.describe(plan)
    assert f"{INSTRUCTION_KEY} [system]:" in described and "chat template" in described


def test_conversation_rules_and_user_turns(tmp_path):
    assert messages_of([(None, "a"), (None, "b"), ("assistant", "c"), (None, "d")]) == [
        {"role": "user", "content": "ab"}, {"role": "assistant", "content": "cd"}]
    ours = load_tokenizer(checkpoint_dir(tmp_path, "qwen", QWEN_STYLE))
    hf = hf_tokenizer(tmp_path / "qwen")
    tree = PromptTree()
    top = tree.root.add("Shared text, ")
    top.add("then question one.", samples=1)
    top.add("then question two.", samples=1)
    plan = tree.flatten(ours, chat=True)  # role-less paths: one user turn each
    for i, text in enumerate(["Shared text, then question one.", "Shared text, then question two."]):
        want = hf.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      return_dict=False)
        assert plan.prompt_ids(i) == list(want)
    assert plan.node_tokens[top.key]  # the default system turn and the shared text stay shared
    # --chat's tree conversion means the same, also for the engine and data-parallel paths
    converted = PromptTree.from_dict(with_user_turns(tree.to_dict()))
    assert converted.root.children[0].role == "user"
    assert converted.flatten(ours).sequences == plan.sequences
    assert [converted.flatten(ours).prompt_ids(i) for i in range(2)] == [plan.prompt_ids(i) for i in range(2)]
    assert tree.flatten(ours).prompt_ids(0) == plain(trained("byte_level"), "Shared text, then question one.")


def test_chat_errors_name_the_way_out(tmp_path):
    ours = load_tokenizer(checkpoint_dir(tmp_path, "llama", LLAMA_STYLE))
    bare = trained("byte_level")
    tree = conversation_tree([{"role": "user", "content": "hi"}])
    with pytest.raises(ChatTemplateError, match="has none .*drop --chat"):
        tree.flatten(bare)
    with pytest.raises(ChatTemplateError, match="--bos with a chat template"):
        tree.flatten(ours, add_bos=True)
    assert tree.flatten(ours, add_bos=False).prompt_ids(0) == tree.flatten(ours).prompt_ids(0)
    ids_tree = PromptTree()
    ids_tree.root.add("text", role="system").add([5, 6], samples=1, key="ids")
    with pytest.raises(ChatTemplateError, match="node 'ids' holds token ids"):
        ids_tree.flatten(ours)
    with pytest.raises(ChatTemplateError, match="holds token ids"):
        with_user_turns({"nodes": [{"key": "a", "parent": None, "prompt": [1], "samples": 1}]})
    refused = PromptTree()
    refused.root.add("sys", role="system").add("x", role="tool", samples=1, key="t")
    with pytest.raises(ChatTemplateError, match="node 't': the chat template refuses .*system, tool.*Only user"):
        refused.flatten(ours)
    with pytest.raises(PromptTreeError, match="role is for a text prompt"):
        PromptTree().root.add([1], role="user")
    with pytest.raises(PromptTreeError, match="role must be a non-empty str"):
        PromptTree().root.add("x", role="")
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for %}")
    # roles survive saving, loading and graphs
    saved = PromptTree.from_dict(refused.to_dict())
    assert saved.node("t").role == "tool" and PromptTree.from_graph(refused.graph).node("t").role == "tool"


def test_apps_and_generate_with_chat_on_a_small_checkpoint(tmp_path, capsys):
    from prompt_tree.cli import main

    path = checkpoint_dir(tmp_path, "qwen", QWEN_STYLE)
    save_random_checkpoint(path, eos_token_id=trained("byte_level").token_to_id("<|im_end|>"))
    out = tmp_path / "run"
    args = ["apps", "--model", str(path), "--chat", "--limit", "2", "--samples", "2", "--few-shot", "1",
            "--max-new-tokens", "4", "--device", "cpu", "--no-progress", "--workers", "1", "--out", str(out)]
    assert main(args) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["chat"] is True and saved["tokenization"].startswith("chat template")
    assert len((out / "generations.jsonl").read_text().splitlines()) == 4
    assert main(args[:2] + [str(path), "--bos"] + args[3:]) == 2
    assert "--bos cannot go with --chat" in capsys.readouterr().err
    # generate --chat on a plain text tree: each path one user turn
    tree = PromptTree()
    tree.root.add("Write a loop.", samples=1, key="q")
    tree.save(str(tmp_path / "tree.json"))
    gen = ["generate", "--model", str(path), "--tree", str(tmp_path / "tree.json"), "--out",
           str(tmp_path / "o.jsonl"), "--max-new-tokens", "2", "--device", "cpu", "--no-progress"]
    assert main(gen + ["--chat"]) == 0
    assert "tokenization: chat template" in capsys.readouterr().err
    assert main(gen) == 0
    assert "tokenization: no BOS (tokenizer_config.json add_bos_token=false)" in capsys.readouterr().err
    # a checkpoint without a template: a clear error before anything runs
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    assert main(args[:-1] + [str(tmp_path / "run2")]) == 2
    assert "has none (no chat_template in tokenizer_config.json" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()
