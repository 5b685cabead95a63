"""The APPS task's public names in one place: loading problems (prompt_tree.tasks.sources) and their prompts and prompt tree
(prompt_tree.tasks.prompts), so that `from prompt_tree.tasks.apps import load_problems, build_tree` works. Both modules import neither
this one nor each other back (prompt_tree.tasks.prompts imports prompt_tree.tasks.sources)."""
from __future__ import annotations

from prompt_tree.tasks.prompts import (
    CHAT_INSTRUCTION, FEW_SHOT_KEY, INSTRUCTION_KEY, build_tree, chat_answer, chat_question, draw_few_shot,
    format_example, format_few_shot, format_question,
)
from prompt_tree.tasks.sources import (
    DATA_DIR, DIFFICULTIES, EMBEDDED_FILES, HUB_PARQUET_CONFIGS, HUB_PARQUET_REVISION, SPLITS,
    MalformedProblemWarning, ProblemFormatError, load_problems, parse_record, parse_records, read_source_records,
)

__all__ = [
    "CHAT_INSTRUCTION", "DATA_DIR", "DIFFICULTIES", "EMBEDDED_FILES", "FEW_SHOT_KEY", "HUB_PARQUET_CONFIGS",
    "HUB_PARQUET_REVISION", "INSTRUCTION_KEY", "SPLITS", "MalformedProblemWarning", "ProblemFormatError",
    "build_tree", "chat_answer", "chat_question", "draw_few_shot", "format_example", "format_few_shot",
    "format_question", "load_problems", "parse_record", "parse_records", "read_source_records",
]
