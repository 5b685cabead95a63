"""Engine: a model, its tokenizer and device, and `generate` over prompt trees.

    engine = Engine.random("tiny")                 # or Engine.from_pretrained("/path/to/checkpoint")
    result = engine.generate(tree, SamplingParams(max_new_tokens=64, temperature=0.8, seed=1))
    result["problem-3"][0].text, result.summary

Each node's prompt is prefilled once however many sequences share it; every decode step reads each shared node's
KV once for its whole group (nested Hydragen attention through prompt_tree.kernels.tree_attention). Subtrees are
admitted as memory frees (scheduler.py), suffixes are paged (blocks.py), decode steps replay CUDA graphs
(model_runner.py), and the host's stop-string work overlaps the device's next step (run.py).
"""
from __future__ import annotations

import os
import resource
import time
from typing import Any, Callable

import torch

from ..config import get_preset, random_preset
from ..loading import load_model, random_model
from ..sampler import Sampler
from ..sampling import SamplingParams
from ..stops import StopMatcher
from ..tokenizer import random_model_tokenizer
from .memory import BatchCost, available_memory, plan_cost
from .collector import young_collections_only
from .options import EngineOptions
from .results import Completion, GenerationResult
from .run import GenerationRun

# "tree": shared nodes read once per group; "flat": every sequence reads its whole path; "none": no attention.
ATTENTION_MODES = ("tree", "flat", "none")


