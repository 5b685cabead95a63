"""The error of the tree side (trees, plans, their tokenization), in a module of its own so that every module of
that side can raise it without importing another that imports it back."""
from __future__ import annotations


class PromptTreeError(ValueError):
    """A prompt tree, or a request on it, is invalid. The message names the node and how to fix it."""
