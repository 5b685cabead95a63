"""prompt-tree: high-throughput LLM sampling over trees of shared prompts.

Public names are imported lazily so that `import prompt_tree` stays cheap (the tree API needs no torch).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "PromptTree": "prompt_tree.tree",
    "Node": "prompt_tree.tree",
    "PromptTreeError": "prompt_tree.tree",
    "Plan": "prompt_tree.plan",
    "Group": "prompt_tree.plan",
    "ModelConfig": "prompt_tree.config",
    "SamplingParams": "prompt_tree.sampling",
    "Engine": "prompt_tree.engine",
    "Completion": "prompt_tree.engine",
    "GenerationResult": "prompt_tree.engine",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prompt_tree' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
