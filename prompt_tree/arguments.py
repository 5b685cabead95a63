"""argparse types and flag groups shared by the prompt-tree commands and by any command line built on the
library (prompt_tree/tasks/cli_apps.py): one definition and one help text each."""
from __future__ import annotations

import argparse

DTYPE_CHOICES = ("bf16", "bfloat16", "fp16", "float16", "fp32", "float32")


def dtype_arg(text: str) -> str:
    """argparse type of --dtype: one of DTYPE_CHOICES (any case)."""
    name = text.strip().lower()
    if name not in DTYPE_CHOICES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a dtype the attention kernels support; use one of {', '.join(DTYPE_CHOICES)}, or leave "
            f"--dtype out (bf16 on a GPU, fp32 on the CPU)")
    return name


BOS_HELP = ("start every sequence with the tokenizer's BOS token (--bos) or never (--no-bos); default: the "
            "checkpoint's rule (tokenizer_config.json add_bos_token / bos_token, then the tokenizer.json "
            "post-processor, then the model family: yes for Llama, CodeLlama, Mistral, no for Qwen2)")
CHAT_HELP = ("render each prompt as a conversation through the checkpoint's chat template (tokenizer_config.json "
             "chat_template or chat_template.jinja), as transformers' apply_chat_template does: text without a "
             "role is the user turn; for instruct checkpoints")


def add_tokenization_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    bos = parser.add_mutually_exclusive_group()
    bos.add_argument("--bos", dest="bos", action="store_const", const=True, default=None, help=BOS_HELP)
    bos.add_argument("--no-bos", dest="bos", action="store_const", const=False, help="see --bos")
    parser.add_argument("--chat", action="store_true", help=CHAT_HELP)
