"""APPS prompt format, seeded few-shot examples, the evaluation's prompt tree, and code extraction."""
from __future__ import annotations

import random

import pytest

from prompt_tree.tasks.apps import load_problems
from prompt_tree.tasks.extract import DEFAULT_STOPS, cut_at_stops, extract_code, fenced_blocks
from prompt_tree.tasks.problem import Problem
from prompt_tree.tasks.prompts import (
    FEW_SHOT_KEY,
    INSTRUCTION_KEY,
    build_tree,
    draw_few_shot,
    format_few_shot,
    format_question,
)

STDIN = Problem("s1", "Add two numbers.\n", solutions=["print(sum(map(int, input().split())))\n"],
                inputs=["1 2\n"], outputs=["3\n"])
CALL = Problem("c1", "Return x squared.\n", solutions=["class Solution:\n    def sq(self, x):\n        return x * x"],
               inputs=[[3]], outputs=[9], fn_name="sq", starter_code="class Solution:\n    def sq(self, x):\n")


# ---------------------------------------------------------------------------------------- prompt format


def test_question_format_is_the_harness_format_exactly():
    assert format_question(STDIN) == "\nQUESTION:\nAdd two numbers.\n\nUse Standard Input format\nANSWER:\n"
    assert format_question(CALL) == (
        "\nQUESTION:\nReturn x squared.\nclass Solution:\n    def sq(self, x):\n\nUse Call-Based format\nANSWER:\n"
    )


def test_question_format_matches_the_reference_recipe_on_every_embedded_problem():
    # the recipe written out the way the APPS harnesses build it, from the raw fields
    for p in load_problems() + load_problems(split="train"):
        expected = "\nQUESTION:\n" + p.question
        if p.starter_code:
            expected += p.starter_code
        expected += "\nUse Call-Based format" if p.fn_name else "\nUse Standard Input format"
        expected += "\nANSWER:\n"
        assert format_question(p) == expected


def test_few_shot_block_is_solved_questions_in_order():
    text = format_few_shot([STDIN, CALL])
    assert text == (
        format_question(STDIN) + "print(sum(map(int, input().split())))\n"
        + format_question(CALL) + "class Solution:\n    def sq(self, x):\n        return x * x\n"
    )
    assert format_few_shot([]) == ""
    with pytest.raises(ValueError, match="no reference solution"):
        format_few_shot([Problem("x", "q")])


# ---------------------------------------------------------------------------------------- few-shot draws


def test_few_shot_draw_is_seeded_and_from_the_train_split():
    train_ids = {p.problem_id for p in load_problems(split="train")}
    for seed in range(6):
        a, b = draw_few_shot(3, seed=seed), draw_few_shot(3, seed=seed)
        assert [p.problem_id for p in a] == [p.problem_id for p in b]
        assert len({p.problem_id for p in a}) == 3 and {p.problem_id for p in a} <= train_ids
    draws = {tuple(p.problem_id for p in draw_few_shot(2, seed=s)) for s in range(20)}
    assert len(draws) > 3  # the seed matters
    assert draw_few_shot(0) == []


def test_few_shot_draw_excludes_and_validates():
    train = load_problems(split="train")
    keep = train[0].problem_id
    others = [p.problem_id for p in train[1:]]
    for seed in range(5):
        assert [p.problem_id for p in draw_few_shot(1, seed=seed, exclude=others)] == [keep]
    with pytest.raises(ValueError, match=f"asked for {len(train) + 1} few-shot examples"):
        draw_few_shot(len(train) + 1)
    for k in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative int"):
            draw_few_shot(k)


# ---------------------------------------------------------------------------------------- the tree


def _prompt(node):
    return "".join(n.prompt for n in node.path())


def test_build_tree_shape_keys_samples_and_sharing():
    problems = load_problems(limit=5)
    tree = build_tree(problems, samples=7, few_shot=2, instruction="Write Python.\n", seed=3)
    (instruction,) = tree.root.children
    assert instruction.key == INSTRUCTION_KEY and instruction.samples == 0 and instruction.prompt == "Write Python.\n"
    (shots,) = instruction.children
    assert shots.key == FEW_SHOT_KEY and shots.samples == 0
    assert shots.prompt == format_few_shot(draw_few_shot(2, seed=3))
    assert [c.key for c in shots.children] == [p.problem_id for p in problems]
    for p, node in zip(problems, shots.children):
        assert node.samples == 7 and node.children == ()
        assert _prompt(node) == "Write Python.\n" + shots.prompt + format_question(p)
        assert tree.node(p.problem_id) is node
    assert tree.num_samples == 35


