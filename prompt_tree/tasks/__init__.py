"""APPS-style evaluation on top of prompt-tree's public API."""
