"""The `prompt-tree` console script: one entry point, one module per subcommand.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`, imported only
when that subcommand runs, so `prompt-tree --help` stays fast and a broken optional dependency of one command
does not break the others.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "apps": ("prompt_tree.tasks.cli_apps", "APPS-style evaluation: sample, execute in a sandbox, report pass@k (the main job)"),
    "generate": ("prompt_tree.commands.generate", "sample completions for a prompt tree saved as JSON"),
    "describe": ("prompt_tree.commands.describe", "flatten a prompt tree saved as JSON and print its outline and plan"),
    "bench": ("prompt_tree.commands.bench", "end-to-end decode throughput benchmark (GPU)"),
    "bench-exec": ("prompt_tree.tasks.bench_exec", "program execution benchmark: the warm sandbox against its baselines (CPU)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prompt-tree", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily below, only for the chosen subcommand.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)  # prints help or a clear error for an unknown subcommand
        return 2
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        print(f"prompt-tree {name}: this subcommand is not available ({e})", file=sys.stderr)
        return 2
    sub_parser = argparse.ArgumentParser(prog=f"prompt-tree {name}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
