"""`prompt-tree describe TREE.json`: flatten a saved prompt tree and print its outline and memory summary."""
from __future__ import annotations

import argparse
import sys

from prompt_tree.plan import bytes_per_token
from prompt_tree.tree import PromptTree, PromptTreeError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tree", metavar="TREE.json", help="a tree written by PromptTree.save / to_dict")
    parser.add_argument("--tokenizer", metavar="PATH", default=None,
                        help="a tokenizer.json (tokenizers library) for trees with string prompts")
    parser.add_argument("--max-len", type=int, default=None, metavar="N",
                        help="refuse prompts (root to node) longer than N tokens")
    parser.add_argument("--max-children", type=int, default=8, metavar="K",
                        help="show at most K children under each node (default 8)")
    parser.add_argument("--kv-shape", type=int, nargs=3, default=None, metavar=("LAYERS", "KV_HEADS", "HEAD_DIM"),
                        help="model KV shape, to report memory in GiB (bf16), e.g. 32 8 128 for llama3-8b")


def run(args: argparse.Namespace) -> int:
    tokenizer = None
    try:
        tree = PromptTree.load(args.tree)
        if args.tokenizer is not None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(args.tokenizer)
        plan = tree.flatten(tokenizer, max_len=args.max_len)
    except (OSError, PromptTreeError, ValueError) as e:  # json errors are ValueErrors too
        print(f"prompt-tree describe: {e}", file=sys.stderr)
        return 2
    bpt = bytes_per_token(*args.kv_shape) if args.kv_shape else None
    print(tree.describe(plan, max_children=args.max_children, bytes_per_token=bpt))
    return 0
