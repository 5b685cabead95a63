"""The canonical tokenization of a prompt tree: every sequence gets exactly its whole prompt's tokens.

BPE does not split at node boundaries: "ab" may encode differently from "a" + "b" (Llama 3 merges ")\\n\\n" across
the few-shot -> problem boundary of the APPS tree). So nodes are never encoded on their own. The rule:

- A path's ids are the BOS rule's prefix (prompt_tree.bos) followed by the encoding of the path's whole text,
  encoded once. `encode_paths` computes them for every node of the plan (a node's "path encoding"): for each node
  with samples these are its sequences' ids, exactly; for an inner node they are used to stop its shared tokens
  where its own text ends (prompt_tree.plan then takes what each subtree shares from the token-id longest common
  prefixes, prompt_tree.prefix).
- Token-id nodes are taken literally. A text run (the text nodes after the nearest token-id ancestor, or after the
  root) is encoded whole and put after the ids before it; only a run that starts at the root gets the BOS prefix
  (a sequence that starts with token ids has started: the ids carry their own BOS if they want one).
- Chat: when flatten is asked for chat, or any node has a role, the tree is a chat tree: every path is read as a
  conversation (prompt_tree.chat), rendered by the tokenizer's chat template (with the generation prompt for a
  node with samples) and that text encoded whole, without the BOS rule (the template writes its own specials).
  Token-id nodes cannot be rendered: a chat tree holds text only.

Cost: one encode per distinct path text (nodes that add no text reuse their parent's ids, which keeps trees with
one empty node per sample cheap), batched through the tokenizer's own threads where it has them.
Tokenizers that append EOS on encode are not supported (every sequence would end with EOS).
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable, Sequence

from prompt_tree.bos import BosRule, apply_option, post_processor_rule, special_prefix
from prompt_tree.chat import ChatTemplate, ChatTemplateError, messages_of, template_of
from prompt_tree.errors import PromptTreeError


def check_token_ids(ids: Any, what: str) -> list[int]:
    """Validate a sequence of token ids (non-negative ints, bools refused) and return it as a list of int.

    `what` names the source in the error ("node 'shots'", "tokenizer output for node 'x'").
    """
    if hasattr(ids, "tolist") and not isinstance(ids, (str, bytes)):  # numpy arrays, torch tensors
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise PromptTreeError(
            f"{what}: token ids must be a list of ints, got {type(ids).__name__}; pass a str prompt (with a "
            f"tokenizer) or a list of non-negative int token ids"
        )
    # Fast path (tokenizer outputs of thousands of ids per node): exact ints only; bools fail `type(t) is int`.
    if set(map(type, ids)) <= {int} and (not ids or min(ids) >= 0):
        return list(ids)
    out = []
    for pos, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise PromptTreeError(
                f"{what}: token id at position {pos} is {t!r} ({type(t).__name__}); token ids must be non-negative "
                f"ints (bools are refused); convert the prompt with list(map(int, ids))"
            )
        if t < 0:
            raise PromptTreeError(
                f"{what}: token id at position {pos} is negative ({t}); token ids must be >= 0 (check for padding "
                f"values such as -100 or -1 left in the prompt)"
            )
        out.append(int(t))
    return out


def _raw_encode(tokenizer: Any, text: str, what: str, **kwargs) -> list[int]:
    out = tokenizer.encode(text, **kwargs)
    if hasattr(out, "ids"):  # tokenizers.Encoding
        out = out.ids
    return check_token_ids(out, f"tokenizer output for {what}")


class PromptEncoder:
    """A tokenizer as the canonical rule uses it: `plain(text)` (no special tokens), the BOS rule `bos`, and the
    chat template `chat_template()`. Accepts:

    - prompt_tree's tokenizers (HFTokenizer from load_tokenizer, ByteTokenizer): their `bos_rule`, decided from
      the checkpoint's files;
    - a `tokenizers.Tokenizer`: its post-processor decides BOS (rule 3 of prompt_tree.bos), else none;
    - a transformers tokenizer: its own special tokens (what encode(text) puts before the text), its chat template;
    - any object whose encode(str) returns token ids: what it returns for "" is its prefix, stripped from the
      encoding of a text to get the plain ids.
    add_bos: None keeps the tokenizer's rule; True / False overrides it (rule 1).
    """

    def __init__(self, tokenizer: Any, add_bos: bool | None = None):
        if isinstance(tokenizer, PromptEncoder):
            tokenizer = tokenizer.tokenizer
        enc = getattr(tokenizer, "encode", None)
        if enc is None or not callable(enc):
            raise PromptTreeError(
                f"the tokenizer {type(tokenizer).__name__} has no encode(str) method; pass a tokenizers.Tokenizer, a "
                f"transformers tokenizer, prompt_tree.tokenizer.load_tokenizer(...), or any object whose "
                f"encode(str) returns list[int]"
            )
        self.tokenizer = tokenizer
        self._strip: list[int] = []
        bos_id = None
        if isinstance(getattr(tokenizer, "bos_rule", None), BosRule):  # prompt_tree's own tokenizers
            self._kind, rule, bos_id = "own", tokenizer.bos_rule, tokenizer.bos_id
        elif type(tokenizer).__module__.split(".")[0] == "tokenizers":
            self._kind = "tokenizers"
            rule = post_processor_rule(tokenizer) or BosRule((), "a tokenizers.Tokenizer whose post-processor "
                                                                 "adds none")
            if len(special_prefix(tokenizer)) == 1:
                bos_id = special_prefix(tokenizer)[0]
        elif hasattr(tokenizer, "apply_chat_template") and hasattr(tokenizer, "bos_token_id"):
            self._kind, bos_id = "transformers", tokenizer.bos_token_id
            plain = _raw_encode(tokenizer, "a", "a probe", add_special_tokens=False)
            full = _raw_encode(tokenizer, "a", "a probe")
            prefix = full[: len(full) - len(plain)] if full[len(full) - len(plain):] == plain else []
            rule = BosRule(tuple(prefix), "the transformers tokenizer's own special tokens")
        else:
            self._kind = "generic"
            self._strip = _raw_encode(tokenizer, "", "the empty string (probe for a prefix such as BOS)")
            rule = BosRule(tuple(self._strip), f"the tokenizer's encode('') = {self._strip}")
        self.bos = apply_option(rule, add_bos, bos_id)
        self.add_bos = add_bos

    def plain(self, text: str, what: str = "a prompt") -> list[int]:
        """The ids of `text` with no special token added (special tokens written in the text are still parsed)."""
        if self._kind == "own":
            return _raw_encode(self.tokenizer, text, what)
        if self._kind in ("tokenizers", "transformers"):
            return _raw_encode(self.tokenizer, text, what, add_special_tokens=False)
        ids = _raw_encode(self.tokenizer, text, what)
        n = len(self._strip)
        return ids[n:] if n and ids[:n] == self._strip else ids

    def plain_many(self, texts: Sequence[str], what: str = "the prompts") -> list[list[int]]:
        """plain(text) of each text; batched on the tokenizer's threads where it has a batch encoder."""
        if self._kind == "own" and hasattr(self.tokenizer, "encode_many") and len(texts) > 1:
            return [check_token_ids(ids, f"tokenizer output for {what}") for ids in self.tokenizer.encode_many(texts)]
        if self._kind == "tokenizers" and len(texts) > 1:
            return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        return [self.plain(t, what) for t in texts]

    def sequence(self, text: str, what: str = "a prompt") -> list[int]:
        """A whole prompt's ids: the BOS rule's prefix, then plain(text)."""
        return self.bos.ids() + self.plain(text, what)

    def chat_template(self) -> ChatTemplate:
        """The tokenizer's chat template; ChatTemplateError naming the way out when it has none."""
        template = template_of(self.tokenizer)
        if template is None:
            raise ChatTemplateError(
                f"chat rendering needs the checkpoint's chat template, and this tokenizer "
                f"({type(self.tokenizer).__name__}) has none (no chat_template in tokenizer_config.json, no "
                f"chat_template.jinja): use an instruct checkpoint that ships one, or drop --chat / chat=True and "
                f"node roles to sample plain text"
            )
        return template

    def describe(self, chat: bool) -> str:
        """Which rule applied, in words (describe, generate's summary and the apps run's config.json say it)."""
        if chat:
            return "chat template (its own special tokens; no BOS rule)"
        return str(self.bos)


