"""The benchmark's prompt trees, built from random token ids (the models have random weights, so text means nothing).

Workload 1, one shared prefix (the paper's Figure 3): a node of `prefix` tokens asking for `batch` samples.
Workload 2, hierarchical (the paper's APPS setup): a few-shot block shared by P problems, each problem asking for
S samples:

    root -> "few-shot" (F tokens) -> "p0" (~L tokens) x S samples
                                  -> "p1" (~L tokens) x S samples ...

`single_level` turns any tree into the one-level tree of the paper's single-level Hydragen: one node under the
root per node that asks for samples, holding its whole path's tokens (so the few-shot block is stored and read
once per problem instead of once in all). Keys are kept, so results of both trees compare key by key.

Everything here is host-side token ids (no model, no device; torch only draws the random ids). Every sequence's
prompt starts with the model's BOS (when it has one), so the trees look like tokenized text to the engine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from prompt_tree.tree import PromptTree

# Workload 1 grid: prefix lengths x batch sizes, 128 new tokens.
PREFIXES = (1024, 2048, 4096, 8192, 16384)
BATCHES = (32, 128, 512, 1024, 2048)
NEW_TOKENS_1 = 128
# Largest-batch search bound for workload 1 (a mode that fits this many is reported as fitting at least this many).
MAX_SEARCH_BATCH = 1 << 16
# Problem prompts vary in length around the nominal one (APPS questions do): L x [1 - spread, 1 + spread].
PROBLEM_LENGTH_SPREAD = 0.1
# Warm-up trees keep each node's first tokens only: enough that a node's prefill rows fill the widest tile class
# (128 rows x 1 query head for MHA), so the warm-up compiles the same Triton variants the timed run uses.
WARMUP_NODE_TOKENS = 128
FEW_SHOT_KEY = "few-shot"
PREFIX_KEY = "prefix"


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class HierarchicalShape:
    """Workload 2: a few-shot block of `few_shot` tokens shared by `problems` problems of ~`problem` tokens each,
    `samples` samples of `new_tokens` tokens per problem."""

    name: str
    few_shot: int
    problem: int
    samples: int
    new_tokens: int
    problems: int

    def __post_init__(self) -> None:
        for field in ("few_shot", "problem", "samples", "new_tokens", "problems"):
            _positive(f"workload {self.name} {field}", getattr(self, field))

    @property
    def total_sequences(self) -> int:
        return self.problems * self.samples

    @property
    def label(self) -> str:
        return (f"few-shot {self.few_shot} -> {self.problems} problems x ~{self.problem} -> {self.samples} samples "
                f"x {self.new_tokens} new")


# (a) the paper's APPS shape; (b) a longer few-shot block, longer problems, few samples each.
DEFAULT_2A = HierarchicalShape("2a", few_shot=2400, problem=500, samples=128, new_tokens=512, problems=32)
DEFAULT_2B = HierarchicalShape("2b", few_shot=4096, problem=1000, samples=8, new_tokens=256, problems=256)


@lru_cache(maxsize=1024)
def _random_ids(n: int, vocab_size: int, seed: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, vocab_size, (n,), generator=g).tolist())


def random_prompt(n: int, vocab_size: int, seed: int, bos_id: int | None) -> list[int]:
    """n token ids, BOS first when the model has one; the same (n, vocab, seed, bos) always gives the same ids."""
    _positive("prompt length", n)
    if bos_id is None:
        return list(_random_ids(n, vocab_size, seed))
    return [bos_id] + list(_random_ids(n - 1, vocab_size, seed)) if n > 1 else [bos_id]


def shared_prefix_tree(prefix: int, batch: int, vocab_size: int, bos_id: int | None, seed: int = 0) -> PromptTree:
    """Workload 1: one node of `prefix` tokens asking for `batch` samples."""
    tree = PromptTree()
    tree.root.add(random_prompt(prefix, vocab_size, seed, bos_id), samples=_positive("batch", batch), key=PREFIX_KEY)
    return tree


class HierarchicalWorkload:
    """Workload 2 trees of a shape, for any number of sequences: problems are filled in order (problem i always
    has the same tokens), the last one possibly with fewer samples."""

    def __init__(self, shape: HierarchicalShape, vocab_size: int, bos_id: int | None, seed: int = 0):
        self.shape, self.vocab_size, self.bos_id, self.seed = shape, vocab_size, bos_id, seed

    def few_shot_ids(self) -> list[int]:
        return random_prompt(self.shape.few_shot, self.vocab_size, self.seed, self.bos_id)

    def problem_length(self, i: int) -> int:
        u = torch.rand((), generator=torch.Generator().manual_seed(self.seed + 7919 * (i + 1))).item()
        return max(1, round(self.shape.problem * (1 - PROBLEM_LENGTH_SPREAD + 2 * PROBLEM_LENGTH_SPREAD * u)))

    def problem_ids(self, i: int) -> list[int]:
        # No BOS: a problem continues the few-shot block.
        return list(_random_ids(self.problem_length(i), self.vocab_size, self.seed + 1 + i))

    def num_problems(self, num_sequences: int) -> int:
        return math.ceil(num_sequences / self.shape.samples)

    def tree(self, num_sequences: int | None = None) -> PromptTree:
        """The two-level tree of the first `num_sequences` sequences (default: the whole workload)."""
        n = self.shape.total_sequences if num_sequences is None else num_sequences
        if not 1 <= n <= self.shape.total_sequences:
            raise ValueError(f"workload {self.shape.name}: num_sequences must be in [1, "
                             f"{self.shape.total_sequences}], got {n}")
        tree = PromptTree()
        shots = tree.root.add(self.few_shot_ids(), key=FEW_SHOT_KEY)
        for i in range(self.num_problems(n)):
            samples = min(self.shape.samples, n - i * self.shape.samples)
            shots.add(self.problem_ids(i), samples=samples, key=f"p{i}")
        return tree

    def batch_candidates(self, one_problem_fits: bool) -> list[int]:
        """Batch sizes (sequences) to search for the largest that fits: whole problems when one fits, else the
        samples of one problem."""
        s = self.shape
        if one_problem_fits:
            return [k * s.samples for k in range(1, s.problems + 1)]
        return list(range(1, s.samples))


def single_level(tree: PromptTree) -> PromptTree:
    """The one-level copy of a token-id tree: under the root, one node per node that asks for samples, holding the
    tokens of its whole path (same key, same samples). Shared ancestors are copied into every such node."""
    out = PromptTree()
    for node in tree.nodes():
        if not node.samples:
            continue
        ids: list[int] = []
        for step in node.path():
            if step.is_text:
                raise ValueError(f"single_level needs token-id prompts; node {step.key!r} holds text")
            ids.extend(step.prompt)
        out.root.add(ids, samples=node.samples, key=node.key)
    return out


def shrink(tree: PromptTree, max_tokens: int = WARMUP_NODE_TOKENS) -> PromptTree:
    """The same tree (keys, samples, branching) with each node cut to its first max_tokens tokens: a cheap warm-up
    whose decode batch has the same composition as the real one."""
    out = PromptTree()
    made = {tree.root.key: out.root}
    for node in tree.nodes():
        made[node.key] = made[node.parent.key].add(node.prompt[:max_tokens], samples=node.samples, key=node.key)
    return out


def sequence_prompts(plan) -> list[list[int]]:
    """Each sequence's full prompt (its path's tokens), in plan order: what a baseline without sharing feeds."""
    return [plan.prompt_ids(i) for i in range(plan.num_sequences)]
