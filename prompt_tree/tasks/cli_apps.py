"""`prompt-tree apps`: the main job. Sample completions for APPS problems, execute them in a sandbox, report pass@k.

    prompt-tree apps                                   # tiny random model, embedded problems, CPU, a few minutes
    prompt-tree apps --model /path/to/codellama-7b --source codeparrot/apps --difficulty introductory \\
        --limit 120 --samples 128 --out runs/apps-paper  # the paper's setting, on a GPU

A run writes into --out as it goes; running the same command again resumes it. Under torchrun the problems are
split across data-parallel groups of --tp ranks each (prompt_tree.tasks.dp_runner):

    torchrun --nproc-per-node 2 -m prompt_tree.cli apps --tp 2 --model /path/to/CodeLlama-34b-hf ...
"""
from __future__ import annotations

import argparse
import sys

from prompt_tree.arguments import DTYPE_CHOICES, add_tokenization_arguments, dtype_arg
from prompt_tree.tasks.runner import RunConfig, RunConfigError, preflight, run_apps


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k expects comma-separated ints such as 1,5,10, got {text!r}") from None
    if not ks or any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"--k expects ints >= 1 such as 1,5,10, got {text!r}")
    return ks


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = RunConfig()
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--model", default=d.model,
                   help="'tiny' (random CPU-sized model with a byte tokenizer), 'random:tiny' (the same), or a "
                        "local HF checkpoint directory; other random:PRESET models have no tokenizer, and APPS "
                        "prompts are text (default: %(default)s)")
    g.add_argument("--source", default=d.source,
                   help="'embedded' (problems shipped with prompt-tree), a local .jsonl/.json/.parquet file or "
                        "APPS folder, or a hub dataset name such as codeparrot/apps (default: %(default)s)")
    g.add_argument("--split", default=d.split, choices=("test", "train"), help="dataset split (default: %(default)s)")
    g.add_argument("--difficulty", default=None, choices=("introductory", "interview", "competition"),
                   help="keep only problems of this difficulty (default: all)")
    g.add_argument("--limit", type=int, default=None, help="keep the first N problems after filtering (default: all)")
    g = p.add_argument_group("sampling")
    g.add_argument("--samples", type=int, default=d.samples, help="completions per problem (default: %(default)s)")
    g.add_argument("--k", type=_ks, default=d.k, help="pass@k values, comma-separated (default: 1,5,10)")
    g.add_argument("--few-shot", type=int, default=d.few_shot,
                   help="solved examples in the shared prompt prefix (default: %(default)s)")
    g.add_argument("--few-shot-source", default=d.few_shot_source, metavar="SOURCE",
                   help="where the few-shot examples are drawn from (its train split, problems under evaluation "
                        "excluded): any value --source accepts (default: %(default)s)")
    g.add_argument("--instruction", default=None,
                   help="text put before the few-shot examples (default: none; with --chat, the system turn, "
                        "default: a request for one ```python block)")
    add_tokenization_arguments(g)
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens per completion (default: 512, the paper's setting; 64 for tiny/random models)")
    g.add_argument("--temperature", type=float, default=d.temperature, help="(default: %(default)s)")
    g.add_argument("--top-p", type=float, default=d.top_p, help="nucleus sampling mass (default: %(default)s)")
    g.add_argument("--top-k", type=int, default=d.top_k, help="top-k filter, 0 = off (default: %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed,
                   help="sampling seed; sample i of a problem is the same draw however the run is batched or "
                        "resumed (default: %(default)s)")
    g = p.add_argument_group("execution")
    g.add_argument("--timeout", type=float, default=d.timeout, help="seconds per test (default: %(default)s)")
    g.add_argument("--memory-mb", type=int, default=d.memory_mb,
                   help="memory limit of each program in MiB (default: %(default)s)")
    g.add_argument("--workers", type=int, default=None,
                   help="programs executed at once, overlapping generation (default: the CPUs this process may "
                        "use)")
    g.add_argument("--no-preamble", action="store_true",
                   help="do not put the official APPS preamble's names (List, Counter, deque, np, ...) into "
                        "every program's namespace (docs/sandbox.md)")
    g.add_argument("--fail-fast", action="store_true",
                   help="stop a program's tests at its first failure: pass@k unchanged, the test-case average "
                        "becomes a lower bound (marked partial)")
    g.add_argument("--sandbox", default=d.sandbox, choices=("warm", "per-test"),
                   help="warm: one sealed sandbox per program, one fork per test; per-test: a fresh sandboxed "
                        "interpreter per test (slower, for comparison) (default: %(default)s)")
    g.add_argument("--isolation", default=None, choices=("auto", "namespace", "userns", "fallback"),
                   help="how programs are isolated (docs/sandbox.md); default: env PT_SANDBOX, else auto (full "
                        "namespaces where they work, else the fallback with a warning)")
    g = p.add_argument_group("engine")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--dtype", type=dtype_arg, default=None, metavar="{" + ",".join(DTYPE_CHOICES) + "}",
                   help="weights and KV dtype, one the attention kernels run in (default: bf16 on GPU, fp32 on CPU)")
    g.add_argument("--attention", default=d.attention, choices=("tree", "flat"),
                   help="tree: shared prompt KV read once per group; flat: the no-sharing baseline "
                        "(default: %(default)s)")
    g.add_argument("--max-batch-sequences", type=int, default=None,
                   help="sequences per sub-batch (default: as many as fit in memory)")
    g.add_argument("--tp", type=int, default=d.tp,
                   help="tensor-parallel ranks per model under torchrun; the world size / tp data-parallel groups "
                        "split the problems (default: %(default)s)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=d.out,
                   help="run directory; an existing one with the same settings is resumed (default: %(default)s)")
    g.add_argument("--node-dir", default=None, metavar="DIR",
                   help="torchrun over nodes that share no filesystem: each node's groups keep their files in DIR "
                        "on that node and rank 0 merges them into --out (on rank 0's node) through the rendezvous "
                        "store (default: the groups write into --out, which every node must then see)")
    g.add_argument("--force", action="store_true",
                   help="if --out holds a run with different settings, delete its files and start afresh")
    g.add_argument("--generations", default=None, metavar="FILE",
                   help="evaluate programs from a bigcode-evaluation-harness generations file (a JSON list of "
                        "lists of programs, one list per selected problem in order) instead of generating")
    g.add_argument("--export-bigcode", default=None, metavar="FILE",
                   help="at the end, also write the extracted programs in bigcode-evaluation-harness's format")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        model=args.model, source=args.source, split=args.split, difficulty=args.difficulty, limit=args.limit,
        samples=args.samples, k=tuple(args.k), few_shot=args.few_shot, few_shot_source=args.few_shot_source,
        instruction=args.instruction, bos=args.bos, chat=args.chat,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        seed=args.seed, timeout=args.timeout, memory_mb=args.memory_mb, workers=args.workers, device=args.device,
        preamble=not args.no_preamble, fail_fast=args.fail_fast, sandbox=args.sandbox, isolation=args.isolation,
        dtype=args.dtype, attention=args.attention, max_batch_sequences=args.max_batch_sequences, tp=args.tp,
        out=args.out, node_dir=args.node_dir,
        force=args.force, generations=args.generations, export_bigcode=args.export_bigcode,
        progress=not args.no_progress,
    )