class Engine:
    """A model, its config, tokenizer and EOS ids, and the options of engine.options.EngineOptions (memory
    budget, batching policy, CUDA graphs, page size, ...), each checked here when given."""

    def __init__(self, model, config, tokenizer=None, eos_ids=None, **options):
        unknown = sorted(set(options) - set(EngineOptions.names()))
        if unknown:
            raise TypeError(f"unknown Engine option(s) {', '.join(unknown)}; the options are "
                            f"{', '.join(EngineOptions.names())}")
        self.options = EngineOptions(**options)
        self.model = model
        self.config = config
        self.tokenizer = tokenizer
        self.eos_ids = tuple(config.eos_token_ids if eos_ids is None else eos_ids)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        if self.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"the engine runs models in bfloat16, float16 or float32, not {self.dtype}: load the "
                             f"model with dtype='bf16', 'fp16' or 'fp32' (the attention kernels have no fp64 path)")

    # read-only views kept for callers of the earlier engine
    @property
    def memory_budget_bytes(self) -> int | None:
        return self.options.memory_budget_bytes

    @property
    def cuda_graphs(self) -> bool:
        return self.options.cuda_graphs

    @property
    def prefill_chunk_tokens(self) -> int:
        return self.options.prefill_chunk_tokens

    # ----- construction

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None, **options) -> "Engine":
        """Load an HF checkpoint directory (config.json, safetensors, tokenizer.json)."""
        if not os.path.isdir(os.fspath(path)):
            raise FileNotFoundError(f"model directory {os.fspath(path)!r} does not exist: pass a local checkpoint "
                                    f"directory holding config.json, *.safetensors and tokenizer.json")
        EngineOptions(**{k: v for k, v in options.items() if k in EngineOptions.names()})  # fail before loading
        loaded = load_model(path, device, dtype)
        return cls(loaded.model, loaded.config, loaded.tokenizer, loaded.eos_ids, **options)

    @classmethod
    def random(cls, preset="tiny", seed: int = 0, device=None, dtype=None, tokenizer=None, **options) -> "Engine":
        """Random weights of a preset (name or ModelConfig). The "tiny" preset gets the byte tokenizer; other
        presets have none unless given (prompts must then be token ids and texts are empty)."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int (the random weights' seed), not {type(seed).__name__}")
        config = get_preset(preset) if isinstance(preset, str) else preset
        model = random_model(config, seed=seed, device=device, dtype=dtype)
        if tokenizer is None:
            tokenizer = random_model_tokenizer(config)
        return cls(model, config, tokenizer, config.eos_token_ids, **options)

    @classmethod
    def load(cls, spec, device=None, dtype=None, *, seed: int = 0, **options) -> "Engine":
        """The engine a model spec names, the one rule every command uses: "tiny" or "random:PRESET" (random
        weights of `seed`), or a checkpoint directory (one without tokenizer.json loads its weights alone: such an
        engine runs token-id trees only)."""
        preset = random_preset(spec) if isinstance(spec, str) else None
        if preset is not None:
            return cls.random(preset, seed=seed, device=device, dtype=dtype, **options)
        path = os.fspath(spec)
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "tokenizer.json")):
            EngineOptions(**{k: v for k, v in options.items() if k in EngineOptions.names()})
            loaded = load_model(path, device, dtype, tokenizer=False)
            return cls(loaded.model, loaded.config, None, loaded.eos_ids, **options)
        return cls.from_pretrained(path, device=device, dtype=dtype, **options)

    # ----- planning

    def plan(self, tree_or_plan, params: SamplingParams | None = None):
        """The Plan of a PromptTree (each sequence its whole prompt's encoding, under the tokenizer's BOS rule or
        the add_bos option: prompt_tree.bos), or a Plan unchanged; checked to fit the model's context and
        vocabulary."""
        if hasattr(tree_or_plan, "levels") and hasattr(tree_or_plan, "sequences"):
            plan = tree_or_plan
        elif hasattr(tree_or_plan, "flatten"):
            plan = (tree_or_plan.flatten(tokenizer=self.tokenizer, add_bos=self.options.add_bos) if self.tokenizer
                    else tree_or_plan.flatten())
        else:
            raise TypeError(f"generate takes a PromptTree or a Plan, not {type(tree_or_plan).__name__}")
        max_new = params.max_new_tokens if params else 0
        limit = self.config.max_position_embeddings
        vocab = self.config.vocab_size
        for key, ids in plan.node_tokens.items():
            bad = next((t for t in ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise ValueError(f"node {key!r} has token id {bad}, outside the model's vocabulary of {vocab} ids "
                                 f"(0..{vocab - 1}): token-id prompts must come from this model's tokenizer")
        for i in range(plan.num_sequences):
            n = plan.prompt_len(i)
            if n == 0:
                raise ValueError(f"sequence {plan.sequences[i]} has an empty prompt: give its path at least one "
                                 f"token")
            # The last sampled token is never fed back: positions 0 .. n + max_new - 2 are used.
            if n + max_new - 1 > limit:
                raise ValueError(f"sequence {plan.sequences[i]}: prompt of {n} tokens + max_new_tokens {max_new} "
                                 f"exceeds the model's context of {limit} positions (at most {limit + 1 - n} new "
                                 f"tokens fit)")
        return plan

    def budget_bytes(self) -> int:
        b = self.options.memory_budget_bytes
        return b if b is not None else available_memory(self.device)

    # ----- generation

    def generate(self, tree_or_plan, params: SamplingParams | None = None, *, attention: str = "tree",
                 max_batch_sequences: int | None = None, progress: bool = True,
                 on_complete: Callable[[Any, int, Completion], None] | None = None,
                 length_budget: Callable[[Any, int], int] | None = None,
                 step_log: bool = False) -> GenerationResult:
        """Sample every sequence of the tree. attention: "tree" (shared nodes read once per group), "flat"
        (each sequence reads its whole path: the no-sharing baseline) or "none" (attention skipped, its output
        replaced by the query: a benchmark's upper bound, whose tokens are meaningless). max_batch_sequences:
        the most sequences per decode step for this call. on_complete(key, sample_index, completion) is called
        as each sample ends. length_budget(key, sample_index) -> the most tokens that sample may generate
        (<= max_new_tokens; finish reason "length"): the benchmarks' way to give random-weight models realistic
        completion lengths. The scheduler never reads it: it predicts lengths from finished samples only.
        step_log: keep (live rows, device ms) of every replayed decode step in result.step_log (CUDA graphs only;
          each capture's first step runs eagerly and counts in capture_seconds)."""
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, not {type(params).__name__}")
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {', '.join(map(repr, ATTENTION_MODES))}, not {attention!r}")
        if max_batch_sequences is not None and (not isinstance(max_batch_sequences, int)
                                                or isinstance(max_batch_sequences, bool) or max_batch_sequences < 1):
            raise ValueError(f"max_batch_sequences must be a positive int, got {max_batch_sequences!r}")
        for name, fn in (("on_complete", on_complete), ("length_budget", length_budget)):
            if fn is not None and not callable(fn):  # else it fails at the first completion, work already done
                raise TypeError(f"{name} must be a callable or None, not {type(fn).__name__}")
        vocab = self.config.vocab_size
        outside = [t for t in params.stop_token_ids if t >= vocab]
        if outside:
            raise ValueError(f"stop_token_ids {outside} are outside this model's vocabulary of {vocab} ids (0 to "
                             f"{vocab - 1}): the model can never sample them; pass ids of its tokenizer")
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer to decode text; this engine has none (use "
                             "stop_token_ids)")
        with young_collections_only(not self.options.full_collections):
            return self._generate(tree_or_plan, params, attention, max_batch_sequences, progress, on_complete,
                                  length_budget, step_log)

    def _generate(self, tree_or_plan, params: SamplingParams, attention: str, max_batch_sequences: int | None,
                  progress: bool, on_complete, length_budget, step_log: bool) -> GenerationResult:
        plan = self.plan(tree_or_plan, params)
        results: dict = {}
        for key, s in plan.sequences:
            results.setdefault(key, [])
            while len(results[key]) <= s:
                results[key].append(None)

        from tqdm.auto import tqdm

        bar = tqdm(total=plan.num_sequences, unit="seq", disable=not progress, desc=f"generate ({attention})")

        def done(c: Completion) -> None:
            results[c.key][c.sample_index] = c
            bar.update(1)
            if on_complete is not None:
                on_complete(c.key, c.sample_index, c)

        stops = StopMatcher(params.stop, self.tokenizer) if params.stop else None
        cap = max_batch_sequences
        if self.options.max_batch_sequences is not None:
            cap = self.options.max_batch_sequences if cap is None else min(cap, self.options.max_batch_sequences)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            sampler = Sampler(params, self.device, backend=self.options.sampler_backend)
            run = GenerationRun(self, plan, params, attention, cap, done, sampler, stops,
                                length_budget)
            run.runner.sync()
            t0 = time.perf_counter()
            run.run()
            run.runner.sync()
            wall = time.perf_counter() - t0
        finally:
            bar.close()
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        log = run.runner.step_log() if step_log and run.runner.record_times else None
        return GenerationResult(results, run.summary(wall, int(peak)), log)

    def cost(self, tree_or_plan, params: SamplingParams) -> BatchCost:
        """Predicted KV and workspace bytes of running the whole plan as one batch (memory.plan_cost)."""
        plan = self.plan(tree_or_plan, params)
        return plan_cost(plan, params.max_new_tokens, self.config, self.dtype, self.options.prefill_chunk_tokens)