def is_chat_tree(nodes: Iterable[Any], chat: bool) -> bool:
    """Whether a tree is rendered as conversations: asked for (chat=True), or some node has a role."""
    return chat or any(getattr(n, "role", None) is not None for n in nodes)


def encode_paths(nodes: Sequence[Any], encoder: PromptEncoder | None, chat: bool) -> dict[str, list[int] | None]:
    """The path encoding of every node in `nodes` (pre-order, parents first; nodes the plan keeps), by the rule in
    the module docstring. A value is None only for an inner node of a chat tree whose partial conversation the
    template refuses (it then has no cap: its shared tokens are whatever its subtree shares)."""
    conversation = is_chat_tree(nodes, chat)
    if conversation:
        return _encode_conversations(nodes, encoder)
    # (key of the token-id node before the run, or None at the root; the run's text) -> ids, encoded once
    recipe: dict[str, tuple[str | None, str] | None] = {}
    run_of: dict[str, tuple[str | None, str]] = {}
    for node in nodes:
        up = node.parent
        if not node.is_text:
            recipe[node.key] = None
            continue
        if encoder is None:
            raise PromptTreeError(f"node {node.key!r} has a str prompt but flatten got no tokenizer; pass "
                                  f"flatten(tokenizer=...) or give the node token ids")
        if not up.is_root and up.key in run_of:
            base, text = run_of[up.key]
            run = (base, text + node.prompt) if node.prompt else run_of[up.key]
        else:
            run = (None if up.is_root else up.key, node.prompt)
        run_of[node.key] = recipe[node.key] = run
    texts = list(dict.fromkeys(text for r in recipe.values() if r is not None for _, text in [r]))
    encoded = dict(zip(texts, encoder.plain_many(texts))) if texts else {}
    prefix = encoder.bos.ids() if encoder is not None and any(
        r is not None and r[0] is None for r in recipe.values()) else []
    out: dict[str, list[int] | None] = {}
    made: dict[tuple[str | None, str], list[int]] = {}
    for node in nodes:
        r = recipe[node.key]
        if r is None:
            before = [] if node.parent.is_root else out[node.parent.key]
            out[node.key] = before + list(node.prompt)
        elif r in made:  # same run as an earlier node (an empty text node): the same ids, not a copy
            out[node.key] = made[r]
        else:
            base, text = r
            made[r] = out[node.key] = (prefix if base is None else out[base]) + encoded[text]
    return out


