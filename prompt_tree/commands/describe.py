"""`prompt-tree describe TREE.json`: flatten a saved prompt tree and print its outline and memory summary."""
from __future__ import annotations

import argparse
import os
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


def _fail(message: str) -> int:
    print(f"prompt-tree describe: error: {message}", file=sys.stderr)
    return 2


def _load_tokenizer(path: str):
    """tokenizers.Tokenizer.from_file, with errors that name --tokenizer (tokenizers raises a bare Exception)."""
    if not os.path.isfile(path):
        raise ValueError(f"--tokenizer {path!r}: no such file; pass the path of a tokenizer.json (tokenizers "
                         f"library), e.g. the one in a Hugging Face checkpoint directory")
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ValueError(f"--tokenizer needs the tokenizers package ({e}); pip install tokenizers") from None
    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a plain Exception for a malformed file
        raise ValueError(f"--tokenizer {path!r} is not a readable tokenizer.json (tokenizers library): "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def run(args: argparse.Namespace) -> int:
    from prompt_tree.commands.generate import text_node_needing_tokenizer

    tokenizer = None
    try:
        tree = PromptTree.load(args.tree)
        if args.tokenizer is not None:
            tokenizer = _load_tokenizer(args.tokenizer)
        elif tree.num_samples > 0:
            key = text_node_needing_tokenizer(tree)
            if key is not None:
                return _fail(f"node {key!r} has a text prompt; pass --tokenizer PATH/tokenizer.json to tokenize the "
                             f"tree's text prompts")
        plan = tree.flatten(tokenizer, max_len=args.max_len)
    except (OSError, PromptTreeError, ValueError) as e:  # json errors are ValueErrors too
        return _fail(str(e))
    bpt = bytes_per_token(*args.kv_shape) if args.kv_shape else None
    print(tree.describe(plan, max_children=args.max_children, bytes_per_token=bpt))
    return 0