def test_build_tree_without_instruction_or_examples():
    problems = load_problems(limit=3)
    for instruction in (None, ""):
        tree = build_tree(problems, samples=2, few_shot=1, instruction=instruction)
        (shots,) = tree.root.children
        assert shots.key == FEW_SHOT_KEY and len(shots.children) == 3
    tree = build_tree(problems, samples=2, few_shot=0)
    assert [c.key for c in tree.root.children] == [p.problem_id for p in problems]
    assert all(_prompt(c) == format_question(p) for c, p in zip(tree.root.children, problems))
    tree = build_tree(problems, samples=2, few_shot=0, instruction="Hi.")
    (instruction,) = tree.root.children
    assert [c.key for c in instruction.children] == [p.problem_id for p in problems]


def test_build_tree_accepts_example_lists_and_ready_strings():
    problems = load_problems(limit=2)
    tree = build_tree(problems, samples=1, few_shot=[STDIN, CALL])
    assert tree.root.children[0].prompt == format_few_shot([STDIN, CALL])
    tree = build_tree(problems, samples=1, few_shot="EXAMPLES\n")
    assert tree.root.children[0].prompt == "EXAMPLES\n"
    tree = build_tree(problems, samples=1, few_shot="")
    assert [c.key for c in tree.root.children] == [p.problem_id for p in problems]


def test_build_tree_never_shows_a_problem_as_its_own_example():
    train = load_problems(split="train")
    tree = build_tree(train[:2], samples=1, few_shot=len(train) - 2)
    shots = tree.root.children[0].prompt
    for p in train[:2]:
        assert format_question(p) not in shots
    for p in train[2:]:
        assert format_question(p) in shots


@pytest.mark.parametrize("kwargs, error, match", [
    ({"samples": 0}, ValueError, "samples must be a positive int"),
    ({"samples": 2, "few_shot": True}, TypeError, "not a bool"),
    ({"samples": 2, "few_shot": ["not a problem"]}, TypeError, "Problem objects"),
])
def test_build_tree_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_tree(load_problems(limit=2), **kwargs)


def test_build_tree_rejects_duplicate_or_reserved_ids():
    p = load_problems(limit=1)[0]
    with pytest.raises(ValueError, match="repeated"):
        build_tree([p, p], samples=1, few_shot=0)
    with pytest.raises(ValueError, match="reserved"):
        build_tree([Problem(FEW_SHOT_KEY, "q", inputs=["1"], outputs=["1"])], samples=1, few_shot=0)
    with pytest.raises(ValueError, match="at least one problem"):
        build_tree([], samples=1)


# ---------------------------------------------------------------------------------------- extraction

CODE = "n = int(input())\nfor i in range(n):\n    print(i)"


@pytest.mark.parametrize("completion", [
    CODE,
    CODE + "\n",
    "\n\n" + CODE + "\n\n",
    CODE + "\nQUESTION:\nAnother problem\nANSWER:\nprint(2)",
    CODE + "\n\n\n\nunrelated chatter",
    CODE + "\nANSWER:\nprint(2)",
    "```python\n" + CODE + "\n```\nThis prints 0..n-1.",
    "Here is my solution:\n```py\n" + CODE + "\n```\n",
    "```\n" + CODE + "\n```",
    "```python\n" + CODE + "\n```\n\nTest it:\n```python\nprint('test')\n```",
    "Example output:\n```text\n0\n1\n```\nCode:\n```python\n" + CODE + "\n```",
    "```python\n" + CODE,  # hit the token limit inside the fence
    "\nQUESTION:\nPrint 0..n-1.\nUse Standard Input format\nANSWER:\n" + CODE + "\nQUESTION:\nmore",
    "    " + CODE.replace("\n", "\n    "),  # indented as a whole
    CODE + "\n```text\n0\n1\n```",  # only a non-python block: the text before it
])
def test_extract_code_cases(completion):
    assert extract_code(completion) == CODE