def _encode_conversations(nodes: Sequence[Any], encoder: PromptEncoder | None) -> dict[str, list[int] | None]:
    if encoder is None:
        raise PromptTreeError("a chat tree (flatten(chat=True), or nodes with roles) needs a tokenizer with a chat "
                              "template; pass flatten(tokenizer=...)")
    if encoder.add_bos:
        raise ChatTemplateError("add_bos=True / --bos with a chat template: the template writes its own special "
                                "tokens (Llama 3.1's starts with bos_token), so a second BOS would be added; leave "
                                "the option out")
    template = encoder.chat_template()
    parts: dict[str, tuple[tuple[str | None, str], ...]] = {}
    rendered: dict[tuple[Any, bool], str | None] = {}
    text_of: dict[str, str | None] = {}
    for node in nodes:
        if not node.is_text:
            raise ChatTemplateError(f"node {node.key!r} holds token ids, and a chat template renders text: give a "
                                    f"chat tree text prompts only")
        before = () if node.parent.is_root else parts[node.parent.key]
        own = node.prompt or node.role is not None
        parts[node.key] = before + ((node.role, node.prompt),) if own else before
        key = (parts[node.key], node.samples > 0)
        if key not in rendered:
            what = f"node {node.key!r}"
            try:
                rendered[key] = template.render(messages_of(key[0]), add_generation_prompt=key[1], what=what)
            except ChatTemplateError:
                if key[1]:  # a sequence's prompt: the template must take it
                    raise
                rendered[key] = None  # an inner node's partial conversation: no cap (see encode_paths)
        text_of[node.key] = rendered[key]
    texts = list(dict.fromkeys(t for t in text_of.values() if t is not None))
    encoded = dict(zip(texts, encoder.plain_many(texts))) if texts else {}
    return {k: (None if t is None else encoded[t]) for k, t in text_of.items()}
