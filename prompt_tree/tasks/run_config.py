"""One APPS run's configuration: the validated RunConfig, the identity a resume must agree on (config.json),
and the checks that fail a bad run before its directory is touched (preflight)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Sequence

from prompt_tree.tasks.problem import Problem

# max_new_tokens when none is given: the paper's 512 for real checkpoints; the random tiny model writes noise, so
# a short budget keeps the default CPU run (33 problems x 16 samples) within a few minutes.
DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_MAX_NEW_TOKENS_TINY = 64
# The RunConfig fields that decide what a run's files contain: a resume must agree on all of them. The others
# (workers, device, attention, batching, tp, progress, out, export) change how fast, not what.
IDENTITY_FIELDS = (
    "model", "source", "split", "difficulty", "limit", "samples", "few_shot", "few_shot_source", "instruction",
    "max_new_tokens", "temperature", "top_p", "top_k", "seed", "timeout", "memory_mb", "dtype", "bos", "chat",
)
# Execution settings that change verdicts; a config.json from before them ran without the preamble and
# every test (prompt_tree.tasks.results.CONFIG_FIELD_DEFAULTS).
IDENTITY_FIELDS += ("preamble", "fail_fast")
# A config.json written before few_shot_source existed lacks it and meant the embedded set (prompt_tree.tasks.results fills
# in prompt_tree.tasks.results.CONFIG_FIELD_DEFAULTS before comparing, so such runs resume as before).
DEFAULT_FEW_SHOT_SOURCE = "embedded"


class RunConfigError(ValueError):
    """A run configuration that cannot work; the message names the field and how to fix it."""


@dataclass(frozen=True)
class RunConfig:
    """One APPS evaluation. Validated on construction (RunConfigError names the field)."""

    model: str = "tiny"  # "tiny" | "random:PRESET" | a local checkpoint directory
    source: str = "embedded"  # "embedded" | a local path | a hub dataset name
    split: str = "test"
    difficulty: str | None = None
    limit: int | None = None
    samples: int = 16
    k: tuple[int, ...] = (1, 5, 10)
    few_shot: int = 2
    few_shot_source: str = DEFAULT_FEW_SHOT_SOURCE  # the few-shot examples are drawn from its train split
    instruction: str | None = None
    bos: bool | None = None  # None: the checkpoint's BOS rule (prompt_tree.bos); True / False: --bos / --no-bos
    chat: bool = False  # render the prompts through the checkpoint's chat template (prompt_tree.tasks.prompts.build_tree)
    max_new_tokens: int | None = None  # None: DEFAULT_MAX_NEW_TOKENS (tiny / random models: ..._TINY)
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 0
    seed: int = 0
    timeout: float = 4.0  # seconds per test
    memory_mb: int = 1024
    workers: int | None = None  # checker threads; None: the CPUs this process may use
    preamble: bool = True  # the APPS preamble's names in every program (prompt_tree.tasks.sandbox.preamble)
    fail_fast: bool = False  # stop a program's tests at its first failure (pass@k unchanged)
    sandbox: str = "warm"  # "warm" | "per-test" (prompt_tree.tasks.checker)
    isolation: str | None = None  # None: env PT_SANDBOX, else "auto" (prompt_tree.tasks.sandbox.config)
    device: str | None = None
    dtype: str | None = None
    attention: str = "tree"  # "tree" | "flat"
    max_batch_sequences: int | None = None
    tp: int = 1  # tensor-parallel ranks per model (under torchrun: prompt_tree.tasks.dp_runner)
    out: str = "runs/apps"
    # torchrun over nodes without a shared filesystem: each group's files on its own node, merged by rank 0
    # through the rendezvous store (prompt_tree.tasks.node_files); None: the groups write into out (shared or one node)
    node_dir: str | None = None
    force: bool = False
    generations: str | None = None  # evaluate this bigcode-format file instead of generating
    export_bigcode: str | None = None
    progress: bool = True

    def __post_init__(self):
        def fail(name, why):
            raise RunConfigError(f"{name}: {why} (got {getattr(self, name)!r})")

        def pos_int(x):
            return isinstance(x, int) and not isinstance(x, bool) and x >= 1

        if not pos_int(self.samples):
            fail("samples", "must be an int >= 1")
        ks = tuple(self.k)
        if not ks or not all(pos_int(k) for k in ks):
            fail("k", "must be one or more ints >= 1, e.g. 1,5,10")
        object.__setattr__(self, "k", tuple(sorted(set(ks))))
        if self.limit is not None and not (isinstance(self.limit, int) and self.limit >= 1):
            fail("limit", "must be an int >= 1 or None")
        if not (isinstance(self.few_shot, int) and self.few_shot >= 0):
            fail("few_shot", "must be an int >= 0")
        if not (isinstance(self.few_shot_source, str) and self.few_shot_source):
            fail("few_shot_source", "must name a problem source ('embedded', a local path or a hub dataset)")
        if self.max_new_tokens is not None and not pos_int(self.max_new_tokens):
            fail("max_new_tokens", "must be an int >= 1 or None (the default for the model)")
        if not (self.timeout > 0):
            fail("timeout", "must be > 0 seconds")
        if not pos_int(self.memory_mb):
            fail("memory_mb", "must be an int >= 1")
        if self.workers is not None and not pos_int(self.workers):
            fail("workers", "must be an int >= 1 or None")
        if self.attention not in ("tree", "flat"):
            fail("attention", "must be 'tree' or 'flat'")
        if self.sandbox not in ("warm", "per-test"):
            fail("sandbox", "must be 'warm' or 'per-test'")
        if self.isolation not in (None, "auto", "namespace", "userns", "fallback"):
            fail("isolation", "must be one of auto, namespace, userns, fallback (or None: env PT_SANDBOX)")
        if self.max_batch_sequences is not None and not pos_int(self.max_batch_sequences):
            fail("max_batch_sequences", "must be an int >= 1 or None")
        if not pos_int(self.tp):
            fail("tp", "must be an int >= 1")
        if not self.out:
            fail("out", "must name a directory")
        if self.node_dir is not None and not (isinstance(self.node_dir, str) and self.node_dir):
            fail("node_dir", "must name a directory on each node, or be None")
        if self.bos not in (None, True, False) or self.chat not in (True, False):
            fail("bos" if self.bos not in (None, True, False) else "chat", "must be a bool (bos: or None)")
        if self.chat and self.bos:
            fail("bos", "--bos cannot go with --chat: the chat template writes its own special tokens (Llama "
                        "3.1's starts with bos_token); leave --bos out")
        # temperature / top_p / top_k are validated by SamplingParams when the run builds them (one place).

    @property
    def random_model(self) -> bool:
        from prompt_tree.config import random_preset

        return random_preset(self.model) is not None

    @property
    def resolved_max_new_tokens(self) -> int:
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return DEFAULT_MAX_NEW_TOKENS_TINY if self.random_model else DEFAULT_MAX_NEW_TOKENS


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_identity(config: RunConfig, problems: Sequence[Problem]) -> dict:
    """The JSON-safe dict stored as config.json and compared on resume."""
    ident: dict[str, Any] = {name: getattr(config, name) for name in IDENTITY_FIELDS}
    ident["max_new_tokens"] = config.resolved_max_new_tokens
    ident["problem_ids"] = [p.problem_id for p in problems]
    if config.generations is None:
        ident["tokenization"] = tokenization_of(config)
    if config.generations is not None:
        # Programs come from a file: the model and sampling settings did not make them, the file did.
        for name in ("model", "few_shot", "few_shot_source", "instruction", "max_new_tokens", "temperature",
                     "top_p", "top_k", "seed", "samples", "dtype"):
            ident.pop(name)
        ident["generations_file_sha256"] = file_sha256(config.generations)
    return ident


def tokenization_of(config: RunConfig) -> str:
    """Which tokenization rule the run's prompts get, in words (prompt_tree.bos / prompt_tree.chat), from the
    model's tokenizer alone: config.json records it, and the generation checks the engine tokenizes so. A
    checkpoint without a chat template fails here under --chat, before anything is written."""
    from prompt_tree.config import ModelConfig, get_preset, random_preset
    from prompt_tree.tokenize import PromptEncoder
    from prompt_tree.tokenizer import load_tokenizer, random_model_tokenizer

    check_model(config)
    preset = random_preset(config.model)
    if preset is not None:
        tokenizer = random_model_tokenizer(get_preset(preset))
    else:  # as prompt_tree.loading loads it: the BOS id of config.json's model config
        model_config = ModelConfig.from_hf(os.path.join(config.model, "config.json"))
        tokenizer = load_tokenizer(config.model, bos_id=model_config.bos_token_id)
    encoder = PromptEncoder(tokenizer, add_bos=config.bos)
    if config.chat:
        encoder.chat_template()
    else:
        encoder.bos.ids()  # a rule that wants an unknown BOS fails now, naming --no-bos
    return encoder.describe(config.chat)


def select_problems(config: RunConfig) -> list[Problem]:
    from prompt_tree.tasks.apps import load_problems

    problems = load_problems(config.source, split=config.split, difficulty=config.difficulty, limit=config.limit)
    if not problems:
        raise RunConfigError(
            f"no problems selected from source {config.source!r} (split {config.split!r}, difficulty "
            f"{config.difficulty!r}, limit {config.limit!r}); check the source and the filters"
        )
    return problems


def check_model(config: RunConfig) -> None:
    """Refuse a model the run cannot generate with, before any weights are built or any file is written: an
    unknown preset, a preset without a tokenizer (APPS prompts are text; only byte-vocabulary presets such as
    'tiny' get one), or a checkpoint directory that does not exist. Raises RunConfigError naming --model."""
    from prompt_tree.config import ConfigError, get_preset, random_preset
    from prompt_tree.tokenizer import random_model_tokenizer

    preset = random_preset(config.model)
    if preset is not None:
        try:
            model_config = get_preset(preset)
        except ConfigError as e:
            raise RunConfigError(f"--model {config.model}: {e}") from None
        if random_model_tokenizer(model_config) is None:
            raise RunConfigError(
                f"--model {config.model}: preset {preset!r} has no tokenizer (only byte-vocabulary presets such as "
                f"'tiny' get one), and APPS prompts are text; use --model tiny or a checkpoint directory"
            )
    elif not os.path.isdir(config.model):
        raise RunConfigError(
            f"--model {config.model!r} is not 'tiny', 'random:PRESET' or an existing checkpoint directory"
        )


def check_export_path(config: RunConfig) -> None:
    """Refuse an --export-bigcode path that could not be written at the end of the run (checked before it)."""
    from prompt_tree.tasks.bigcode import export_path_problem

    if config.export_bigcode is not None:
        why = export_path_problem(config.export_bigcode)
        if why:
            raise RunConfigError(f"--export-bigcode {config.export_bigcode!r}: {why}")


def preflight(config: RunConfig, generating: bool = True) -> None:
    """The checks that need neither problems nor a model's weights: the model and its tokenization rule (a chat
    template, a BOS the rule wants) when generating, and the export path."""
    if generating:
        check_model(config)
        tokenization_of(config)
    check_export_path(config)


def sampling_params(config: RunConfig):
    """The engine's SamplingParams for the run; it stops where the next question or answer block would begin (the
    same stops the extractor cuts at); a chat answer ends with its turn (the end-of-turn token is an EOS id)."""
    from prompt_tree import SamplingParams
    from prompt_tree.tasks.extract import CHAT_STOPS, DEFAULT_STOPS

    return SamplingParams(
        max_new_tokens=config.resolved_max_new_tokens, temperature=config.temperature, top_p=config.top_p,
        top_k=config.top_k, stop=tuple(CHAT_STOPS if config.chat else DEFAULT_STOPS), seed=config.seed,
    )


def draw_examples(config: RunConfig, problems: Sequence[Problem]) -> list[Problem]:
    """The run's few-shot examples: config.few_shot drawn with config.seed from the train split of
    config.few_shot_source, the problems under evaluation excluded. ValueError if there are not enough."""
    from prompt_tree.tasks.prompts import draw_few_shot

    return draw_few_shot(config.few_shot, seed=config.seed, source=config.few_shot_source,
                         exclude=[p.problem_id for p in problems])
