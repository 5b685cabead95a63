"""The tokenization flags every command that tokenizes shares (generate, describe, apps): --bos / --no-bos and
--chat, with one help text each (prompt_tree.bos and prompt_tree.chat say the rules)."""
from __future__ import annotations

import argparse

BOS_HELP = ("start every sequence with the tokenizer's BOS token (--bos) or never (--no-bos); default: the "
            "checkpoint's rule (tokenizer_config.json add_bos_token / bos_token, then the tokenizer.json "
            "post-processor, then the model family: yes for Llama, CodeLlama, Mistral, no for Qwen2)")
CHAT_HELP = ("render each prompt as a conversation through the checkpoint's chat template (tokenizer_config.json "
             "chat_template or chat_template.jinja), as transformers' apply_chat_template does: text without a "
             "role is the user turn; for instruct checkpoints")


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    bos = parser.add_mutually_exclusive_group()
    bos.add_argument("--bos", dest="bos", action="store_const", const=True, default=None, help=BOS_HELP)
    bos.add_argument("--no-bos", dest="bos", action="store_const", const=False, help="see --bos")
    parser.add_argument("--chat", action="store_true", help=CHAT_HELP)
