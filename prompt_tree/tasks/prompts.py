"""APPS prompts in the standard harness format, few-shot blocks, and the prompt tree of an evaluation.

The question format is the one of Hendrycks et al. and bigcode-evaluation-harness:

    "\\nQUESTION:\\n" + question + starter_code + "\\nUse Standard Input format" | "\\nUse Call-Based format"
    + "\\nANSWER:\\n"

A few-shot example is the same block followed by a reference solution, so the model sees solved questions in
exactly the shape it is then asked to continue. The tree an evaluation samples from is

    root -> [instruction] -> [few-shot block] -> one node per problem (key = problem_id, `samples` each)

so the instruction and the examples are stored and attended once for all problems (Hydragen's two-level
sharing, section 5.3 of the paper).

For instruct checkpoints (`chat=True`, `prompt-tree apps --chat`) the same content is a conversation, rendered
by the checkpoint's chat template (prompt_tree.chat):

    root -> [system: instruction] -> [user: example question -> assistant: its solution in a fenced block] x k
         -> one user node per problem: the APPS prompt

The system and few-shot turns stay shared nodes; the model answers in an assistant turn, whose code the run
extracts from the fenced block (prompt_tree.tasks.extract.extract_answer_code).
"""
from __future__ import annotations

import random
from typing import Sequence

from prompt_tree import PromptTree
from prompt_tree.tasks.sources import load_problems
from prompt_tree.tasks.problem import Problem


STDIN_FORMAT = "\nUse Standard Input format"
CALL_FORMAT = "\nUse Call-Based format"
# keys of the shared nodes in build_tree; problem nodes are keyed by their problem_id
INSTRUCTION_KEY = "__instruction__"
FEW_SHOT_KEY = "__few_shot__"
# The system turn of a chat tree when no instruction is given: the answer's shape the extractor expects.
CHAT_INSTRUCTION = ("You are an expert Python programmer. Solve the programming problem the user gives. Answer "
                    "with one complete Python 3 program in a single ```python code block.")


def format_question(problem: Problem) -> str:
    """The prompt for one problem, ending in "\\nANSWER:\\n" where the model's code should start."""
    call_format = CALL_FORMAT if problem.fn_name else STDIN_FORMAT
    return "\nQUESTION:\n" + problem.question + (problem.starter_code or "") + call_format + "\nANSWER:\n"


def format_example(problem: Problem, solution: str | None = None) -> str:
    """One solved example: the question block, a reference solution, and a blank line before what follows."""
    if solution is None:
        if not problem.solutions:
            raise ValueError(f"few-shot example {problem.problem_id!r} has no reference solution to show")
        solution = problem.solutions[0]
    return format_question(problem) + solution.rstrip("\n") + "\n"


def format_few_shot(examples: Sequence[Problem]) -> str:
    """Concatenated solved examples (each a question block + its first solution); "" for no examples."""
    return "".join(format_example(p) for p in examples)


def draw_few_shot(k: int, seed: int = 0, source: str = "embedded", exclude: Sequence[str] = ()) -> list[Problem]:
    """k problems with solutions drawn without replacement, reproducibly, from the train split of `source`.

    exclude: problem_ids never to draw (e.g. the problems under evaluation, when the source is one file).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"few-shot k must be a non-negative int, got {k!r}")
    if k == 0:
        return []
    excluded = set(exclude)
    solved = [p for p in load_problems(source, split="train") if p.solutions]
    pool = [p for p in solved if p.problem_id not in excluded]
    if k > len(pool):
        n_excluded = len(solved) - len(pool)
        why = (f"{len(solved)} problems with a reference solution, {n_excluded} of them excluded because they are "
               f"under evaluation, leaving {len(pool)}") if n_excluded else \
            f"only {len(solved)} problems with a reference solution"
        raise ValueError(
            f"asked for {k} few-shot examples but the train split of few-shot source {source!r} has {why}; lower "
            f"the number of examples (--few-shot) or draw them from another source (--few-shot-source, any source "
            f"--source accepts)"
        )
    # sorting first makes the draw depend on the seed and the pool's contents, not on file order
    pool.sort(key=lambda p: p.problem_id)
    return random.Random(seed).sample(pool, k)


def chat_question(problem: Problem) -> str:
    """A problem's user turn: its APPS prompt, without the blank lines a continuation prompt has around it."""
    return format_question(problem).strip("\n")