def test_extract_code_with_the_prompt_echoed():
    problems = load_problems(limit=2)
    prompt = format_few_shot(draw_few_shot(2)) + format_question(problems[0])
    assert extract_code(prompt + CODE + "\nQUESTION:\nnext", prompt=prompt) == CODE
    # without the prompt, an echoed few-shot prompt cannot be told from its examples: the first ANSWER wins
    first_example = draw_few_shot(2)[0]
    assert extract_code(prompt + CODE, prompt=None) == first_example.solutions[0].strip()


def test_extract_code_edge_cases():
    assert extract_code("") == ""
    assert extract_code("\nQUESTION:\nonly a new question") == ""
    assert extract_code("print(1)\nSTOP here", stop=["STOP"]) == "print(1)"
    assert extract_code("print(1)\nQUESTION: kept", stop=[]) == "print(1)\nQUESTION: kept"
    with pytest.raises(TypeError):
        extract_code(None)


def test_cut_at_stops_matches_a_slow_reference():
    """The earliest stop wins, whichever stop it is; checked against a character-by-character scan."""
    rng = random.Random(0)
    pieces = ["a", "\n", "QUESTION:", "ANSWER:", " ", "x = 1"]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        slow = text
        for i in range(len(text)):
            if any(s and text.startswith(s, i) for s in DEFAULT_STOPS):
                slow = text[:i]
                break
        assert cut_at_stops(text) == slow


def test_fenced_blocks():
    assert fenced_blocks("no fences") == []
    assert fenced_blocks("```Python\na\n```\n```\nb\n```\n```js\nc") == [("python", "a\n"), ("", "b\n"), ("js", "c")]


# ---------------------------------------------------------------------------------------- chat


@pytest.mark.parametrize("answer, code", [
    ("```python\n" + CODE + "\n```", CODE),
    ("Here you go:\n\n```py\n" + CODE + "\n```\n\nIt prints 0..n-1.", CODE),
    ("```text\n0\n1\n```\n```python\n" + CODE + "\n```", CODE),
    (CODE, CODE),  # no fence: the whole answer
    ("```python\n" + CODE.replace("\n", "\n\n\n\n"), CODE.replace("\n", "\n\n\n\n")),  # no base-model stops
    ("QUESTION:\nnot an echo here\n```python\n" + CODE + "\n```", CODE),
])
def test_extract_answer_code(answer, code):
    from prompt_tree.tasks.extract import extract_answer_code

    assert extract_answer_code(answer) == code


def test_chat_tree_shape_and_errors():
    from prompt_tree.tasks.prompts import CHAT_INSTRUCTION, chat_answer, chat_question

    problems = load_problems(limit=3)
    tree = build_tree(problems, samples=2, few_shot=[STDIN, CALL], instruction=None, chat=True)
    outline = [(n.key, n.role, n.samples) for n in tree.nodes()]
    assert outline == [(INSTRUCTION_KEY, "system", 0),
                       (f"{FEW_SHOT_KEY}/0/user", "user", 0), (f"{FEW_SHOT_KEY}/0/assistant", "assistant", 0),
                       (f"{FEW_SHOT_KEY}/1/user", "user", 0), (f"{FEW_SHOT_KEY}/1/assistant", "assistant", 0)] + [
                          (p.problem_id, "user", 2) for p in problems]
    assert tree.node(INSTRUCTION_KEY).prompt == CHAT_INSTRUCTION
    assert tree.node(f"{FEW_SHOT_KEY}/1/assistant").prompt == chat_answer(CALL.solutions[0])
    assert chat_answer("x = 1\n") == "```python\nx = 1\n```"
    assert chat_question(STDIN) == format_question(STDIN).strip("\n")
    assert chat_question(STDIN).startswith("QUESTION:\n") and chat_question(STDIN).endswith("\nANSWER:")
    with pytest.raises(TypeError, match="turns: pass few_shot as an int"):
        build_tree(problems, samples=1, few_shot="ready text", chat=True)
    with pytest.raises(ValueError, match="no reference solution"):
        build_tree(problems, samples=1, few_shot=[Problem("x", "q")], chat=True)
    tree = build_tree(problems, samples=1, few_shot=0, instruction="Be brief.", chat=True)
    assert [n.key for n in tree.root.children] == [INSTRUCTION_KEY] and tree.root.children[0].prompt == "Be brief."