def _plain_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line of the command's own (the default format, a file path, a line number and the source
    line that warned, read like a traceback: a skipped malformed record looked like a crash)."""
    print(f"prompt-tree apps: warning: {message}", file=file or sys.stderr)


def run(args: argparse.Namespace) -> int:
    import warnings

    shown = warnings.showwarning
    warnings.showwarning = _plain_warning
    try:
        return _run(args)
    finally:
        warnings.showwarning = shown


def _run(args: argparse.Namespace) -> int:
    from prompt_tree.parallel.env import PEER_FAILED_EXIT, RankFailedError, init_distributed, run_guarded
    from prompt_tree.tasks.bigcode import GenerationsFileError
    from prompt_tree.tasks.results import RunDirError

    try:
        config = config_from_args(args)
        preflight(config, generating=config.generations is None)  # before any model, rank or run directory
        over = [k for k in config.k if k > config.samples]
        if over and config.generations is None:  # (a generations file sets its own count)
            print(f"prompt-tree apps: warning: --k {','.join(map(str, over))} exceeds --samples {config.samples}: "
                  f"pass@k needs at least k samples per problem, so {'these are' if len(over) > 1 else 'it is'} "
                  f"reported as '-' (raise --samples or lower --k)", file=sys.stderr)
        ctx = init_distributed(config.tp, config.device)  # None: one process, as without torchrun
        if ctx is None:
            report = run_apps(config)
        else:
            from prompt_tree.tasks.dp_runner import run_apps_distributed

            report = run_guarded(ctx, lambda: run_apps_distributed(config, ctx))
            if report is None:  # not rank 0: rank 0 reports
                return 0
    except RankFailedError as e:
        print(f"prompt-tree apps: {e}\nprompt-tree apps: results written so far are kept; run the same command "
              f"again to resume", file=sys.stderr)
        return PEER_FAILED_EXIT
    except (RunConfigError, RunDirError, GenerationsFileError, FileNotFoundError) as e:
        print(f"prompt-tree apps: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # bad sampling values, unknown preset, bad source: all name the field
        print(f"prompt-tree apps: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the run directory (--out) or a file it names cannot be read or written
        print(f"prompt-tree apps: error: {e} (check --out {args.out!r} and the paths given)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nprompt-tree apps: interrupted; what finished is saved in {args.out}: run the same command again "
              f"to resume", file=sys.stderr)
        return 130
    print(f"results in {report.out_dir} (summary.json, generations.jsonl, verdicts.jsonl)")
    return 0
