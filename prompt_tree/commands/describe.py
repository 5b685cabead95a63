"""`prompt-tree describe TREE.json`: flatten a saved prompt tree and print its outline and memory summary.

It tokenizes as `generate` does (the same tokenizer, BOS rule and chat rendering), so its token counts are
generate's; it prints which tokenization rule applied and the tokens BPE merges kept from being shared.
"""
from __future__ import annotations

import argparse
import os
import sys

from prompt_tree.arguments import add_tokenization_arguments
from prompt_tree.commands.generate import text_node_needing_tokenizer
from prompt_tree.plan import bytes_per_token
from prompt_tree.tokenizer import TokenizerError, load_tokenizer
from prompt_tree.tree import PromptTree, PromptTreeError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tree", metavar="TREE.json", help="a tree written by PromptTree.save / to_dict")
    parser.add_argument("--tokenizer", metavar="PATH", default=None,
                        help="a checkpoint directory or its tokenizer.json, for trees with string prompts; "
                             "tokenizes as generate does (each sequence its whole prompt's encoding, under the "
                             "BOS rule of the config files beside it)")
    add_tokenization_arguments(parser)
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
    """The model's tokenizer as `generate` loads it (BOS, EOS and chat template from the config files beside
    tokenizer.json), with errors naming --tokenizer."""
    if not os.path.exists(path):
        raise ValueError(f"--tokenizer {path!r}: no such file or directory; pass a checkpoint directory or the path "
                         f"of its tokenizer.json (tokenizers library)")
    try:
        return load_tokenizer(path)
    except TokenizerError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"--tokenizer {path!r}: {first}") from None


def _print(text: str) -> None:
    """Print to stdout; a reader that stops early (`| head`) ends the output quietly, not with a traceback."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def run(args: argparse.Namespace) -> int:
    tokenizer = None
    if args.max_len is not None and args.max_len < 1:
        return _fail(f"--max-len must be >= 1 tokens, got {args.max_len}")
    if args.max_children < 1:
        return _fail(f"--max-children must be >= 1, got {args.max_children}")
    if args.kv_shape is not None and min(args.kv_shape) < 1:
        return _fail(f"--kv-shape takes LAYERS KV_HEADS HEAD_DIM, each >= 1, got {' '.join(map(str, args.kv_shape))}")
    try:
        tree = PromptTree.load(args.tree)
        if args.tokenizer is not None:
            tokenizer = _load_tokenizer(args.tokenizer)
        elif args.bos is not None or args.chat:
            flag = "--chat" if args.chat else "--bos" if args.bos else "--no-bos"
            return _fail(f"{flag} applies to tokenizing text; pass --tokenizer PATH (a checkpoint directory) too")
        elif tree.num_samples > 0:
            key = text_node_needing_tokenizer(tree)
            if key is not None:
                return _fail(f"node {key!r} has a text prompt; pass --tokenizer PATH/tokenizer.json to tokenize the "
                             f"tree's text prompts")
        plan = tree.flatten(tokenizer, max_len=args.max_len, add_bos=args.bos, chat=args.chat)
    except (OSError, PromptTreeError, ValueError) as e:  # json errors are ValueErrors too
        message = str(e)
        if not message.startswith("--"):  # the tree file's own problem (unreadable, not JSON, not a tree)
            message = f"{args.tree!r}: {message}"
        return _fail(message)
    bpt = bytes_per_token(*args.kv_shape) if args.kv_shape else None
    _print(tree.describe(plan, max_children=args.max_children, bytes_per_token=bpt))
    return 0
