"""Declare an APPS-like prompt tree, flatten it, and print what sharing saves.

Runs anywhere (no model, no tokenizer download): prompts are encoded byte by byte, with a BOS id in front,
as a stand-in for a real tokenizer. Usage: python examples/declare_tree.py
"""
from __future__ import annotations

from prompt_tree import PromptTree
from prompt_tree.plan import bytes_per_token


class ByteTokenizer:
    """Token id = UTF-8 byte; 256 = BOS, added on every encode like a Llama tokenizer (the plan keeps one)."""

    bos = 256

    def encode(self, text: str) -> list[int]:
        return [self.bos] + list(text.encode("utf-8"))


FEW_SHOT = "".join(
    f"\nQUESTION:\nGiven two integers, print their {op}.\nUse Standard Input format\nANSWER:\n"
    f"a, b = map(int, input().split())\nprint(a {sym} b)\n"
    for op, sym in (("sum", "+"), ("product", "*"))
)
PROBLEMS = {
    "4001": "Print the largest of n integers.",
    "4002": "Count the vowels in a string.",
    "4003": "Reverse every word of a sentence.",
}


def main() -> None:
    tree = PromptTree()
    system = tree.root.add("You are an expert competitive programmer.\n")
    shots = system.add(FEW_SHOT, key="shots")
    for problem_id, question in PROBLEMS.items():
        prompt = f"\nQUESTION:\n{question}\nUse Standard Input format\nANSWER:\n"
        shots.add(prompt, samples=128, key=problem_id)  # 128 completions of system + shots + this question
    plan = tree.flatten(ByteTokenizer(), max_len=4096)
    plan.check()
    print(tree.describe())
    print(plan.memory_report(bytes_per_token(num_layers=32, num_kv_heads=32, head_dim=128)))  # codellama-7b
    print("sub-batches of at most 256 sequences:", plan.split(256))
    key, sample = plan.sequences[200]
    print(f"sequence 200 is sample {sample} of problem {key}, prompt of {plan.prompt_len(200)} tokens")

    # A flat list of prompts gets the same sharing automatically; keys are the input indices.
    flat = [ByteTokenizer().encode("You are an expert.\n" + FEW_SHOT + q) for q in PROBLEMS.values()]
    auto = PromptTree.from_prompts(flat, samples=4, min_shared_tokens=16)
    print(auto.flatten().describe())


if __name__ == "__main__":
    main()
