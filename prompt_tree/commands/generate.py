"""`prompt-tree generate`: sample completions for a prompt tree saved as JSON, one JSON line per completion.

    prompt-tree generate --model random:tiny --tree tree.json --samples 4 --max-new-tokens 32 --out out.jsonl

Lines are written (and flushed) as sequences finish, so a long run can be watched with `tail -f`; the summary
(times, tokens/s, memory) goes to stderr at the end. Under torchrun the tree's subtrees are split across
data-parallel groups of --tp ranks (prompt_tree.parallel.dp_generate).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from prompt_tree.arguments import DTYPE_CHOICES, add_tokenization_arguments, dtype_arg
from prompt_tree.engine.results import completion_writer


# The dtypes the attention kernels run in (prompt_tree.loading also knows fp64, which the kernels refuse).
def preset_has_tokenizer(preset: str) -> bool:
    """Whether Engine.random(preset) gets a tokenizer (only byte-vocabulary presets such as tiny do). Resolves the
    preset's config only, building nothing; an unknown preset raises ConfigError (a ValueError) listing them."""
    from prompt_tree.config import get_preset
    from prompt_tree.tokenizer import random_model_tokenizer

    return random_model_tokenizer(get_preset(preset)) is not None


def text_node_needing_tokenizer(tree) -> str | None:
    """The key of the first node with a str prompt that flattening the tree tokenizes (one with samples at or
    below it), or None when every such prompt is token ids."""
    below: dict[str, int] = {}
    for node in reversed(tree.nodes()):
        below[node.key] = node.samples + sum(below[c.key] for c in node.children)
    for node in tree.nodes():
        if below[node.key] and node.is_text:
            return node.key
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="a local HF checkpoint directory, or random:PRESET (random weights; 'tiny' = random:tiny; "
                        "presets other than tiny have no tokenizer, so their trees need token-id prompts)")
    p.add_argument("--tree", required=True, help="prompt tree JSON (as written by PromptTree.save)")
    p.add_argument("--out", required=True, help="output JSONL: key, sample_index, text, token_ids, finish_reason")
    add_tokenization_arguments(p)
    p.add_argument("--samples", type=int, default=None,
                   help="override: N samples at every node that asks for samples (at every leaf if none asks)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most per sample")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min_p x the top probability")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--stop-token-id", type=int, action="append", default=[], help="stop token id (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (each sample's draws depend only on it, "
                                                       "the node key and the sample index)")
    p.add_argument("--logprobs", action="store_true", help="also write the chosen tokens' log-probabilities")
    p.add_argument("--attention", choices=("tree", "flat"), default="tree",
                   help="tree = shared nodes read once per group; flat = the no-sharing baseline")
    p.add_argument("--max-batch-sequences", type=int, default=None,
                   help="run at most this many sequences at once (default: the largest batch that fits memory)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--dtype", type=dtype_arg, default=None, metavar="{" + ",".join(DTYPE_CHOICES) + "}",
                   help="weights and KV dtype, one the attention kernels run in (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--no-cuda-graphs", action="store_true", help="run decode steps eagerly on CUDA")
    p.add_argument("--tp", type=int, default=1,
                   help="tensor-parallel ranks per model under torchrun; the world size / tp data-parallel groups "
                        "split the tree's subtrees, each writing OUT.rank<d>.jsonl, merged into --out at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_engine(spec: str, device=None, dtype=None, **kwargs):
    """`tiny`, `random:PRESET` or a checkpoint directory -> Engine (Engine.load; a checkpoint without
    tokenizer.json loads its weights alone: the tree must hold token ids, which run() checks first)."""
    from prompt_tree.engine import Engine

    return Engine.load(spec, device=device, dtype=dtype, **kwargs)


def has_tokenizer_file(model: str) -> bool:
    """Whether a checkpoint directory holds a tokenizer.json (anything else passes: load errors name it)."""
    return not os.path.isdir(model) or os.path.isfile(os.path.join(model, "tokenizer.json"))


def override_samples(tree_dict: dict, samples: int) -> dict:
    """Set `samples` on the nodes that ask for any, or on every leaf when none does."""
    nodes = tree_dict["nodes"]
    asking = [n for n in nodes if n.get("samples", 0) > 0]
    if not asking:
        parents = {n.get("parent") for n in nodes}
        asking = [n for n in nodes if n["key"] not in parents]
    for n in asking:
        n["samples"] = samples
    return tree_dict


def _fail(message: str) -> int:
    print(f"prompt-tree generate: error: {message}", file=sys.stderr)
    return 2


def _check_out(path: str) -> str | None:
    """Why --out cannot be written (checked before the model is loaded), or None."""
    if os.path.isdir(path):
        return f"--out {path!r} is a directory; pass the path of a .jsonl file to write"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"--out {path!r}: directory {parent!r} does not exist; create it first or pass another --out path"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--out {path!r}: directory {parent!r} is not writable; pass another --out path"
    return None


def run(args: argparse.Namespace) -> int:
    from prompt_tree.config import random_preset
    from prompt_tree.parallel.env import PEER_FAILED_EXIT, RankFailedError, init_distributed, run_guarded
    from prompt_tree.sampling import SamplingParams
    from prompt_tree.chat import with_user_turns
    from prompt_tree.tree import PromptTree

    if not os.path.isfile(args.tree):
        return _fail(f"--tree: no tree file {args.tree!r}")
    if args.samples is not None and args.samples < 1:
        return _fail(f"--samples must be >= 1 (got {args.samples})")
    if args.max_batch_sequences is not None and args.max_batch_sequences < 1:
        return _fail(f"--max-batch-sequences must be >= 1, or left out to fit batches to memory "
                     f"(got {args.max_batch_sequences})")
    if os.path.exists(args.out) and os.path.samefile(args.out, args.tree):
        return _fail(f"--out {args.out!r} is the --tree file: the completions would replace the tree; pass another "
                     f"--out")
    why = _check_out(args.out)
    if why:
        return _fail(why)
    try:
        with open(args.tree, encoding="utf-8") as f:
            tree_dict = json.load(f)
        tree = PromptTree.from_dict(tree_dict)  # a clear error for anything that is not a saved tree
    except (ValueError, OSError) as e:  # json.JSONDecodeError and PromptTreeError are ValueErrors
        return _fail(f"--tree {args.tree!r}: {e}")
    try:
        if args.samples is not None:
            tree = PromptTree.from_dict(override_samples(tree.to_dict(), args.samples))
        if args.chat:  # every path a conversation, here and on every data-parallel rank (prompt_tree.chat)
            tree = PromptTree.from_dict(with_user_turns(tree.to_dict()))
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            min_p=args.min_p, stop=tuple(args.stop), stop_token_ids=tuple(args.stop_token_id), seed=args.seed,
            logprobs=args.logprobs)
        if tree.num_samples == 0:
            return _fail("the tree asks for no samples (set samples on its nodes or pass --samples)")
        preset = random_preset(args.model)
        if preset is None and not has_tokenizer_file(args.model):  # refuse before loading any weights
            text_key = text_node_needing_tokenizer(tree)
            if text_key is not None:
                return _fail(
                    f"--model {args.model!r} has no tokenizer.json, but node {text_key!r} of --tree has a text prompt; "
                    f"copy the checkpoint's tokenizer.json (with tokenizer_config.json) into that directory, or give "
                    f"the tree token-id prompts (a checkpoint without tokenizer.json then runs on its weights alone)")
            if args.stop:
                return _fail(f"--stop needs a tokenizer to decode text, and --model {args.model!r} has no "
                             f"tokenizer.json; use --stop-token-id instead")
        if preset is not None and not preset_has_tokenizer(preset):  # refuse before building any weights
            text_key = text_node_needing_tokenizer(tree)
            if text_key is not None:
                return _fail(
                    f"--model {args.model}: preset {preset!r} has no tokenizer (only byte-vocabulary presets such as "
                    f"'tiny' get one), but node {text_key!r} of --tree has a text prompt; give the tree token-id "
                    f"prompts, or use --model tiny or a checkpoint directory with a tokenizer.json")
            if args.stop:
                return _fail(f"--stop needs a tokenizer to decode text, and preset {preset!r} has none; use "
                             f"--stop-token-id instead")
        ctx = init_distributed(args.tp, args.device)  # None: one process, as without torchrun
        if ctx is not None:
            from prompt_tree.parallel.dp_generate import run_distributed

            return run_guarded(ctx, lambda: run_distributed(args, ctx, tree, params))
        engine = load_engine(args.model, args.device, args.dtype, cuda_graphs=not args.no_cuda_graphs,
                             add_bos=args.bos)
        if args.stop and engine.tokenizer is None:
            return _fail(f"--stop needs a tokenizer to decode text, and model {args.model!r} has none; use "
                         f"--stop-token-id instead")
        plan = engine.plan(tree, params)  # tokenizes and checks the context before --out is touched
    except RankFailedError as e:
        print(f"prompt-tree generate: {e}", file=sys.stderr)
        return PEER_FAILED_EXIT
    except (ValueError, OSError) as e:  # json.JSONDecodeError and PromptTreeError are ValueErrors
        return _fail(str(e))

    try:
        out = open(args.out, "w", encoding="utf-8")
    except OSError as e:
        return _fail(f"cannot write --out {args.out!r}: {e}")
    try:
        with out:
            result = engine.generate(plan, params, attention=args.attention,
                                     max_batch_sequences=args.max_batch_sequences, progress=not args.no_progress,
                                     on_complete=completion_writer(out))
    except (ValueError, OSError) as e:
        return _fail(str(e))
    s = result.summary
    if plan.tokenization is not None:
        print(f"tokenization: {plan.tokenization}", file=sys.stderr)
    print(f"{s.num_sequences} sequences, {s.generated_tokens} tokens in {s.sub_batches} sub-batch(es): prefill "
          f"{s.prefill_seconds:.2f} s, decode {s.decode_seconds:.2f} s, {s.tokens_per_second:.0f} tokens/s, "
          f"KV {s.kv_bytes / 2**20:.1f} MiB, peak memory {s.peak_memory_bytes / 2**20:.0f} MiB", file=sys.stderr)
    return 0
