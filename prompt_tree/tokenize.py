"""The tokenization boundary rule: which token ids a string node of a prompt tree contributes.

BPE tokenizes "ab" differently from "a" + "b", and a tokenizer that adds BOS on `encode` would put a BOS in front
of every node if nodes were encoded one by one. The model should see what it would see for the whole prompt, so a
string node's tokens are taken from the encoding of its whole *text run*:

- The text run of a string node v is the concatenation of the string prompts from the first string node after the
  nearest token-id ancestor (or after the root) down to v. Token-id nodes are taken literally and break runs.
- If v is the first node of its run, its tokens are `encode(run_text)`. A run that starts at the root keeps the
  tokenizer's special prefix (BOS); a run that starts below a token-id node has it removed, since the sequence
  has already started.
- Otherwise let P be the ids the parent contributed to the same run (the parent's final ids, not a re-encoding).
  If P is a prefix of `encode(run_text)`, v's tokens are the rest: then P + tokens(v) is exactly what encoding the
  whole run gives. If not (a merge crosses the boundary, e.g. "Hello wor" + "ld"), v falls back to
  `encode(own_text)` with the special prefix removed, appended after P, and a new text run starts at v (its
  descendants continue v's own text, not the whole run). The plan lists such nodes in
  `Plan.boundary_fallbacks` so a user can move the boundary (end nodes at whitespace or newlines).

The "special prefix" is `encode("")` (e.g. [BOS] for Llama tokenizers, [] for byte-level ones). Tokenizers that
append EOS on encode are not supported (every node would fall back and end with EOS).
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence


def check_token_ids(ids: Any, what: str) -> list[int]:
    """Validate a sequence of token ids (non-negative ints, bools refused) and return it as a list of int.

    `what` names the source in the error ("node 'shots'", "tokenizer output for node 'x'").
    """
    from prompt_tree.tree import PromptTreeError  # tree.py imports this module; import late to avoid a cycle

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


def encode(tokenizer: Any, text: str, what: str) -> list[int]:
    """tokenizer.encode(text) as a list of ints; accepts encoders returning list[int] or an object with `.ids`."""
    from prompt_tree.tree import PromptTreeError

    enc = getattr(tokenizer, "encode", None)
    if enc is None or not callable(enc):
        raise PromptTreeError(
            f"{what}: the tokenizer {type(tokenizer).__name__} has no encode(str) method; pass a tokenizers.Tokenizer, "
            f"a transformers tokenizer, or any object whose encode(str) returns list[int]"
        )
    out = enc(text)
    if hasattr(out, "ids"):  # tokenizers.Encoding
        out = out.ids
    return check_token_ids(out, f"tokenizer output for {what}")


def _strip_prefix(ids: list[int], prefix: list[int]) -> list[int]:
    if prefix and ids[: len(prefix)] == prefix:
        return ids[len(prefix):]
    return ids


class BoundaryEncoder:
    """Applies the boundary rule above for one tokenizer; caches encode("")."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.special_prefix = encode(tokenizer, "", "the empty string (probe for BOS)")

    def node_tokens(
        self,
        run_text: str,
        own_text: str,
        parent_run_ids: list[int] | None,
        run_at_start: bool,
        what: str,
    ) -> tuple[list[int], bool]:
        """Token ids of one string node and whether the fallback was taken.

        run_text: the text run ending with this node (includes own_text).
        parent_run_ids: ids the parent contributed to this run (its whole run part), or None when this node starts
          the run (its parent is the root or a token-id node).
        run_at_start: whether no token precedes the run in the sequence (then it keeps the special prefix).
        """
        full = encode(self.tokenizer, run_text, what)
        if not run_at_start:
            full = _strip_prefix(full, self.special_prefix)
        if parent_run_ids is None:
            return full, False
        n = len(parent_run_ids)
        if full[:n] == parent_run_ids:
            return full[n:], False
        own = _strip_prefix(encode(self.tokenizer, own_text, what), self.special_prefix)
        return own, True
