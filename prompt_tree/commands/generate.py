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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="a local HF checkpoint directory, or random:PRESET (random weights; 'tiny' = random:tiny)")
    p.add_argument("--tree", required=True, help="prompt tree JSON (as written by PromptTree.save)")
    p.add_argument("--out", required=True, help="output JSONL: key, sample_index, text, token_ids, finish_reason")
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
    p.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--no-cuda-graphs", action="store_true", help="run decode steps eagerly on CUDA")
    p.add_argument("--tp", type=int, default=1,
                   help="tensor-parallel ranks per model under torchrun; the world size / tp data-parallel groups "
                        "split the tree's subtrees, each writing OUT.rank<d>.jsonl, merged into --out at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_engine(spec: str, device=None, dtype=None, **kwargs):
    """`tiny`, `random:PRESET` or a checkpoint directory -> Engine."""
    from prompt_tree.engine import Engine

    if spec == "tiny" or spec.startswith("random:"):
        preset = "tiny" if spec == "tiny" else spec[len("random:"):]
        return Engine.random(preset, device=device, dtype=dtype, **kwargs)
    return Engine.from_pretrained(spec, device=device, dtype=dtype, **kwargs)


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


def run(args: argparse.Namespace) -> int:
    from prompt_tree.parallel.env import PEER_FAILED_EXIT, RankFailedError, init_distributed, run_guarded
    from prompt_tree.sampling import SamplingParams
    from prompt_tree.tree import PromptTree

    if not os.path.isfile(args.tree):
        print(f"prompt-tree generate: no tree file {args.tree!r}", file=sys.stderr)
        return 2
    if args.samples is not None and args.samples < 1:
        print("prompt-tree generate: --samples must be >= 1", file=sys.stderr)
        return 2
    try:
        with open(args.tree, encoding="utf-8") as f:
            tree_dict = json.load(f)
        if args.samples is not None:
            tree_dict = override_samples(tree_dict, args.samples)
        tree = PromptTree.from_dict(tree_dict)
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            min_p=args.min_p, stop=tuple(args.stop), stop_token_ids=tuple(args.stop_token_id), seed=args.seed,
            logprobs=args.logprobs)
        if tree.num_samples == 0:
            print("prompt-tree generate: the tree asks for no samples (set samples on its nodes or pass --samples)",
                  file=sys.stderr)
            return 2
        ctx = init_distributed(args.tp, args.device)  # None: one process, as without torchrun
        if ctx is not None:
            from prompt_tree.parallel.dp_generate import run_distributed

            return run_guarded(ctx, lambda: run_distributed(args, ctx, tree, params))
        engine = load_engine(args.model, args.device, args.dtype, cuda_graphs=not args.no_cuda_graphs)
    except RankFailedError as e:
        print(f"prompt-tree generate: {e}", file=sys.stderr)
        return PEER_FAILED_EXIT
    except (ValueError, OSError, json.JSONDecodeError) as e:
        print(f"prompt-tree generate: {e}", file=sys.stderr)
        return 2

    with open(args.out, "w", encoding="utf-8") as out:
        def write(key, sample_index, c):
            row = {"key": key, "sample_index": sample_index, "text": c.text, "token_ids": c.token_ids,
                   "finish_reason": c.finish_reason}
            if c.logprobs is not None:
                row["logprobs"] = c.logprobs
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()

        result = engine.generate(tree, params, attention=args.attention,
                                 max_batch_sequences=args.max_batch_sequences, progress=not args.no_progress,
                                 on_complete=write)
    s = result.summary
    print(f"{s.num_sequences} sequences, {s.generated_tokens} tokens in {s.sub_batches} sub-batch(es): prefill "
          f"{s.prefill_seconds:.2f} s, decode {s.decode_seconds:.2f} s, {s.tokens_per_second:.0f} tokens/s, "
          f"KV {s.kv_bytes / 2**20:.1f} MiB, peak memory {s.peak_memory_bytes / 2**20:.0f} MiB", file=sys.stderr)
    return 0
