"""The BOS rule: whether every sequence starts with a BOS token, decided once per tokenizer, and why.

Order (the first that says something decides):
1. an explicit option: `flatten(..., add_bos=)`, `Engine(..., add_bos=)`, `--bos` / `--no-bos` (`apply_option`);
2. the checkpoint's tokenizer_config.json: `add_bos_token` true / false (with `bos_token` naming the token), or
   `bos_token: null` (the checkpoint has no BOS: Qwen2);
3. the tokenizer.json post-processor, when it is a template (TemplateProcessing and the like): BOS exactly when the
   template starts with a special token. A post-processor that adds nothing (ByteLevel alone, none) says nothing:
   Meta's Llama 3 tokenizer.json has been shipped without its template, and its sequences still need the BOS;
4. the model family's default, from config.json: yes for Llama (Llama 2/3, CodeLlama) and Mistral, no for Qwen2.
Without any of these (a bare tokenizer.json) sequences get no BOS, and the rule says so.

A rule records its `source` in words, printed by `describe`, `generate`'s summary and the apps run's config.json.
A rule that wants a BOS whose id nobody names (config.json without bos_token_id, tokenizer_config.json without
bos_token) is kept with a `problem`: applying it raises, and an explicit option is the way out.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from prompt_tree.config import SUPPORTED_ARCHITECTURES
from prompt_tree.errors import PromptTreeError

# model_type -> whether sequences of that family start with BOS (rule 4)
FAMILY_BOS: dict[str, bool] = {"llama": True, "mistral": True, "qwen2": False}
# post-processor types that add special tokens around the text (rule 3 only listens to these)
_TEMPLATE_PROCESSORS = ("TemplateProcessing", "BertProcessing", "RobertaProcessing")


class BosRuleError(PromptTreeError):
    """A BOS rule that cannot be applied (a BOS asked for whose id is unknown); the message names the fix."""


@dataclass(frozen=True)
class BosRule:
    """prefix: the ids every sequence starts with: () or (bos_id,) (for encoders of unknown kind, whatever their
    encode("") returns). source: which rule decided, in words. problem: set when the rule wants a BOS it cannot
    name; `ids()` then raises."""

    prefix: tuple[int, ...]
    source: str
    problem: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "prefix", tuple(int(i) for i in self.prefix))

    @property
    def adds(self) -> bool:
        return bool(self.prefix) or self.problem is not None

    def ids(self) -> list[int]:
        if self.problem is not None:
            raise BosRuleError(self.problem)
        return list(self.prefix)

    def __str__(self) -> str:
        if self.problem is not None:
            return f"BOS wanted but unknown ({self.source})"
        if not self.prefix:
            return f"no BOS ({self.source})"
        what = f"BOS {self.prefix[0]}" if len(self.prefix) == 1 else f"prefix {list(self.prefix)}"
        return f"{what} first ({self.source})"


def apply_option(rule: BosRule, add_bos: bool | None, bos_id: int | None) -> BosRule:
    """Rule 1: an explicit add_bos overrides `rule` (None keeps it). bos_id: the tokenizer's BOS, if known."""
    if add_bos is None:
        return rule
    if not isinstance(add_bos, bool):
        raise BosRuleError(f"add_bos must be True, False or None (the checkpoint's rule), got {add_bos!r}")
    if not add_bos:
        return BosRule((), "add_bos=False / --no-bos")
    if bos_id is None:
        bos_id = rule.prefix[0] if len(rule.prefix) == 1 else None
    if bos_id is None:
        raise BosRuleError("add_bos=True / --bos, but this tokenizer names no BOS token; set bos_token_id in the "
                           "checkpoint's config.json or bos_token in its tokenizer_config.json, or leave the "
                           "option out")
    return BosRule((bos_id,), "add_bos=True / --bos")


def token_name(entry: Any) -> str | None:
    """A special token's name as tokenizer_config.json gives it: a str, or an AddedToken dict's content."""
    if isinstance(entry, dict):  # an AddedToken written out: {"content": "<s>", ...}
        entry = entry.get("content")
    return entry if isinstance(entry, str) else None


def _post_processor_types(tok) -> list[str]:
    processor = getattr(tok, "post_processor", None)
    if processor is None:
        return []
    state = json.loads(processor.__getstate__())
    parts = state.get("processors", [state]) if state.get("type") == "Sequence" else [state]
    return [p.get("type", "") for p in parts if isinstance(p, dict)]


def special_prefix(tok) -> list[int]:
    """The ids a `tokenizers.Tokenizer`'s post-processor puts before a text (encode with vs without specials)."""
    plain = tok.encode("a", add_special_tokens=False).ids
    full = tok.encode("a", add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start]
    return []


def post_processor_rule(tok) -> BosRule | None:
    """Rule 3 for a `tokenizers.Tokenizer`: a verdict when its post-processor is a template, else None."""
    types = [t for t in _post_processor_types(tok) if t in _TEMPLATE_PROCESSORS]
    if not types:
        return None
    prefix = special_prefix(tok)
    if prefix:
        return BosRule(tuple(prefix), f"the tokenizer.json post-processor ({types[0]}) starts with it")
    return BosRule((), f"the tokenizer.json post-processor ({types[0]}) adds none")


def family_of(model_config: Mapping[str, Any]) -> str | None:
    """config.json's model family (model_type, else the first architecture's), or None."""
    model_type = model_config.get("model_type")
    if isinstance(model_type, str) and model_type:
        return model_type
    archs = model_config.get("architectures") or []
    return SUPPORTED_ARCHITECTURES.get(archs[0]) if archs and isinstance(archs[0], str) else None


def checkpoint_rule(tok, tokenizer_config: Mapping[str, Any], model_config: Mapping[str, Any],
                    bos_id: int | None) -> BosRule:
    """Rules 2-4 for a checkpoint: its `tokenizers.Tokenizer`, the parsed tokenizer_config.json and config.json
    ({} when absent), and the BOS id the checkpoint names (config.json bos_token_id or tokenizer_config.json
    bos_token), if any."""
    named = token_name(tokenizer_config.get("bos_token"))
    if named is not None and tok.token_to_id(named) is not None:
        bos_id = tok.token_to_id(named)

    def wanting(source: str) -> BosRule:
        if bos_id is not None:
            return BosRule((bos_id,), source)
        return BosRule((), source, problem=(
            f"{source} asks for a BOS, but no BOS id is known: set bos_token_id in config.json or bos_token in "
            f"tokenizer_config.json, or pass --no-bos / add_bos=False"))

    flag = tokenizer_config.get("add_bos_token")
    if isinstance(flag, bool):
        source = f"tokenizer_config.json add_bos_token={str(flag).lower()}"
        return wanting(source) if flag else BosRule((), source)
    if "bos_token" in tokenizer_config and tokenizer_config["bos_token"] is None:
        return BosRule((), "tokenizer_config.json bos_token=null")
    verdict = post_processor_rule(tok)
    if verdict is not None:
        return verdict
    family = family_of(model_config)
    if family in FAMILY_BOS:
        source = f"the {family} family's default"
        return wanting(source) if FAMILY_BOS[family] else BosRule((), source)
    return BosRule((), "no rule applies: no add_bos_token in tokenizer_config.json, no template post-processor, "
                       "no known model family in config.json")
