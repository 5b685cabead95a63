"""Tokenizers: a small protocol, a byte tokenizer (for the "tiny" preset) and a wrapper of HF `tokenizers`.

Protocol (what the engine and the plan use):
    encode(text, add_bos=False) -> list[int]     # never adds special tokens unless add_bos
    decode(ids) -> str                           # special tokens skipped
    bos_id: int | None; eos_ids: tuple[int, ...]; vocab_size: int
    bos_rule: BosRule                            # whether sequences start with BOS, and which rule said so
    adds_bos: bool                               # bos_rule.adds
    chat_template: str | None                    # the checkpoint's jinja chat template, if it ships one
    special_tokens: dict[str, str]               # bos_token / eos_token / ... names, for the chat template

Stop strings need the text a completion has produced so far. `decode(all_ids)` each step costs O(length) per
sequence per step; `decode_suffix(tokenizer, ids, prefix_len)` decodes only a short window, O(window).
"""
from __future__ import annotations

import os
from typing import Any, Protocol, Sequence, runtime_checkable

from .bos import BosRule, checkpoint_rule, special_prefix, token_name
from .jsonfile import read_json_object

# the special-token names tokenizer_config.json may give, passed to chat templates as transformers does
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded, or ids it cannot decode."""


@runtime_checkable
class Tokenizer(Protocol):
    bos_id: int | None
    eos_ids: tuple[int, ...]
    vocab_size: int
    bos_rule: BosRule
    adds_bos: bool

    def encode(self, text: str, add_bos: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def random_model_tokenizer(config) -> "ByteTokenizer | None":
    """The tokenizer a random-weight model of `config` gets: the byte tokenizer when its vocabulary is the byte
    one (the "tiny" preset), else none (its prompts must be token ids)."""
    return ByteTokenizer() if config.vocab_size == ByteTokenizer.VOCAB_SIZE else None


class ByteTokenizer:
    """UTF-8 bytes are ids 0..255; BOS = 256, EOS = 257, PAD = 258; vocab_size 259 (the "tiny" preset's).

    decode skips the special ids and replaces invalid UTF-8 with U+FFFD (a model may emit any byte sequence).
    """

    BOS, EOS, PAD = 256, 257, 258
    VOCAB_SIZE = 259

    def __init__(self) -> None:
        self.bos_id: int | None = self.BOS
        self.eos_ids: tuple[int, ...] = (self.EOS,)
        self.pad_id = self.PAD
        self.vocab_size = self.VOCAB_SIZE
        self.bos_rule = BosRule((self.BOS,), "the byte tokenizer (tiny preset) starts sequences with BOS")
        self.chat_template: str | None = None
        self.special_tokens: dict[str, str] = {}

    @property
    def adds_bos(self) -> bool:
        return self.bos_rule.adds

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = list(text.encode("utf-8"))
        return [self.BOS] + ids if add_bos else ids

    def decode(self, ids: Sequence[int]) -> str:
        out = bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < 256:
                out.append(i)
            elif not 256 <= i < self.vocab_size:
                raise TokenizerError(f"token id {i} is outside the byte tokenizer's vocabulary [0, {self.vocab_size})")
        return out.decode("utf-8", errors="replace")


class HFTokenizer:
    """A `tokenizers.Tokenizer` (tokenizer.json) with explicit BOS handling.

    encode never lets the tokenizer's post-processor add specials (add_special_tokens=False); with add_bos it
    prepends `bos_id` itself. Whether sequences start with BOS is `bos_rule` (prompt_tree.bos: tokenizer_config.json,
    then the post-processor, then the model family), decided by load_tokenizer from the checkpoint's files.
    Built directly without a rule, the post-processor alone decides (rule 3, else no BOS).
    """

    def __init__(self, tokenizer: Any, bos_id: int | None, eos_ids: Sequence[int], bos_rule: BosRule | None = None,
                 *, chat_template: str | None = None, special_tokens: dict[str, str] | None = None):
        self._tok = tokenizer
        self.bos_id = bos_id
        self.eos_ids = tuple(eos_ids)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.bos_rule = bos_rule if bos_rule is not None else checkpoint_rule(tokenizer, {}, {}, bos_id)
        self.chat_template = chat_template
        self.special_tokens = dict(special_tokens or {})

    @property
    def adds_bos(self) -> bool:
        return self.bos_rule.adds

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return [self.bos_id] + ids if add_bos and self.bos_id is not None else ids

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """encode(text) of each text, in parallel on the tokenizers library's threads."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    @property
    def backend(self) -> Any:
        """The wrapped `tokenizers.Tokenizer` (stop matching reads its vocabulary and decoder once)."""
        return self._tok


def decode_suffix(tokenizer: Tokenizer, ids: Sequence[int], prefix_len: int, window: int = 8) -> str:
    """The text ids[prefix_len:] adds after the text of ids[:prefix_len], decoding about `window` + new tokens.

    Tokenizers are not additive (SentencePiece drops a leading space at the start; a UTF-8 character may span
    tokens), so the new tokens are decoded with up to `window` tokens of left context and the context's own text
    cut off. Where a character may be split at the cut (U+FFFD on either side of it) it falls back to the
    definition, decode(ids)[len(decode(ids[:prefix_len])):], which attributes a split character to the prefix
    (the caller should hold back text ending in U+FFFD until the character completes).
    """
    if not 0 <= prefix_len <= len(ids):
        raise ValueError(f"prefix_len {prefix_len} outside [0, {len(ids)}]")
    start = max(0, prefix_len - window)
    context = tokenizer.decode(ids[start:prefix_len])
    text = tokenizer.decode(ids[start:])
    suffix = text[len(context):]
    if text.startswith(context) and not context.endswith("\ufffd") and not suffix.startswith("\ufffd"):
        return suffix
    return tokenizer.decode(ids)[len(tokenizer.decode(ids[:prefix_len])):]


def load_tokenizer(path: str | os.PathLike, bos_id: int | None = None, eos_ids: Sequence[int] | None = None) -> HFTokenizer:
    """Load <path>/tokenizer.json (path may also be the file itself).

    BOS and EOS ids come from the arguments, else config.json / generation_config.json beside it, else the
    `bos_token` / `eos_token` names in tokenizer_config.json. Whether sequences start with BOS is decided from the
    same files (prompt_tree.bos); the chat template comes from chat_template.jinja or tokenizer_config.json.
    """
    try:
        from tokenizers import Tokenizer as _HFTok
    except ImportError as e:  # pragma: no cover - tokenizers is a hard dependency
        raise TokenizerError("the `tokenizers` package is needed to load tokenizer.json: pip install tokenizers") from e
    path = os.fspath(path)
    directory, file = (path, os.path.join(path, "tokenizer.json")) if os.path.isdir(path) else (os.path.dirname(path), path)
    if not os.path.isfile(file):
        raise TokenizerError(f"no tokenizer.json at {file} (only the `tokenizers` JSON format is supported)")
    try:
        tok = _HFTok.from_file(file)
    except Exception as e:
        raise TokenizerError(f"cannot read tokenizer {file}: {e}") from e

    tokenizer_config = _read_json(os.path.join(directory, "tokenizer_config.json"))
    model_config = _read_json(os.path.join(directory, "config.json"))
    meta: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "config.json", "generation_config.json"):  # later files win
        meta.update(_read_json(os.path.join(directory, name)))

    def by_name(key: str) -> int | None:
        entry = token_name(tokenizer_config.get(key))
        return tok.token_to_id(entry) if entry is not None else None

    if bos_id is None:
        bos_id = meta.get("bos_token_id") if isinstance(meta.get("bos_token_id"), int) else by_name("bos_token")
    if bos_id is None and len(special_prefix(tok)) == 1:  # the post-processor's template names one
        bos_id = special_prefix(tok)[0]
    if eos_ids is None:
        eos = meta.get("eos_token_id")
        if eos is None:
            eos = by_name("eos_token")
        eos_ids = () if eos is None else ((eos,) if isinstance(eos, int) else tuple(eos))
    special = {name: token_name(tokenizer_config.get(name)) for name in SPECIAL_TOKEN_NAMES}
    return HFTokenizer(tok, bos_id, eos_ids, checkpoint_rule(tok, tokenizer_config, model_config, bos_id),
                       chat_template=_chat_template(directory, tokenizer_config),
                       special_tokens={k: v for k, v in special.items() if v is not None})


def _chat_template(directory: str, tokenizer_config: dict[str, Any]) -> str | None:
    """The checkpoint's chat template: chat_template.jinja beside tokenizer.json (newer checkpoints), else
    tokenizer_config.json's chat_template (a str, or a list of {name, template} whose "default" is taken)."""
    path = os.path.join(directory, "chat_template.jinja")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template else None


def _read_json(path: str) -> dict[str, Any]:
    return read_json_object(path, TokenizerError, strict=False)