def chat_answer(solution: str) -> str:
    """An example's assistant turn: its solution in a python fence (the shape asked of the model)."""
    return "```python\n" + solution.strip("\n") + "\n```"


def _few_shot_text(few_shot: int | Sequence[Problem] | str, seed: int, exclude: Sequence[str],
                   source: str = "embedded") -> str:
    if isinstance(few_shot, str):
        return few_shot
    if isinstance(few_shot, bool):
        raise TypeError("few_shot must be an int k, a list of Problems, or a ready string, not a bool")
    if isinstance(few_shot, int):
        return format_few_shot(draw_few_shot(few_shot, seed=seed, source=source, exclude=exclude))
    examples = list(few_shot)
    if not all(isinstance(p, Problem) for p in examples):
        raise TypeError("few_shot as a list must hold Problem objects")
    return format_few_shot(examples)


def build_tree(
    problems: Sequence[Problem],
    samples: int,
    few_shot: int | Sequence[Problem] | str = 2,
    instruction: str | None = None,
    seed: int = 0,
    few_shot_source: str = "embedded",
    chat: bool = False,
) -> PromptTree:
    """The prompt tree of an evaluation: root -> [instruction] -> [few-shot] -> problems x samples.

    few_shot: k examples drawn with `seed` from the train split of `few_shot_source` (default: the embedded set;
    problems under evaluation excluded), or a list of Problems to show, or a ready string. An empty instruction or
    few-shot text adds no node.
    Problem nodes are keyed by problem_id (which must be unique) and each asks for `samples` completions.
    chat: the conversation of the module docstring (the instruction, default CHAT_INSTRUCTION, as the system turn;
    few_shot then an int or a list of Problems, each a user and an assistant turn keyed FEW_SHOT_KEY + "/i/user"
    and ".../assistant").
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    problems = list(problems)
    if not problems:
        raise ValueError("build_tree needs at least one problem")
    ids = [p.problem_id for p in problems]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"problem ids must be unique (they key the tree's nodes); repeated: {dup}")
    if INSTRUCTION_KEY in ids or FEW_SHOT_KEY in ids:
        raise ValueError(f"problem ids {INSTRUCTION_KEY!r} and {FEW_SHOT_KEY!r} are reserved for shared nodes")

    tree = PromptTree()
    if chat:
        return _chat_tree(tree, problems, samples, few_shot, instruction, seed, few_shot_source)
    parent = tree.root
    if instruction:
        parent = parent.add(instruction, key=INSTRUCTION_KEY)
    shots = _few_shot_text(few_shot, seed, exclude=ids, source=few_shot_source)
    if shots:
        parent = parent.add(shots, key=FEW_SHOT_KEY)
    for problem in problems:
        parent.add(format_question(problem), samples=samples, key=problem.problem_id)
    return tree


def _chat_tree(tree: PromptTree, problems: Sequence[Problem], samples: int, few_shot, instruction: str | None,
               seed: int, few_shot_source: str) -> PromptTree:
    if isinstance(few_shot, str):
        raise TypeError("a chat tree's few-shot examples are turns: pass few_shot as an int k or a list of Problems, "
                        "not a ready string")
    if isinstance(few_shot, bool):
        raise TypeError("few_shot must be an int k, a list of Problems, or a ready string, not a bool")
    if isinstance(few_shot, int):
        examples = draw_few_shot(few_shot, seed=seed, source=few_shot_source, exclude=[p.problem_id for p in problems])
    else:
        examples = list(few_shot)
        if not all(isinstance(p, Problem) for p in examples):
            raise TypeError("few_shot as a list must hold Problem objects")
    parent = tree.root.add(instruction or CHAT_INSTRUCTION, key=INSTRUCTION_KEY, role="system")
    for i, example in enumerate(examples):
        if not example.solutions:
            raise ValueError(f"few-shot example {example.problem_id!r} has no reference solution to show")
        parent = parent.add(chat_question(example), key=f"{FEW_SHOT_KEY}/{i}/user", role="user")
        parent = parent.add(chat_answer(example.solutions[0]), key=f"{FEW_SHOT_KEY}/{i}/assistant", role="assistant")
    for problem in problems:
        parent.add(chat_question(problem), samples=samples, key=problem.problem_id, role="user")
    return tree
