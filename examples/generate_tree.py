"""Sample completions over a small prompt tree: a shared few-shot prefix, two problems, several samples each.

    python examples/generate_tree.py                       # random "tiny" model on CPU (gibberish, seconds)
    python examples/generate_tree.py --model /path/to/ckpt # a real Llama-family checkpoint

Runs the tree twice, with shared (tree) attention and with the no-sharing (flat) baseline, checks that greedy
decoding gives identical tokens, and prints both summaries.
"""
from __future__ import annotations

import argparse

from prompt_tree import Engine, PromptTree, SamplingParams


def build_tree(samples: int) -> PromptTree:
    tree = PromptTree()
    shots = tree.root.add("You write short Python functions.\n\nQ: add two numbers\nA: def add(a, b):\n"
                          "    return a + b\n\n", key="shots")
    shots.add("Q: reverse a string\nA:", samples=samples, key="reverse")
    square = shots.add("Q: square a number\nA:", samples=samples, key="square")
    square.add(" def square(x):", samples=samples, key="square/def")  # an inner node with samples, and a child
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="checkpoint directory or 'tiny' (random weights)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    engine = Engine.random("tiny") if args.model == "tiny" else Engine.from_pretrained(args.model)
    tree = build_tree(args.samples)

    greedy = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0, stop=["\n\n"])
    tree_result = engine.generate(tree, greedy, progress=False)
    flat_result = engine.generate(tree, greedy, attention="flat", progress=False)
    assert all([c.token_ids for c in tree_result[k]] == [c.token_ids for c in flat_result[k]] for k in tree_result)
    print("greedy, tree attention:", tree_result.summary)
    print("greedy, flat attention:", flat_result.summary)

    sampled = engine.generate(tree, SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.8, top_p=0.95,
                                                   seed=1, stop=["\n\n"]), progress=False)
    for key, completions in sampled.items():
        for c in completions:
            print(f"{key} #{c.sample_index} [{c.finish_reason}] {c.text!r}")


if __name__ == "__main__":
    main()
