"""`prompt-tree generate` under torchrun: the tree's top-level subtrees split across data-parallel groups.

    torchrun --nproc-per-node 4 -m prompt_tree.cli generate --tp 2 --model DIR --tree tree.json --out out.jsonl

Every rank loads its engine (its TP shard), flattens the whole tree once for the token counts, and takes its
group's share of the subtrees (dp.split_tree; the same split on every rank). A group's TP rank 0 writes its
completions to out.rank<d>.jsonl as they finish; rank 0 waits for every rank, then writes out.jsonl from the
group files (group 0's rows first) and prints the combined summary.
"""
from __future__ import annotations

import argparse
import sys

from ..engine.results import completion_writer
from ..tree import PromptTree
from .dp import merge_parts, part_path, split_tree
from .rank_engine import engine_for_rank
from .env import DistContext


def run_distributed(args: argparse.Namespace, ctx: DistContext, tree, params) -> int:

    lay = ctx.layout
    engine = engine_for_rank(args.model, ctx, dtype=args.dtype, cuda_graphs=not args.no_cuda_graphs,
                             add_bos=args.bos)
    plan = engine.plan(tree, params)  # also checks every prompt fits the context, on every rank alike
    node_tokens = {key: len(ids) for key, ids in plan.node_tokens.items()}
    mine = PromptTree.from_dict(split_tree(tree.to_dict(), node_tokens, lay.dp, params.max_new_tokens)[lay.dp_rank])
    options = dict(attention=args.attention, max_batch_sequences=args.max_batch_sequences,
                   progress=not args.no_progress and lay.rank == 0)
    summary = None
    if lay.is_writer:
        with open(part_path(args.out, lay.dp_rank), "w", encoding="utf-8") as out:
            if mine.num_samples:
                summary = engine.generate(mine, params, on_complete=completion_writer(out),
                                          **options).summary.as_dict()
        ctx.publish("generate", summary)
    elif mine.num_samples:
        engine.generate(mine, params, **dict(options, progress=False))
    if lay.rank != 0:
        return 0
    ctx.wait_for_all()
    writers = [lay.tp_ranks(d)[0] for d in range(lay.dp)]
    summaries = [s for s in ctx.collect("generate", writers).values() if s]
    merge_parts(args.out, [part_path(args.out, d) for d in range(lay.dp)], fresh=True)
    seqs = sum(s["num_sequences"] for s in summaries)
    tokens = sum(s["generated_tokens"] for s in summaries)
    wall = max((s["prefill_seconds"] + s["decode_seconds"] for s in summaries), default=0.0)
    print(f"{seqs} sequences, {tokens} tokens on {lay.dp} data-parallel group(s) of {lay.tp} rank(s): slowest "
          f"group {wall:.2f} s, {tokens / wall if wall > 0 else 0:.0f} tokens/s together", file=sys.stderr)
    return 0
