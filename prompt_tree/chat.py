"""Chat templates: a conversation rendered to text by the checkpoint's own jinja template.

Instruct checkpoints (Qwen2.5-Coder-Instruct, Llama-3.1-Instruct, ...) were trained on conversations written in
their own format, which tokenizer_config.json's `chat_template` (or chat_template.jinja) spells out. The template
is rendered the way transformers' `apply_chat_template` renders it, so a prompt here is the text a user of
transformers would feed the model:
- a sandboxed jinja2 environment (no attribute writes), trim_blocks and lstrip_blocks, the loopcontrols
  extension and a `{% generation %}` block that renders its body;
- globals raise_exception(message) and strftime_now(format), a tojson filter that keeps non-ASCII text;
- variables messages, add_generation_prompt, tools=None, documents=None and the special tokens' names
  (bos_token, eos_token, ...) from tokenizer_config.json.
The rendered text is encoded without the BOS rule (the template writes its own special tokens: Llama 3.1's starts
with bos_token), as apply_chat_template(tokenize=True) does.

In a prompt tree a conversation is the path's text nodes read as messages: a node with a `role` starts a message,
a node without one continues the message before it, and text before the first role is a user message. So a
system node and few-shot turns above many problem nodes stay shared nodes: each sampled path is rendered whole,
and the token-id longest common prefixes find what the paths share (prompt_tree.plan).
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, Sequence

from prompt_tree.errors import PromptTreeError

DEFAULT_ROLE = "user"  # the role of text that comes before any node with a role


class ChatTemplateError(PromptTreeError):
    """A chat template that is missing, does not compile, or refuses a conversation."""


def check_role(role: Any, what: str) -> str | None:
    """A node's role: None (no new message) or a non-empty str such as "system", "user", "assistant"."""
    if role is None:
        return None
    if not isinstance(role, str) or not role.strip():
        raise PromptTreeError(f"{what}: role must be a non-empty str such as 'system', 'user' or 'assistant', or "
                              f"None, got {role!r}")
    return role


def messages_of(parts: Sequence[tuple[str | None, str]]) -> list[dict[str, str]]:
    """Messages from (role, text) parts in path order: a role starts a message, None continues the last one (or
    opens a DEFAULT_ROLE message when none has started)."""
    messages: list[dict[str, str]] = []
    for role, text in parts:
        if role is not None or not messages:
            messages.append({"role": role or DEFAULT_ROLE, "content": text})
        else:
            messages[-1]["content"] += text
    return messages


@lru_cache(maxsize=8)
def _compile(source: str):
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as e:  # pragma: no cover - jinja2 is a dependency
        raise ChatTemplateError("chat templates need jinja2: pip install jinja2") from e

    class GenerationBlock(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text for training masks; rendering keeps
        its body as it is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja's own tojson escapes HTML characters, which would change the prompt text
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateError as e:
        raise ChatTemplateError(f"the checkpoint's chat template does not compile: {e}") from None


class ChatTemplate:
    """A compiled chat template and the special-token names it may read."""

    def __init__(self, source: str, special_tokens: dict[str, str] | None = None):
        if not isinstance(source, str) or not source.strip():
            raise ChatTemplateError("the chat template is empty")
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self._template = _compile(source)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool, what: str) -> str:
        """The conversation's text; with add_generation_prompt, ending where the assistant's answer starts."""
        import jinja2

        if not messages:
            raise ChatTemplateError(f"{what}: the conversation is empty; give the path a text node")
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         tools=None, documents=None, **self.special_tokens)
        except jinja2.exceptions.TemplateError as e:
            roles = ", ".join(m["role"] for m in messages)
            raise ChatTemplateError(f"{what}: the chat template refuses the conversation of roles [{roles}]: "
                                    f"{e}") from None


def template_of(tokenizer: Any) -> ChatTemplate | None:
    """The chat template a tokenizer carries: prompt_tree's (chat_template + special_tokens, from load_tokenizer)
    or a transformers tokenizer's (chat_template + special_tokens_map); None when it has none."""
    source = getattr(tokenizer, "chat_template", None)
    if not isinstance(source, str) or not source.strip():
        return None
    names = getattr(tokenizer, "special_tokens", None)
    if not isinstance(names, dict):
        names = getattr(tokenizer, "special_tokens_map", None)
    names = {k: v for k, v in (names or {}).items() if isinstance(v, str)}
    return ChatTemplate(source, names)


def with_user_turns(tree_dict: dict) -> dict:
    """A saved tree (PromptTree.to_dict) whose every top-level text node without a role gets role "user": what
    `flatten(chat=True)` means, for the CLI's --chat (the engine and data-parallel paths then see a chat tree).
    Paths that already have roles render the same either way (text before the first role is a user message)."""
    nodes = [dict(n) for n in tree_dict["nodes"]]
    for n in nodes:
        if n.get("parent") is not None:
            continue
        if not isinstance(n.get("prompt"), str):
            raise ChatTemplateError(f"node {n.get('key')!r} holds token ids, and a chat template renders text: give "
                                    f"the tree text prompts, or leave out --chat")
        if n.get("role") is None:
            n["role"] = DEFAULT_ROLE
    return dict(tree_dict, nodes=nodes)
